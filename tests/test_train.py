import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from echodfkd.data.store import (INDEX_COLUMNS, TRACED_COLUMNS, finish_frame_store, init_frame_store,
                            init_mask_store, open_frames)
import yaml
from params import recipe, shape, write_params
from echodfkd.student.files import load_student, read_student, save_student
from echodfkd.student.clips import (ClipSet, Source, fixed_clips, load_videos,
                                    prepare_short_videos, sample_clips, select_videos)
from echodfkd.student.train import make_batch, train_student

ROOT = Path(__file__).resolve().parents[1]
NO_FILTER = dict(filter_column=None, filter_min=None, filter_max=None)  # every video


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


SHAPE = dict(blocks=1, layers_per_block=1, hidden=2)
SHAPE_FIELDS = ("blocks", "layers_per_block", "hidden", "kernel_size", "skip")
TINY = dict(sequence_length=4, batch=2, epochs=4, steps_per_epoch=3, patience=10,
            half_resolution=True, val_clips_per_video=1)


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
        select_videos(fs.index, ["TRAIN"], filter_column="HR", filter_min=None, filter_max=None,
                      where="x.zarr")


def test_load_videos_matches_store(stores):
    fs = open_frames(stores[0])
    clips = load_videos([Source(stores[0], stores[1], ("TRAIN",))], **NO_FILTER)
    assert clips.lengths.tolist() == [12, 10, 9, 3]
    assert clips.starts.tolist() == [0, 12, 22, 31]
    np.testing.assert_array_equal(clips.frames[12:22], fs.video(1))
    assert clips.names[1].endswith(":src_1")
    val = load_videos([Source(stores[0], stores[1], ("VAL",))], **NO_FILTER)
    np.testing.assert_array_equal(val.frames, fs.video(4))


def test_short_videos_skip_or_pad(stores, caplog):
    clips = load_videos([Source(stores[0], stores[1], ("TRAIN",))], **NO_FILTER)
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
    """Train on the test stores: params.yaml's recipe with ``TINY`` and ``cfg`` overrides
    (shape keys and ``seed`` are routed to the shape and the seed)."""
    tr, va = sources(stores)
    over = {**TINY, **kw.pop("cfg", {})}
    seed = over.pop("seed", 0)
    arch = {**SHAPE, **{k: over.pop(k) for k in list(over) if k in SHAPE_FIELDS}}
    return train_student(tr, va, shape(**arch), recipe(**over), seed,
                         tmp_path / tag / "last.pt", progress=False, **kw)


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


def load_stage(name):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


STAGE_TRAIN = {"sources": "src:TRAIN", "val": "src:VAL", "sequence_length": 4, "batch": 2,
               "epochs": 1, "steps_per_epoch": 2, "half_resolution": True, "threads": 1,
               "val_clips_per_video": 1, "cache_mb": 1, "loader_workers": 1,
               "stream_above_mb": 0}
DROP = "<drop this key>"
STAGE_SHAPE = {"blocks": 2, "layers_per_block": 1, "hidden": 2, "kernel_size": 3, "skip": True}


def stage_args(monkeypatch, data, out, **over):
    """The train stage's command line for stores under ``data``/frames|teacher, run in
    ``data``'s parent, whose params.yaml is the project's with ``STAGE_TRAIN`` and ``over``
    in ``train`` (an ``over`` value of ``DROP`` removes the key)."""
    path = write_params(data.parent, train={**STAGE_TRAIN, **over}, student=STAGE_SHAPE)
    values = yaml.safe_load(path.read_text())
    values["train"] = {k: v for k, v in values["train"].items() if v != DROP}
    path.write_text(yaml.safe_dump(values))
    monkeypatch.chdir(data.parent)
    return ["--name", "student", "--shape", "student", "--frames-dir", str(data / "frames"),
            "--masks-dir", str(data / "teacher"), "--out", str(out),
            "--live", str(data / "dvclive")]


def pipeline_stores(tmp_path):
    """Stores laid out as the pipeline has them: <data>/frames/<src>.zarr, <data>/teacher/..."""
    data = tmp_path / "data"
    (data / "frames").mkdir(parents=True)
    (data / "teacher").mkdir()
    for name, lengths, splits, efs in (
            ("src", [12, 10, 9, 3, 8], ["TRAIN"] * 4 + ["VAL"], [20.0, 35.0, 45.0, 60.0, 50.0]),
            ("extra", [6, 6], ["TRAIN", "TEST"], None)):
        f, m = make_stores(tmp_path, lengths, splits, efs=efs, name=name)
        Path(f).rename(data / "frames" / f"{name}.zarr")
        Path(m).rename(data / "teacher" / f"{name}.zarr")
    return data


