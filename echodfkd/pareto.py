"""Pareto report over a grid of student sizes.

Each grid point leaves one small JSON file (see :func:`point_record`), e.g.
``{"name": "b3_l3_h12", "blocks": 3, "layers_per_block": 3, "hidden": 12, "weights": 612345,
"flops": 123456789, "dice": 0.91, "dice_ed": ..., "dice_es": ..., "afd_ed": ..., "afd_es": ...,
"agreement": ..., "dice_teacher_ref": ..., "afd_ed_teacher": ..., ...}``; weights are trainable
parameters, flops are per 112x112 frame, Dice in [0, 1], aFD in frames.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics as M

REQUIRED = ("name", "weights", "flops", "dice")
ARCH = ("blocks", "layers_per_block", "hidden")
# Score keys copied from an evaluate_source summary into a point record.
POINT_SCORES = ("dice", "dice_ed", "dice_es", "afd", "afd_ed", "afd_es", "ef_r", "ef_mae",
                "agreement", "dice_teacher_ref", "dice_ed_teacher_ref", "dice_es_teacher_ref",
                "afd_teacher", "afd_ed_teacher", "afd_es_teacher", "n_videos")
# (human-referenced, model-referenced) score pairs whose ranks across students should agree.
DEFAULT_PAIRS = (("dice", "dice_teacher_ref"), ("dice", "agreement"),
                 ("afd_ed", "afd_ed_teacher"), ("afd_es", "afd_es_teacher"))


def point_record(name: str, *, blocks: int, layers_per_block: int, hidden: int, weights: int,
                 flops: int, summary: dict, **extra) -> dict:
    """The JSON record of one grid point: architecture, cost and the scores of ``summary``
    (an :func:`echodfkd.evaluate.evaluate_source` summary; keys in ``POINT_SCORES``), NaN as
    None. ``extra`` adds further flat keys (e.g. ``agreement_synthetic_test``)."""
    rec = {"name": str(name), "blocks": int(blocks), "layers_per_block": int(layers_per_block),
           "hidden": int(hidden), "weights": int(weights), "flops": int(flops)}
    for k in POINT_SCORES:
        if k in summary:
            rec[k] = summary[k]
    rec.update(extra)
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else
                v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}


def write_point(path: str | os.PathLike, record: dict) -> None:
    """Write a point record as JSON atomically."""
    from .store import write_text_atomic
    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def grid_names(blocks: list[int], layers_per_block: list[int], hidden: list[int]) -> list[str]:
    """Names of the grid points ``b<blocks>-l<layers>-h<hidden>`` (as ``dvc.yaml`` names the
    ``pareto`` matrix stages), in grid order."""
    return [f"b{b}-l{l}-h{h}" for b in blocks for l in layers_per_block for h in hidden]


def load_points(directory: str | os.PathLike, names: list[str]) -> list[dict]:
    """Read ``<name>.json`` from ``directory`` for each of ``names`` (all must exist), in that
    order; each dict gets ``source`` (its file)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"points directory {str(directory)!r} does not exist")
    files = [directory / f"{n}.json" for n in names]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"grid points {missing} do not exist: run their stages "
                                f"(dvc repro) or remove them from the grid")
    rows = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise ValueError(f"{f}: expected a JSON object, got {type(d).__name__}")
        d.setdefault("source", str(f))
        rows.append(d)
    return rows


def collect(rows: list[dict], *, score: str = "dice") -> pd.DataFrame:
    """One row per grid point, sorted by weights then name, with Pareto flags.

    Checks each row has ``REQUIRED`` keys with finite positive weights/FLOPs and unique names
    (errors quote the row's name and ``source``). Adds bool columns ``pareto_weights``
    (optimal for minimal weights / maximal ``score``), ``pareto_flops`` (same with FLOPs) and
    ``pareto`` (optimal for weights and FLOPs jointly). A NaN/None score is never optimal.
    """
    if not rows:
        raise ValueError("no grid points to collect")
    seen: dict[str, str] = {}
    for r in rows:
        where = f"grid point {r.get('name', '?')!r} ({r.get('source', 'no file')})"
        missing = [k for k in REQUIRED if k not in r]
        if missing:
            raise ValueError(f"{where} lacks keys {missing}")
        for k in ("weights", "flops"):
            v = r[k]
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{where}: {k} must be a positive number, got {v!r}")
        name = str(r["name"])
        if name in seen:
            raise ValueError(f"{where}: name {name!r} already used by {seen[name]}")
        seen[name] = str(r.get("source", "no file"))
    df = pd.DataFrame.from_records(rows)
    df["name"] = df["name"].astype(str)
    if score not in df:
        raise ValueError(f"score {score!r} not in the grid points' keys {sorted(df.columns)}")
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


def rank_agreement(df: pd.DataFrame, pairs=DEFAULT_PAIRS) -> dict[str, float]:
    """Spearman rho across students between each human-referenced score and its
    model-referenced counterpart: ``{"rho_<human>_vs_<model>": rho}`` (pairs with a missing
    column are left out; NaN when fewer than 2 students have both)."""
    return {f"rho_{h}_vs_{m}": M.spearman_rho(df[h], df[m])
            for h, m in pairs if h in df and m in df}


def teacher_point(metrics: dict, prefix: str = "teacher_") -> dict:
    """The teacher's reference point ``{"name": "teacher", "weights", "flops", <scores>}``
    from an evaluate-stage metrics dict whose teacher keys carry ``prefix``."""
    out = {"name": "teacher"}
    for k, v in metrics.items():
        if k.startswith(prefix):
            out[k[len(prefix):]] = v
    return out


def report_summary(df: pd.DataFrame, teacher: dict | None, *, score: str = "dice",
                   pairs=DEFAULT_PAIRS) -> dict:
    """Flat summary: n_points, n_pareto, best_<score> and its weights, teacher_<score>,
    gap (teacher minus best student score) and the rank correlations of
    :func:`rank_agreement`. NaN where undefined."""
    s = df[score].to_numpy(np.float64)
    ok = np.isfinite(s)
    best = int(np.flatnonzero(ok)[np.argmax(s[ok])]) if ok.any() else None
    t = teacher.get(score) if teacher else None
    t = float(t) if t is not None else math.nan
    best_score = float(s[best]) if best is not None else math.nan
    out = {"n_points": int(len(df)), "n_pareto": int(df["pareto_weights"].sum()),
           f"best_{score}": best_score,
           "best_weights": int(df["weights"].iloc[best]) if best is not None else None,
           "best_name": str(df["name"].iloc[best]) if best is not None else None,
           f"teacher_{score}": t, "gap": t - best_score}
    out.update(rank_agreement(df, pairs))
    return out
