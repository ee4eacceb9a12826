"""Teachers: loading, importing cached outputs, fusing, and running them over a frame store.

A *teacher* gives every frame an LV probability map. It is one or several *members*, fused as a
weighted mean of probabilities (:func:`fuse_probabilities`):

- a model checkpoint (:class:`ModelMember`), in the project format written by
  :func:`save_teacher` or an EchoNet-Dynamic ``deeplabv3_resnet50`` checkpoint;
- a folder of cached outputs, one file per video (:class:`OutputsMember`), as the EchoNet
  research code writes them (``<FileName>.seg.npz``) or as plain ``<FileName>.npy``.

:func:`infer_teacher` writes the fused masks into a mask store (``store.py``) aligned frame for
frame with a frame store: uint8 ``masks`` = round(p * 255), work split in shard-aligned blocks run
as dask tasks, resumable after an interruption.

Project checkpoint format (a ``torch.save`` dict, loadable with ``weights_only=True``)::

    {"format": "echodfkd-teacher", "arch": "unet" | "deeplabv3_resnet50",
     "config": {...constructor keyword arguments...}, "state_dict": {...}, "meta": {...}}
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import threading
import uuid
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn

from echodfkd.runtime import file_sha256, resolve_device  # noqa: F401 (re-exported)
from echodfkd.store import (FRAME_SIZE, FrameStore, MaskStore, commit, init_mask_store,
                            open_frames, open_masks, partial_path, shard_blocks)

FORMAT = "echodfkd-teacher"
TEACHER_SET_FORMAT = "echodfkd-teacher-set"
ECHONET_MEAN = (32.085175, 32.591923, 33.37932)   # per channel (R, G, B), 0..255 pixel units
ECHONET_STD = (50.129288, 50.487717, 51.34619)
NPY_VALUES = ("auto", "probability", "logit")
MAX_LISTED = 50  # file names quoted per problem kind in an error message


# ---------------------------------------------------------------------------------------------
# Preprocessing and architectures

def echonet_normalise(frames: torch.Tensor) -> torch.Tensor:
    """EchoNet-Dynamic input: uint8 grey (B, H, W) 0..255 -> float32 (B, 3, H, W).

    The grey frame is repeated to 3 channels; channel c becomes (x - ECHONET_MEAN[c]) /
    ECHONET_STD[c] on 0..255 values.
    """
    x = frames.float().unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(ECHONET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(ECHONET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def unit_scale(frames: torch.Tensor) -> torch.Tensor:
    """Project UNet input: uint8 (B, H, W) -> float32 (B, 1, H, W) = frames / 255."""
    return frames.float().unsqueeze(1) / 255.0


def _build_unet(**config: Any) -> nn.Module:
    from echodfkd.models.unet import UNet  # written alongside; imported on use
    return UNet(**config)


def _build_deeplab(**config: Any) -> nn.Module:
    from echodfkd.models.deeplabv3 import DeepLabV3ResNet50
    return DeepLabV3ResNet50(**config)


@dataclass(frozen=True)
class ArchSpec:
    """How to build an architecture from its config and how to feed it frames."""

    build: Callable[..., nn.Module]
    preprocess: Callable[[torch.Tensor], torch.Tensor]


ARCHS: dict[str, ArchSpec] = {
    "unet": ArchSpec(_build_unet, unit_scale),
    "deeplabv3_resnet50": ArchSpec(_build_deeplab, echonet_normalise),
}


def build_model(arch: str, config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model of architecture ``arch`` with constructor kwargs ``config``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown teacher architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch].build(**dict(config))


def amp_dtype(device: torch.device) -> torch.dtype:
    """Autocast dtype used with ``amp``: bfloat16 on CUDA where supported, else float16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16


# ---------------------------------------------------------------------------------------------
# Checkpoints