def test_stage_cli(tmp_path, monkeypatch):
    stage = load_stage("train")
    data = pipeline_stores(tmp_path)
    out = tmp_path / "models" / "students" / "student"
    stage.main(stage_args(monkeypatch, data, out, sources="src:TRAIN@3 extra:TRAIN@1"))
    ck = read_student(out / "student.pt")
    assert ck["config"] == {"blocks": 2, "layers_per_block": 1, "hidden": 2,
                            "kernel_size": 3, "skip": True}
    assert ck["meta"]["train_videos"] == 4          # 3 src + 1 extra TRAIN (src_3 too short)
    assert [s["weight"] for s in ck["meta"]["train_sources"]] == [3.0, 1.0]
    assert ck["meta"]["data_path"] == "stream" and ck["meta"]["name"] == "student"
    assert (out / "train.json").exists() and (out / "student.onnx").exists()
    cost = json.loads((out / "cost.json").read_text())
    assert cost["weights"] == ck["meta"]["weights"] and cost["flops"] > 0
    assert (cost["blocks"], cost["layers_per_block"], cost["hidden"]) == (2, 1, 2)
    assert (tmp_path / "models" / "students" / "student.ckpt" / "last.pt").exists()
    assert (data / "dvclive" / "plots" / "metrics" / "train_loss.tsv").exists()
    # the FileList filter is wired: EF in [30, 50] keeps src_1 and src_2
    out2 = tmp_path / "filtered"
    stage.main(stage_args(monkeypatch, data, out2, filter_column="EF", filter_min=30,
                          filter_max=50, stream_above_mb=100))
    meta = read_student(out2 / "student.pt")["meta"]
    assert meta["train_videos"] == 2 and meta["data_path"] == "ram"
    assert meta["train_config"]["filter_min"] == 30.0


def test_stage_cli_errors(tmp_path, capsys, monkeypatch):
    from echodfkd.cli import run as run_stage

    stage = load_stage("train")
    data = pipeline_stores(tmp_path)
    out = tmp_path / "o"
    with pytest.raises(SystemExit):          # every path argument is required
        stage.main(stage_args(monkeypatch, data, out)[:-2])
    assert "--live" in capsys.readouterr().err
    for over, needle in (({"amp": DROP}, "params.yaml: train.amp is missing: add it to train"),
                         ({"lr": "fast"}, "train.lr must be a number, got 'fast'"),
                         ({"epochs": 0}, "train: train.epochs must be >= 1, got 0")):
        with pytest.raises(SystemExit) as exc:
            run_stage(stage.main, stage_args(monkeypatch, data, out, **over))
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    from echodfkd.data.store import open_frames, write_uncovered_masks
    # an evaluation-only source: its teacher mask store records that it holds no masks
    write_uncovered_masks(data / "teacher" / "real.zarr",
                          open_frames(data / "frames" / "extra.zarr"), "evaluation only")
    for over, needle in (({"sources": "real:TRAIN"}, "set sources.real.teacher: true"),
                         ({"val": "src:VAL@2"}, "has a weight"),
                         ({"sources": "src:TRAIN@-1"}, "not a positive number"),
                         ({"sources": "src"}, "<source>:<SPLIT>"),
                         ({"sources": " "}, "is empty")):
        with pytest.raises(SystemExit) as exc:
            run_stage(stage.main, stage_args(monkeypatch, data, out, **over))
        assert exc.value.code == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1
    assert not out.exists()


def test_augment_clips_keeps_shape_range_and_black():
    from echodfkd.student.train import augment_clips

    x = torch.rand(3, 4, 1, 8, 8)
    x[:, :, :, :2] = 0.0                      # black outside the fan must stay black
    a = augment_clips(x.clone(), np.random.default_rng(5))
    b = augment_clips(x.clone(), np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)                  # deterministic for a seed
    assert not torch.equal(a, x)
    assert float(a[:, :, :, :2].abs().max()) == 0.0


# --- streaming from Zarr (issue 10), composite batches (issue 9), resume identity (issue 11) ---

from echodfkd.student.clips import (ChunkCache, StreamingClips, parse_sources,  # noqa: E402
                            plan_videos)
