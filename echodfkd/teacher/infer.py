"""Teacher inference into a mask store, in shard-aligned blocks run as dask tasks.

:func:`infer_teacher` writes the fused masks into a mask store (``echodfkd/data/store.py``) aligned
frame for frame with a frame store: uint8 ``masks`` = round(p * 255). Blocks run on local threads
or on a ``dask.distributed`` cluster. An interrupted run resumes from the ``.partial`` store only
onto the same inputs: same frames (the frame store's content fingerprint), same members
(checkpoint SHA-256, imported output files' fingerprint, weights) and same ``amp``; otherwise it
starts again.
"""

from __future__ import annotations

from dataclasses import dataclass

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.data.store import (FRAME_SIZE, FrameStore, MaskStore, commit, init_mask_store,
                            open_frames, open_masks, partial_path, shard_blocks)
from echodfkd.teacher.fusion import fuse_probabilities
from echodfkd.teacher.members import Member, Videos
from echodfkd.runtime import tune_malloc


def _videos_in(index: pd.DataFrame, start: int, stop: int) -> Videos:
    rows = index[(index["start"] < stop) & (index["stop"] > start)]
    return [(str(n), int(a), int(b)) for n, a, b in zip(rows["FileName"], rows["start"],
                                                          rows["stop"])]


def _chunk_for(block_frames: int, max_chunk: int = 64) -> int:
    """Largest divisor of ``block_frames`` that is <= ``max_chunk`` (chunks tile a shard)."""
    return max(d for d in range(1, min(block_frames, max_chunk) + 1) if block_frames % d == 0)


_BLOCK_TAG = "echodfkd-teacher-block"

#: frames per piece of a block run at once (rounded to whole batches): bounds a task's memory.
PIECE_FRAMES = 256


class _Block:
    """Arguments of one block task, opaque to dask (which would rebuild dataclass members)."""

    def __init__(self, members: Sequence[Member], frames_path: str, masks_path: str,
                 start: int, stop: int, videos: Videos, batch_size: int, device: str | None,
                 amp: bool) -> None:
        self.args = (members, frames_path, masks_path, start, stop, videos, batch_size,
                     device, amp)
        self.start = start


def _run_payload(block: _Block) -> tuple[str, int, int, str]:
    tune_malloc()  # in a dask worker process: undo the nanny's malloc setting (runtime.py)
    return _run_block(*block.args)


