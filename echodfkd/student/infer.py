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

import logging
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
from echodfkd.student.files import load_student, trained_horizon

log = logging.getLogger(__name__)

#: infer warns when one ConvLSTM state runs over more than this many times the training clip.
HORIZON_FACTOR = 2


@dataclass(frozen=True)
class InferConfig:
    """The ``infer:`` section of params.yaml: ``chunk`` frames per forward call (the state is
    carried across chunks), ``window`` frames kept per window of fresh ConvLSTM state (0: the
    state is carried over the whole video), ``warmup`` frames run before each window to warm
    its state (their masks cross-faded into the previous window's:
    :func:`predict_videos`), ``videos_per_batch`` videos run together (0: 1 on
    CPU, 8 on CUDA), ``device`` ("auto": CUDA when available)."""

    chunk: int
    window: int
    warmup: int
    videos_per_batch: int
    device: str

    def __post_init__(self) -> None:
        check_windows(self.window, self.warmup)


def check_windows(window: int, warmup: int) -> None:
    """Raise :class:`InputError` unless ``window`` >= 0 and 0 <= ``warmup`` (warmup must be 0
    when window is 0: carried state has nothing to warm up)."""
    for name, value in (("window", window), ("warmup", warmup)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"infer.{name} must be a whole number >= 0, got {value!r}")
    if window == 0 and warmup:
        raise InputError(f"infer.warmup is {warmup!r} but infer.window is 0 (state carried over "
                         f"the whole video): set warmup to 0, or window to the frames per window")


def window_spans(n_frames: int, window: int, warmup: int) -> list[tuple[int, int, int]]:
    """The windows of a video of ``n_frames`` frames: a list of ``(run_from, keep_from,
    stop)`` frame indices (0-based, ``stop`` exclusive). Each window runs frames
    ``run_from:stop`` from a fresh ConvLSTM state and keeps the outputs of ``keep_from:stop``;
    ``run_from = max(0, keep_from - warmup)``. The kept ranges tile ``0:n_frames`` exactly,
    ``window`` frames each (the last may be shorter). ``window`` 0: one span, the whole video
    with its state carried."""
    check_windows(window, warmup)
    if window == 0 or n_frames <= window:
        return [(0, 0, n_frames)]
    return [(max(0, s - warmup), s, min(n_frames, s + window))
            for s in range(0, n_frames, window)]


def warn_beyond_horizon(student: str | os.PathLike, longest: int, window: int,
                        warmup: int) -> str | None:
    """Log (and return) a warning when inference carries the student's state further than
    :data:`HORIZON_FACTOR` times the clip length it was trained on: ``warmup + window`` frames
    for windowed inference, the ``longest`` video (frames) when ``window`` is 0. None when
    within range or when the student file does not record its horizon."""
    horizon = trained_horizon(student)
    if horizon is None:
        return None
    run = longest if window == 0 else min(longest, warmup + window)
    if run <= HORIZON_FACTOR * horizon:
        return None
    how = (f"infer.window 0 carries its state over whole videos of up to {run} frames"
           if window == 0 else f"infer.warmup + infer.window = {run} frames run on one state")
    msg = (f"{str(student)!r} was trained on {horizon}-frame clips (train.sequence_length) but "
           f"{how}: more than {HORIZON_FACTOR}x what it saw; its masks may fade or drift. Set "
           f"infer.window (e.g. {horizon}) and infer.warmup (e.g. {horizon // 2}) in "
           f"params.yaml")
    log.warning("%s", msg)
    return msg


@torch.inference_mode()
def _run_span(model: StudentNet, frames: np.ndarray, *, chunk: int, device: torch.device,
              ) -> np.ndarray:
    """uint8 (B, T, H, W) -> uint8 (B, T, H, W) soft masks from a fresh state carried across
    chunks of ``chunk`` frames."""
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


