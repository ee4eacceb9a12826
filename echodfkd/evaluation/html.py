"""Static HTML report pages: one per student and an index of all students (docs/design.md §4).

The pages work offline from the file system: every link is relative (a report folder can be
moved or zipped), nothing is fetched from the network (no CDN script, style or font), the CSS is
inline and one small inline script sorts tables when a header is clicked. The charts of the
training curves are SVG drawn here in Python.

Every value taken from data (file names from users' CSVs, student names, metric values) goes
through Jinja2 with autoescape on, so a FileName such as ``<script>...</script>`` is shown as
text. As a second layer each page carries a Content-Security-Policy that runs only the page's
own script (by its SHA-256) and loads images and media only from the page's own origin.

Only :func:`write_student_page` and :func:`write_index_page` touch the file system; each writes
its page atomically (``<name>.tmp``, then ``os.replace``). Nothing happens at import time: the
Jinja2 environment is built on first use.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import numbers
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from echodfkd.errors import InputError

TEMPLATE_PACKAGE = "echodfkd.evaluation"
TEMPLATE_DIR = "templates"
SORT_SCRIPT = "sort.js"

VIDEO_SUFFIXES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".webm": "video/webm",
                  ".ogv": "video/ogg"}
IMAGE_SUFFIXES = {".webp", ".gif", ".png", ".jpg", ".jpeg", ".apng"}

DASH = "\u2014"   # shown where a value is missing (no teacher, NaN)

# Headline metrics in the order shown: key -> (label, what it means, higher is better).
HEADLINE: dict[str, tuple[str, str, bool | None]] = {
    "dice": ("Dice", "mean of ED and ES Dice against the human tracings", True),
    "dice_ed": ("Dice ED", "Dice at the traced end-diastolic frame", True),
    "dice_es": ("Dice ES", "Dice at the traced end-systolic frame", True),
    "afd": ("aFD", "mean frame distance of the found ED/ES frames to the traced ones", False),
    "afd_ed": ("aFD ED", "frames between the found and the traced ED frame", False),
    "afd_es": ("aFD ES", "frames between the found and the traced ES frame", False),
    "ef_mae": ("EF MAE", "mean absolute error of the ejection fraction (% points)", False),
    "ef_r": ("EF r", "Pearson correlation of predicted and reference EF", True),
    "ef_area_mae": ("EF (area) MAE", "MAE of the area-based ejection fraction", False),
    "ef_area_r": ("EF (area) r", "correlation of the area-based ejection fraction", True),
    "tracing_ef_mae": ("Tracing EF MAE", "MAE of EF from the human tracings (reference)", False),
    "tracing_ef_r": ("Tracing EF r", "correlation of EF from the human tracings (reference)", True),
    "dice_teacher_ref": ("Dice vs teacher", "Dice of student vs teacher masks at the traced "
                         "ED/ES frames", True),
    "dice_ed_teacher_ref": ("Dice ED vs teacher", "the same at the traced ED frame", True),
    "dice_es_teacher_ref": ("Dice ES vs teacher", "the same at the traced ES frame", True),
    "afd_teacher": ("aFD vs teacher", "mean frame distance to the teacher's own ED/ES frames "
                    "(annotation-free)", False),
    "afd_ed_teacher": ("aFD ED vs teacher", "frames to the teacher's largest-mask frame", False),
    "afd_es_teacher": ("aFD ES vs teacher", "frames to the teacher's smallest-mask frame", False),
    "agreement": ("Agreement", "mean per-frame Dice of student vs teacher masks", True),
    "agreement_real_test": ("Agreement (real test)",
                            "mean per-frame Dice of student vs teacher masks, real test split",
                            True),
    "agreement_synthetic_test": ("Agreement (synthetic test)",
                                 "the same on the synthetic test split", True),
    "empty_fraction": ("Empty frames", "mean fraction of a video's frames whose student mask "
                       "is empty (a sign of collapse)", False),
    "weights": ("Weights", "trainable parameters", False),
    "flops": ("FLOPs", "floating point operations per frame", False),
}
# Counts shown above the headline table, not as metric rows.
COUNT_KEYS = ("n_videos", "n_skipped", "n_frames", "n_collapsed")

# Columns of the per-video table in the order shown (those present in the frame).
PER_VIDEO_COLUMNS: dict[str, str] = {
    "FileName": "FileName", "Split": "Split", "n_frames": "Frames",
    "dice_mean": "Dice (mean)", "dice_ed": "Dice ED", "dice_es": "Dice ES",
    "afd_ed": "aFD ED", "afd_es": "aFD ES", "EF": "EF", "ef_pred": "EF pred",
    "ef_area_pred": "EF (area) pred", "agreement": "Agreement",
    "teacher_dice_ed": "Teacher Dice ED", "teacher_dice_es": "Teacher Dice ES",
    "teacher_ef_pred": "Teacher EF pred", "empty_fraction": "Empty frames",
    "area_ratio_teacher": "Area / teacher", "drift": "Area drift", "collapse": "Collapse",
    "skip_reason": "Skip reason",
}

# Columns of the index page's student table in the order shown (those present).
STUDENT_COLUMNS: dict[str, str] = {
    "name": "Student", "blocks": "Blocks", "layers_per_block": "Layers/block",
    "hidden": "Hidden", "weights": "Weights", "flops": "FLOPs", "dice": "Dice",
    "dice_ed": "Dice ED", "dice_es": "Dice ES", "afd": "aFD", "ef_mae": "EF MAE",
    "ef_r": "EF r", "agreement": "Agreement", "dice_teacher_ref": "Dice vs teacher",
    "n_videos": "Videos", "pareto": "Pareto",
}

# Summary (pareto_summary.json) keys shown first, with labels; the rest follow by name.
SUMMARY_LABELS: dict[str, str] = {
    "gap_best": "Distillation gap, best student (teacher Dice − student Dice)",
    "gap_main": "Distillation gap, main student",
    "best_student": "Best student",
    "best_dice": "Best student's Dice",
    "best_weights": "Best student's weights",
    "main_dice": "Main student's Dice",
    "teacher_dice": "Teacher's Dice",
    "n_points": "Students evaluated",
    "n_pareto": "Students on the Pareto front",
}

SERIES_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728")


# --------------------------------------------------------------------------- helpers (pure)

def safe_video_name(file_name: str) -> str:
    """A file-system-safe, deterministic and unique file stem for a FileName.

    Letters, digits, ``_`` and ``-`` are kept; every other character becomes ``_``. Whenever the
    result differs from ``file_name``, is longer than 100 characters, or could itself be mistaken
    for a hashed stem (ends in ``-`` and 10 hex digits), ``-`` and the first 10 hex digits of
    the SHA-256 of ``file_name`` are appended (the kept part cut to 80 characters). So a plain
    name maps to itself and two different names never share a stem (short of a hash
    collision). The stem is unique as spelled; on a case-insensitive file system two names
    that differ only in case would still collide.
    """
    if not isinstance(file_name, str):
        raise InputError(f"FileName must be a string, got {type(file_name).__name__}: "
                         f"{file_name!r}")
    if not file_name:
        raise InputError("FileName is empty: every video needs a non-empty FileName")
    kept = re.sub(r"[^A-Za-z0-9_-]", "_", file_name)
    if (kept == file_name and len(kept) <= 100
            and not re.search(r"-[0-9a-f]{10}$", kept)):
        return kept
    digest = hashlib.sha256(file_name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{kept[:80]}-{digest}"


def video_anchor(file_name: str) -> str:
    """The HTML id of a video's gallery item (linked from the tables): ``video-<stem>``."""
    return "video-" + safe_video_name(file_name)


