import errno
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import echodfkd.student.infer as si
from echodfkd.student.model import StudentNet
from echodfkd.data.store import (INDEX_COLUMNS, TRACED_COLUMNS, finish_frame_store, init_frame_store,
                            open_frames, open_masks, partial_path)
from echodfkd.student.files import save_student
from echodfkd.errors import InputError
from echodfkd.data.store import StoreWriteError
from params import write_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make_frames(tmp_path, lengths):
    stop = np.cumsum(lengths)
    index = pd.DataFrame({
        "FileName": [f"v{i}" for i in range(len(lengths))], "Split": "TEST",
        "start": stop - np.asarray(lengths), "stop": stop, "FPS": 50.0, "EF": 55.0,
        "ESV": 0.0, "EDV": 0.0, "FrameHeight": 112, "FrameWidth": 112,
        "NumberOfFrames": lengths})[INDEX_COLUMNS]
    path = tmp_path / "frames.zarr"
    g = init_frame_store(path, index, 0, with_gt=False, shard_frames=16, chunk_frames=8)
    g["frames"][:] = np.random.default_rng(0).integers(0, 256, (int(stop[-1]), 112, 112),
                                                       dtype=np.uint8)
    finish_frame_store(g, index, pd.DataFrame(columns=TRACED_COLUMNS))
    return path


@pytest.fixture
def student(tmp_path):
    torch.manual_seed(0)
    net = StudentNet(blocks=2, layers_per_block=1, hidden=2, kernel_size=3, skip=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "student.pt"
    save_student(path, net, {"note": "test"})
    return path, net.eval()


def test_chunked_video_equals_whole(student):
    _, net = student
    frames = np.random.default_rng(1).integers(0, 256, (13, 112, 112), dtype=np.uint8)
    whole = si.predict_video(net, frames, chunk=13, window=0, warmup=0)
    chunked = si.predict_video(net, frames, chunk=4, window=0, warmup=0)
    assert whole.dtype == np.uint8 and whole.shape == (13, 112, 112)
    assert np.abs(whole.astype(int) - chunked.astype(int)).max() <= 1  # rounding at .5 only
    # the value is round(sigmoid(logit) * 255)
    with torch.no_grad():
        logits, _ = net(torch.from_numpy(frames).float().div(255)[None, :, None])
    expected = torch.round(torch.sigmoid(logits[0, :, 0]) * 255).numpy().astype(np.uint8)
    assert np.abs(whole.astype(int) - expected.astype(int)).max() <= 1


def test_padded_batch_equals_single(student):
    _, net = student
    rng = np.random.default_rng(2)
    videos = [rng.integers(0, 256, (n, 112, 112), dtype=np.uint8) for n in (5, 9, 2)]
    batched = si.predict_padded(net, videos, chunk=4, window=0, warmup=0)
    for v, b in zip(videos, batched):
        single = si.predict_video(net, v, chunk=4, window=0, warmup=0)
        assert b.shape == v.shape
        assert np.abs(b.astype(int) - single.astype(int)).max() <= 1


def test_infer_store_aligned(tmp_path, student):
    path, net = student
    lengths = [7, 20, 5, 11]            # videos straddle the 16-frame shards
    frames = make_frames(tmp_path, lengths)
    out = tmp_path / "student_masks.zarr"
    si.infer_store(path, frames, out, chunk=6, window=0, warmup=0, videos_per_batch=2, shard_frames=16,
                   chunk_frames=8, device="cpu", progress=False)
    fs = open_frames(frames)
    ms = open_masks(out, frames=fs)
    assert ms.attrs["complete"] is True and ms.attrs["model"] == "student"
    assert not partial_path(out).exists()
    masks = ms.masks[:]
    for i in range(len(lengths)):
        row = fs.index.iloc[i]
        expected = si.predict_video(net, fs.video(i), chunk=64, window=0, warmup=0)
        got = masks[int(row.start):int(row.stop)]
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_infer_store_resumes(tmp_path, student, monkeypatch):
    path, _ = student
    frames = make_frames(tmp_path, [7, 20, 5, 11])
    ref = tmp_path / "ref.zarr"
    si.infer_store(path, frames, ref, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                   chunk_frames=8, device="cpu", progress=False)
    calls = []
    real = si.predict_padded

    def flaky(model, videos, **kw):
        calls.append(len(videos))
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return real(model, videos, **kw)

    out = tmp_path / "out.zarr"
    monkeypatch.setattr(si, "predict_padded", flaky)
    with pytest.raises(RuntimeError):
        si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                       chunk_frames=8, device="cpu", progress=False)
    assert not out.exists() and partial_path(out).exists()
    import zarr
    done = zarr.open_group(str(partial_path(out)), mode="r").attrs["done_blocks"]
    assert done == [0]                  # block 0 (videos 0, 1) finished
    resumed = []
    monkeypatch.setattr(si, "predict_padded",
                        lambda model, videos, **kw: resumed.append(len(videos[0]))
                        or real(model, videos, **kw))
    si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                   chunk_frames=8, device="cpu", progress=False)
    assert resumed == [20, 5, 11]       # video 0 (block 0 only) is not run again
    np.testing.assert_array_equal(open_masks(out).masks[:], open_masks(ref).masks[:])


