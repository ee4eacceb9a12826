"""Report figures (PNG) of the evaluate and pareto_report stages (docs/design.md §4).

matplotlib is imported inside the functions and drawn with the Agg canvas on a private
``Figure`` (no pyplot global state, no backend chosen at import).
Every function writes its PNG atomically (to ``<name>.tmp.png``, then ``os.replace``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from echodfkd.evaluation import metrics as M

@dataclass
class AreaPanel:
    """Area curves of one video for plotting; frames are 0-based, areas in pixels (T,)."""

    name: str
    student: np.ndarray
    teacher: np.ndarray | None
    human: dict[str, int]                                         # traced {"ED": f, "ES": f}
    student_found: dict[str, int] = field(default_factory=dict)   # seeded at the human frames
    teacher_found: dict[str, int] = field(default_factory=dict)   # seeded at the human frames


@dataclass
class OverlayPanel:
    """One traced frame with contours: image uint8 (H, W); masks bool (H, W)."""

    title: str
    image: np.ndarray
    traced: np.ndarray
    student: np.ndarray
    teacher: np.ndarray | None


STUDENT_COLOR = "tab:blue"
TEACHER_COLOR = "tab:orange"
HUMAN_COLOR = "tab:green"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path


def _panel_grid(n: int, ncols: int, panel_width: float, panel_height: float,
                empty_text: str | None = None):
    """A figure with room for ``n`` panels in rows of at most ``ncols`` (inches per panel).

    Returns ``(figure, axes)`` with axes flattened; axes beyond ``n`` are switched off and, when
    ``n`` is 0, the first one shows ``empty_text``.
    """
    cols = max(1, min(ncols, n))
    rows = (max(1, n) + cols - 1) // cols
    fig = _figure(panel_width * cols, panel_height * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    if n == 0 and empty_text:
        axes[0].text(0.5, 0.5, empty_text, ha="center", va="center")
    return fig, axes


def plot_area_curves(path: str | os.PathLike, panels: list[AreaPanel]) -> Path:
    """One panel per video: student (and teacher) area curves in pixels against the frame,
    traced ED/ES frames as green vertical lines, frames found on each curve (seeded at the
    traced frames) as markers (triangle up = ED, down = ES)."""
    fig, axes = _panel_grid(len(panels), 2, 6, 3, "no scorable video")
    for ax, p in zip(axes, panels):
        t = np.arange(p.student.size)
        curves = [("student", p.student, p.student_found, STUDENT_COLOR)]
        if p.teacher is not None:
            curves.append(("teacher", p.teacher, p.teacher_found, TEACHER_COLOR))
        for label, area, found, color in curves:
            ax.plot(t, area, color=color, label=label)
            for phase, marker in (("ED", "^"), ("ES", "v")):
                if phase in found:
                    f = found[phase]
                    ax.plot([f], [area[f]], marker=marker, color=color, ms=9, ls="none")
        for phase, f in p.human.items():
            ax.axvline(f, color=HUMAN_COLOR, ls="--", lw=1)
            ax.text(f, ax.get_ylim()[1], f" {phase}", color=HUMAN_COLOR, va="top", fontsize=8)
        ax.set_title(p.name if p.teacher is not None else f"{p.name} (no teacher masks)",
                     fontsize=9)
        ax.set_xlabel("frame")
        ax.set_ylabel("mask area (px)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def plot_overlays(path: str | os.PathLike, panels: list[OverlayPanel], ncols: int = 4) -> Path:
    """Montage of traced frames with contours: tracing green, student blue, teacher orange."""
    fig, axes = _panel_grid(len(panels), ncols, 2.6, 2.8)
    for ax in axes:
        ax.set_axis_off()
    for ax, p in zip(axes, panels):
        ax.imshow(p.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        layers = [(p.traced, HUMAN_COLOR, 2.0, "solid"), (p.student, STUDENT_COLOR, 1.2, "solid")]
        if p.teacher is not None:
            layers.append((p.teacher, TEACHER_COLOR, 1.2, "dashed"))
        for mask, color, width, style in layers:
            if mask.any() and not mask.all():  # a contour needs both levels present
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color],
                           linewidths=width, linestyles=style)
        ax.set_title(p.title, fontsize=7)
    fig.suptitle("tracing (green), student (blue), teacher (orange, dashed)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def _label_front(ax, x, y, names):
    for xi, yi, name in zip(x, y, names):
        ax.annotate(str(name), (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7)


def plot_pareto(path: str | os.PathLike, df: pd.DataFrame, *, score: str = "dice",
                teacher: dict | None = None) -> Path:
    """Two panels, ``score`` against weights and against FLOPs per frame (log x).

    ``df``: one row per student with columns name, weights, flops, ``score`` and the boolean
    flags pareto_weights / pareto_flops (:func:`echodfkd.evaluation.pareto.collect`); Pareto-optimal
    students are filled, joined by a step line and labelled. ``teacher``: optional
    ``{"weights", "flops", score}`` drawn as a star with a dotted horizontal line.
    """
    fig = _figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, cost, flag, xlabel in ((axes[0], "weights", "pareto_weights", "trainable weights"),
                                   (axes[1], "flops", "pareto_flops", "FLOPs per 112x112 frame")):
        on = df[flag].to_numpy(bool) if flag in df else M.pareto_front(df[cost], df[score])
        ax.scatter(df.loc[~on, cost], df.loc[~on, score], facecolors="none",
                   edgecolors=STUDENT_COLOR, label="student")
        front = df[on].sort_values(cost)
        ax.scatter(front[cost], front[score], color=STUDENT_COLOR, label="Pareto-optimal")
        ax.step(front[cost], front[score], where="post", color=STUDENT_COLOR, lw=1)
        _label_front(ax, front[cost], front[score], front["name"])
        if teacher is not None and teacher.get(score) is not None:
            ax.axhline(teacher[score], color=TEACHER_COLOR, ls=":", lw=1,
                       label=None if teacher.get(cost) else "teacher (cost unknown)")
            if teacher.get(cost):
                ax.scatter([teacher[cost]], [teacher[score]], marker="*", s=160,
                           color=TEACHER_COLOR, label="teacher", zorder=3)
        if len(df) and (df[cost] > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(score)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{score} against student size", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_reference_agreement(path: str | os.PathLike, df: pd.DataFrame,
                             pairs: list[tuple[str, str]]) -> Path:
    """Human-referenced score (x) against model-referenced score (y) across students, one
    panel per (human_column, model_column) pair, each titled with Spearman's rho. Pairs whose
    columns are absent (or all NaN) are left out; with none left the figure says why."""
    pairs = [(h, m) for h, m in pairs if h in df and m in df and df[m].notna().any()]
    fig, axes = _panel_grid(len(pairs), 2, 5, 4,
                            "no teacher-referenced scores:\nthe evaluated source has no "
                            "teacher masks")
    for ax, (h, m) in zip(axes, pairs):
        rho = M.spearman_rho(df[h], df[m])
        ax.scatter(df[h], df[m], color=STUDENT_COLOR)
        if "name" in df:
            _label_front(ax, df[h], df[m], df["name"])
        ax.set_xlabel(f"{h} (human reference)")
        ax.set_ylabel(f"{m} (teacher reference)")
        ax.set_title(f"Spearman rho = {rho:.3f} (n = {len(df)})", fontsize=9)
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)