from echodfkd.errors import InputError  # noqa: E402


def test_streaming_reads_equal_ram_reads(stores):
    src = [Source(stores[0], stores[1], ("TRAIN", "VAL"))]
    ram = prepare_short_videos(load_videos(src, **NO_FILTER), 5, "pad")
    # a cache of 3 frame chunks of 16 frames: far smaller than the 42 frames x 2 arrays read
    stream = prepare_short_videos(StreamingClips(plan_videos(src, **NO_FILTER),
                                                 3 * 16 * 112 * 112), 5, "pad")
    assert stream.lengths.tolist() == ram.lengths.tolist() == [12, 10, 9, 5, 8]
    assert stream.padded == ram.padded and len(stream.padded) == 1
    rng = np.random.default_rng(3)
    for _ in range(20):
        v, s = sample_clips(ram.lengths, 3, 5, rng)
        for a, b in zip(ram.read(v, s, 5), stream.read(v, s, 5)):
            np.testing.assert_array_equal(a, b)
    assert stream.cache.bytes <= stream.cache.budget
    assert stream.cache.hits > 0 and stream.cache.misses > 0


def test_chunk_cache_lru_within_budget():
    cache = ChunkCache(3 * 100)
    loads = []

    def load(key):
        loads.append(key)
        return np.zeros(100, np.uint8)

    cache.get_many([1, 2, 3], load)
    cache.get_many([1], load)                 # hit; 1 becomes the most recent
    cache.get_many([4], load)                 # evicts 2, the least recent
    assert loads == [1, 2, 3, 4] and cache.bytes == 300
    cache.get_many([1, 3, 4], load)
    assert loads == [1, 2, 3, 4]              # all three still cached
    cache.get_many([2], load)
    assert loads[-1] == 2 and cache.hits == 4 and cache.misses == 5


def test_streaming_training_equals_ram_training(stores, tmp_path):
    """A store larger than the cache budget, streamed with 2 reader threads, gives the weights
    and history of the in-RAM path for the same seed."""
    n_bytes = 42 * 112 * 112 * 2              # every frame and mask of the store
    budget_mb = 0.5                           # 524,288 bytes < 1,053,696
    assert budget_mb * 2 ** 20 < n_bytes
    ram = run(stores, tmp_path, "ram", cfg={"stream_above_mb": 100})
    stream = run(stores, tmp_path, "stream",
                 cfg={"stream_above_mb": 0, "cache_mb": budget_mb, "loader_workers": 2})
    assert ram.meta["data_path"] == "ram" and stream.meta["data_path"] == "stream"
    assert stream.meta["chunk_cache"]["misses"] > 0
    assert stream.history == ram.history
    assert same_weights(stream.model, ram.model)
    assert stream.meta["data_hash"] == ram.meta["data_hash"]


def test_composite_sampling_weights():
    lengths = np.array([10, 10, 10, 10])
    groups = np.array([0, 0, 0, 1])
    # one group: exactly the single-source draws
    a = sample_clips(lengths, 50, 4, np.random.default_rng(1))
    b = sample_clips(lengths, 50, 4, np.random.default_rng(1), np.zeros(4, np.int64), [2.0])
    assert all((x == y).all() for x, y in zip(a, b))
    # 3:1 mixing: P(group 1) = 1/4 although it holds 1 video of 4
    v, s = sample_clips(lengths, 20000, 4, np.random.default_rng(2), groups, [3.0, 1.0])
    assert abs((v == 3).mean() - 0.25) < 0.015
    counts = np.bincount(v[v < 3], minlength=3) / (v < 3).sum()
    assert np.abs(counts - 1 / 3).max() < 0.02       # uniform within group 0
    assert (s >= 0).all() and (s <= 6).all()
    with pytest.raises(InputError, match="no usable video"):
        sample_clips(lengths, 5, 4, np.random.default_rng(0), np.zeros(4, np.int64), [1.0, 1.0])


def test_parse_sources(tmp_path):
    got = parse_sources("synthetic:TRAIN@3 real:TRAIN+VAL", tmp_path / "f", tmp_path / "t",
                        {"real", "synthetic"}.__contains__, what="train.sources")
    assert [(Path(s.frames).name, Path(s.masks).parent.name, s.splits, s.weight) for s in got] \
        == [("synthetic.zarr", "t", ("TRAIN",), 3.0), ("real.zarr", "t", ("TRAIN", "VAL"), 1.0)]
    with pytest.raises(InputError, match="train.sources source 'other'.*sources.other.teacher: "
                                         "true"):
        parse_sources("other:TRAIN", "f", "t", {"real"}.__contains__, what="train.sources")
    with pytest.raises(InputError, match="train.sources entry 'real:TRAIN@x'"):
        parse_sources("real:TRAIN@x", "f", "t", {"real"}.__contains__, what="train.sources")


