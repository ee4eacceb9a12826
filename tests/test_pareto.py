import json
import logging
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from echodfkd.cli import run
from echodfkd.evaluation import pareto
from echodfkd.errors import InputError
from params import write_params

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
    with pytest.raises(InputError, match="no students"):
        pareto.collect([])


def test_collect_none_score_is_not_optimal():
    r = rows()
    r[-1]["dice"] = None           # the cheapest point failed to score
    df = pareto.collect(r)
    assert math.isnan(df.loc[0, "dice"]) and not df.loc[0, "pareto_weights"]
    assert df.loc[1, "pareto_weights"]


def test_rank_agreement_and_summary():
    df = pareto.collect(rows())
    rho, notes = pareto.rank_agreement(df)
    # both rank 1, 2.5, 2.5, 5, 4 (a tie in the middle): rho 1
    assert rho["rho_dice_vs_dice_teacher_ref"] == pytest.approx(1.0)
    assert rho["rho_afd_ed_vs_afd_ed_teacher"] == pytest.approx(1.0)
    assert "rho_afd_es_vs_afd_es_teacher" not in rho and len(notes) == 1
    t = pareto.teacher_point({"teacher_dice": 0.92, "teacher_weights": 40_000_000,
                              "teacher_flops": 8e9, "dice": 0.5})
    assert t == {"name": "teacher", "dice": 0.92, "weights": 40_000_000, "flops": 8e9}
    s, notes = pareto.report_summary(df, t, main="b2_l1_h4")
    assert s["best_student"] == "b3_l3_h12" and s["best_dice"] == 0.9
    assert s["best_weights"] == 600_000 and s["n_pareto"] == 3 and s["n_points"] == 5
    assert s["teacher_dice"] == 0.92 and s["main_dice"] == 0.8
    assert s["gap_best"] == pytest.approx(0.02) and s["gap_main"] == pytest.approx(0.12)
    assert s["rho_dice_vs_agreement"] == pytest.approx(1.0)
    with pytest.raises(InputError, match="'nobody' is not in the students table"):
        pareto.report_summary(df, t, main="nobody")


def test_summary_without_teacher_scores():
    # the evaluated source has no teacher masks: no teacher-referenced score in any point,
    # the main student's metrics have only teacher costs (or nothing) of the teacher
    plain = [{k: v for k, v in r.items() if "teacher" not in k and k != "agreement"}
             for r in rows()]
    df = pareto.collect(plain)
    assert pareto.teacher_point({"dice": 0.8, "teacher_weights": 5}) is None
    s, notes = pareto.report_summary(df, None, main="b1_l1_h4")
    assert s == {"n_points": 5, "n_pareto": 3, "best_student": "b3_l3_h12", "best_dice": 0.9,
                 "best_weights": 600_000, "main_dice": 0.7}
    assert len(notes) == 5 and "teacher_dice, gap_best and gap_main absent" in notes[0]
    assert "rho_dice_vs_dice_teacher_ref skipped: no student has 'dice_teacher_ref'" in notes[1]


def test_point_record_drops_undefined_scores(tmp_path):
    rec = pareto.point_record("b1-l1-h4", blocks=1, layers_per_block=1, hidden=4,
                              weights=np.int64(1000), flops=2_000_000,
                              summary={"dice": np.float64(0.7), "ef_r": float("nan"),
                                       "unrelated": 3}, agreement_synthetic_test=0.8)
    assert rec == {"name": "b1-l1-h4", "blocks": 1, "layers_per_block": 1, "hidden": 4,
                   "weights": 1000, "flops": 2_000_000, "dice": 0.7,
                   "agreement_synthetic_test": 0.8}
    assert type(rec["weights"]) is int and type(rec["dice"]) is float
    pareto.write_point(pareto.point_file(tmp_path, "b1-l1-h4"), rec)
    loaded = pareto.load_points(tmp_path, ["b1-l1-h4"])
    assert loaded[0]["dice"] == 0.7 and loaded[0]["source"].endswith("b1-l1-h4/point.json")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "point.json").write_text("{")
    with pytest.raises(InputError, match="broken/point.json: not valid JSON"):
        pareto.load_points(tmp_path, ["b1-l1-h4", "broken"])
    with pytest.raises(InputError, match=r"gone/point.json'\] do not exist"):
        pareto.load_points(tmp_path, ["b1-l1-h4", "gone"])
    assert pareto.stale_reports(tmp_path, ["b1-l1-h4"]) == ["broken"]


def test_check_against_table():
    r = [dict(rows()[0], name="big", source="reports/big/point.json")]
    pareto.check_against_table(r, {"big": {"blocks": "4", "hidden": "4"}})
    with pytest.raises(InputError, match="big/point.json: hidden is 4 but params.yaml says 12"):
        pareto.check_against_table(r, {"big": {"blocks": "4", "hidden": "12"}})


STUDENTS = {"student": "b3_l3_h12", "b1-l1-h4": "b1_l1_h4", "b1-l2-h4": "b1_l1_h4",
            "b2-l1-h4": "b2_l1_h4", "b2-l2-h4": "b2_l2_h4"}


def write_reports(tmp_path, teacher_metrics: dict) -> dict[str, dict]:
    """Student folders as the evaluate stages leave them (one more, 'old', for a student no
    longer in the table); returns the students table: stage name -> shape."""
    by_name = {r["name"]: r for r in rows()}
    table = {}
    for i, (n, like) in enumerate(STUDENTS.items()):
        r = dict(by_name[like], name=n, weights=by_name[like]["weights"] + i)
        pareto.write_point(pareto.point_file(tmp_path / "students", n), r)
        table[n] = {"blocks": r["blocks"], "layers_per_block": r["layers_per_block"],
                    "hidden": r["hidden"], "kernel_size": 3, "skip": False}
    pareto.write_point(pareto.point_file(tmp_path / "students", "old"),
                       dict(rows()[0], name="old"))
    (tmp_path / "students" / "student" / "metrics.json").write_text(json.dumps(
        {"dice": 0.9, **teacher_metrics}))
    return table


