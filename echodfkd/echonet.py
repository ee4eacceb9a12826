"""Readers for the EchoNet folder layout (EchoNet-Dynamic, EchoNet-Synthetic, the phantom).

A source folder holds::

    Videos/<FileName>.avi        grey (3 identical channels) echo videos, ideally 112x112
    FileList.csv                 one row per video: FileName, EF, ESV, EDV, FrameHeight,
                                 FrameWidth, FPS, NumberOfFrames, Split
    VolumeTracings.csv           optional: FileName, X1, Y1, X2, Y2, Frame (EchoNet-Dynamic)
    GroundTruth/<FileName>.npz   optional (phantom): masks uint8 (T, 112, 112), ed, es

Readers never drop a row silently: every row they refuse comes back as a :class:`Skip`
(which file, which line, why). Line numbers are 1-based lines of the CSV file, the header
being line 1, so that ``sed -n <row>p FileList.csv`` shows the row.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echodfkd.store import FRAME_SIZE

FILELIST_REQUIRED = ["FileName", "EF", "Split"]
FILELIST_NUMERIC = ["EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames"]
TRACINGS_REQUIRED = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
SKIP_COLUMNS = ["FileName", "file", "row", "kind", "reason"]

# Skip kinds that mean a FileList row did not become a video in the store (they count
# against ``max_bad_fraction``); the others drop less (a traced frame) or nothing.
BAD_KINDS = ("filelist", "missing", "video", "ground_truth")


class VideoError(ValueError):
    """A video file that cannot be decoded (unreadable, truncated, no frames)."""


@dataclass(frozen=True)
class Skip:
    """One refused input item.

    ``kind`` is one of: ``filelist`` (bad FileList row), ``missing`` (video file absent),
    ``video`` (undecodable video), ``ground_truth`` (bad GroundTruth file), ``tracing``
    (traced frame dropped), ``extra`` (video on disk not in FileList, ignored), ``note``
    (recorded inconsistency, nothing dropped). ``row`` is the 1-based line in ``file``
    (header = line 1) or None when the item is not a CSV row.
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


