"""EchoNet readers on tiny files the tests write themselves."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from echodfkd.echonet import (
    VideoError, decode_video, fill_polygon, read_filelist, read_tracings, read_video,
    safe_video_path, skips_frame, tracing_masks, tracing_polygon_mask,
)
from videos import smooth_frames, write_avi

HEADER = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split\n"


def cv2_luma(path) -> np.ndarray:
    """Reference decoding: OpenCV's BGR frames converted to grey."""
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY))
    cap.release()
    return np.stack(out)


# ---------------------------------------------------------------- FileList

def test_read_filelist_normalises(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text(HEADER
                 + "a.avi,55,40.5,90,112,112,50,64,train\n"
                 + "b,61.25,0,0,112,112,30,10,Val\n"
                 + "sample_000123,42,0,0,112,112,54,192,EXTRA\n")
    fl, skips = read_filelist(p)
    assert skips == []
    assert list(fl["FileName"]) == ["a", "b", "sample_000123"]
    assert list(fl["Split"]) == ["TRAIN", "VAL", "EXTRA"]
    assert fl["EF"].dtype == np.float64 and list(fl["EF"]) == [55.0, 61.25, 42.0]
    assert list(fl["ESV"]) == [40.5, 0.0, 0.0] and list(fl["EDV"]) == [90.0, 0.0, 0.0]
    assert list(fl["NumberOfFrames"]) == [64.0, 10.0, 192.0]
    assert list(fl["row"]) == [2, 3, 4]


def test_read_filelist_optional_columns_are_nan(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text("FileName,EF,Split\nx,50,TEST\n")
    fl, skips = read_filelist(p)
    assert skips == [] and fl.loc[0, "Split"] == "TEST"
    assert np.isnan(fl.loc[0, "FPS"]) and np.isnan(fl.loc[0, "NumberOfFrames"])


def test_read_filelist_missing_column_names_file_and_column(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text("FileName,ESV,Split\nx,1,TRAIN\n")
    with pytest.raises(ValueError, match=r"FileList\.csv.*\['EF'\]"):
        read_filelist(p)


def test_read_filelist_reports_bad_rows(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text(HEADER
                 + "ok,50,0,0,112,112,50,10,TRAIN\n"        # line 2
                 + "nanef,,0,0,112,112,50,10,TRAIN\n"       # line 3: NaN EF
                 + "ok.avi,51,0,0,112,112,50,10,TRAIN\n"    # line 4: duplicate after .avi strip
                 + "../evil,50,0,0,112,112,50,10,TRAIN\n"   # line 5: escapes Videos/
                 + "/abs/x,50,0,0,112,112,50,10,TRAIN\n"    # line 6: absolute
                 + "textef,abc,0,0,112,112,50,10,TRAIN\n"   # line 7: non-numeric EF
                 + "nosplit,50,0,0,112,112,50,10,\n")       # line 8: empty split
    fl, skips = read_filelist(p)
    assert list(fl["FileName"]) == ["ok"]
    got = {(s.row, s.file_name): s.reason for s in skips}
    assert set(got) == {(3, "nanef"), (4, "ok"), (5, "../evil"), (6, "/abs/x"), (7, "textef"),
                        (8, "nosplit")}
    assert "duplicate" in got[(4, "ok")] and "line 2" in got[(4, "ok")]
    assert "EF" in got[(3, "nanef")] and "'abc'" in got[(7, "textef")]
    assert "Videos/" in got[(5, "../evil")]
    assert all(s.kind == "filelist" and s.file == "FileList.csv" for s in skips)
    df = skips_frame(skips)
    assert list(df.columns) == ["FileName", "file", "row", "kind", "reason"] and len(df) == 6


def test_safe_video_path(tmp_path):
    assert safe_video_path(tmp_path, "abc") == tmp_path / "Videos" / "abc.avi"
    assert safe_video_path(tmp_path, "abc.avi") == tmp_path / "Videos" / "abc.avi"
    for bad in ["../x", "a/b", "/etc/passwd", "..", "", "a\\b"]:
        with pytest.raises(ValueError):
            safe_video_path(tmp_path, bad)


# ---------------------------------------------------------------- tracings

def tracing_rows(name: str, frame: int, x1: float, x2: float, ys, long_axis=True) -> list:
    """Rows of one traced frame: a long-axis row then horizontal chords at ``ys``."""
    rows = [(name, 15.0, 5.0, 15.0, 60.0, frame)] if long_axis else []
    rows += [(name, x1, y, x2, y, frame) for y in ys]
    return rows


def tracings_df(tmp_path, rows) -> pd.DataFrame:
    p = tmp_path / "VolumeTracings.csv"
    pd.DataFrame(rows, columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame"]).to_csv(p,
                                                                                   index=False)
    return read_tracings(p)


def test_rectangle_mask_by_hand():
    # chords y = 10, 12, 14, 16 from x = 10 to x = 20: polygon is the rectangle's outline,
    # boundary included (skimage.draw.polygon semantics): rows 10..16, columns 10..20.
    ys = np.array([99.0, 10, 12, 14, 16])  # first row (long axis) is ignored
    mask = tracing_polygon_mask(np.full(5, 10.0), ys, np.full(5, 20.0), ys)
    expected = np.zeros((112, 112), np.uint8)
    expected[10:17, 10:21] = 1
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected)


def test_rounding_to_nearest_pixel():
    # x 9.6 -> 10, 20.4 -> 20; y 10.4 -> 10, 16.6 -> 17 (np.rint before filling)
    mask = tracing_polygon_mask(np.array([0, 9.6, 9.6]), np.array([0, 10.4, 16.6]),
                                np.array([0, 20.4, 20.4]), np.array([0, 10.4, 16.6]))
    expected = np.zeros((112, 112), np.uint8)
    expected[10:18, 10:21] = 1
    assert np.array_equal(mask, expected)


def test_fill_polygon_triangle_by_hand():
    # right triangle (0,0), (0,4), (4,0) in (row, col): pixels with r + c <= 4.
    mask = fill_polygon(np.array([0, 0, 4]), np.array([0, 4, 0]), (6, 6))
    r, c = np.mgrid[:6, :6]
    assert np.array_equal(mask, (r + c <= 4).astype(np.uint8))
    # clipped to the image
    assert fill_polygon(np.array([-5, -5, 200, 200]), np.array([-5, 200, 200, -5])).all()


def test_fill_polygon_matches_skimage():
    draw = pytest.importorskip("skimage.draw")
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(3, 30))
        r, c = np.rint(rng.uniform(-10, 120, n)), np.rint(rng.uniform(-10, 120, n))
        ref = np.zeros((112, 112), np.uint8)
        ref[draw.polygon(r, c, (112, 112))] = 1
        assert np.array_equal(fill_polygon(r, c), ref)


def test_tracing_masks_ed_es_and_row_counts(tmp_path):
    big = tracing_rows("v.avi", 7, 10, 40, np.linspace(10, 60, 20))     # 21 rows
    small = tracing_rows("v.avi", 3, 15, 30, np.linspace(20, 50, 20))
    tr = tracings_df(tmp_path, small + big)
    assert list(tr["FileName"].unique()) == ["v"]
    traced, skips = tracing_masks(tr, n_frames=10)
    assert skips == []
    assert [(t.frame, t.phase) for t in traced] == [(3, "ES"), (7, "ED")]
    ed = traced[1].mask
    assert ed.shape == (112, 112) and ed.dtype == np.uint8 and set(np.unique(ed)) == {0, 1}
    expected = np.zeros((112, 112), np.uint8)
    expected[10:61, 10:41] = 1
    assert np.array_equal(ed, expected)
    assert traced[1].row == 2 + len(small)   # first CSV line of the ED frame


def test_tracing_masks_several_annotators_use_all_rows(tmp_path):
    # 1 + 20 + 21 rows on one frame: EchoNet uses every row after the first.
    ys1, ys2 = np.linspace(10, 60, 20), np.linspace(12, 58, 21)
    rows = tracing_rows("v", 5, 10, 40, ys1) + tracing_rows("v", 5, 12, 38, ys2, False)
    rows += tracing_rows("v", 9, 20, 30, np.linspace(20, 40, 5))
    tr = tracings_df(tmp_path, rows)
    traced, skips = tracing_masks(tr, n_frames=12)
    assert skips == []
    ed = next(t for t in traced if t.phase == "ED")
    sub = tr[tr["Frame"] == 5].to_numpy()[:, 1:5].astype(float)
    assert len(sub) == 42
    x = np.concatenate([sub[1:, 0], sub[1:, 2][::-1]])
    y = np.concatenate([sub[1:, 1], sub[1:, 3][::-1]])
    assert ed.frame == 5 and np.array_equal(ed.mask, fill_polygon(np.rint(y), np.rint(x)))


def test_tracing_masks_refusals(tmp_path):
    rows = tracing_rows("v", 2, 10, 40, np.linspace(10, 60, 20))     # good (ED)
    rows += tracing_rows("v", 4, 15, 30, np.linspace(20, 50, 20))    # good (ES)
    rows += tracing_rows("v", 6, 15, 30, [20, 30])                   # only 2 chords
    rows += tracing_rows("v", 50, 15, 30, np.linspace(20, 50, 20))   # past the end
    nan_rows = tracing_rows("v", 8, 15, 30, np.linspace(20, 50, 20))
    nan_rows[3] = ("v", np.nan, 30.0, 30.0, 30.0, 8)
    tr = tracings_df(tmp_path, rows + nan_rows)
    traced, skips = tracing_masks(tr, n_frames=20)
    assert [(t.frame, t.phase) for t in traced] == [(2, "ED"), (4, "ES")]
    reasons = {s.reason.split(" ")[2]: s for s in skips}
    assert len(skips) == 3 and all(s.kind == "tracing" for s in skips)
    assert "3 rows" in reasons["6"].reason
    assert "outside the video (20 frames)" in reasons["50"].reason
    assert "NaN" in reasons["8"].reason
    assert reasons["6"].row == 2 + 21 + 21   # first line of frame 6's rows


def test_tracing_masks_third_frame_and_lone_frame(tmp_path):
    rows = (tracing_rows("v", 1, 10, 40, np.linspace(10, 60, 20))
            + tracing_rows("v", 2, 12, 38, np.linspace(10, 60, 20))
            + tracing_rows("v", 3, 15, 30, np.linspace(20, 50, 20)))
    traced, skips = tracing_masks(tracings_df(tmp_path, rows), n_frames=5)
    assert [(t.frame, t.phase) for t in traced] == [(1, "ED"), (3, "ES")]
    assert len(skips) == 1 and "third traced frame" in skips[0].reason
    lone = tracing_rows("w", 1, 10, 40, np.linspace(10, 60, 20))
    traced, skips = tracing_masks(tracings_df(tmp_path, lone), n_frames=5)
    assert traced == [] and "only one usable traced frame" in skips[0].reason


def test_tracing_masks_no_tracing():
    empty = pd.DataFrame(columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame", "row"])
    assert tracing_masks(empty, n_frames=10) == ([], [])


def test_read_tracings_missing_column(tmp_path):
    p = tmp_path / "VolumeTracings.csv"
    p.write_text("FileName,X1,Y1,X2,Frame\na,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"VolumeTracings\.csv.*Y2"):
        read_tracings(p)


# ---------------------------------------------------------------- videos

@pytest.mark.parametrize("fps", [30, 50, 54])
def test_read_video_fps(tmp_path, fps):
    src = smooth_frames(9, seed=fps)
    path = tmp_path / f"v{fps}.avi"
    write_avi(path, src, fps=fps)
    video = decode_video(path)
    assert video.frames.shape == (9, 112, 112) and video.frames.dtype == np.uint8
    assert video.fps == pytest.approx(fps)
    assert (video.height, video.width) == (112, 112)
    # MJPEG is lossy: close to what was written, within a few levels of OpenCV's decoding.
    assert np.abs(video.frames.astype(int) - src).mean() < 2.0
    assert np.abs(video.frames.astype(int) - cv2_luma(path)).max() <= 3


def test_read_video_resizes_with_inter_area(tmp_path):
    src = smooth_frames(5, size=128)
    path = tmp_path / "big.avi"
    write_avi(path, src)
    video = decode_video(path)
    assert video.frames.shape == (5, 112, 112) and (video.height, video.width) == (128, 128)
    ref = np.stack([cv2.resize(f, (112, 112), interpolation=cv2.INTER_AREA)
                    for f in cv2_luma(path)])
    assert np.abs(video.frames.astype(int) - ref).max() <= 3


def test_read_video_other_codec_exact(tmp_path):
    # A lossless non-JPEG codec goes through OpenCV's decoder: exact grey.
    src = np.random.default_rng(0).integers(0, 256, (4, 112, 112), dtype=np.uint8)
    path = tmp_path / "lossless.avi"
    write_avi(path, src, fourcc="FFV1")
    assert np.array_equal(read_video(path), src)


def test_read_video_bad_files(tmp_path):
    good = tmp_path / "good.avi"
    write_avi(good, smooth_frames(40))
    data = good.read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(data[:len(data) // 2])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, np.uint8).tobytes())
    zero = tmp_path / "zero.avi"
    cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 50, (112, 112)).release()
    cases = {truncated: "truncated", garbage: "cannot be opened", zero: "no frames",
             tmp_path / "missing.avi": "does not exist"}
    for path, what in cases.items():
        with pytest.raises(VideoError, match=what) as err:
            read_video(path)
        assert str(path) in str(err.value)
