"""EchoNet tracings of the phantom: the 21 rows an annotator would draw on a traced frame.

Real style only (EchoNet-Dynamic's VolumeTracings.csv): the long axis and 20 chords across it,
with annotator offsets and hand jitter around the true LV contour (docs/design.md §5), and the
polygon EchoNet rasterises from them.
"""

from __future__ import annotations

import numpy as np

from echodfkd.data.phantom.heart import Heart, _half_widths
from echodfkd.data.phantom.render import _Frames, _to_image

N_CHORDS = 20
TRACING_COLUMNS = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]


def _tracing(h: Heart, g: _Frames, i: int, rng: np.random.Generator) -> np.ndarray:
    """EchoNet tracing of frame i: float (21, 4) rows X1, Y1, X2, Y2 in image pixels.

    Row 0 is the long axis (apex to the mid mitral annulus); rows 1..20 are chords
    perpendicular to it at fractions 1/20 .. 20/20 of the axis, endpoints on the septal (X1, Y1)
    and lateral (X2, Y2) walls. The annotator's view of the LV differs slightly from the truth
    (apex, base, width, wall offset) and each point carries a little hand jitter.
    """
    L = g.length[i] + rng.normal(0.0, 1.2)
    apex_shift = rng.normal(0.0, 1.0)
    scale = 1.0 + rng.normal(0.0, 0.03)
    s = (np.arange(N_CHORDS) + 1.0) / N_CHORDS
    wl, wr = _half_widths(s, np.full(N_CHORDS, g.width[i]), h, width_ed=h.width_ed)
    u = apex_shift + s * (L - apex_shift)
    # Each annotator follows a slightly different edge on each wall, plus hand jitter.
    wl = wl * scale + rng.normal(0.0, 0.6) + rng.normal(0.0, 0.35, N_CHORDS)
    wr = wr * scale + rng.normal(0.0, 0.6) + rng.normal(0.0, 0.35, N_CHORDS)
    u1 = u + rng.normal(0.0, 0.2, N_CHORDS)
    u2 = u + rng.normal(0.0, 0.2, N_CHORDS)
    x1, y1 = _to_image(g, i, u1, -np.maximum(wl, 0.0))
    x2, y2 = _to_image(g, i, u2, np.maximum(wr, 0.0))
    ax1, ay1 = _to_image(g, i, np.array([apex_shift]), np.zeros(1))
    ax2, ay2 = _to_image(g, i, np.array([L]), np.zeros(1))
    axis = np.array([[ax1[0], ay1[0], ax2[0], ay2[0]]])
    return np.concatenate([axis, np.stack([x1, y1, x2, y2], 1)], 0)


def tracing_polygon(rows: np.ndarray) -> np.ndarray:
    """EchoNet polygon of a traced frame: float (40, 2) x, y from rows (21, 4) X1 Y1 X2 Y2."""
    rows = np.asarray(rows, dtype=np.float64)
    x = np.concatenate([rows[1:, 0], rows[1:, 2][::-1]])
    y = np.concatenate([rows[1:, 1], rows[1:, 3][::-1]])
    return np.stack([x, y], 1)
