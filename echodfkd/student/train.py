"""Train the ConvLSTM student on frames and cached teacher masks read from Zarr (no video decoding).

Data flow:

1. The selected videos of one or more sources (a frame store and the mask store aligned with
   it, docs/design.md §6) are opened by :func:`_open_data`: loaded into RAM
   (:class:`~echodfkd.student.clips.ClipSet`, uint8, 2 x 12.5 kB per frame: the phantom's 100 + 20
   synthetic videos x 64 frames take ~190 MB) when they take at most
   ``TrainConfig.stream_above_mb``, else streamed from the Zarr stores
   (:class:`~echodfkd.student.clips.StreamingClips`: chunk-aware reads through an LRU cache of
   ``cache_mb``, in ``loader_workers`` background threads), so that peak memory does not grow with
   the data set (EchoNet-Synthetic: ~1.9M frames, ~48 GB in RAM). Both give byte-identical
   clips, hence the same weights for a seed; the log says which path was taken.
2. Training clips are ``sequence_length`` consecutive frames of one video: the video is drawn
   uniformly among the training videos (composite training: first the source, with
   probability weight / sum of weights, then a video uniformly within it) and the start
   uniformly in ``[0, length - L]``, from a ``numpy`` generator seeded by ``(seed, epoch)``
   (so a resumed run draws the same clips). Per step the draws are, in order: videos, starts,
   then the augmentation's gain, gamma, noise level and noise (:func:`draw_augment`), then
   the spatial maps (:func:`draw_spatial`, with ``spatial`` > 0); the
   prefetcher makes them in that order in the training thread and only the reads run ahead.
   Videos shorter than L are **skipped** (default; logged and counted in the result) or, with
   ``short_videos="pad"``, padded by repeating their last frame and mask.
3. With ``half_resolution``, frames and soft targets are 2x2 average-pooled to 56x56 for
   training (as the original); validation runs at 112x112, the inference resolution.
   With ``spatial`` > 0, each training clip and its soft targets are first warped by one
   random rotation, scale and shift (:func:`draw_spatial`, :func:`apply_spatial`): hearts of
   other sizes and positions than the synthetic set's, which keeps the worst real videos
   closer to the median (docs/design.md §3, "The worst video"). With ``augment``, each
   training clip then gets a random gain, gamma and speckle-like noise
   (:func:`augment_clips`), which narrows the synthetic-to-real gap.
4. Loss: binary cross-entropy with logits against the teacher's soft targets ``p = mask/255``
   (``loss="bce_dice"`` adds ``dice_weight`` x a soft Dice loss, :func:`training_loss`).
   Adam at ``lr`` (``lr_schedule="cosine"``: decayed over the ``epochs * steps_per_epoch``
   budget, :func:`lr_factor`), early stopping on the validation loss (BCE whatever the
   training loss; ``patience`` epochs without improvement); the best epoch's weights are kept.
   With ``burn_in`` k, the first k frames of every training clip only warm up the ConvLSTM
   state (forward pass without gradient, no loss, :func:`forward_burn_in`); the loss covers
   the last ``sequence_length - k`` frames. With ``ema`` > 0, an exponential moving average
   of the weights (:func:`ema_update`) is what is validated, kept as the best epoch and
   returned. Validation clips are fixed: per validation video,
   ``val_clips_per_video`` clips evenly spaced from its first to its last frame; they are read
   one batch at a time (bounded memory on the streaming path).
5. Every epoch a checkpoint (model, optimizer, epoch, torch RNG state, history, best weights,
   config hash) is written atomically to ``checkpoint``. The config hash covers the
   configuration and the *inputs fingerprint* (:func:`echodfkd.student.clips.inputs_fingerprint`: the
   frame store's index fingerprint, the mask store's ``content_sha`` or a hash of its files,
   the selected videos and the mixing weights). A rerun with the same hash resumes after the
   last finished epoch and gives the same weights as an uninterrupted run; a rerun on other
   inputs logs what changed and starts afresh. dvclive curves (train_loss, val_loss,
   val_dice_vs_teacher, one step per epoch) are rewritten from the checkpoint's history on
   resume, so no row is duplicated.

GPU (``device`` CUDA): batches are read into pinned memory and copied with ``non_blocking``;
``TrainConfig.amp`` runs forward/loss under bf16 autocast (sound for training clips of a few
tens of frames: the loss is computed in float32 and the recurrent state is reset every clip;
inference stays float32 because the ConvLSTM state is carried over hundreds of frames and
bf16's 8-bit mantissa would accumulate there). On CPU ``amp`` is ignored.

The recipe's values live in params.yaml (``train:``, the student's shape in ``student:`` or
``grid.<name>``); the measurements behind them are in docs/design.md §3 ("Recipe measurements").
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from echodfkd.student.clips import (SHORT_VIDEO_POLICIES, ClipSet, Source, StreamingClips,
                                    choose_streaming, fixed_clips, inputs_fingerprint,
                                    load_videos, plan_videos, prefetch, prepare_short_videos,
                                    sample_clips)
from echodfkd.cost import count_weights
from echodfkd.errors import InputError
from echodfkd.student.files import clone_state
from echodfkd.student.model import StudentNet
from echodfkd.student.shape import StudentShape
from echodfkd.runtime import resolve_device
from echodfkd.data.store import write_bytes_atomic
from echodfkd.warp import affine_matrices, warp_pair

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "echodfkd-student-checkpoint"

LOSSES = ("bce", "bce_dice")
LR_SCHEDULES = ("constant", "cosine")
AUGMENT_MAX_STRENGTH = 2.0  # gain/gamma ranges stay positive up to this scale
SPATIAL_MAX_STRENGTH = 3.0  # rotation up to +-0.6 rad, scale x0.70-1.43, shift +-0.36

READ_AHEAD = 2  # streaming: steps read ahead per reader thread


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` section of params.yaml: the recipe every student is trained with.

    Field names are the params keys (README, params.yaml comments); the module docstring says
    what each does. ``steps_per_epoch`` 0: one pass over the training videos per epoch;
    ``filter_*`` None: no condition / unbounded. ``threads``, ``stream_above_mb``,
    ``cache_mb``, ``loader_workers`` and ``amp`` choose how the data reaches the model and do
    not change the weights on CPU.
    """

    sources: str
    val: str
    filter_column: str | None
    filter_min: float | None
    filter_max: float | None
    sequence_length: int
    batch: int
    lr: float
    epochs: int
    steps_per_epoch: int
    patience: int
    half_resolution: bool
    augment: bool
    augment_strength: float
    sharpen: float
    spatial: float
    loss: str
    dice_weight: float
    lr_schedule: str
    burn_in: int
    ema: float
    val_clips_per_video: int
    short_videos: str
    threads: int
    stream_above_mb: float
    cache_mb: float
    loader_workers: int
    amp: bool

    def __post_init__(self) -> None:
        for name in ("sequence_length", "batch", "epochs", "patience", "val_clips_per_video"):
            if getattr(self, name) < 1:
                raise InputError(f"train.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("steps_per_epoch", "stream_above_mb", "cache_mb", "loader_workers"):
            if getattr(self, name) < 0:
                raise InputError(f"train.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.short_videos not in SHORT_VIDEO_POLICIES:
            raise InputError(f"train.short_videos must be one of {list(SHORT_VIDEO_POLICIES)}, "
                             f"got {self.short_videos!r}")
        if not self.lr > 0:
            raise InputError(f"train.lr must be > 0, got {self.lr!r}")
        if self.loss not in LOSSES:
            raise InputError(f"train.loss must be one of {list(LOSSES)}, got {self.loss!r}")
        if not self.dice_weight >= 0:
            raise InputError(f"train.dice_weight must be >= 0, got {self.dice_weight!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"train.lr_schedule must be one of {list(LR_SCHEDULES)}, got "
                             f"{self.lr_schedule!r}")
        if not 0 <= self.burn_in < self.sequence_length:
            raise InputError(f"train.burn_in must be in [0, sequence_length - 1] = [0, "
                             f"{self.sequence_length - 1}] (frames of a clip without loss), "
                             f"got {self.burn_in!r}")
        if not 0 <= self.ema < 1:
            raise InputError(f"train.ema must be in [0, 1) (0: no weight averaging), got "
                             f"{self.ema!r}")
        if not 0 <= self.sharpen <= 4:
            raise InputError(f"train.sharpen must be in [0, 4] (0: no sharpening), got "
                             f"{self.sharpen!r}")
        if not 0 <= self.spatial <= SPATIAL_MAX_STRENGTH:
            raise InputError(f"train.spatial must be in [0, {SPATIAL_MAX_STRENGTH}] (0: no "
                             f"random affine), got {self.spatial!r}")
        if not 0 <= self.augment_strength <= AUGMENT_MAX_STRENGTH:
            raise InputError(f"train.augment_strength must be in [0, {AUGMENT_MAX_STRENGTH}] "
                             f"(1: the default ranges), got {self.augment_strength!r}")


# Fields that choose how data reaches the model, not what is learnt: left out of the config
# hash, so that a resumed run may change them.
_LOADING_FIELDS = ("sources", "val", "threads", "stream_above_mb", "cache_mb", "loader_workers")


def to_batch(frames: torch.Tensor, masks: torch.Tensor, half_resolution: bool,
             device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, L, 112, 112) frames and masks -> float32 (B, L, 1, S, S) in [0, 1] on
    ``device``, S = 56 with ``half_resolution`` (2x2 average pooling) else 112. A pinned CPU
    tensor is copied to CUDA without blocking."""
    nb = frames.is_pinned() if frames.device.type == "cpu" else False
    x = frames.to(device, non_blocking=nb).float().div_(255.0)
    y = masks.to(device, non_blocking=nb).float().div_(255.0)
    b, t, h, w = x.shape
    if half_resolution:
        x = F.avg_pool2d(x.reshape(b * t, 1, h, w), 2)
        y = F.avg_pool2d(y.reshape(b * t, 1, h, w), 2)
    return x.reshape(b, t, 1, *x.shape[-2:]), y.reshape(b, t, 1, *y.shape[-2:])


def make_batch(clips: ClipSet | StreamingClips, videos: np.ndarray, starts: np.ndarray,
               sequence_length: int, half_resolution: bool, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and soft targets of the given clips, float32 (B, L, 1, S, S) in [0, 1],
    S = 56 with ``half_resolution`` (2x2 average pooling) else 112."""
    f, m = clips.read(videos, starts, sequence_length)
    return to_batch(torch.from_numpy(f), torch.from_numpy(m), half_resolution, device)


class Augment(NamedTuple):
    """Random draws of :func:`augment_clips` for a batch of B clips: ``gain``, ``gamma``,
    ``sigma`` float32 (B,), ``noise`` float32 (B, T, 1, H, W); ``sharpen`` float32 (B,)
    unsharp-mask amounts, or None (no sharpening: the default)."""

    gain: np.ndarray
    gamma: np.ndarray
    sigma: np.ndarray
    noise: np.ndarray
    sharpen: np.ndarray | None = None


def augment_ranges(strength: float) -> tuple[tuple[float, float], ...]:
    """(low, high) of gain, gamma and noise level for an augmentation ``strength``: each range
    scaled about its identity value (gain 1, gamma 1, noise 0), so strength 1 gives gain
    (0.75, 1.3), gamma (0.7, 1.4), noise (0, 0.35), strength 0 no change, strength 2 gain
    (0.5, 1.6), gamma (0.4, 1.8), noise (0, 0.7)."""
    k = float(strength)
    return ((1 - 0.25 * k, 1 + 0.3 * k), (1 - 0.3 * k, 1 + 0.4 * k), (0.0, 0.35 * k))


def draw_augment(rng: np.random.Generator, shape: Sequence[int],
                 strength: float, sharpen: float) -> Augment:
    """The draws of :func:`augment_clips` for a batch of ``shape`` (B, T, 1, H, W), in its
    order: gain U(0.75, 1.3), gamma U(0.7, 1.4), noise level U(0, 0.35) per clip (ranges
    scaled by ``strength``, ``train.augment_strength``: :func:`augment_ranges`), then
    standard normal noise per pixel and frame. The number of draws does not depend on
    ``strength``. With ``sharpen`` > 0 (``train.sharpen``), an unsharp-mask amount
    U(0, sharpen) per clip is drawn last (so the earlier draws are those of ``sharpen`` 0)."""
    b = shape[0]
    gain, gamma, sigma = (rng.uniform(lo, hi, b).astype(np.float32)
                          for lo, hi in augment_ranges(strength))
    noise = rng.standard_normal(tuple(shape), dtype=np.float32)
    amount = rng.uniform(0.0, sharpen, b).astype(np.float32) if sharpen > 0 else None
    return Augment(gain, gamma, sigma, noise, amount)


def apply_augment(x: torch.Tensor, aug: Augment) -> torch.Tensor:
    """``clip(x ** gamma * gain * (1 + sigma * noise), 0, 1)`` per clip (see
    :func:`augment_clips`); ``x`` float32 (B, T, 1, H, W) in [0, 1]. With ``aug.sharpen``,
    each frame is first sharpened, ``clip(x + a (x - box3(x)), 0, 1)`` with ``box3`` the 3x3
    mean (replicated borders) and ``a`` the clip's amount: finer texture, as the real-like
    videos have more than the blurred synthetic ones (docs/design.md §5)."""
    view = (x.shape[0], 1, 1, 1, 1)
    if aug.sharpen is not None:
        b, t, c, h, w = x.shape
        flat = x.reshape(b * t, c, h, w)
        blur = F.avg_pool2d(F.pad(flat, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        a = torch.from_numpy(aug.sharpen).to(x.device).view(view)
        x = (x + a * (x - blur.reshape(x.shape))).clamp(0, 1)
    gain, gamma, sigma = (torch.from_numpy(a).to(x.device).view(view)
                          for a in (aug.gain, aug.gamma, aug.sigma))
    noise = torch.from_numpy(aug.noise).to(x.device)
    return (x.clamp_min(0).pow(gamma) * gain * (1 + sigma * noise)).clamp_(0, 1)


def augment_clips(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random appearance changes per clip, for a student that transfers across scanners and
    from synthetic to real videos: gain x U(0.75, 1.3), gamma U(0.7, 1.4) and multiplicative
    speckle-like noise N(1, s^2) per pixel and frame with s ~ U(0, 0.35).

    ``x``: float32 (B, T, 1, H, W) in [0, 1]; returns the same shape, clipped to [0, 1]. The
    geometry is unchanged, so the soft targets stay valid. Draws from ``rng`` only
    (deterministic for a seed). These are the ranges of strength 1, without sharpening.
    """
    return apply_augment(x, draw_augment(rng, x.shape, strength=1.0, sharpen=0.0))


def draw_spatial(rng: np.random.Generator, batch: int, strength: float) -> np.ndarray:
    """One random affine map per clip for :func:`apply_spatial`, ``train.spatial`` =
    ``strength`` k: rotation U(-0.2k, 0.2k) rad, scale exp(U(-0.12k, 0.12k)) (k 1: x0.89 to
    x1.13), shift U(-0.12k, 0.12k) of the half-width along x then y (k 1: up to 6.7 px at
    112x112), drawn in that order from ``rng``. Returns float32 (B, 2, 3): the matrices of
    :func:`echodfkd.warp.affine_matrices` (computed in float64); strength 0 gives the
    identity."""
    k = float(strength)
    angle = rng.uniform(-0.2 * k, 0.2 * k, batch)
    scale = np.exp(rng.uniform(-0.12 * k, 0.12 * k, batch))
    tx, ty = rng.uniform(-0.12 * k, 0.12 * k, (2, batch))
    theta = affine_matrices(*(torch.from_numpy(a) for a in (angle, scale, tx, ty)))
    return theta.numpy().astype(np.float32)


def apply_spatial(x: torch.Tensor, y: torch.Tensor, theta: np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp clip b of frames ``x`` and soft targets ``y`` (float32 (B, T, 1, H, W) in [0, 1])
    by ``theta[b]`` (float32 (B, 2, 3), :func:`draw_spatial`), the same map on every frame of
    the clip and on both tensors, so the targets stay valid (:func:`echodfkd.warp.warp_pair`:
    bilinear sampling, 0, black and no LV, outside the frame). Returns the warped (x, y),
    same shapes."""
    b, t, c, h, w = x.shape
    th = torch.from_numpy(theta).to(x.device).repeat_interleave(t, 0)
    xs, ys = warp_pair(x.reshape(b * t, c, h, w), y.reshape(b * t, c, h, w), th)
    return xs.reshape(x.shape), ys.reshape(y.shape)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0
                   ) -> torch.Tensor:
    """Soft Dice loss against soft targets, per clip then averaged over the batch.

    ``logits``, ``target``: float32 (B, T, 1, H, W), target probabilities in [0, 1]. With
    ``p = sigmoid(logits)`` and sums over all frames and pixels of a clip b:
    ``1 - (2 sum(p*t) + eps) / (sum p + sum t + eps)``; ``eps`` (in pixels) keeps an empty
    clip finite (loss 0 when prediction and target are both empty). Returns a 0-d tensor.
    """
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1 - (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def training_loss(logits: torch.Tensor, target: torch.Tensor, loss: str,
                  dice_weight: float) -> torch.Tensor:
    """The training loss (0-d): BCE with logits against soft targets (``"bce"``), plus
    ``dice_weight`` x :func:`soft_dice_loss` with ``"bce_dice"`` (``train.loss``,
    ``train.dice_weight``). Shapes as :func:`soft_dice_loss`."""
    out = F.binary_cross_entropy_with_logits(logits, target)
    if loss == "bce_dice":
        out = out + dice_weight * soft_dice_loss(logits, target)
    elif loss != "bce":
        raise InputError(f"loss must be one of {list(LOSSES)}, got {loss!r}")
    return out


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) of ``total``:
    1 for ``"constant"``; ``0.5 (1 + cos(pi step / total))`` for ``"cosine"`` (1 at the first
    step, decaying towards 0 at the end of the budget ``epochs * steps_per_epoch``; early
    stopping ends it sooner)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise InputError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {schedule!r}")


def forward_burn_in(model: StudentNet, x: torch.Tensor, burn_in: int) -> torch.Tensor:
    """Logits of frames ``burn_in:`` of clips ``x`` (B, L, 1, H, W), the ConvLSTM state
    warmed up on the first ``burn_in`` frames without gradient (they cost a forward pass
    only and carry no loss): float32 (B, L - burn_in, 1, H, W). ``burn_in`` 0: one plain
    forward pass."""
    if burn_in <= 0:
        return model(x)[0]
    with torch.no_grad():
        _, state = model(x[:, :burn_in])
    return model(x[:, burn_in:], [(h.detach(), c.detach()) for h, c in state])[0]


@torch.no_grad()
def ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float,
               step: int) -> None:
    """After optimizer step ``step`` (0-based): each parameter of ``ema_model`` becomes
    ``d * ema + (1 - d) * param`` with ``d = min(decay, (1 + step) / (10 + step))`` (short
    memory at the start, so the average does not hold on to the initial weights); buffers
    (BatchNorm running statistics, already averages) are copied from ``model``."""
    d = min(decay, (1 + step) / (10 + step))
    for e, p in zip(ema_model.parameters(), model.parameters()):
        e.mul_(d).add_(p.detach(), alpha=1 - d)
    for e, b in zip(ema_model.buffers(), model.buffers()):
        e.copy_(b)


def config_hash(shape: StudentShape, config: TrainConfig, seed: int, data: str) -> str:
    """16 hex digits identifying what a checkpoint was trained for: the student's shape, the
    recipe (less the fields that only choose how data is read, ``_LOADING_FIELDS``), the seed
    and the inputs fingerprint ``data``."""
    cfg = {k: v for k, v in asdict(config).items() if k not in _LOADING_FIELDS}
    key = json.dumps({"shape": asdict(shape), "config": cfg, "seed": seed, "data": data},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@torch.no_grad()
def validate(model: StudentNet, clips: ClipSet | StreamingClips, videos: np.ndarray,
             starts: np.ndarray, sequence_length: int, batch_size: int,
             device: torch.device | str, threshold: float = 0.5) -> tuple[float, float]:
    """Mean BCE-with-logits (soft targets) and pooled Dice vs the teacher (both binarised at
    ``threshold``: 2 sum(S*T) / (sum S + sum T) over all pixels of all clips) at 112x112.
    Reads one batch of clips at a time."""
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


def _load_checkpoint(path: Path, chash: str, dhash: str) -> dict | None:
    """The checkpoint at ``path`` when it was written for config hash ``chash``; else None
    (logged: another configuration, or other inputs, whose fingerprint ``dhash`` differs)."""
    if not path.exists():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt checkpoint must not block a fresh run
        log.warning("ignoring unreadable checkpoint %s: %s", path, exc)
        return None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        log.warning("ignoring %s: not an %s file", path, CHECKPOINT_FORMAT)
        return None
    if ck.get("data_hash") not in (None, dhash):
        log.warning("checkpoint %s was trained on other inputs (fingerprint %s, now %s: frames, "
                    "masks or the selected videos changed): starting afresh", path,
                    ck.get("data_hash"), dhash)
        return None
    if ck.get("config_hash") != chash:
        log.warning("checkpoint %s belongs to another configuration or data (hash %s, now %s): "
                    "starting afresh", path, ck.get("config_hash"), chash)
        return None
    return ck


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


def _open_data(train_sources: Sequence[Source], val_sources: Sequence[Source],
               config: TrainConfig):
    """Training and validation clip sets, in RAM or streamed as one decision for both."""
    table = plan_videos(train_sources, filter_column=config.filter_column,
                        filter_min=config.filter_min, filter_max=config.filter_max)
    # Validation is not filtered: train.filter_* selects the training videos only.
    val_table = plan_videos(val_sources, filter_column=None, filter_min=None, filter_max=None)
    frames = table.frames + val_table.frames
    stream_above = config.stream_above_mb
    streaming = choose_streaming(frames, stream_above)
    mb = 2 * 112 * 112 * frames / 2 ** 20
    if streaming:
        log.info("train + val data: %d + %d videos, %.0f MiB of frames and masks > %g MiB "
                 "(train.stream_above_mb): streaming from Zarr, chunk cache %g MiB, %d reader "
                 "thread(s)", len(table.names), len(val_table.names), mb, stream_above,
                 config.cache_mb, config.loader_workers)
        cache = int(config.cache_mb * 2 ** 20)
        train, val = StreamingClips(table, cache), StreamingClips(val_table, cache // 4)
    else:
        log.info("train + val data: %d + %d videos, %.0f MiB of frames and masks <= %g MiB "
                 "(train.stream_above_mb): loaded into RAM", len(table.names),
                 len(val_table.names), mb, stream_above)
        train = load_videos(train_sources, filter_column=config.filter_column,
                            filter_min=config.filter_min, filter_max=config.filter_max,
                            table=table)
        val = load_videos(val_sources, filter_column=None, filter_min=None, filter_max=None,
                          table=val_table)
    L = config.sequence_length
    return (prepare_short_videos(train, L, config.short_videos),
            prepare_short_videos(val, L, config.short_videos), streaming)


@dataclass
class _Run:
    """What one training run carries from epoch to epoch (and through a checkpoint)."""

    model: StudentNet
    ema_model: StudentNet | None  # weight average (config.ema > 0): what is validated and kept
    opt: torch.optim.Optimizer
    start: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    bad: int = 0
    finished: bool = False


def _start_or_resume(shape: StudentShape, config: TrainConfig, seed: int,
                     device: torch.device, ckpt_path: Path, chash: str, dhash: str) -> _Run:
    """A fresh model and optimizer seeded by ``seed``, or the state of the checkpoint at
    ``ckpt_path`` when it was written for config hash ``chash``."""
    torch.manual_seed(seed)
    model = StudentNet(**asdict(shape)).to(device)
    ema_model = None
    if config.ema > 0:
        ema_model = StudentNet(**asdict(shape)).to(device)
        ema_model.load_state_dict(model.state_dict())
        ema_model.requires_grad_(False)
    run = _Run(model, ema_model, torch.optim.Adam(model.parameters(), lr=config.lr))
    ck = _load_checkpoint(ckpt_path, chash, dhash)
    if ck is not None:
        model.load_state_dict(ck["model"])
        if ema_model is not None:
            ema_model.load_state_dict(ck["ema"])
        run.opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["rng_torch"])
        run.start, run.history, run.best = ck["epoch"] + 1, ck["history"], ck["best"]
        run.bad, run.finished = ck["bad_epochs"], ck["finished"]
        log.info("resuming from %s after epoch %d", ckpt_path, ck["epoch"])
    return run


def _train_epoch(run: _Run, train: ClipSet | StreamingClips, config: TrainConfig, seed: int,
                 epoch: int, steps: int, streaming: bool, device: torch.device) -> float:
    """One epoch of ``steps`` optimizer steps on clips drawn from a generator seeded by
    ``(seed, epoch)``; returns the mean training loss."""
    L = config.sequence_length
    cuda = device.type == "cuda"
    amp = config.amp and cuda
    size = 56 if config.half_resolution else 112
    shape = (config.batch, L, 1, size, size)
    total_steps = config.epochs * steps  # the learning-rate schedule's horizon
    rng = np.random.default_rng([seed, epoch])

    def draw() -> tuple:
        v, s = sample_clips(train.lengths, config.batch, L, rng, train.groups, train.weights)
        aug = (draw_augment(rng, shape, config.augment_strength, config.sharpen)
               if config.augment else None)
        # drawn last, so that spatial 0 leaves every earlier draw as it was
        theta = draw_spatial(rng, config.batch, config.spatial) if config.spatial else None
        return v, s, aug, theta

    def read(videos: np.ndarray, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        f, m = train.read(videos, starts, L)
        f, m = torch.from_numpy(f), torch.from_numpy(m)
        if cuda:  # page-locked: the copy to the GPU runs asynchronously
            f, m = f.pin_memory(), m.pin_memory()
        return f, m

    workers = config.loader_workers if streaming else 0
    model, opt = run.model, run.opt
    model.train()
    loss_sum, step = 0.0, 0
    for (_, _, aug, theta), (f, m) in prefetch(draw, read, steps, workers,
                                               READ_AHEAD * max(workers, 1)):
        x, y = to_batch(f, m, config.half_resolution, device)
        if theta is not None:
            x, y = apply_spatial(x, y, theta)
        if aug is not None:
            x = apply_augment(x, aug)
        for group in opt.param_groups:
            group["lr"] = config.lr * lr_factor(config.lr_schedule, epoch * steps + step,
                                                total_steps)
        step += 1
        with (torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()):
            logits = forward_burn_in(model, x, config.burn_in)
        loss = training_loss(logits.float(), y[:, config.burn_in:], config.loss,
                             config.dice_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if run.ema_model is not None:
            ema_update(run.ema_model, model, config.ema, epoch * steps + step - 1)
        loss_sum += loss.item()
    return loss_sum / steps


def _metadata(run: _Run, config: TrainConfig, shape: StudentShape, seed: int,
              train_sources: Sequence[Source], val_sources: Sequence[Source],
              train: ClipSet | StreamingClips, val: ClipSet | StreamingClips, n_val_clips: int,
              steps: int, streaming: bool, dhash: str, chash: str) -> dict:
    """The JSON-like record saved in student.pt's ``meta`` (best epoch, data, recipe)."""
    best = run.best
    meta = {
        "best_epoch": int(best["epoch"]), "val_loss": float(best["val_loss"]),
        "val_dice_vs_teacher": float(best["val_dice_vs_teacher"]),
        "epochs_run": len(run.history), "stopped_early": len(run.history) < config.epochs,
        "weights": count_weights(run.model), "steps_per_epoch": steps,
        "train_videos": len(train), "val_videos": len(val), "val_clips": n_val_clips,
        "skipped_short_videos": train.skipped + val.skipped,
        "padded_short_videos": train.padded + val.padded,
        "train_sources": [{"frames": s.frames, "masks": s.masks, "splits": list(s.splits),
                           "weight": float(s.weight)} for s in train_sources],
        "val_sources": [{"frames": s.frames, "masks": s.masks, "splits": list(s.splits)}
                        for s in val_sources],
        "data_path": "stream" if streaming else "ram",
        "shape": asdict(shape), "train_config": asdict(config), "seed": seed,
        "data_hash": dhash, "config_hash": chash,
    }
    if streaming:
        meta["chunk_cache"] = {"hits": train.cache.hits, "misses": train.cache.misses}
    return meta


def train_student(train_sources: Sequence[Source], val_sources: Sequence[Source],
                  shape: StudentShape, config: TrainConfig, seed: int,
                  checkpoint: str | os.PathLike, *,
                  live_dir: str | os.PathLike | None = None,
                  device: torch.device | str | None = None,
                  on_epoch_end: Callable[[int, dict], None] | None = None,
                  progress: bool = True) -> TrainResult:
    """Train a student of ``shape`` with recipe ``config`` (see module docstring) and return
    the best epoch's model.

    Args:
        train_sources: where training clips come from (``config.filter_*`` applies; several
            sources are mixed by their ``weight``).
        val_sources: validation videos (no filter), clips fixed by
            ``config.val_clips_per_video``.
        seed: seeds the weights, the clip draws and the augmentation.
        checkpoint: file rewritten atomically after every epoch; resumed from when it holds
            the same config hash (shape + recipe + seed + inputs fingerprint), else ignored.
        live_dir: dvclive directory, or None for no curves.
        device: "auto" or None: CUDA when available, else CPU.
        on_epoch_end: called as ``fn(epoch, row)`` after each epoch's checkpoint is written
            (``row`` = that epoch's history entry); raising from it interrupts training.
    """
    device = resolve_device(device)
    L = config.sequence_length
    train, val, streaming = _open_data(train_sources, val_sources, config)
    if len(train) == 0:
        raise InputError(f"no training video with at least {L} frames in "
                         f"{[(s.frames, s.splits) for s in train_sources]} (filter "
                         f"{config.filter_column} in [{config.filter_min}, {config.filter_max}]"
                         f"): widen the splits or the filter, or set short_videos to pad")
    if len(val) == 0:
        raise InputError(f"no validation video with at least {L} frames in "
                         f"{[(s.frames, s.splits) for s in val_sources]}: choose other "
                         f"validation splits")
    val_videos, val_starts = fixed_clips(val.lengths, L, config.val_clips_per_video)
    dhash = inputs_fingerprint(list(train_sources) + list(val_sources), train, val)
    chash = config_hash(shape, config, seed, dhash)
    steps = config.steps_per_epoch or math.ceil(len(train) / config.batch)
    ckpt_path = Path(checkpoint)
    run = _start_or_resume(shape, config, seed, device, ckpt_path, chash, dhash)
    live = _open_live(live_dir, run.history)
    try:
        bar = tqdm(range(run.start, config.epochs), desc="student epochs",
                   disable=not progress or run.finished, initial=run.start,
                   total=config.epochs)
        for epoch in bar:
            if run.finished:
                break
            train_loss = _train_epoch(run, train, config, seed, epoch, steps, streaming, device)
            scored = run.model if run.ema_model is None else run.ema_model
            val_loss, val_dice = validate(scored, val, val_videos, val_starts, L, config.batch,
                                          device)
            row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                   "val_dice_vs_teacher": val_dice}
            run.history.append(row)
            if run.best is None or val_loss < run.best["val_loss"]:
                run.best = {"epoch": epoch, "val_loss": val_loss,
                            "val_dice_vs_teacher": val_dice, "state_dict": clone_state(scored)}
                run.bad = 0
            else:
                run.bad += 1
            run.finished = run.bad >= config.patience or epoch == config.epochs - 1
            _save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "config_hash": chash, "data_hash": dhash,
                "epoch": epoch, "model": clone_state(run.model),
                "optimizer": run.opt.state_dict(), "rng_torch": torch.get_rng_state(),
                "history": run.history, "best": run.best, "bad_epochs": run.bad,
                "finished": run.finished,
                **({} if run.ema_model is None else {"ema": clone_state(run.ema_model)})})
            if live is not None:
                _log_row(live, row)
            bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}",
                            dice=f"{val_dice:.3f}")
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if run.finished:
                break
    finally:
        if live is not None:
            live.end()

    model = run.model
    model.load_state_dict(run.best["state_dict"])
    model.eval()
    meta = _metadata(run, config, shape, seed, train_sources, val_sources, train, val,
                     int(len(val_videos)), steps, streaming, dhash, chash)
    return TrainResult(model, run.history, int(run.best["epoch"]), float(run.best["val_loss"]),
                       meta)
