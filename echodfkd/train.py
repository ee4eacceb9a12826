"""Train the ConvLSTM student on frames and cached teacher masks read from Zarr (no video decoding).

Data flow:

1. :func:`load_videos` reads the selected videos of one or more sources (a frame store and the
   mask store aligned with it, design.md §6) into RAM once: frames and masks stay uint8
   (112x112), 2 x 12.5 kB per frame. The phantom (100 + 20 synthetic videos x 64 frames) needs
   ~190 MB. For EchoNet-Synthetic at full size (10k videos, ~1.9M frames) that would be ~48 GB:
   there, either keep half-resolution uint8 copies (~12 GB), or replace the RAM arrays by a
   reader that fetches each clip's Zarr chunks (128 frames) in background workers; the sampler
   and training loop only need ``ClipSet``'s ``frames[idx]`` / ``masks[idx]`` indexing.
2. Training clips are ``sequence_length`` consecutive frames of one video: the video is drawn
   uniformly among the training videos and the start uniformly in ``[0, length - L]``, from a
   ``numpy`` generator seeded by ``(seed, epoch)`` (so a resumed run draws the same clips).
   Videos shorter than L are **skipped** (default; logged and counted in the result) or, with
   ``short_videos="pad"``, padded by repeating their last frame and mask.
3. With ``half_resolution``, frames and soft targets are 2x2 average-pooled to 56x56 for
   training (as the original); validation runs at 112x112, the inference resolution.
   With ``augment``, each training clip gets a random gain, gamma and speckle-like noise
   (:func:`augment_clips`), which narrows the synthetic-to-real gap.
4. Loss: binary cross-entropy with logits against the teacher's soft targets ``p = mask/255``.
   Adam, early stopping on the validation loss (``patience`` epochs without improvement); the
   best epoch's weights are kept. Validation clips are fixed: per validation video,
   ``val_clips_per_video`` clips evenly spaced from its first to its last frame.
5. Every epoch a checkpoint (model, optimizer, epoch, torch RNG state, history, best weights,
   config hash) is written atomically to ``checkpoint``; a rerun with the same configuration
   and data (same hash) resumes after the last finished epoch and gives the same weights as an
   uninterrupted run. dvclive curves (train_loss, val_loss, val_dice_vs_teacher, one step per
   epoch) are rewritten from the checkpoint's history on resume, so no row is duplicated.

Defaults (``TrainConfig()``) are sized for the phantom on a 2-core CPU (~3 min for 100 x 64
training frames on one busy core): 3 blocks x 1 layer, hidden 6 (43,945 weights, 0.17 GFLOPs
per 112x112 frame), clips of 16, batch 2, lr 3e-3, 12 epochs x 25 steps, patience 4, trained
at 112x112. Measured on the phantom (blurred ground truth as targets), same budget: training
at 56x56 reached Dice 0.96 at 56x56 but only 0.59 at 112x112 (the small student does not
transfer across the 2x scale change), training at 112x112 reached 0.89-0.95 at 112x112; clips
of 8 frames gave 0.89 on whole videos, clips of 16 gave 0.95. Hence ``half_resolution=False``
by default; it stays available for the paper's recipe.
Paper scale (GPU): ``TrainConfig(blocks=3, layers_per_block=3, hidden=12, sequence_length=25,
batch_size=32, lr=1e-3, epochs=100, steps_per_epoch=None, patience=10, half_resolution=True)``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from echodfkd.cost import count_weights
from echodfkd.models.convlstm import StudentNet
from echodfkd.runtime import resolve_device
from echodfkd.store import open_frames, open_masks, write_bytes_atomic

log = logging.getLogger(__name__)

STUDENT_FORMAT = "echodfkd-student"
CHECKPOINT_FORMAT = "echodfkd-student-checkpoint"


@dataclass(frozen=True)
class Source:
    """A frame store, the mask store aligned with it (soft targets) and the splits to use."""

    frames: str
    masks: str
    splits: tuple[str, ...] = ("TRAIN",)


@dataclass(frozen=True)
class TrainConfig:
    """Student architecture and training hyper-parameters (see module docstring)."""

    blocks: int = 3
    layers_per_block: int = 1
    hidden: int = 6
    kernel_size: int = 3
    skip: bool = False
    sequence_length: int = 16
    batch_size: int = 2
    lr: float = 3e-3
    epochs: int = 12
    steps_per_epoch: int | None = 25  # None: ceil(training videos / batch_size)
    patience: int = 4
    half_resolution: bool = False
    augment: bool = True
    seed: int = 0
    val_clips_per_video: int = 2
    short_videos: str = "skip"  # "skip" or "pad"
    filter_column: str | None = None  # keep training videos with min <= column <= max
    filter_min: float | None = None
    filter_max: float | None = None

    def __post_init__(self) -> None:
        for name in ("blocks", "layers_per_block", "hidden", "sequence_length", "batch_size",
                     "epochs", "patience", "val_clips_per_video"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if self.short_videos not in ("skip", "pad"):
            raise ValueError(f"short_videos must be 'skip' or 'pad', got {self.short_videos!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def model_config(self) -> dict:
        return {"blocks": self.blocks, "layers_per_block": self.layers_per_block,
                "hidden": self.hidden, "kernel_size": self.kernel_size, "skip": self.skip}


@dataclass
class ClipSet:
    """Videos held in RAM, concatenated like a frame store.

    ``frames``, ``masks``: uint8 (N, 112, 112); video v is ``[starts[v], starts[v] + lengths[v])``
    (int64 arrays of shape (V,)); ``names[v]`` is ``"<frame store>:<FileName>"``.
    ``skipped`` / ``padded`` name the videos shorter than the clip length that were dropped /
    padded by :func:`prepare_short_videos`.
    """

    frames: np.ndarray
    masks: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)


def select_videos(index, splits: Sequence[str], *, filter_column: str | None = None,
                  filter_min: float | None = None, filter_max: float | None = None,
                  where: str = "index"):
    """Rows of a frame store's video ``index`` in ``splits`` (and, with ``filter_column``,
    with ``filter_min <= value <= filter_max``; missing values are excluded)."""
    rows = index[index["Split"].isin(list(splits))]
    if filter_column is not None:
        if filter_column not in index.columns:
            raise ValueError(f"filter column {filter_column!r} is not in the video index of "
                             f"{where} (columns: {list(index.columns)})")
        values = rows[filter_column].astype("float64")
        keep = values.notna()
        if filter_min is not None:
            keep &= values >= filter_min
        if filter_max is not None:
            keep &= values <= filter_max
        rows = rows[keep.to_numpy()]
    return rows


def _runs(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """Merge sorted, contiguous [start, stop) ranges into maximal runs (fewer Zarr reads)."""
    runs: list[list[int]] = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if runs and runs[-1][1] == a:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(a, b) for a, b in runs]


def load_videos(sources: Sequence[Source], *, filter_column: str | None = None,
                filter_min: float | None = None, filter_max: float | None = None) -> ClipSet:
    """Read the frames and soft masks of the selected videos of ``sources`` into RAM.

    The mask store of each source must be complete and aligned with its frame store
    (checked by :func:`echodfkd.store.open_masks`).
    """
    plan, lengths, names = [], [], []
    for src in sources:
        fs = open_frames(src.frames)
        ms = open_masks(src.masks, frames=fs)
        rows = select_videos(fs.index, src.splits, filter_column=filter_column,
                             filter_min=filter_min, filter_max=filter_max, where=src.frames)
        rows = rows.sort_values("start")
        starts = rows["start"].to_numpy(np.int64)
        stops = rows["stop"].to_numpy(np.int64)
        plan.append((fs, ms, _runs(starts, stops)))
        lengths.extend((stops - starts).tolist())
        names.extend(f"{src.frames}:{n}" for n in rows["FileName"].astype(str))
    lengths_a = np.asarray(lengths, np.int64)
    total = int(lengths_a.sum())
    frames = np.empty((total, 112, 112), np.uint8)  # filled in place: no concatenation copy
    masks = np.empty((total, 112, 112), np.uint8)
    pos = 0
    for fs, ms, runs in plan:
        for a, b in runs:
            frames[pos:pos + b - a] = fs.frames[a:b]
            masks[pos:pos + b - a] = ms.masks[a:b]
            pos += b - a
    starts_a = np.concatenate([[0], np.cumsum(lengths_a)[:-1]]).astype(np.int64)
    return ClipSet(frames, masks, starts_a, lengths_a, names)


def prepare_short_videos(clips: ClipSet, sequence_length: int, policy: str) -> ClipSet:
    """Drop (``"skip"``) or pad by repeating the last frame (``"pad"``) the videos shorter
    than ``sequence_length``; empty videos are always dropped. Logs what it did."""
    short = np.flatnonzero(clips.lengths < sequence_length)
    if len(short) == 0:
        return clips
    if policy not in ("skip", "pad"):
        raise ValueError(f"short_videos must be 'skip' or 'pad', got {policy!r}")
    keep_f, keep_m, lengths, names, skipped, padded = [], [], [], [], [], []
    for v, name in enumerate(clips.names):
        a, n = int(clips.starts[v]), int(clips.lengths[v])
        f, m = clips.frames[a:a + n], clips.masks[a:a + n]
        if n < sequence_length:
            if policy == "skip" or n == 0:
                skipped.append(name)
                continue
            reps = np.full(n, 1)
            reps[-1] += sequence_length - n
            f, m = np.repeat(f, reps, axis=0), np.repeat(m, reps, axis=0)
            padded.append(name)
        keep_f.append(f)
        keep_m.append(m)
        lengths.append(len(f))
        names.append(name)
    if skipped:
        log.warning("skipped %d video(s) shorter than the clip length %d: %s",
                    len(skipped), sequence_length, ", ".join(skipped[:5]))
    if padded:
        log.warning("padded %d video(s) shorter than the clip length %d by repeating their "
                    "last frame: %s", len(padded), sequence_length, ", ".join(padded[:5]))
    lengths_a = np.asarray(lengths, np.int64)
    empty = np.zeros((0, 112, 112), np.uint8)
    return ClipSet(np.concatenate(keep_f) if keep_f else empty,
                   np.concatenate(keep_m) if keep_m else empty,
                   np.concatenate([[0], np.cumsum(lengths_a)[:-1]]).astype(np.int64),
                   lengths_a, names, clips.skipped + skipped, clips.padded + padded)


def sample_clips(lengths: np.ndarray, n: int, sequence_length: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` clips: (video ids int64 (n,), start frames int64 (n,)).

    Videos are drawn uniformly; the start uniformly in ``[0, lengths[v] - sequence_length]``.
    Every video must hold at least ``sequence_length`` frames.
    """
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) == 0:
        raise ValueError("no video to sample clips from")
    if lengths.min() < sequence_length:
        raise ValueError(f"video of {lengths.min()} frames is shorter than the clip length "
                         f"{sequence_length}")
    videos = rng.integers(0, len(lengths), size=n)
    starts = rng.integers(0, lengths[videos] - sequence_length + 1)
    return videos.astype(np.int64), starts.astype(np.int64)