def _run_block(members: Sequence[Member], frames_path: str, masks_path: str, start: int,
               stop: int, videos: Videos, batch_size: int, device: str | None,
               amp: bool) -> tuple[str, int, int, str]:
    """One dask task: fuse the members over frames [start, stop), write that shard; returns
    (tag, start, stop, SHA-256 of the block's mask bytes).

    The block is run in pieces of about :data:`PIECE_FRAMES` frames (a whole number of
    batches, so every forward pass sees the same frames as over the whole block): the
    members' float outputs and their fusion exist for one piece at a time, and only the
    uint8 masks for the whole block (memory per task: ~12.5 KB per block frame, not ~100 KB)."""
    import zarr
    frames_array = None
    if any(m.needs_frames for m in members):
        frames_array = zarr.open_group(frames_path, mode="r")["frames"]
    masks = np.empty((stop - start, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
    piece = batch_size * max(1, PIECE_FRAMES // batch_size)
    weights = [m.weight for m in members]
    for s in range(start, stop, piece):
        e = min(stop, s + piece)
        frames = None if frames_array is None else frames_array[s:e]
        overlap = [(n, a, b) for n, a, b in videos if a < e and b > s]
        outs = [m.predict_block(frames, s, e, overlap, batch_size=batch_size, device=device,
                                amp=amp) for m in members]
        masks[s - start:e - start] = fuse_probabilities(outs, weights)
    zarr.open_group(masks_path, mode="r+")["masks"][start:stop] = masks
    return (_BLOCK_TAG, start, stop, hashlib.sha256(masks.tobytes()).hexdigest()[:16])


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


@dataclass(frozen=True)
class TeacherInferConfig:
    """The ``teacher_infer:`` section of params.yaml: ``batch`` frames per forward pass (0:
    chosen for the device, :func:`echodfkd.runtime.teacher_batch`), ``amp`` (mixed precision
    on CUDA, ignored on the CPU), ``workers`` threads with the local scheduler."""

    batch: int
    amp: bool
    workers: int


def infer_teacher(members: Sequence[Member], frames_store: FrameStore | str | os.PathLike,
                  out_path: str | os.PathLike, *, batch_size: int,
                  block_frames: int | None = None, device: str | None,
                  amp: bool, scheduler: str, workers: int,
                  progress: bool = True) -> MaskStore:
    """Run the fused teacher over every frame of ``frames_store`` into a mask store.

    Writes ``masks`` uint8 (N, 112, 112) = round(p * 255) (a single uint8 member, e.g. imported
    ``.seg.npz``, passes through unchanged), aligned with ``frames``, under
    ``partial_path(out_path)``, then commits it to ``out_path``. Blocks are the mask store's
    shards (``block_frames`` frames; default the frame store's shard size), one dask task
    each: local threads (``workers`` of them) when ``scheduler`` is ``""``, else the
    ``distributed`` scheduler at that address (workers load checkpoints themselves, once per
    process, and must see the same paths). ``batch_size``: frames per forward pass. The settings
    are params.yaml's (``teacher_infer.batch`` through :func:`echodfkd.runtime.teacher_batch`,
    ``teacher_infer.amp``, ``teacher_infer.workers``, ``teacher.device``, ``ingest.scheduler``),
    passed explicitly; ``device`` ``"auto"``, ``""`` or None: CUDA when available.

    Resumption: each finished block is recorded in ``attrs["done_blocks"]`` with the SHA-256 of
    its masks (``attrs["block_sha"]``). A rerun after an interruption skips them only when the
    inputs are the same: ``attrs["teacher_key"]`` hashes the members' descriptions (checkpoint
    SHA-256, the imported output files' fingerprint, weights) and ``amp``, and
    ``attrs["source_fingerprint"]`` is the frame store's content fingerprint; any difference
    starts a fresh store. The complete store records ``attrs["content_sha"]``, a hash of its
    masks (the block hashes in order), which identifies what a student trained on.
    """
    store = (frames_store if isinstance(frames_store, FrameStore)
             else open_frames(frames_store))
    members = list(members)
    if not members:
        raise InputError("a teacher needs at least one member (teacher.members)")
    if batch_size < 1:
        raise InputError(f"teacher batch size must be >= 1, got {batch_size}")
    for m in members:
        m.validate(store.index)
    n = int(store.frames.shape[0])
    if block_frames is None:
        shards = store.frames.shards
        block_frames = int(shards[0]) if shards else int(store.frames.chunks[0])
    if block_frames < 1:
        raise InputError(f"block_frames must be >= 1, got {block_frames}")
    descriptions = [m.describe(store.index) for m in members]
    key = hashlib.sha256(json.dumps([descriptions, bool(amp)], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    staging = partial_path(out_path)
    group = init_mask_store(staging, store, shard_frames=block_frames,
                            chunk_frames=_chunk_for(block_frames), resume=True,
                            teacher_key=key, block_frames=block_frames)
    shards = group["masks"].shards
    if n and shards[0] != block_frames:
        raise RuntimeError(f"mask store shards of {shards[0]} frames, expected {block_frames}")
    blocks = shard_blocks(n, block_frames)
    block_sha: dict[str, str] = dict(group.attrs.get("block_sha", {}))
    done = {tuple(b) for b in group.attrs.get("done_blocks", [])} & set(blocks)
    done = {b for b in done if str(b[0]) in block_sha}
    todo = [b for b in blocks if b not in done]

    from tqdm.auto import tqdm
    bar = tqdm(total=len(blocks), initial=len(done), desc="teacher blocks", unit="block",
               disable=not progress)

    def record(result: Any) -> None:
        if isinstance(result, tuple) and len(result) == 4 and result[0] == _BLOCK_TAG:
            done.add((int(result[1]), int(result[2])))
            block_sha[str(int(result[1]))] = str(result[3])
            # by block start, not completion order: the same store bytes whichever block
            # (thread, cluster worker) finishes first
            group.attrs.update({"block_sha": dict(sorted(block_sha.items(),
                                                         key=lambda kv: int(kv[0]))),
                                "done_blocks": [list(b) for b in sorted(done)]})
            bar.update(1)

    # paths as the driver sees them: a distributed worker runs in another directory
    local = [m.at(os.getcwd()) for m in members]
    args = [_Block(local, _abs(store.path), _abs(str(staging)), s, e,
                   _videos_in(store.index, s, e), batch_size, device, amp) for s, e in todo]
    try:
        if scheduler:
            from distributed import Client, as_completed
            run_id = uuid.uuid4().hex[:8]  # fresh keys: never reuse an erred future
            with Client(scheduler) as client:
                futures = [client.submit(_run_payload, a, pure=False,
                                         key=f"teacher-block-{a.start}-{run_id}")
                           for a in args]
                errors = []
                for fut in as_completed(futures):
                    try:
                        record(fut.result())
                    except Exception as e:  # keep recording the blocks that do finish
                        errors.append(e)
                if errors:
                    raise errors[0]
        elif args:
            from dask.threaded import get
            graph = {f"block-{a.start}": (_run_payload, a) for a in args}
            from dask.callbacks import Callback
            with Callback(posttask=lambda k, result, *_: record(result)):
                get(graph, list(graph), num_workers=max(1, workers))
    finally:
        bar.close()
    missing = [b for b in blocks if b not in done]
    if missing:
        raise RuntimeError(f"teacher inference left {len(missing)} blocks undone: {missing[:5]}")
    content = hashlib.sha256("".join(block_sha[str(s)] for s, _ in blocks).encode())
    group.attrs.update({"complete": True, "teacher": descriptions, "amp": bool(amp),
                        "content_sha": content.hexdigest()[:16]})
    commit(staging, out_path)
    return open_masks(out_path, store)
