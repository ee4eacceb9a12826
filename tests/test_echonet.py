"""EchoNet readers on tiny files the tests write themselves."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from echodfkd.data.echonet import (
    VideoError, chords_polygon_mask, chords_problem, decode_video, fill_polygon, outside_problem,
    read_filelist, read_tracings, read_video, safe_video_path, skips_frame, split_tracing,
    tracing_masks, tracing_polygon_mask,
)
from echodfkd.errors import InputError
from videos import rectangle, smooth_frames, tracing, write_avi

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


def test_read_filelist_split_typos_and_ef_range_are_refused_rows(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text(HEADER
                 + "a,50,0,0,112,112,50,10,TRIAN\n"        # line 2: typo
                 + "b,50,0,0,112,112,50,10,VALIDATION\n"   # line 3: not a valid split
                 + "c,100.5,0,0,112,112,50,10,TRAIN\n"     # line 4: EF > 100
                 + "d,-1,0,0,112,112,50,10,TEST\n"         # line 5: EF < 0
                 + "e,0,0,0,112,112,50,10,extra\n"         # line 6: fine (EF 0, EXTRA)
                 + "f,100,0,0,112,112,50,10,val\n")        # line 7: fine (EF 100)
    fl, skips = read_filelist(p)
    assert list(fl["FileName"]) == ["e", "f"] and list(fl["Split"]) == ["EXTRA", "VAL"]
    got = {s.row: s.reason for s in skips}
    assert sorted(got) == [2, 3, 4, 5] and all(s.kind == "filelist" for s in skips)
    assert "'TRIAN' is not one of TRAIN, VAL, TEST, EXTRA" in got[2]
    assert "'VALIDATION'" in got[3]
    assert "EF 100.5 is outside 0-100" in got[4] and "EF -1 is outside 0-100" in got[5]


def test_read_filelist_line_numbers_count_blank_lines(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_text(HEADER + "a,50,0,0,112,112,50,10,TRAIN\n\n  \nb,,0,0,112,112,50,10,TRAIN\n"
                 + "c,50,0,0,112,112,50,10,TEST\n")
    fl, skips = read_filelist(p)
    assert list(fl["row"]) == [2, 6] and [(s.file_name, s.row) for s in skips] == [("b", 5)]


def test_unreadable_csv_files_name_file_and_line(tmp_path):
    p = tmp_path / "FileList.csv"
    p.write_bytes(HEADER.encode() + b"a,50,0,0,112,112,50,10,TRAIN\n"
                  + "\u00e9chec,50,0,0,112,112,50,10,TRAIN\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"FileList\.csv' line 3 is not valid UTF-8 \(byte "
                                         r"0xe9.*save the file as UTF-8"):
        read_filelist(p)
    p.write_text(HEADER + "a,50,0,0,112,112,50,10,TRAIN\n"
                 + "b,50,0,0,112,112,50,10,TRAIN,oops\n")
    with pytest.raises(InputError, match=r"FileList\.csv' line 3 has 10 fields but the header "
                                         r"has 9: quote"):
        read_filelist(p)
    t = tmp_path / "VolumeTracings.csv"
    t.write_text("FileName,X1,Y1,X2,Y2,Frame\na,1,2,3,4,5\na,1,2,3,4,5,6,7\n")
    with pytest.raises(InputError, match=r"VolumeTracings\.csv' line 3 has 8 fields"):
        read_tracings(t)
    p.write_text("")
    with pytest.raises(InputError, match=r"FileList\.csv' is empty"):
        read_filelist(p)
    # a UTF-8 byte-order mark is fine
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + "a,50,0,0,112,112,50,10,TRAIN\n").encode())
    assert list(read_filelist(p)[0]["FileName"]) == ["a"]


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
    traced, skips = tracing_masks(tr, n_frames=10, policy="first")
    assert skips == []
    assert [(t.frame, t.phase) for t in traced] == [(3, "ES"), (7, "ED")]
    ed = traced[1].mask
    assert ed.shape == (112, 112) and ed.dtype == np.uint8 and set(np.unique(ed)) == {0, 1}
    expected = np.zeros((112, 112), np.uint8)
    expected[10:61, 10:41] = 1
    assert np.array_equal(ed, expected)
    assert traced[1].row == 2 + len(small)   # first CSV line of the ED frame


def test_tracing_masks_refusals(tmp_path):
    rows = tracing_rows("v", 2, 10, 40, np.linspace(10, 60, 20))     # good (ED)
    rows += tracing_rows("v", 4, 15, 30, np.linspace(20, 50, 20))    # good (ES)
    rows += tracing_rows("v", 6, 15, 30, [20, 30])                   # only 2 chords
    rows += tracing_rows("v", 50, 15, 30, np.linspace(20, 50, 20))   # past the end
    nan_rows = tracing_rows("v", 8, 15, 30, np.linspace(20, 50, 20))
    nan_rows[3] = ("v", np.nan, 30.0, 30.0, 30.0, 8)
    tr = tracings_df(tmp_path, rows + nan_rows)
    traced, skips = tracing_masks(tr, n_frames=20, policy="first")
    assert [(t.frame, t.phase) for t in traced] == [(2, "ED"), (4, "ES")]
    reasons = {s.reason.split(" ")[2]: s for s in skips}
    assert len(skips) == 3 and all(s.kind == "tracing" for s in skips)
    assert "3 rows" in reasons["6"].reason
    assert "outside the video (20 frames)" in reasons["50"].reason
    # frame 8's rows start on line 2 + 21 + 21 + 3 + 21 = 68; its 4th row (line 71) has an
    # empty X1 (pandas writes NaN as an empty cell): quoted as the file has it, with the line
    assert reasons["8"].reason == ("traced frame 8 has a coordinate that is not a finite number "
                                   "(line 71: X1 '' (empty)): fix that row")
    assert reasons["8"].row == 68
    assert reasons["6"].row == 2 + 21 + 21   # first line of frame 6's rows


def test_tracing_masks_third_frame_and_lone_frame(tmp_path):
    rows = (tracing_rows("v", 1, 10, 40, np.linspace(10, 60, 20))
            + tracing_rows("v", 2, 12, 38, np.linspace(10, 60, 20))
            + tracing_rows("v", 3, 15, 30, np.linspace(20, 50, 20)))
    traced, skips = tracing_masks(tracings_df(tmp_path, rows), n_frames=5, policy="first")
    assert [(t.frame, t.phase) for t in traced] == [(1, "ED"), (3, "ES")]
    assert len(skips) == 1 and "third traced frame" in skips[0].reason
    lone = tracing_rows("w", 1, 10, 40, np.linspace(10, 60, 20))
    traced, skips = tracing_masks(tracings_df(tmp_path, lone), n_frames=5, policy="first")
    assert traced == [] and "only one usable traced frame" in skips[0].reason


# ------------------------------------------- several annotators, quirks, resizing
# Annotator A: rectangle rows 13..70 (y = 13, 16, ..., 70), columns 25..55 (area 58 * 31).
A = dict(cx=40, top=10, bottom=70, half_width=15)
# Annotator B: a smaller LV, rows 15..66 (y = 12 + 2.7 k), columns 30..54 (area 52 * 25).
B = dict(cx=42, top=12, bottom=66, half_width=12)
MASK_A, MASK_B = rectangle(13, 70, 25, 55), rectangle(15, 66, 30, 54)
ES_ROWS = tracing("v", 9, cx=40, top=20, bottom=60, half_width=8)     # rows 22..60, cols 32..48


def masks_of(tmp_path, frame_rows, policy="first", **kw):
    """Traced frames and skips of a video whose frame 5 has ``frame_rows`` (+ ES frame 9)."""
    traced, skips = tracing_masks(tracings_df(tmp_path, frame_rows + ES_ROWS), n_frames=12,
                                  policy=policy, **kw)
    assert [(t.frame, t.phase) for t in traced] == [(5, "ED"), (9, "ES")]
    assert np.array_equal(traced[1].mask, rectangle(22, 60, 32, 48))
    return traced[0], skips


def test_two_annotators_42_rows_give_the_first_tracing(tmp_path):
    rows = tracing("v", 5, **A) + tracing("v", 5, **B)
    assert len(rows) == 42
    ed, skips = masks_of(tmp_path, rows)
    assert np.array_equal(ed.mask, MASK_A) and ed.row == 2
    # the old way (all rows after the first as one polygon) is a different, wrong mask
    xy = np.array([r[1:5] for r in rows])
    assert not np.array_equal(tracing_polygon_mask(*xy.T), MASK_A)
    assert len(skips) == 1
    note = skips[0]
    assert (note.kind, note.row, note.file_name) == ("note", 2, "v")
    assert note.reason == ("traced frame 5 has 42 rows in 2 parts (lines 2-22: long axis + 20 "
                           "chords; lines 23-43: long axis + 20 chords); used lines 2-22 "
                           "(tracing_policy first)")


@pytest.mark.parametrize("policy, expected, row", [("first", MASK_B, 2), ("last", MASK_A, 23),
                                                   ("largest", MASK_A, 23)])
def test_tracing_policies(tmp_path, policy, expected, row):
    ed, skips = masks_of(tmp_path, tracing("v", 5, **B) + tracing("v", 5, **A), policy)
    assert np.array_equal(ed.mask, expected) and ed.row == row
    assert f"tracing_policy {policy}" in skips[0].reason


def test_tracing_policy_must_be_known(tmp_path):
    with pytest.raises(InputError, match=r"'mean'.*ingest\.tracing_policy"):
        tracing_masks(tracings_df(tmp_path, ES_ROWS), n_frames=12, policy="mean")


def test_43_rows_two_tracings_and_a_stray_row(tmp_path):
    stray = ("v", 80.0, 30.0, 80.0, 40.0, 5)   # a short row beside the LV: no chord of A
    ed, skips = masks_of(tmp_path, tracing("v", 5, **A) + [stray] + tracing("v", 5, **B))
    assert np.array_equal(ed.mask, MASK_A) and ed.row == 2
    assert len(skips) == 1 and skips[0].kind == "note"
    assert skips[0].reason == (
        "traced frame 5 has 43 rows in 3 parts (lines 2-22: long axis + 20 chords; line 23: a "
        "stray row; lines 24-44: long axis + 20 chords); used lines 2-22 (tracing_policy first)")


def test_stray_rows_around_one_tracing(tmp_path):
    stray = ("v", 41.0, 30.0, 43.0, 31.0, 5)
    axis_again = tracing("v", 5, **A)[0]      # a repeated long axis at the end
    ed, skips = masks_of(tmp_path, [stray] + tracing("v", 5, **A) + [axis_again])
    assert np.array_equal(ed.mask, MASK_A) and ed.row == 3
    assert ("23 rows in 3 parts (line 2: a stray row; lines 3-23: long axis + 20 chords; "
            "line 24: a stray row); used lines 3-23") in skips[0].reason


def test_duplicated_identical_tracings(tmp_path):
    ed, skips = masks_of(tmp_path, tracing("v", 5, **A) * 2, policy="last")
    assert np.array_equal(ed.mask, MASK_A) and ed.row == 23
    assert "1 identical repeat(s) ignored" in skips[0].reason


def test_20_row_frames_are_used_and_noted(tmp_path):
    # long axis + 19 chords: the first 19 of A's chords, rows 13..67
    ed, skips = masks_of(tmp_path, tracing("v", 5, **A)[:20])
    assert np.array_equal(ed.mask, rectangle(13, 67, 25, 55))
    assert skips[0].kind == "note" and "20 rows in (lines 2-21: long axis + 19 chords)" in \
        skips[0].reason and "an incomplete tracing" in skips[0].reason
    # 20 chords, long axis missing: all 20 chords are used
    ed, skips = masks_of(tmp_path, tracing("v", 5, **A)[1:])
    assert np.array_equal(ed.mask, MASK_A)
    assert "20 chords without a long axis" in skips[0].reason
    # a complete tracing is preferred over an earlier incomplete one
    ed, skips = masks_of(tmp_path, tracing("v", 5, **B)[:15] + tracing("v", 5, **A))
    assert np.array_equal(ed.mask, MASK_A) and "used lines 17-37" in skips[0].reason


def test_frame_without_a_tracing_is_refused(tmp_path):
    rows = tracing("v", 5, **A)[:3] + tracing("v", 7, **A) + ES_ROWS   # frame 5: 2 chords
    traced, skips = tracing_masks(tracings_df(tmp_path, rows), n_frames=12, policy="first")
    assert [(t.frame, t.phase) for t in traced] == [(7, "ED"), (9, "ES")]
    assert [(s.kind, s.row) for s in skips] == [("tracing", 2)]
    assert "frame 5 has 3 rows (lines 2-4: long axis + 2 chords) and no tracing" in \
        skips[0].reason


def test_non_numeric_values_are_quoted_with_their_line(tmp_path):
    # frame 2 (lines 2-22): X1 of its 3rd row (line 4) is "abc"; frame 9 (lines 23-43): good;
    # frame 7 (line 44): Frame "7x"; frame 5 (lines 45-65): Y2 "NaN" on line 46.
    a = tracing("v", 2, **A)
    a[2] = ("v", "abc") + a[2][2:]
    b = tracing("v", 5, **A)
    b[1] = b[1][:4] + ("NaN", 5)
    rows = a + ES_ROWS + [("v", 10.0, 20.0, 30.0, 20.0, "7x")] + b
    tr = tracings_df(tmp_path, rows)
    assert list(tr["unreadable"][:4]) == ["", "", "X1 'abc'", ""]
    assert tr["unreadable"][42] == "Frame '7x'" and tr["unreadable"][44] == "Y2 'NaN'"
    assert (tr["unreadable"] != "").sum() == 3
    traced, skips = tracing_masks(tr, n_frames=12, policy="first")
    assert traced == []
    assert [(s.kind, s.row, s.reason) for s in skips] == [
        ("tracing", 2, "traced frame 2 has a coordinate that is not a finite number (line 4: "
                       "X1 'abc'): fix that row"),
        ("tracing", 44, "Frame is not an integer frame number (line 44: Frame '7x')"),
        ("tracing", 45, "traced frame 5 has a coordinate that is not a finite number (line 46: "
                        "Y2 'NaN'): fix that row"),
        ("tracing", 23, "only one usable traced frame (9): ED and ES cannot be told apart")]


def test_chords_problem_by_hand():
    good = np.array([[10.0, y, 20.0, y] for y in (10, 12, 14)])
    assert chords_problem(good) is None
    assert chords_problem(np.array([[5.0, y, 5.0, y] for y in (10, 12, 14)])) == \
        "all 3 chords have zero length (X1 == X2 and Y1 == Y2)"
    assert chords_problem(np.repeat(good[:1], 3, axis=0)) == \
        "all 3 chords are the same row (X1 10, Y1 10, X2 20, Y2 10)"
    # three chords on the line y = 10: their ends enclose no area
    assert chords_problem(np.array([[10.0, 10, 20, 10], [8, 10, 22, 10], [12, 10, 18, 10]])) \
        == "the ends of all 3 chords lie on one line (they enclose no area)"


# Frame 5 of each: a valid long axis (x = 40, y 10..70) with 20 chords that outline no area.
MALFORMED = {
    "zero length": ([("v", 40.0, 10.0 + 3 * k, 40.0, 10.0 + 3 * k, 5) for k in range(1, 21)],
                    "all 20 chords have zero length (X1 == X2 and Y1 == Y2)"),
    "identical": ([("v", 25.0, 40.0, 55.0, 40.0, 5)] * 20,
                  "all 20 chords are the same row (X1 25, Y1 40, X2 55, Y2 40)"),
    "one line": ([("v", 30.0 - k % 3, 40.0, 50.0 + k % 3, 40.0, 5) for k in range(20)],
                 "the ends of all 20 chords lie on one line (they enclose no area)"),
}
AXIS5 = ("v", 40.0, 10.0, 40.0, 70.0, 5)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_tracing_is_refused(tmp_path, case):
    chords, why = MALFORMED[case]
    # frame 2: A (lines 2-22, ED); frame 5: axis + malformed chords (lines 23-43); frame 9: ES
    rows = tracing("v", 2, **A) + [AXIS5] + chords + ES_ROWS
    assert [p.kind for p in split_tracing(np.array([r[1:5] for r in rows[21:42]]))] == \
        ["tracing"]   # it looks like a complete tracing: a long axis + 20 chords
    traced, skips = tracing_masks(tracings_df(tmp_path, rows), n_frames=12, policy="first")
    # before: frame 5 was accepted as a 2-20 pixel mask and became the ES frame
    assert [(t.frame, t.phase) for t in traced] == [(2, "ED"), (9, "ES")]
    assert np.array_equal(traced[0].mask, MASK_A)
    assert [(s.file_name, s.file, s.row, s.kind) for s in skips] == \
        [("v", "VolumeTracings.csv", 23, "tracing")]
    assert skips[0].reason == (
        f"traced frame 5 has 21 rows (lines 23-43: long axis + 20 chords, malformed: {why}) "
        f"and no usable tracing: a malformed tracing outlines no area (its mask would be a "
        f"line of a few pixels)")
    # the skip report lists it
    report = skips_frame(skips)
    assert list(report.iloc[0]) == ["v", "VolumeTracings.csv", 23, "tracing", skips[0].reason]


def test_malformed_tracing_beside_a_good_one_is_never_used(tmp_path):
    chords, why = MALFORMED["zero length"]
    for policy in ("first", "largest"):
        ed, skips = masks_of(tmp_path, [AXIS5] + chords + tracing("v", 5, **A), policy)
        assert np.array_equal(ed.mask, MASK_A) and ed.row == 23
        assert [s.kind for s in skips] == ["note"]
        assert skips[0].reason == (
            f"traced frame 5 has 42 rows in 2 parts (lines 2-22: long axis + 20 chords, "
            f"malformed: {why}; lines 23-43: long axis + 20 chords); used lines 23-43 "
            f"(tracing_policy {policy})")


def test_outside_problem_resolves_links(tmp_path):
    root = tmp_path / "src"
    (root / "Videos").mkdir(parents=True)
    (root / "kept").mkdir()
    (tmp_path / "elsewhere").mkdir()
    for p in (root / "Videos" / "a.avi", root / "kept" / "b.avi", tmp_path / "elsewhere" / "c.avi"):
        p.write_bytes(b"x")
    try:
        (root / "Videos" / "b.avi").symlink_to(root / "kept" / "b.avi")
    except OSError:
        pytest.skip("symbolic links are not supported here")
    (root / "Videos" / "c.avi").symlink_to(tmp_path / "elsewhere" / "c.avi")
    (root / "Videos" / "d.avi").symlink_to("../../elsewhere/c.avi")     # relative link
    (root / "Videos" / "e.avi").symlink_to(tmp_path / "elsewhere" / "gone.avi")   # dangling
    assert outside_problem(root, root / "Videos" / "a.avi") is None
    assert outside_problem(root, root / "Videos" / "b.avi") is None   # stays inside root
    outside = str(tmp_path / "elsewhere" / "c.avi")
    for name, target in (("c", outside), ("d", outside),
                         ("e", str(tmp_path / "elsewhere" / "gone.avi"))):
        path = root / "Videos" / f"{name}.avi"
        assert outside_problem(root, path) == (
            f"{str(path)!r} resolves to {target!r} (a symbolic link), outside the source "
            f"folder {str(root)!r}: copy the file into the source folder (links must stay "
            f"inside it)")


@pytest.mark.parametrize("angle", [0, 30, 75, 90, 140, 200, 315])
def test_split_tracing_any_orientation(angle):
    # A then B rotated about (56, 56): the boundaries do not depend on the direction.
    xy = np.array([r[1:5] for r in tracing("v", 0, **A) + tracing("v", 0, **B)])
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    rot = np.array([[c, -s], [s, c]])
    pts = (xy.reshape(-1, 2) - 56) @ rot.T + 56
    parts = split_tracing(pts.reshape(-1, 4))
    assert [(p.start, p.stop, p.kind) for p in parts] == [(0, 21, "tracing"),
                                                          (21, 42, "tracing")]


def test_tracing_scaled_with_a_640x480_video(tmp_path):
    # A rectangle in 640x480 pixels: columns 160..479, rows 120..359. Resized to 112x112
    # (x * 0.175, y * 112/480) it covers exactly pixels 28..83 in both directions; its
    # vertices map to (x + 0.5) * scale - 0.5 = 27.59..83.41 -> rint 28..83.
    rows = [("v", 320.0, 20.0, 320.0, 359.0, 5)]              # long axis (longer than chords)
    rows += [("v", 160.0, y, 479.0, y, 5) for y in np.linspace(120, 359, 20)]
    es = tracing("v", 9, cx=320, top=200, bottom=300, half_width=40)
    traced, skips = tracing_masks(tracings_df(tmp_path, rows + es), n_frames=12, width=640,
                                  height=480, policy="first")
    assert skips == [] and traced[0].phase == "ED"
    assert np.array_equal(traced[0].mask, rectangle(28, 83, 28, 83))
    # unscaled (the old way), the same rows fall outside the 112x112 frame: an empty mask
    assert not chords_polygon_mask(np.array([r[1:5] for r in rows[1:]])).any()


def test_tracing_masks_no_tracing():
    empty = pd.DataFrame(columns=["FileName", "X1", "Y1", "X2", "Y2", "Frame", "row"])
    assert tracing_masks(empty, n_frames=10, policy="first") == ([], [])


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
