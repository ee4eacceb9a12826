"""Readers for the EchoNet folder layout (EchoNet-Dynamic, EchoNet-Synthetic, the phantom).

A source folder holds::

    Videos/<FileName>.avi        grey (3 identical channels) echo videos, ideally 112x112
    FileList.csv                 one row per video: FileName, EF, ESV, EDV, FrameHeight,
                                 FrameWidth, FPS, NumberOfFrames, Split
    VolumeTracings.csv           optional: FileName, X1, Y1, X2, Y2, Frame (EchoNet-Dynamic)
    GroundTruth/<FileName>.npz   optional (phantom): masks uint8 (T, 112, 112), ed, es

Readers never drop a row silently: every row they refuse comes back as a :class:`Skip`
(which file, which line, why). Line numbers are 1-based lines of the CSV file, the header
being line 1, blank lines counted, so that ``sed -n <row>p FileList.csv`` shows the row.

Row or file? A bad *row* (bad Split, EF, FileName, duplicate; a bad traced frame) is a skip:
one bad row among 10,000 must not stop a run, it is recorded, and bad FileList rows count
against ``ingest.max_bad_fraction`` so that a systematic problem still stops the stage. A
file that cannot be read as the expected CSV at all (not UTF-8, a row with more fields than
the header, no header, a missing required column) raises :class:`echodfkd.errors.InputError`
naming the file and line: its rows cannot be assigned to columns reliably.

Tracings with several annotators (docs/design.md §2): see :func:`split_tracing`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.data.store import FRAME_SIZE

FILELIST_REQUIRED = ["FileName", "EF", "Split"]
FILELIST_NUMERIC = ["EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames"]
TRACINGS_REQUIRED = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
SKIP_COLUMNS = ["FileName", "file", "row", "kind", "reason"]
SPLITS = ("TRAIN", "VAL", "TEST", "EXTRA")  # EXTRA: EchoNet-Synthetic's extra samples
EF_RANGE = (0.0, 100.0)                      # EF is a percentage
CHORDS = 20                                   # chords of a complete tracing (after the long axis)
TRACING_POLICIES = ("first", "last", "largest")

# Skip kinds that mean a FileList row did not become a video in the store (they count
# against ``max_bad_fraction``); the others drop less (a traced frame) or nothing.
BAD_KINDS = ("filelist", "missing", "video", "ground_truth")


class VideoError(InputError):
    """A video file that cannot be decoded (unreadable, truncated, no frames)."""


@dataclass(frozen=True)
class Skip:
    """One refused input item.

    ``kind`` is one of: ``filelist`` (bad FileList row), ``missing`` (video file absent),
    ``video`` (undecodable video), ``ground_truth`` (bad GroundTruth file), ``tracing``
    (traced frame dropped), ``extra`` (video on disk not in FileList, ignored), ``note``
    (recorded inconsistency; the item is used: e.g. a traced frame split into several
    annotators' tracings of which one was used, or an incomplete tracing used as it is).
    ``row`` is the 1-based line in ``file`` (header = line 1) or None when the item is not a
    CSV row.
    """

    file_name: str
    file: str
    row: int | None
    kind: str
    reason: str


def skips_frame(skips: list[Skip]) -> pd.DataFrame:
    """Skips as a DataFrame with ``SKIP_COLUMNS`` (row as nullable Int64); empty is fine."""
    df = pd.DataFrame(
        [(s.file_name, s.file, s.row, s.kind, s.reason) for s in skips],
        columns=SKIP_COLUMNS,
    )
    df["row"] = df["row"].astype("Int64")
    for c in ("FileName", "file", "kind", "reason"):
        df[c] = df[c].astype(str)
    return df


def _strip_avi(name: str) -> str:
    return name[:-4] if name.lower().endswith(".avi") else name


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name directly inside ``Videos/`` (None if it can)."""
    if name == "":
        return "empty FileName"
    if name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return f"FileName {name!r} is not a plain file name (would leave Videos/)"
    if os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return f"FileName {name!r} is an absolute path"
    return None


def safe_video_path(root: str | os.PathLike, file_name: str) -> Path:
    """``root/Videos/<file_name>.avi`` (``.avi`` added unless present).

    Raises InputError (a ValueError) for a name that would resolve outside ``root/Videos``
    (``../x``, ``a/b``, absolute paths, empty names).
    """
    name = _strip_avi(str(file_name))
    problem = name_problem(name)
    if problem:
        raise InputError(f"{problem} (root {str(root)!r}): use the bare file name")
    videos = Path(root) / "Videos"
    path = videos / f"{name}.avi"
    if path.parent != videos:
        raise InputError(f"FileName {file_name!r} would leave {str(videos)!r}: use the bare "
                         f"file name")
    return path


def outside_problem(root: str | os.PathLike, path: str | os.PathLike) -> str | None:
    """Why the file ``path`` under the source folder ``root`` must not be read (None if it
    may): it resolves outside ``root`` (a symbolic link, or a file in a linked folder, that
    points elsewhere). Links are resolved (``os.path.realpath``; a dangling link counts by
    where it points) and the result must lie inside ``root``'s own resolved path, so that a
    source folder only ever yields its own files, as a FileName can never leave ``Videos/``
    (:func:`safe_video_path`)."""
    base = Path(os.path.realpath(root))
    real = Path(os.path.realpath(path))
    if real.is_relative_to(base):
        return None
    return (f"{str(path)!r} resolves to {str(real)!r} (a symbolic link), outside the source "
            f"folder {str(root)!r}: copy the file into the source folder (links must stay "
            f"inside it)")


def _too_many_fields(path: Path, text: str) -> None:
    """Raise InputError naming the first line of ``text`` with more fields than its header."""
    reader = csv.reader(io.StringIO(text))
    width = None
    for fields in reader:
        if width is None:
            width = len(fields)
        elif len(fields) > width:
            raise InputError(
                f"{str(path)!r} line {reader.line_num} has {len(fields)} fields but the header "
                f"has {width}: quote values that contain a comma, or remove the extra field(s)")


def _data_lines(text: str, n_rows: int) -> np.ndarray:
    """1-based file line of each data row (pandas skips blank lines), int64 (n_rows,).

    Falls back to ``row index + 2`` when quoted fields span lines (rows are not lines then).
    """
    lines = np.flatnonzero([bool(line.strip()) for line in re.split(r"\r\n|\n|\r", text)]) + 1
    if len(lines) == n_rows + 1:
        return lines[1:].astype(np.int64)
    return np.arange(n_rows, dtype=np.int64) + 2


def _read_csv(path: Path, required: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CSV that must have the ``required`` columns.

    Returns the DataFrame (FileName/Split as str) and each row's 1-based line in the file.
    Raises FileNotFoundError when it is absent and InputError (naming the file, the line or
    column, and the fix) when it is not UTF-8, has a row with more fields than the header,
    is empty or lacks a required column: such a file cannot be read row by row reliably.
    """
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(
            f"{str(path)!r} line {line} is not valid UTF-8 (byte 0x{data[e.start]:02x} at "
            f"offset {e.start}): save the file as UTF-8") from None
    try:
        df = pd.read_csv(io.StringIO(text), dtype={"FileName": str, "Split": str},
                         keep_default_na=False,
                         na_values=["", "NaN", "nan", "NA", "N/A", "null"])
    except pd.errors.EmptyDataError:
        raise InputError(f"{str(path)!r} is empty: it needs a header line with the columns "
                         f"{required}") from None
    except pd.errors.ParserError as e:
        _too_many_fields(path, text)
        raise InputError(f"{str(path)!r} is not a readable CSV ({e}): fix the file") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"{str(path)!r} lacks required column(s) {missing}; it has {list(df.columns)}: "
            f"add them to the header (comma-separated)")
    return df, _data_lines(text, len(df))


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """Column as float64; non-numeric text becomes NaN (reported by the caller's checks)."""
    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def read_filelist(path: str | os.PathLike) -> tuple[pd.DataFrame, list[Skip]]:
    """Read an EchoNet ``FileList.csv``.

    Returns ``(filelist, skips)``. ``filelist`` has one row per usable video, in file order:
    FileName (str, no ``.avi``), Split (str, upper case, one of ``SPLITS``: TRAIN, VAL,
    TEST, EXTRA), the float64 columns ``FILELIST_NUMERIC`` (NaN where the file lacks the
    column; ESV/EDV may be 0 as in EchoNet-Synthetic) and ``row`` (1-based line in the
    file). Refused rows come back as skips of kind ``filelist`` (they count against
    ``max_bad_fraction``):

    - a FileName that is empty, a path (``../x``, ``a/b``, absolute) or a duplicate;
    - an EF that is missing, not a number or outside 0-100 (EF is a percentage: such a value
      is a typo or another unit, and it would corrupt the EF scores; the row is refused like
      a missing EF rather than kept with a wrong value);
    - a Split that is empty or not one of ``SPLITS`` (case-insensitive): a typo such as
      ``TRIAN`` or ``VALIDATION`` would otherwise store a video that training, fitting and
      evaluation silently never select.

    A file that cannot be read as a CSV, or lacks a required column (FileName, EF, Split),
    raises InputError (see the module docstring).
    """
    path = Path(path)
    df, lines = _read_csv(path, FILELIST_REQUIRED)
    out = pd.DataFrame({
        "FileName": df["FileName"].fillna("").astype(str).str.strip().map(_strip_avi),
        "Split": df["Split"].fillna("").astype(str).str.strip().str.upper(),
    })
    for c in FILELIST_NUMERIC:
        out[c] = _numeric(df, c) if c in df.columns else np.nan
    out["row"] = lines
    skips: list[Skip] = []
    keep = np.ones(len(out), dtype=bool)
    first_row: dict[str, int] = {}
    raw_ef = df["EF"].astype(str).tolist()
    for i, (name, split, ef, row) in enumerate(
            zip(out["FileName"], out["Split"], out["EF"], out["row"])):
        reason = name_problem(name)
        if reason is None and name in first_row:
            reason = f"duplicate FileName {name!r} (first on line {first_row[name]})"
        if reason is None and not math.isfinite(ef):
            reason = f"EF {raw_ef[i]!r} is not a number: give the ejection fraction in %"
        if reason is None and not EF_RANGE[0] <= ef <= EF_RANGE[1]:
            reason = (f"EF {ef:g} is outside {EF_RANGE[0]:g}-{EF_RANGE[1]:g}: give the "
                      f"ejection fraction in %")
        if reason is None and split == "":
            reason = f"Split is empty: use one of {', '.join(SPLITS)}"
        if reason is None and split not in SPLITS:
            reason = (f"Split {split!r} is not one of {', '.join(SPLITS)} (case-insensitive): "
                      f"fix the typo, or the video is never used")
        if reason is not None:
            keep[i] = False
            skips.append(Skip(name, path.name, int(row), "filelist", reason))
        else:
            first_row[name] = int(row)
    return out[keep].reset_index(drop=True), skips


TRACING_NUMERIC = ["X1", "Y1", "X2", "Y2", "Frame"]


def _cell_text(column: str, raw: str) -> str:
    """``X1 'abc'``: a cell as the file gives it, for messages (an empty one is said so)."""
    return f"{column} {raw!r}" + (" (empty)" if raw.strip() == "" else "")


def read_tracings(path: str | os.PathLike) -> pd.DataFrame:
    """Read EchoNet-Dynamic ``VolumeTracings.csv``.

    Returns FileName (str, no ``.avi``), X1, Y1, X2, Y2 (float64 pixel coordinates, x =
    column, y = row; NaN where unreadable), Frame (float64 so that a missing frame stays
    NaN), ``row`` (1-based line in the file) and ``unreadable`` (str: for a row whose
    coordinate or Frame is not a finite number, those cells as the file writes them, e.g.
    ``X1 'abc'`` or ``Frame '' (empty)``, so that messages quote the file; "" for a good
    row), in file order. An unreadable file or a missing required column raises InputError
    naming the file.
    """
    path = Path(path)
    df, lines = _read_csv(path, TRACINGS_REQUIRED)
    out = pd.DataFrame({
        "FileName": df["FileName"].fillna("").astype(str).str.strip().map(_strip_avi)})
    for c in TRACING_NUMERIC:
        out[c] = _numeric(df, c)
    out["row"] = lines
    unreadable = [""] * len(out)
    bad = ~np.isfinite(out[TRACING_NUMERIC].to_numpy(dtype=np.float64))
    if bad.any():
        # Only now (a bad file) parse the text again, every cell as written: the first parse
        # turned "abc", "" and "NaN" alike into NaN.
        raw = pd.read_csv(io.StringIO(path.read_bytes().decode("utf-8-sig")), dtype=str,
                          keep_default_na=False)
        same_rows = len(raw) == len(out)
        for i in np.flatnonzero(bad.any(axis=1)).tolist():
            unreadable[i] = ", ".join(
                _cell_text(c, str(raw[c].iat[i])) if same_rows else f"{c} (not a number)"
                for c, b in zip(TRACING_NUMERIC, bad[i]) if b)
    out["unreadable"] = unreadable
    return out


@dataclass
class TracedFrame:
    """A traced frame: ``frame`` (0-based, within the video), ``phase`` "ED" or "ES",
    ``mask`` uint8 (112, 112) 0/1 (rows = y, columns = x), ``row`` (first CSV line of the
    tracing used)."""

    frame: int
    phase: str
    mask: np.ndarray
    row: int


def fill_polygon(r: np.ndarray, c: np.ndarray,
                 shape: tuple[int, int] = (FRAME_SIZE, FRAME_SIZE)) -> np.ndarray:
    """Rasterise a polygon: uint8 ``shape`` mask, 1 on pixels inside or on the boundary.

    ``r``, ``c`` are the vertices' row (y) and column (x) coordinates. Same pixels as
    ``skimage.draw.polygon(r, c, shape)`` (scikit-image 0.26): pixel (i, j) is set when the
    point (row i, column j) lies inside, on an edge or on a vertex (crossing-number test of
    O'Rourke, Computational Geometry in C, 7.4), within the bounding box clipped to ``shape``.
    """
    r = np.ascontiguousarray(r, dtype=np.float64)
    c = np.ascontiguousarray(c, dtype=np.float64)
    mask = np.zeros(shape, dtype=np.uint8)
    if r.size == 0:
        return mask
    minr, maxr = int(max(0.0, r.min())), min(shape[0] - 1, int(math.ceil(r.max())))
    minc, maxc = int(max(0.0, c.min())), min(shape[1] - 1, int(math.ceil(c.max())))
    if minr > maxr or minc > maxc:
        return mask
    y = np.arange(minr, maxr + 1, dtype=np.float64)[None, :, None]
    x = np.arange(minc, maxc + 1, dtype=np.float64)[None, None, :]
    on_vertex = np.zeros((y.size, x.size), dtype=bool)
    r_cross = np.zeros((y.size, x.size), dtype=np.int32)
    l_cross = np.zeros((y.size, x.size), dtype=np.int32)
    # every edge (vertex i-1 -> vertex i) at once, in groups that bound the temporaries
    # (edges x box pixels); elementwise the same arithmetic as one edge at a time
    prev_r, prev_c = np.roll(r, 1), np.roll(c, 1)
    group = max(1, (1 << 20) // (y.size * x.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(0, r.size, group):
            x0, y0 = c[a:a + group, None, None] - x, r[a:a + group, None, None] - y
            x1, y1 = prev_c[a:a + group, None, None] - x, prev_r[a:a + group, None, None] - y
            on_vertex |= ((x0 == 0) & (y0 == 0)).any(axis=0)
            eval_x = (x0 * y1 - x1 * y0) / (y1 - y0)
            r_cross += (((y0 > 0) != (y1 > 0)) & (eval_x > 0)).sum(axis=0, dtype=np.int32)
            l_cross += (((y0 < 0) != (y1 < 0)) & (eval_x < 0)).sum(axis=0, dtype=np.int32)
    inside = on_vertex | ((r_cross % 2) != (l_cross % 2)) | (r_cross % 2 == 1)
    mask[minr:maxr + 1, minc:maxc + 1] = inside
    return mask


def tracing_polygon_mask(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
                         shape: tuple[int, int] = (FRAME_SIZE, FRAME_SIZE)) -> np.ndarray:
    """EchoNet's LV mask of one 21-row tracing by position (as the original code), uint8
    ``shape`` 0/1.

    Inputs are the tracing's rows in file order; row 0 (the long axis) is not used (for
    frames with several tracings, see :func:`split_tracing`). The
    polygon is (X1, Y1) of rows 1.. then (X2, Y2) of rows 1.. reversed, rounded to the
    nearest pixel (``np.rint``) and filled as ``skimage.draw.polygon`` does.
    """
    x = np.concatenate([np.asarray(x1)[1:], np.asarray(x2)[1:][::-1]])
    y = np.concatenate([np.asarray(y1)[1:], np.asarray(y2)[1:][::-1]])
    return fill_polygon(np.rint(y), np.rint(x), shape)


def chords_polygon_mask(chords: np.ndarray, width: int = FRAME_SIZE, height: int = FRAME_SIZE,
                        shape: tuple[int, int] = (FRAME_SIZE, FRAME_SIZE)) -> np.ndarray:
    """EchoNet's LV mask from a tracing's chords, uint8 ``shape`` 0/1 (rows = y, cols = x).

    ``chords`` float (k, 4): X1, Y1, X2, Y2 of the chords in file order, in the pixels of a
    ``width`` x ``height`` video. The polygon is (X1, Y1) of every chord then (X2, Y2) in
    reverse order. When the video is not 112x112 its frames are resized to 112x112, so the
    vertices are mapped the same way (pixel centres: ``x' = (x + 0.5) * 112 / width - 0.5``,
    ``y' = (y + 0.5) * 112 / height - 0.5``, as ``cv2.resize`` maps them); then rounded to
    the nearest pixel (``np.rint``) and filled as ``skimage.draw.polygon`` does.
    """
    chords = np.asarray(chords, dtype=np.float64)
    x = np.concatenate([chords[:, 0], chords[::-1, 2]])
    y = np.concatenate([chords[:, 1], chords[::-1, 3]])
    if (width, height) != (FRAME_SIZE, FRAME_SIZE):
        x = (x + 0.5) * (FRAME_SIZE / width) - 0.5
        y = (y + 0.5) * (FRAME_SIZE / height) - 0.5
    return fill_polygon(np.rint(y), np.rint(x), shape)


# Geometry of one tracing (docs/design.md §2): the long axis runs from the apex to the mid
# annulus; every chord is perpendicular to it and crosses it between its ends.
_PERPENDICULAR = 0.5  # |cos| below this: perpendicular enough (more than 60 degrees apart)
_PARALLEL = 0.866     # |cos| above this: parallel enough (less than 30 degrees apart)
_MARGIN = 0.15        # slack at the axis' ends and sides, as a fraction of its length


def chord_matrix(xy: np.ndarray) -> np.ndarray:
    """``C[i, j]`` is True when row ``j`` is a chord of row ``i`` taken as a long axis.

    ``xy`` float64 (n, 4): X1, Y1, X2, Y2 in the video's own pixels (angles are measured
    there, before any resizing). Row j is a chord of axis i (length L > 0) when j is shorter
    than L, at most 60 degrees off perpendicular to i (a zero-length j counts as
    perpendicular), its midpoint projects onto i within [-0.15 L, 1.15 L] and its two ends
    lie on either side of i's line (with 0.15 L of slack). Returns bool (n, n).
    """
    xy = np.asarray(xy, dtype=np.float64)
    p1, p2 = xy[:, :2], xy[:, 2:]
    d = p2 - p1
    length = np.hypot(d[:, 0], d[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        u = d / length[:, None]                          # unit direction of each row as axis
        nrm = np.stack([-u[:, 1], u[:, 0]], axis=1)      # unit normal
        rel1 = p1[None, :, :] - p1[:, None, :]           # [i, j]: chord j's ends from axis i's
        rel2 = p2[None, :, :] - p1[:, None, :]           # first point
        t = ((rel1 + rel2) / 2 * u[:, None, :]).sum(-1) / length[:, None]
        cos = np.abs((d[None, :, :] * u[:, None, :]).sum(-1)) / length[None, :]
        cos = np.where(length[None, :] > 0, cos, 0.0)
        s1 = (rel1 * nrm[:, None, :]).sum(-1)
        s2 = (rel2 * nrm[:, None, :]).sum(-1)
        tol = _MARGIN * length[:, None]
        return ((length[:, None] > 0) & (length[None, :] < length[:, None])
                & (cos < _PERPENDICULAR) & (t >= -_MARGIN) & (t <= 1 + _MARGIN)
                & (np.minimum(s1, s2) <= tol) & (np.maximum(s1, s2) >= -tol))


@dataclass(frozen=True)
class TracingPart:
    """A run of a traced frame's rows, ``xy[start:stop]``.

    ``kind``: ``tracing`` (a long axis at ``start`` followed by its chords), ``chords`` (3 or
    more parallel rows without a long axis) or ``stray`` (one row that belongs to neither).
    """

    start: int
    stop: int
    kind: str

    @property
    def n_chords(self) -> int:
        """Chords in the part (the long axis excluded); 0 for a stray row."""
        return {"tracing": self.stop - self.start - 1, "chords": self.stop - self.start,
                "stray": 0}[self.kind]

    @property
    def complete(self) -> bool:
        """A long axis followed by exactly ``CHORDS`` (20) chords."""
        return self.kind == "tracing" and self.n_chords == CHORDS

    def chords(self, xy: np.ndarray) -> np.ndarray:
        """The part's chord rows of ``xy``, float (n_chords, 4)."""
        return xy[self.start + (self.kind == "tracing"):self.stop]

    def describe(self) -> str:
        return {"tracing": f"long axis + {self.n_chords} chords",
                "chords": f"{self.n_chords} chords without a long axis",
                "stray": "a stray row"}[self.kind]


def chords_problem(chords: np.ndarray) -> str | None:
    """Why a tracing's chords cannot outline the LV (None if they can).

    ``chords`` float (k, 4): X1, Y1, X2, Y2 of the chords (the long axis excluded). Such
    tracings pass :func:`chord_matrix` (a zero-length row counts as a perpendicular chord)
    but their polygon encloses no area, and its mask would be a line of a few pixels taken
    for a tiny LV (and so for the ES frame): every chord has zero length (X1 == X2 and
    Y1 == Y2), every chord is the same row, or all their ends lie on one line.
    """
    chords = np.asarray(chords, dtype=np.float64)
    k = len(chords)
    if k == 0:
        return None
    if not np.any(chords[:, :2] != chords[:, 2:]):
        return f"all {k} chords have zero length (X1 == X2 and Y1 == Y2)"
    if k > 1 and not np.any(chords != chords[0]):
        x1, y1, x2, y2 = chords[0]
        return f"all {k} chords are the same row (X1 {x1:g}, Y1 {y1:g}, X2 {x2:g}, Y2 {y2:g})"
    ends = np.concatenate([chords[:, :2], chords[:, 2:]])
    ends = ends - ends.mean(axis=0)
    sv = np.linalg.svd(ends, compute_uv=False)
    if sv[1] <= 1e-9 * max(float(sv[0]), 1.0):
        return f"the ends of all {k} chords lie on one line (they enclose no area)"
    return None


def _loose_parts(xy: np.ndarray, start: int, stop: int) -> list[TracingPart]:
    """Rows ``start:stop`` that no long axis claims: runs of >= 3 consecutive rows parallel
    to the run's first row are headless tracings (``chords``), the rest ``stray`` rows."""
    d = xy[start:stop, 2:] - xy[start:stop, :2]
    length = np.hypot(d[:, 0], d[:, 1])
    parts, i = [], 0
    while i < len(d):
        j = i + 1
        if length[i] > 0:
            while (j < len(d) and length[j] > 0 and abs(d[i] @ d[j]) / (length[i] * length[j])
                   > _PARALLEL):
                j += 1
        if j - i >= 3:
            parts.append(TracingPart(start + i, start + j, "chords"))
        else:
            parts += [TracingPart(k, k + 1, "stray") for k in range(start + i, start + j)]
        i = j
    return parts


def split_tracing(xy: np.ndarray) -> list[TracingPart]:
    """Split a traced frame's rows (file order) into per-annotator tracings.

    ``xy`` float64 (n, 4): X1, Y1, X2, Y2 in the video's own pixels. EchoNet-Dynamic's
    VolumeTracings.csv gives one tracing per frame as 21 rows (a long axis, then 20 chords
    perpendicular to it), but some frames hold several annotators' tracings one after the
    other (42 rows), a stray extra row (43), an incomplete tracing (20 rows) or a repeated
    one. The boundaries come from the geometry, not from row positions: a row starts a
    tracing when the next row is a chord of it (:func:`chord_matrix`: shorter, roughly
    perpendicular, crossing it between its ends); the tracing then takes every following
    row that is a chord of that axis. Chords are parallel to one another and the next
    annotator's long axis is parallel to this one, so neither is taken for a chord. Rows no
    axis claims become ``chords`` (>= 3 parallel rows: a tracing whose long axis is missing)
    or ``stray`` parts. Returns the parts in file order, covering every row once.
    """
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    chord = chord_matrix(xy)
    axis = np.zeros(n, dtype=bool)
    axis[:-1] = chord[np.arange(n - 1), np.arange(1, n)]
    parts: list[TracingPart] = []
    i = 0
    while i < n:
        j = i + 1
        if axis[i]:
            while j < n and chord[i, j]:
                j += 1
            parts.append(TracingPart(i, j, "tracing"))
        else:
            while j < n and not axis[j]:
                j += 1
            parts += _loose_parts(xy, i, j)
        i = j
    return parts


def _lines(rows: np.ndarray, part: TracingPart) -> str:
    first, last = int(rows[part.start]), int(rows[part.stop - 1])
    return f"line {first}" if part.stop - part.start == 1 else f"lines {first}-{last}"


def _choose_tracing(xy: np.ndarray, parts: list[TracingPart], policy: str, width: int,
                    height: int, malformed: frozenset[TracingPart] | set = frozenset()
                    ) -> tuple[TracingPart | None, np.ndarray | None, bool]:
    """(chosen part, its mask, whether only incomplete tracings were available).

    Candidates are the complete tracings (long axis + 20 chords), or when there is none,
    every part with at least 3 chords; parts in ``malformed`` (see :func:`chords_problem`)
    never are. ``first``/``last``: in file order; ``largest``: the largest mask area (ties:
    the first)."""
    ok = [p for p in parts if p not in malformed]
    complete = [p for p in ok if p.complete]
    pool = complete or [p for p in ok if p.kind != "stray" and p.n_chords >= 3]
    if not pool:
        return None, None, True
    if policy == "largest":
        masks = [chords_polygon_mask(p.chords(xy), width, height) for p in pool]
        k = int(np.argmax([int(m.sum()) for m in masks]))
        return pool[k], masks[k], not complete
    part = pool[0] if policy == "first" else pool[-1]
    return part, chords_polygon_mask(part.chords(xy), width, height), not complete


def tracing_masks(tracings: pd.DataFrame, n_frames: int, *, width: int = FRAME_SIZE,
                  height: int = FRAME_SIZE, policy: str,
                  source: str = "VolumeTracings.csv") -> tuple[list[TracedFrame], list[Skip]]:
    """Masks of one video's traced frames, and the frames refused or noted.

    ``tracings`` are that video's rows of :func:`read_tracings` (file order kept within a
    frame); ``n_frames`` is the decoded video length; ``width`` x ``height`` the video's own
    size in pixels (FrameWidth x FrameHeight, the pixels the coordinates are given in; masks
    are mapped to 112x112 like the frames, see :func:`chords_polygon_mask`). Each traced
    frame's rows are split into per-annotator tracings (:func:`split_tracing`) and one is
    used, chosen by ``policy`` (``ingest.tracing_policy``, one of ``TRACING_POLICIES``):
    ``first`` (the first complete tracing in the file, the original annotation),
    ``last`` (the last complete one, e.g. a later correction) or ``largest`` (the complete
    tracing with the largest mask area). Without a complete tracing, the same policy picks
    among the incomplete ones with at least 3 chords.

    A ``note`` skip (frame used) records a frame that needed splitting (several tracings,
    stray rows; identical repeats are said so) or whose tracing is incomplete, e.g. fewer
    than 21 rows. Refused with a ``tracing`` skip: a missing/non-integer Frame, a frame
    outside ``[0, n_frames)``, a coordinate that is not a finite number (quoted as the
    file writes it, with its line), no tracing with a long axis and 3 chords, only
    malformed tracings (chords of zero length, all the same or on one line:
    :func:`chords_problem`; a malformed tracing is never used while another is), an empty
    polygon, a lone usable traced frame (ED and ES cannot be told apart) and
    traced frames beyond the two kept. Of the usable frames the one with the largest area
    is ED and the one with the smallest ES (ties: earliest in the file). Returns
    ``([], skips)`` for a video without tracings, otherwise the ED and ES frames sorted by
    frame number.
    """
    if policy not in TRACING_POLICIES:
        raise InputError(f"tracing policy {policy!r} is not one of {TRACING_POLICIES}: fix "
                         f"ingest.tracing_policy")
    skips: list[Skip] = []
    if len(tracings) == 0:
        return [], skips
    name = str(tracings["FileName"].iloc[0])
    usable: list[tuple[int, int, np.ndarray]] = []  # (frame, first row, mask)
    for key, sub in tracings.groupby("Frame", sort=False, dropna=False):
        rows = sub["row"].to_numpy()
        row = int(rows[0])
        if not (math.isfinite(key) and key == math.floor(key)):
            raw = str(sub["unreadable"].iat[0]) if "unreadable" in sub.columns else ""
            skips.append(Skip(name, source, row, "tracing",
                              f"Frame is not an integer frame number (line {row}: {raw})"
                              if raw else f"Frame {key!r} is not an integer frame number"))
            continue
        frame = int(key)
        if not 0 <= frame < n_frames:
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} is outside the video ({n_frames} frames)"))
            continue
        xy = sub[["X1", "Y1", "X2", "Y2"]].to_numpy(dtype=np.float64)
        finite = np.isfinite(xy).all(axis=1)
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            what = (str(sub["unreadable"].iat[k]) if "unreadable" in sub.columns else "")
            what = what or ", ".join(f"{c} {v!r}" for c, v in zip(("X1", "Y1", "X2", "Y2"),
                                                                  xy[k].tolist())
                                     if not math.isfinite(v))
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} has a coordinate that is not a finite "
                              f"number (line {int(rows[k])}: {what}): fix that row"))
            continue
        parts = split_tracing(xy)
        problems = {p: chords_problem(p.chords(xy)) for p in parts
                    if p.kind != "stray" and p.n_chords >= 3}
        malformed = {p for p, why in problems.items() if why is not None}
        chosen, mask, incomplete = _choose_tracing(xy, parts, policy, width, height, malformed)
        if chosen is None or len(parts) > 1 or incomplete or not mask.any():
            layout = "; ".join(
                f"{_lines(rows, p)}: {p.describe()}"
                + (f", malformed: {problems[p]}" if p in malformed else "") for p in parts)
        if chosen is None and malformed:
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} has {len(xy)} rows ({layout}) and no "
                              f"usable tracing: a malformed tracing outlines no area (its mask "
                              f"would be a line of a few pixels)"))
            continue
        if chosen is None:
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} has {len(xy)} rows ({layout}) and no "
                              f"tracing (a long axis, then at least 3 chords perpendicular "
                              f"to it); a complete tracing is a long axis + {CHORDS} chords"))
            continue
        if not mask.any():
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} gives an empty polygon ({layout})"))
            continue
        if len(parts) > 1 or incomplete:
            chosen_xy = xy[chosen.start:chosen.stop]
            same = sum(1 for p in parts if p != chosen and p.stop - p.start == len(chosen_xy)
                       and np.array_equal(xy[p.start:p.stop], chosen_xy))
            why = (f"{len(parts)} parts ({layout})" if len(parts) > 1 else f"({layout})")
            used = (f"used {_lines(rows, chosen)} (tracing_policy {policy}"
                    + (f"; {same} identical repeat(s) ignored" if same else "") + ")")
            if incomplete:
                used += (f", an incomplete tracing (a complete one is a long axis + {CHORDS} "
                         f"chords)")
            skips.append(Skip(name, source, row, "note",
                              f"traced frame {frame} has {len(xy)} rows in {why}; {used}"))
        usable.append((frame, int(rows[chosen.start]), mask))
    if len(usable) == 1:
        frame, row, _ = usable[0]
        skips.append(Skip(name, source, row, "tracing",
                          f"only one usable traced frame ({frame}): ED and ES cannot be told "
                          f"apart"))
        return [], skips
    if not usable:
        return [], skips
    areas = [int(m.sum()) for _, _, m in usable]
    ed = int(np.argmax(areas))
    es = int(np.argmin(areas))
    if ed == es:  # all areas equal: keep the first two in file order
        ed, es = 0, 1
    for k, (frame, row, _) in enumerate(usable):
        if k not in (ed, es):
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} is a third traced frame (area {areas[k]} "
                              f"between ES and ED); kept only the largest and smallest"))
    kept = [TracedFrame(usable[ed][0], "ED", usable[ed][2], usable[ed][1]),
            TracedFrame(usable[es][0], "ES", usable[es][2], usable[es][1])]
    return sorted(kept, key=lambda t: (t.frame, t.phase)), skips


