import json
import logging
import math
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echodfkd.evaluation import evaluate as E
from echodfkd.evaluation import metrics as M
from echodfkd.data import store
from echodfkd.errors import InputError
from echodfkd.data.store import open_frames, write_uncovered_masks
from echodfkd.cli import run
from params import write_params

ROOT = Path(__file__).resolve().parents[1]
T = 32
LIMITS = E.CollapseLimits(empty=0.05, area_ratio=2.0, drift=2.0)
YY, XX = np.mgrid[:112, :112]


def disk(r: float) -> np.ndarray:
    return (YY - 56) ** 2 + (XX - 56) ** 2 <= r * r


def radii(t, amp: float = 8.0) -> np.ndarray:
    """Radius per frame: maxima (ED) at t = 0, 16, minima (ES) at t = 8, 24."""
    return 20 + amp * np.cos(2 * np.pi * np.asarray(t) / 16)


def build_source(path, videos: list[dict]):
    """Frame store with one disk-shaped 'LV' per frame. Each video dict: name, split, amp,
    n (frames), tracings [(phase, frame)] (frames may lie outside the video), EF."""
    starts = np.cumsum([0] + [v["n"] for v in videos])
    index = pd.DataFrame({
        "FileName": [v["name"] for v in videos], "Split": [v["split"] for v in videos],
        "start": starts[:-1], "stop": starts[1:], "FPS": 50.0,
        "EF": [v.get("EF", np.nan) for v in videos], "ESV": 0.0, "EDV": 0.0,
        "FrameHeight": 112, "FrameWidth": 112, "NumberOfFrames": [v["n"] for v in videos]})
    traced_rows = [(v["name"], i, f, ph) for i, v in enumerate(videos)
                   for ph, f in v.get("tracings", [])]
    traced = pd.DataFrame(traced_rows, columns=["FileName", "video", "frame", "phase"])
    traced["row"] = np.arange(len(traced))
    g = store.init_frame_store(path, index, len(traced), with_gt=True, chunk_frames=8,
                               shard_frames=16)
    gt = np.concatenate([np.stack([disk(r) for r in radii(np.arange(v["n"]), v["amp"])])
                         for v in videos]).astype(np.uint8)
    g["gt_masks"][:] = gt
    g["frames"][:] = gt * 150 + 30
    for r in traced.itertuples():
        amp = videos[r.video]["amp"]
        g["traced_masks"][r.row] = disk(radii(r.frame, amp)).astype(np.uint8)
    store.finish_frame_store(g, index, traced)
    return store.open_frames(path)


def write_masks(path, frames, masks: np.ndarray, **attrs):
    g = store.init_mask_store(path, frames, chunk_frames=8, shard_frames=16, **attrs)
    g["masks"][:] = masks
    g.attrs["complete"] = True
    return store.open_masks(path, frames)


def student_and_gt_teacher(source, tmp_path, student_masks: np.ndarray | None = None):
    """Mask stores (student, teacher): the student's ``student_masks`` (default: the ground
    truth) and a teacher that is the ground truth."""
    gt = np.asarray(source.gt_masks[:]) * 255
    student = gt if student_masks is None else student_masks
    return (write_masks(tmp_path / "s.zarr", source, student),
            write_masks(tmp_path / "t.zarr", source, gt))


def area_ef(amp):
    r = radii([16, 24], amp)
    return M.ef_from_areas(disk(r[0]).sum(), disk(r[1]).sum())


def volume_ef(amp):
    """Area-length EF of the disks at ED / ES: a disk of radius r is a sphere's section
    (V = 4/3 pi r^3), so about 100 (1 - (r_ES / r_ED)^3)."""
    r = radii([16, 24], amp)
    return M.ef_from_volumes(M.lv_geometry(disk(r[0]))[2], M.lv_geometry(disk(r[1]))[2])