def predict_videos(model: StudentNet, frames: np.ndarray, *, chunk: int, window: int,
                   warmup: int, device: torch.device | str | None = None,
                   lengths: Sequence[int] | None = None) -> np.ndarray:
    """Soft masks of a batch of equally long videos.

    Args:
        model: student in eval mode.
        frames: uint8 (B, T, H, W) grey frames (rows = y, columns = x).
        chunk: frames fed per forward call (``infer.chunk``); the recurrent state is carried
            between the chunks of a window.
        window, warmup: ``infer.window`` / ``infer.warmup`` (:func:`window_spans`): each
            window of ``window`` frames starts from a fresh state, warmed on the ``warmup``
            frames before it; ``window`` 0 carries the state over all T frames. Stitching:
            the n warm-up frames of a window already hold the masks of the windows before
            it; frame j of them (0-based) becomes round((1 - w) * old + w * new) with
            w = (j + 1) / (n + 1), so the seam is a linear cross-fade, weighted towards the
            window whose state has run longer (no step in the area curve at a seam).
        lengths: each video's true frame count when the batch is zero-padded (None: all T).
            A video is cross-faded only into windows that start inside it, so a video that
            ends in the warm-up of a later window gets the masks it gets when run alone.
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
    for run_from, keep_from, stop in window_spans(frames.shape[1], window, warmup):
        pred = _run_span(model, frames[:, run_from:stop], chunk=chunk, device=device)
        out[:, keep_from:stop] = pred[:, keep_from - run_from:]
        n = keep_from - run_from
        if n:  # warm-up frames: cross-fade from the masks already there to this window's,
            # in the videos this window starts inside
            rows = slice(None) if lengths is None else np.asarray(lengths) > keep_from
            w = (np.arange(1, n + 1, dtype=np.float32) / (n + 1))[None, :, None, None]
            old = out[rows, run_from:keep_from].astype(np.float32)
            out[rows, run_from:keep_from] = np.rint((1 - w) * old + w * pred[rows, :n])
    return out


def predict_video(model: StudentNet, frames: np.ndarray, *, chunk: int, window: int,
                  warmup: int, device: torch.device | str | None = None) -> np.ndarray:
    """Soft masks of one video: uint8 (T, H, W) frames -> uint8 (T, H, W) (see
    :func:`predict_videos`)."""
    return predict_videos(model, frames[None], chunk=chunk, window=window, warmup=warmup,
                          device=device)[0]


def predict_padded(model: StudentNet, videos: list[np.ndarray], *, chunk: int,
                   window: int, warmup: int,
                   device: torch.device | str | None = None) -> list[np.ndarray]:
    """Soft masks of videos of different lengths run as one batch.

    Shorter videos are zero-padded at the end; the recurrence is causal, eval-mode
    BatchNorm acts per frame, the windows start at the same frames whatever the length and a
    video is cross-faded only into windows that start inside it, so each video's masks equal
    those of running it alone.
    """
    if not videos:
        return []
    t = max(len(v) for v in videos)
    batch = np.zeros((len(videos), t, *videos[0].shape[1:]), np.uint8)
    for i, v in enumerate(videos):
        batch[i, :len(v)] = v
    out = predict_videos(model, batch, chunk=chunk, window=window, warmup=warmup,
                         device=device, lengths=[len(v) for v in videos])
    return [out[i, :len(v)] for i, v in enumerate(videos)]


def infer_store(student: str | os.PathLike, frames: str | os.PathLike, out: str | os.PathLike,
                *, chunk: int, window: int, warmup: int, videos_per_batch: int | None,
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

    ``window`` / ``warmup`` (``infer.window`` / ``infer.warmup``, :func:`window_spans`): each
    window of ``window`` frames is segmented from a fresh ConvLSTM state warmed on the
    ``warmup`` frames before it; 0 carries the state over the whole video. The student file
    records the clip length it was trained on (:func:`echodfkd.student.files.trained_horizon`);
    when ``warmup + window`` (or, carried, the longest video) exceeds
    :data:`HORIZON_FACTOR` times that, a warning names both: the student never saw its state
    carried that far (docs/design.md §3, "Inference over whole videos").

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
    check_windows(window, warmup)
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
    warn_beyond_horizon(student, int((vstop - vstart).max(initial=0)), window, warmup)
    cache: dict[int, np.ndarray] = {}
    todo = [b for b in shard_blocks(n, shard_frames) if b[0] not in done]
    for bs, be in tqdm(todo, desc=f"student -> {Path(out).name}", disable=not progress):
        buf = np.zeros((be - bs, *masks.shape[1:]), np.uint8)
        vids = np.flatnonzero((vstart < be) & (vstop > bs)).tolist()
        need = [v for v in vids if v not in cache]
        for i in range(0, len(need), videos_per_batch):
            group_ids = need[i:i + videos_per_batch]
            clips = [np.asarray(fs.frames[vstart[v]:vstop[v]]) for v in group_ids]
            preds = predict_padded(model, clips, chunk=chunk, window=window, warmup=warmup,
                                   device=device)
            for v, pred in zip(group_ids, preds):
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