def split_metrics(metrics: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a metrics.json record into the student's keys and the teacher's.

    ``teacher_<key>`` entries become ``<key>`` of the second dict (empty when the teacher does
    not label the source); every other key stays with the student.
    """
    student, teacher = {}, {}
    for key, value in metrics.items():
        if key.startswith("teacher_"):
            teacher[key[len("teacher_"):]] = value
        else:
            student[key] = value
    return student, teacher


def _relative_url(path: str | os.PathLike, what: str) -> str:
    """A relative link (URL-quoted, ``/``-separated) to ``path``; absolute paths and URLs are
    refused, since the report must keep working when its folder is moved."""
    if isinstance(path, PurePath):
        text = path.as_posix()
    elif isinstance(path, str):
        text = path.replace("\\", "/")
    else:
        raise InputError(f"{what}: expected a relative path, got {type(path).__name__} {path!r}")
    if not text or text.startswith("/") or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", text):
        raise InputError(f"{what}: {str(path)!r} is not a relative path; report pages link only "
                         f"to files relative to the page (e.g. 'videos/x.mp4'), so the folder "
                         f"can be moved and works offline")
    return quote(text, safe="/")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, not a number or a bool."""
    if _is_missing(value) or isinstance(value, (bool, np.bool_, str)):
        return None
    if isinstance(value, numbers.Real):
        value = float(value)
        return value if math.isfinite(value) else None
    return None


def _digits(key: str, headline: bool) -> int:
    """Decimals shown for a metric, chosen by its name."""
    k = key.lower()
    if "dice" in k or "agreement" in k or k.endswith("_r") or k.startswith("rho"):
        return 4 if headline else 3
    if k.startswith("gap"):
        return 4
    return 2 if headline else 1


def _format(value: Any, key: str, headline: bool = False) -> str:
    """Text of one value: a dash when missing, integers with thousands separators."""
    if _is_missing(value):
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    number = _number(value)
    if number is None:
        return DASH if isinstance(value, numbers.Real) else str(value)
    if isinstance(value, numbers.Integral) or (number.is_integer() and abs(number) >= 1000):
        return f"{int(number):,}"
    if number.is_integer() and not headline and "dice" not in key.lower():
        return str(int(number))
    return f"{number:.{_digits(key, headline)}f}"


def _sort_key(value: Any) -> str:
    """The ``data-sort`` attribute of a cell: a plain number for numbers, "" for missing."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    number = _number(value)
    if number is not None:
        return repr(number)
    return DASH if isinstance(value, numbers.Real) else str(value)


def _cell(value: Any, key: str) -> dict[str, str]:
    return {"text": _format(value, key), "sort": _sort_key(value)}


def _require_frame(frame: Any, what: str, columns: Sequence[str]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise InputError(f"{what}: expected a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{what}: missing column(s) {missing}; it has {list(frame.columns)}")
    return frame


def _headline_rows(metrics: Mapping[str, Any], teacher: Mapping[str, Any]) -> list[dict]:
    """Rows of the headline table: known metrics in HEADLINE order, then any other numeric
    student metric by name (teacher_* keys belong to the teacher column)."""
    keys = [k for k in HEADLINE if k in metrics]
    keys += sorted(k for k in metrics
                   if k not in HEADLINE and k not in COUNT_KEYS and not k.startswith("teacher_")
                   and _number(metrics[k]) is not None)
    rows = []
    for key in keys:
        label, meaning, higher = HEADLINE.get(key, (key, "", None))
        s, t = _number(metrics.get(key)), _number(teacher.get(key))
        delta = "" if s is None or t is None else f"{s - t:+.{_digits(key, True)}f}"
        if delta and key in ("weights", "flops"):
            delta = f"{s / t:.2f}×" if t else ""
        rows.append({"key": key, "label": label, "meaning": meaning,
                     "better": {True: "higher", False: "lower", None: ""}[higher],
                     "student": _format(metrics.get(key), key, headline=True),
                     "teacher": _format(teacher.get(key), key, headline=True),
                     "delta": delta or DASH})
    return rows


def _per_video_table(per_video: pd.DataFrame, videos: Mapping[str, str]) -> tuple[dict, list]:
    """Header and rows of the per-video table, worst first by the mean of dice_ed/dice_es
    (rows without Dice last), and the FileNames in that order."""
    frame = per_video.copy()
    dice_cols = [c for c in ("dice_ed", "dice_es") if c in frame.columns]
    if dice_cols:
        frame["dice_mean"] = frame[dice_cols].apply(pd.to_numeric, errors="coerce").mean(
            axis=1, skipna=True)
        frame = frame.sort_values("dice_mean", ascending=True, na_position="last", kind="stable")
    columns = [c for c in PER_VIDEO_COLUMNS if c in frame.columns]
    for optional in ("collapse", "skip_reason"):
        if optional in columns and frame[optional].map(_is_missing).all():
            columns.remove(optional)
    header = [{"key": c, "label": PER_VIDEO_COLUMNS[c],
               "sorted": "ascending" if c == "dice_mean" else None} for c in columns]
    rows = []
    for record in frame.to_dict("records"):
        name = str(record["FileName"])
        cells = [_cell(record[c], c) for c in columns]
        cells[0] = {"text": name, "sort": name}
        rows.append({"name": name, "cells": cells,
                     "anchor": video_anchor(name) if name in videos else None})
    return {"columns": header}, rows


def _video_items(videos: Mapping[str, str], order: Sequence[str]) -> list[dict]:
    """The gallery: videos in the table's order, then those not in the table by name."""
    if not isinstance(videos, Mapping):
        raise InputError(f"videos: expected a dict FileName -> relative path, got "
                         f"{type(videos).__name__}")
    names = [n for n in order if n in videos]
    seen = set(names)
    names += sorted(n for n in videos if n not in seen)
    items = []
    for name in names:
        url = _relative_url(videos[name], f"videos[{name!r}]")
        suffix = PurePath(str(videos[name])).suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            kind, mime = "image", None
        elif suffix in VIDEO_SUFFIXES:
            kind, mime = "video", VIDEO_SUFFIXES[suffix]
        else:
            raise InputError(f"videos[{name!r}]: {str(videos[name])!r} is neither a video "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))}) nor an animated image "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))})")
        items.append({"name": str(name), "anchor": video_anchor(str(name)),
                      "url": url, "kind": kind, "mime": mime})
    return items


