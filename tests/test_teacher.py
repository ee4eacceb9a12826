"""Teacher checkpoints, imported outputs, fusion and resumable inference into a mask store."""

import json
import subprocess
import time
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from echodfkd.teacher import archs, build, checkpoint, fusion, infer, model, outputs
from echodfkd.teacher import members as mem
from echodfkd.data.store import (finish_frame_store, init_frame_store, open_frames, open_masks,
                            partial_path, teacher_covers)
from cluster import dask_cluster
from params import write_params

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers

def make_store(path, lengths=(5, 7, 4), shard=4, seed=0, traced=()):
    """Tiny frame store: videos of ``lengths`` frames, random uint8 frames, split TRAIN/VAL/TEST
    cycling; ``traced`` = [(video, frame, phase)], masks = frame > 128."""
    rng = np.random.default_rng(seed)
    stops = np.cumsum(lengths)
    splits = ["TRAIN", "VAL", "TEST"]
    index = pd.DataFrame({
        "FileName": [f"vid{i}" for i in range(len(lengths))],
        "Split": [splits[i % 3] for i in range(len(lengths))],
        "start": stops - np.asarray(lengths), "stop": stops, "FPS": 50.0, "EF": 60.0,
        "ESV": 20.0, "EDV": 50.0, "FrameHeight": 112, "FrameWidth": 112,
        "NumberOfFrames": list(lengths)})
    g = init_frame_store(path, index, len(traced), with_gt=False, shard_frames=shard,
                         chunk_frames=2)
    frames = rng.integers(0, 256, (int(stops[-1]), 112, 112), dtype=np.uint8)
    g["frames"][:] = frames
    rows = []
    for r, (v, f, phase) in enumerate(traced):
        g["traced_masks"][r] = (frames[index.start[v] + f] > 128).astype(np.uint8)
        rows.append({"FileName": f"vid{v}", "video": v, "frame": f, "phase": phase, "row": r})
    finish_frame_store(g, index, pd.DataFrame(rows, columns=["FileName", "video", "frame",
                                                             "phase", "row"]))
    return open_frames(path), frames


class Tiny(nn.Module):
    """Stand-in teacher: logit = a * x + b on x = frames / 255 (one 1x1 conv)."""

    def __init__(self, a=4.0, b=-2.0):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.conv.weight.fill_(a)
            self.conv.bias.fill_(b)

    def forward(self, x):
        return self.conv(x)


def tiny_proba(frames, a=4.0, b=-2.0):
    return 1 / (1 + np.exp(-(a * frames.astype(np.float32) / 255 + b)))


@pytest.fixture
def tiny_arch(monkeypatch):
    monkeypatch.setitem(archs.ARCHS, "tiny", archs.ArchSpec(lambda **c: Tiny(**c), archs.unit_scale))
    monkeypatch.setitem(archs.ARCHS, "unet", archs.ArchSpec(lambda **c: Tiny(), archs.unit_scale))


def write_seg(folder, store, rng, skip=(), wrong=()):
    folder.mkdir(exist_ok=True)
    arrays = {}
    for name, s, e in zip(store.index.FileName, store.index.start, store.index.stop):
        if name in skip:
            continue
        t = e - s + (1 if name in wrong else 0)
        a = rng.integers(0, 256, (t, 1, 112, 112), dtype=np.uint8)
        np.savez_compressed(folder / f"{name}.seg.npz", a)
        arrays[name] = a
    return arrays


class Counting:
    """Member that records its blocks; optionally fails on its ``fail_on``-th call."""

    def __init__(self, fail_on=None):
        self.weight, self.needs_frames, self.fail_on, self.calls = 1.0, True, fail_on, []

    def describe(self, index=None):
        return {"kind": "counting"}

    def at(self, cwd):
        return self   # no paths; the test reads ``calls`` on this very object

    def validate(self, index):
        pass

    def predict_block(self, frames, start, stop, videos, *, batch_size, device, amp):
        self.calls.append((start, stop))
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("simulated interruption")
        return frames[:, ::-1, :] / 255.0  # any deterministic function of the frames


# ---------------------------------------------------------------------------------------------
# preprocessing and checkpoints

def test_echonet_normalise():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    y = archs.echonet_normalise(x)
    assert y.shape == (1, 3, 1, 2) and y.dtype == torch.float32
    for c in range(3):
        assert y[0, c, 0, 0].item() == pytest.approx(-archs.ECHONET_MEAN[c] / archs.ECHONET_STD[c])
        assert y[0, c, 0, 1].item() == pytest.approx((255 - archs.ECHONET_MEAN[c]) / archs.ECHONET_STD[c])
    assert archs.unit_scale(x)[0, 0, 0, 1].item() == 1.0


