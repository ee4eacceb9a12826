"""Score soft masks of one source against human tracings and against a teacher (design.md §4).

Inputs are a frame store and mask stores aligned with it (``echodfkd.store``). All frame
indices are 0-based within a video; areas are in pixels of the 112x112 frame.

Reference rules
---------------
- Human reference: the traced ED and ES frames of ``FrameStore.traced`` and their rasterised
  polygons ``traced_masks``. aFD ED/ES: :func:`metrics.afd` of the prediction's area curve
  seeded at the traced frame.
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

Bad input
---------
- A mask store not aligned with the frame store (frame count or fingerprint): ``ValueError``.
- A traced row naming another file than its video row: ``ValueError`` (corrupt store).
- Per video, a recorded skip (column ``skip_reason``, "" when scored) for: no frames, no
  tracings, a missing phase, two tracings of one phase on different frames, a traced frame
  outside the video. Skipped videos get NaN in the human-referenced columns.
- No video of the split scored at all: ``ValueError`` listing the reasons.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from . import metrics as M
from .store import FrameStore, MaskStore, open_masks

# Per-video columns that describe the video (shared by student and teacher tables).
VIDEO_COLUMNS = ["FileName", "Split", "n_frames", "EF", "ed_frame", "es_frame"]


def check_aligned(frames: FrameStore, masks: MaskStore, split: str | None = None) -> None:
    """Raise ``ValueError`` unless ``masks`` was written for exactly ``frames`` (via open_masks)
    and, when it covers only some splits (``attrs["splits"]``), covers ``split``."""
    open_masks(masks.path, frames)
    covered = masks.attrs.get("splits")
    if split is not None and covered is not None and split not in covered:
        raise ValueError(f"mask store {masks.path!r} holds predictions for splits {covered} "
                         f"only, not {split!r}: rerun its inference with that split")


def _split_rows(frames: FrameStore, split: str) -> np.ndarray:
    splits = sorted(set(frames.index["Split"].astype(str)))
    if split not in splits:
        raise ValueError(f"split {split!r} not in {frames.path!r} (splits there: {splits})")
    return np.flatnonzero((frames.index["Split"] == split).to_numpy())


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")


def _tracings_by_video(frames: FrameStore) -> dict[int, list[tuple[str, int, int]]]:
    """video row -> [(phase, frame, traced_masks row)], checking FileNames agree."""
    out: dict[int, list[tuple[str, int, int]]] = {}
    names = frames.index["FileName"].astype(str).to_numpy()
    for r in frames.traced.itertuples(index=False):
        v = int(r.video)
        if not 0 <= v < len(names) or names[v] != str(r.FileName):
            got = names[v] if 0 <= v < len(names) else "<no such row>"
            raise ValueError(f"{frames.path!r}: traced row for {r.FileName!r} points at video "
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


def evaluate_source(frames: FrameStore, pred: MaskStore, *, teacher: MaskStore | None,
                    split: str, threshold: float, progress: bool = True
                    ) -> tuple[pd.DataFrame, dict]:
    """Score ``pred`` on the videos of ``split`` (see the module docstring for the rules).

    ``pred``, ``teacher``: mask stores aligned with ``frames`` (uint8 p*255 (N, 112, 112)),
    binarised at ``threshold``. Returns ``(per_video, summary)``:

    - ``per_video``: one row per video of the split, columns FileName, Split, n_frames, EF
      (FileList, %), ed_frame, es_frame (traced), dice_ed, dice_es, pred_ed_frame,
      pred_es_frame, afd_ed, afd_es (frames), area_ed, area_es (pixels), ef_pred (area EF of the
      prediction, %), ef_traced (area EF of the tracings, %), skip_reason; with a teacher also
      teacher_ref_ed_frame, teacher_ref_es_frame, afd_ed_teacher, afd_es_teacher,
      dice_ed_teacher_ref, dice_es_teacher_ref, agreement (mean per-frame Dice of the video).
    - ``summary``: flat floats/ints: n_videos (scored), n_skipped, n_frames, dice_ed, dice_es,
      dice (mean over all ED and ES values), afd_ed, afd_es, afd, ef_r, ef_mae; with a teacher
      also afd_ed_teacher, afd_es_teacher, afd_teacher, dice_ed_teacher_ref,
      dice_es_teacher_ref, dice_teacher_ref, agreement. Undefined values are NaN.
    """
    _check_threshold(threshold)
    check_aligned(frames, pred, split)
    if teacher is not None:
        check_aligned(frames, teacher, split)
    rows = _split_rows(frames, split)
    tracings = _tracings_by_video(frames)
    index = frames.index
    records = []
    agree_sum, agree_n = 0.0, 0
    for i in tqdm(rows, desc=f"evaluate {split}", unit="video", disable=not progress):
        v = index.iloc[i]
        start, stop = int(v.start), int(v.stop)
        n = stop - start
        rec = {"FileName": str(v.FileName), "Split": str(v.Split), "n_frames": n,
               "EF": float(v.EF) if pd.notna(v.EF) else math.nan}
        chosen, reason = _resolve_tracing(tracings.get(int(i)), n)
        rec["ed_frame"] = chosen["ED"][0] if chosen else -1
        rec["es_frame"] = chosen["ES"][0] if chosen else -1
        if n <= 0:
            rec["skip_reason"] = reason
            records.append(rec)
            continue
        s_bin = M.binarize(pred.masks[start:stop], threshold)
        s_area = M.area_curve(s_bin)
        if teacher is not None:
            t_bin = M.binarize(teacher.masks[start:stop], threshold)
            t_area = M.area_curve(t_bin)
            per_frame = M.dice_per_frame(s_bin, t_bin)
            agree_sum += float(per_frame.sum())
            agree_n += n
            rec["agreement"] = float(per_frame.mean())
            refs = _teacher_refs(t_area)
            for phase in M.PHASES:
                p = phase.lower()
                rec[f"teacher_ref_{p}_frame"] = refs[phase]
                rec[f"afd_{p}_teacher"] = M.afd(s_area, refs[phase], phase)
        if reason:
            rec["skip_reason"] = reason
            records.append(rec)
            continue
        traced_area = {}
        for phase, (f, row) in chosen.items():
            p = phase.lower()
            traced = frames.traced_masks[row] > 0
            traced_area[phase] = int(traced.sum())
            rec[f"dice_{p}"] = M.dice(s_bin[f], traced)
            rec[f"pred_{p}_frame"] = M.find_phase_frame(s_area, f, phase)
            rec[f"afd_{p}"] = abs(rec[f"pred_{p}_frame"] - f)
            rec[f"area_{p}"] = int(s_area[f])
            if teacher is not None:
                rec[f"dice_{p}_teacher_ref"] = M.dice(s_bin[f], t_bin[f])
        rec["ef_pred"] = M.ef_from_areas(rec["area_ed"], rec["area_es"])
        rec["ef_traced"] = M.ef_from_areas(traced_area["ED"], traced_area["ES"])
        rec["skip_reason"] = ""
        records.append(rec)

    df = _per_video_frame(records, teacher is not None)
    scored = df[df["skip_reason"] == ""]
    if len(scored) == 0:
        reasons = Counter(df["skip_reason"].astype(str)) if len(df) else {"no videos": 1}
        raise ValueError(f"no video of split {split!r} in {frames.path!r} could be scored "
                         f"against tracings: {dict(reasons)}")
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
        "ef_r": M.pearson_r(_floats(scored["ef_pred"]), _floats(scored["EF"])),
        "ef_mae": M.mae(_floats(scored["ef_pred"]), _floats(scored["EF"])),
    }
    if teacher is not None:
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


_STUDENT_COLUMNS = ["dice_ed", "dice_es", "pred_ed_frame", "pred_es_frame", "afd_ed", "afd_es",
                    "area_ed", "area_es", "ef_pred", "ef_traced"]
_TEACHER_COLUMNS = ["teacher_ref_ed_frame", "teacher_ref_es_frame", "afd_ed_teacher",
                    "afd_es_teacher", "dice_ed_teacher_ref", "dice_es_teacher_ref", "agreement"]


_INT_COLUMNS = {"afd_ed", "afd_es", "area_ed", "area_es", "afd_ed_teacher", "afd_es_teacher"}


def _per_video_frame(records: list[dict], with_teacher: bool) -> pd.DataFrame:
    columns = VIDEO_COLUMNS + _STUDENT_COLUMNS + (_TEACHER_COLUMNS if with_teacher else [])
    columns += ["skip_reason"]
    df = pd.DataFrame.from_records(records, columns=columns)
    for c in columns:
        if c in ("FileName", "Split", "skip_reason"):
            continue
        # frame indices, frame distances and pixel counts are integers, missing when skipped
        integer = c in _INT_COLUMNS or c.endswith("_frame")
        df[c] = pd.to_numeric(df[c]).astype("Int64" if integer else np.float64)
    for c in ("n_frames", "ed_frame", "es_frame"):
        df[c] = df[c].astype(np.int64)
    df["skip_reason"] = df["skip_reason"].fillna("").astype(str)
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
        raise ValueError(f"split {split!r} of {frames.path!r} has no frames")
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


def _example_videos(frames: FrameStore, split: str, n_videos: int):
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
                threshold: float, n_videos: int = 4) -> list[AreaPanel]:
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
    teacher_area (NaN without teacher), traced ("ED"/"ES"/"")."""
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
    cols = ["step", "video", "frame", "student_area", "teacher_area", "traced"]
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)
    df.insert(0, "step", np.arange(len(df)))
    return df[cols]


def overlay_panels(frames: FrameStore, pred: MaskStore, *, teacher: MaskStore | None,
                   split: str, threshold: float, n_videos: int = 3) -> list[OverlayPanel]:
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