def write_table(folder, table: dict[str, dict]) -> None:
    """``<folder>/params.yaml``: the project's, with the students table replaced by ``table``
    (the main ``student`` in ``student``, the others as ``grid`` rows)."""
    path = write_params(folder)
    values = yaml.safe_load(path.read_text())
    values["student"] = table.get("student", values["student"])
    values["grid"] = {n: shape for n, shape in table.items() if n != "student"}
    values["students"] = {n: "student" if n == "student" else f"grid.{n}" for n in table}
    path.write_text(yaml.safe_dump(values, sort_keys=False))


def run_report(tmp_path, monkeypatch, table: dict[str, dict], runner=None):
    write_table(tmp_path, table)
    monkeypatch.chdir(tmp_path)
    main = runpy.run_path(str(ROOT / "stages" / "pareto_report.py"))["main"]
    argv = ["--reports", str(tmp_path / "students"), "--main", "student",
            "--csv", str(tmp_path / "pareto.csv"), "--plot", str(tmp_path / "pareto.png"),
            "--agreement-plot", str(tmp_path / "af.png"), "--summary", str(tmp_path / "s.json"),
            "--index", str(tmp_path / "index.html")]
    return runner(main, argv) if runner else main(argv)


def test_pareto_report_stage(tmp_path, caplog, monkeypatch):
    table = write_reports(tmp_path, {"teacher_dice": 0.92, "teacher_weights": 39_600_000,
                                     "teacher_flops": 7.8e9})
    caplog.set_level(logging.INFO)
    run_report(tmp_path, monkeypatch, table)
    assert "ignoring ['old']" in caplog.text
    df = pd.read_csv(tmp_path / "pareto.csv")
    assert sorted(df["name"]) == sorted(STUDENTS)
    assert df["pareto_weights"].sum() == 3 and "source" not in df
    for png in ("pareto.png", "af.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    s = json.loads((tmp_path / "s.json").read_text())
    assert (s["best_student"], s["best_dice"], s["teacher_dice"]) == ("student", 0.9, 0.92)
    assert s["gap_best"] == pytest.approx(0.02) and s["gap_main"] == pytest.approx(0.02)
    assert s["rho_dice_vs_dice_teacher_ref"] == pytest.approx(1.0)
    page = (tmp_path / "index.html").read_text()   # front page: plots and links, relative
    assert 'src="pareto.png"' in page and 'src="af.png"' in page
    assert all(f'href="students/{n}/index.html"' in page for n in STUDENTS)
    # a student in the table without a report
    b9 = {"blocks": 9, "layers_per_block": 9, "hidden": 9, "kernel_size": 3, "skip": False}
    with pytest.raises(InputError, match="b9-l9-h9/point.json"):
        run_report(tmp_path, monkeypatch, {**table, "b9-l9-h9": b9})
    # the table changed a student after its report was written
    with pytest.raises(InputError, match="hidden is 4 but params.yaml says 8"):
        run_report(tmp_path, monkeypatch, {n: dict(shape, hidden=8 if shape["hidden"] == 4
                                                   else shape["hidden"])
                                           for n, shape in table.items()})
    # the main student is not in the table
    with pytest.raises(InputError, match=r"--main 'student' is not in params.yaml students"):
        run_report(tmp_path, monkeypatch, {n: s for n, s in table.items() if n != "student"})


@pytest.mark.parametrize("row, message", [
    ({"blocks": 0}, "params.yaml: grid.b0-l1-h2: blocks must be >= 1, got 0"),
    ({"kernel_size": 2}, "params.yaml: grid.b0-l1-h2: kernel_size must be odd, got 2"),
    ({"hidden": "2"}, "params.yaml: grid.b0-l1-h2.hidden must be an integer, got '2'"),
    ({"skip": None}, "params.yaml: grid.b0-l1-h2.skip must be true or false, got None"),
])
def test_pareto_report_stage_bad_row_is_named(tmp_path, monkeypatch, capsys, row, message):
    table = write_reports(tmp_path, {})
    table["b0-l1-h2"] = {"blocks": 1, "layers_per_block": 1, "hidden": 2, "kernel_size": 3,
                         "skip": False, **row}
    with pytest.raises(SystemExit) as exit:
        run_report(tmp_path, monkeypatch, table, runner=run)
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "pareto.csv").exists() and not (tmp_path / "s.json").exists()


def test_pareto_report_stage_without_teacher_scores(tmp_path, caplog, monkeypatch):
    table = write_reports(tmp_path, {})
    for n in STUDENTS:      # the evaluated source had no teacher masks
        f = pareto.point_file(tmp_path / "students", n)
        r = json.loads(f.read_text())
        pareto.write_point(f, {k: v for k, v in r.items()
                               if "teacher" not in k and k != "agreement"})
    caplog.set_level(logging.INFO)
    run_report(tmp_path, monkeypatch, table)
    s = json.loads((tmp_path / "s.json").read_text())
    assert not [k for k in s if "teacher" in k or "gap" in k or k.startswith("rho_")]
    assert s["main_dice"] == 0.9 and s["best_student"] == "student"
    assert "rho_dice_vs_agreement skipped" in caplog.text
    assert (tmp_path / "af.png").read_bytes()[:4] == b"\x89PNG"