def collapsed_videos(per_video: pd.DataFrame) -> list[tuple[str, str]]:
    """``(FileName, why)`` of the videos a per-video table flags as collapsed (a non-empty
    ``collapse`` cell; empty, blank or NaN after a CSV round trip is not flagged), in row
    order; [] when the table has no ``collapse`` column."""
    if "collapse" not in per_video.columns:
        return []
    return [(str(name), str(why)) for name, why in zip(per_video["FileName"],
                                                        per_video["collapse"])
            if not _is_missing(why)]


def _collapsed_items(per_video: pd.DataFrame, videos: Mapping[str, str]) -> list[dict]:
    """Videos flagged as collapsed, in table order, linked to their video when rendered."""
    return [{"name": name, "reason": why,
             "anchor": video_anchor(name) if name in videos else None}
            for name, why in collapsed_videos(per_video)]


def _skipped_items(skipped: Sequence) -> list[dict]:
    items = []
    for i, entry in enumerate(skipped or ()):
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 2:
            raise InputError(f"skipped[{i}]: expected a (FileName, reason) pair, got {entry!r}")
        items.append({"name": str(entry[0]), "reason": str(entry[1])})
    return items


def _plot_items(plots: Sequence) -> list[dict]:
    if isinstance(plots, (str, os.PathLike)):
        plots = [plots]
    items = []
    for i, path in enumerate(plots or ()):
        items.append({"url": _relative_url(path, f"plots[{i}]"),
                      "caption": PurePath(str(path)).name})
    return items


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start, stop = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = int(round((stop - start) / step))
    return [start + i * step for i in range(count + 1)]


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step)) + (1 if step / 10 ** math.floor(
        math.log10(step)) == 2.5 else 0))
    if abs(value) >= 10000 and decimals == 0:
        return f"{value:,.0f}"
    return f"{value:.{decimals}f}"


