"""Zarr store layout: codecs, chunk/shard geometry, atomic commit, refusal of incomplete or
foreign stores."""

import errno
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from echodfkd.data import store
from echodfkd.errors import InputError


def _index(lengths: list[int]) -> pd.DataFrame:
    stops = np.cumsum(lengths)
    return pd.DataFrame({
        "FileName": [f"v{i}" for i in range(len(lengths))], "Split": "TEST",
        "start": stops - lengths, "stop": stops, "FPS": 50.0, "EF": 60.0, "ESV": 0.0,
        "EDV": 0.0, "FrameHeight": 112.0, "FrameWidth": 112.0,
        "NumberOfFrames": np.asarray(lengths, dtype=float),
    })


def _frame_store(path, lengths=(5, 7), shard=8, chunk=4):
    index = _index(list(lengths))
    g = store.init_frame_store(path, index, 1, with_gt=True, shard_frames=shard,
                               chunk_frames=chunk)
    n = int(index["stop"].iloc[-1])
    frames = np.random.default_rng(0).integers(0, 256, (n, 112, 112), dtype=np.uint8)
    g["frames"][:] = frames
    g["gt_masks"][:] = frames > 128
    store.finish_frame_store(g, index, pd.DataFrame(
        [("v0", 0, 2, "ED", 0)], columns=store.TRACED_COLUMNS))
    return frames


def test_frames_use_lz4_masks_use_zstd_and_round_trip(tmp_path):
    frames = _frame_store(tmp_path / "s.zarr")
    fs = store.open_frames(tmp_path / "s.zarr")
    assert np.array_equal(fs.frames[:], frames)
    assert np.array_equal(fs.video(1), frames[5:12])
    assert np.array_equal(fs.gt_masks[:], (frames > 128).astype(np.uint8))
    (frame_codec,) = fs.frames.compressors
    assert isinstance(frame_codec, zarr.codecs.BloscCodec) and frame_codec.cname.value == "lz4"
    for a in (fs.gt_masks, fs.traced_masks):
        (codec,) = a.compressors
        assert isinstance(codec, zarr.codecs.ZstdCodec) and codec.level == 1
    assert fs.frames.chunks == (4, 112, 112) and fs.frames.shards == (8, 112, 112)
    # 12 frames in shards of 8 frames: two shard files for the frames array.
    assert len(list((tmp_path / "s.zarr" / "frames" / "c").iterdir())) == 2


@pytest.mark.parametrize("shard, chunk, expect", [(2048, 128, (128, 2048)), (100, 64, (64, 64)),
                                                  (10, 64, (10, 10)), (200, 64, (64, 192))])
def test_shards_are_whole_chunks(tmp_path, shard, chunk, expect):
    a = store.create_frame_array(zarr.open_group(str(tmp_path / "a.zarr"), mode="w"), "m", 3,
                                 shard_frames=shard, chunk_frames=chunk)
    assert (a.chunks[0], a.shards[0]) == expect


def test_negative_frame_count_is_refused(tmp_path):
    with pytest.raises(ValueError, match="-1"):
        store.create_frame_array(zarr.open_group(str(tmp_path / "a.zarr"), mode="w"), "m", -1,
                                 shard_frames=8, chunk_frames=4)


def test_commit_replaces_the_old_store_whole(tmp_path):
    dst = tmp_path / "out.zarr"
    for version in ("old", "new"):
        staging = store.partial_path(dst)
        assert staging.name == "out.zarr.partial"
        staging.mkdir()
        (staging / "version").write_text(version)
        store.commit(staging, dst)
    assert (dst / "version").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_incomplete_frame_store_is_refused(tmp_path):
    store.init_frame_store(tmp_path / "s.zarr", _index([3]), 0, with_gt=False, shard_frames=8,
                           chunk_frames=4)
    with pytest.raises(ValueError, match="not a complete frame store.*'videos'"):
        store.open_frames(tmp_path / "s.zarr")
    with pytest.raises(FileNotFoundError, match="run the ingest stage"):
        store.open_frames(tmp_path / "missing.zarr")


def test_mask_store_must_match_its_frames(tmp_path):
    _frame_store(tmp_path / "a.zarr")
    _frame_store(tmp_path / "b.zarr", lengths=(6, 6))  # same frame count, other videos
    a, b = store.open_frames(tmp_path / "a.zarr"), store.open_frames(tmp_path / "b.zarr")
    g = store.init_mask_store(tmp_path / "m.zarr", a, shard_frames=8, chunk_frames=4)
    with pytest.raises(ValueError, match="incomplete"):
        store.open_masks(tmp_path / "m.zarr", a)
    g.attrs["complete"] = True
    assert store.open_masks(tmp_path / "m.zarr", a).masks.shape == (12, 112, 112)
    with pytest.raises(ValueError, match="was made for frames"):
        store.open_masks(tmp_path / "m.zarr", b)


@pytest.mark.parametrize("shard, chunk, message", [
    (0, 8, "shard_frames must be a whole number >= 1, got 0: fix ingest.shard_frames"),
    (-64, 8, "shard_frames must be a whole number >= 1, got -64: fix ingest.shard_frames"),
    (True, 1, "shard_frames must be a whole number >= 1, got True: fix ingest.shard_frames"),
    (16, 0, "chunk_frames must be a whole number >= 1, got 0: fix ingest.chunk_frames"),
    (16, 12, "shard_frames 16 is not a multiple of chunk_frames 12: fix ingest.shard_frames "
             "or ingest.chunk_frames"),
    (8, 16, "shard_frames 8 is not a multiple of chunk_frames 16: fix ingest.shard_frames or "
            "ingest.chunk_frames"),
])
def test_check_shard_layout(shard, chunk, message):
    with pytest.raises(InputError) as err:
        store.check_shard_layout(shard, chunk)
    assert str(err.value) == message
    store.check_shard_layout(16, 8)
    store.check_shard_layout(np.int64(16), 16)


def test_store_writes_turns_os_errors_into_one_line(tmp_path):
    out = tmp_path / "x.zarr"
    with pytest.raises(store.StoreWriteError) as err:
        with store.store_writes("the mask store", out, " (more)"):
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "c" / "0"))
    assert str(err.value) == (
        f"cannot write the mask store {str(out)!r}: ENOSPC [Errno 28] No space left on device: "
        f"{str(out / 'c' / '0')!r}; free disk space on that file system, then rerun (more)")
    assert isinstance(err.value, InputError) and err.value.__cause__.errno == errno.ENOSPC
    with pytest.raises(KeyError):                     # not an OS error: unchanged
        with store.store_writes("the mask store", out):
            raise KeyError("x")


def test_write_bytes_atomic_leaves_no_tmp_on_a_full_disk(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    target.write_text("old")
    real = Path.write_bytes

    def full(self, data):
        real(self, data[:2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OSError):
        store.write_bytes_atomic(target, b"new contents")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
