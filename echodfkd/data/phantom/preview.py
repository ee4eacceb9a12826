"""Preview montage of a phantom set (frames, ground-truth contours, tracing polygons)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from echodfkd.data.echonet import read_video
from echodfkd.data.phantom.tracings import tracing_polygon


def render_preview(set_dir: str | os.PathLike, out_png: str | os.PathLike, n_videos: int = 4,
                   n_frames: int = 4) -> None:
    """PNG montage: ``n_videos`` rows (first TRAIN/TEST videos) of ``n_frames`` frames each,
    ED and ES first, with the ground-truth LV contour (green) and, for traced frames, the
    tracing polygon (red)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    set_dir = Path(set_dir)
    filelist = pd.read_csv(set_dir / "FileList.csv")
    meta_path = set_dir / "GroundTruth" / "phantom.json"
    style = json.loads(meta_path.read_text())["style"] if meta_path.exists() else "?"
    tracings = None
    if (set_dir / "VolumeTracings.csv").exists():
        tracings = pd.read_csv(set_dir / "VolumeTracings.csv")
    names = filelist["FileName"].astype(str).tolist()[:n_videos]
    fig = Figure(figsize=(1.9 * n_frames, 2.0 * max(1, len(names)) + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    for r, name in enumerate(names):
        frames = read_video(set_dir / "Videos" / f"{name}.avi")
        gt = np.load(set_dir / "GroundTruth" / f"{name}.npz")
        masks, ed, es = gt["masks"], gt["ed"], gt["es"]
        picks = [(int(f), "ED") for f in ed[:1]] + [(int(f), "ES") for f in es[:1]]
        for f in np.linspace(0, len(frames) - 1, n_frames + 2)[1:-1].round().astype(int):
            if int(f) not in [p[0] for p in picks]:
                picks.append((int(f), ""))
        for c, (f, tag) in enumerate(picks[:n_frames]):
            ax = fig.add_subplot(len(names), n_frames, r * n_frames + c + 1)
            ax.imshow(frames[f], cmap="gray", vmin=0, vmax=255)
            ax.contour(masks[f], levels=[0.5], colors="lime", linewidths=0.7)
            if tracings is not None:
                t = tracings[(tracings["FileName"] == f"{name}.avi") & (tracings["Frame"] == f)]
                if len(t):
                    p = tracing_polygon(t[["X1", "Y1", "X2", "Y2"]].to_numpy())
                    p = np.vstack([p, p[:1]])
                    ax.plot(p[:, 0], p[:, 1], color="red", linewidth=0.6)
            ax.set_title(f"{name} f{f} {tag}", fontsize=5)
            ax.set_axis_off()
    legend = "GT contour (green), tracing (red)" if tracings is not None else "GT contour (green)"
    fig.suptitle(f"phantom, style={style}: {legend}", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_png)