def infer_args(student, frames, out):
    """The stage's command line: paths only (absolute, the stage runs elsewhere)."""
    return ["--student", str(student), "--frames", str(frames), "--out", str(out)]


# the params the infer stage reads in these tests, by section (each key it reads)
STAGE_PARAMS = {"infer": {"chunk": 3, "videos_per_batch": 0, "device": "cpu"},
                "train": {"threads": 1},
                "evaluate": {"split": "TEST", "agreement_split": "TEST"},
                "ingest": {"shard_frames": 16, "chunk_frames": 8}}
DROP = object()   # an ``over`` value that removes the key from params.yaml


def stage_params(monkeypatch, folder, **over):
    """Write ``folder``/params.yaml (the project's, with ``STAGE_PARAMS`` and then ``over``
    merged in by section, e.g. ``ingest={"shard_frames": 0}``; a ``DROP`` value removes the
    key) and run the stage there. Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_params(folder)
    values = yaml.safe_load(path.read_text())
    for section in set(STAGE_PARAMS) | set(over):
        merged = {**values[section], **STAGE_PARAMS.get(section, {}), **over.get(section, {})}
        values[section] = {k: v for k, v in merged.items() if v is not DROP}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    monkeypatch.chdir(folder)
    return path


def load_stage():
    spec = importlib.util.spec_from_file_location("stage_infer", ROOT / "stages" / "infer.py")
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def test_stage_cli(tmp_path, student, monkeypatch, capsys):
    from echodfkd.cli import run as run_stage

    path, net = student
    frames = make_frames(tmp_path, [4, 6])
    stage = load_stage()
    out = tmp_path / "data" / "student" / "real.zarr"
    stage_params(monkeypatch, tmp_path / "project")
    stage.main(infer_args(path, frames, out))
    fs = open_frames(frames)
    ms = open_masks(out, frames=fs)
    assert ms.masks.shape == (10, 112, 112) and ms.attrs["splits"] == ["TEST"]
    # the layout is params.yaml's (ingest.shard_frames 16, ingest.chunk_frames 8)
    assert ms.masks.shards[0] == 16 and ms.masks.chunks[0] == 8
    expected = si.predict_video(net, fs.video(0), chunk=64, window=0, warmup=0)   # params.yaml's infer.chunk 3
    assert np.abs(ms.masks[:4].astype(int) - expected.astype(int)).max() <= 1
    args = infer_args(path, frames, tmp_path / "o.zarr")
    for k in range(0, 6, 2):                              # every path argument is required
        with pytest.raises(SystemExit) as exc:
            stage.main(args[:k] + args[k + 2:])
        assert exc.value.code == 2
    for section, key in (("infer", "chunk"), ("infer", "videos_per_batch"),
                         ("infer", "device"), ("train", "threads"), ("evaluate", "split"),
                         ("evaluate", "agreement_split"), ("ingest", "shard_frames"),
                         ("ingest", "chunk_frames")):   # and every params key it reads
        stage_params(monkeypatch, tmp_path / "project", **{section: {key: DROP}})
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            run_stage(stage.main, args)
        err = capsys.readouterr().err
        assert exc.value.code == 1 and err.count("\n") == 1
        assert err.startswith(f"error: params.yaml: {section}.{key} is missing"), err
    assert not (tmp_path / "o.zarr").exists()
    assert not partial_path(tmp_path / "o.zarr").exists()


class Pickled:
    """An arbitrary object: a weights-only load refuses it."""


def test_stage_errors_name_the_file(tmp_path, student, capsys, monkeypatch):
    from echodfkd.cli import run as run_stage

    path, _ = student
    frames = make_frames(tmp_path, [4, 6])
    stage = load_stage()
    pickled = tmp_path / "pickled_student.pt"
    torch.save({"format": "echodfkd-student", "x": Pickled()}, pickled)
    other = tmp_path / "teacher.pt"
    torch.save({"format": "echodfkd-teacher", "state_dict": {}}, other)
    for argv, over, needle in (
            (infer_args(pickled, frames, tmp_path / "a.zarr"), {}, "pickled_student.pt"),
            (infer_args(other, frames, tmp_path / "b.zarr"), {}, "teacher.pt"),
            (infer_args(path, frames, tmp_path / "c.zarr"),
             {"evaluate": {"split": "VAL"}}, "'VAL'"),
            (infer_args(path, frames, tmp_path / "d.zarr"),
             {"evaluate": {"agreement_split": "VAL"}}, "'VAL'"),
            (infer_args(path, frames, tmp_path / "e.zarr"),
             {"evaluate": {"split": " "}}, "splits [' '] not in")):
        stage_params(monkeypatch, tmp_path / "project", **over)
        with pytest.raises(SystemExit) as exc:
            run_stage(stage.main, argv)
        err = capsys.readouterr().err
        assert exc.value.code == 1 and err.startswith("error: ") and needle in err, err
        assert err.count("\n") == 1
        assert not Path(argv[-1]).exists() and not partial_path(argv[-1]).exists()


@pytest.mark.parametrize("over, message", [
    ({"ingest": {"shard_frames": 0}}, "error: shard_frames must be a whole number >= 1, "
                                      "got 0: fix ingest.shard_frames\n"),
    ({"ingest": {"shard_frames": -64}}, "error: shard_frames must be a whole number >= 1, "
                                        "got -64: fix ingest.shard_frames\n"),
    ({"ingest": {"shard_frames": 16.0}}, "error: params.yaml: ingest.shard_frames must be an "
                                         "integer, got 16.0: fix it in params.yaml\n"),
    ({"ingest": {"shard_frames": "abc"}}, "error: params.yaml: ingest.shard_frames must be an "
                                          "integer, got 'abc': fix it in params.yaml\n"),
    ({"ingest": {"chunk_frames": 0}}, "error: chunk_frames must be a whole number >= 1, "
                                      "got 0: fix ingest.chunk_frames\n"),
    ({"ingest": {"chunk_frames": 12}}, "error: shard_frames 16 is not a multiple of "
                                       "chunk_frames 12: fix ingest.shard_frames or "
                                       "ingest.chunk_frames\n"),
    ({"infer": {"chunk": 0}}, "error: chunk must be a whole number >= 1, got 0: fix "
                              "infer.chunk\n"),
    ({"infer": {"videos_per_batch": -1}}, "error: videos_per_batch must be a whole number "
                                          ">= 1, got -1: fix infer.videos_per_batch (0 "
                                          "there: auto)\n"),
    ({"infer": {"chunk": "3"}}, "error: params.yaml: infer.chunk must be an integer, got "
                                "'3': fix it in params.yaml\n"),
])
def test_stage_bad_sizes_are_one_line_errors_without_a_store(tmp_path, student, capsys,
                                                             monkeypatch, over, message):
    from echodfkd.cli import run as run_stage

    path, _ = student
    frames = make_frames(tmp_path, [7, 20])
    out = tmp_path / "m.zarr"
    stage_params(monkeypatch, tmp_path / "project", **over)
    with pytest.raises(SystemExit) as exc:
        run_stage(load_stage().main, infer_args(path, frames, out))
    assert exc.value.code == 1
    assert capsys.readouterr().err == message
    assert not out.exists() and not partial_path(out).exists()


def test_infer_only_some_splits(tmp_path, student):
    path, net = student
    frames = make_frames(tmp_path, [10, 7, 9])
    g = __import__("zarr").open_group(str(frames), mode="r+")
    videos = dict(g.attrs["videos"])
    videos["data"] = [row[:1] + [split] + row[2:]
                      for row, split in zip(videos["data"], ["TRAIN", "TEST", "TRAIN"])]
    g.attrs["videos"] = videos
    # videos_per_batch None: chosen for the device; a mask store of 2048-frame shards
    out = si.infer_store(path, frames, tmp_path / "m.zarr", chunk=8, window=0, warmup=0, videos_per_batch=None,
                         device="cpu", shard_frames=2048, chunk_frames=128, progress=False,
                         splits=["TEST"])
    fs = open_frames(frames)
    ms = open_masks(out, fs)
    assert ms.attrs["splits"] == ["TEST"]
    masks = ms.masks[:]
    assert not masks[:10].any() and not masks[17:].any()
    np.testing.assert_array_equal(masks[10:17], si.predict_video(net, fs.frames[10:17], chunk=8, window=0, warmup=0))
    with pytest.raises(ValueError, match="VAL"):
        si.infer_store(path, frames, tmp_path / "n.zarr", chunk=8, window=0, warmup=0, videos_per_batch=None,
                       device="cpu", shard_frames=2048, chunk_frames=128, progress=False,
                       splits=["VAL"])


@pytest.mark.parametrize("over, message", [
    ({"shard_frames": 0}, "shard_frames must be a whole number >= 1, got 0: fix "
                          "ingest.shard_frames"),
    ({"shard_frames": -64}, "shard_frames must be a whole number >= 1, got -64: fix "
                            "ingest.shard_frames"),
    ({"shard_frames": 16.0}, "shard_frames must be a whole number >= 1, got 16.0: fix "
                             "ingest.shard_frames"),
    ({"chunk_frames": 0}, "chunk_frames must be a whole number >= 1, got 0: fix "
                          "ingest.chunk_frames"),
    ({"chunk_frames": 12}, "shard_frames 16 is not a multiple of chunk_frames 12: fix "
                           "ingest.shard_frames or ingest.chunk_frames"),
    ({"chunk": 0}, "chunk must be a whole number >= 1, got 0: fix infer.chunk"),
    ({"chunk": -3}, "chunk must be a whole number >= 1, got -3: fix infer.chunk"),
    ({"videos_per_batch": 0}, "videos_per_batch must be a whole number >= 1, got 0: fix "
                              "infer.videos_per_batch (0 there: auto)"),
])
def test_infer_store_rejects_bad_sizes_before_writing(tmp_path, student, over, message):
    path, _ = student
    frames = make_frames(tmp_path, [7, 20])
    out = tmp_path / "m.zarr"
    kw = {"chunk": 64, "window": 0, "warmup": 0, "videos_per_batch": None, "shard_frames": 16,
          "chunk_frames": 8,
          "device": "cpu", "progress": False, **over}
    with pytest.raises(InputError) as err:
        si.infer_store(path, frames, out, **kw)
    assert str(err.value) == message
    assert not out.exists() and not partial_path(out).exists()


def test_resume_with_another_shard_size_rebuilds(tmp_path, student, monkeypatch):
    path, _ = student
    frames = make_frames(tmp_path, [7, 20, 5, 11])          # 43 frames
    ref = tmp_path / "ref.zarr"
    si.infer_store(path, frames, ref, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=32,
                   chunk_frames=8, device="cpu", progress=False)
    out = tmp_path / "out.zarr"
    real = si.predict_padded
    calls = []

    def flaky(model, videos, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return real(model, videos, **kw)

    monkeypatch.setattr(si, "predict_padded", flaky)
    with pytest.raises(RuntimeError):     # blocks of 16: block 0 (frames 0-15) finished
        si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                       chunk_frames=8, device="cpu", progress=False)
    monkeypatch.setattr(si, "predict_padded", real)
    # blocks of 32: block 0 is frames 0-31, of which 16-31 were never written; resuming the
    # old partial would skip it and leave zeros
    si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=32,
                   chunk_frames=8, device="cpu", progress=False)
    np.testing.assert_array_equal(open_masks(out).masks[:], open_masks(ref).masks[:])


def test_disk_full_names_the_store_and_resumes(tmp_path, student, monkeypatch):
    import zarr.storage._local as local

    path, _ = student
    frames = make_frames(tmp_path, [7, 20, 5, 11])          # 43 frames: 3 blocks of 16
    ref = tmp_path / "ref.zarr"
    si.infer_store(path, frames, ref, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                   chunk_frames=8, device="cpu", progress=False)
    out = tmp_path / "out.zarr"
    real_put, shards = local._put, []

    def put(p, value, exclusive=False):
        if "masks" in Path(p).parts and "c" in Path(p).parts:
            shards.append(p)
            if len(shards) == 2:            # the second block: the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(p, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    with pytest.raises(StoreWriteError) as err:
        si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                       chunk_frames=8, device="cpu", progress=False)
    staging = partial_path(out)
    assert str(err.value) == (
        f"cannot write the mask store {str(out)!r}: ENOSPC [Errno 28] No space left on device; "
        f"free disk space on that file system, then rerun (the partial store {str(staging)!r} "
        f"is kept, never marked complete; the next run resumes it)")
    assert not out.exists()
    with pytest.raises(InputError, match="incomplete"):     # never taken for a complete store
        open_masks(staging)
    monkeypatch.setattr(local, "_put", real_put)
    si.infer_store(path, frames, out, chunk=64, window=0, warmup=0, videos_per_batch=1, shard_frames=16,
                   chunk_frames=8, device="cpu", progress=False)
    np.testing.assert_array_equal(open_masks(out).masks[:], open_masks(ref).masks[:])


# ------------------------------------------------------------------ windows over long videos

def test_window_spans_tile_the_video():
    assert si.window_spans(10, 0, 0) == [(0, 0, 10)]                 # carried state
    assert si.window_spans(10, 16, 8) == [(0, 0, 10)]                # shorter than a window
    assert si.window_spans(40, 16, 8) == [(0, 0, 16), (8, 16, 32), (24, 32, 40)]
    assert si.window_spans(33, 16, 0) == [(0, 0, 16), (16, 16, 32), (32, 32, 33)]
    assert si.window_spans(20, 4, 30) == [(0, 0, 4), (0, 4, 8), (0, 8, 12), (0, 12, 16),
                                          (0, 16, 20)]              # warm-up from frame 0
    for n, window, warmup in [(1000, 16, 8), (7, 3, 2), (64, 64, 0)]:
        spans = si.window_spans(n, window, warmup)
        kept = np.concatenate([np.arange(k, s) for _, k, s in spans])
        np.testing.assert_array_equal(kept, np.arange(n))            # each frame kept once


@pytest.mark.parametrize("window, warmup, message", [
    (-1, 0, "infer.window must be a whole number >= 0, got -1"),
    (16, 2.5, "infer.warmup must be a whole number >= 0, got 2.5"),
    (0, 8, "infer.warmup is 8 but infer.window is 0"),
])
def test_bad_windows_are_named(window, warmup, message):
    with pytest.raises(InputError, match=message):
        si.check_windows(window, warmup)
    with pytest.raises(InputError, match=message):
        si.InferConfig(chunk=64, window=window, warmup=warmup, videos_per_batch=0,
                       device="cpu")


def test_windowed_equals_fresh_runs_cross_faded(student):
    """Each window's frames equal running its span alone from a fresh state; a window's
    warm-up frames cross-fade linearly from the window before (weights 1/4, 2/4, 3/4 of the
    new window for a 3-frame warm-up)."""
    _, net = student
    frames = np.random.default_rng(3).integers(0, 256, (23, 112, 112), dtype=np.uint8)
    got = si.predict_video(net, frames, chunk=5, window=8, warmup=3).astype(int)
    spans = si.window_spans(23, 8, 3)
    assert spans == [(0, 0, 8), (5, 8, 16), (13, 16, 23)]
    alone = [si.predict_video(net, frames[a:c], chunk=64, window=0, warmup=0).astype(int)
             for a, _, c in spans]
    for (a, k, c), mine, nxt in zip(spans, alone, alone[1:] + [None]):
        untouched = c if nxt is None else c - 3                  # the next warm-up starts there
        assert np.abs(got[k:untouched] - mine[k - a:untouched - a]).max() <= 1
        if nxt is not None:
            for j in range(3):                                   # frames c-3, c-2, c-1
                w = (j + 1) / 4
                blend = np.rint((1 - w) * mine[c - 3 - a + j] + w * nxt[j])
                assert np.abs(got[c - 3 + j] - blend).max() <= 1
    # padded batches window the same way
    videos = [frames, frames[:11]]
    for v, b in zip(videos, si.predict_padded(net, videos, chunk=4, window=8, warmup=3)):
        single = si.predict_video(net, v, chunk=4, window=8, warmup=3)
        assert np.abs(b.astype(int) - single.astype(int)).max() <= 1


def test_padded_video_ending_in_a_warm_up_equals_running_it_alone():
    """Videos of 6 and 7 frames end inside the warm-up (frames 5-7) of the second window that
    a longer video of the batch goes on to: their last frames are not cross-faded with it, as
    they are not when each runs alone (a net with sharp outputs, so a blend would show)."""
    torch.manual_seed(0)
    net = StudentNet(blocks=2, layers_per_block=1, hidden=4, kernel_size=3, skip=False).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(5)
    frames = np.random.default_rng(3).integers(0, 256, (23, 112, 112), dtype=np.uint8)
    videos = [frames, frames[:6], frames[:7], frames[:8], frames[:11]]
    for v, b in zip(videos, si.predict_padded(net, videos, chunk=4, window=8, warmup=3)):
        single = si.predict_video(net, v, chunk=4, window=8, warmup=3)
        assert np.abs(b.astype(int) - single.astype(int)).max() <= 1, len(v)


class FadingNet(torch.nn.Module):
    """A toy recurrent segmenter whose state fades: it thresholds the frame (logit +-10 about
    0.5) until its state has run ``fade_after`` frames, then its logits sink by 40 (every
    mask empty), as a ConvLSTM carried far past its training clips can."""

    def __init__(self, fade_after: int):
        super().__init__()
        self.fade_after = fade_after
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x, state=None):          # x (B, T, 1, H, W) in [0, 1]
        seen = 0 if state is None else state
        t = seen + torch.arange(x.shape[1]).view(1, -1, 1, 1, 1)
        logits = (x - 0.5) * self.scale - 40.0 * (t >= self.fade_after)
        return logits, seen + x.shape[1]


def _empty_runs(pred: np.ndarray, gt: np.ndarray) -> int:
    """Longest run of frames whose predicted mask is empty while the ground truth is not."""
    bad = (pred.reshape(len(pred), -1).max(1) < 128) & gt.reshape(len(gt), -1).any(1)
    best = run = 0
    for b in bad:
        run = run + 1 if b else 0
        best = max(best, run)
    return best


def test_thousand_frame_video_has_no_empty_run_when_windowed():
    """A 1,000-frame video whose LV (a pulsing disk) is always there: the state carried over
    the whole video fades after 48 frames and empties 952 masks in a row; 16-frame windows
    warmed on 8 frames never run a state past 24 frames, so no mask is empty."""
    n = 1000
    yy, xx = np.mgrid[:112, :112]
    r = 20 + 8 * np.cos(2 * np.pi * np.arange(n) / 37)
    gt = (yy - 56) ** 2 + (xx - 56) ** 2 <= (r[:, None, None]) ** 2
    frames = np.where(gt, 200, 30).astype(np.uint8)
    net = FadingNet(fade_after=48).eval()
    carried = si.predict_video(net, frames, chunk=64, window=0, warmup=0)
    windowed = si.predict_video(net, frames, chunk=64, window=16, warmup=8)
    assert _empty_runs(carried, gt) == n - 48
    assert _empty_runs(windowed, gt) <= 2
    np.testing.assert_array_equal(windowed >= 128, gt)


def test_infer_warns_beyond_the_trained_horizon(tmp_path, caplog):
    net = StudentNet(blocks=2, layers_per_block=1, hidden=2, kernel_size=3, skip=False)
    path = tmp_path / "s.pt"
    save_student(path, net, {"train_config": {"sequence_length": 16}})
    with caplog.at_level("WARNING", logger=si.log.name):
        assert si.warn_beyond_horizon(path, 32, 0, 0) is None       # 2x: still within
        msg = si.warn_beyond_horizon(path, 200, 0, 0)
        assert "trained on 16-frame clips (train.sequence_length)" in msg
        assert "whole videos of up to 200 frames" in msg and "infer.window" in msg
        assert si.warn_beyond_horizon(path, 200, 16, 8) is None     # 24 frames per state
        assert "infer.warmup + infer.window = 40" in si.warn_beyond_horizon(path, 200, 32, 8)
    assert len(caplog.records) == 2
    bare = tmp_path / "bare.pt"
    save_student(bare, net, {"note": "no train config"})
    assert si.warn_beyond_horizon(bare, 10_000, 0, 0) is None       # horizon unknown