def _name_problem(name: str) -> str | None:
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

    Raises ValueError for a name that would resolve outside ``root/Videos`` (``../x``,
    ``a/b``, absolute paths, empty names).
    """
    name = _strip_avi(str(file_name))
    problem = _name_problem(name)
    if problem:
        raise ValueError(f"{problem} (root {str(root)!r})")
    videos = Path(root) / "Videos"
    path = videos / f"{name}.avi"
    if path.parent != videos:
        raise ValueError(f"FileName {file_name!r} would leave {str(videos)!r}")
    return path


def _read_csv(path: Path, required: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    df = pd.read_csv(path, dtype={"FileName": str, "Split": str}, keep_default_na=False,
                     na_values=["", "NaN", "nan", "NA", "N/A", "null"])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} lacks required column(s) {missing}; it has {list(df.columns)}")
    return df


def _numeric(df: pd.DataFrame, column: str) -> pd.Series:
    """Column as float64; non-numeric text becomes NaN (reported by the caller's checks)."""
    return pd.to_numeric(df[column], errors="coerce").astype("float64")


def read_filelist(path: str | os.PathLike) -> tuple[pd.DataFrame, list[Skip]]:
    """Read an EchoNet ``FileList.csv``.

    Returns ``(filelist, skips)``. ``filelist`` has one row per usable video, in file order:
    FileName (str, no ``.avi``), Split (str, upper case: TRAIN/VAL/TEST/EXTRA/...), the
    float64 columns ``FILELIST_NUMERIC`` (NaN where the file lacks the column; ESV/EDV may
    be 0 as in EchoNet-Synthetic) and ``row`` (1-based line in the file). Rows with a
    missing or non-numeric EF, a missing Split, a FileName that is empty, a path (``../x``,
    ``a/b``, absolute) or a duplicate of an earlier row are returned as skips of kind
    ``filelist``. A missing required column (FileName, EF, Split) raises ValueError.
    """
    path = Path(path)
    df = _read_csv(path, FILELIST_REQUIRED)
    out = pd.DataFrame({
        "FileName": df["FileName"].fillna("").astype(str).str.strip().map(_strip_avi),
        "Split": df["Split"].fillna("").astype(str).str.strip().str.upper(),
    })
    for c in FILELIST_NUMERIC:
        out[c] = _numeric(df, c) if c in df.columns else np.nan
    out["row"] = np.arange(len(df), dtype=np.int64) + 2
    skips: list[Skip] = []
    keep = np.ones(len(out), dtype=bool)
    first_row: dict[str, int] = {}
    raw_ef = df["EF"].astype(str).tolist()
    for i, (name, split, ef, row) in enumerate(
            zip(out["FileName"], out["Split"], out["EF"], out["row"])):
        reason = _name_problem(name)
        if reason is None and name in first_row:
            reason = f"duplicate FileName {name!r} (first on line {first_row[name]})"
        if reason is None and not math.isfinite(ef):
            reason = f"EF {raw_ef[i]!r} is not a number"
        if reason is None and split == "":
            reason = "Split is empty"
        if reason is not None:
            keep[i] = False
            skips.append(Skip(name, path.name, int(row), "filelist", reason))
        else:
            first_row[name] = int(row)
    return out[keep].reset_index(drop=True), skips


def read_tracings(path: str | os.PathLike) -> pd.DataFrame:
    """Read EchoNet-Dynamic ``VolumeTracings.csv``.

    Returns FileName (str, no ``.avi``), X1, Y1, X2, Y2 (float64 pixel coordinates, x =
    column, y = row; NaN where unreadable), Frame (float64 so that a missing frame stays
    NaN) and ``row`` (1-based line in the file), in file order. A missing required
    column raises ValueError naming the file.
    """
    path = Path(path)
    df = _read_csv(path, TRACINGS_REQUIRED)
    out = pd.DataFrame({
        "FileName": df["FileName"].fillna("").astype(str).str.strip().map(_strip_avi)})
    for c in ("X1", "Y1", "X2", "Y2", "Frame"):
        out[c] = _numeric(df, c)
    out["row"] = np.arange(len(df), dtype=np.int64) + 2
    return out


@dataclass
class TracedFrame:
    """A traced frame: ``frame`` (0-based, within the video), ``phase`` "ED" or "ES",
    ``mask`` uint8 (112, 112) 0/1 (rows = y, columns = x), ``row`` (first CSV line)."""

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
    y = np.arange(minr, maxr + 1, dtype=np.float64)[:, None]
    x = np.arange(minc, maxc + 1, dtype=np.float64)[None, :]
    on_vertex = np.zeros((y.size, x.size), dtype=bool)
    r_cross = np.zeros((y.size, x.size), dtype=np.int32)
    l_cross = np.zeros((y.size, x.size), dtype=np.int32)
    x1, y1 = c[-1] - x, r[-1] - y
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(r.size):
            x0, y0 = c[i] - x, r[i] - y
            on_vertex |= (x0 == 0) & (y0 == 0)
            eval_x = (x0 * y1 - x1 * y0) / (y1 - y0)
            r_cross += ((y0 > 0) != (y1 > 0)) & (eval_x > 0)
            l_cross += ((y0 < 0) != (y1 < 0)) & (eval_x < 0)
            x1, y1 = x0, y0
    inside = on_vertex | ((r_cross % 2) != (l_cross % 2)) | (r_cross % 2 == 1)
    mask[minr:maxr + 1, minc:maxc + 1] = inside
    return mask


def tracing_polygon_mask(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray,
                         shape: tuple[int, int] = (FRAME_SIZE, FRAME_SIZE)) -> np.ndarray:
    """EchoNet's LV mask of one traced frame, uint8 ``shape`` 0/1.

    Inputs are the frame's rows in file order; row 0 (the long axis) is not used. The
    polygon is (X1, Y1) of rows 1.. then (X2, Y2) of rows 1.. reversed, rounded to the
    nearest pixel (``np.rint``) and filled as ``skimage.draw.polygon`` does.
    """
    x = np.concatenate([np.asarray(x1)[1:], np.asarray(x2)[1:][::-1]])
    y = np.concatenate([np.asarray(y1)[1:], np.asarray(y2)[1:][::-1]])
    return fill_polygon(np.rint(y), np.rint(x), shape)


def tracing_masks(tracings: pd.DataFrame, n_frames: int, *,
                  source: str = "VolumeTracings.csv") -> tuple[list[TracedFrame], list[Skip]]:
    """Masks of one video's traced frames, and the frames refused.

    ``tracings`` are that video's rows of :func:`read_tracings` (any order within a frame
    is kept as in the file); ``n_frames`` is the decoded video length. Each traced frame
    uses all of its rows after the first (several annotators give more than 21 rows).
    Refused with a ``tracing`` skip: a missing/non-integer Frame, a frame outside
    ``[0, n_frames)``, NaN coordinates, fewer than 3 chord rows, an empty polygon, a lone
    usable traced frame (ED and ES cannot be told apart) and traced frames beyond the two
    kept. Of the usable frames the one with the largest area is ED and the one with the
    smallest ES (ties: earliest in the file). Returns ``([], skips)`` for a video without
    tracings, otherwise the ED and ES frames sorted by frame number.
    """
    skips: list[Skip] = []
    if len(tracings) == 0:
        return [], skips
    name = str(tracings["FileName"].iloc[0])
    usable: list[tuple[int, int, np.ndarray]] = []  # (frame, first row, mask)
    for key, sub in tracings.groupby("Frame", sort=False, dropna=False):
        rows = sub["row"].to_numpy()
        row = int(rows[0])
        if not (math.isfinite(key) and key == math.floor(key)):
            skips.append(Skip(name, source, row, "tracing",
                              f"Frame {key!r} is not an integer frame number"))
            continue
        frame = int(key)
        if not 0 <= frame < n_frames:
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} is outside the video ({n_frames} frames)"))
            continue
        xy = sub[["X1", "Y1", "X2", "Y2"]].to_numpy(dtype=np.float64)
        if not np.isfinite(xy).all():
            bad = int(rows[~np.isfinite(xy).all(axis=1)][0])
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} has NaN coordinates (line {bad})"))
            continue
        if len(xy) - 1 < 3:
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} has {len(xy)} rows; needs the long axis "
                              f"and at least 3 chords"))
            continue
        mask = tracing_polygon_mask(xy[:, 0], xy[:, 1], xy[:, 2], xy[:, 3])
        if not mask.any():
            skips.append(Skip(name, source, row, "tracing",
                              f"traced frame {frame} gives an empty polygon"))
            continue
        usable.append((frame, row, mask))
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
