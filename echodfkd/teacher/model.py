"""A loaded teacher network: batched probabilities from uint8 frames, CPU or CUDA (+AMP)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from echodfkd.runtime import resolve_device
from echodfkd.teacher.archs import ARCHS, amp_dtype, build_model
from echodfkd.teacher.checkpoint import load_state_strict, read_checkpoint


@dataclass
class TeacherModel:
    """A loaded teacher network in eval mode on ``device``.

    ``amp``: autocast (bfloat16 where supported, else float16) on CUDA; ignored on CPU.
    """

    arch: str
    config: dict
    model: nn.Module
    device: torch.device
    amp: bool
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

    def predict_logits(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """uint8 (B, H, W) grey frames -> float32 (B, H, W) logits, ``batch_size`` frames per
        forward pass (the pipeline's: ``teacher_infer.batch``)."""
        return self._predict(frames, batch_size, proba=False)

    def predict_proba(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """uint8 (B, H, W) grey frames -> float32 (B, H, W) LV probabilities, sigmoid(logit),
        ``batch_size`` frames per forward pass."""
        return self._predict(frames, batch_size, proba=True)


def load_teacher(path: str | os.PathLike, device: str | torch.device | None, *,
                 amp: bool) -> TeacherModel:
    """Load a project or EchoNet-Dynamic checkpoint (strict, ``weights_only``) for inference
    on ``device`` (``"auto"``, ``""`` or None: CUDA when available), with ``amp``
    (``teacher_infer.amp``)."""
    ckpt = read_checkpoint(path)
    model = build_model(ckpt.arch, ckpt.config)
    load_state_strict(model, ckpt.state_dict, str(path))
    dev = resolve_device(device)
    return TeacherModel(ckpt.arch, ckpt.config, model.to(dev).eval(), dev, amp, ckpt.meta)


_MODEL_CACHE: dict[tuple, TeacherModel] = {}
_MODEL_LOCK = threading.Lock()


def cached_teacher(path: str | os.PathLike, device: str | torch.device | None, *,
                   amp: bool) -> TeacherModel:
    """:func:`load_teacher`, loaded once per process (keyed by path, mtime, size, device, amp)."""
    st = os.stat(path)
    dev = resolve_device(device)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, str(dev), bool(amp))
    with _MODEL_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = load_teacher(path, dev, amp=amp)
        return _MODEL_CACHE[key]