def _line_chart(x: pd.Series, series: Sequence[tuple[str, pd.Series]], title: str,
                width: int = 640, height: int = 260) -> dict | None:
    """Geometry of an SVG line chart (rendered by the template), or None without data."""
    left, right, top, bottom = 64, 16, 28, 40
    lines = []
    for label, y in series:
        xy = pd.DataFrame({"x": pd.to_numeric(x, errors="coerce"),
                           "y": pd.to_numeric(y, errors="coerce")})
        xy = xy[xy.notna().all(axis=1) & xy.abs().lt(float("inf")).all(axis=1)].sort_values("x")
        if len(xy):
            lines.append((label, xy))
    if not lines:
        return None
    xs = pd.concat([xy["x"] for _, xy in lines])
    ys = pd.concat([xy["y"] for _, xy in lines])
    xticks = _nice_ticks(float(xs.min()), float(xs.max()))
    yticks = _nice_ticks(float(ys.min()), float(ys.max()))
    x0, x1, y0, y1 = xticks[0], xticks[-1], yticks[0], yticks[-1]
    pw, ph = width - left - right, height - top - bottom

    def px(v):
        return left + (v - x0) / (x1 - x0) * pw

    def py(v):
        return top + ph - (v - y0) / (y1 - y0) * ph

    out = []
    for i, (label, xy) in enumerate(lines):
        pts = [(round(px(a), 1), round(py(b), 1)) for a, b in zip(xy["x"], xy["y"])]
        last_x, last_y = xy["x"].iloc[-1], xy["y"].iloc[-1]
        out.append({"label": label, "color": SERIES_COLORS[i % len(SERIES_COLORS)],
                    "points": " ".join(f"{a},{b}" for a, b in pts),
                    "dots": pts if len(pts) <= 40 else [],
                    "last": f"{last_y:.4g} at step {_format(last_x, 'step')}"})
    return {"title": title, "width": width, "height": height,
            "left": left, "top": top, "right": left + pw, "bottom": top + ph,
            "xticks": [{"pos": round(px(t), 1), "label": _tick_label(t, xticks)} for t in xticks],
            "yticks": [{"pos": round(py(t), 1), "label": _tick_label(t, yticks)} for t in yticks],
            "series": out}


