"""echodfkd.evaluation.report: which videos are rendered, their inputs, the video folder, the
training curves; and the evaluate stage's page and videos on awkward sources."""

import json

import numpy as np
import pandas as pd
import pytest

from echodfkd.data.store import write_uncovered_masks
from echodfkd.errors import InputError
from echodfkd.evaluation import report as R
from echodfkd.evaluation import video as V
from test_evaluate import (T, build_source, evaluate_main, stage_tree, write_masks)

SCRIPT = "<script>alert(1)</script>.avi"

PER_VIDEO = pd.DataFrame({
    "FileName": ["a", "b", "c", "d"], "dice_ed": [0.9, 0.5, np.nan, 0.8],
    "dice_es": [0.9, 0.5, np.nan, 0.8], "skip_reason": ["", "", "no tracings", ""]})


def test_videos_to_render():
    assert R.videos_to_render(PER_VIDEO, "all", 0) == ["a", "b", "c", "d"]
    # examples: worst first, then the one nearest the median (0.8); the skipped one never
    assert R.videos_to_render(PER_VIDEO, "examples", 2) == ["b", "d"]
    assert R.videos_to_render(PER_VIDEO, "examples", 0) == []
    with pytest.raises(InputError, match="evaluate.videos must be one of examples, all, "
                                         "got 'some'"):
        R.videos_to_render(PER_VIDEO, "some", 2)


VIDEOS = [
    {"name": "a", "split": "TEST", "amp": 8.0, "n": T, "tracings": [("ED", 16), ("ES", 24)]},
    {"name": SCRIPT, "split": "TEST", "amp": 5.0, "n": T,
     "tracings": [("ES", 8), ("ED", 0)]},
    {"name": "one", "split": "TEST", "amp": 6.0, "n": 1, "tracings": []},
]


@pytest.fixture
def stores(tmp_path):
    fs = build_source(tmp_path / "real.zarr", VIDEOS)
    gt = np.asarray(fs.gt_masks[:]) * 255
    return fs, write_masks(tmp_path / "s.zarr", fs, gt), write_masks(tmp_path / "t.zarr", fs, gt)


def test_video_inputs_read_one_video_each(stores):
    fs, pred, teacher = stores
    per_video = pd.DataFrame({"FileName": ["a", SCRIPT], "pred_ed_frame": [16.0, np.nan],
                              "pred_es_frame": [23.0, 8.0]})
    a, s = R.video_inputs(fs, pred, teacher, per_video, ["a", SCRIPT])
    assert a.name == "a" and a.frames.shape == (T, 112, 112) and a.fps == 50.0
    assert np.array_equal(a.student, np.asarray(pred.masks[:T]))
    assert a.traced_frames == {"ED": 16, "ES": 24} and sorted(a.traced) == [16, 24]
    assert a.traced[16].dtype == bool and a.traced[16].sum() > 0
    assert a.found == {"ED": [16], "ES": [23]}
    assert s.found == {"ES": [8]}                        # NaN: not found, not frame 0
    assert np.array_equal(s.frames, np.asarray(fs.frames[T:2 * T]))
    none, = R.video_inputs(fs, pred, None, per_video, ["a"])
    assert none.teacher is None
    with pytest.raises(InputError, match="no video 'zz' to render"):
        list(R.video_inputs(fs, pred, None, per_video, ["zz"]))


def test_source_without_teacher_renders_student_and_tracing_only(stores):
    fs, pred, _ = stores
    per_video = pd.DataFrame({"FileName": ["a"], "pred_ed_frame": [16], "pred_es_frame": [24]})
    item, = R.video_inputs(fs, pred, None, per_video, ["a"])
    rgb = V.render_frames(item.frames, item.student, item.teacher, item.traced,
                          threshold=0.5, found=item.found, traced_frames=item.traced_frames)
    teacher_px = (rgb == np.array(V.TEACHER_RGB, np.uint8)).all(-1)
    human_px = (rgb == np.array(V.HUMAN_RGB, np.uint8)).all(-1)
    assert not teacher_px.any() and human_px[16].any()


def test_write_videos_skips_short_videos_and_replaces_the_folder(stores, tmp_path):
    fs, pred, teacher = stores
    per_video = pd.DataFrame({"FileName": ["a", "one"], "pred_ed_frame": [16, -1],
                              "pred_es_frame": [24, -1]})
    out = tmp_path / "videos"
    out.mkdir()
    (out / "old.mp4").write_bytes(b"stale")
    written, skipped = R.write_videos(
        out, R.video_inputs(fs, pred, teacher, per_video, ["a", "one"]), threshold=0.5,
        progress=False)
    assert written == {"a": "a.mp4"}
    assert skipped == [("one", "1 frame(s): a video needs at least 2")]
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4"]
    assert (out / "a.mp4").stat().st_size > 1000


def test_read_training_curves(tmp_path):
    assert R.read_training_curves(tmp_path / "none") is None
    (tmp_path / "train_loss.tsv").write_text("step\ttrain_loss\n0\t0.9\n1\t0.7\n2\t0.5\n")
    (tmp_path / "val_loss.tsv").write_text("step\tval_loss\n1\t0.8\n")
    df = R.read_training_curves(tmp_path)
    assert df["step"].tolist() == [0, 1, 2] and df["train_loss"].tolist() == [0.9, 0.7, 0.5]
    assert df["val_loss"].isna().tolist() == [True, False, True]
    (tmp_path / "val_loss.tsv").write_text("step\tloss\n1\t0.8\n")
    with pytest.raises(InputError, match=r"val_loss.tsv: expected the columns step, val_loss; "
                                         r"got \['step', 'loss'\]"):
        R.read_training_curves(tmp_path)


def test_stage_page_on_an_evaluation_only_source_with_awkward_videos(tmp_path, monkeypatch):
    """videos: all on a source the teacher does not label, with an HTML FileName and a
    one-frame video: every video with frames rendered, the short one listed as skipped, the
    name shown as text, no teacher column filled, the training curves drawn."""
    fs = build_source(tmp_path / "frames" / "real.zarr", VIDEOS)
    args = stage_tree(tmp_path, fs, monkeypatch, videos="all")
    gt = np.asarray(fs.gt_masks[:]) * 255
    write_masks(tmp_path / "student" / "real.zarr", fs, gt)     # replace the 5-video store
    write_uncovered_masks(tmp_path / "teacher" / "real.zarr", fs, "eval only")
    live = tmp_path / "live" / "plots" / "metrics"
    live.mkdir(parents=True)
    (live / "train_loss.tsv").write_text("step\ttrain_loss\n0\t0.9\n1\t0.7\n")
    evaluate_main()(args + ["--teacher-cost", str(tmp_path / "tc.json")])
    videos = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert len(videos) == 2 and "a.mp4" in videos
    script_file, = [v for v in videos if v != "a.mp4"]
    assert "<" not in script_file and script_file.endswith(".mp4")
    page = (tmp_path / "out" / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.avi" in page
    assert "1 frame(s): a video needs at least 2" in page
    assert "The teacher does not label this source" in page
    assert "<svg" in page                                        # the training curve
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert not [k for k in m if k.startswith("teacher_")]
