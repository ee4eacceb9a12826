"""Evaluation metrics on masks and mask-area curves (docs/design.md §4). Pure numpy (plus
OpenCV's connected components for :func:`lv_geometry`).

Conventions used throughout:

- A *soft mask* is either uint8 0..255 (= probability * 255, as stored in mask stores) or
  float 0..1; axis order (..., H, W), rows = y, columns = x.
- A *binary mask* is a bool array of the same shape; a pixel is foreground when its probability is
  strictly above the threshold (for uint8 input: ``value > threshold * 255``). With threshold 0.5
  this is the usual ``logit > 0`` rule.
- An *area curve* is a float or int (T,) array: foreground pixel count per frame, frames in time
  order. Frame indices are 0-based within the video.
"""

from __future__ import annotations

import math

import numpy as np

from echodfkd.overlap import _as_bool, dice, dice_per_frame  # noqa: F401 (part of this API)

PHASES = ("ED", "ES")


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Binarise a soft mask.

    ``prob``: uint8 (..., H, W) holding probability*255, float (..., H, W) holding a probability
    in 0..1, or bool (returned unchanged). ``threshold`` in [0, 1].
    Returns bool (..., H, W): ``prob > threshold`` (uint8: ``prob > threshold * 255``).
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    prob = np.asarray(prob)
    if prob.dtype == bool:
        return prob
    if prob.dtype == np.uint8:
        return prob > float(threshold) * 255.0
    if np.issubdtype(prob.dtype, np.floating):
        return prob > float(threshold)
    raise TypeError(f"binarize expects uint8, float or bool masks, got dtype {prob.dtype}")


def area_curve(masks: np.ndarray) -> np.ndarray:
    """Foreground pixel count per frame: binary (T, H, W) -> int64 (T,), in pixels."""
    masks = _as_bool(masks, "masks")
    if masks.ndim != 3:
        raise ValueError(f"area_curve expects (T, H, W) masks, got shape {masks.shape}")
    return masks.sum(axis=(1, 2), dtype=np.int64)