VIDEOS = [   # FileList EF = the volume EF of the true disks
    {"name": "a", "split": "TEST", "amp": 8.0, "n": T, "tracings": [("ED", 16), ("ES", 24)],
     "EF": volume_ef(8.0)},
    {"name": "b", "split": "TEST", "amp": 5.0, "n": T, "tracings": [("ES", 8), ("ED", 0)],
     "EF": volume_ef(5.0)},
    {"name": "c", "split": "TEST", "amp": 6.0, "n": T, "tracings": []},                # skip
    {"name": "d", "split": "TEST", "amp": 6.0, "n": T, "tracings": [("ED", 0), ("ES", 40)]},
    {"name": "e", "split": "TRAIN", "amp": 6.0, "n": T, "tracings": [("ED", 0), ("ES", 8)]},
]


@pytest.fixture
def source(tmp_path):
    return build_source(tmp_path / "real.zarr", VIDEOS)


def shifted(frames, lag: int) -> np.ndarray:
    """Masks of each video delayed by ``lag`` frames (the disk of frame t - lag)."""
    out = []
    for v in VIDEOS:
        out.append(np.stack([disk(r) for r in radii(np.arange(v["n"]) - lag, v["amp"])]))
    return (np.concatenate(out) * 255).astype(np.uint8)