def test_echonet_checkpoint_roundtrip(tmp_path, monkeypatch):
    from echodfkd.teacher.deeplabv3 import deeplabv3_resnet50
    torch.manual_seed(0)
    ref = deeplabv3_resnet50().eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode outputs depend on them
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.num_batches_tracked.fill_(7)
    sd = {f"module.{k}": v for k, v in ref.state_dict().items()}
    p = tmp_path / "deeplabv3_resnet50_random.pt"
    torch.save({"epoch": 45, "state_dict": sd,
                "opt_dict": {"state": {0: {"momentum_buffer": torch.zeros(3)}},
                             "param_groups": [{"lr": 1e-5, "momentum": 0.9, "params": [0]}]},
                "scheduler_dict": {"step_size": 15, "gamma": 0.1, "last_epoch": 45},
                "best_loss": 0.0123, "loss": 0.0456}, p)
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))

    t = model.load_teacher(p, "cpu", amp=False)
    assert t.arch == "deeplabv3_resnet50" and t.config == {"num_classes": 1}
    assert t.meta == {"source_format": "echonet-dynamic", "epoch": 45, "best_loss": 0.0123,
                      "loss": 0.0456}
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64), dtype=np.uint8)
    prob = t.predict_proba(frames, batch_size=1)
    with torch.inference_mode():
        logit = ref(archs.echonet_normalise(torch.from_numpy(frames)))["out"][:, 0].numpy()
    assert prob.shape == (2, 64, 64) and prob.dtype == np.float32
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit)), rtol=1e-5, atol=1e-6)

    q = tmp_path / "teacher.pt"
    checkpoint.save_teacher(q, t.arch, t.config, t.model, t.meta)
    t2 = model.load_teacher(q, "cpu", amp=False)
    assert t2.arch == t.arch and t2.meta == t.meta
    np.testing.assert_array_equal(t2.predict_proba(frames, batch_size=1), prob)
    assert calls and all(k.get("weights_only") is True for k in calls)


def test_project_checkpoint_roundtrip(tmp_path, tiny_arch):
    p = tmp_path / "t.pt"
    checkpoint.save_teacher(p, "tiny", {"a": 3.0, "b": -1.0}, Tiny(3.0, -1.0), {"note": "x"})
    assert not (tmp_path / "t.pt.tmp").exists()
    raw = torch.load(p, weights_only=True)
    assert raw["format"] == "echodfkd-teacher" and raw["arch"] == "tiny"
    assert set(raw) == {"format", "arch", "config", "state_dict", "meta"}
    t = model.load_teacher(p, "cpu", amp=False)
    f = np.array([[[0, 255], [51, 204]]], dtype=np.uint8)
    np.testing.assert_allclose(t.predict_proba(f, batch_size=64), tiny_proba(f, 3.0, -1.0),
                               rtol=1e-6)
    with pytest.raises(TypeError, match="JSON-like"):
        checkpoint.save_teacher(p, "tiny", {}, Tiny(), {"bad": object()})


def test_bad_checkpoints(tmp_path):
    p = tmp_path / "weird.pt"
    torch.save({"foo": 1, "bar": [2]}, p)
    with pytest.raises(ValueError, match=r"unknown teacher checkpoint format.*weird\.pt.*'foo'"):
        model.load_teacher(p, "cpu", amp=False)
    torch.save({"format": "other", "state_dict": {}}, p)
    with pytest.raises(ValueError, match="unknown format 'other'"):
        model.load_teacher(p, "cpu", amp=False)
    # EchoNet-style checkpoint missing keys and carrying a stray one
    torch.save({"state_dict": {"module.backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
                               "module.extra.weight": torch.zeros(1)}, "epoch": 1}, p)
    with pytest.raises(ValueError, match=r"weird\.pt.*361 missing keys: 'backbone\.bn1\.weight'"
                                         r".*1 unexpected keys: 'extra\.weight'"):
        model.load_teacher(p, "cpu", amp=False)
    torch.save({"state_dict": {"module.x": torch.zeros(1)}, "obj": pd.Timestamp(0)}, p)
    with pytest.raises(ValueError, match="weights_only=True"):
        model.load_teacher(p, "cpu", amp=False)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        model.load_teacher(tmp_path / "nope.pt", "cpu", amp=False)


# ---------------------------------------------------------------------------------------------
# fusion

