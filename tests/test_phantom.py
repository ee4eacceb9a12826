"""Tests for the echo phantom (echodfkd/data/phantom/) and its stage script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from echodfkd.data import phantom as P
from echodfkd.data.echonet import read_video
from echodfkd.data.phantom.heart import _es_scale
from echodfkd.data.store import partial_path
from params import write_params

ROOT = Path(__file__).resolve().parents[1]
N_FRAMES = 24


def rasterise(poly: np.ndarray, shape: tuple[int, int] = (112, 112)) -> np.ndarray:
    """EchoNet's convention: round the vertices, fill pixels whose centres lie inside
    (even-odd rule). poly: (K, 2) x, y."""
    x, y = np.rint(poly[:, 0]), np.rint(poly[:, 1])
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    inside = np.zeros(shape, bool)
    j = len(x) - 1
    for i in range(len(x)):
        crosses = (y[i] > yy) != (y[j] > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (x[j] - x[i]) * (yy - y[i]) / (y[j] - y[i]) + x[i]
        inside ^= crosses & (xx < xc)
        j = i
    return inside


def test_rasterise_square():
    sq = np.array([[2.2, 2.0], [5.0, 1.8], [5.0, 5.0], [2.0, 5.0]])
    m = rasterise(sq, (8, 8))
    # Vertices round to (2, 2)-(5, 5): centres strictly inside are rows/cols 2..4.
    assert m.sum() == 9 and m[2:5, 2:5].all()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def real_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "real"
    P.generate_set(out, echonet_lengths=[], style="real", seed=5, n_train=3, n_val=1, n_test=2,
                   n_extra=0, n_frames=N_FRAMES, progress=False)
    return out


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "synthetic"
    P.generate_set(out, echonet_lengths=[], style="synthetic", seed=6, n_train=2, n_val=1, n_test=1, n_extra=2,
                   n_frames=N_FRAMES, progress=False)
    return out


def all_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_byte_identical_for_same_seed(real_set, tmp_path):
    again = tmp_path / "again"
    P.generate_set(again, echonet_lengths=[], style="real", seed=5, n_train=3, n_val=1, n_test=2,
                   n_extra=0, n_frames=N_FRAMES, progress=False)
    a, b = all_bytes(real_set), all_bytes(again)
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_other_seed_differs(real_set, tmp_path):
    other = tmp_path / "other"
    fl = P.generate_set(other, echonet_lengths=[], style="real", seed=7, n_train=3, n_val=1, n_test=2,
                        n_extra=0, n_frames=N_FRAMES, progress=False)
    assert set(fl["FileName"]).isdisjoint(pd.read_csv(real_set / "FileList.csv")["FileName"])


def test_echonet_lengths_look_like_echonet_dynamic():
    n = np.array([P.echonet_length(9, "TEST", i) for i in range(2000)])
    assert 100 <= n.min() and n.max() <= 700
    assert 160 <= np.median(n) <= 190                       # EchoNet-Dynamic: ~175
    assert 0.03 <= (n > 400).mean() <= 0.07                 # a few longer videos
    assert P.echonet_length(9, "TEST", 3) == n[3]           # the same draw every time
    assert P.video_length(9, "TEST", 3, 64, ["TEST"]) == n[3]
    assert P.video_length(9, "TRAIN", 3, 64, ["TEST"]) == 64


def test_set_with_echonet_lengths(tmp_path, real_set):
    """Only the TEST split gets long videos; the other videos are those of the fixed-length
    set, byte for byte; every length agrees across FileList, AVI, ground truth and tracings."""
    from echodfkd.data.echonet import read_video

    out = tmp_path / "long"
    fl = P.generate_set(out, echonet_lengths=["TEST"], style="real", seed=5, n_train=3,
                        n_val=1, n_test=2, n_extra=0, n_frames=N_FRAMES, progress=False)
    test = fl[fl["Split"] == "TEST"]
    assert (fl.loc[fl["Split"] != "TEST", "NumberOfFrames"] == N_FRAMES).all()
    assert (test["NumberOfFrames"] >= 100).all()
    tr = pd.read_csv(out / "VolumeTracings.csv")
    for row in fl.itertuples():
        n = row.NumberOfFrames
        assert len(read_video(out / "Videos" / f"{row.FileName}.avi")) == n
        with np.load(out / "GroundTruth" / f"{row.FileName}.npz") as z:
            assert z["masks"].shape == (n, 112, 112)
        assert tr.loc[tr["FileName"] == f"{row.FileName}.avi", "Frame"].max() < n
        if row.Split != "TEST":
            name = f"Videos/{row.FileName}.avi"
            assert (out / name).read_bytes() == (real_set / name).read_bytes()
    meta = json.loads((out / "GroundTruth" / "phantom.json").read_text())
    assert meta["echonet_lengths"] == ["TEST"]


def test_video_does_not_depend_on_set_size():
    small = P.make_video("real", 5, "VAL", 0, N_FRAMES)
    # Same split and index; other splits' sizes play no part.
    again = P.make_video("real", 5, "VAL", 0, N_FRAMES, number=17)
    assert small["FileName"] == again["FileName"]
    assert np.array_equal(small["frames"], again["frames"])
    other = P.make_video("real", 5, "VAL", 1, N_FRAMES)
    assert not np.array_equal(small["frames"], other["frames"])


def test_real_layout(real_set):
    assert not partial_path(real_set).exists()
    fl = pd.read_csv(real_set / "FileList.csv")
    assert list(fl.columns) == P.FILELIST_COLUMNS
    assert len(fl) == 6
    assert sorted(fl["Split"].value_counts().items()) == [("TEST", 2), ("TRAIN", 3), ("VAL", 1)]
    assert all(re.fullmatch(r"0X[0-9A-F]{16}", n) for n in fl["FileName"])
    assert set(fl["FPS"]) <= {30, 50, 54}
    assert (fl["FrameHeight"] == 112).all() and (fl["FrameWidth"] == 112).all()
    assert (fl["NumberOfFrames"] == N_FRAMES).all()
    assert fl["EF"].between(5, 95).all() and (fl["EDV"] > fl["ESV"]).all()
    assert (fl["ESV"] > 0).all()
    for name in fl["FileName"]:
        assert (real_set / "Videos" / f"{name}.avi").is_file()
        assert (real_set / "GroundTruth" / f"{name}.npz").is_file()


def test_synthetic_layout(synthetic_set):
    fl = pd.read_csv(synthetic_set / "FileList.csv")
    assert list(fl.columns) == P.FILELIST_COLUMNS
    assert list(fl["FileName"]) == [f"sample_{i:06d}" for i in range(6)]
    assert list(fl["Split"]) == ["TRAIN", "TRAIN", "VAL", "TEST", "EXTRA", "EXTRA"]
    assert fl["EF"].dtype.kind == "i" and fl["EF"].between(10, 90).all()
    assert (fl["ESV"] == 0).all() and (fl["EDV"] == 0).all()
    assert not (synthetic_set / "VolumeTracings.csv").exists()
    assert (synthetic_set / "GroundTruth" / "sample_000005.npz").is_file()


def test_avi_decodes_as_grey_mjpg(real_set):
    fl = pd.read_csv(real_set / "FileList.csv")
    row = fl.iloc[0]
    cap = cv2.VideoCapture(str(real_set / "Videos" / f"{row.FileName}.avi"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
    assert fourcc.to_bytes(4, "little") == b"MJPG"
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(row.FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    v = np.stack(frames)
    assert v.shape == (N_FRAMES, 112, 112, 3)
    spread = v.max(axis=3).astype(int) - v.min(axis=3).astype(int)
    assert spread.mean() < 1.0  # three (nearly) identical channels after JPEG


def test_ground_truth_arrays_and_look(real_set):
    fl = pd.read_csv(real_set / "FileList.csv")
    for name in fl["FileName"]:
        gt = np.load(real_set / "GroundTruth" / f"{name}.npz")
        masks, ed, es = gt["masks"], gt["ed"], gt["es"]
        assert masks.dtype == np.uint8 and masks.shape == (N_FRAMES, 112, 112)
        assert set(np.unique(masks)) <= {0, 1}
        assert ed.dtype == np.int64 and es.dtype == np.int64 and len(ed) and len(es)
        frames = read_video(real_set / "Videos" / f"{name}.avi")
        # Black outside the fan (the top corners), LV cavity darker than the ring around it.
        assert frames[:, :5, :5].max() <= 3 and frames[:, :5, -5:].max() <= 3
        m = masks.astype(bool)
        ring = np.stack([cv2.dilate(x, np.ones((9, 9), np.uint8)) for x in masks]).astype(bool)
        ring &= ~m
        assert frames[m].mean() < frames[ring].mean()


def test_ed_es_are_area_extremes(real_set):
    fl = pd.read_csv(real_set / "FileList.csv")
    for name in fl["FileName"]:
        gt = np.load(real_set / "GroundTruth" / f"{name}.npz")
        area = gt["masks"].reshape(N_FRAMES, -1).sum(1)
        for f in gt["ed"]:
            assert 1 <= f <= N_FRAMES - 2
            assert area[f] >= area[f - 1] and area[f] >= area[f + 1]
        for f in gt["es"]:
            assert area[f] <= area[f - 1] and area[f] <= area[f + 1]
        assert area[gt["ed"]].min() > area[gt["es"]].max()


def test_extreme_frames_by_hand():
    area = np.array([5, 7, 9, 8, 4, 2, 3, 6, 9, 10, 8, 5], float)
    ed, es = P.extreme_frames(area, period=7.0, t_ed0=2.0, systole=0.4)
    assert ed.tolist() == [2, 9] and es.tolist() == [5]


def test_tracings(real_set):
    fl = pd.read_csv(real_set / "FileList.csv")
    tr = pd.read_csv(real_set / "VolumeTracings.csv")
    assert list(tr.columns) == P.TRACING_COLUMNS
    assert set(tr["FileName"]) == {f"{n}.avi" for n in fl["FileName"]}
    for name in fl["FileName"]:
        gt = np.load(real_set / "GroundTruth" / f"{name}.npz")
        t = tr[tr["FileName"] == f"{name}.avi"]
        frames = sorted(set(t["Frame"]))
        assert len(frames) == 2 and all(len(t[t["Frame"] == f]) == 21 for f in frames)
        areas = {}
        for f in frames:
            rows = t[t["Frame"] == f][["X1", "Y1", "X2", "Y2"]].to_numpy()
            m = rasterise(P.tracing_polygon(rows))
            assert dice(m, gt["masks"][f]) > 0.9
            areas[f] = m.sum()
            # Row 1 is the long axis: about as long as the mask is tall along it.
            assert 25 < np.hypot(rows[0, 2] - rows[0, 0], rows[0, 3] - rows[0, 1]) < 75
        # One traced ED and one traced ES; the larger traced area is the ED frame.
        big, small = sorted(frames, key=lambda f: -areas[f])
        assert big in gt["ed"] and small in gt["es"]


def test_ef_consistent_with_volumes_and_areas(tmp_path):
    fl = P.generate_set(tmp_path / "r", echonet_lengths=[], style="real", seed=3, n_train=8, n_val=0, n_test=0,
                        n_extra=0, n_frames=40, progress=False)
    fl = pd.read_csv(tmp_path / "r" / "FileList.csv")  # as written
    ef_vol = 100.0 * (fl["EDV"] - fl["ESV"]) / fl["EDV"]
    assert np.allclose(fl["EF"], ef_vol, atol=2e-3)
    tr = pd.read_csv(tmp_path / "r" / "VolumeTracings.csv")
    ef_area, ef_disc = [], []
    for name in fl["FileName"]:
        gt = np.load(tmp_path / "r" / "GroundTruth" / f"{name}.npz")
        a = gt["masks"].reshape(len(gt["masks"]), -1).sum(1)
        ef_area.append(100.0 * (1 - a[gt["es"]].mean() / a[gt["ed"]].mean()))
        vols = []
        for _, t in tr[tr["FileName"] == f"{name}.avi"].groupby("Frame"):
            r = t[["X1", "Y1", "X2", "Y2"]].to_numpy()
            length = np.hypot(r[0, 2] - r[0, 0], r[0, 3] - r[0, 1])
            d2 = (r[1:, 2] - r[1:, 0]) ** 2 + (r[1:, 3] - r[1:, 1]) ** 2
            vols.append(np.pi / 4 * d2.sum() * length / 20)  # method of discs
        ef_disc.append(100.0 * (1 - min(vols) / max(vols)))
    ef_area, ef_disc = np.array(ef_area), np.array(ef_disc)
    # Areas shrink less than volumes, and follow them.
    assert (ef_area < fl["EF"]).all()
    assert np.corrcoef(ef_area, fl["EF"])[0, 1] > 0.9
    # EchoNet's method of discs on the tracings recovers the EF within annotator noise.
    assert np.abs(ef_disc - fl["EF"]).mean() < 6.0


def test_volume_matches_discs():
    h = P.make_video("real", 1, "TRAIN", 0, N_FRAMES)["heart"]
    sl, sw = _es_scale(h)
    edv = P.volume_ml(h.length_ed, h.width_ed, h)
    esv = P.volume_ml(h.length_ed * sl, h.width_ed * sw, h)
    assert esv / edv == pytest.approx(1 - h.ef / 100, abs=1e-6)
    assert 20 < edv < 400


def test_styles_differ_in_look():
    real = P.make_video("real", 2, "TRAIN", 0, N_FRAMES)
    syn = P.make_video("synthetic", 2, "TRAIN", 0, N_FRAMES)

    def roughness(v: np.ndarray) -> float:  # fine texture: speckle
        f = v.astype(np.float32)
        return float(np.abs(np.diff(f, axis=2)).mean())

    assert roughness(syn["frames"]) < 0.7 * roughness(real["frames"])


def test_preview(real_set, synthetic_set, tmp_path):
    for s in (real_set, synthetic_set):
        out = tmp_path / f"{s.name}.png"
        P.render_preview(s, out, n_videos=2, n_frames=3)
        img = cv2.imread(str(out))
        assert img is not None and img.shape[0] > 200 and img.shape[1] > 200


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="style"):
        P.generate_set(tmp_path / "x", echonet_lengths=[], style="fake", seed=0, n_train=1, n_val=0, n_test=0,
                       n_extra=0, n_frames=N_FRAMES, progress=False)
    with pytest.raises(ValueError, match="EXTRA"):
        P.generate_set(tmp_path / "x", echonet_lengths=[], style="real", seed=0, n_train=1, n_val=0, n_test=0,
                       n_extra=1, n_frames=N_FRAMES, progress=False)
    with pytest.raises(ValueError, match="frames must be >= 16 to hold a cardiac cycle, got 8"):
        P.make_video("real", 0, "TRAIN", 0, 8)
    assert not (tmp_path / "x").exists()


def test_regenerate_replaces(tmp_path):
    out = tmp_path / "s"
    P.generate_set(out, echonet_lengths=[], style="synthetic", seed=1, n_train=2, n_val=0, n_test=0,
                   n_extra=0, n_frames=N_FRAMES, progress=False)
    P.generate_set(out, echonet_lengths=[], style="synthetic", seed=1, n_train=1, n_val=0, n_test=0,
                   n_extra=0, n_frames=N_FRAMES, progress=False)
    assert len(list((out / "Videos").iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


STAGE_SET = {"style": "synthetic", "seed": 4, "train": 2, "val": 1, "test": 1, "extra": 1,
             "frames": 20, "echonet_lengths": []}


def run_stage(tmp_path, name: str, **over) -> subprocess.CompletedProcess:
    """Run stages/phantom.py --set ``name`` in ``tmp_path``, whose params.yaml is the
    project's with ``phantom.syn`` = ``STAGE_SET`` and ``over``."""
    write_params(tmp_path, phantom={"syn": {**STAGE_SET, **over}})
    cmd = [sys.executable, str(ROOT / "stages" / "phantom.py"), "--set", name,
           "--out", str(tmp_path / "raw" / name), "--preview",
           str(tmp_path / "rep" / f"{name}.png"), "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)


def test_stage_script(tmp_path):
    out, png = tmp_path / "raw" / "syn", tmp_path / "rep" / "syn.png"
    res = run_stage(tmp_path, "syn")
    assert res.returncode == 0, res.stderr
    fl = pd.read_csv(out / "FileList.csv")
    assert len(fl) == 5 and png.is_file()
    assert fl["Split"].value_counts().to_dict() == {"TRAIN": 2, "VAL": 1, "TEST": 1,
                                                    "EXTRA": 1}
    assert (fl["NumberOfFrames"] == 20).all()


@pytest.mark.parametrize("name, over, message", [
    ("syn", {"style": "cartoon"},
     "params.yaml: phantom.syn: style must be one of ['real', 'synthetic'], got 'cartoon'"),
    ("syn", {"frames": 1}, "params.yaml: phantom.syn: frames must be >= 16 to hold a cardiac cycle, got 1"),
    ("syn", {"val": -1}, "params.yaml: phantom.syn: val must be >= 0 videos, got -1"),
    ("syn", {"seed": 1.5}, "params.yaml: phantom.syn.seed must be an integer, got 1.5"),
    ("syn", {"echonet_lengths": ["test"]},
     "params.yaml: phantom.syn: echonet_lengths: ['test'] not a split; use some of"),
    ("nope", {}, "params.yaml: phantom.nope is missing"),
])
def test_stage_script_bad_params_value_is_one_line(tmp_path, name, over, message):
    res = run_stage(tmp_path, name, **over)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert lines == [res.stderr.strip().splitlines()[-1]], res.stderr
    assert lines[0].startswith(f"error: {message}"), res.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "rep").exists()
