"""Score soft masks of one source against human tracings and against a teacher
(docs/design.md §4).

Inputs are a frame store and mask stores aligned with it (``echodfkd.data.store``). All frame
indices are 0-based within a video; areas are in pixels of the 112x112 frame, lengths in
pixels, volumes in px^3 (only their ratio, the EF, is compared with FileList.csv).

Reference rules
---------------
- Human reference: the traced ED and ES frames of ``FrameStore.traced`` and their rasterised
  polygons ``traced_masks``. aFD ED/ES: :func:`metrics.afd` of the prediction's area curve
  seeded at the traced frame.
- EF: from single-plane area-length volumes (:func:`metrics.lv_geometry`) of the mask at the
  traced ED and ES frames (``ef_r``, ``ef_mae`` against the FileList EF), and the paper's naive
  area EF beside it (``ef_area_r``, ``ef_area_mae``). ``tracing_ef_*`` score the tracings
  themselves the same way: the floor of the volume method on this data.
- Annotation-free reference (teacher): the teacher's own ED/ES frames, found with no human input
  by running :func:`metrics.find_phase_frame` on the teacher's area curve seeded at the curve's
  global argmax (ED) / argmin (ES). Seeded there, the procedure returns that extreme itself, so
  the teacher's reference frames are the largest / smallest teacher mask of the video. The
  student's frames are then found the usual way seeded at those references; ``afd_*_teacher``
  is the distance. These need no tracing and are computed for every video of the split with
  frames (also those skipped for tracing problems).
- ``dice_*_teacher_ref``: Dice of student vs teacher masks at the traced ED/ES frames (so only
  for videos with usable tracings, comparable one-to-one with ``dice_*``).
- Teacher agreement: mean per-frame Dice of student vs teacher over all frames of the split
  (frame-weighted; see :func:`metrics.teacher_agreement`).
- Teacher masks are optional: a source the teacher did not label (an evaluation-only source)
  gets the human-referenced scores only; every teacher-referenced key and column is then
  *absent* (never 0 or NaN).

Bad input
---------
- A mask store not aligned with the frame store (frame count or fingerprint): ``ValueError``.
- A split absent from the store, a traced row naming another file than its video row, or no
  scorable video at all: :class:`~echodfkd.errors.InputError`.
- Per video, a recorded skip (column ``skip_reason``, "" when scored) for: no frames, no
  tracings, a missing phase, two tracings of one phase on different frames, a traced frame
  outside the video. Skipped videos get NaN in the human-referenced columns.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from echodfkd.evaluation import html
from echodfkd.evaluation import metrics as M
from echodfkd.evaluation import pareto
from echodfkd.evaluation import plots
from echodfkd.evaluation.plots import AreaPanel, OverlayPanel
from echodfkd.errors import InputError
from echodfkd.data.store import FrameStore, MaskStore, open_masks

log = logging.getLogger(__name__)

# evaluate.videos: which videos get a segmentation video (echodfkd.evaluation.report).
VIDEO_CHOICES = ("examples", "all")


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate:`` section of params.yaml: students are scored on ``split`` of
    ``source`` (human tracings; teacher references where the teacher labels it), teacher
    agreement on ``agreement_split`` of ``agreement_source``; masks are binarised at
    ``threshold`` (0 < threshold < 1); ``n_examples`` videos are drawn in the plots and,
    with ``videos: examples``, rendered as segmentation videos (``videos: all`` renders every
    evaluated video); the students segment the ``sources`` (the infer matrix); a video is
    flagged as collapsed beyond the ``collapse_*`` limits (:class:`CollapseLimits`)."""

    @property
    def collapse(self) -> "CollapseLimits":
        return CollapseLimits(self.collapse_empty, self.collapse_area_ratio, self.collapse_drift)

    source: str
    split: str
    agreement_source: str
    agreement_split: str
    threshold: float
    n_examples: int
    videos: str
    sources: list[str]
    collapse_empty: float
    collapse_area_ratio: float
    collapse_drift: float

    def __post_init__(self) -> None:
        _check_threshold(self.threshold)
        self.collapse  # building the limits checks them (CollapseLimits.__post_init__)
        if self.n_examples < 0:
            raise InputError(f"evaluate.n_examples must be >= 0, got {self.n_examples!r}")
        if self.videos not in VIDEO_CHOICES:
            raise InputError(f"evaluate.videos must be one of {', '.join(VIDEO_CHOICES)}, "
                             f"got {self.videos!r}")
        for key in ("source", "agreement_source"):
            if getattr(self, key) not in self.sources:
                raise InputError(f"evaluate.{key} {getattr(self, key)!r} is not among "
                                 f"evaluate.sources {self.sources}: the students segment only "
                                 f"those; add it there")