@dataclass
class Video:
    """A decoded video: ``frames`` uint8 (T, 112, 112) grey; ``fps`` from the container;
    ``height``/``width`` the size stored in the file (before any resizing)."""

    frames: np.ndarray
    fps: float
    height: int
    width: int


class _GreyFrames:
    """Growable uint8 (T, 112, 112) output; frames of another size are resized (INTER_AREA)."""

    def __init__(self, hint: int):
        self.out = np.empty((max(hint, 1), FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self.n = 0
        self.height = self.width = 0

    def add(self, grey: np.ndarray) -> None:
        if self.n == 0:
            self.height, self.width = grey.shape[:2]
        if self.n == self.out.shape[0]:
            self.out = np.concatenate([self.out, np.empty_like(self.out)])
        if grey.shape == (FRAME_SIZE, FRAME_SIZE):
            self.out[self.n] = grey
        else:
            self.out[self.n] = cv2.resize(grey, (FRAME_SIZE, FRAME_SIZE),
                                          interpolation=cv2.INTER_AREA)
        self.n += 1

    def frames(self) -> np.ndarray:
        return self.out if self.n == self.out.shape[0] else self.out[:self.n].copy()


_JPEG_GREY = cv2.IMREAD_GRAYSCALE | cv2.IMREAD_IGNORE_ORIENTATION


def _read_jpeg_packets(cap: cv2.VideoCapture, path: Path, hint: int) -> _GreyFrames | None:
    """Motion-JPEG fast path: decode each raw packet's luma plane with libjpeg.

    Returns None (nothing consumed that matters) when the stream is not JPEG; raises
    VideoError for a JPEG frame that does not decode.
    """
    out = _GreyFrames(hint)
    while True:
        ok, packet = cap.read()
        if not ok or packet is None or packet.size == 0:
            return out
        if out.n == 0 and not (packet.size > 2 and packet.flat[0] == 0xFF
                               and packet.flat[1] == 0xD8):
            return None
        grey = cv2.imdecode(packet.reshape(-1), _JPEG_GREY)
        if grey is None:
            if out.n == 0:
                return None
            raise VideoError(f"video {str(path)!r} is truncated or corrupt: frame {out.n} "
                             f"(of {hint} announced) is not a decodable JPEG")
        out.add(grey)


def _read_decoded(cap: cv2.VideoCapture, hint: int) -> _GreyFrames:
    """Any codec FFmpeg reads: decode to BGR, then luma with cvtColor(BGR2GRAY)."""
    out = _GreyFrames(hint)
    while True:
        ok, frame = cap.read()
        if not ok:
            return out
        out.add(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame)


def decode_video(path: str | os.PathLike) -> Video:
    """Decode an AVI (or anything OpenCV's FFmpeg backend reads) to grey 112x112 frames.

    Grey is the luma (Y) plane: for Motion-JPEG (EchoNet, EchoNet-Synthetic, the phantom)
    each frame's JPEG is decoded straight to grey by libjpeg (``cv2.imdecode`` with
    ``IMREAD_GRAYSCALE``), which skips chroma and is faster than OpenCV's BGR decoding;
    other codecs are decoded to BGR and converted with ``cv2.cvtColor(BGR2GRAY)``. For
    EchoNet's grey videos both are within 1-3 levels of any BGR channel (chroma
    quantisation noise), and the luma is the closest to the grey image that was encoded.
    Other sizes are resized to 112x112 with ``cv2.INTER_AREA``. FFmpeg runs one thread
    per video (parallelism comes from decoding several videos at once).

    Raises :class:`VideoError`, naming the file, when it is missing, cannot be opened, has
    no frames, has an undecodable JPEG frame, or yields fewer frames than its header
    announces (truncated file). Frames beyond the header count are kept.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {str(path)!r} does not exist")
    announced, fps, frames = 0, float("nan"), None
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG,
                           [cv2.CAP_PROP_FORMAT, -1, cv2.CAP_PROP_N_THREADS, 1])
    try:
        if cap.isOpened():
            announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            frames = _read_jpeg_packets(cap, path, announced)
    finally:
        cap.release()
    if frames is None:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        if not cap.isOpened():
            cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                raise VideoError(f"video {str(path)!r} cannot be opened (not a readable video)")
            announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            fps = float(cap.get(cv2.CAP_PROP_FPS))
            frames = _read_decoded(cap, announced)
        finally:
            cap.release()
    if frames.n == 0:
        raise VideoError(f"video {str(path)!r} has no frames")
    if frames.n < announced:
        raise VideoError(f"video {str(path)!r} is truncated: header announces {announced} "
                         f"frames, {frames.n} decoded")
    return Video(frames=frames.frames(), fps=fps, height=int(frames.height),
                 width=int(frames.width))


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Grey frames of a video, uint8 (T, 112, 112) (see :func:`decode_video`)."""
    return decode_video(path).frames
