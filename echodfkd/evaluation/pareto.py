"""Pareto report over the students of the ``students:`` table of params.yaml.

Each student's evaluate stage leaves ``<reports>/<name>/point.json`` (see
:func:`point_record`), e.g. ``{"name": "b3-l1-h3", "blocks": 3, "layers_per_block": 1,
"hidden": 3, "weights": 44995, "flops": 60000000, "dice": 0.91, "dice_ed": ..., "dice_es": ...,
"afd_ed": ..., "afd_es": ..., "ef_r": ..., "dice_teacher_ref": ..., "afd_ed_teacher": ...,
"agreement_real_test": ..., ...}``; weights are trainable parameters, flops are per 112x112
frame, Dice in [0, 1], aFD in frames. Undefined scores, and the teacher-referenced ones of a
source without teacher masks, are absent keys.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from echodfkd.evaluation import metrics as M
from echodfkd.errors import InputError

REQUIRED = ("name", "weights", "flops", "dice")
ARCH = ("blocks", "layers_per_block", "hidden")
# Score keys copied from an evaluate_source summary into a point record.
POINT_SCORES = ("dice", "dice_ed", "dice_es", "afd", "afd_ed", "afd_es", "ef_r", "ef_mae",
                "ef_area_r", "ef_area_mae", "agreement", "dice_teacher_ref",
                "dice_ed_teacher_ref", "dice_es_teacher_ref", "afd_teacher", "afd_ed_teacher",
                "afd_es_teacher", "n_videos")
# (human-referenced, model-referenced) score pairs whose ranks across students should agree.
DEFAULT_PAIRS = (("dice", "dice_teacher_ref"), ("dice", "agreement"),
                 ("afd_ed", "afd_ed_teacher"), ("afd_es", "afd_es_teacher"))


def _defined(v) -> bool:
    return v is not None and not (isinstance(v, (float, np.floating)) and not math.isfinite(v))


def point_record(name: str, *, blocks: int, layers_per_block: int, hidden: int, weights: int,
                 flops: int, summary: dict, **extra) -> dict:
    """The JSON record of one student: architecture, cost and the scores of ``summary``
    (an :func:`echodfkd.evaluation.evaluate.evaluate_source` summary; keys in ``POINT_SCORES``).
    ``extra`` adds further flat keys (e.g. ``agreement_synthetic_test``). Undefined (NaN or
    None) scores are left out: an absent key, never a NaN."""
    rec = {"name": str(name), "blocks": int(blocks), "layers_per_block": int(layers_per_block),
           "hidden": int(hidden), "weights": int(weights), "flops": int(flops)}
    for k in POINT_SCORES:
        if k in summary:
            rec[k] = summary[k]
    rec.update(extra)
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()
            if _defined(v)}


def write_point(path: str | os.PathLike, record: dict) -> None:
    """Write a point record as JSON atomically."""
    from echodfkd.data.store import write_text_atomic
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def point_file(reports: str | os.PathLike, name: str) -> Path:
    """``<reports>/<name>/point.json``, where the evaluate stage of student ``name`` writes."""
    return Path(reports) / name / "point.json"


def stale_reports(reports: str | os.PathLike, names: list[str]) -> list[str]:
    """Sub-folders of ``reports`` that are not named in ``names`` (reports of students no
    longer in the table, which DVC leaves on disk), sorted."""
    d = Path(reports)
    return sorted(p.name for p in d.iterdir() if p.is_dir() and p.name not in names) \
        if d.is_dir() else []


def load_points(reports: str | os.PathLike, names: list[str]) -> list[dict]:
    """Read :func:`point_file` of each of ``names`` (all must exist), in that order; each dict
    gets ``source`` (its file). A missing or malformed file raises :class:`InputError`."""
    files = [point_file(reports, n) for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise InputError(f"student reports {missing} do not exist: run their evaluate stages "
                         f"(dvc repro) or remove the students from params.yaml")
    rows = []
    for n, f in zip(names, files):
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{f}: not valid JSON ({e}): rerun evaluate@{n}") from e
        if not isinstance(d, dict):
            raise InputError(f"{f}: expected a JSON object, got {type(d).__name__}: "
                             f"rerun evaluate@{n}")
        if d.get("name") != n:
            raise InputError(f"{f}: its record is named {d.get('name')!r}, not {n!r}: "
                             f"rerun evaluate@{n}")
        d.setdefault("source", str(f))
        rows.append(d)
    return rows


def check_against_table(rows: list[dict], students: dict[str, dict]) -> None:
    """Raise :class:`InputError` when a point's architecture (:data:`ARCH`) disagrees with the
    students table (a stale report): the message names the file, key and both values."""
    for r in rows:
        want = students.get(r["name"], {})
        for k in ARCH:
            if k in want and k in r and str(r[k]) != str(want[k]):
                raise InputError(f"{r.get('source')}: {k} is {r[k]} but params.yaml says "
                                 f"{want[k]} for student {r['name']!r}: rerun "
                                 f"evaluate@{r['name']} (dvc repro)")


def collect(rows: list[dict], *, score: str = "dice") -> pd.DataFrame:
    """One row per student (point record), sorted by weights then name, with Pareto flags.

    Checks each row has ``REQUIRED`` keys with finite positive weights/FLOPs and unique names
    (errors quote the row's name and ``source``). Adds bool columns ``pareto_weights``
    (optimal for minimal weights / maximal ``score``), ``pareto_flops`` (same with FLOPs) and
    ``pareto`` (optimal for weights and FLOPs jointly). A NaN/None score is never optimal.
    """
    if not rows:
        raise InputError("no students to collect: the students table of params.yaml is empty")
    seen: dict[str, str] = {}
    for r in rows:
        where = f"student {r.get('name', '?')!r} ({r.get('source', 'no file')})"
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise InputError(f"{where} lacks keys {missing}: rerun its evaluate stage")
        for k in ("weights", "flops"):
            v = r[k]
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{where}: {k} must be a positive number, got {v!r}")
        name = str(r["name"])
        if name in seen:
            raise InputError(f"{where}: name {name!r} already used by {seen[name]}")
        seen[name] = str(r.get("source", "no file"))
    df = pd.DataFrame.from_records(rows)
    df["name"] = df["name"].astype(str)
    if score not in df:
        raise InputError(f"score {score!r} not in the point records' keys {sorted(df.columns)}")
    numeric = [c for c in df.columns if c not in ("name", "source")]
    for c in numeric:
        converted = pd.to_numeric(df[c], errors="coerce")
        if converted.notna().sum() == df[c].notna().sum():  # leave text columns alone
            df[c] = converted
    first = ["name", *ARCH, "weights", "flops", *POINT_SCORES]
    df = df[[c for c in first if c in df] + sorted(c for c in df if c not in first)]
    df = df.sort_values(["weights", "name"], kind="stable").reset_index(drop=True)
    s = df[score].to_numpy(np.float64)
    df["pareto_weights"] = M.pareto_front(df["weights"], s)
    df["pareto_flops"] = M.pareto_front(df["flops"], s)
    df["pareto"] = M.pareto_front(df[["weights", "flops"]].to_numpy(np.float64), s)
    return df


def rank_agreement(df: pd.DataFrame, pairs=DEFAULT_PAIRS) -> tuple[dict[str, float], list[str]]:
    """Spearman rho across students between each human-referenced score and its
    model-referenced counterpart: ``({"rho_<human>_vs_<model>": rho}, notes)``. A pair is
    left out, with a note saying why, when its columns are absent (no student has a
    teacher-referenced score: the evaluated source has no teacher masks) or fewer than 2
    students have both values."""
    out, notes = {}, []
    for h, m in pairs:
        if h not in df or m not in df or df[m].isna().all():
            notes.append(f"rho_{h}_vs_{m} skipped: no student has {m!r} (the evaluated source "
                         f"has no teacher masks)" if h in df else
                         f"rho_{h}_vs_{m} skipped: no student has {h!r}")
            continue
        rho = M.spearman_rho(df[h], df[m])
        if math.isfinite(rho):
            out[f"rho_{h}_vs_{m}"] = rho
        else:
            notes.append(f"rho_{h}_vs_{m} undefined: fewer than 2 students with both scores, "
                         f"or one side constant")
    return out, notes


def teacher_point(metrics: dict, prefix: str = "teacher_") -> dict | None:
    """The teacher's reference point ``{"name": "teacher", "weights", "flops", <scores>}``
    from an evaluate-stage metrics dict whose teacher keys carry ``prefix``; None when it has
    no teacher score (the teacher does not cover the evaluated source)."""
    out = {"name": "teacher"}
    for k, v in metrics.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out if set(out) - {"name", "weights", "flops"} else None


def read_teacher_point(metrics_file: str | os.PathLike) -> dict | None:
    """:func:`teacher_point` of the main student's ``metrics.json`` (a missing file is a
    ``FileNotFoundError``, a malformed one an :class:`InputError` naming it)."""
    path = Path(metrics_file)
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e}): rerun its evaluate stage") from e
    if not isinstance(d, dict):
        raise InputError(f"{path}: expected a JSON object: rerun its evaluate stage")
    return teacher_point(d)


def report_summary(df: pd.DataFrame, teacher: dict | None, *, main: str,
                   score: str = "dice", pairs=DEFAULT_PAIRS) -> tuple[dict, list[str]]:
    """Flat summary of a :func:`collect` table and its notes (why keys are absent).

    Keys: n_points, n_pareto (optimal for weights), best_student, best_<score>, best_weights,
    main_<score> (student ``main``), and with a teacher score teacher_<score>, gap_best
    (teacher minus best student) and gap_main (teacher minus main student), then the rank
    correlations of :func:`rank_agreement`. Undefined values are absent keys.
    """
    notes = []
    s = df[score].to_numpy(np.float64)
    ok = np.isfinite(s)
    out: dict = {"n_points": int(len(df)), "n_pareto": int(df["pareto_weights"].sum())}
    if ok.any():
        best = int(np.flatnonzero(ok)[np.argmax(s[ok])])
        out.update({"best_student": str(df["name"].iloc[best]), f"best_{score}": float(s[best]),
                    "best_weights": int(df["weights"].iloc[best])})
    main_rows = np.flatnonzero(df["name"].to_numpy() == main)
    if not main_rows.size:
        raise InputError(f"main student {main!r} is not in the students table "
                         f"{df['name'].tolist()}: fix --main / params.yaml")
    main_score = float(s[main_rows[0]])
    if math.isfinite(main_score):
        out[f"main_{score}"] = main_score
    t = teacher.get(score) if teacher else None
    if t is not None and math.isfinite(float(t)):
        out[f"teacher_{score}"] = float(t)
        if f"best_{score}" in out:
            out["gap_best"] = float(t) - out[f"best_{score}"]
        if f"main_{score}" in out:
            out["gap_main"] = float(t) - out[f"main_{score}"]
    else:
        notes.append(f"teacher_{score}, gap_best and gap_main absent: the main student's "
                     f"metrics.json has no teacher_{score} (no teacher masks on the evaluated "
                     f"source)")
    rho, rho_notes = rank_agreement(df, pairs)
    out.update(rho)
    return out, notes + rho_notes
