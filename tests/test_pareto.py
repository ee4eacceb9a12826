import json
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echodfkd import pareto

ROOT = Path(__file__).resolve().parents[1]


def rows():
    # name, weights, flops, dice, dice_teacher_ref
    table = [("b1_l1_h4", 1_000, 2e6, 0.70, 0.72),
             ("b2_l1_h4", 5_000, 1e7, 0.80, 0.81),
             ("b2_l2_h4", 9_000, 5e6, 0.80, 0.81),   # ties b2_l1_h4: worse weights, better FLOPs
             ("b3_l3_h12", 600_000, 9e8, 0.90, 0.92),
             ("b4_l4_h12", 2_000_000, 3e9, 0.89, 0.90)]   # dominated on both
    return [{"name": n, "weights": w, "flops": f, "dice": d, "dice_teacher_ref": t,
             "afd_ed": 5 - 4 * d, "afd_ed_teacher": 5 - 4 * t, "agreement": t,
             "blocks": int(n[1]), "layers_per_block": int(n[4]), "hidden": 4}
            for n, w, f, d, t in reversed(table)]


def test_collect_sorts_and_flags():
    df = pareto.collect(rows())
    assert df["name"].tolist() == ["b1_l1_h4", "b2_l1_h4", "b2_l2_h4", "b3_l3_h12",
                                   "b4_l4_h12"]
    assert df["pareto_weights"].tolist() == [True, True, False, True, False]
    assert df["pareto_flops"].tolist() == [True, False, True, True, False]
    assert df["pareto"].tolist() == [True, True, True, True, False]
    assert df["weights"].dtype.kind in "iu" and df["dice"].dtype == np.float64


def test_collect_errors():
    r = rows()
    with pytest.raises(ValueError, match="already used"):
        pareto.collect(r + [dict(r[0], source="x.json")])
    bad = dict(r[0])
    del bad["flops"]
    with pytest.raises(ValueError, match=r"lacks keys \['flops'\]"):
        pareto.collect([bad])
    with pytest.raises(ValueError, match="weights must be a positive number, got 0"):
        pareto.collect([dict(r[0], weights=0)])
    with pytest.raises(ValueError, match="no grid points"):
        pareto.collect([])


def test_collect_none_score_is_not_optimal():
    r = rows()
    r[-1]["dice"] = None           # the cheapest point failed to score
    df = pareto.collect(r)
    assert math.isnan(df.loc[0, "dice"]) and not df.loc[0, "pareto_weights"]
    assert df.loc[1, "pareto_weights"]


def test_rank_agreement_and_summary():
    df = pareto.collect(rows())
    rho = pareto.rank_agreement(df)
    # both rank 1, 2.5, 2.5, 5, 4 (a tie in the middle): rho 1
    assert rho["rho_dice_vs_dice_teacher_ref"] == pytest.approx(1.0)
    assert rho["rho_afd_ed_vs_afd_ed_teacher"] == pytest.approx(1.0)
    assert "rho_afd_es_vs_afd_es_teacher" not in rho
    t = pareto.teacher_point({"teacher_dice": 0.92, "teacher_weights": 40_000_000,
                              "teacher_flops": 8e9, "dice": 0.5})
    assert t == {"name": "teacher", "dice": 0.92, "weights": 40_000_000, "flops": 8e9}
    s = pareto.report_summary(df, t)
    assert s["best_name"] == "b3_l3_h12" and s["best_dice"] == 0.9
    assert s["gap"] == pytest.approx(0.02) and s["n_pareto"] == 3


def test_point_record_roundtrip(tmp_path):
    rec = pareto.point_record("b1_l1_h4", blocks=1, layers_per_block=1, hidden=4,
                              weights=np.int64(1000), flops=2_000_000,
                              summary={"dice": np.float64(0.7), "ef_r": float("nan"),
                                       "unrelated": 3}, agreement_synthetic_test=0.8)
    assert rec["ef_r"] is None and "unrelated" not in rec and rec["weights"] == 1000
    pareto.write_point(tmp_path / "p" / "b1_l1_h4.json", rec)
    loaded = pareto.load_points(tmp_path / "p", ["b1_l1_h4"])
    assert loaded[0]["dice"] == 0.7 and loaded[0]["source"].endswith("b1_l1_h4.json")
    (tmp_path / "p" / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="broken.json"):
        pareto.load_points(tmp_path / "p", ["b1_l1_h4", "broken"])


def test_grid_names_and_named_points(tmp_path):
    assert pareto.grid_names([3, 4], [1], [3, 4]) == ["b3-l1-h3", "b3-l1-h4", "b4-l1-h3",
                                                      "b4-l1-h4"]
    for n in ("b1-l1-h4", "old"):
        pareto.write_point(tmp_path / f"{n}.json", {"name": n})
    assert [r["name"] for r in pareto.load_points(tmp_path, ["b1-l1-h4"])] == ["b1-l1-h4"]
    with pytest.raises(FileNotFoundError, match="b2-l1-h4.json"):
        pareto.load_points(tmp_path, ["b1-l1-h4", "b2-l1-h4"])


def _run_report(tmp_path, grid: list[str]):
    main = runpy.run_path(str(ROOT / "stages" / "pareto_report.py"))["main"]
    main(["--points", str(tmp_path / "points"), *grid,
          "--teacher-metrics", str(tmp_path / "metrics.json"),
          "--csv", str(tmp_path / "pareto.csv"), "--plot", str(tmp_path / "pareto.png"),
          "--agreement-plot", str(tmp_path / "af.png"), "--summary", str(tmp_path / "s.json")])


def test_pareto_report_stage(tmp_path, capsys):
    # The five rows() points as a grid b{1,2} x l{1,2} x h4 (b1-l2-h4 made up from b1-l1-h4)
    # plus the main student; a point left behind by an older, larger grid must be ignored.
    pts = tmp_path / "points"
    names = {"b1_l1_h4": ["b1-l1-h4", "b1-l2-h4"], "b2_l1_h4": ["b2-l1-h4"],
             "b2_l2_h4": ["b2-l2-h4"], "b3_l3_h12": ["student"], "b4_l4_h12": ["b9-l9-h9"]}
    for r in rows():
        for i, n in enumerate(names[r["name"]]):
            pareto.write_point(pts / f"{n}.json", dict(r, name=n, weights=r["weights"] + i))
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"teacher_dice": 0.92, "teacher_weights": 39_600_000, "teacher_flops": 7.8e9}))
    grid = ["--blocks", "1", "2", "--layers_per_block", "1", "2", "--hidden", "4"]
    _run_report(tmp_path, grid)
    assert "ignoring ['b9-l9-h9']" in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "pareto.csv")
    assert sorted(df["name"]) == ["b1-l1-h4", "b1-l2-h4", "b2-l1-h4", "b2-l2-h4", "student"]
    assert df["pareto_weights"].sum() == 3 and "source" not in df
    for png in ("pareto.png", "af.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["best_dice"] == 0.9 and s["teacher_dice"] == 0.92
    with pytest.raises(FileNotFoundError, match="b3-l1-h4.json"):
        _run_report(tmp_path, ["--blocks", "1", "3", "--layers_per_block", "1", "--hidden", "4"])