def test_resume_restarts_when_masks_change(stores, tmp_path):
    seen = []

    def crash_at(last):
        def hook(epoch, row):
            seen.append(epoch)
            if epoch == last:
                raise Interrupt
        return hook

    with pytest.raises(Interrupt):
        run(stores, tmp_path, "m", on_epoch_end=crash_at(1))
    seen.clear()                              # same inputs: resumes at epoch 2
    with pytest.raises(Interrupt):
        run(stores, tmp_path, "m", on_epoch_end=crash_at(2))
    assert seen == [2]
    # one mask frame rewritten (same shape, same frame index): restarts at epoch 0
    import zarr
    g = zarr.open_group(stores[1], mode="r+")
    g["masks"][5] = 255 - g["masks"][5]
    seen.clear()
    res = run(stores, tmp_path, "m", on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [0, 1, 2, 3]
    # a recorded content_sha is the mask identity: changing it alone restarts too
    g.attrs["content_sha"] = "0123456789abcdef"
    seen.clear()
    res2 = run(stores, tmp_path, "m", on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [0, 1, 2, 3] and res2.meta["data_hash"] != res.meta["data_hash"]


class Pickled:
    """An arbitrary object: a weights-only load refuses it."""


def test_pickled_student_file_names_the_file(tmp_path):
    import pickle

    bad = tmp_path / "pickled.pt"
    torch.save({"format": "echodfkd-student", "obj": Pickled()}, bad)
    with pytest.raises(InputError, match="pickled.pt.*weights-only"):
        load_student(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(InputError, match="junk.pt"):
        read_student(junk)


# --- recipe options (issue 12 item 5): loss, lr schedule, burn-in, augmentation strength ---

from echodfkd.student.train import (augment_ranges, config_hash, draw_augment,  # noqa: E402
                            forward_burn_in, lr_factor, soft_dice_loss, training_loss)


def test_soft_dice_loss_by_hand():
    # p = sigmoid(0) = 0.5 on 4 pixels, target 1 1 0 0: inter 1, sum p 2, sum t 2
    # 1 - (2*1 + 1) / (2 + 2 + 1) = 0.4
    logits = torch.zeros(1, 1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 2, 2)
    assert soft_dice_loss(logits, target).item() == pytest.approx(0.4)
    # a confident exact prediction: loss ~0; both empty: exactly 0 (eps)
    assert soft_dice_loss((target * 2 - 1) * 50, target).item() == pytest.approx(0, abs=1e-6)
    assert soft_dice_loss(torch.full((1, 1, 1, 2, 2), -200.0), 0 * target).item() == 0.0
    # per clip, then the mean: clip 2 is a perfect empty pair (0), clip 1 gives 0.4
    two = soft_dice_loss(torch.cat([logits, torch.full_like(logits, -200.0)]),
                         torch.cat([target, 0 * target]))
    assert two.item() == pytest.approx(0.2)


def test_training_loss_options():
    logits, target = torch.zeros(1, 1, 1, 2, 2), torch.tensor([1.0, 1, 0, 0]).view(1, 1, 1, 2, 2)
    bce = training_loss(logits, target, "bce", 1.0)
    assert bce.item() == pytest.approx(math.log(2))   # BCE of p = 0.5, whatever the target
    both = training_loss(logits, target, "bce_dice", 0.5)
    assert both.item() == pytest.approx(math.log(2) + 0.5 * 0.4)
    with pytest.raises(InputError, match="loss must be one of"):
        training_loss(logits, target, "dice", 1.0)


def test_lr_factor():
    assert lr_factor("constant", 7, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == 1.0
    assert lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    with pytest.raises(InputError, match="lr_schedule"):
        lr_factor("step", 0, 10)


def test_forward_burn_in_equals_tail_of_one_pass():
    from echodfkd.student.model import StudentNet

    torch.manual_seed(0)
    # eval: BatchNorm per frame, so chunks are exact
    model = StudentNet(2, 1, 2, kernel_size=3, skip=False).eval()
    x = torch.rand(2, 6, 1, 8, 8)
    full, _ = model(x)
    tail = forward_burn_in(model, x, 4)
    assert tail.shape == (2, 2, 1, 8, 8)
    torch.testing.assert_close(tail, full[:, 4:])
    torch.testing.assert_close(forward_burn_in(model, x, 0), full)


def test_augment_strength_ranges():
    assert augment_ranges(1.0) == ((0.75, 1.3), (0.7, 1.4), (0.0, 0.35))  # today's ranges
    assert augment_ranges(0.0) == ((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))    # identity
    lo = augment_ranges(2.0)
    assert lo[0] == pytest.approx((0.5, 1.6)) and lo[1] == pytest.approx((0.4, 1.8))
    shape = (2, 3, 1, 4, 4)
    a = draw_augment(np.random.default_rng(1), shape, 1.0, 0.0)
    b = draw_augment(np.random.default_rng(1), shape, 2.0, 0.0)
    np.testing.assert_array_equal(a.noise, b.noise)   # same draws, scaled ranges
    np.testing.assert_allclose(b.sigma, 2 * a.sigma, rtol=1e-6)
    np.testing.assert_allclose(b.gain - 1, ((a.gain - 1) * 2), rtol=1e-5, atol=1e-6)
    x = torch.rand(shape)
    from echodfkd.student.train import apply_augment
    torch.testing.assert_close(apply_augment(x, draw_augment(np.random.default_rng(1), shape,
                                                             0.0, 0.0)), x)


def test_recipe_options_validated():
    for kw, needle in (({"burn_in": 16}, "burn_in"), ({"loss": "dice"}, "loss"),
                       ({"lr_schedule": "step"}, "lr_schedule"),
                       ({"augment_strength": 3.0}, "augment_strength"),
                       ({"dice_weight": -1.0}, "dice_weight"), ({"ema": 1.0}, "ema"),
                       ({"sharpen": 5.0}, "sharpen")):
        with pytest.raises(InputError, match=needle):
            recipe(**kw)


def test_config_hash_covers_what_is_learnt_not_how_it_is_read():
    base = config_hash(shape(), recipe(), 0, "d")
    assert config_hash(shape(), recipe(), 0, "d") == base
    for changed in (config_hash(shape(hidden=3), recipe(), 0, "d"),
                    config_hash(shape(), recipe(burn_in=2), 0, "d"),
                    config_hash(shape(), recipe(), 1, "d"),
                    config_hash(shape(), recipe(), 0, "e")):
        assert changed != base
    # reading the same data another way (stream, cache, threads) resumes the same run
    assert config_hash(shape(), recipe(stream_above_mb=0, cache_mb=1, loader_workers=0,
                                       threads=1), 0, "d") == base


def test_recipe_options_train_deterministically(stores, tmp_path):
    cfg = {"epochs": 2, "loss": "bce_dice", "lr_schedule": "cosine", "burn_in": 2,
           "augment_strength": 1.5, "half_resolution": False, "sharpen": 1.0,
           "spatial": 1.5}
    a = run(stores, tmp_path, "a", cfg=cfg)
    b = run(stores, tmp_path, "b", cfg=cfg)
    assert same_weights(a.model, b.model) and a.history == b.history
    plain = run(stores, tmp_path, "p", cfg={"epochs": 2, "half_resolution": False})
    assert not same_weights(a.model, plain.model)
    assert all(np.isfinite(h["train_loss"]) for h in a.history)


def test_ema_update_by_hand():
    from echodfkd.student.train import ema_update

    a, b = torch.nn.BatchNorm1d(1), torch.nn.BatchNorm1d(1)
    with torch.no_grad():
        a.weight.fill_(1.0)
        b.weight.fill_(3.0)
        b.running_mean.fill_(7.0)
    ema_update(a, b, 0.9, 0)      # step 0: d = min(0.9, 1/10) = 0.1 -> 0.1*1 + 0.9*3 = 2.8
    assert a.weight.item() == pytest.approx(2.8)
    assert a.running_mean.item() == 7.0          # buffers copied
    ema_update(a, b, 0.5, 100)    # d = 0.5 -> 0.5*2.8 + 0.5*3 = 2.9
    assert a.weight.item() == pytest.approx(2.9)


def test_ema_training_resumes_identically(stores, tmp_path):
    cfg = {"epochs": 3, "ema": 0.9}
    full = run(stores, tmp_path, "full", cfg=cfg)

    def crash(epoch, row):
        if epoch == 0:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(stores, tmp_path, "r", cfg=cfg, on_epoch_end=crash)
    resumed = run(stores, tmp_path, "r", cfg=cfg)
    assert resumed.history == full.history and same_weights(resumed.model, full.model)
    plain = run(stores, tmp_path, "p", cfg={"epochs": 3})
    assert not same_weights(full.model, plain.model)


def test_sharpen_augmentation_by_hand():
    from echodfkd.student.train import Augment, apply_augment

    x = torch.full((1, 1, 1, 5, 5), 0.5)
    x[0, 0, 0, 2, 2] = 0.6          # one brighter pixel; its 3x3 mean is 0.5 + 0.1/9
    ident = lambda a: Augment(np.ones(1, np.float32), np.ones(1, np.float32),  # noqa: E731
                              np.zeros(1, np.float32), np.zeros((1, 1, 1, 5, 5), np.float32), a)
    y = apply_augment(x, ident(np.array([1.0], np.float32)))
    assert y[0, 0, 0, 2, 2].item() == pytest.approx(0.6 + (0.1 - 0.1 / 9))
    assert y[0, 0, 0, 0, 0].item() == pytest.approx(0.5)   # flat region: unchanged
    torch.testing.assert_close(apply_augment(x, ident(None)), x)
    a = draw_augment(np.random.default_rng(3), (2, 1, 1, 4, 4), 1.0, 0.0)
    b = draw_augment(np.random.default_rng(3), (2, 1, 1, 4, 4), 1.0, 0.8)
    np.testing.assert_array_equal(a.noise, b.noise)        # earlier draws unchanged
    assert a.sharpen is None and ((b.sharpen >= 0) & (b.sharpen <= 0.8)).all()


def test_spatial_augmentation_by_hand():
    from echodfkd.student.train import apply_spatial, draw_spatial

    x = torch.zeros(1, 2, 1, 8, 8)
    x[0, :, 0, 4, 5] = 1.0                   # one bright pixel at row 4, column 5, both frames
    y = x.clone() * 0.5                      # its soft target
    ident = draw_spatial(np.random.default_rng(0), 1, 0.0)
    np.testing.assert_allclose(ident, [[[1, 0, 0], [0, 1, 0]]])
    xs, ys = apply_spatial(x, y, ident)
    torch.testing.assert_close(xs, x)
    torch.testing.assert_close(ys, y)
    # output(x) = input(x + 2 px): one pixel is 2 / 8 in [-1, 1] coordinates, so tx = 0.5
    shift = np.array([[[1, 0, 0.5], [0, 1, 0]]], np.float32)
    xs, ys = apply_spatial(x, y, shift)
    expect = torch.zeros_like(x)
    expect[0, :, 0, 4, 3] = 1.0              # moved 2 columns left, on every frame
    torch.testing.assert_close(xs, expect)
    torch.testing.assert_close(ys, expect * 0.5)   # the target moved with it


def test_draw_spatial_ranges():
    from echodfkd.student.train import draw_spatial

    th = draw_spatial(np.random.default_rng(5), 2000, 1.0)
    assert th.shape == (2000, 2, 3) and th.dtype == np.float32
    scale = 1 / np.sqrt(np.linalg.det(th[:, :, :2]))
    angle = np.arctan2(th[:, 1, 0], th[:, 0, 0])
    assert scale.min() >= np.exp(-0.12) - 1e-6 and scale.max() <= np.exp(0.12) + 1e-6
    assert np.abs(angle).max() <= 0.2 + 1e-6 and np.abs(angle).max() > 0.19
    assert np.abs(th[:, :, 2]).max() <= 0.12 + 1e-6
    double = draw_spatial(np.random.default_rng(5), 2000, 2.0)
    np.testing.assert_allclose(np.arctan2(double[:, 1, 0], double[:, 0, 0]), 2 * angle,
                               rtol=1e-5, atol=1e-6)


def test_spatial_option_validated_and_changes_training(stores, tmp_path):
    with pytest.raises(InputError, match="spatial"):
        recipe(spatial=-1.0)
    with pytest.raises(InputError, match="spatial"):
        recipe(spatial=4.0)
    a = run(stores, tmp_path, "a", cfg={"epochs": 1, "spatial": 0.0})
    b = run(stores, tmp_path, "b", cfg={"epochs": 1, "spatial": 1.0})
    assert not same_weights(a.model, b.model)
