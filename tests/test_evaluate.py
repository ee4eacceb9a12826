import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from echodfkd import evaluate as E
from echodfkd import metrics as M
from echodfkd import store

ROOT = Path(__file__).resolve().parents[1]
T = 32
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


VIDEOS = [
    {"name": "a", "split": "TEST", "amp": 8.0, "n": T, "tracings": [("ED", 16), ("ES", 24)],
     "EF": area_ef(8.0)},
    {"name": "b", "split": "TEST", "amp": 5.0, "n": T, "tracings": [("ES", 8), ("ED", 0)],
     "EF": area_ef(5.0)},
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
                              progress=False)
    assert list(df["FileName"]) == ["a", "b", "c", "d"]
    assert s["n_videos"] == 2 and s["n_skipped"] == 2 and s["n_frames"] == 4 * T
    assert s["dice_ed"] == s["dice_es"] == s["dice"] == 1.0
    assert s["afd_ed"] == s["afd_es"] == 0.0
    assert s["ef_mae"] == pytest.approx(0.0, abs=1e-9)
    assert s["ef_r"] == pytest.approx(1.0)
    assert s["agreement"] == 1.0
    assert s["dice_teacher_ref"] == 1.0
    assert s["afd_ed_teacher"] == s["afd_es_teacher"] == 0.0
    row = df.set_index("FileName").loc["b"]
    assert (row.ed_frame, row.es_frame, row.pred_ed_frame, row.pred_es_frame) == (0, 8, 0, 8)


def test_shifted_prediction_known_values(source, tmp_path):
    pred, teacher = student_and_gt_teacher(source, tmp_path, shifted(source, 2))
    df, s = E.evaluate_source(source, pred, teacher=teacher, split="TEST", threshold=0.5,
                              progress=False)
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
                              progress=False)
    reasons = df.set_index("FileName")["skip_reason"]
    assert reasons["a"] == reasons["b"] == ""
    assert reasons["c"] == "no tracings"
    assert "ES traced frame 40 outside the video" in reasons["d"]
    assert df.set_index("FileName").loc[["c", "d"], "dice_ed"].isna().all()
    assert "agreement" not in df


def test_ambiguous_and_missing_phase_skipped(tmp_path):
    vids = [{"name": "x", "split": "TEST", "amp": 8.0, "n": T,
             "tracings": [("ED", 0), ("ED", 16), ("ES", 8)]},
            {"name": "y", "split": "TEST", "amp": 8.0, "n": T, "tracings": [("ED", 0)]},
            {"name": "z", "split": "TEST", "amp": 8.0, "n": T,
             "tracings": [("ED", 0), ("ES", 8)]}]
    fs = build_source(tmp_path / "f.zarr", vids)
    pred = write_masks(tmp_path / "s.zarr", fs, np.asarray(fs.gt_masks[:]) * 255)
    df, s = E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0.5,
                              progress=False)
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
        E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0.5, progress=False)
    with pytest.raises(ValueError, match="VAL"):
        E.evaluate_source(fs, pred, teacher=None, split="VAL", threshold=0.5, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        E.evaluate_source(fs, pred, teacher=None, split="TEST", threshold=0, progress=False)


def test_misaligned_prediction_is_an_error(source, tmp_path):
    other = build_source(tmp_path / "other.zarr", VIDEOS[:2])
    wrong = write_masks(tmp_path / "w.zarr", other, np.zeros((2 * T, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="frames"):
        E.evaluate_source(source, wrong, teacher=None, split="TEST", threshold=0.5,
                          progress=False)
    # same frame count, other fingerprint
    renamed = [dict(v, name=v["name"] + "_x") for v in VIDEOS]
    other2 = build_source(tmp_path / "other2.zarr", renamed)
    wrong2 = write_masks(tmp_path / "w2.zarr", other2, np.zeros((5 * T, 112, 112), np.uint8))
    good = write_masks(tmp_path / "g.zarr", source, np.zeros((5 * T, 112, 112), np.uint8))
    with pytest.raises(ValueError, match="made for frames"):
        E.evaluate_source(source, good, teacher=wrong2, split="TEST", threshold=0.5,
                          progress=False)


def test_prediction_for_other_splits_only_is_an_error(source, tmp_path):
    partial = write_masks(tmp_path / "p.zarr", source, source.gt_masks[:], splits=["VAL"])
    with pytest.raises(ValueError, match=r"splits \['VAL'\] only, not 'TEST'"):
        E.evaluate_source(source, partial, teacher=None, split="TEST", threshold=0.5,
                          progress=False)


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
                               progress=False)
    tdf, ts = E.evaluate_source(source, teacher, teacher=None, split="TEST", threshold=0.5,
                                progress=False)
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


def test_evaluate_stage_end_to_end(source, tmp_path):
    evaluate_main = runpy.run_path(str(ROOT / "stages" / "evaluate.py"))["main"]

    gt = np.asarray(source.gt_masks[:]) * 255
    write_masks(tmp_path / "s.zarr", source, shifted(source, 1))
    write_masks(tmp_path / "t.zarr", source, gt)
    syn = build_source(tmp_path / "synthetic.zarr", VIDEOS[:2])
    sgt = np.asarray(syn.gt_masks[:]) * 255
    write_masks(tmp_path / "ss.zarr", syn, sgt)
    write_masks(tmp_path / "st.zarr", syn, sgt)
    (tmp_path / "sc.json").write_text(json.dumps({"weights": 1000, "flops": 5000,
                                                  "blocks": 2, "layers_per_block": 1,
                                                  "hidden": 4}))
    (tmp_path / "tc.json").write_text(json.dumps({"weights": 40_000_000, "flops": 8e9}))
    out = tmp_path / "reports"
    evaluate_main([
        "--frames", str(tmp_path / "real.zarr"), "--pred", str(tmp_path / "s.zarr"),
        "--teacher-masks", str(tmp_path / "t.zarr"), "--split", "TEST", "--threshold", "0.5",
        "--agreement-frames", str(tmp_path / "synthetic.zarr"),
        "--agreement-pred", str(tmp_path / "ss.zarr"),
        "--agreement-teacher", str(tmp_path / "st.zarr"), "--agreement-split", "TEST",
        "--student-cost", str(tmp_path / "sc.json"), "--teacher-cost", str(tmp_path / "tc.json"),
        "--metrics", str(out / "metrics.json"), "--per-video", str(out / "per_video.csv"),
        "--plots", str(out / "plots"), "--curves-csv", str(out / "area_curves.csv"),
        "--point", str(out / "points" / "b2_l1_h4.json"), "--name", "b2_l1_h4"])
    m = json.loads((out / "metrics.json").read_text())
    assert m["teacher_dice_ed"] == 1.0 and m["teacher_afd_es"] == 0.0
    assert m["agreement_synthetic_test"] == 1.0 and 0 < m["agreement_real_test"] < 1
    assert m["weights"] == 1000 and m["teacher_weights"] == 40_000_000
    assert m["afd_ed"] == 1.0 and "agreement" not in m and m["dice_ed"] < 1
    pv = pd.read_csv(out / "per_video.csv")
    assert {"dice_ed", "teacher_dice_ed", "skip_reason"} <= set(pv.columns) and len(pv) == 4
    assert pd.read_csv(out / "area_curves.csv").shape[0] == 2 * T
    for png in ("area_curves.png", "overlays.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    point = json.loads((out / "points" / "b2_l1_h4.json").read_text())
    assert point["blocks"] == 2 and point["weights"] == 1000 and point["afd_ed"] == 1.0
    assert point["agreement_synthetic_test"] == 1.0
