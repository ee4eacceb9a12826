"""Fusing teacher members: weighted mean of probabilities, stored as uint8 round(p * 255)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