def fixed_clips(lengths: np.ndarray, sequence_length: int,
                per_video: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic clips: ``per_video`` starts per video evenly spaced over
    ``[0, length - sequence_length]`` (duplicates removed). Returns (videos, starts)."""
    videos, starts = [], []
    for v, n in enumerate(np.asarray(lengths, np.int64).tolist()):
        if n < sequence_length:
            continue
        s = np.unique(np.round(np.linspace(0, n - sequence_length, per_video)).astype(np.int64))
        videos.extend([v] * len(s))
        starts.extend(s.tolist())
    return np.asarray(videos, np.int64), np.asarray(starts, np.int64)


def make_batch(clips: ClipSet, videos: np.ndarray, starts: np.ndarray, sequence_length: int,
               half_resolution: bool, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and soft targets of the given clips, float32 (B, L, 1, S, S) in [0, 1],
    S = 56 with ``half_resolution`` (2x2 average pooling) else 112."""
    idx = clips.starts[videos][:, None] + starts[:, None] + np.arange(sequence_length)
    x = torch.from_numpy(clips.frames[idx]).to(device).float().div_(255.0)
    y = torch.from_numpy(clips.masks[idx]).to(device).float().div_(255.0)
    b, t, h, w = x.shape
    if half_resolution:
        x = F.avg_pool2d(x.reshape(b * t, 1, h, w), 2)
        y = F.avg_pool2d(y.reshape(b * t, 1, h, w), 2)
    return x.reshape(b, t, 1, *x.shape[-2:]), y.reshape(b, t, 1, *y.shape[-2:])


def augment_clips(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random appearance changes per clip, for a student that transfers across scanners and
    from synthetic to real videos: gain x U(0.75, 1.3), gamma U(0.7, 1.4) and multiplicative
    speckle-like noise N(1, s^2) per pixel and frame with s ~ U(0, 0.35).

    ``x``: float32 (B, T, 1, H, W) in [0, 1]; returns the same shape, clipped to [0, 1]. The
    geometry is unchanged, so the soft targets stay valid. Draws from ``rng`` only
    (deterministic for a seed).
    """
    b = x.shape[0]
    shape = (b, 1, 1, 1, 1)

    def draw(lo: float, hi: float) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(lo, hi, b).astype(np.float32)).to(x.device).view(shape)

    gain, gamma, sigma = draw(0.75, 1.3), draw(0.7, 1.4), draw(0.0, 0.35)
    noise = torch.from_numpy(rng.standard_normal(x.shape, dtype=np.float32)).to(x.device)
    return (x.clamp_min(0).pow(gamma) * gain * (1 + sigma * noise)).clamp_(0, 1)


def data_hash(*sets: ClipSet) -> str:
    """Hash of the contents (names, frames, masks) of clip sets: identifies the training data."""
    h = hashlib.sha256()
    for s in sets:
        h.update("\n".join(s.names).encode())
        for a in (s.lengths, s.frames, s.masks):
            h.update(np.ascontiguousarray(a))  # buffer protocol: no copy
    return h.hexdigest()[:16]


def config_hash(config: TrainConfig, data: str) -> str:
    key = json.dumps({"config": asdict(config), "data": data}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def evaluate(model: StudentNet, clips: ClipSet, videos: np.ndarray, starts: np.ndarray,
             sequence_length: int, batch_size: int, device: torch.device | str,
             threshold: float = 0.5) -> tuple[float, float]:
    """Mean BCE-with-logits (soft targets) and pooled Dice vs the teacher (both binarised at
    ``threshold``: 2 sum(S*T) / (sum S + sum T) over all pixels of all clips) at 112x112."""
    was = model.training
    model.eval()
    total, count, inter, denom = 0.0, 0, 0.0, 0.0
    try:
        for i in range(0, len(videos), batch_size):
            x, y = make_batch(clips, videos[i:i + batch_size], starts[i:i + batch_size],
                              sequence_length, False, device)
            logits, _ = model(x)
            total += F.binary_cross_entropy_with_logits(logits, y, reduction="sum").item()
            count += y.numel()
            s = torch.sigmoid(logits) > threshold
            t = y > threshold
            inter += (s & t).sum().item()
            denom += s.sum().item() + t.sum().item()
    finally:
        model.train(was)
    return total / max(count, 1), (2 * inter / denom if denom else 1.0)


@dataclass
class TrainResult:
    """Outcome of :func:`train_student`: ``model`` holds the best epoch's weights (eval mode)."""

    model: StudentNet
    history: list[dict]
    best_epoch: int
    best_val_loss: float
    meta: dict


def _save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes_atomic(path, buf.getvalue())


def _load_checkpoint(path: Path, chash: str) -> dict | None:
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint must not block a fresh run
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if ck.get("format") != CHECKPOINT_FORMAT or ck.get("config_hash") != chash:
        log.warning("checkpoint %s belongs to another configuration or data (hash %s, now %s): "
                    "starting afresh", path, ck.get("config_hash"), chash)
        return None
    return ck


def _clone_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _open_live(live_dir: str | os.PathLike | None, history: list[dict]):
    """A dvclive logger whose history is rewritten from ``history`` (no duplicated rows)."""
    if live_dir is None:
        return None
    from dvclive import Live

    live = Live(str(live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
    for row in history:
        _log_row(live, row)
    return live


def _log_row(live, row: dict) -> None:
    for k in ("train_loss", "val_loss", "val_dice_vs_teacher"):
        live.log_metric(k, row[k])
    live.next_step()


def train_student(train_sources: Sequence[Source], val_sources: Sequence[Source],
                  config: TrainConfig, checkpoint: str | os.PathLike, *,
                  live_dir: str | os.PathLike | None = None,
                  device: torch.device | str | None = None,
                  on_epoch_end: Callable[[int, dict], None] | None = None,
                  progress: bool = True) -> TrainResult:
    """Train a student (see module docstring) and return the best epoch's model.

    Args:
        train_sources: where training clips come from (``filter_*`` of ``config`` applies).
        val_sources: validation videos (no filter), clips fixed by
            ``config.val_clips_per_video``.
        checkpoint: file rewritten atomically after every epoch; resumed from when it holds
            the same config hash (config + data contents), ignored otherwise.
        live_dir: dvclive directory, or None for no curves.
        device: default CUDA when available, else CPU.
        on_epoch_end: called as ``fn(epoch, row)`` after each epoch's checkpoint is written
            (``row`` = that epoch's history entry); raising from it interrupts training.
    """
    device = resolve_device(device)
    L = config.sequence_length
    train = load_videos(train_sources, filter_column=config.filter_column,
                        filter_min=config.filter_min, filter_max=config.filter_max)
    train = prepare_short_videos(train, L, config.short_videos)
    val = prepare_short_videos(load_videos(val_sources), L, config.short_videos)
    if len(train) == 0:
        raise ValueError(f"no training video with at least {L} frames in "
                         f"{[s.frames for s in train_sources]} (splits, filter "
                         f"{config.filter_column} in [{config.filter_min}, {config.filter_max}])")
    if len(val) == 0:
        raise ValueError(f"no validation video with at least {L} frames in "
                         f"{[(s.frames, s.splits) for s in val_sources]}")
    val_videos, val_starts = fixed_clips(val.lengths, L, config.val_clips_per_video)
    dhash = data_hash(train, val)
    chash = config_hash(config, dhash)
    steps = config.steps_per_epoch or math.ceil(len(train) / config.batch_size)

    torch.manual_seed(config.seed)
    model = StudentNet(**config.model_config()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    start, history, best, bad, finished = 0, [], None, 0, False
    ckpt_path = Path(checkpoint)
    ck = _load_checkpoint(ckpt_path, chash)
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng_torch"])
        start, history, best = ck["epoch"] + 1, ck["history"], ck["best"]
        bad, finished = ck["bad_epochs"], ck["finished"]
        log.info("resuming from %s after epoch %d", ckpt_path, ck["epoch"])

    live = _open_live(live_dir, history)
    try:
        bar = tqdm(range(start, config.epochs), desc="student epochs",
                   disable=not progress or finished, initial=start, total=config.epochs)
        for epoch in bar:
            if finished:
                break
            rng = np.random.default_rng([config.seed, epoch])
            model.train()
            loss_sum = 0.0
            for _ in range(steps):
                v, s = sample_clips(train.lengths, config.batch_size, L, rng)
                x, y = make_batch(train, v, s, L, config.half_resolution, device)
                if config.augment:
                    x = augment_clips(x, rng)
                logits, _ = model(x)
                loss = F.binary_cross_entropy_with_logits(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.item()
            val_loss, val_dice = evaluate(model, val, val_videos, val_starts, L,
                                          config.batch_size, device)
            row = {"epoch": epoch, "train_loss": loss_sum / steps, "val_loss": val_loss,
                   "val_dice_vs_teacher": val_dice}
            history.append(row)
            if best is None or val_loss < best["val_loss"]:
                best = {"epoch": epoch, "val_loss": val_loss, "val_dice_vs_teacher": val_dice,
                        "state_dict": _clone_state(model)}
                bad = 0
            else:
                bad += 1
            finished = bad >= config.patience or epoch == config.epochs - 1
            _save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config_hash": chash, "config": asdict(config),
                "epoch": epoch, "model": _clone_state(model), "optimizer": opt.state_dict(),
                "rng_torch": torch.get_rng_state(), "history": history, "best": best,
                "bad_epochs": bad, "finished": finished})
            if live is not None:
                _log_row(live, row)
            bar.set_postfix(train=f"{row['train_loss']:.4f}", val=f"{val_loss:.4f}",
                            dice=f"{val_dice:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if finished:
                break
    finally:
        if live is not None:
            live.end()

    model.load_state_dict(best["state_dict"])
    model.eval()
    meta = {
        "best_epoch": int(best["epoch"]), "val_loss": float(best["val_loss"]),
        "val_dice_vs_teacher": float(best["val_dice_vs_teacher"]),
        "epochs_run": len(history), "stopped_early": len(history) < config.epochs,
        "weights": count_weights(model), "steps_per_epoch": steps,
        "train_videos": len(train), "val_videos": len(val), "val_clips": int(len(val_videos)),
        "skipped_short_videos": train.skipped + val.skipped,
        "padded_short_videos": train.padded + val.padded,
        "train_sources": [{"frames": s.frames, "masks": s.masks, "splits": list(s.splits)}
                          for s in train_sources],
        "val_sources": [{"frames": s.frames, "masks": s.masks, "splits": list(s.splits)}
                        for s in val_sources],
        "train_config": asdict(config), "data_hash": dhash, "config_hash": chash,
    }
    return TrainResult(model, history, int(best["epoch"]), float(best["val_loss"]), meta)


def save_student(path: str | os.PathLike, model: StudentNet, meta: dict) -> None:
    """Write ``{"format", "config", "state_dict", "meta"}`` atomically (loadable with
    ``torch.load(weights_only=True)``); ``meta`` must hold only JSON-like values."""
    buf = io.BytesIO()
    torch.save({"format": STUDENT_FORMAT, "config": model.config(),
                "state_dict": _clone_state(model), "meta": meta}, buf)
    write_bytes_atomic(path, buf.getvalue())


def read_student(path: str | os.PathLike) -> dict:
    """The raw contents of a ``student.pt`` file, checked for its format."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"student file {str(path)!r} does not exist: run the train stage")
    if not isinstance(ck, dict) or ck.get("format") != STUDENT_FORMAT:
        raise ValueError(f"{str(path)!r} is not an {STUDENT_FORMAT} file "
                         f"(format {ck.get('format') if isinstance(ck, dict) else type(ck)})")
    return ck


def load_student(path: str | os.PathLike, device: torch.device | str = "cpu") -> StudentNet:
    """Rebuild the student saved by :func:`save_student`, on ``device``, in eval mode."""
    ck = read_student(path)
    model = StudentNet(**ck["config"])
    model.load_state_dict(ck["state_dict"])
    return model.to(device).eval()
