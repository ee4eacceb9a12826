"""Small AVI files for the tests (shared by test_echonet.py and test_ingest.py)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def smooth_frames(t: int, size: int = 112, seed: int = 0) -> np.ndarray:
    """uint8 (t, size, size): a moving bright disc on a gradient (MJPEG keeps it well)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    out = []
    for k in range(t):
        cy, cx = size / 2 + 10 * np.sin(k / 3 + seed), size / 2 + 10 * np.cos(k / 4)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < (size / 5) ** 2) * 120
        out.append(np.clip(40 + xx * 0.5 + disc, 0, 255).astype(np.uint8))
    return np.stack(out)


def write_avi(path: Path, frames: np.ndarray, fps: float = 50, fourcc: str = "MJPG") -> None:
    """Write grey frames (T, H, W) uint8 as a 3-channel AVI."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    writer.release()


def tracing(name: str, frame: int, cx: float, top: float, bottom: float, half_width: float,
            chords: int = 20) -> list[tuple]:
    """VolumeTracings rows of one rectangle-shaped tracing (as ``FileName, X1, Y1, X2, Y2,
    Frame`` tuples): a vertical long axis from (cx, top) to (cx, bottom), then ``chords``
    horizontal chords from x = cx - half_width to cx + half_width at y = top + k * (bottom -
    top) / chords, k = 1..chords. Its mask is the rectangle rows rint(first y)..rint(bottom),
    columns cx - half_width..cx + half_width (boundary included)."""
    step = (bottom - top) / chords
    rows = [(name, float(cx), float(top), float(cx), float(bottom), frame)]
    rows += [(name, float(cx - half_width), top + k * step, float(cx + half_width),
              top + k * step, frame) for k in range(1, chords + 1)]
    return rows


def rectangle(r0: int, r1: int, c0: int, c1: int, shape=(112, 112)) -> np.ndarray:
    """uint8 mask with rows r0..r1 and columns c0..c1 (inclusive) set to 1."""
    mask = np.zeros(shape, np.uint8)
    mask[r0:r1 + 1, c0:c1 + 1] = 1
    return mask