def _runs(below: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) inclusive index pairs of the runs of True in a 1-D bool array."""
    padded = np.concatenate([[False], below, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1) - 1
    return list(zip(starts.tolist(), stops.tolist()))


def cycle_length(area: np.ndarray, min_lag: int = 4, min_peak: float = 0.3) -> int | None:
    """The cardiac cycle of an area curve, in frames, or None when it holds fewer than two.

    ``area``: (T,) mask area per frame (pixels). The curve is linearly detrended (a slow
    drift of the probe or of a fading model does not hide the beats), then its
    autocorrelation r(k) (normalised, lags k = 1 .. T // 2) is searched for local maxima at
    lags >= ``min_lag`` with r >= ``min_peak``; the cycle is the smallest such lag whose r is
    at least 0.8 of the highest one (multiples of the cycle score alike). None when there is
    no such peak: fewer than two cycles fit in the curve, or it is flat or aperiodic.
    """
    a = np.asarray(area, dtype=np.float64)
    n = a.size
    if n < 2 * min_lag + 2:
        return None
    t = np.arange(n, dtype=np.float64)
    x = a - np.polyval(np.polyfit(t, a, 1), t)
    power = float(np.dot(x, x)) / n
    if power <= 1e-12 * max(1.0, float(np.abs(a).max()) ** 2):
        return None
    lags = np.arange(1, n // 2 + 1)
    r = np.correlate(x, x, "full")[n:n + n // 2] / (n - lags) / power   # r[k - 1]: lag k
    peaks = [k for k in range(max(min_lag, 2), n // 2)
             if r[k - 1] >= r[k - 2] and r[k - 1] > r[k] and r[k - 1] >= min_peak]
    if not peaks:
        return None
    best = max(r[k - 1] for k in peaks)
    return next(k for k in peaks if r[k - 1] >= 0.8 * best)


def find_phase_frame(area: np.ndarray, reference_frame: int, phase: str = "ES") -> int:
    """Predict the ES (or ED) frame nearest ``reference_frame`` from an area curve.

    ``area``: (T,) mask area per frame (pixels; any real dtype). ``reference_frame``: 0-based
    frame index in [0, T). ``phase``: "ES" or "ED".

    Procedure (docs/design.md §4): when the curve holds two cycles or more
    (:func:`cycle_length` gives P frames), only the frames within P of the reference are
    searched, so the beat scored is the one around the reference (the traced beat) and a
    drift of the area over a long video cannot pull the search into another beat; a shorter
    curve is searched whole. In the searched frames: z-score the curve (s = a for ES, s = -a
    for ED); take the runs of consecutive frames where s is strictly below its median; choose
    the run nearest the reference frame, the distance of a run being 0 if the reference lies
    inside it, else the distance from the reference to the run's first or last frame,
    whichever is smaller (ties: the earlier run); return the argmin of s in that run (ties:
    the earliest frame).

    Degenerate curve: when no searched frame is strictly below the median (e.g. a constant
    curve, as from a model that predicts nothing), the argmin of s is returned (the first
    searched frame for a constant curve) -- never the reference itself, so a useless curve
    cannot score well. Returns an int frame index in [0, T).
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be 'ED' or 'ES', got {phase!r}")
    a = np.asarray(area, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"area must be a non-empty (T,) curve, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("area curve contains NaN or inf")
    ref = int(reference_frame)
    if not 0 <= ref < a.size:
        raise ValueError(f"reference_frame {reference_frame!r} outside the curve's frames "
                         f"[0, {a.size})")
    period = cycle_length(a)
    lo, hi = (0, a.size) if period is None else (max(0, ref - period),
                                                 min(a.size, ref + period + 1))
    s = a[lo:hi] if phase == "ES" else -a[lo:hi]
    ref -= lo
    sd = s.std()
    s = (s - s.mean()) / sd if sd > 0 else np.zeros_like(s)
    runs = _runs(s < np.median(s))
    if not runs:
        return lo + int(np.argmin(s))

    def distance(run: tuple[int, int]) -> int:
        first, last = run
        if first <= ref <= last:
            return 0
        return min(abs(first - ref), abs(last - ref))

    first, last = min(runs, key=distance)  # min() keeps the earliest run on ties
    return lo + first + int(np.argmin(s[first:last + 1]))


def afd(area: np.ndarray, reference_frame: int, phase: str = "ES") -> int:
    """Absolute frame distance |find_phase_frame(area, reference_frame, phase) - reference|.

    ``area`` (T,) pixels; returns an int number of frames (>= 0).
    """
    return abs(find_phase_frame(area, reference_frame, phase) - int(reference_frame))


def _ejection_fraction(ed, es):
    ed = np.asarray(ed, dtype=np.float64)
    es = np.asarray(es, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ef = np.where(ed > 0, 100.0 * (ed - es) / np.where(ed > 0, ed, 1.0), np.nan)
    return float(ef) if ef.ndim == 0 else ef


def ef_from_areas(a_ed, a_es):
    """Area-based ejection fraction 100 * (A_ED - A_ES) / A_ED, in percent (the paper's EF).

    ``a_ed``, ``a_es``: scalars or same-shape arrays of mask areas (pixels). Where A_ED is 0 the
    result is NaN. Returns a float (or float64 array). Note this is an *area* EF; the FileList EF
    is volume-based, so expect a strong correlation but a biased absolute value (area shrinks
    less than volume: on the phantom the area EF is about half the volume EF).
    """
    return _ejection_fraction(a_ed, a_es)


def ef_from_volumes(edv, esv):
    """Volume-based ejection fraction 100 * (EDV - ESV) / EDV, in percent, as in FileList.csv.

    ``edv``, ``esv``: scalars or same-shape arrays of volumes in any one unit (e.g. px^3 from
    :func:`lv_geometry`; the unit cancels). Where EDV is 0 the result is NaN.
    """
    return _ejection_fraction(edv, esv)


def area_length_volume(area, length):
    """Single-plane area-length volume V = 8 A^2 / (3 pi L).

    ``area``: mask area (px^2), ``length``: LV long axis (px); scalars or same-shape arrays.
    Returns px^3 (float or float64 array); 0 where L is 0 (an empty mask). Exact for a prolate
    ellipsoid of revolution cut through its axis: A = pi a b, L = 2a gives 4/3 pi a b^2.
    """
    area = np.asarray(area, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(length > 0, 8.0 * area ** 2 / (3.0 * math.pi * np.where(length > 0, length,
                                                                               1.0)), 0.0)
    return float(v) if v.ndim == 0 else v


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a binary (H, W) mask, bool (H, W).

    Ties between equal-sized components: the one whose first pixel comes first in row-major
    order. An empty mask is returned empty.
    """
    import cv2

    m = _as_bool(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"largest_component expects one (H, W) mask, got shape {m.shape}")
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    if n <= 2:  # background only, or one component
        return m.copy()
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def long_axis(mask: np.ndarray) -> float:
    """LV long axis L in pixels: the extent of a binary (H, W) mask along its principal axis.

    How L is measured. The LV cavity of an A4C view is a bullet from the apex (top of the
    sector) to the mitral annulus; the clinical long axis runs from the apex to the midpoint of
    the annulus, i.e. along the bullet's axis of symmetry, and spans the whole cavity along that
    axis. For an elongated mask that axis is the *principal axis* (eigenvector of the largest
    eigenvalue of the covariance of the pixel coordinates), so::

        e  = principal axis (unit vector, from the pixel centres (row, col))
        L  = max_i <p_i, e> - min_i <p_i, e> + 1

    over the pixel centres p_i; the + 1 (one pixel pitch) makes an axis-aligned rectangle of h
    rows measure exactly h. Properties: the apex is the extreme pixel along e and the flat
    annulus end projects onto the other extreme, whose mid-point lies on e for a symmetric
    bullet, so L is the apex-to-mid-annulus distance; tilt does not matter.

    Alternatives rejected: the farthest pair of boundary points (maximum Feret diameter) runs
    from the apex to a basal *corner*, too long by sqrt(1 + (W/2L)^2) (3% at W/L = 0.5; a
    rectangle gives its diagonal); apex = farthest point from the annulus mid-point needs the
    annulus, which a predicted mask does not mark. A stray island of a predicted mask would
    stretch any extent, so :func:`lv_geometry` measures the largest connected component.

    ``mask``: bool or 0/1 (H, W), rows = y, columns = x. Returns 0.0 for an empty mask.
    """
    m = _as_bool(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"long_axis expects one (H, W) mask, got shape {m.shape}")
    pts = np.argwhere(m).astype(np.float64)
    if pts.shape[0] == 0:
        return 0.0
    centred = pts - pts.mean(axis=0)
    cov = centred.T @ centred
    _, vecs = np.linalg.eigh(cov)          # eigenvalues ascending: last column = principal axis
    proj = centred @ vecs[:, -1]
    return float(proj.max() - proj.min() + 1.0)


def lv_geometry(mask: np.ndarray) -> tuple[int, float, float]:
    """(area px, long axis px, area-length volume px^3) of one binary LV mask (H, W).

    The largest 8-connected component is measured (:func:`largest_component`): area = its
    pixel count, L = :func:`long_axis` of it, V = :func:`area_length_volume` (A, L). An empty
    mask gives (0, 0.0, 0.0). EF from these volumes is unit-free; px^3 are not mL.
    """
    lv = largest_component(mask)
    area = int(lv.sum())
    length = long_axis(lv)
    return area, length, area_length_volume(area, length)


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired metric: lengths differ, {x.size} vs {y.size}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def pearson_r(x, y) -> float:
    """Pearson correlation of paired samples (1-D, same length); pairs with NaN are dropped.

    Returns NaN when fewer than 2 pairs remain or either side is constant.
    """
    x, y = _paired(x, y)
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    if den == 0:
        return float("nan")
    return float(np.clip((xc * yc).sum() / den, -1.0, 1.0))


def mae(x, y) -> float:
    """Mean absolute error of paired samples; pairs with NaN are dropped; NaN if none remain."""
    x, y = _paired(x, y)
    return float(np.abs(x - y).mean()) if x.size else float("nan")


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given the mean of their ranks (float64 (n,))."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # group boundaries of equal values in sorted order
    new = np.concatenate([[True], xs[1:] != xs[:-1]])
    group = np.cumsum(new) - 1
    starts = np.flatnonzero(new)
    ends = np.concatenate([starts[1:], [x.size]])
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman_rho(x, y) -> float:
    """Spearman rank correlation (Pearson r of the tie-averaged ranks); NaN pairs dropped.

    Returns NaN when fewer than 2 pairs remain or either side is constant.
    """
    x, y = _paired(x, y)
    if x.size < 2:
        return float("nan")
    return pearson_r(rankdata(x), rankdata(y))


def teacher_agreement(student_masks: np.ndarray, teacher_masks: np.ndarray,
                      threshold: float) -> float:
    """Mean per-frame Dice between student and teacher masks over all frames.

    ``student_masks``, ``teacher_masks``: soft masks (T, H, W) uint8 0..255 or float 0..1 (or
    bool), binarised at ``threshold``. Chosen definition: the *mean of per-frame Dice* (each frame
    weighs the same, matching how Dice at ED/ES is averaged over videos), not the pooled Dice over
    all pixels; a frame where both masks are empty scores 1. Returns a float in [0, 1].
    """
    s = binarize(student_masks, threshold)
    t = binarize(teacher_masks, threshold)
    if s.shape != t.shape:
        raise ValueError(f"student masks {s.shape} and teacher masks {t.shape} differ in shape")
    if s.shape[0] == 0:
        raise ValueError("teacher_agreement: no frames")
    return float(dice_per_frame(s, t).mean())


def pareto_front(cost, score) -> np.ndarray:
    """Pareto-optimal points when minimising cost and maximising score.

    ``cost``: (n,) or (n, k) costs (e.g. weights, or weights and FLOPs); ``score``: (n,).
    Point i is optimal unless some j has cost_j <= cost_i (every column), score_j >= score_i,
    and is strictly better in at least one of them. Exact duplicates are both optimal. Points
    with a NaN cost or score are never optimal and never dominate. Returns bool (n,).
    """
    c = np.asarray(cost, dtype=np.float64)
    s = np.asarray(score, dtype=np.float64).ravel()
    if c.ndim == 1:
        c = c[:, None]
    if c.ndim != 2 or c.shape[0] != s.shape[0]:
        raise ValueError(f"pareto_front: cost shape {np.shape(cost)} does not match "
                         f"score shape {np.shape(score)}")
    valid = np.isfinite(s) & np.isfinite(c).all(axis=1)
    front = valid.copy()
    for i in np.flatnonzero(valid):
        no_worse = valid & (c <= c[i]).all(axis=1) & (s >= s[i])
        better = (c < c[i]).any(axis=1) | (s > s[i])
        if (no_worse & better).any():
            front[i] = False
    return front