def test_fuse_probabilities():
    u = np.array([0, 51, 255, 7], dtype=np.uint8)
    out = fusion.fuse_probabilities([u], [2.0])
    assert out.dtype == np.uint8 and np.array_equal(out, u) and out is not u
    # uint8 51 = 0.2 and float 0.6, equal weights -> 0.4 -> 102
    assert fusion.fuse_probabilities([np.uint8([51]), np.float32([0.6])], [1, 1]).tolist() == [102]
    # weights 1:3 over 0 and 1 -> 0.75 -> 191.25 -> 191
    assert fusion.fuse_probabilities([np.float32([0.0]), np.float32([1.0])], [1, 3]).tolist() == [191]
    assert fusion.quantise(np.float32([0.0, 0.5, 1.0, 0.1])).tolist() == [0, 128, 255, 26]
    with pytest.raises(ValueError, match="weights"):
        fusion.fuse_probabilities([u, u], [1.0, -1.0])
    with pytest.raises(ValueError, match="one weight per output"):
        fusion.fuse_probabilities([u], [1.0, 1.0])


# ---------------------------------------------------------------------------------------------
# imported outputs

def test_seg_npz_import_is_identical(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr")  # videos of 5, 7, 4 frames; blocks of 4
    arrays = write_seg(tmp_path / "seg", store, np.random.default_rng(1))
    out = tmp_path / "m.zarr"
    ms = infer.infer_teacher([mem.OutputsMember(str(tmp_path / "seg"))], store, out,
                             block_frames=4, batch_size=64, device="cpu", scheduler="", workers=1,
                             progress=False, amp=False)
    expected = np.concatenate([arrays[n][:, 0] for n in store.index.FileName])
    assert ms.masks.dtype == np.uint8
    np.testing.assert_array_equal(ms.masks[:], expected)
    assert ms.attrs["complete"] is True and ms.attrs["done_blocks"] == [[0, 4], [4, 8],
                                                                        [8, 12], [12, 16]]
    assert not partial_path(out).exists()
    open_masks(out, store)  # aligned with the frames


def test_npy_values_and_resize(tmp_path):
    d = tmp_path / "npy"
    d.mkdir()
    p = np.linspace(0, 1, 3 * 112 * 112, dtype=np.float32).reshape(3, 112, 112)
    np.save(d / "prob.npy", p)
    np.testing.assert_array_equal(outputs.read_teacher_outputs(d, "prob", 3), fusion.quantise(p))
    logit = np.log(p.clip(1e-3, 1 - 1e-3) / (1 - p.clip(1e-3, 1 - 1e-3))) * 3
    np.save(d / "logit.npy", logit[:, None])  # (T, 1, H, W), values outside [0, 1] -> logits
    np.testing.assert_array_equal(outputs.read_teacher_outputs(d, "logit", 3),
                                  fusion.quantise(1 / (1 + np.exp(-logit))))
    # forcing "logit" on values inside [0, 1]
    np.testing.assert_array_equal(outputs.read_teacher_outputs(d, "prob", 3, values="logit"),
                                  fusion.quantise(1 / (1 + np.exp(-p))))
    small = np.full((2, 1, 56, 56), 200, dtype=np.uint8)
    np.savez(d / "small.seg.npz", small)
    r = outputs.read_teacher_outputs(d, "small", 2)
    assert r.shape == (2, 112, 112) and r.dtype == np.uint8 and (r == 200).all()
    np.save(d / "bad.npy", np.float32([[[2.0]]]))
    with pytest.raises(ValueError, match="outside"):
        outputs.read_teacher_outputs(d, "bad", 1, values="probability")


def test_output_errors_list_file_names(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr", lengths=(5, 7, 4, 3))
    seg = tmp_path / "seg"
    write_seg(seg, store, np.random.default_rng(2), skip={"vid1", "vid3"}, wrong={"vid2"})
    with pytest.raises(outputs.TeacherOutputsError) as e:
        infer.infer_teacher([mem.OutputsMember(str(seg))], store, tmp_path / "m.zarr",
                            block_frames=4, batch_size=64, device="cpu", scheduler="", workers=1,
                            progress=False, amp=False)
    msg = str(e.value)
    assert "missing (2): vid1, vid3" in msg and "wrong frame count (1): vid2 (file 5, video 4)" \
        in msg and "vid0" not in msg
    assert not (tmp_path / "m.zarr").exists()
    with pytest.raises(ValueError, match=r"has 5 frames but video 'vid2' has 4"):
        outputs.read_teacher_outputs(seg, "vid2", 4)
    with pytest.raises(FileNotFoundError, match="vid1"):
        outputs.read_teacher_outputs(seg, "vid1", 7)
    with pytest.raises(ValueError, match="escape"):
        outputs.read_teacher_outputs(seg, "../f", 4)


# ---------------------------------------------------------------------------------------------
# inference, fusion of a model with imported outputs, resume

def test_model_and_outputs_fused(tmp_path, tiny_arch):
    store, frames = make_store(tmp_path / "f.zarr")
    arrays = write_seg(tmp_path / "seg", store, np.random.default_rng(3))
    checkpoint.save_teacher(tmp_path / "t.pt", "tiny", {"a": 4.0, "b": -2.0}, Tiny())
    members = [mem.ModelMember(str(tmp_path / "t.pt"), 1.0), mem.OutputsMember(str(tmp_path / "seg"),
                                                                            3.0)]
    ms = infer.infer_teacher(members, store.path, tmp_path / "m.zarr", block_frames=8,
                             batch_size=3, workers=2, device="cpu", scheduler="", progress=False,
                             amp=False)
    seg = np.concatenate([arrays[n][:, 0] for n in store.index.FileName]).astype(np.float32)
    expected = fusion.quantise(0.25 * tiny_proba(frames) + 0.75 * seg / 255)
    assert np.abs(ms.masks[:].astype(int) - expected).max() <= 1  # float summation order
    assert (ms.masks[:] == expected).mean() > 0.99


def test_resume_skips_finished_blocks(tmp_path):
    store, frames = make_store(tmp_path / "f.zarr", lengths=(6, 6, 4))  # 16 frames, 4 blocks
    ref = infer.infer_teacher([Counting()], store, tmp_path / "ref.zarr", block_frames=4,
                              batch_size=64, device="cpu", scheduler="", workers=1, progress=False,
                              amp=False)
    out = tmp_path / "m.zarr"
    failing = Counting(fail_on=2)
    with pytest.raises(RuntimeError, match="simulated"):
        infer.infer_teacher([failing], store, out, block_frames=4, workers=1, batch_size=64,
                            device="cpu", scheduler="", progress=False, amp=False)
    assert not out.exists()
    import zarr
    done = zarr.open_group(str(partial_path(out)), mode="r").attrs["done_blocks"]
    assert len(done) == 1 and [tuple(done[0])] == failing.calls[:1]
    again = Counting()
    ms = infer.infer_teacher([again], store, out, block_frames=4, workers=1, batch_size=64,
                             device="cpu", scheduler="", progress=False, amp=False)
    assert len(again.calls) == 3 and tuple(done[0]) not in again.calls
    np.testing.assert_array_equal(ms.masks[:], ref.masks[:])
    np.testing.assert_array_equal(ms.masks[:], fusion.quantise(frames[:, ::-1, :] / 255.0))

    # a different teacher does not resume someone else's blocks
    with pytest.raises(RuntimeError, match="simulated"):
        infer.infer_teacher([Counting(fail_on=2)], store, out, block_frames=4, workers=1,
                            batch_size=64, device="cpu", scheduler="", progress=False, amp=False)
    other = Counting()
    other.describe = lambda index=None: {"kind": "other"}
    infer.infer_teacher([other], store, out, block_frames=4, workers=1, batch_size=64, device="cpu",
                        scheduler="", progress=False, amp=False)
    assert len(other.calls) == 4


class HoldBack(Counting):
    """Holds the block starting at ``start`` back until the ``others`` other blocks have
    finished."""

    def __init__(self, start, others):
        super().__init__()
        import threading
        self.start, self.others, self.lock = start, others, threading.Lock()
        self.finished, self.others_done = 0, threading.Event()

    def predict_block(self, frames, start, stop, videos, **kw):
        if start == self.start:
            assert self.others_done.wait(10)
        out = super().predict_block(frames, start, stop, videos, **kw)
        if start != self.start:
            with self.lock:
                self.finished += 1
                if self.finished == self.others:
                    self.others_done.set()
        return out


def test_store_bytes_do_not_depend_on_which_block_finishes_first(tmp_path):
    """Blocks finish in any order on threads or a cluster; the store (masks and attributes,
    e.g. the per-block hashes) must be the same bytes whichever block finishes last."""
    store, _ = make_store(tmp_path / "f.zarr", lengths=(6, 6, 4))  # 16 frames, 4 blocks
    kw = dict(block_frames=4, batch_size=64, device="cpu", scheduler="", progress=False,
              amp=False)

    def files(p):
        return {f.relative_to(p): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}

    infer.infer_teacher([Counting()], store, tmp_path / "ref.zarr", workers=1, **kw)
    ref = files(tmp_path / "ref.zarr")
    for start in (0, 12):
        late = HoldBack(start, others=3)
        out = tmp_path / f"late{start}.zarr"
        infer.infer_teacher([late], store, out, workers=2, **kw)
        assert late.calls[-1] == (start, start + 4)  # that block did finish last
        got = files(out)
        assert got.keys() == ref.keys() and all(got[k] == ref[k] for k in ref), start


def test_resume_restarts_when_frames_change(tmp_path):
    """Interrupted, then two videos replaced (same lengths) and re-ingested: the rerun must not
    keep any mask computed on the old frames."""
    store, _ = make_store(tmp_path / "f.zarr", lengths=(6, 6, 4))  # 16 frames, 4 blocks
    out = tmp_path / "m.zarr"
    with pytest.raises(RuntimeError, match="simulated"):
        infer.infer_teacher([Counting(fail_on=3)], store, out, block_frames=4, batch_size=64,
                            device="cpu", scheduler="", workers=1, progress=False, amp=False)
    new_store, new_frames = make_store(tmp_path / "f.zarr", lengths=(6, 6, 4), seed=1)
    assert new_store.fingerprint != store.fingerprint
    again = Counting()
    ms = infer.infer_teacher([again], new_store, out, block_frames=4, batch_size=64, device="cpu",
                             scheduler="", workers=1, progress=False, amp=False)
    assert len(again.calls) == 4  # every block recomputed
    np.testing.assert_array_equal(ms.masks[:], fusion.quantise(new_frames[:, ::-1, :] / 255.0))
    assert ms.attrs["content_sha"] and ms.attrs["source_fingerprint"] == new_store.fingerprint


class FailingOutputs(mem.OutputsMember):
    """Imported outputs that fail on the ``fail_on``-th block (a killed run)."""

    def __init__(self, folder, fail_on):
        super().__init__(folder)
        self.fail_on, self.n = fail_on, 0

    def at(self, cwd):
        return self   # an absolute folder already; the count must stay on this object

    def predict_block(self, *a, **k):
        self.n += 1
        if self.n == self.fail_on:
            raise RuntimeError("simulated interruption")
        return super().predict_block(*a, **k)


def test_resume_restarts_when_output_files_regenerated(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr", lengths=(6, 6, 4))
    seg = tmp_path / "seg"
    write_seg(seg, store, np.random.default_rng(1))
    out = tmp_path / "m.zarr"
    with pytest.raises(RuntimeError, match="simulated"):
        infer.infer_teacher([FailingOutputs(str(seg), fail_on=3)], store, out, block_frames=4,
                            batch_size=64, device="cpu", scheduler="", workers=1, progress=False,
                            amp=False)
    time.sleep(0.01)  # regenerated files get a new modification time
    arrays = write_seg(seg, store, np.random.default_rng(2))
    ms = infer.infer_teacher([mem.OutputsMember(str(seg))], store, out, block_frames=4,
                             batch_size=64, device="cpu", scheduler="", workers=1, progress=False,
                             amp=False)
    np.testing.assert_array_equal(ms.masks[:], np.concatenate(
        [arrays[n][:, 0] for n in store.index.FileName]))


def test_object_array_seg_npz_names_the_file(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr")
    seg = tmp_path / "seg"
    write_seg(seg, store, np.random.default_rng(1))
    bad = np.empty(5, dtype=object)
    np.savez(seg / "vid0.seg.npz", bad)
    with pytest.raises(ValueError, match=r"vid0\.seg\.npz"):
        outputs.read_teacher_outputs(seg, "vid0", 5)


STAGE_TEACHER = {"arch": "unet", "width": 8, "depth": 3, "epochs": 1, "batch": 4, "lr": 0.001,
                 "device": "cpu"}


def run_stage(folder, script: str, *args: str, check: bool = False):
    """Run ``stages/<script>`` with ``args`` in ``folder`` (where its params.yaml is)."""
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=folder,
                          check=check, capture_output=True, text=True)


def test_refused_checkpoint_leaves_no_partial_folder(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    write_params(tmp_path, seed=0,
                 teacher={**STAGE_TEACHER, "members": [f"checkpoint:{bad}"]})
    r = run_stage(tmp_path, "teacher.py", "--out", str(tmp_path / "teacher"),
                  "--frames", store.path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "teacher").exists()
    assert not (tmp_path / "teacher.partial").exists()


def test_distributed_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed")
    store, _ = make_store(tmp_path / "f.zarr")
    arrays = write_seg(tmp_path / "seg", store, np.random.default_rng(4))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        ms = infer.infer_teacher([mem.OutputsMember(str(tmp_path / "seg"))], store,
                                 tmp_path / "m.zarr", block_frames=4,
                                 scheduler=cluster.scheduler_address, batch_size=64, device="cpu",
                                 workers=1, progress=False, amp=False)
    expected = np.concatenate([arrays[n][:, 0] for n in store.index.FileName])
    np.testing.assert_array_equal(ms.masks[:], expected)


# ---------------------------------------------------------------------------------------------
# teacher directory (the teacher stage's library side)

def test_traced_training_set(tmp_path):
    store, frames = make_store(tmp_path / "f.zarr", lengths=(5, 7, 4, 3),
                               traced=[(0, 4, "ED"), (0, 1, "ES"), (1, 2, "ED"), (3, 0, "ED")])
    img, msk = build.traced_training_set(store, "TRAIN")  # videos 0 and 3 are TRAIN
    np.testing.assert_array_equal(img, frames[[4, 1, 16]])
    np.testing.assert_array_equal(msk, (frames[[4, 1, 16]] > 128).astype(np.uint8))
    img, _ = build.traced_training_set(store, "VAL")
    np.testing.assert_array_equal(img, frames[[7]])
    assert build.traced_training_set(store, "TEST")[0].shape == (0, 112, 112)


FIT = dict(arch="unet", depth=3, epochs=1, batch_size=2, lr=1e-3, dice_weight=0.0, device="cpu")


def test_make_teacher_dir_and_load_members(tmp_path, tiny_arch, monkeypatch):
    store, frames = make_store(tmp_path / "f.zarr", traced=[(0, 4, "ED"), (1, 2, "ES")])
    seen = {}

    def fit_teacher(ti, tm, vi, vm, *, width, depth, epochs, batch_size, lr, dice_weight, seed,
                    device, progress):
        seen.update(n_train=len(ti), n_val=len(vi), seed=seed, width=width)
        return Tiny(), pd.DataFrame({"epoch": [0, 1], "val_loss": [0.5, 0.4]})

    monkeypatch.setitem(sys.modules, "echodfkd.teacher.fit",
                        types.SimpleNamespace(fit_teacher=fit_teacher))
    checkpoint.save_teacher(tmp_path / "ck.pt", "tiny", {"a": 4.0, "b": -2.0}, Tiny())
    seg = tmp_path / "seg"
    write_seg(seg, store, np.random.default_rng(5))
    members = [{"kind": "fit", "weight": 1.0},
               {"kind": "checkpoint", "path": str(tmp_path / "ck.pt"), "weight": 1.0},
               {"kind": "outputs", "path": str(seg), "weight": 2.0}]
    d = tmp_path / "teacher"
    spec, hist = build.make_teacher_dir(d, members, store, **FIT, width=8, seed=5, progress=False)
    assert seen == {"n_train": 1, "n_val": 1, "seed": 5, "width": 8}
    assert hist["member"].tolist() == [0, 0]
    assert sorted(p.name for p in d.iterdir()) == ["member0.pt", "member1.pt", "teacher.json"]
    on_disk = json.loads((d / "teacher.json").read_text())
    assert on_disk == spec and [m["path"] for m in on_disk["members"]] == [
        "member0.pt", "member1.pt", str(seg)]
    loaded = mem.load_members(d)
    assert [type(m).__name__ for m in loaded] == ["ModelMember", "ModelMember", "OutputsMember"]
    assert [m.weight for m in loaded] == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="kind"):
        mem.parse_member_specs([{"kind": "magic"}])
    with pytest.raises(ValueError, match="arch 'unet' only"):
        build.make_teacher_dir(tmp_path / "t2", members[:1], store,
                             **{**FIT, "arch": "deeplabv3_resnet50"}, width=8, seed=0)


def test_stage_scripts(tmp_path):
    store, _ = make_store(tmp_path / "f.zarr")
    arrays = write_seg(tmp_path / "seg", store, np.random.default_rng(6))
    write_params(tmp_path, seed=0,
                 teacher={**STAGE_TEACHER, "width": 16,
                          "members": [f"outputs:{tmp_path / 'seg'}@1"]},
                 teacher_infer={"batch": 8, "amp": True, "workers": 1},  # amp: no-op on the CPU
                 ingest={"scheduler": ""},
                 sources={"src": {"path": str(tmp_path / "raw"), "teacher": True},
                          "evalonly": {"path": str(tmp_path / "raw2"), "teacher": False}})
    run = lambda *a: run_stage(tmp_path, *a, check=True)  # noqa: E731
    run("teacher.py", "--out", str(tmp_path / "teacher"), "--frames", store.path)
    assert (tmp_path / "teacher" / "teacher.json").is_file()
    assert not (tmp_path / "teacher" / "fit_history.csv").exists()
    # Imported outputs: the teacher's model is unknown, so is its cost.
    cost = json.loads((tmp_path / "teacher" / "cost.json").read_text())
    assert cost == {"weights": None, "flops": None}
    run("teacher_infer.py", "--teacher", str(tmp_path / "teacher"), "--frames",
        store.path, "--out", str(tmp_path / "m.zarr"), "--source", "src")
    ms = open_masks(tmp_path / "m.zarr", store)
    np.testing.assert_array_equal(ms.masks[:], np.concatenate(
        [arrays[n][:, 0] for n in store.index.FileName]))
    assert teacher_covers(tmp_path / "m.zarr")
    # an evaluation-only source (sources.<src>.teacher: false): a store without masks
    run("teacher_infer.py", "--teacher", str(tmp_path / "teacher"), "--frames",
        store.path, "--out", str(tmp_path / "e.zarr"), "--source", "evalonly")
    assert (tmp_path / "e.zarr").exists() and not teacher_covers(tmp_path / "e.zarr")


@pytest.mark.parametrize("script, args, params, message", [
    ("teacher.py", [], {"teacher": {"members": "fit"}},
     "params.yaml: teacher.members must be a list (a string each)"),
    ("teacher.py", [], {"teacher": {"width": 8.5}},
     "params.yaml: teacher.width must be an integer, got 8.5"),
    ("teacher.py", [], {"seed": "zero"}, "params.yaml: seed must be an integer, got 'zero'"),
    ("teacher_infer.py", ["--source", "src"], {"teacher_infer": {"amp": "yes"}},
     "params.yaml: teacher_infer.amp must be true or false, got 'yes'"),
    ("teacher_infer.py", ["--source", "src"], {"sources": {"src": {"teacher": "no"}}},
     "params.yaml: sources.src.teacher must be true or false, got 'no'"),
    ("teacher_infer.py", ["--source", "nope"], {}, "params.yaml: sources.nope is missing"),
])
def test_stage_scripts_bad_params_value_is_one_line(tmp_path, script, args, params, message):
    store, _ = make_store(tmp_path / "f.zarr")
    over = {"seed": 0, "teacher": {**STAGE_TEACHER, "members": ["fit"]},
            "sources": {"src": {"path": str(tmp_path / "raw"), "teacher": True}}}
    for key, value in params.items():
        over[key] = {**over.get(key, {}), **value} if isinstance(value, dict) else value
    write_params(tmp_path, **over)
    out = tmp_path / "out"
    paths = (["--out", str(out), "--frames", store.path] if script == "teacher.py" else
             ["--teacher", str(tmp_path / "teacher"), "--frames", store.path,
              "--out", str(out)])
    r = run_stage(tmp_path, script, *paths, *args)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], r.stderr
    assert lines[-1].startswith(f"error: {message}"), r.stderr
    assert not out.exists() and not partial_path(out).exists()


@pytest.mark.parametrize("text, expected", [
    ("fit", {"kind": "fit", "path": "", "weight": 1.0}),
    ("fit@2", {"kind": "fit", "path": "", "weight": 2.0}),
    ("checkpoint:models/x.pt", {"kind": "checkpoint", "path": "models/x.pt", "weight": 1.0}),
    ("outputs:/data/seg@0.5", {"kind": "outputs", "path": "/data/seg", "weight": 0.5}),
])
def test_parse_member_text(text, expected):
    assert mem.parse_member_text(text) == expected


def test_parse_member_text_bad_weight():
    with pytest.raises(ValueError, match="'x'"):
        mem.parse_member_text("fit@x")


def test_teacher_cost_sums_model_members(tmp_path):
    from echodfkd.cost import count_weights
    from echodfkd.teacher.unet import UNet

    model = UNet(width=4, depth=2)
    for i in range(2):
        checkpoint.save_teacher(tmp_path / f"m{i}.pt", "unet", {"width": 4, "depth": 2}, model)
    cost = mem.teacher_cost([mem.ModelMember(str(tmp_path / f"m{i}.pt")) for i in range(2)])
    assert cost["weights"] == 2 * count_weights(model)
    assert cost["flops"] > 0


def test_members_at_a_directory_keep_absolute_paths(tmp_path):
    """What a distributed worker gets: relative paths taken from the driver's directory,
    absolute ones unchanged; the description (and so the store's attrs) is not touched."""
    m = mem.ModelMember("models/teacher/member0.pt", 0.5)
    assert m.at("/work/x").path == "/work/x/models/teacher/member0.pt"
    assert m.at("/work/x").weight == 0.5 and m.path == "models/teacher/member0.pt"
    assert mem.ModelMember(str(tmp_path / "t.pt")).at("/elsewhere").path == str(tmp_path / "t.pt")
    o = mem.OutputsMember("outs", 1.0, "probability")
    assert o.at("/d").folder == "/d/outs" and o.at("/d").values == "probability"


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_the_other_to_finish(tmp_path):
    """Teacher inference on a cluster of two `dask worker` processes (no nanny, so a killed
    worker stays dead): one is killed with SIGKILL once a block is done; the scheduler moves
    its work to the survivor, the store completes, and its masks equal local threads'."""
    import signal
    import threading

    import zarr

    from echodfkd.teacher.unet import UNet

    torch.manual_seed(0)
    checkpoint.save_teacher(tmp_path / "t.pt", "unet", {"width": 8, "depth": 3},
                            UNet(width=8, depth=3))
    store, _ = make_store(tmp_path / "f.zarr", lengths=(256,) * 8, shard=256)  # 8 blocks
    members = [mem.ModelMember(str(tmp_path / "t.pt"))]
    kw = dict(block_frames=256, batch_size=16, device="cpu", amp=False, progress=False)
    ref = infer.infer_teacher(members, store, tmp_path / "ref.zarr", scheduler="", workers=1,
                              **kw)
    with dask_cluster(tmp_path, 2, nanny=False) as (address, workers):
        out, result = tmp_path / "m.zarr", {}

        def run():
            try:
                result["store"] = infer.infer_teacher(members, store, out, scheduler=address,
                                                      workers=1, **kw)
            except Exception as e:  # reported below
                result["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        staging = partial_path(out)
        deadline = time.time() + 120
        while time.time() < deadline and thread.is_alive():
            try:
                if zarr.open_group(str(staging), mode="r").attrs.get("done_blocks"):
                    break
            except Exception:  # the store is not there yet
                pass
            time.sleep(0.05)
        done_at_kill = len(zarr.open_group(str(staging), mode="r").attrs["done_blocks"])
        assert thread.is_alive() and 1 <= done_at_kill < 8, done_at_kill   # mid-run
        workers[0].send_signal(signal.SIGKILL)
        thread.join(180)
        assert "error" not in result, result.get("error")
        masks = result["store"].masks[:]
        np.testing.assert_array_equal(masks, ref.masks[:])
        assert workers[0].wait(5) == -signal.SIGKILL and workers[1].poll() is None


def test_blocks_run_in_pieces_with_the_same_masks(tmp_path, monkeypatch):
    """A block is run in pieces of whole batches (bounded memory); the masks are those of the
    block run at once, and each piece sees only the videos that overlap it."""
    store, frames = make_store(tmp_path / "f.zarr", lengths=(10, 14, 8), shard=16)  # 2 blocks
    whole = Counting()
    ref = infer.infer_teacher([whole], store, tmp_path / "a.zarr", block_frames=16, workers=1,
                              batch_size=4, device="cpu", scheduler="", progress=False, amp=False)
    assert sorted(whole.calls) == [(0, 16), (16, 32)]
    monkeypatch.setattr(infer, "PIECE_FRAMES", 6)                # -> pieces of 4 frames
    pieces, seen = Counting(), []
    original = pieces.predict_block

    def predict_block(frames, start, stop, videos, **kw):
        seen.append((start, [v[0] for v in videos]))
        return original(frames, start, stop, videos, **kw)

    pieces.predict_block = predict_block
    ms = infer.infer_teacher([pieces], store, tmp_path / "b.zarr", block_frames=16, workers=1,
                             batch_size=4, device="cpu", scheduler="", progress=False, amp=False)
    assert sorted(pieces.calls) == [(s, s + 4) for s in range(0, 32, 4)]
    seen = dict(seen)            # videos: vid0 frames 0-9, vid1 10-23, vid2 24-31
    assert seen[4] == ["vid0"] and seen[8] == ["vid0", "vid1"] and seen[12] == ["vid1"]
    assert seen[20] == ["vid1"] and seen[24] == ["vid2"]
    np.testing.assert_array_equal(ms.masks[:], ref.masks[:])