@dataclass(frozen=True)
class CollapseLimits:
    """When a video's student masks count as collapsed (docs/design.md §4, "Collapse"):
    more than ``empty`` (fraction 0..1) of its frames empty, or its area against the
    teacher's (``area_ratio_teacher``) or its drift (last quarter's mean area against the first
    quarter's) beyond a factor of ``area_ratio`` / ``drift`` either way (> 1)."""

    empty: float
    area_ratio: float
    drift: float

    def __post_init__(self) -> None:
        if not 0 <= self.empty < 1:
            raise InputError(f"evaluate.collapse_empty must be a fraction in [0, 1), got "
                             f"{self.empty!r}")
        for key in ("area_ratio", "drift"):
            value = getattr(self, key)
            if not value > 1:
                raise InputError(f"evaluate.collapse_{key} must be a factor > 1, got {value!r}")


def collapse_measures(s_area: np.ndarray, t_area: np.ndarray | None) -> dict[str, float]:
    """Per-video collapse measures from area curves (pixels per frame, (T,), T >= 1):

    - ``empty_fraction``: fraction of frames whose student mask is empty (0..1);
    - ``area_ratio_teacher``: the student's total area over the teacher's (absent without a
      teacher, NaN when the teacher's masks are all empty);
    - ``drift``: mean student area over the last quarter of the frames (``max(1, T // 4)``
      frames) divided by that over the first quarter; NaN when the first quarter is empty (a
      video empty from the start is caught by ``empty_fraction``).
    """
    s_area = np.asarray(s_area, np.float64)
    q = max(1, len(s_area) // 4)
    first, last = s_area[:q].mean(), s_area[-q:].mean()
    out = {"empty_fraction": float((s_area == 0).mean()),
           "drift": float(last / first) if first > 0 else math.nan}
    if t_area is not None:
        total = float(np.sum(t_area))
        out["area_ratio_teacher"] = float(s_area.sum()) / total if total > 0 else math.nan
    return out


def collapse_reason(measures: dict[str, float], limits: CollapseLimits) -> str:
    """Why a video is flagged as collapsed ("" when it is not): each measure of
    :func:`collapse_measures` beyond ``limits``, with its value."""
    why = []
    if measures["empty_fraction"] > limits.empty:
        why.append(f"{measures['empty_fraction']:.0%} of frames empty")
    for key, limit, what in (("area_ratio_teacher", limits.area_ratio, "area vs teacher"),
                             ("drift", limits.drift, "area drift last/first quarter")):
        value = measures.get(key, math.nan)
        if np.isfinite(value) and not 1 / limit <= value <= limit:
            why.append(f"{what} x{value:.2f}")
    return "; ".join(why)


# Per-video columns that describe the video (shared by student and teacher tables).
VIDEO_COLUMNS = ["FileName", "Split", "n_frames", "EF", "ed_frame", "es_frame"]


def check_aligned(frames: FrameStore, masks: MaskStore, split: str | None = None) -> None:
    """Raise :class:`InputError` unless ``masks`` was written for exactly ``frames`` (frame
    count and fingerprint) and, when it covers only some splits (``attrs["splits"]``), covers
    ``split``."""
    open_aligned(masks.path, frames)
    covered = masks.attrs.get("splits")
    if split is not None and covered is not None and split not in covered:
        raise InputError(f"mask store {masks.path!r} holds predictions for splits {covered} "
                         f"only, not {split!r}: rerun its inference with that split")


def open_aligned(path: str | os.PathLike, frames: FrameStore) -> MaskStore:
    """:func:`store.open_masks` with its alignment errors raised as :class:`InputError`
    (a missing store stays a ``FileNotFoundError``)."""
    try:
        return open_masks(path, frames)
    except InputError:
        raise
    except ValueError as e:
        raise InputError(str(e)) from e


def _split_rows(frames: FrameStore, split: str) -> np.ndarray:
    splits = sorted(set(frames.index["Split"].astype(str)))
    if split not in splits:
        raise InputError(f"split {split!r} not in {frames.path!r} (splits there: {splits}): "
                         f"pick one of those splits in params.yaml")
    return np.flatnonzero((frames.index["Split"] == split).to_numpy())


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise InputError(f"threshold must be in (0, 1), got {threshold!r}: fix "
                         f"evaluate.threshold in params.yaml")


def _tracings_by_video(frames: FrameStore) -> dict[int, list[tuple[str, int, int]]]:
    """video row -> [(phase, frame, traced_masks row)], checking FileNames agree."""
    out: dict[int, list[tuple[str, int, int]]] = {}
    names = frames.index["FileName"].astype(str).to_numpy()
    for r in frames.traced.itertuples(index=False):
        v = int(r.video)
        if not 0 <= v < len(names) or names[v] != str(r.FileName):
            got = names[v] if 0 <= v < len(names) else "<no such row>"
            raise InputError(f"{frames.path!r}: traced row for {r.FileName!r} points at video "
                             f"row {v} ({got!r}): the store is corrupt, rerun ingest")
        out.setdefault(v, []).append((str(r.phase), int(r.frame), int(r.row)))
    return out


def _resolve_tracing(rows: list[tuple[str, int, int]] | None, n_frames: int
                     ) -> tuple[dict[str, tuple[int, int]], str]:
    """Pick one (frame, traced row) per phase; return ({} , reason) when unusable."""
    if n_frames <= 0:
        return {}, "video has no frames"
    if not rows:
        return {}, "no tracings"
    chosen: dict[str, tuple[int, int]] = {}
    for phase in M.PHASES:
        mine = [(f, r) for p, f, r in rows if p == phase]
        if not mine:
            return {}, f"no {phase} tracing"
        frames_ = sorted({f for f, _ in mine})
        if len(frames_) > 1:
            return {}, f"{phase} traced on several frames {frames_}"
        f, r = mine[0]
        if not 0 <= f < n_frames:
            return {}, f"{phase} traced frame {f} outside the video (0..{n_frames - 1})"
        chosen[phase] = (f, r)
    return chosen, ""


def _teacher_refs(t_area: np.ndarray) -> dict[str, int]:
    """Annotation-free ED/ES reference frames from the teacher's area curve (module docstring)."""
    return {"ED": M.find_phase_frame(t_area, int(np.argmax(t_area)), "ED"),
            "ES": M.find_phase_frame(t_area, int(np.argmin(t_area)), "ES")}


def _floats(*columns: pd.Series) -> np.ndarray:
    """Concatenate (nullable) numeric columns into float64 with NaN for missing values."""
    return np.concatenate([pd.to_numeric(c).astype("Float64").to_numpy(np.float64,
                                                                        na_value=np.nan)
                           for c in columns])


def _mean(*columns: pd.Series) -> float:
    v = _floats(*columns)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _geometry(rec: dict, phase: str, mask: np.ndarray) -> float:
    """Store length_<phase> (px) of a binary (H, W) mask in ``rec``; return its volume px^3."""
    _, length, volume = M.lv_geometry(mask)
    rec[f"length_{phase.lower()}"] = length
    return volume


def _score_video(frames: FrameStore, pred: MaskStore, teacher: MaskStore | None, video: int,
                 tracing: list[tuple[str, int, int]] | None, threshold: float,
                 limits: CollapseLimits) -> dict:
    """Score one video of ``pred``, row ``video`` of ``frames.index`` (rules: module docstring).

    ``pred``, ``teacher``: mask stores aligned with ``frames`` (uint8 p*255 (N, 112, 112)),
    binarised at ``threshold`` (0 < threshold < 1); ``teacher`` None for a source without
    teacher masks. ``tracing``: the video's ``[(phase "ED"/"ES", frame, traced_masks row)]``
    from :func:`_tracings_by_video`, None when it has none.

    Returns the video's record, a dict keyed by the per-video columns of
    :func:`evaluate_source`: FileName, Split (str), n_frames (int), EF (float %, NaN when the
    FileList has none), ed_frame, es_frame (int 0-based traced frames, -1 when unusable),
    skip_reason (str, "" when scored), and only the keys it could compute. A video with frames
    and a teacher gets teacher_ref_ed_frame, teacher_ref_es_frame (int frames),
    afd_ed_teacher, afd_es_teacher (int frames), agreement (float mean per-frame Dice) and
    ``"_agreement_sum"`` (float, the sum of its per-frame Dice, for the frame-weighted split
    agreement; not a column). A video with frames gets the collapse measures
    (:func:`collapse_measures`) and ``collapse`` (str: why it is flagged against ``limits``,
    "" when it is not). A scored video also gets dice_ed, dice_es (float 0..1),
    pred_ed_frame, pred_es_frame, afd_ed, afd_es (int frames), area_ed, area_es (int px),
    length_ed, length_es (float px), edv, esv (float px^3), ef_pred, ef_area_pred, ef_traced,
    ef_area_traced (float %) and, with a teacher, dice_ed_teacher_ref, dice_es_teacher_ref
    (float 0..1).
    """
    v = frames.index.iloc[video]
    start, stop = int(v.start), int(v.stop)
    n = stop - start
    rec = {"FileName": str(v.FileName), "Split": str(v.Split), "n_frames": n,
           "EF": float(v.EF) if pd.notna(v.EF) else math.nan}
    chosen, reason = _resolve_tracing(tracing, n)
    rec["ed_frame"] = chosen["ED"][0] if chosen else -1
    rec["es_frame"] = chosen["ES"][0] if chosen else -1
    if n <= 0:
        rec["skip_reason"] = reason
        return rec
    s_bin = M.binarize(pred.masks[start:stop], threshold)
    s_area = M.area_curve(s_bin)
    t_area = None
    if teacher is not None:
        t_bin = M.binarize(teacher.masks[start:stop], threshold)
        t_area = M.area_curve(t_bin)
        per_frame = M.dice_per_frame(s_bin, t_bin)
        rec["_agreement_sum"] = float(per_frame.sum())
        rec["agreement"] = float(per_frame.mean())
        refs = _teacher_refs(t_area)
        for phase in M.PHASES:
            p = phase.lower()
            rec[f"teacher_ref_{p}_frame"] = refs[phase]
            rec[f"afd_{p}_teacher"] = M.afd(s_area, refs[phase], phase)
    rec.update(collapse_measures(s_area, t_area))
    rec["collapse"] = collapse_reason(rec, limits)
    if reason:
        rec["skip_reason"] = reason
        return rec
    traced_area, volume, traced_volume = {}, {}, {}
    for phase, (f, row) in chosen.items():
        p = phase.lower()
        traced = frames.traced_masks[row] > 0
        traced_area[phase] = int(traced.sum())
        traced_volume[phase] = M.lv_geometry(traced)[2]
        rec[f"dice_{p}"] = M.dice(s_bin[f], traced)
        rec[f"pred_{p}_frame"] = M.find_phase_frame(s_area, f, phase)
        rec[f"afd_{p}"] = abs(rec[f"pred_{p}_frame"] - f)
        rec[f"area_{p}"] = int(s_area[f])
        volume[phase] = _geometry(rec, phase, s_bin[f])
        if teacher is not None:
            rec[f"dice_{p}_teacher_ref"] = M.dice(s_bin[f], t_bin[f])
    rec["edv"], rec["esv"] = volume["ED"], volume["ES"]
    rec["ef_pred"] = M.ef_from_volumes(volume["ED"], volume["ES"])
    rec["ef_area_pred"] = M.ef_from_areas(rec["area_ed"], rec["area_es"])
    rec["ef_traced"] = M.ef_from_volumes(traced_volume["ED"], traced_volume["ES"])
    rec["ef_area_traced"] = M.ef_from_areas(traced_area["ED"], traced_area["ES"])
    rec["skip_reason"] = ""
    return rec


def _summarise(records: list[dict], with_teacher: bool, where: str
               ) -> tuple[pd.DataFrame, dict]:
    """The per-video table and the summary of a split's records (from :func:`_score_video`).

    ``records``: one dict per video of the split, in store order; ``with_teacher``: whether
    they were scored against teacher masks (adds the teacher columns and keys); ``where``:
    names the split and store in the error message. Returns ``(per_video, summary)`` as
    documented in :func:`evaluate_source`: ``per_video`` has one row per record, FileName,
    Split, skip_reason str; n_frames, ed_frame, es_frame int64; the other frame indices, frame
    distances and pixel areas nullable Int64 (<NA> where not computed); every other number
    float64 (NaN where not computed). Raises :class:`InputError` when no video could be scored
    against tracings.
    """
    df = _per_video_frame(records, with_teacher)
    scored = df[df["skip_reason"] == ""]
    if len(scored) == 0:
        reasons = Counter(df["skip_reason"].astype(str)) if len(df) else {"no videos": 1}
        raise InputError(f"no video of {where} could be scored "
                         f"against tracings: {dict(reasons)}; evaluate a split with tracings")
    ef = _floats(scored["EF"])
    summary = {
        "n_videos": int(len(scored)),
        "n_skipped": int(len(df) - len(scored)),
        "n_frames": int(df["n_frames"].sum()),
        "dice_ed": _mean(scored["dice_ed"]),
        "dice_es": _mean(scored["dice_es"]),
        "dice": _mean(scored["dice_ed"], scored["dice_es"]),
        "afd_ed": _mean(scored["afd_ed"]),
        "afd_es": _mean(scored["afd_es"]),
        "afd": _mean(scored["afd_ed"], scored["afd_es"]),
        "ef_r": M.pearson_r(_floats(scored["ef_pred"]), ef),
        "ef_mae": M.mae(_floats(scored["ef_pred"]), ef),
        "ef_area_r": M.pearson_r(_floats(scored["ef_area_pred"]), ef),
        "ef_area_mae": M.mae(_floats(scored["ef_area_pred"]), ef),
        "tracing_ef_r": M.pearson_r(_floats(scored["ef_traced"]), ef),
        "tracing_ef_mae": M.mae(_floats(scored["ef_traced"]), ef),
        "n_collapsed": int((df["collapse"] != "").sum()),
        "empty_fraction": _mean(df.loc[df["n_frames"] > 0, "empty_fraction"]),
    }
    if with_teacher:
        # Frame-weighted agreement: per-frame Dice summed over the videos in order, then / frames.
        agree_sum, agree_n = 0.0, 0
        for rec in records:
            if "_agreement_sum" in rec:
                agree_sum += rec["_agreement_sum"]
                agree_n += rec["n_frames"]
        withf = df[df["n_frames"] > 0]
        summary.update({
            "afd_ed_teacher": _mean(withf["afd_ed_teacher"]),
            "afd_es_teacher": _mean(withf["afd_es_teacher"]),
            "afd_teacher": _mean(withf["afd_ed_teacher"], withf["afd_es_teacher"]),
            "dice_ed_teacher_ref": _mean(scored["dice_ed_teacher_ref"]),
            "dice_es_teacher_ref": _mean(scored["dice_es_teacher_ref"]),
            "dice_teacher_ref": _mean(scored["dice_ed_teacher_ref"],
                                      scored["dice_es_teacher_ref"]),
            "agreement": agree_sum / agree_n if agree_n else math.nan,
        })
    return df, summary


def evaluate_source(frames: FrameStore, pred: MaskStore, *, teacher: MaskStore | None,
                    split: str, threshold: float, collapse: CollapseLimits,
                    progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Score ``pred`` on the videos of ``split`` (see the module docstring for the rules).

    ``pred``, ``teacher``: mask stores aligned with ``frames`` (uint8 p*255 (N, 112, 112)),
    binarised at ``threshold``; ``teacher`` None for a source without teacher masks.
    Returns ``(per_video, summary)``:

    - ``per_video``: one row per video of the split, columns FileName, Split, n_frames, EF
      (FileList, %), ed_frame, es_frame (traced), dice_ed, dice_es, pred_ed_frame,
      pred_es_frame, afd_ed, afd_es (frames), area_ed, area_es (whole mask, pixels),
      length_ed, length_es (long axis of the largest component, px), edv, esv (area-length
      volumes, px^3), ef_pred (volume EF of the prediction, %), ef_area_pred (area EF, %),
      ef_traced, ef_area_traced (the same two EFs of the tracings, %), skip_reason; with a
      teacher also teacher_ref_ed_frame, teacher_ref_es_frame, afd_ed_teacher, afd_es_teacher,
      dice_ed_teacher_ref, dice_es_teacher_ref, agreement (mean per-frame Dice of the video);
      then empty_fraction, drift, (with a teacher) area_ratio_teacher and collapse (why the
      video is flagged against the ``collapse`` limits, "" when it is not).
    - ``summary``: flat floats/ints: n_videos (scored), n_skipped, n_frames, dice_ed, dice_es,
      dice (mean over all ED and ES values), afd_ed, afd_es, afd, ef_r, ef_mae (volume EF vs
      FileList EF), ef_area_r, ef_area_mae (area EF vs FileList EF), tracing_ef_r,
      tracing_ef_mae (volume EF of the tracings vs FileList EF); with a teacher also
      afd_ed_teacher, afd_es_teacher, afd_teacher, dice_ed_teacher_ref, dice_es_teacher_ref,
      dice_teacher_ref, agreement; n_collapsed (videos flagged, scored or not) and
      empty_fraction (mean over the videos with frames). Undefined values (e.g. r of fewer
      than 2 videos) are NaN.
    """
    _check_threshold(threshold)
    check_aligned(frames, pred, split)
    if teacher is not None:
        check_aligned(frames, teacher, split)
    rows = _split_rows(frames, split)
    tracings = _tracings_by_video(frames)
    records = [_score_video(frames, pred, teacher, int(i), tracings.get(int(i)), threshold,
                            collapse)
               for i in tqdm(rows, desc=f"evaluate {split}", unit="video", disable=not progress)]
    return _summarise(records, teacher is not None, f"split {split!r} in {frames.path!r}")


_STUDENT_COLUMNS = ["dice_ed", "dice_es", "pred_ed_frame", "pred_es_frame", "afd_ed", "afd_es",
                    "area_ed", "area_es", "length_ed", "length_es", "edv", "esv", "ef_pred",
                    "ef_area_pred", "ef_traced", "ef_area_traced"]
_TEACHER_COLUMNS = ["teacher_ref_ed_frame", "teacher_ref_es_frame", "afd_ed_teacher",
                    "afd_es_teacher", "dice_ed_teacher_ref", "dice_es_teacher_ref", "agreement"]
_COLLAPSE_COLUMNS = ["empty_fraction", "drift"]


_INT_COLUMNS = {"afd_ed", "afd_es", "area_ed", "area_es", "afd_ed_teacher", "afd_es_teacher"}


def _per_video_frame(records: list[dict], with_teacher: bool) -> pd.DataFrame:
    columns = VIDEO_COLUMNS + _STUDENT_COLUMNS + (_TEACHER_COLUMNS if with_teacher else [])
    columns += _COLLAPSE_COLUMNS + (["area_ratio_teacher"] if with_teacher else [])
    columns += ["collapse", "skip_reason"]
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in columns:
        if c in ("FileName", "Split", "collapse", "skip_reason"):
            continue
        # frame indices, frame distances and pixel counts are integers, missing when skipped
        integer = c in _INT_COLUMNS or c.endswith("_frame")
        df[c] = pd.to_numeric(df[c]).astype("Int64" if integer else np.float64)
    for c in ("n_frames", "ed_frame", "es_frame"):
        df[c] = df[c].astype(np.int64)
    df["skip_reason"] = df["skip_reason"].fillna("").astype(str)
    df["collapse"] = df["collapse"].fillna("").astype(str)
    return df


def evaluate_agreement(frames: FrameStore, pred: MaskStore, teacher: MaskStore, split: str,
                       threshold: float, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Teacher agreement only, for an unlabelled source (no tracings needed).

    Returns ``(per_video, summary)``: per_video columns FileName, Split, n_frames, agreement
    (mean per-frame Dice of the video; NaN for a video with no frames); summary
    ``{"agreement": mean per-frame Dice over all frames of the split, "n_videos", "n_frames"}``.
    """
    _check_threshold(threshold)
    check_aligned(frames, pred, split)
    check_aligned(frames, teacher, split)
    rows = _split_rows(frames, split)
    records, total, count = [], 0.0, 0
    for i in tqdm(rows, desc=f"agreement {split}", unit="video", disable=not progress):
        v = frames.index.iloc[i]
        start, stop = int(v.start), int(v.stop)
        rec = {"FileName": str(v.FileName), "Split": str(v.Split), "n_frames": stop - start,
               "agreement": math.nan}
        if stop > start:
            d = M.dice_per_frame(M.binarize(pred.masks[start:stop], threshold),
                                 M.binarize(teacher.masks[start:stop], threshold))
            rec["agreement"] = float(d.mean())
            total += float(d.sum())
            count += d.size
        records.append(rec)
    if count == 0:
        raise InputError(f"split {split!r} of {frames.path!r} has no frames: pick a split "
                         f"with videos")
    df = pd.DataFrame.from_records(records, columns=["FileName", "Split", "n_frames", "agreement"])
    return df, {"agreement": total / count, "n_videos": int(len(df)), "n_frames": int(count)}


def merge_per_video(student: pd.DataFrame, teacher: pd.DataFrame,
                    prefix: str = "teacher_") -> pd.DataFrame:
    """Join a student table and a teacher-vs-human table (both from :func:`evaluate_source`)
    on FileName; the teacher's own score columns get ``prefix``."""
    keep = [c for c in teacher.columns if c not in VIDEO_COLUMNS or c == "FileName"]
    t = teacher[keep].rename(columns={c: prefix + c for c in keep if c != "FileName"})
    return student.merge(t, on="FileName", how="left", validate="one_to_one")


def prefixed(summary: dict, prefix: str, keys=None) -> dict:
    """``{prefix + k: v}`` for ``keys`` (all keys when None) of a summary dict."""
    return {prefix + k: v for k, v in summary.items() if keys is None or k in keys}


def json_ready(d: dict) -> dict:
    """Copy of a flat dict with numpy scalars as Python numbers and NaN/inf as None (JSON null)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating, float)):
            v = float(v)
            v = v if math.isfinite(v) else None
        out[k] = v
    return out


# --------------------------------------------------------------------------- plot data

def _example_videos(frames: FrameStore, split: str, n_videos: int):
    if n_videos < 0:
        raise InputError(f"the number of example videos must be >= 0, got {n_videos}: fix "
                         f"evaluate.n_examples in params.yaml")
    if n_videos == 0:
        return
    tracings = _tracings_by_video(frames)
    for i in _split_rows(frames, split):
        v = frames.index.iloc[i]
        start, stop = int(v.start), int(v.stop)
        chosen, reason = _resolve_tracing(tracings.get(int(i)), stop - start)
        if reason:
            continue
        yield str(v.FileName), start, stop, chosen
        n_videos -= 1
        if n_videos <= 0:
            return


def area_panels(frames: FrameStore, pred: MaskStore, *, teacher: MaskStore | None, split: str,
                threshold: float, n_videos: int) -> list[AreaPanel]:
    """Area curves of the first ``n_videos`` scorable videos of ``split`` (for plots/CSV)."""
    _check_threshold(threshold)
    panels = []
    for name, start, stop, chosen in _example_videos(frames, split, n_videos):
        human = {p: f for p, (f, _) in chosen.items()}
        s = M.area_curve(M.binarize(pred.masks[start:stop], threshold))
        t = (M.area_curve(M.binarize(teacher.masks[start:stop], threshold))
             if teacher is not None else None)
        panels.append(AreaPanel(
            name=name, student=s, teacher=t, human=human,
            student_found={p: M.find_phase_frame(s, f, p) for p, f in human.items()},
            teacher_found=({p: M.find_phase_frame(t, f, p) for p, f in human.items()}
                           if t is not None else {})))
    return panels


def area_curves_table(panels: list[AreaPanel]) -> pd.DataFrame:
    """Long table for ``dvc plots``: step (running row), video, frame, student_area,
    teacher_area (pixels; the column is absent when no panel has a teacher curve), traced
    ("ED"/"ES"/"")."""
    parts = []
    for p in panels:
        t = np.arange(p.student.size)
        traced = np.full(t.size, "", dtype=object)
        for phase, f in p.human.items():
            traced[f] = phase
        parts.append(pd.DataFrame({
            "video": p.name, "frame": t, "student_area": p.student.astype(np.int64),
            "teacher_area": (p.teacher.astype(np.float64) if p.teacher is not None
                             else np.full(t.size, np.nan)),
            "traced": traced}))
    with_teacher = any(p.teacher is not None for p in panels)
    cols = ["step", "video", "frame", "student_area"] + (["teacher_area"] if with_teacher
                                                         else []) + ["traced"]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "step", np.arange(len(df)))
    return df[cols]


def overlay_panels(frames: FrameStore, pred: MaskStore, *, teacher: MaskStore | None,
                   split: str, threshold: float, n_videos: int) -> list[OverlayPanel]:
    """ED and ES frames of the first ``n_videos`` scorable videos with their masks."""
    _check_threshold(threshold)
    panels = []
    for name, start, _, chosen in _example_videos(frames, split, n_videos):
        for phase, (f, row) in chosen.items():
            g = start + f
            s = M.binarize(pred.masks[g], threshold)
            d = M.dice(s, frames.traced_masks[row] > 0)
            panels.append(OverlayPanel(
                title=f"{name} {phase} f{f} Dice {d:.2f}",
                image=np.asarray(frames.frames[g]), traced=frames.traced_masks[row] > 0,
                student=s,
                teacher=M.binarize(teacher.masks[g], threshold) if teacher is not None else None))
    return panels


# --------------------------------------------------------------------------- one student's report

# Teacher-vs-human scores reported as teacher_<key> beside the student's.
TEACHER_KEYS = ("dice_ed", "dice_es", "dice", "afd_ed", "afd_es", "afd", "ef_r", "ef_mae",
                "ef_area_r", "ef_area_mae")
COST_KEYS = ("weights", "flops")


def source_key(source: str, split: str) -> str:
    """``<source>_<split in lower case>``, the suffix of the ``agreement_*`` metric keys."""
    return f"{source}_{split.lower()}"


@dataclass
class AgreementSet:
    """A second source (usually the unlabelled one) on which only teacher agreement is
    measured: its frames, the student's and the teacher's masks, and the split."""

    source: str
    split: str
    frames: FrameStore
    pred: MaskStore
    teacher: MaskStore


@dataclass
class StudentReport:
    """Everything the evaluate stage writes for one student (see :func:`write_report`).

    ``metrics``: flat dict of finite numbers only; ``undefined``: the keys left out of it
    because their value is undefined (NaN, e.g. a correlation over fewer than 2 videos);
    ``per_video``: student (and ``teacher_``-prefixed teacher) columns per video;
    ``curves``: :func:`area_curves_table`; ``point``: the Pareto record
    (:func:`echodfkd.evaluation.pareto.point_record`).
    """

    metrics: dict
    undefined: list[str]
    per_video: pd.DataFrame
    curves: pd.DataFrame
    area_panels: list[AreaPanel]
    overlay_panels: list[OverlayPanel]
    point: dict


def finite_only(d: dict) -> tuple[dict, list[str]]:
    """Split a flat dict into (its entries with a finite number or a non-float value, JSON
    ready, and the keys whose value is NaN/inf/None), so undefined scores are absent keys."""
    kept, dropped = {}, []
    for k, v in json_ready(d).items():
        (dropped.append(k) if v is None else kept.__setitem__(k, v))
    return kept, dropped


def load_cost(path: str | os.PathLike, keys: tuple[str, ...], *,
              unknown_ok: bool = False) -> dict | None:
    """Read a cost JSON object (``cost.json`` of the train or teacher stage) and check it holds
    numbers under ``keys``; errors name the file and the missing keys. With ``unknown_ok``, a
    file whose ``keys`` are all null (the teacher stage's record of a teacher known only by its
    outputs) gives None."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}): rerun the stage that wrote it") from e
    if unknown_ok and isinstance(d, dict) and all(d.get(k) is None for k in keys):
        return None
    missing = [k for k in keys if not isinstance(d.get(k) if isinstance(d, dict) else None,
                                                 (int, float))]
    if missing:
        raise InputError(f"{path}: no number under {missing}: rerun the stage that wrote it "
                         f"(the train stage writes weights, flops and "
                         f"{'/'.join(pareto.ARCH)})")
    return d


def report_student(name: str, frames: FrameStore, pred: MaskStore, *, source: str, split: str,
                   teacher: MaskStore | None, agreement: AgreementSet | None,
                   student_cost: dict, teacher_cost: dict | None, threshold: float,
                   collapse: CollapseLimits, n_examples: int,
                   progress: bool = True) -> StudentReport:
    """Score one student on ``source``/``split`` and assemble its report.

    ``teacher``: the teacher's masks of ``source`` or None (an evaluation-only source: no
    ``teacher_*``, ``*_teacher``, ``*_teacher_ref`` nor ``agreement_<source>_<split>`` keys).
    ``agreement``: a second source for ``agreement_<source>_<split>`` or None (no teacher masks
    there); when it names the evaluated source and split, the agreement already measured is
    used. ``student_cost``: weights, flops and the architecture (:data:`pareto.ARCH`);
    ``teacher_cost``: weights/flops or None (teacher given as outputs only); teacher costs are
    reported only beside teacher scores. ``collapse``: the limits beyond which a video is
    flagged (``collapse`` column, ``n_collapsed``). ``n_examples``: videos in the area/overlay
    plots.
    """
    df, summary = evaluate_source(frames, pred, teacher=teacher, split=split,
                                  threshold=threshold, collapse=collapse, progress=progress)
    agreements = {}
    if "agreement" in summary:
        agreements[f"agreement_{source_key(source, split)}"] = summary["agreement"]
    if agreement is not None:
        key = f"agreement_{source_key(agreement.source, agreement.split)}"
        if key not in agreements:
            _, a = evaluate_agreement(agreement.frames, agreement.pred, agreement.teacher,
                                      agreement.split, threshold, progress)
            agreements[key] = a["agreement"]
    scores = {k: v for k, v in summary.items() if k != "agreement"} | agreements
    point = pareto.point_record(name, **{k: student_cost[k] for k in pareto.ARCH},
                                weights=student_cost["weights"], flops=student_cost["flops"],
                                summary=summary, **agreements)
    if teacher is not None:
        tdf, tsum = evaluate_source(frames, teacher, teacher=None, split=split,
                                    threshold=threshold, collapse=collapse, progress=progress)
        scores.update(prefixed(tsum, "teacher_", TEACHER_KEYS))
        df = merge_per_video(df, tdf)
    scores.update({k: student_cost[k] for k in COST_KEYS})
    if teacher is not None and teacher_cost is not None:
        scores.update({"teacher_" + k: teacher_cost[k] for k in COST_KEYS if k in teacher_cost})
    metrics, undefined = finite_only(scores)
    kw = dict(teacher=teacher, split=split, threshold=threshold, n_videos=n_examples)
    panels = area_panels(frames, pred, **kw)
    return StudentReport(metrics=metrics, undefined=undefined, per_video=df,
                         curves=area_curves_table(panels), area_panels=panels,
                         overlay_panels=overlay_panels(frames, pred, **kw), point=point)


@dataclass
class Page:
    """What the student page links to besides the report itself: ``name`` (the student),
    ``videos`` {FileName: link relative to the page}, ``skipped`` [(FileName, why no video)],
    ``training_curves`` (:func:`echodfkd.evaluation.report.read_training_curves`, or None)."""

    name: str
    videos: dict[str, str]
    skipped: list[tuple[str, str]]
    training_curves: pd.DataFrame | None


def write_report(out: str | os.PathLike, report: StudentReport, page: Page) -> Path:
    """Write ``report`` into the folder ``out``, replacing it as a whole (built under
    ``<out>.partial``, then renamed: nothing of an older report survives):
    metrics.json, per_video.csv, area_curves.csv, point.json, plots/area_curves.png,
    plots/overlays.png and index.html, the student's page (:mod:`html`, with ``page``).
    Returns ``out``."""
    import shutil

    from echodfkd.data.store import commit, partial_path

    out = Path(out)
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "metrics.json").write_text(json.dumps(report.metrics, indent=2) + "\n")
    (tmp / "per_video.csv").write_text(report.per_video.to_csv(index=False))
    (tmp / "area_curves.csv").write_text(report.curves.to_csv(index=False))
    pareto.write_point(tmp / "point.json", report.point)
    plots.plot_area_curves(tmp / "plots" / "area_curves.png", report.area_panels)
    plots.plot_overlays(tmp / "plots" / "overlays.png", report.overlay_panels)
    student, teacher = html.split_metrics(report.metrics)
    html.write_student_page(tmp, name=page.name, metrics=student, teacher_metrics=teacher,
                            per_video=report.per_video, videos=page.videos,
                            skipped=page.skipped, training_curves=page.training_curves,
                            plots=["plots/area_curves.png", "plots/overlays.png"])
    commit(tmp, out)
    return out