def test_perfect_prediction(source, tmp_path):
    pred, teacher = student_and_gt_teacher(source, tmp_path)
    df, s = E.evaluate_source(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    assert list(df["FileName"]) == ["a", "b", "c", "d"]
    assert s["n_videos"] == 2 and s["n_skipped"] == 2 and s["n_frames"] == 4 * T
    assert s["dice_ed"] == s["dice_es"] == s["dice"] == 1.0
    assert s["afd_ed"] == s["afd_es"] == 0.0
    assert s["ef_mae"] == pytest.approx(0.0, abs=1e-9)
    assert s["ef_r"] == pytest.approx(1.0)
    assert s["tracing_ef_mae"] == pytest.approx(0.0, abs=1e-9)   # tracings = the same disks
    # area EF of the same masks: biased low, by |area EF - volume EF| per video
    gap = np.mean([volume_ef(8.0) - area_ef(8.0), volume_ef(5.0) - area_ef(5.0)])
    assert s["ef_area_mae"] == pytest.approx(gap) and gap > 10
    assert s["ef_area_r"] == pytest.approx(1.0)
    assert s["agreement"] == 1.0
    assert s["dice_teacher_ref"] == 1.0
    assert s["afd_ed_teacher"] == s["afd_es_teacher"] == 0.0
    row = df.set_index("FileName").loc["b"]
    assert (row.ed_frame, row.es_frame, row.pred_ed_frame, row.pred_es_frame) == (0, 8, 0, 8)
    a = df.set_index("FileName").loc["a"]
    # video a: r = 28 px at ED, 12 px at ES. The disks include the pixel centres at distance
    # exactly r, so L = 2r + 1 (57, 25); V = 8 A^2 / (3 pi L), near the sphere's 4/3 pi r^3
    assert a.length_ed == pytest.approx(57.0) and a.length_es == pytest.approx(25.0)
    assert a.edv == pytest.approx(8 * disk(28).sum() ** 2 / (3 * math.pi * 57))
    assert a.edv == pytest.approx(4 / 3 * math.pi * 28 ** 3, rel=0.03)
    assert a.esv == pytest.approx(8 * disk(12).sum() ** 2 / (3 * math.pi * 25))
    assert a.ef_pred == pytest.approx(100 * (1 - a.esv / a.edv))
    assert a.ef_pred == pytest.approx(100 * (1 - (12 / 28) ** 3), abs=1.5)   # 92.1
    assert a.ef_area_pred == pytest.approx(area_ef(8.0))


def test_shifted_prediction_known_values(source, tmp_path):
    pred, teacher = student_and_gt_teacher(source, tmp_path, shifted(source, 2))
    df, s = E.evaluate_source(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    a = df.set_index("FileName").loc["a"]
    # student peaks at 18 (ED) and dips at 26 (ES): two frames late
    assert (a.pred_ed_frame, a.pred_es_frame, a.afd_ed, a.afd_es) == (18, 26, 2, 2)
    # concentric disks: Dice = 2 |small| / (|small| + |big|)
    big, small = disk(radii(16, 8.0)).sum(), disk(radii(14, 8.0)).sum()
    assert a.dice_ed == pytest.approx(2 * small / (small + big))
    assert a.dice_ed_teacher_ref == a.dice_ed          # the teacher is the ground truth here
    # teacher's own references: global argmax 0 / argmin 8; the student finds 2 and 10
    assert (a.teacher_ref_ed_frame, a.teacher_ref_es_frame) == (0, 8)
    assert (a.afd_ed_teacher, a.afd_es_teacher) == (2, 2)
    assert s["afd_ed"] == s["afd_es"] == 2.0
    assert s["afd_ed_teacher"] == 2.0      # also over the videos skipped for tracings
    assert 0.5 < s["agreement"] < 1.0
    assert s["dice"] == pytest.approx(np.mean(list(df["dice_ed"].dropna())
                                              + list(df["dice_es"].dropna())))


def test_skip_reasons(source, tmp_path):
    pred = write_masks(tmp_path / "s.zarr", source, np.asarray(source.gt_masks[:]) * 255)
    df, _ = E.evaluate_source(source, pred, teacher=None, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    reasons = df.set_index("FileName")["skip_reason"]
    assert reasons["a"] == reasons["b"] == ""
    assert reasons["c"] == "no tracings"
    assert "ES traced frame 40 outside the video" in reasons["d"]
    assert df.set_index("FileName").loc[["c", "d"], "dice_ed"].isna().all()
    assert "agreement" not in df


def test_evaluation_only_source_has_no_teacher_keys(source, tmp_path):
    pred = write_masks(tmp_path / "s.zarr", source, shifted(source, 1))
    df, s = E.evaluate_source(source, pred, teacher=None, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    assert {"dice_ed", "dice_es", "ef_r", "ef_area_r", "afd_es"} <= set(s)
    assert not [k for k in s if "teacher" in k or k.startswith("agreement")]
    assert not [c for c in df if "teacher" in c or c == "agreement"]
    panels = E.area_panels(source, pred, teacher=None, split="TEST", threshold=0.5,
                           n_videos=4)
    assert "teacher_area" not in E.area_curves_table(panels)


def test_ambiguous_and_missing_phase_skipped(tmp_path):
    vids = [{"name": "x", "split": "TEST", "amp": 8.0, "n": T,
             "tracings": [("ED", 0), ("ED", 16), ("ES", 8)]},
            {"name": "y", "split": "TEST", "amp": 8.0, "n": T, "tracings": [("ED", 0)]},
            {"name": "z", "split": "TEST", "amp": 8.0, "n": T,
             "tracings": [("ED", 0), ("ES", 8)]}]
    fs = build_source(tmp_path / "f.zarr", vids)
    pred = write_masks(tmp_path / "s.zarr", fs, np.asarray(fs.gt_masks[:]) * 255)
    df, s = E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    reasons = df.set_index("FileName")["skip_reason"]
    assert reasons["x"] == "ED traced on several frames [0, 16]"
    assert reasons["y"] == "no ES tracing"
    assert s["n_videos"] == 1 and s["dice"] == 1.0
    assert np.isnan(s["ef_r"])                  # one video: correlation undefined


def test_all_skipped_is_an_error(tmp_path):
    fs = build_source(tmp_path / "f.zarr", [{"name": "x", "split": "TEST", "amp": 8.0,
                                             "n": T, "tracings": []}])
    pred = write_masks(tmp_path / "s.zarr", fs, np.zeros((T, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="no tracings"):
        E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0.5,
                          collapse=LIMITS, progress=False)
    with pytest.raises(ValueError, match="VAL"):
        E.evaluate_source(fs, pred, teacher=None, split="VAL", threshold=0.5,
                          collapse=LIMITS, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0,
                          collapse=LIMITS, progress=False)


def test_misaligned_prediction_is_an_error(source, tmp_path):
    other = build_source(tmp_path / "other.zarr", VIDEOS[:2])
    wrong = write_masks(tmp_path / "w.zarr", other, np.zeros((2 * T, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="frames"):
        E.evaluate_source(source, wrong, teacher=None, split="TEST", threshold=0.5,
                          collapse=LIMITS, progress=False)
    # same frame count, other fingerprint
    renamed = [dict(v, name=v["name"] + "_x") for v in VIDEOS]
    other2 = build_source(tmp_path / "other2.zarr", renamed)
    wrong2 = write_masks(tmp_path / "w2.zarr", other2, np.zeros((5 * T, 112, 112), np.uint8))
    good = write_masks(tmp_path / "g.zarr", source, np.zeros((5 * T, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="made for frames"):
        E.evaluate_source(source, good, teacher=wrong2, split="TEST", threshold=0.5,
                          collapse=LIMITS, progress=False)


def test_prediction_for_other_splits_only_is_an_error(source, tmp_path):
    partial = write_masks(tmp_path / "p.zarr", source, source.gt_masks[:], splits=["VAL"])
    with pytest.raises(ValueError, match=r"splits \['VAL'\] only, not 'TEST'"):
        E.evaluate_source(source, partial, teacher=None, split="TEST", threshold=0.5,
                          collapse=LIMITS, progress=False)


def test_evaluate_agreement(source, tmp_path):
    gt = np.asarray(source.gt_masks[:]) * 255
    teacher = write_masks(tmp_path / "t.zarr", source, gt)
    same = write_masks(tmp_path / "s.zarr", source, gt)
    df, s = E.evaluate_agreement(source, same, teacher, "TEST", 0.5, progress=False)
    assert s == {"agreement": 1.0, "n_videos": 4, "n_frames": 4 * T}
    # student empty on the first video's frames only: 32 of 128 frames score 0
    half = gt.copy()
    half[:T] = 0
    part = write_masks(tmp_path / "p.zarr", source, half)
    df, s = E.evaluate_agreement(source, part, teacher, "TEST", 0.5, progress=False)
    assert s["agreement"] == pytest.approx(3 / 4)
    assert df["agreement"].tolist() == [0.0, 1.0, 1.0, 1.0]


def test_merge_and_json_ready(source, tmp_path):
    pred, teacher = student_and_gt_teacher(source, tmp_path, shifted(source, 1))
    sdf, _ = E.evaluate_source(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                               collapse=LIMITS, progress=False)
    tdf, ts = E.evaluate_source(source, teacher, teacher=None, split="TEST", threshold=0.5,
                                collapse=LIMITS, progress=False)
    m = E.merge_per_video(sdf, tdf)
    assert len(m) == 4 and "teacher_dice_ed" in m and "dice_ed" in m
    assert "teacher_ed_frame" not in m and (m["teacher_dice_ed"].dropna() == 1.0).all()
    j = E.json_ready({"a": np.float64("nan"), "b": np.int64(3), "c": 0.5})
    assert j == {"a": None, "b": 3, "c": 0.5}
    assert json.loads(json.dumps(E.prefixed(ts, "teacher_", ["dice"]))) == {"teacher_dice": 1.0}


def test_panels_and_curve_table(source, tmp_path):
    pred, teacher = student_and_gt_teacher(source, tmp_path, shifted(source, 2))
    gt = np.asarray(teacher.masks[:])
    panels = E.area_panels(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                           n_videos=5)
    assert [p.name for p in panels] == ["a", "b"]          # only scorable videos
    assert panels[0].human == {"ED": 16, "ES": 24}
    assert panels[0].student_found == {"ED": 18, "ES": 26}
    assert panels[0].teacher_found == {"ED": 16, "ES": 24}
    table = E.area_curves_table(panels)
    assert len(table) == 2 * T and table["step"].tolist() == list(range(2 * T))
    assert table.loc[16, "traced"] == "ED" and table.loc[16, "teacher_area"] == gt[16].sum() / 255
    ov = E.overlay_panels(source, pred, teacher=None, split="TEST", threshold=0.5, n_videos=1)
    assert len(ov) == 2 and ov[0].image.shape == (112, 112) and ov[0].teacher is None


EVALUATE = {"source": "real", "split": "TEST", "agreement_source": "synthetic",
            "agreement_split": "TEST", "threshold": 0.5, "n_examples": 4,
            "videos": "examples", "sources": ["real", "synthetic"], "collapse_empty": 0.05,
            "collapse_area_ratio": 2.0, "collapse_drift": 2.0}


def stage_params(tmp_path, monkeypatch, **over):
    """Run the stage in ``tmp_path``, whose params.yaml is the project's with ``EVALUATE``
    and ``over`` in ``evaluate``."""
    write_params(tmp_path, evaluate={**EVALUATE, **over})
    monkeypatch.chdir(tmp_path)


def stage_tree(tmp_path, source, monkeypatch, **over):
    """frames/, student/, teacher/ folders as the pipeline lays them out: real (the VIDEOS
    fixture) and synthetic (two videos); the student is one frame late on real, exact on
    synthetic; the teacher is the ground truth. Writes params.yaml (``EVALUATE`` with
    ``over``) and runs in ``tmp_path``. Returns the stage's common arguments."""
    for d in ("frames", "student", "teacher"):
        (tmp_path / d).mkdir(exist_ok=True)
    real = store.open_frames(source.path)
    gt = np.asarray(real.gt_masks[:]) * 255
    write_masks(tmp_path / "student" / "real.zarr", real, shifted(real, 1))
    write_masks(tmp_path / "teacher" / "real.zarr", real, gt)
    syn = build_source(tmp_path / "frames" / "synthetic.zarr", VIDEOS[:2])
    sgt = np.asarray(syn.gt_masks[:]) * 255
    write_masks(tmp_path / "student" / "synthetic.zarr", syn, sgt)
    write_masks(tmp_path / "teacher" / "synthetic.zarr", syn, sgt)
    (tmp_path / "sc.json").write_text(json.dumps({"weights": 1000, "flops": 5000,
                                                  "blocks": 2, "layers_per_block": 1,
                                                  "hidden": 4}))
    (tmp_path / "tc.json").write_text(json.dumps({"weights": 40_000_000, "flops": 8e9}))
    stage_params(tmp_path, monkeypatch, **over)
    return ["--name", "b2-l1-h4",
            "--frames-dir", str(tmp_path / "frames"), "--pred-dir", str(tmp_path / "student"),
            "--teacher-dir", str(tmp_path / "teacher"),
            "--student-cost", str(tmp_path / "sc.json"), "--out", str(tmp_path / "out"),
            "--live", str(tmp_path / "live"), "--videos", str(tmp_path / "videos")]


@pytest.fixture
def frames_dir_source(tmp_path):
    return build_source(tmp_path / "frames" / "real.zarr", VIDEOS)


def evaluate_main():
    return runpy.run_path(str(ROOT / "stages" / "evaluate.py"))["main"]


def all_finite_numbers(d: dict) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in d.values())


def test_evaluate_stage_end_to_end(frames_dir_source, tmp_path, monkeypatch):
    args = stage_tree(tmp_path, frames_dir_source, monkeypatch)
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "stale.json").write_text("{}")            # left by an older run: must disappear
    evaluate_main()(args + ["--teacher-cost", str(tmp_path / "tc.json")])
    assert sorted(p.name for p in out.iterdir()) == ["area_curves.csv", "index.html",
                                                     "metrics.json", "per_video.csv", "plots",
                                                     "point.json"]
    # n_examples 4 of the 2 scorable TEST videos: both rendered, linked from the page
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["a.mp4", "b.mp4"]
    page = (out / "index.html").read_text()
    assert 'src="../videos/a.mp4"' in page and 'src="../videos/b.mp4"' in page
    assert "No training curves recorded" in page          # no dvclive folder given
    m = json.loads((out / "metrics.json").read_text())
    assert all_finite_numbers(m)
    assert m["teacher_dice_ed"] == 1.0 and m["teacher_afd_es"] == 0.0
    assert m["teacher_ef_mae"] == pytest.approx(0.0, abs=1e-9)   # the teacher is the truth
    assert m["agreement_synthetic_test"] == 1.0 and 0 < m["agreement_real_test"] < 1
    assert m["weights"] == 1000 and m["teacher_weights"] == 40_000_000
    assert m["afd_ed"] == 1.0 and "agreement" not in m and m["dice_ed"] < 1
    assert {"ef_r", "ef_mae", "ef_area_r", "ef_area_mae", "dice_teacher_ref"} <= set(m)
    pv = pd.read_csv(out / "per_video.csv")
    assert {"dice_ed", "edv", "esv", "ef_pred", "ef_area_pred", "teacher_dice_ed",
            "teacher_edv", "skip_reason"} <= set(pv.columns) and len(pv) == 4
    curves = pd.read_csv(out / "area_curves.csv")
    assert curves.shape[0] == 2 * T and "teacher_area" in curves
    for png in ("area_curves.png", "overlays.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    point = json.loads((out / "point.json").read_text())
    assert (point["name"], point["blocks"], point["weights"]) == ("b2-l1-h4", 2, 1000)
    assert point["afd_ed"] == 1.0 and point["agreement_synthetic_test"] == 1.0
    assert point["dice_teacher_ref"] == m["dice_teacher_ref"]


TEACHER_KEY = ("teacher_", "_teacher", "_teacher_ref", "agreement")


def test_evaluate_stage_on_an_evaluation_only_source(frames_dir_source, tmp_path, caplog,
                                                       monkeypatch):
    args = stage_tree(tmp_path, frames_dir_source, monkeypatch)
    # the teacher stage records that it does not label real (sources.real.teacher: false)
    write_uncovered_masks(tmp_path / "teacher" / "real.zarr", frames_dir_source, "eval only")
    caplog.set_level(logging.INFO)
    evaluate_main()(args + ["--teacher-cost", str(tmp_path / "tc.json")])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all_finite_numbers(m)                              # no NaN, no null
    assert {"dice_ed", "dice_es", "dice", "afd_ed", "afd_es", "ef_r", "ef_mae", "ef_area_r",
            "ef_area_mae", "weights", "flops"} <= set(m)
    # the agreement source is still covered; nothing teacher-referenced about real
    assert m["agreement_synthetic_test"] == 1.0
    assert [k for k in m if any(t in k for t in TEACHER_KEY)] == ["agreement_synthetic_test"]
    point = json.loads((tmp_path / "out" / "point.json").read_text())
    assert [k for k in point if any(t in k for t in TEACHER_KEY)] == ["agreement_synthetic_test"]
    pv = pd.read_csv(tmp_path / "out" / "per_video.csv")
    assert not [c for c in pv if "teacher" in c or c == "agreement"]
    assert "teacher_area" not in pd.read_csv(tmp_path / "out" / "area_curves.csv")
    assert "source 'real' is not labelled by the teacher (labelled: ['synthetic'])" in caplog.text

    # neither source covered, no teacher cost file: no teacher nor agreement key at all
    caplog.clear()
    syn = open_frames(tmp_path / "frames" / "synthetic.zarr")
    write_uncovered_masks(tmp_path / "teacher" / "synthetic.zarr", syn, "eval only")
    evaluate_main()(args + ["--teacher-cost", str(tmp_path / "missing.json")])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert all_finite_numbers(m) and not [k for k in m if any(t in k for t in TEACHER_KEY)]
    assert "agreement source 'synthetic' is not labelled by the teacher (labelled: [])" in caplog.text


def test_evaluate_stage_undefined_values_are_absent(tmp_path, caplog, monkeypatch):
    # one scorable video: ef_r is undefined -> absent from metrics.json, said in the log
    fs = build_source(tmp_path / "frames" / "real.zarr", VIDEOS[:1])
    (tmp_path / "student").mkdir()
    write_masks(tmp_path / "student" / "real.zarr", fs, np.asarray(fs.gt_masks[:]) * 255)
    (tmp_path / "sc.json").write_text(json.dumps({"weights": 1, "flops": 2, "blocks": 1,
                                                  "layers_per_block": 1, "hidden": 1}))
    write_uncovered_masks(tmp_path / "none" / "real.zarr", fs, "eval only")
    stage_params(tmp_path, monkeypatch, agreement_source="real", n_examples=1,
                 sources=["real"])
    caplog.set_level(logging.INFO)
    evaluate_main()([
        "--name", "s", "--frames-dir", str(tmp_path / "frames"),
        "--pred-dir", str(tmp_path / "student"), "--teacher-dir", str(tmp_path / "none"),
        "--student-cost", str(tmp_path / "sc.json"), "--teacher-cost", str(tmp_path / "x"),
        "--out", str(tmp_path / "out"), "--live", str(tmp_path / "live"),
        "--videos", str(tmp_path / "videos")])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["dice"] == 1.0 and "ef_r" not in m and "ef_mae" in m and all_finite_numbers(m)
    assert "ef_r is undefined on real TEST" in caplog.text
    assert "ef_r" not in json.loads((tmp_path / "out" / "point.json").read_text())


def test_evaluate_stage_bad_cost_file_names_it(frames_dir_source, tmp_path, monkeypatch):
    args = stage_tree(tmp_path, frames_dir_source, monkeypatch)
    (tmp_path / "sc.json").write_text(json.dumps({"weights": 1000, "flops": 5000}))
    with pytest.raises(InputError, match=r"sc.json: no number under \['blocks'"):
        evaluate_main()(args + ["--teacher-cost", "x"])


def test_evaluate_stage_outputs_only_teacher_cost_is_left_out(frames_dir_source, tmp_path,
                                                               monkeypatch):
    """An outputs-only teacher's cost.json holds nulls (its model is unknown): no teacher cost
    keys, the teacher's scores are still there."""
    args = stage_tree(tmp_path, frames_dir_source, monkeypatch)
    (tmp_path / "tc.json").write_text(json.dumps({"weights": None, "flops": None}))
    evaluate_main()(args + ["--teacher-cost", str(tmp_path / "tc.json")])
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "teacher_weights" not in m and "teacher_flops" not in m
    assert m["teacher_dice_ed"] == 1.0 and all_finite_numbers(m)


@pytest.mark.parametrize("over, message", [
    ({"threshold": 1.5}, "params.yaml: evaluate: threshold must be in (0, 1), got 1.5: fix "
                         "evaluate.threshold in params.yaml"),
    ({"threshold": 0}, "params.yaml: evaluate: threshold must be in (0, 1), got 0.0"),
    ({"threshold": "high"}, "params.yaml: evaluate.threshold must be a number, got 'high'"),
    ({"n_examples": -1}, "params.yaml: evaluate: evaluate.n_examples must be >= 0, got -1"),
    ({"videos": "some"}, "params.yaml: evaluate: evaluate.videos must be one of examples, all, "
                         "got 'some'"),
    ({"sources": ["synthetic"]}, "params.yaml: evaluate: evaluate.source 'real' is not among "
                                 "evaluate.sources ['synthetic']"),
    ({"split": None}, "params.yaml: evaluate.split must be a string, got None"),
])
def test_evaluate_stage_bad_params_value_is_one_line(frames_dir_source, tmp_path, monkeypatch,
                                                     capsys, over, message):
    args = stage_tree(tmp_path, frames_dir_source, monkeypatch, **over)
    with pytest.raises(SystemExit) as exit:
        run(evaluate_main(), args + ["--teacher-cost", str(tmp_path / "tc.json")])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------ collapse detector

def test_collapse_measures_by_hand():
    s = np.array([10, 10, 0, 0, 20, 20, 40, 40], float)      # quarters of 2 frames
    m = E.collapse_measures(s, t_area=np.full(8, 10.0))
    assert m["empty_fraction"] == 2 / 8
    assert m["drift"] == 40 / 10                              # last quarter / first quarter
    assert m["area_ratio_teacher"] == 140 / 80
    assert "area_ratio_teacher" not in E.collapse_measures(s, None)
    assert math.isnan(E.collapse_measures(np.array([0, 0, 5, 5.0]), None)["drift"])
    assert math.isnan(E.collapse_measures(s, np.zeros(8))["area_ratio_teacher"])
    one = E.collapse_measures(np.array([7.0]), None)          # a 1-frame video: ratio 1
    assert one == {"empty_fraction": 0.0, "drift": 1.0}


def test_collapse_reason_names_each_measure():
    ok = {"empty_fraction": 0.0, "drift": 1.2, "area_ratio_teacher": 0.8}
    assert E.collapse_reason(ok, LIMITS) == ""
    why = E.collapse_reason({"empty_fraction": 0.5, "drift": 0.25,
                             "area_ratio_teacher": 3.0}, LIMITS)
    assert why == ("50% of frames empty; area vs teacher x3.00; "
                   "area drift last/first quarter x0.25")
    # shrinking by the limit exactly is not flagged; NaN measures never flag
    assert E.collapse_reason({"empty_fraction": 0.05, "drift": 0.5,
                              "area_ratio_teacher": math.nan}, LIMITS) == ""


@pytest.mark.parametrize("kw, match", [
    ({"empty": 1.0}, "collapse_empty must be a fraction in \\[0, 1\\), got 1.0"),
    ({"empty": -0.1}, "collapse_empty"),
    ({"area_ratio": 1.0}, "collapse_area_ratio must be a factor > 1, got 1.0"),
    ({"drift": 0.5}, "collapse_drift must be a factor > 1, got 0.5"),
])
def test_collapse_limits_are_checked(kw, match):
    with pytest.raises(InputError, match=match):
        E.CollapseLimits(**{"empty": 0.05, "area_ratio": 2.0, "drift": 2.0, **kw})


def test_a_collapsing_student_is_flagged(source, tmp_path):
    """Video a's student masks vanish after frame 20 (as a carried ConvLSTM state can fade):
    a is flagged, counted in n_collapsed, and still scored at its traced frames."""
    gt = np.asarray(source.gt_masks[:]) * 255
    student = gt.copy()
    student[20:T] = 0                                     # video a = rows 0..T-1
    pred, teacher = student_and_gt_teacher(source, tmp_path, student)
    df, s = E.evaluate_source(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                              collapse=LIMITS, progress=False)
    rows = df.set_index("FileName")
    assert rows.loc["a", "empty_fraction"] == 12 / T
    assert rows.loc["a", "collapse"].startswith("38% of frames empty")
    assert "drift" in rows.loc["a", "collapse"]           # last quarter empty: x0.00
    assert (rows.drop(index="a")["collapse"] == "").all()
    assert s["n_collapsed"] == 1
    assert s["empty_fraction"] == pytest.approx(12 / T / 4)   # 4 TEST videos with frames
    assert rows.loc["a", "dice_ed"] == 1.0                # ED at 16: before the collapse
    # the per-video table and the report page list it
    from echodfkd.evaluation import html, report
    assert report.videos_to_render(df, "examples", 1)[0] == "a"
    page = html.render_student_page(name="s", metrics=s, teacher_metrics={}, per_video=df,
                                    videos={}, skipped=[], plots=[], training_curves=None)
    section = page.split('id="collapsed"')[1].split("</section>")[0]
    assert "<td>a</td>" in section and "38% of frames empty" in section