def _training_charts(curves: pd.DataFrame | None) -> list[dict]:
    if curves is None:
        return []
    curves = _require_frame(curves, "training_curves", ["step"])
    charts = []
    losses = [(c, curves[c]) for c in ("train_loss", "val_loss") if c in curves.columns]
    if losses and (chart := _line_chart(curves["step"], losses, "Loss")):
        charts.append(chart)
    if "val_dice_vs_teacher" in curves.columns and (chart := _line_chart(
            curves["step"], [("val_dice_vs_teacher", curves["val_dice_vs_teacher"])],
            "Validation Dice against the teacher")):
        charts.append(chart)
    return charts


# --------------------------------------------------------------------------- rendering

@functools.cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, TEMPLATE_DIR),
        autoescape=True,                      # every template, whatever its name
        undefined=jinja2.StrictUndefined,     # a typo in a template fails loudly
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@functools.cache
def _script() -> tuple[str, str]:
    """The inline table-sorting script and its CSP hash source ('sha256-...')."""
    from importlib import resources

    text = (resources.files(TEMPLATE_PACKAGE) / TEMPLATE_DIR / SORT_SCRIPT).read_text("utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return text, f"'sha256-{digest}'"


def _render(template: str, **context: Any) -> str:
    from markupsafe import Markup

    script, script_hash = _script()
    return _environment().get_template(template).render(
        sort_script=Markup(script), script_hash=script_hash, dash=DASH, **context)


def _write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:   # e.g. a full disk: leave no half-written temporary file behind
        tmp.unlink(missing_ok=True)
        raise
    return path


def render_student_page(*, name: str, metrics: Mapping[str, Any],
                        teacher_metrics: Mapping[str, Any] | None, per_video: pd.DataFrame,
                        videos: Mapping[str, str], skipped: Sequence, plots: Sequence,
                        training_curves: pd.DataFrame | None,
                        index_href: str | None = "../../index.html") -> str:
    """The HTML of a student page (see :func:`write_student_page`); touches no file."""
    if not isinstance(metrics, Mapping):
        raise InputError(f"metrics: expected a dict, got {type(metrics).__name__}")
    teacher_metrics = {} if teacher_metrics is None else teacher_metrics
    if not isinstance(teacher_metrics, Mapping):
        raise InputError(f"teacher_metrics: expected a dict, got "
                         f"{type(teacher_metrics).__name__}")
    per_video = _require_frame(per_video, "per_video", ["FileName"])
    videos = {} if videos is None else videos
    table, rows = _per_video_table(per_video, videos if isinstance(videos, Mapping) else {})
    counts = [{"label": k.replace("n_", "").replace("_", " "),
               "value": _format(metrics[k], k)} for k in COUNT_KEYS if k in metrics]
    return _render(
        "student.html", name=str(name), counts=counts,
        headline=_headline_rows(metrics, teacher_metrics), has_teacher=bool(teacher_metrics),
        table=table, rows=rows, videos=_video_items(videos, [r["name"] for r in rows]),
        skipped=_skipped_items(skipped), plots=_plot_items(plots),
        collapsed=_collapsed_items(per_video, videos),
        charts=_training_charts(training_curves),
        index_href=_relative_url(index_href, "index_href") if index_href else None)


def write_student_page(out_dir: str | os.PathLike, *, name: str, metrics: Mapping[str, Any],
                       teacher_metrics: Mapping[str, Any] | None, per_video: pd.DataFrame,
                       videos: Mapping[str, str], skipped: Sequence, plots: Sequence,
                       training_curves: pd.DataFrame | None,
                       index_href: str | None = "../../index.html") -> Path:
    """Write ``<out_dir>/index.html``, a student's report page, and return its path.

    ``metrics`` are the student's scores (``teacher_*`` keys are left to the teacher column;
    :func:`split_metrics` splits a metrics.json record), ``teacher_metrics`` the teacher's
    under the same keys or empty when the teacher does not label the source. ``per_video`` is
    the per-video table (needs ``FileName``), ``videos`` maps a FileName to the relative path
    of its MP4/WebM (shown as ``<video>``) or WebP (shown as ``<img>``), ``skipped`` lists
    ``(FileName, reason)`` of videos not rendered, ``plots`` relative PNG paths and
    ``training_curves`` a frame with ``step``, ``train_loss``, ``val_loss`` and
    ``val_dice_vs_teacher`` (or None). Paths are relative to ``out_dir``; ``index_href`` is
    the link back to the index page (None: no link). Raises :class:`InputError` on bad input.
    """
    html = render_student_page(name=name, metrics=metrics, teacher_metrics=teacher_metrics,
                               per_video=per_video, videos=videos, skipped=skipped, plots=plots,
                               training_curves=training_curves, index_href=index_href)
    return _write_atomic(Path(out_dir) / "index.html", html)


def _student_rows(students: pd.DataFrame, folder: str) -> tuple[list[dict], list[dict]]:
    columns = [c for c in STUDENT_COLUMNS if c in students.columns]
    header = [{"key": c, "label": STUDENT_COLUMNS[c], "sorted": None} for c in columns]
    rows = []
    for i, record in enumerate(students.to_dict("records")):
        name = record["name"]
        if not isinstance(name, str) or name in ("", ".", "..") or re.search(r"[/\\]", name):
            raise InputError(f"students row {i}: name {name!r} is not a usable folder name "
                             f"(students/<name>/index.html); use a non-empty name without "
                             f"'/' or '\\'")
        cells = [_cell(record[c], c) for c in columns]
        pareto = record.get("pareto")
        rows.append({"name": name, "href": f"{folder}/{quote(name, safe='')}/index.html",
                     "cells": cells, "pareto": (not _is_missing(pareto)) and bool(pareto)})
    return header, rows


def _summary_items(summary: Mapping[str, Any]) -> list[dict]:
    keys = [k for k in SUMMARY_LABELS if k in summary]
    keys += sorted(k for k in summary if k not in SUMMARY_LABELS)
    return [{"key": k, "label": SUMMARY_LABELS.get(k, k),
             "value": _format(summary[k], k, headline=True)} for k in keys]


def render_index_page(*, students: pd.DataFrame, summary: Mapping[str, Any],
                      pareto_plots: Sequence, student_href: str = "students") -> str:
    """The HTML of the index page (see :func:`write_index_page`); touches no file."""
    students = _require_frame(students, "students", ["name"])
    if not isinstance(summary, Mapping):
        raise InputError(f"summary: expected a dict, got {type(summary).__name__}")
    header, rows = _student_rows(students,
                                 _relative_url(student_href, "student_href").rstrip("/"))
    gap = _number(summary.get("gap_best"))
    return _render("index.html", header=header, rows=rows, summary=_summary_items(summary),
                   gap=_format(gap, "gap") if gap is not None else None,
                   best=str(summary.get("best_student", "")) or None,
                   best_dice=_format(summary.get("best_dice"), "dice", headline=True),
                   teacher_dice=_format(summary.get("teacher_dice"), "dice", headline=True),
                   plots=_plot_items(pareto_plots))


def write_index_page(out_path: str | os.PathLike, *, students: pd.DataFrame,
                     summary: Mapping[str, Any], pareto_plots: Sequence,
                     student_href: str = "students") -> Path:
    """Write the report index (e.g. ``reports/index.html``) and return its path.

    ``students`` is the table of all students (like reports/pareto.csv; needs ``name``; a
    ``pareto`` flag marks the front), each row linking to ``<student_href>/<name>/index.html``
    (``student_href``: the folder of the student pages relative to the index);
    ``summary`` the distillation-gap figures (like reports/pareto_summary.json) and
    ``pareto_plots`` relative PNG paths. Raises :class:`InputError` on bad input.
    """
    html = render_index_page(students=students, summary=summary, pareto_plots=pareto_plots,
                             student_href=student_href)
    return _write_atomic(Path(out_path), html)
