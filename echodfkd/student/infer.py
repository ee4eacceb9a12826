"""Run a trained student over whole videos of a frame store and write its soft masks.

Each video is processed from its first frame with the ConvLSTM state carried across all its
frames, in chunks of ``chunk`` frames (memory bounded whatever the video length), at 112x112.
Output: a mask store (see :mod:`echodfkd.data.store`) with ``masks`` uint8 (N, 112, 112) =
round(sigmoid(logit) * 255), aligned frame for frame with the frame store.

The store is built under ``partial_path(out)`` one shard block at a time; finished blocks are
listed in ``attrs["done_blocks"]`` (block start frames, blocks of ``attrs["block_frames"]``), so
an interrupted run resumes where it stopped when rerun with the same student file
(``attrs["student_sha"]``) and block size. The store is renamed to ``out`` when complete
(``attrs["complete"] = True``).

Memory is bounded by the videos in flight (``videos_per_batch`` videos of at most the longest
video's frames, plus the predictions of videos that straddle the current shard block), not by
the store's size. On CUDA, frames go through pinned memory with non-blocking copies; the student
runs in float32 (no autocast: its ConvLSTM state is carried over hundreds of frames, where
bf16 rounding would accumulate, and the student is small enough that AMP buys little).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from echodfkd.errors import InputError
from echodfkd.student.model import StudentNet
from echodfkd.runtime import file_sha256, resolve_device
from echodfkd.data.store import (
    check_positive, check_shard_layout, commit, init_mask_store, open_frames, partial_path,
    shard_blocks, store_writes,
)
from echodfkd.student.files import load_student


@dataclass(frozen=True)
class InferConfig:
    """The ``infer:`` section of params.yaml: ``chunk`` frames per forward call (the state is
    carried across chunks), ``videos_per_batch`` videos run together (0: 1 on CPU, 8 on
    CUDA), ``device`` ("auto": CUDA when available)."""

    chunk: int
    videos_per_batch: int
    device: str


@torch.inference_mode()
def predict_videos(model: StudentNet, frames: np.ndarray, *, chunk: int,
                   device: torch.device | str | None = None) -> np.ndarray:
    """Soft masks of a batch of equally long videos.

    Args:
        model: student in eval mode.
        frames: uint8 (B, T, H, W) grey frames (rows = y, columns = x).
        chunk: frames fed per forward call (``infer.chunk``); the recurrent state is carried
            between chunks.
        device: where the frames go; None: the device the model's weights are on.
    Returns:
        uint8 (B, T, H, W) = round(sigmoid(logit) * 255).
    """
    if frames.ndim != 4:
        raise ValueError(f"expected frames (B, T, H, W), got shape {frames.shape}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    out = np.empty(frames.shape, np.uint8)
    cuda = device.type == "cuda"
    state = None
    for s in range(0, frames.shape[1], chunk):
        x = torch.from_numpy(np.ascontiguousarray(frames[:, s:s + chunk]))
        if cuda:  # page-locked host memory: the host-to-device copy does not block
            x = x.pin_memory()
        x = x.to(device, non_blocking=cuda).float().div_(255.0).unsqueeze(2)
        logits, state = model(x, state)
        p = torch.sigmoid(logits[:, :, 0]).mul_(255.0).round_().to(torch.uint8)
        out[:, s:s + chunk] = p.cpu().numpy()
    return out


def predict_video(model: StudentNet, frames: np.ndarray, *, chunk: int,
                  device: torch.device | str | None = None) -> np.ndarray:
    """Soft masks of one video: uint8 (T, H, W) frames -> uint8 (T, H, W) (see
    :func:`predict_videos`)."""
    return predict_videos(model, frames[None], chunk=chunk, device=device)[0]


def predict_padded(model: StudentNet, videos: list[np.ndarray], *, chunk: int,
                   device: torch.device | str | None = None) -> list[np.ndarray]:
    """Soft masks of videos of different lengths run as one batch.

    Shorter videos are zero-padded at the end; the recurrence is causal and eval-mode
    BatchNorm acts per frame, so each video's masks equal those of running it alone.
    """
    if not videos:
        return []
    t = max(len(v) for v in videos)
    batch = np.zeros((len(videos), t, *videos[0].shape[1:]), np.uint8)
    for i, v in enumerate(videos):
        batch[i, :len(v)] = v
    out = predict_videos(model, batch, chunk=chunk, device=device)
    return [out[i, :len(v)] for i, v in enumerate(videos)]


def infer_store(student: str | os.PathLike, frames: str | os.PathLike, out: str | os.PathLike,
                *, chunk: int, videos_per_batch: int | None,
                device: torch.device | str | None, shard_frames: int, chunk_frames: int,
                resume: bool = True, progress: bool = True,
                splits: Sequence[str] | None = None) -> Path:
    """Write the student's soft masks for every frame of the frame store ``frames`` to the
    mask store ``out`` (see module docstring). Returns ``out``.

    ``splits`` limits the work to the videos of those splits (e.g. only TEST for an evaluation);
    the other videos' frames stay 0 and ``attrs["splits"]`` records what was segmented (None:
    every video), so that an evaluation of another split fails instead of scoring zeros.

    The settings are params.yaml's ``infer`` section (``chunk``, ``videos_per_batch``,
    ``device``) and ``ingest.shard_frames`` / ``ingest.chunk_frames``, passed explicitly.
    ``videos_per_batch`` videos are run together (zero-padded to the longest); None (the
    stage passes it for ``infer.videos_per_batch`` 0) chooses 1 on CPU, 8 on CUDA.
    ``device``: a torch device, or ``"auto"`` / ``""`` / None for CUDA when available
    (:func:`echodfkd.runtime.resolve_device`). Frames belonging to no video (none in a valid
    store) stay 0.

    ``chunk``, ``videos_per_batch`` (unless None), ``shard_frames`` and ``chunk_frames`` must
    be whole numbers >= 1 and ``chunk_frames`` must divide ``shard_frames``
    (:func:`echodfkd.data.store.check_shard_layout`, as for ingest); otherwise InputError,
    naming the value, before anything is written. A partial store left by a run with another
    ``shard_frames`` is not resumed (its finished blocks are other frame ranges): it is
    rebuilt. An OS error while writing (disk full, file-size limit) raises
    :class:`echodfkd.data.store.StoreWriteError` naming ``out`` and the error; the partial
    store stays, never marked complete, and the next run resumes it.
    """
    check_positive("chunk", chunk, "infer.chunk")
    if videos_per_batch is not None:
        check_positive("videos_per_batch", videos_per_batch,
                       "infer.videos_per_batch (0 there: auto)")
    check_shard_layout(shard_frames, chunk_frames, shard_param="ingest.shard_frames",
                       chunk_param="ingest.chunk_frames")
    try:
        device = resolve_device(device)
    except RuntimeError as exc:
        raise InputError(f"device {device!r} is not a torch device ({exc}): use auto, cpu or "
                         f"cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {str(device)!r} asked for but CUDA is not available: use "
                         f"auto or cpu")
    if videos_per_batch is None:
        videos_per_batch = 8 if device.type == "cuda" else 1
    model = load_student(student, device)
    fs = open_frames(frames)
    n = int(fs.frames.shape[0])
    staging = partial_path(out)
    if splits is not None:
        splits = sorted(set(splits))
        if not splits:
            raise InputError(f"no split given to segment in {str(frames)!r}: name at least one "
                             f"(it has {sorted(set(fs.index['Split']))})")
        unknown = sorted(set(splits) - set(fs.index["Split"]))
        if unknown:
            raise InputError(f"splits {unknown} not in {str(frames)!r} (it has "
                             f"{sorted(set(fs.index['Split']))}): segment only splits it has")
    writes = store_writes("the mask store", out,
                          f" (the partial store {str(staging)!r} is kept, never marked "
                          f"complete; the next run resumes it)")
    with writes:
        group = init_mask_store(staging, fs, shard_frames=shard_frames,
                                chunk_frames=chunk_frames, resume=resume, model="student",
                                student_sha=file_sha256(student), splits=splits,
                                block_frames=shard_frames)
    masks = group["masks"]
    done = set(int(b) for b in group.attrs.get("done_blocks", []))
    index = fs.index.sort_values("start")
    if splits is not None:
        index = index[index["Split"].isin(splits)]
    vstart = index["start"].to_numpy(np.int64)
    vstop = index["stop"].to_numpy(np.int64)
    cache: dict[int, np.ndarray] = {}
    todo = [b for b in shard_blocks(n, shard_frames) if b[0] not in done]
    for bs, be in tqdm(todo, desc=f"student -> {Path(out).name}", disable=not progress):
        buf = np.zeros((be - bs, *masks.shape[1:]), np.uint8)
        vids = np.flatnonzero((vstart < be) & (vstop > bs)).tolist()
        need = [v for v in vids if v not in cache]
        for i in range(0, len(need), videos_per_batch):
            group_ids = need[i:i + videos_per_batch]
            clips = [np.asarray(fs.frames[vstart[v]:vstop[v]]) for v in group_ids]
            for v, pred in zip(group_ids, predict_padded(model, clips, chunk=chunk,
                                                         device=device)):
                cache[v] = pred
        for v in vids:
            a, b = max(vstart[v], bs), min(vstop[v], be)
            buf[a - bs:b - bs] = cache[v][a - vstart[v]:b - vstart[v]]
        with writes:
            masks[bs:be] = buf
        cache = {v: p for v, p in cache.items() if vstop[v] > be}
        done.add(bs)
        with writes:
            group.attrs["done_blocks"] = sorted(done)
    with writes:
        group.attrs["complete"] = True
        commit(staging, out)
    return Path(out)
