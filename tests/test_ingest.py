"""Ingest end to end on a few tiny videos the tests write (and the stage script)."""

from __future__ import annotations

import errno
import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import echodfkd.data.ingest as ingest_module
from echodfkd.cli import run
from echodfkd.data.echonet import read_tracings, read_video, tracing_masks
from echodfkd.errors import InputError
from echodfkd.data.ingest import IngestError, ingest_source
from echodfkd.data.store import StoreWriteError, open_frames, partial_path
from params import ingest as pipeline_ingest
from params import write_params
from videos import rectangle, smooth_frames, tracing, write_avi

ROOT = Path(__file__).resolve().parents[1]
# the stage's ``ingest`` params in these tests (every key of the section)
STAGE_INGEST = {"scheduler": "", "workers": 1, "max_bad_fraction": 0.05, "shard_frames": 32,
                "chunk_frames": 8, "tracing_policy": "first"}
DROP = object()   # an ``over`` value that removes the key from params.yaml


def stage_params(monkeypatch, folder: Path, **over) -> Path:
    """Write ``folder``/params.yaml (the project's, with ``STAGE_INGEST`` and ``over`` in
    ``ingest``; a ``DROP`` value removes the key) and run the stage there. Returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_params(folder)
    values = yaml.safe_load(path.read_text())
    values["ingest"] = {k: v for k, v in {**STAGE_INGEST, **over}.items() if v is not DROP}
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    monkeypatch.chdir(folder)
    return path


def stage_args(src, out, skipped) -> list[str]:
    """The stage's command line: paths only (absolute, the stage runs elsewhere)."""
    return ["--src", str(src), "--out", str(out), "--skipped", str(skipped), "--no-progress"]


def stage_main(argv: list[str]) -> None:
    """Run stages/ingest.py as ``python stages/ingest.py`` would (through cli.run), reading
    the params.yaml of the current directory."""
    run(runpy.run_path(str(ROOT / "stages" / "ingest.py"))["main"], argv)

# name, frames, fps, size, NumberOfFrames written in FileList, Split
VIDEOS = [("v0", 12, 50, 112, 12, "TRAIN"), ("v1", 9, 30, 112, 9, "val"),
          ("v2", 10, 54, 128, 10, "TEST"), ("v3", 11, 50, 112, 20, "TRAIN")]