def _plain(value: Any, what: str) -> Any:
    """A JSON-like copy of ``value`` (so it loads with ``weights_only=True``)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"teacher {what} must be JSON-like (str/int/float/bool/list/dict): {e}")


def save_teacher(path: str | os.PathLike, arch: str, config: Mapping[str, Any],
                 model: nn.Module, meta: Mapping[str, Any] | None = None) -> None:
    """Write ``model`` in the project checkpoint format, atomically (temporary file + rename)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown teacher architecture {arch!r}; known: {sorted(ARCHS)}")
    path = Path(path)
    payload = {
        "format": FORMAT, "arch": arch, "config": _plain(dict(config), "config"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": _plain(dict(meta or {}), "meta"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _first(keys: Sequence[str], n: int = 5) -> str:
    keys = list(keys)
    more = f" ... (+{len(keys) - n})" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


@dataclass
class Checkpoint:
    """A checkpoint read into memory: architecture, config, CPU state dict, metadata."""

    arch: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    meta: dict


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a project or EchoNet-Dynamic checkpoint with ``torch.load(weights_only=True)``.

    EchoNet-Dynamic format: a dict with ``state_dict`` (keys prefixed ``module.`` by
    DataParallel; the prefix is removed) and training state (``epoch``, ``opt_dict``,
    ``scheduler_dict``, ``best_loss``, ``loss``; numbers kept in ``meta``, the rest dropped).
    A bare DeepLabV3 state dict is accepted too.
    """
    path = str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"teacher checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"cannot read teacher checkpoint {path!r} with weights_only=True "
                         f"(not a torch checkpoint of plain tensors and numbers?): {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"teacher checkpoint {path!r} holds a {type(obj).__name__}, "
                         "not a dict")
    keys = [str(k) for k in obj]
    if obj.get("format") == FORMAT:
        missing = [k for k in ("arch", "config", "state_dict") if k not in obj]
        if missing:
            raise ValueError(f"teacher checkpoint {path!r} lacks {missing}")
        if obj["arch"] not in ARCHS:
            raise ValueError(f"teacher checkpoint {path!r} has unknown arch {obj['arch']!r}; "
                             f"known: {sorted(ARCHS)}")
        return Checkpoint(obj["arch"], dict(obj["config"]), dict(obj["state_dict"]),
                          dict(obj.get("meta") or {}))
    if "format" in obj:
        raise ValueError(f"teacher checkpoint {path!r} has unknown format {obj['format']!r} "
                         f"(expected {FORMAT!r})")
    if isinstance(obj.get("state_dict"), dict):
        sd, meta = obj["state_dict"], {"source_format": "echonet-dynamic"}
        for k in ("epoch", "best_loss", "loss"):
            v = obj.get(k)
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                v = v.item()
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                meta[k] = float(v) if isinstance(v, float) else int(v)
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, meta = obj, {"source_format": "state_dict"}
    else:
        raise ValueError(f"unknown teacher checkpoint format in {path!r}: neither a project "
                         f"checkpoint ('format': {FORMAT!r}) nor an EchoNet-Dynamic one "
                         f"('state_dict'); top-level keys: {_first(keys, 8)}")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    head = sd.get("classifier.4.weight")
    config = {"num_classes": int(head.shape[0])} if isinstance(head, torch.Tensor) else {}
    return Checkpoint("deeplabv3_resnet50", config, sd, meta)


def load_state_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                      source: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with an error naming ``source`` and
    the first missing / unexpected / mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches: {_first(shapes, 3)}")
        raise ValueError(f"teacher checkpoint {source!r} does not fit "
                         f"{type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(state_dict, strict=True)


@dataclass
class TeacherModel:
    """A loaded teacher network in eval mode on ``device``.

    ``amp``: autocast (bfloat16 where supported, else float16) on CUDA; ignored on CPU.
    """

    arch: str
    config: dict
    model: nn.Module
    device: torch.device
    amp: bool = False
    meta: dict = field(default_factory=dict)

    def _predict(self, frames: np.ndarray, batch_size: int, proba: bool) -> np.ndarray:
        frames = np.asarray(frames)
        if frames.ndim != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 (B, H, W), got {frames.dtype} "
                             f"{frames.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        preprocess = ARCHS[self.arch].preprocess
        enabled = self.amp and self.device.type == "cuda"
        out = np.empty(frames.shape, dtype=np.float32)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=amp_dtype(self.device),
                                                    enabled=enabled):
            for s in range(0, len(frames), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[s:s + batch_size]))
                y = self.model(preprocess(x.to(self.device, non_blocking=True)))
                if isinstance(y, Mapping):
                    y = y["out"]
                y = y[:, 0].float()
                out[s:s + batch_size] = (torch.sigmoid(y) if proba else y).cpu().numpy()
        return out

    def predict_logits(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (B, H, W) grey frames -> float32 (B, H, W) logits, in batches."""
        return self._predict(frames, batch_size, proba=False)

    def predict_proba(self, frames: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """uint8 (B, H, W) grey frames -> float32 (B, H, W) LV probabilities, sigmoid(logit)."""
        return self._predict(frames, batch_size, proba=True)


def load_teacher(path: str | os.PathLike, device: str | torch.device | None = None, *,
                 amp: bool = False) -> TeacherModel:
    """Load a project or EchoNet-Dynamic checkpoint (strict, ``weights_only``) for inference."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt.arch, ckpt.config)
    load_state_strict(model, ckpt.state_dict, str(path))
    dev = resolve_device(device)
    return TeacherModel(ckpt.arch, ckpt.config, model.to(dev).eval(), dev, amp, ckpt.meta)


_MODEL_CACHE: dict[tuple, TeacherModel] = {}
_MODEL_LOCK = threading.Lock()


def cached_teacher(path: str | os.PathLike, device: str | torch.device | None = None, *,
                   amp: bool = False) -> TeacherModel:
    """:func:`load_teacher`, loaded once per process (keyed by path, mtime, size, device, amp)."""
    st = os.stat(path)
    dev = resolve_device(device)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, str(dev), bool(amp))
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load_teacher(path, dev, amp=amp)
        return _MODEL_CACHE[key]


# ---------------------------------------------------------------------------------------------
# Imported outputs

class TeacherOutputsError(ValueError):
    """Problems with a folder of cached teacher outputs; ``problems`` maps kind -> messages."""

    def __init__(self, folder: str, problems: dict[str, list[str]], n_videos: int) -> None:
        self.folder, self.problems = folder, problems
        n_bad = sum(len(v) for v in problems.values())
        parts = []
        for kind, items in problems.items():
            shown = ", ".join(items[:MAX_LISTED])
            more = f" ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            parts.append(f"{kind} ({len(items)}): {shown}{more}")
        super().__init__(f"teacher outputs in {folder!r}: {n_bad} problem(s) over "
                         f"{n_videos} videos; " + "; ".join(parts))


def _safe_name(file_name: str) -> bool:
    return (bool(file_name) and file_name not in (".", "..") and "/" not in file_name
            and "\\" not in file_name and "\x00" not in file_name
            and not os.path.isabs(file_name) and not re.match(r"^[A-Za-z]:", file_name))


def output_file(folder: str | os.PathLike, file_name: str) -> Path | None:
    """The cached-output file of video ``file_name``: ``<folder>/<file_name>.seg.npz``, else
    ``<folder>/<file_name>.npy``; ``None`` if neither exists. Raises ValueError if
    ``file_name`` would escape ``folder`` (path separators, ``..``, absolute names)."""
    folder = Path(folder)
    if not _safe_name(str(file_name)):
        raise ValueError(f"FileName {file_name!r} is not a plain file name: it would escape "
                         f"the teacher outputs folder {str(folder)!r}")
    root = folder.resolve()
    for suffix in (".seg.npz", ".npy"):
        p = folder / f"{file_name}{suffix}"
        if p.resolve().parent != root:
            raise ValueError(f"FileName {file_name!r} resolves outside {str(folder)!r}")
        if p.is_file():
            return p
    return None


def _header_shape(path: Path) -> tuple[int, ...]:
    """Array shape from the .npy header (inside the .npz for ``.seg.npz``), without the data."""
    def read(f) -> tuple[int, ...]:
        major, _ = np.lib.format.read_magic(f)
        reader = (np.lib.format.read_array_header_1_0 if major == 1
                  else np.lib.format.read_array_header_2_0)
        return tuple(reader(f)[0])

    if path.name.endswith(".npz"):
        with zipfile.ZipFile(path) as z:
            if "arr_0.npy" not in z.namelist():
                raise ValueError(f"{str(path)!r} has no array 'arr_0' (has {z.namelist()[:5]})")
            with z.open("arr_0.npy") as f:
                return read(f)
    with open(path, "rb") as f:
        return read(f)


def _frames_axis(shape: tuple[int, ...], path: Path) -> int:
    if len(shape) == 4 and shape[1] == 1:
        return shape[0]
    if len(shape) == 3:
        return shape[0]
    raise ValueError(f"{str(path)!r} has shape {shape}; expected (T, 1, H, W) or (T, H, W)")


def _to_probability(a: np.ndarray, values: str, path: Path) -> np.ndarray:
    """Float array -> probabilities in [0, 1] by the rule of :func:`read_teacher_outputs`."""
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{str(path)!r} holds NaN or infinite values")
    if values == "auto":
        values = "probability" if (a.min() >= 0.0 and a.max() <= 1.0) else "logit"
    if values == "logit":
        return np.exp(-np.logaddexp(np.float32(0), -a))  # sigmoid, no overflow
    if a.min() < 0.0 or a.max() > 1.0:
        raise ValueError(f"{str(path)!r}: probabilities outside [0, 1] "
                         f"(min {a.min():.4g}, max {a.max():.4g}); pass values='logit'")
    return a


def _resize(a: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if a.shape[1:] == (size, size):
        return a
    interp = cv2.INTER_AREA if a.shape[1] > size and a.shape[2] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, (size, size), interpolation=interp) for f in a])


def read_teacher_outputs(folder: str | os.PathLike, file_name: str, n_frames: int, *,
                         values: str = "auto") -> np.ndarray:
    """Cached teacher output of one video -> uint8 (T, 112, 112), 0..255 = probability * 255.

    ``<FileName>.seg.npz`` (array ``arr_0``) or ``<FileName>.npy``, shape (T, 1, H, W) or
    (T, H, W); other H, W are resized (area when shrinking, bilinear when growing).
    uint8 arrays are taken as p * 255 and returned unchanged at 112x112 (bool as 0/255).
    Float arrays are probabilities or logits, by ``values``: ``"probability"``,
    ``"logit"`` (sigmoid applied), or ``"auto"`` = probabilities if every value lies in
    [0, 1], logits otherwise; they are stored as round(p * 255).
    Raises FileNotFoundError if no file, ValueError if T != ``n_frames`` or the shape is bad.
    """
    if values not in NPY_VALUES:
        raise ValueError(f"values must be one of {NPY_VALUES}, got {values!r}")
    path = output_file(folder, file_name)
    if path is None:
        raise FileNotFoundError(f"no teacher output for FileName {file_name!r} in "
                                f"{str(folder)!r} (expected {file_name}.seg.npz or .npy)")
    if path.name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "arr_0" not in z.files:
                raise ValueError(f"{str(path)!r} has no array 'arr_0' (has {z.files[:5]})")
            a = z["arr_0"]
    else:
        a = np.load(path, allow_pickle=False)
    t = _frames_axis(a.shape, path)
    if t != n_frames:
        raise ValueError(f"{str(path)!r} has {t} frames but video {file_name!r} has "
                         f"{n_frames}")
    a = a.reshape(t, a.shape[-2], a.shape[-1])
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype == np.uint8:
        return np.ascontiguousarray(_resize(a, FRAME_SIZE))
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{str(path)!r} has dtype {a.dtype}; expected uint8 or float")
    p = _resize(_to_probability(a, values, path), FRAME_SIZE)
    return quantise(p)


def check_teacher_outputs(folder: str | os.PathLike, index: pd.DataFrame) -> None:
    """Check every video of ``index`` (FileName, start, stop) has an output file with the right
    frame count, reading only file headers; raise one :class:`TeacherOutputsError` listing
    the FileNames of all problems."""
    problems: dict[str, list[str]] = {}

    def add(kind: str, msg: str) -> None:
        problems.setdefault(kind, []).append(msg)

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"teacher outputs folder {str(folder)!r} does not exist")
    for name, start, stop in zip(index["FileName"], index["start"], index["stop"]):
        name, n = str(name), int(stop) - int(start)
        try:
            path = output_file(folder, name)
        except ValueError:
            add("unsafe FileName", repr(name))
            continue
        if path is None:
            add("missing", name)
            continue
        try:
            t = _frames_axis(_header_shape(path), path)
        except (ValueError, OSError, zipfile.BadZipFile) as e:
            add("unreadable", f"{name} ({e})")
            continue
        if t != n:
            add("wrong frame count", f"{name} (file {t}, video {n})")
    if problems:
        raise TeacherOutputsError(str(folder), problems, len(index))


# ---------------------------------------------------------------------------------------------
# Fusion

def quantise(p: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] -> uint8 round(p * 255); v >= 128 exactly when p >= 0.5.

    (The EchoNet research code truncates instead; rounding makes v / 255 -> v round-trip.)
    """
    return np.clip(np.rint(np.asarray(p, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def fuse_probabilities(outputs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted mean of member probabilities -> uint8 round(p * 255), shape of the inputs.

    Each output is float in [0, 1] or uint8 0..255 (read as v / 255). A single uint8 output is
    returned unchanged, so imported ``.seg.npz`` values pass through bit for bit.
    """
    if len(outputs) != len(weights) or not outputs:
        raise ValueError(f"need one weight per output, got {len(outputs)} outputs and "
                         f"{len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    shapes = {np.shape(o) for o in outputs}
    if len(shapes) != 1:
        raise ValueError(f"member outputs differ in shape: {sorted(shapes)}")
    if len(outputs) == 1 and np.asarray(outputs[0]).dtype == np.uint8:
        return np.asarray(outputs[0]).copy()
    acc = np.zeros(next(iter(shapes)), dtype=np.float32)
    for o, wi in zip(outputs, w / w.sum()):
        o = np.asarray(o)
        acc += np.float32(wi) * (o.astype(np.float32) / 255.0 if o.dtype == np.uint8
                                 else o.astype(np.float32))
    return quantise(acc)


# ---------------------------------------------------------------------------------------------
# Members

Videos = list[tuple[str, int, int]]  # (FileName, start, stop) in the concatenated frame axis


class Member(Protocol):
    """A teacher member: per block of frames, probabilities float in [0, 1] or uint8 p*255.

    ``predict_block(frames, start, stop, videos, ...)``: ``frames`` uint8 (stop-start, 112, 112)
    (``None`` if ``needs_frames`` is False), ``videos`` the index rows overlapping the block;
    returns an array of shape (stop-start, 112, 112). Must be picklable for dask.distributed.
    """

    weight: float
    needs_frames: bool

    def describe(self) -> dict: ...

    def predict_block(self, frames: np.ndarray | None, start: int, stop: int, videos: Videos,
                      *, batch_size: int, device: str | None, amp: bool) -> np.ndarray: ...


@dataclass
class ModelMember:
    """A checkpoint run on the frames; loaded once per process (:func:`cached_teacher`)."""

    path: str
    weight: float = 1.0
    needs_frames: bool = True

    def describe(self) -> dict:
        return {"kind": "model", "path": self.path, "weight": self.weight,
                "sha256": file_sha256(self.path)}

    def predict_block(self, frames, start, stop, videos, *, batch_size, device, amp):
        return cached_teacher(self.path, device, amp=amp).predict_proba(frames, batch_size)


@dataclass
class OutputsMember:
    """A folder of cached per-video outputs (see :func:`read_teacher_outputs`)."""

    folder: str
    weight: float = 1.0
    values: str = "auto"
    needs_frames: bool = False

    def describe(self) -> dict:
        return {"kind": "outputs", "folder": self.folder,
                "weight": self.weight, "values": self.values}

    def validate(self, index: pd.DataFrame) -> None:
        check_teacher_outputs(self.folder, index)

    def predict_block(self, frames, start, stop, videos, *, batch_size, device, amp):
        out = np.zeros((stop - start, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        covered = 0
        for name, v0, v1 in videos:
            a = read_teacher_outputs(self.folder, name, v1 - v0, values=self.values)
            s, e = max(v0, start), min(v1, stop)
            out[s - start:e - start] = a[s - v0:e - v0]
            covered += max(0, e - s)
        if covered != stop - start:
            raise ValueError(f"videos cover {covered} of the {stop - start} frames "
                             f"[{start}, {stop})")
        return out


def load_members(teacher_dir: str | os.PathLike) -> list[Member]:
    """Members of a teacher directory written by the teacher stage (``teacher.json``):
    checkpoint paths are relative to the directory, output folders as written."""
    teacher_dir = Path(teacher_dir)
    spec_path = teacher_dir / "teacher.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{str(spec_path)!r} does not exist: run the teacher stage")
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != TEACHER_SET_FORMAT:
        raise ValueError(f"{str(spec_path)!r} has format {spec.get('format')!r}, "
                         f"expected {TEACHER_SET_FORMAT!r}")
    members: list[Member] = []
    for i, m in enumerate(spec["members"]):
        if m["kind"] in ("fit", "checkpoint"):
            members.append(ModelMember(str(teacher_dir / m["path"]), float(m["weight"])))
        elif m["kind"] == "outputs":
            members.append(OutputsMember(m["path"], float(m["weight"]),
                                         m.get("values", "auto")))
        else:
            raise ValueError(f"{str(spec_path)!r} member {i}: unknown kind {m['kind']!r}")
    return members


def teacher_cost(members: Sequence[Member]) -> dict:
    """Cost of the (fused) teacher for reports: ``{"weights": int|None, "flops": int|None}``.

    Trainable weights and FLOPs per 112x112 frame (see :mod:`echodfkd.cost`), summed over the
    model members; None when a member is imported outputs (its model is unknown).
    """
    from echodfkd.cost import count_weights, flops_per_frame

    weights = flops = 0
    for m in members:
        if not isinstance(m, ModelMember):
            return {"weights": None, "flops": None}
        ck = read_checkpoint(m.path)
        model = build_model(ck.arch, ck.config)
        weights += count_weights(model)
        flops += flops_per_frame(model, "image")
    return {"weights": weights, "flops": flops}


# ---------------------------------------------------------------------------------------------
# Inference into a mask store

def _videos_in(index: pd.DataFrame, start: int, stop: int) -> Videos:
    rows = index[(index["start"] < stop) & (index["stop"] > start)]
    return [(str(n), int(a), int(b)) for n, a, b in zip(rows["FileName"], rows["start"],
                                                          rows["stop"])]


def _chunk_for(block_frames: int, max_chunk: int = 64) -> int:
    """Largest divisor of ``block_frames`` that is <= ``max_chunk`` (chunks tile a shard)."""
    return max(d for d in range(1, min(block_frames, max_chunk) + 1) if block_frames % d == 0)


_BLOCK_TAG = "echodfkd-teacher-block"


class _Block:
    """Arguments of one block task, opaque to dask (which would rebuild dataclass members)."""

    def __init__(self, members: Sequence[Member], frames_path: str, masks_path: str,
                 start: int, stop: int, videos: Videos, batch_size: int, device: str | None,
                 amp: bool) -> None:
        self.args = (members, frames_path, masks_path, start, stop, videos, batch_size,
                     device, amp)
        self.start = start


def _run_payload(block: _Block) -> tuple[str, int, int]:
    return _run_block(*block.args)


def _run_block(members: Sequence[Member], frames_path: str, masks_path: str, start: int,
               stop: int, videos: Videos, batch_size: int, device: str | None,
               amp: bool) -> tuple[str, int, int]:
    """One dask task: fuse the members over frames [start, stop) and write that shard."""
    import zarr
    frames = None
    if any(m.needs_frames for m in members):
        frames = zarr.open_group(frames_path, mode="r")["frames"][start:stop]
    outs = [m.predict_block(frames, start, stop, videos, batch_size=batch_size,
                            device=device, amp=amp) for m in members]
    masks = fuse_probabilities(outs, [m.weight for m in members])
    zarr.open_group(masks_path, mode="r+")["masks"][start:stop] = masks
    return (_BLOCK_TAG, start, stop)


def _abs(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def infer_teacher(members: Sequence[Member], frames_store: FrameStore | str | os.PathLike,
                  out_path: str | os.PathLike, *, batch_size: int = 64,
                  block_frames: int | None = None, device: str | None = None,
                  amp: bool = False, scheduler: str = "", workers: int = 1,
                  progress: bool = True) -> MaskStore:
    """Run the fused teacher over every frame of ``frames_store`` into a mask store.

    Writes ``masks`` uint8 (N, 112, 112) = round(p * 255) (a single uint8 member, e.g. imported
    ``.seg.npz``, passes through unchanged), aligned with ``frames``, under
    ``partial_path(out_path)``, then commits it to ``out_path``. Blocks are the mask store's
    shards (``block_frames`` frames; default the frame store's shard size), one dask task
    each: local threads (``workers`` of them) when ``scheduler`` is ``""``, else the
    ``distributed`` scheduler at that address (workers load checkpoints themselves, once per
    process, and must see the same paths). Each finished block is recorded in
    ``attrs["done_blocks"]``; rerunning after an interruption skips them, provided the members
    (paths, checkpoint hashes, weights), ``amp`` and ``block_frames`` are unchanged.
    """
    store = (frames_store if isinstance(frames_store, FrameStore)
             else open_frames(frames_store))
    members = list(members)
    if not members:
        raise ValueError("a teacher needs at least one member")
    for m in members:
        if hasattr(m, "validate"):
            m.validate(store.index)
    n = int(store.frames.shape[0])
    if block_frames is None:
        shards = store.frames.shards
        block_frames = int(shards[0]) if shards else int(store.frames.chunks[0])
    if block_frames < 1:
        raise ValueError(f"block_frames must be >= 1, got {block_frames}")
    descriptions = [m.describe() if hasattr(m, "describe") else repr(m) for m in members]
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
    done = {tuple(b) for b in group.attrs.get("done_blocks", [])} & set(blocks)
    todo = [b for b in blocks if b not in done]

    from tqdm.auto import tqdm
    bar = tqdm(total=len(blocks), initial=len(done), desc="teacher blocks", unit="block",
               disable=not progress)

    def record(result: Any) -> None:
        if isinstance(result, tuple) and len(result) == 3 and result[0] == _BLOCK_TAG:
            done.add((int(result[1]), int(result[2])))
            group.attrs["done_blocks"] = [list(b) for b in sorted(done)]
            bar.update(1)

    args = [_Block(members, _abs(store.path), _abs(str(staging)), s, e,
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
            import dask
            from dask.callbacks import Callback
            tasks = [dask.delayed(_run_payload, pure=False)(a, dask_key_name=f"block-{a.start}")
                     for a in args]
            with Callback(posttask=lambda k, result, *_: record(result)):
                dask.compute(*tasks, scheduler="threads", num_workers=max(1, workers))
    finally:
        bar.close()
    missing = [b for b in blocks if b not in done]
    if missing:
        raise RuntimeError(f"teacher inference left {len(missing)} blocks undone: {missing[:5]}")
    group.attrs.update({"complete": True, "teacher": descriptions, "amp": bool(amp)})
    commit(staging, out_path)
    return open_masks(out_path, store)


# ---------------------------------------------------------------------------------------------
# Building a teacher directory (the teacher stage)

MEMBER_KINDS = ("fit", "checkpoint", "outputs")


def parse_member_specs(members: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Validate ``[{"kind": "fit"|"checkpoint"|"outputs", "path": str, "weight": float}, ...]``
    (``path`` unused for "fit"; optional "seed" for "fit", "values" for "outputs")."""
    if not isinstance(members, Sequence) or not members:
        raise ValueError(f"teacher members must be a non-empty list, got {members!r}")
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, Mapping) or m.get("kind") not in MEMBER_KINDS:
            raise ValueError(f"teacher member {i} {m!r}: 'kind' must be one of {MEMBER_KINDS}")
        m = dict(m)
        m["weight"] = float(m.get("weight", 1.0))
        if not math.isfinite(m["weight"]) or m["weight"] < 0:
            raise ValueError(f"teacher member {i} {m!r}: weight must be >= 0")
        if m["kind"] != "fit" and not m.get("path"):
            raise ValueError(f"teacher member {i} {m!r}: 'path' is required for {m['kind']!r}")
        if m["kind"] == "outputs" and m.get("values", "auto") not in NPY_VALUES:
            raise ValueError(f"teacher member {i} {m!r}: 'values' must be one of {NPY_VALUES}")
        out.append(m)
    if sum(m["weight"] for m in out) <= 0:
        raise ValueError(f"teacher member weights sum to 0: {members!r}")
    return out


def parse_member_text(spec: str) -> dict:
    """Parse one member written as ``KIND[:PATH][@WEIGHT]`` (params.yaml's ``teacher.members``).

    ``fit``, ``fit@2``, ``checkpoint:models/x.pt``, ``outputs:/data/seg@0.5`` ->
    ``{"kind", "path", "weight"}`` (validate the list with :func:`parse_member_specs`).
    """
    body, _, weight = spec.strip().partition("@")
    kind, _, path = body.partition(":")
    try:
        w = float(weight) if weight else 1.0
    except ValueError:
        raise ValueError(f"teacher member {spec!r}: weight {weight!r} is not a number") from None
    return {"kind": kind, "path": path, "weight": w}


def traced_training_set(store: FrameStore, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Traced (ED/ES) frames of one split and their tracing masks.

    Returns (images uint8 (M, 112, 112), masks uint8 (M, 112, 112) 0/1), in ``traced`` order.
    """
    traced = store.traced
    splits = store.index["Split"].to_numpy()[traced["video"].to_numpy(dtype=int)]
    rows = traced[splits == split]
    if rows.empty:
        return (np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8),
                np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8))
    starts = store.index["start"].to_numpy(dtype=int)[rows["video"].to_numpy(dtype=int)]
    frame_ids = starts + rows["frame"].to_numpy(dtype=int)
    images = np.asarray(store.frames.oindex[frame_ids])
    masks = np.asarray(store.traced_masks.oindex[rows["row"].to_numpy(dtype=int)])
    return images, masks


def make_teacher_dir(out_dir: str | os.PathLike, members: Sequence[Mapping[str, Any]],
                     frames: FrameStore | None, *, arch: str = "unet", width: int = 16,
                     depth: int = 3, epochs: int = 40, batch_size: int = 16, lr: float = 1e-3,
                     seed: int = 0, device: str | None = None,
                     progress: bool = True) -> tuple[dict, pd.DataFrame | None]:
    """Fill ``out_dir`` (normally a staging path) with ``member<i>.pt`` and ``teacher.json``.

    "fit" members are fitted (:func:`echodfkd.teacher_fit.fit_teacher`) on the TRAIN split's
    traced frames of ``frames``, VAL for early stopping (fit member k uses ``seed + k`` unless
    it gives "seed"); "checkpoint" members are converted to the project format; "outputs"
    members are recorded as given. Returns (teacher.json contents, fit history or None; the
    history has a "member" column). Does not write the history.
    """
    specs = parse_member_specs(members)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, histories, n_fit = [], [], 0
    for i, m in enumerate(specs):
        entry = {"kind": m["kind"], "weight": m["weight"]}
        if m["kind"] == "fit":
            if arch != "unet":
                raise ValueError(f"fitting supports arch 'unet' only, got {arch!r}")
            if frames is None:
                raise ValueError("a 'fit' member needs a frame store with tracings")
            from echodfkd.teacher_fit import fit_teacher
            ti, tm = traced_training_set(frames, "TRAIN")
            vi, vm = traced_training_set(frames, "VAL")
            if len(ti) == 0:
                raise ValueError(f"{frames.path!r} has no traced TRAIN frames to fit a teacher")
            member_seed = int(m.get("seed", seed + n_fit))
            n_fit += 1
            model, hist = fit_teacher(ti, tm, vi, vm, width=width, depth=depth, epochs=epochs,
                                      batch_size=batch_size, lr=lr, seed=member_seed,
                                      device=str(resolve_device(device)), progress=progress)
            config = {"width": width, "depth": depth}
            meta = {"fitted_on": frames.path, "frames_fingerprint": frames.fingerprint,
                    "seed": member_seed, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                    "n_train": int(len(ti)), "n_val": int(len(vi))}
            save_teacher(out_dir / f"member{i}.pt", "unet", config, model.cpu(), meta)
            histories.append(pd.DataFrame(hist).assign(member=i))
            entry.update(path=f"member{i}.pt", arch="unet", config=config, seed=member_seed)
        elif m["kind"] == "checkpoint":
            ckpt = read_checkpoint(m["path"])
            model = build_model(ckpt.arch, ckpt.config)
            load_state_strict(model, ckpt.state_dict, m["path"])
            save_teacher(out_dir / f"member{i}.pt", ckpt.arch, ckpt.config, model,
                         {**ckpt.meta, "source": str(m["path"])})
            entry.update(path=f"member{i}.pt", arch=ckpt.arch, config=ckpt.config,
                         source=str(m["path"]))
        else:
            if not Path(m["path"]).is_dir():
                raise FileNotFoundError(f"teacher outputs folder {m['path']!r} does not exist")
            entry.update(path=str(m["path"]), values=m.get("values", "auto"))
        entries.append(entry)
    spec = {"format": TEACHER_SET_FORMAT, "members": entries}
    (out_dir / "teacher.json").write_text(json.dumps(spec, indent=2) + "\n")
    history = pd.concat(histories, ignore_index=True) if histories else None
    return spec, history
