"""Dice overlap of binary masks: shared by evaluation (:mod:`echodfkd.evaluation.metrics`) and the
teacher's fitting (:mod:`echodfkd.teacher.fit`), kept apart so that a change to the evaluation
metrics does not refit the teacher. Masks: bool or 0/1 arrays, axis order (..., H, W)."""

from __future__ import annotations

import numpy as np


def _as_bool(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        return x
    if np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating):
        bad = (x != 0) & (x != 1)
        if bad.any():
            raise ValueError(f"{name} must be binary (0/1 or bool); found value "
                             f"{x[bad].flat[0]!r}: binarize soft masks first")
        return x.astype(bool)
    raise TypeError(f"{name} must be a bool or 0/1 array, got dtype {x.dtype}")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2|a∩b| / (|a| + |b|) of two binary masks, pooled over all elements.

    ``a``, ``b``: bool or 0/1 arrays of the same shape (any shape, e.g. (H, W)).
    Both empty: defined as 1.0 (the two masks agree perfectly that there is nothing).
    Returns a float in [0, 1].
    """
    a, b = _as_bool(a, "a"), _as_bool(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"dice: shapes differ, {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def dice_per_frame(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame Dice of binary masks ``a``, ``b`` bool (T, H, W) -> float64 (T,).

    A frame where both masks are empty scores 1.0 (as in :func:`dice`).
    """
    a, b = _as_bool(a, "a"), _as_bool(b, "b")
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"dice_per_frame expects two (T, H, W) arrays, got {a.shape}, {b.shape}")
    inter = np.logical_and(a, b).sum(axis=(1, 2), dtype=np.int64)
    total = a.sum(axis=(1, 2), dtype=np.int64) + b.sum(axis=(1, 2), dtype=np.int64)
    out = np.ones(a.shape[0], dtype=np.float64)
    nz = total > 0
    out[nz] = 2.0 * inter[nz] / total[nz]
    return out