def make_source(root: Path, videos=VIDEOS, extra_rows: list[str] = (),
                gt: bool = False) -> Path:
    for k, (name, t, fps, size, _, _) in enumerate(videos):
        write_avi(root / "Videos" / f"{name}.avi", smooth_frames(t, size, seed=k), fps=fps)
        if gt:
            rng = np.random.default_rng(k)
            (root / "GroundTruth").mkdir(parents=True, exist_ok=True)
            np.savez(root / "GroundTruth" / f"{name}.npz",
                     masks=(rng.random((t, 112, 112)) < 0.3).astype(np.uint8),
                     ed=np.array([0, t - 1]), es=np.array([t // 2]))
    lines = ["FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"]
    lines += [f"{n}.avi,{50 + k},0,0,{s},{s},{fps},{listed},{split}"
              for k, (n, _, fps, s, listed, split) in enumerate(videos)]
    (root / "FileList.csv").write_text("\n".join(lines + list(extra_rows)) + "\n")
    rows = (tracing("v0.avi", 2, cx=40, top=10, bottom=70, half_width=15)
            + tracing("v0.avi", 8, cx=40, top=20, bottom=60, half_width=8)
            + tracing("v2.avi", 5, cx=60, top=30, bottom=90, half_width=10)   # 128x128 pixels
            + tracing("v2.avi", 1, cx=60, top=10, bottom=110, half_width=30)
            + tracing("v2.avi", 40, cx=60, top=10, bottom=110, half_width=30))  # past the end
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False)
    return root


def ingest(root, out, **kw):
    """ingest_source with small shards, local threads and ``kw``."""
    kw = {"shard_frames": 16, "chunk_frames": 8, "workers": 2, "scheduler": "",
          "max_bad_fraction": 0.05, "tracing_policy": "first", "progress": False, **kw}
    return ingest_source(root, out, **kw)


def test_ingest_contents_index_and_tracings(tmp_path):
    root = make_source(tmp_path / "src")
    report = ingest(root, tmp_path / "out.zarr", skipped_path=tmp_path / "skipped.csv")
    store = open_frames(tmp_path / "out.zarr")
    decoded = [read_video(root / "Videos" / f"{v[0]}.avi") for v in VIDEOS]
    assert report.videos == 4 and report.frames == 42 == store.frames.shape[0]
    assert np.array_equal(store.frames[:], np.concatenate(decoded))
    idx = store.index
    assert list(idx["FileName"]) == ["v0", "v1", "v2", "v3"]
    assert list(idx["start"]) == [0, 12, 21, 31] and list(idx["stop"]) == [12, 21, 31, 42]
    assert list(idx["Split"]) == ["TRAIN", "VAL", "TEST", "TRAIN"]
    assert list(idx["FPS"]) == [50, 30, 54, 50] and list(idx["EF"]) == [50, 51, 52, 53]
    assert list(idx["NumberOfFrames"]) == [12, 9, 10, 20]   # FileList's, kept
    assert list(idx["FrameHeight"]) == [112, 112, 128, 112]
    for i, frames in enumerate(decoded):
        assert np.array_equal(store.video(i), frames)
    # traced frames: v0 (ED 2, ES 8), v2 (ES 5, ED 1); v2's frame 40 is past its end
    traced = store.traced
    assert [tuple(r) for r in traced[["FileName", "video", "frame", "phase", "row"]]
            .itertuples(index=False)] == [("v0", 0, 2, "ED", 0), ("v0", 0, 8, "ES", 1),
                                          ("v2", 2, 1, "ED", 2), ("v2", 2, 5, "ES", 3)]
    tr = read_tracings(root / "VolumeTracings.csv")
    for name, n, size in (("v0", 12, 112), ("v2", 10, 128)):
        expected, _ = tracing_masks(tr[tr["FileName"] == name], n, width=size, height=size,
                                    policy="first")
        rows = traced[traced["FileName"] == name]["row"].to_list()
        for t, r in zip(expected, rows):
            assert np.array_equal(store.traced_masks[r], t.mask)
    assert store.traced_masks.shape == (4, 112, 112)
    # v0 (112x112) by hand: rows 13..70, columns 25..55; v2 (128x128) is scaled by 7/8:
    # (x + 0.5) * 0.875 - 0.5: columns 30..90 -> 26.19..78.69 -> 26..79, rows 15..110 ->
    # 13.06..96.19 -> 13..96
    assert np.array_equal(store.traced_masks[0], rectangle(13, 70, 25, 55))
    assert np.array_equal(store.traced_masks[2], rectangle(13, 96, 26, 79))
    assert store.gt_masks is None
    # skip report: tracing past the end, NumberOfFrames mismatch of v3
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert list(skipped.columns) == ["FileName", "file", "row", "kind", "reason"]
    assert sorted(skipped["kind"]) == ["note", "tracing"]
    note = skipped[skipped["kind"] == "note"].iloc[0]
    assert note["FileName"] == "v3" and note["row"] == 5 and "20" in note["reason"]
    assert "outside the video" in skipped[skipped["kind"] == "tracing"].iloc[0]["reason"]
    assert report.bad == 0 and report.rows == 4
    # shards: 42 frames / 16 per shard -> 3 shard files, each written once
    shard_files = sorted(p for p in (tmp_path / "out.zarr" / "frames").rglob("*")
                         if p.is_file() and p.name != "zarr.json")
    assert len(shard_files) == 3
    assert not partial_path(tmp_path / "out.zarr").exists()


def test_ingest_ground_truth(tmp_path):
    root = make_source(tmp_path / "src", gt=True)
    ingest(root, tmp_path / "out.zarr")
    store = open_frames(tmp_path / "out.zarr")
    masks = [np.load(root / "GroundTruth" / f"{v[0]}.npz")["masks"] for v in VIDEOS]
    assert np.array_equal(store.gt_masks[:], np.concatenate(masks))
    events = store.group.attrs["gt_events"]
    assert events["columns"] == ["FileName", "video", "frame", "phase"]
    assert events["data"][:3] == [["v0", 0, 0, "ED"], ["v0", 0, 6, "ES"], ["v0", 0, 11, "ED"]]


def test_ingest_ground_truth_mismatch_is_a_bad_video(tmp_path):
    root = make_source(tmp_path / "src", gt=True)
    np.savez(root / "GroundTruth" / "v1.npz", masks=np.zeros((3, 112, 112), np.uint8),
             ed=np.array([0]), es=np.array([1]))
    report = ingest(root, tmp_path / "out.zarr", max_bad_fraction=0.5)
    assert report.videos == 3 and report.bad == 1
    bad = report.skips[report.skips["kind"] == "ground_truth"].iloc[0]
    assert bad["FileName"] == "v1" and "(3, 112, 112)" in bad["reason"]


def make_bad_source(root: Path) -> Path:
    """4 good videos + a missing one, a truncated one, garbage, a dup row, a NaN EF row and
    a stray video on disk: 5 bad rows out of 9."""
    videos = VIDEOS + [("trunc", 30, 50, 112, 30, "TRAIN"), ("garbage", 5, 50, 112, 5, "TRAIN")]
    make_source(root, videos, extra_rows=[
        "missing,50,0,0,112,112,50,10,TRAIN", "v1,50,0,0,112,112,50,10,TRAIN",
        "nanef,,0,0,112,112,50,10,TRAIN"])
    data = (root / "Videos" / "trunc.avi").read_bytes()
    (root / "Videos" / "trunc.avi").write_bytes(data[:len(data) // 2])
    (root / "Videos" / "garbage.avi").write_bytes(b"\x00garbage" * 300)
    write_avi(root / "Videos" / "stray.avi", smooth_frames(3))
    return root


def test_bad_inputs_are_skipped_and_reported(tmp_path):
    root = make_bad_source(tmp_path / "src")
    report = ingest(root, tmp_path / "out.zarr", max_bad_fraction=0.6,
                    skipped_path=tmp_path / "skipped.csv")
    store = open_frames(tmp_path / "out.zarr")
    assert list(store.index["FileName"]) == ["v0", "v1", "v2", "v3"]
    assert report.rows == 9 and report.bad == 5
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    by_name = {n: (k, r) for n, k, r in skipped[["FileName", "kind", "reason"]].itertuples(
        index=False)}
    assert by_name["missing"][0] == "missing"
    assert by_name["trunc"][0] == "video" and "truncated" in by_name["trunc"][1]
    assert by_name["garbage"][0] == "video" and "cannot be opened" in by_name["garbage"][1]
    assert by_name["nanef"][0] == "filelist"
    assert by_name["stray"][0] == "extra"
    assert ((skipped["FileName"] == "v1") & skipped["reason"].str.contains("duplicate")).any()


@pytest.mark.parametrize("decode_time", [False, True])
def test_bad_fraction_fails_without_store(tmp_path, decode_time):
    root = make_bad_source(tmp_path / "src")
    if decode_time:  # only undecodable videos: found while decoding, after the store began
        (root / "FileList.csv").write_text("\n".join(
            line for line in (root / "FileList.csv").read_text().splitlines()
            if not line.startswith(("missing", "v1,", "nanef"))) + "\n")
    out = tmp_path / "out.zarr"
    with pytest.raises(IngestError, match=r"bad .*skipped\.csv") as err:
        ingest(root, out, max_bad_fraction=0.05, skipped_path=tmp_path / "skipped.csv")
    assert ("2 of 6" if decode_time else "3 of 9") in str(err.value)
    assert not out.exists() and not partial_path(out).exists()
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    if decode_time:
        assert {"trunc", "garbage"} <= set(skipped["FileName"])
    else:  # failed before decoding: the undecodable videos are not known yet
        assert {"missing", "nanef", "v1"} <= set(skipped["FileName"])
    assert err.value.report.bad == (2 if decode_time else 3)


def test_deterministic_bytes(tmp_path):
    root = make_source(tmp_path / "src", gt=True)
    ingest(root, tmp_path / "a.zarr", workers=2)
    ingest(root, tmp_path / "b.zarr", workers=1, batch_videos=1)

    def files(p: Path) -> dict:
        return {f.relative_to(p): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}

    a, b = files(tmp_path / "a.zarr"), files(tmp_path / "b.zarr")
    assert a.keys() == b.keys() and len(a) > 5
    assert all(a[k] == b[k] for k in a)


def test_content_hash_taken_on_the_way_in_equals_reading_the_store_back(tmp_path):
    """The writer hashes frames as it writes them (no second pass); the recorded hash must be
    the one a read-back gives, also when the last shard is partial and shards fill across
    videos (42 frames in 16-frame shards)."""
    from echodfkd.data.store import content_sha
    import zarr

    ingest(make_source(tmp_path / "src"), tmp_path / "a.zarr")
    group = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert group["frames"].shape[0] == 42
    assert group.attrs["content_sha"] == content_sha(group["frames"])
    assert group.attrs["content_sha"] == content_sha(group["frames"], block_frames=5)


def test_distributed_scheduler(tmp_path):
    distributed = pytest.importorskip("distributed")
    root = make_source(tmp_path / "src")
    ingest(root, tmp_path / "local.zarr")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1,
                                  dashboard_address=None) as cluster:
        report = ingest(root, tmp_path / "dist.zarr", scheduler=cluster.scheduler_address)
    assert report.videos == 4
    local, dist = open_frames(tmp_path / "local.zarr"), open_frames(tmp_path / "dist.zarr")
    assert np.array_equal(local.frames[:], dist.frames[:])
    assert local.index.equals(dist.index) and local.fingerprint == dist.fingerprint


def test_stage_cli(tmp_path, capsys, monkeypatch):
    root = make_source(tmp_path / "src")
    out, skipped = tmp_path / "frames" / "real.zarr", tmp_path / "reports" / "skipped.csv"
    stage_params(monkeypatch, tmp_path / "project")
    args = stage_args(root, out, skipped)
    stage_main(args)
    frames = open_frames(out).frames
    assert frames.shape == (42, 112, 112)
    # the layout is params.yaml's (ingest.shard_frames 32, ingest.chunk_frames 8)
    assert frames.shards[0] == 32 and frames.chunks[0] == 8
    assert skipped.read_text().startswith("FileName,file,row,kind,reason\n")
    # an empty report still has its header
    clean = make_source(tmp_path / "clean", videos=VIDEOS[:2])
    (clean / "VolumeTracings.csv").unlink()
    stage_main(stage_args(clean, out, skipped))
    assert skipped.read_text() == "FileName,file,row,kind,reason\n"
    # failing on the bad fraction: one line, exit status 1, report written, no store
    bad = make_bad_source(tmp_path / "bad")
    out2 = tmp_path / "frames" / "bad.zarr"
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        stage_main(stage_args(bad, out2, skipped))
    assert err.value.code == 1 and not out2.exists()
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "max_bad_fraction" in line
    assert "missing" in set(pd.read_csv(skipped)["kind"])


def test_stage_requires_every_value(tmp_path, monkeypatch, capsys):
    root = make_source(tmp_path / "src", videos=VIDEOS[:1])
    out, skipped = tmp_path / "o.zarr", tmp_path / "s.csv"
    base = stage_args(root, out, skipped)
    stage_params(monkeypatch, tmp_path / "project")
    for k in range(0, 6, 2):                     # leave out one path argument at a time
        with pytest.raises(SystemExit) as err:
            stage_main(base[:k] + base[k + 2:])
        assert err.value.code == 2
    for key in STAGE_INGEST:                     # leave out one params key at a time
        stage_params(monkeypatch, tmp_path / "project", **{key: DROP})
        capsys.readouterr()
        with pytest.raises(SystemExit) as err:
            stage_main(base)
        text = capsys.readouterr().err
        assert err.value.code == 1 and text.count("\n") == 1
        assert text.startswith(f"error: params.yaml: ingest.{key} is missing"), text
    # an unknown key (a misspelt setting) is refused too
    stage_params(monkeypatch, tmp_path / "project", shard_frame=32)
    with pytest.raises(SystemExit) as err:
        stage_main(base)
    text = capsys.readouterr().err
    assert err.value.code == 1 and text.count("\n") == 1
    assert text.startswith("error: params.yaml: ingest.shard_frame is not a setting of ingest")
    assert not out.exists() and not skipped.exists()


@pytest.mark.parametrize("key, value, message", [
    ("max_bad_fraction", float("nan"),
     r"max_bad_fraction must be a number in \[0, 1\], got nan"),
    ("max_bad_fraction", 1.5, r"got 1\.5: fix ingest\.max_bad_fraction"),
    ("shard_frames", 0, r"shard_frames must be a whole number >= 1, got 0"),
    ("chunk_frames", -8, r"chunk_frames must be a whole number >= 1, got -8"),
    ("chunk_frames", 12, r"shard_frames 32 is not a multiple of chunk_frames 12"),
    ("workers", 0, r"workers must be a whole number >= 1, got 0"),
    ("tracing_policy", "mean", r"tracing_policy 'mean' is not one of first, last, largest"),
    # a value of the wrong type is refused while params.yaml is read
    ("shard_frames", "abc",
     r"^error: params\.yaml: ingest\.shard_frames must be an integer, got 'abc'"),
    ("shard_frames", 32.0, r"^error: params\.yaml: ingest\.shard_frames must be an integer, "
                           r"got 32\.0"),
    ("max_bad_fraction", "nan",
     r"^error: params\.yaml: ingest\.max_bad_fraction must be a number, got 'nan'"),
])
def test_stage_bad_settings_are_one_line_errors(tmp_path, capsys, monkeypatch, key, value,
                                                message):
    root = make_source(tmp_path / "src", videos=VIDEOS[:1])
    skipped = tmp_path / "s.csv"
    stage_params(monkeypatch, tmp_path / "project", **{key: value})
    with pytest.raises(SystemExit) as err:
        stage_main(stage_args(root, tmp_path / "o.zarr", skipped))
    err_text = capsys.readouterr().err
    assert err.value.code == 1 and err_text.count("\n") == 1
    assert re.search(message, err_text), err_text
    assert not (tmp_path / "o.zarr").exists() and not skipped.exists()


def test_stage_unreadable_filelist_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    root = make_source(tmp_path / "src", videos=VIDEOS[:1])
    with open(root / "FileList.csv", "ab") as f:
        f.write("v\u00e9,50,0,0,112,112,50,12,TRAIN\n".encode("latin-1"))   # line 3
    stage_params(monkeypatch, tmp_path / "project")
    with pytest.raises(SystemExit) as err:
        stage_main(stage_args(root, tmp_path / "o.zarr", tmp_path / "s.csv"))
    text = capsys.readouterr().err
    assert err.value.code == 1 and text.count("\n") == 1
    assert "FileList.csv' line 3 is not valid UTF-8" in text


def test_split_typo_and_ef_range_rows_are_skipped_not_extra(tmp_path):
    videos = VIDEOS + [("typo", 5, 50, 112, 5, "TRIAN"), ("badef", 5, 50, 112, 5, "TEST")]
    root = make_source(tmp_path / "src", videos)
    lines = (root / "FileList.csv").read_text().splitlines()
    lines[-1] = lines[-1].replace(",55,", ",155,")   # badef: EF 155
    (root / "FileList.csv").write_text("\n".join(lines) + "\n")
    report = ingest(root, tmp_path / "out.zarr", max_bad_fraction=0.5,
                    skipped_path=tmp_path / "skipped.csv")
    assert list(open_frames(tmp_path / "out.zarr").index["FileName"]) == ["v0", "v1", "v2", "v3"]
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    rows = skipped[skipped["FileName"].isin(["typo", "badef"])]
    # one row each (their videos on disk are not also called "not listed in FileList.csv")
    assert sorted(rows["FileName"]) == ["badef", "typo"] and set(rows["kind"]) == {"filelist"}
    assert list(rows["row"]) == [6, 7] and report.bad == 2 and report.rows == 6
    assert "'TRIAN' is not one of" in rows.iloc[0]["reason"]
    assert "EF 155 is outside 0-100" in rows.iloc[1]["reason"]


def test_two_annotators_and_a_640x480_video(tmp_path):
    # v0 (112x112): frame 2 has two annotators' tracings (42 rows); the first is used and the
    # frame is noted. big (640x480): a bright rectangle on columns 160..479, rows 120..359,
    # traced in the video's pixels; after resizing, its mask and the bright pixels coincide.
    big = np.zeros((6, 480, 640), np.uint8)
    big[:, 120:360, 160:480] = 200
    videos = VIDEOS[:1] + [("big", 6, 50, 480, 6, "TEST")]
    root = make_source(tmp_path / "src", videos)
    write_avi(root / "Videos" / "big.avi", big)
    lines = (root / "FileList.csv").read_text().replace("big.avi,51,0,0,480,480",
                                                        "big.avi,51,0,0,480,640")
    (root / "FileList.csv").write_text(lines)
    rows = (tracing("v0.avi", 2, cx=40, top=10, bottom=70, half_width=15)
            + tracing("v0.avi", 2, cx=42, top=12, bottom=66, half_width=12)
            + tracing("v0.avi", 8, cx=40, top=20, bottom=60, half_width=8)
            + [("big.avi", 320.0, 20.0, 320.0, 359.0, 1)]
            + [("big.avi", 160.0, y, 479.0, y, 1) for y in np.linspace(120, 359, 20)]
            + tracing("big.avi", 4, cx=320, top=200, bottom=300, half_width=40))
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False)
    ingest(root, tmp_path / "out.zarr", skipped_path=tmp_path / "skipped.csv")
    store = open_frames(tmp_path / "out.zarr")
    traced = store.traced
    assert [tuple(r) for r in traced[["FileName", "frame", "phase"]].itertuples(index=False)] \
        == [("v0", 2, "ED"), ("v0", 8, "ES"), ("big", 1, "ED"), ("big", 4, "ES")]
    assert np.array_equal(store.traced_masks[0], rectangle(13, 70, 25, 55))
    bright = (store.video(1)[1] > 100).astype(np.uint8)
    assert np.array_equal(bright, rectangle(28, 83, 28, 83))
    assert np.array_equal(store.traced_masks[2], bright)
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert len(skipped) == 1
    note = skipped.iloc[0]
    assert (note["FileName"], note["kind"], note["row"]) == ("v0", "note", 2)
    assert "42 rows in 2 parts" in note["reason"] and "used lines 2-22" in note["reason"]


def test_interrupted_ingest_leaves_the_old_report(tmp_path, monkeypatch):
    root = make_source(tmp_path / "src")
    skipped = tmp_path / "skipped.csv"
    skipped.write_text("old report\n")
    real_decode = ingest_module.decode_video

    def decode(path):
        if Path(path).stem == "v2":
            raise KeyboardInterrupt
        return real_decode(path)

    monkeypatch.setattr(ingest_module, "decode_video", decode)
    with pytest.raises(KeyboardInterrupt):
        ingest(root, tmp_path / "out.zarr", skipped_path=skipped, workers=1)
    assert skipped.read_text() == "old report\n"
    assert not (tmp_path / "out.zarr").exists()
    assert not partial_path(tmp_path / "out.zarr").exists()


def test_library_rejects_bad_settings(tmp_path):
    root = make_source(tmp_path / "src", videos=VIDEOS[:1])
    for kw in ({"max_bad_fraction": float("nan")}, {"shard_frames": 0}, {"chunk_frames": 0},
               {"batch_videos": 0}, {"workers": -1}, {"tracing_policy": "all"}):
        with pytest.raises(InputError):
            ingest(root, tmp_path / "o.zarr", **kw)


def test_video_links_outside_the_source_are_bad_rows(tmp_path):
    root = make_source(tmp_path / "src")
    outside = tmp_path / "elsewhere" / "v1.avi"
    outside.parent.mkdir()
    (root / "Videos" / "v1.avi").rename(outside)
    (root / "kept").mkdir()
    (root / "Videos" / "v3.avi").rename(root / "kept" / "v3.avi")
    try:
        (root / "Videos" / "v1.avi").symlink_to(outside)        # leaves the source: refused
    except OSError:
        pytest.skip("symbolic links are not supported here")
    (root / "Videos" / "v3.avi").symlink_to("../kept/v3.avi")  # stays inside: read
    report = ingest(root, tmp_path / "out.zarr", max_bad_fraction=0.5,
                    skipped_path=tmp_path / "skipped.csv")
    assert list(open_frames(tmp_path / "out.zarr").index["FileName"]) == ["v0", "v2", "v3"]
    assert report.bad == 1 and report.rows == 4
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    bad = skipped[skipped["FileName"] == "v1"]
    link = str(root / "Videos" / "v1.avi")
    assert [tuple(r) for r in bad.itertuples(index=False)] == [
        ("v1", "Videos/v1.avi", 3, "video",
         f"video file {link!r} resolves to {str(outside)!r} (a symbolic link), outside the "
         f"source folder {str(root)!r}: copy the file into the source folder (links must stay "
         f"inside it)")]
    # with the pipeline's max_bad_fraction (params.yaml: 5%) that one bad row of 4 stops the
    # stage
    limit = pipeline_ingest()["max_bad_fraction"]
    assert limit < 1 / 4
    with pytest.raises(IngestError, match=r"1 of 4 FileList rows .* by kind: \{'video': 1\}"):
        ingest(root, tmp_path / "out2.zarr", max_bad_fraction=limit)


def test_malformed_and_non_numeric_tracings_reach_the_skip_report(tmp_path):
    root = make_source(tmp_path / "src", videos=VIDEOS[:3])
    zero = [("v0.avi", 40.0, 10.0, 40.0, 70.0, 5)] + [
        ("v0.avi", 40.0, 10.0 + 3 * k, 40.0, 10.0 + 3 * k, 5) for k in range(1, 21)]
    v2 = tracing("v2.avi", 5, cx=60, top=30, bottom=90, half_width=10)
    v2[4] = ("v2.avi", 50.0, 42.0, "12,5", 42.0, 5)       # a decimal comma, quoted by to_csv
    rows = (tracing("v0.avi", 2, cx=40, top=10, bottom=70, half_width=15)   # lines 2-22
            + zero                                                          # lines 23-43
            + tracing("v0.avi", 8, cx=40, top=20, bottom=60, half_width=8)  # lines 44-64
            + v2                                                            # lines 65-85
            + tracing("v2.avi", 1, cx=60, top=10, bottom=110, half_width=30))
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(
        root / "VolumeTracings.csv", index=False)
    ingest(root, tmp_path / "out.zarr", skipped_path=tmp_path / "skipped.csv")
    traced = open_frames(tmp_path / "out.zarr").traced
    # v0: frame 5 (malformed) is not traced, ED 2 and ES 8 are; v2: frame 5 (refused) leaves
    # one usable frame, so v2 has no traced frames
    assert [tuple(r) for r in traced[["FileName", "frame", "phase"]].itertuples(index=False)] \
        == [("v0", 2, "ED"), ("v0", 8, "ES")]
    skipped = pd.read_csv(tmp_path / "skipped.csv")
    assert [tuple(r) for r in skipped.itertuples(index=False)] == [
        ("v0", "VolumeTracings.csv", 23, "tracing",
         "traced frame 5 has 21 rows (lines 23-43: long axis + 20 chords, malformed: all 20 "
         "chords have zero length (X1 == X2 and Y1 == Y2)) and no usable tracing: a malformed "
         "tracing outlines no area (its mask would be a line of a few pixels)"),
        ("v2", "VolumeTracings.csv", 65, "tracing",
         "traced frame 5 has a coordinate that is not a finite number (line 69: X2 '12,5'): "
         "fix that row"),
        ("v2", "VolumeTracings.csv", 86, "tracing",
         "only one usable traced frame (1): ED and ES cannot be told apart")]


def _fail_shard_writes(monkeypatch, code: int, after: int = 1) -> list:
    """Make zarr's file writes of frame shards fail with OSError ``code`` once ``after`` shard
    files were written (as a full disk would); returns the paths that were refused."""
    import zarr.storage._local as local

    real, written, refused = local._put, [], []

    def put(path, value, exclusive=False):
        if "frames" in Path(path).parts and "c" in Path(path).parts:
            if len(written) >= after:
                refused.append(path)
                raise OSError(code, {errno.ENOSPC: "No space left on device",
                                     errno.EFBIG: "File too large"}[code])
            written.append(path)
        return real(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    return refused


@pytest.mark.parametrize("code, name, text, fix", [
    (errno.ENOSPC, "ENOSPC", "No space left on device", "free disk space on that file system"),
    (errno.EFBIG, "EFBIG", "File too large", "raise the file-size limit (ulimit -f) or write "
                                              "smaller files (for stores: lower shard_frames)"),
])
def test_disk_full_is_one_line_and_leaves_no_store(tmp_path, monkeypatch, capsys, code, name,
                                                   text, fix):
    root = make_source(tmp_path / "src")
    out, skipped = tmp_path / "frames" / "real.zarr", tmp_path / "skipped.csv"
    skipped.write_text("old report\n")
    refused = _fail_shard_writes(monkeypatch, code)
    with pytest.raises(StoreWriteError) as err:
        ingest(root, out, skipped_path=skipped)       # 42 frames, 16 per shard: 3 shards
    assert refused and isinstance(err.value, InputError)
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == code
    message = str(err.value)
    assert message == (
        f"cannot write the frame store {str(out)!r}: {name} [Errno {code}] {text}; {fix}, then "
        f"rerun (the partial store {str(partial_path(out))!r} is removed; {str(out)!r} is as it "
        f"was)")
    assert not out.exists() and not partial_path(out).exists()
    assert skipped.read_text() == "old report\n"
    # through a stage's entry point: one line, exit status 1
    with pytest.raises(SystemExit) as exit_:
        run(lambda argv: ingest(root, out, skipped_path=skipped), [])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists() and not partial_path(out).exists()


def test_disk_full_keeps_the_previous_complete_store(tmp_path, monkeypatch):
    root = make_source(tmp_path / "src")
    out = tmp_path / "out.zarr"
    ingest(root, out)
    before = open_frames(out)
    fingerprint, frames = before.fingerprint, before.frames[:]
    real_finish = ingest_module.finish_frame_store

    def finish(*args, **kw):   # the last write: the index attributes
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingest_module, "finish_frame_store", finish)
    with pytest.raises(StoreWriteError, match=re.escape(
            f"cannot write the frame store {str(out)!r}: ENOSPC [Errno 28] No space left on "
            f"device; free disk space on that file system, then rerun")):
        ingest(root, out)
    monkeypatch.setattr(ingest_module, "finish_frame_store", real_finish)
    after = open_frames(out)                     # the old store, whole and unchanged
    assert after.fingerprint == fingerprint and np.array_equal(after.frames[:], frames)
    assert not partial_path(out).exists()


def test_disk_full_writing_the_skip_report(tmp_path, monkeypatch):
    root = make_source(tmp_path / "src")
    skipped = tmp_path / "skipped.csv"
    skipped.write_text("old report\n")
    real_write = Path.write_bytes

    def write_bytes(self, data):
        real_write(self, data[:10])              # a partial write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(StoreWriteError, match=re.escape(
            f"cannot write the skip report {str(skipped)!r}: ENOSPC [Errno 28] No space left "
            f"on device; free disk space on that file system, then rerun; the old report (if "
            f"any) is as it was")):
        ingest(root, tmp_path / "out.zarr", skipped_path=skipped)
    assert skipped.read_text() == "old report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skipped.csv", "src"]
