import json
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echodfkd.store import (INDEX_COLUMNS, TRACED_COLUMNS, finish_frame_store, init_frame_store,
                            init_mask_store, open_frames)
from echodfkd.train import (ClipSet, Source, TrainConfig, fixed_clips, load_student,
                            load_videos, make_batch, prepare_short_videos, read_student,
                            sample_clips, save_student, select_videos, train_student)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def disc_video(n, seed):
    """Moving/pulsing bright disc on noise: frames uint8 (n,112,112) and its mask 0/255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:112, :112]
    cy, cx = rng.uniform(40, 72, 2)
    t = np.arange(n)[:, None, None]
    r = 18 + 8 * np.sin(2 * np.pi * t / 16 + rng.uniform(0, 6))
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    frames = np.clip(40 + 150 * inside + rng.normal(0, 20, inside.shape), 0, 255)
    return frames.astype(np.uint8), (inside * 255).astype(np.uint8)


def make_stores(tmp_path, lengths, splits, efs=None, name="src"):
    """A tiny frame store and an aligned mask store; returns their paths."""
    n = len(lengths)
    stop = np.cumsum(lengths)
    index = pd.DataFrame({
        "FileName": [f"{name}_{i}" for i in range(n)], "Split": splits,
        "start": stop - np.asarray(lengths), "stop": stop, "FPS": 50.0,
        "EF": efs if efs is not None else [50.0] * n, "ESV": 0.0, "EDV": 0.0,
        "FrameHeight": 112, "FrameWidth": 112, "NumberOfFrames": lengths})[INDEX_COLUMNS]
    fpath, mpath = tmp_path / f"{name}_frames.zarr", tmp_path / f"{name}_masks.zarr"
    g = init_frame_store(fpath, index, 0, with_gt=False, shard_frames=32, chunk_frames=16)
    vids = [disc_video(k, i) for i, k in enumerate(lengths)]
    g["frames"][:] = np.concatenate([v[0] for v in vids])
    finish_frame_store(g, index, pd.DataFrame(columns=TRACED_COLUMNS))
    mg = init_mask_store(mpath, open_frames(fpath), shard_frames=32, chunk_frames=16)
    mg["masks"][:] = np.concatenate([v[1] for v in vids])
    mg.attrs["complete"] = True
    return str(fpath), str(mpath)


TINY = dict(blocks=1, layers_per_block=1, hidden=2, sequence_length=4, batch_size=2,
            epochs=4, steps_per_epoch=3, patience=10, half_resolution=True,
            val_clips_per_video=1)


@pytest.fixture
def stores(tmp_path):
    return make_stores(tmp_path, [12, 10, 9, 3, 8],
                       ["TRAIN", "TRAIN", "TRAIN", "TRAIN", "VAL"],
                       efs=[20.0, 35.0, 45.0, 60.0, 50.0])


def sources(stores):
    f, m = stores
    return [Source(f, m, ("TRAIN",))], [Source(f, m, ("VAL",))]


def test_select_videos_filter_by_ef(stores):
    fs = open_frames(stores[0])
    rows = select_videos(fs.index, ["TRAIN"], filter_column="EF", filter_min=30,
                         filter_max=50)
    assert rows["FileName"].tolist() == ["src_1", "src_2"]
    with pytest.raises(ValueError, match="'HR'"):
        select_videos(fs.index, ["TRAIN"], filter_column="HR", where="x.zarr")


def test_load_videos_matches_store(stores):
    fs = open_frames(stores[0])
    clips = load_videos([Source(stores[0], stores[1], ("TRAIN",))])
    assert clips.lengths.tolist() == [12, 10, 9, 3]
    assert clips.starts.tolist() == [0, 12, 22, 31]
    np.testing.assert_array_equal(clips.frames[12:22], fs.video(1))
    assert clips.names[1].endswith(":src_1")
    val = load_videos([Source(stores[0], stores[1], ("VAL",))])
    np.testing.assert_array_equal(val.frames, fs.video(4))


def test_short_videos_skip_or_pad(stores, caplog):
    clips = load_videos([Source(stores[0], stores[1], ("TRAIN",))])
    skipped = prepare_short_videos(clips, 4, "skip")
    assert skipped.lengths.tolist() == [12, 10, 9]
    assert len(skipped.skipped) == 1 and skipped.skipped[0].endswith("src_3")
    assert "skipped 1 video" in caplog.text
    padded = prepare_short_videos(clips, 5, "pad")
    assert padded.lengths.tolist() == [12, 10, 9, 5]
    last = clips.frames[31:34]
    np.testing.assert_array_equal(padded.frames[31:36], np.concatenate([last, last[-1:],
                                                                        last[-1:]]))
    assert len(padded.padded) == 1


def test_sample_clips_bounds():
    lengths = np.array([5, 20, 7])
    v, s = sample_clips(lengths, 5000, 5, np.random.default_rng(0))
    assert set(v.tolist()) == {0, 1, 2}
    assert (s >= 0).all() and (s + 5 <= lengths[v]).all()
    assert (s[v == 0] == 0).all()
    assert s[v == 1].max() == 15
    v2, s2 = sample_clips(lengths, 5000, 5, np.random.default_rng(0))
    assert (v == v2).all() and (s == s2).all()
    with pytest.raises(ValueError, match="shorter"):
        sample_clips(lengths, 1, 6, np.random.default_rng(0))


def test_fixed_clips():
    v, s = fixed_clips(np.array([10, 4, 3]), 4, 3)
    assert v.tolist() == [0, 0, 0, 1]
    assert s.tolist() == [0, 3, 6, 0]


def test_make_batch_half_resolution():
    frames = np.zeros((6, 112, 112), np.uint8)
    frames[:, 0, 0] = 255           # one bright pixel -> a quarter in the 2x2 average
    masks = np.full((6, 112, 112), 51, np.uint8)
    clips = ClipSet(frames, masks, np.array([0]), np.array([6]), ["v"])
    x, y = make_batch(clips, np.array([0, 0]), np.array([0, 2]), 3, True)
    assert x.shape == y.shape == (2, 3, 1, 56, 56)
    assert x[0, 0, 0, 0, 0].item() == pytest.approx(0.25)
    assert torch.allclose(y, torch.full_like(y, 0.2))
    x, _ = make_batch(clips, np.array([0]), np.array([1]), 2, False)
    assert x.shape == (1, 2, 1, 112, 112) and x[0, 0, 0, 0, 0].item() == 1.0


def run(stores, tmp_path, tag, **kw):
    tr, va = sources(stores)
    cfg = TrainConfig(**{**TINY, **kw.pop("cfg", {})})
    return train_student(tr, va, cfg, tmp_path / tag / "last.pt", progress=False, **kw)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                  b.state_dict().values()))


def test_deterministic(stores, tmp_path):
    a = run(stores, tmp_path, "a", cfg={"epochs": 2})
    b = run(stores, tmp_path, "b", cfg={"epochs": 2})
    assert same_weights(a.model, b.model)
    assert a.history == b.history
    c = run(stores, tmp_path, "c", cfg={"epochs": 2, "seed": 1})
    assert not same_weights(a.model, c.model)
    assert a.meta["skipped_short_videos"][0].endswith("src_3")
    assert a.meta["train_videos"] == 3 and a.meta["val_videos"] == 1


class Interrupt(Exception):
    pass


def test_resume_continues_and_matches(stores, tmp_path):
    full = run(stores, tmp_path, "full", live_dir=tmp_path / "live_full")
    seen = []

    def crash_after_1(epoch, row):
        seen.append(epoch)
        if epoch == 1:
            raise Interrupt

    live = tmp_path / "live"
    with pytest.raises(Interrupt):
        run(stores, tmp_path, "r", live_dir=live, on_epoch_end=crash_after_1)
    assert seen == [0, 1]
    seen.clear()
    resumed = run(stores, tmp_path, "r", live_dir=live, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [2, 3]                     # continued at epoch 2, not 0
    assert resumed.history == full.history
    assert same_weights(resumed.model, full.model)
    rows = pd.read_csv(live / "plots" / "metrics" / "val_loss.tsv", sep="\t")
    assert rows["step"].tolist() == [0, 1, 2, 3]  # no duplicated rows
    np.testing.assert_allclose(rows["val_loss"], [h["val_loss"] for h in full.history])
    # a finished run is not trained again
    seen.clear()
    again = run(stores, tmp_path, "r", live_dir=live, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [] and same_weights(again.model, full.model)
    # another configuration ignores the checkpoint and starts at epoch 0
    run(stores, tmp_path, "r", cfg={"lr": 0.01, "epochs": 1},
        on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [0]


def test_early_stopping_keeps_best(stores, tmp_path):
    res = run(stores, tmp_path, "es", cfg={"epochs": 30, "patience": 1, "lr": 0.5})
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses))
    assert len(losses) == res.best_epoch + 2 or len(losses) == 30
    assert res.meta["stopped_early"] == (len(losses) < 30)


def test_filter_by_ef(stores, tmp_path):
    res = run(stores, tmp_path, "f", cfg={"epochs": 1, "filter_column": "EF",
                                          "filter_min": 30, "filter_max": 50})
    assert res.meta["train_videos"] == 2
    with pytest.raises(ValueError, match="no training video"):
        run(stores, tmp_path, "g", cfg={"epochs": 1, "filter_column": "EF", "filter_min": 90})


def test_save_and_load_student(stores, tmp_path):
    res = run(stores, tmp_path, "s", cfg={"epochs": 1, "skip": True})
    path = tmp_path / "student.pt"
    save_student(path, res.model, res.meta)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "echodfkd-student" and raw["config"]["skip"] is True
    model = load_student(path, "cpu")
    assert not model.training and same_weights(model, res.model)
    assert read_student(path)["meta"]["best_epoch"] == res.best_epoch
    bad = tmp_path / "bad.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(ValueError, match="not an echodfkd-student"):
        load_student(bad)


def test_stage_cli(stores, tmp_path):
    spec = importlib.util.spec_from_file_location("stage_train", ROOT / "stages" / "train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    out = tmp_path / "models" / "student"
    extra = make_stores(tmp_path, [6, 6], ["TRAIN", "TEST"], name="extra")
    stage.main(["--frames", stores[0], "--masks", stores[1], "--out", str(out),
                "--live", str(tmp_path / "dvclive"), "--blocks", "2", "--layers-per-block",
                "1", "--hidden", "2", "--sequence-length", "4", "--batch", "2", "--epochs", "1",
                "--steps-per-epoch", "2", "--half-resolution", "--skip",
                "--extra-frames", extra[0], "--extra-masks", extra[1]])
    ck = read_student(out / "student.pt")
    assert ck["config"] == {"blocks": 2, "layers_per_block": 1, "hidden": 2,
                            "kernel_size": 3, "skip": True}
    assert ck["meta"]["train_videos"] == 4          # 3 synthetic + 1 extra TRAIN
    assert (out / "train.json").exists()
    cost = json.loads((out / "cost.json").read_text())
    assert cost["weights"] == ck["meta"]["weights"] and cost["flops"] > 0
    assert (cost["blocks"], cost["layers_per_block"], cost["hidden"]) == (2, 1, 2)
    assert (tmp_path / "models" / "student.ckpt" / "last.pt").exists()
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "train_loss.tsv").exists()


def test_stage_bool_flags():
    spec = importlib.util.spec_from_file_location("stage_train2", ROOT / "stages" / "train.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    base = ["--frames", "f", "--masks", "m", "--out", "o"]
    assert stage.parse_args(base).half_resolution is False
    assert stage.parse_args(base + ["--half-resolution"]).half_resolution is True
    a = stage.parse_args(base + ["--half-resolution", "false", "--skip", "True"])
    assert a.half_resolution is False and a.skip is True
    assert stage.parse_args(base + ["--splits", "TRAIN VAL", "EXTRA"]).splits == [
        "TRAIN", "VAL", "EXTRA"]
    a = stage.parse_args(base + ["--filter-column", "", "--filter-min", "", "--filter-max", "50",
                                 "--extra-frames", "", "--extra-masks", ""])
    assert a.filter_min is None and a.filter_max == 50.0 and not a.extra_frames
    with pytest.raises(SystemExit):
        stage.parse_args(base + ["--skip", "maybe"])


def test_augment_clips_keeps_shape_range_and_black():
    from echodfkd.train import augment_clips

    x = torch.rand(3, 4, 1, 8, 8)
    x[:, :, :, :2] = 0.0                      # black outside the fan must stay black
    a = augment_clips(x.clone(), np.random.default_rng(5))
    b = augment_clips(x.clone(), np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)                  # deterministic for a seed
    assert not torch.equal(a, x)
    assert float(a[:, :, :, :2].abs().max()) == 0.0
