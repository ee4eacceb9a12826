"""Zarr v3 stores: one per source of frames, one per set of soft masks.

Frame store layout (``data/frames/<source>.zarr``)::

    frames        uint8 (N, 112, 112)   all frames of all videos, concatenated in index order
    gt_masks      uint8 (N, 112, 112)   per-frame ground-truth LV mask 0/1 (phantom only)
    traced_masks  uint8 (M, 112, 112)   rasterised tracing of each traced frame, 0/1
    attrs["videos"]  per-video index: FileName, Split, start, stop, FPS, EF, ESV, EDV,
                     FrameHeight, FrameWidth, NumberOfFrames (frames of video i are
                     ``frames[start_i:stop_i]``)
    attrs["traced"]  one row per traced frame: FileName, video (row in the index),
                     frame (within the video), phase ("ED"/"ES"), row (in traced_masks)

Mask store layout (``data/teacher/<source>.zarr``, ``data/student/<source>.zarr``)::

    masks         uint8 (N, 112, 112)   probability * 255, aligned frame-for-frame with
                                        the source's ``frames``
    attrs["source_fingerprint"]         fingerprint of the frame store's index, to refuse
                                        masks that belong to another version of the frames

Arrays are sharded along the frame axis (``shard_frames`` frames per file, read in chunks of
``chunk_frames``), so 10,000 EchoNet videos (~1.7M frames) make about a thousand files.

Writes are atomic: a store is built under ``<path>.partial`` and renamed into place only when
complete, so an interrupted stage never leaves a store that a later stage accepts. An OS error
while writing (disk full, file-size limit, no permission) becomes a one-line
:class:`StoreWriteError` naming the store and the error (:class:`store_writes`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from echodfkd.errors import InputError

FRAME_SIZE = 112
INDEX_COLUMNS = [
    "FileName", "Split", "start", "stop", "FPS", "EF", "ESV", "EDV",
    "FrameHeight", "FrameWidth", "NumberOfFrames",
]
TRACED_COLUMNS = ["FileName", "video", "frame", "phase", "row"]


class StoreWriteError(InputError):
    """An OS error (disk full, file-size limit, read-only or unwritable folder) while writing a
    store or an output file; the message names the output and the OS error, one line. An
    :class:`InputError`, so a stage prints it as ``error: ...`` and exits with status 1; the
    OSError is its ``__cause__``."""


_WRITE_FIXES = {
    getattr(errno, code): fix for code, fix in (
        ("ENOSPC", "free disk space on that file system"),
        ("EDQUOT", "free space within your disk quota"),
        ("EFBIG", "raise the file-size limit (ulimit -f) or write smaller files (for stores: "
                  "lower shard_frames)"),
        ("EROFS", "write to a writable file system"),
        ("EACCES", "make the output folder writable"),
        ("EPERM", "make the output folder writable"),
    ) if hasattr(errno, code)
}


def write_error(what: str, path: str | os.PathLike, exc: OSError,
                after: str = "") -> StoreWriteError:
    """The :class:`StoreWriteError` for ``exc`` raised while writing ``what`` (e.g. "the frame
    store") at ``path``: ``cannot write <what> '<path>': ENOSPC [Errno 28] No space left on
    device: '<file>'; free disk space on that file system, then rerun<after>``."""
    name = errno.errorcode.get(exc.errno, "") if isinstance(exc.errno, int) else ""
    error = " ".join(f"{name} {exc}".strip().splitlines()) or type(exc).__name__
    fix = _WRITE_FIXES.get(exc.errno, "fix the cause")
    return StoreWriteError(f"cannot write {what} {str(path)!r}: {error}; {fix}, then "
                           f"rerun{after}")


class store_writes:
    """``with store_writes("the frame store", out): ...`` turns an OSError raised inside into
    :func:`write_error` (``raise ... from`` the OSError); other exceptions pass unchanged.
    Wrap only writes, so that a read error is not reported as a write error. Reusable."""

    def __init__(self, what: str, path: str | os.PathLike, after: str = ""):
        self.what, self.path, self.after = what, path, after

    def __enter__(self) -> "store_writes":
        return self

    def __exit__(self, typ, exc, tb) -> bool:
        if isinstance(exc, OSError):
            raise write_error(self.what, self.path, exc, self.after) from exc
        return False


def check_positive(name: str, value: object, param: str) -> None:
    """Raise InputError unless ``value`` is a whole number >= 1 (a bool or float is not):
    ``<name> must be a whole number >= 1, got <value>: fix <param>``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a whole number >= 1, got {value!r}: fix {param}")


def check_shard_layout(shard_frames: object, chunk_frames: object, *,
                       shard_param: str = "ingest.shard_frames",
                       chunk_param: str = "ingest.chunk_frames") -> None:
    """Raise InputError (naming the value and ``*_param``, the setting to fix) unless
    ``shard_frames`` and ``chunk_frames`` are whole numbers >= 1 and ``chunk_frames`` divides
    ``shard_frames``: a shard holds whole chunks, and writers go one shard block at a time
    (:func:`shard_blocks`), so nothing is rounded silently (:func:`create_frame_array` would
    otherwise shrink the shard and a block would straddle two shard files)."""
    check_positive("shard_frames", shard_frames, shard_param)
    check_positive("chunk_frames", chunk_frames, chunk_param)
    if shard_frames % chunk_frames:
        raise InputError(f"shard_frames {shard_frames} is not a multiple of chunk_frames "
                         f"{chunk_frames}: fix {shard_param} or {chunk_param}")


def partial_path(path: str | os.PathLike) -> Path:
    """The staging path a store is built under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def commit(staging: str | os.PathLike, path: str | os.PathLike) -> None:
    """Atomically replace ``path`` by the finished ``staging`` directory or file."""
    staging, path = Path(staging), Path(path)
    if path.exists():
        old = path.with_name(path.name + ".old")
        if old.exists():
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        os.replace(path, old)
        os.replace(staging, path)
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; on failure (e.g. a
    full disk) the temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:  # a full disk: no half-written .tmp left behind
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def frame_compressor() -> zarr.codecs.BloscCodec:
    """Codec of the ``frames`` arrays (grey echo images): Blosc-LZ4 level 5.

    On echo frames it stores 0.70 of the raw bytes against zstd-1's 0.63, but encodes
    ~3x and decodes ~5x faster: ingest keeps pace with decoding and every later read
    (training, inference) is cheaper. Blosc is a core Zarr v3 codec.
    """
    return zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)


def mask_compressor() -> zarr.codecs.ZstdCodec:
    """Codec of mask arrays (0/1 masks, soft masks): zstd level 1, which stores soft masks
    in 0.21 of their bytes (LZ4: 0.35) and binary masks in 0.01 (LZ4: 0.04)."""
    return zarr.codecs.ZstdCodec(level=1)


def create_frame_array(group: zarr.Group, name: str, n_frames: int, *,
                       shard_frames: int, chunk_frames: int,
                       compressor: zarr.abc.codec.BytesBytesCodec | None = None) -> zarr.Array:
    """Create a uint8 (n_frames, 112, 112) array sharded along the frame axis (``shard_frames``
    frames per shard, ``chunk_frames`` per compressed chunk: ``ingest.shard_frames`` and
    ``ingest.chunk_frames``), compressed with ``compressor`` (None: :func:`mask_compressor`)."""
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    chunk = max(1, min(chunk_frames, shard_frames))
    shard = max(chunk, (shard_frames // chunk) * chunk)
    return group.create_array(
        name, shape=(n_frames, FRAME_SIZE, FRAME_SIZE), dtype="uint8",
        chunks=(chunk, FRAME_SIZE, FRAME_SIZE), shards=(shard, FRAME_SIZE, FRAME_SIZE),
        compressors=(compressor if compressor is not None else mask_compressor(),),
        fill_value=0, overwrite=True,
    )


def fingerprint(index: pd.DataFrame) -> str:
    """Stable hash of a video index (file names, frame ranges): identifies a frame layout."""
    key = index[["FileName", "start", "stop"]].astype(str).agg("|".join, axis=1)
    return hashlib.sha256("\n".join(key).encode()).hexdigest()[:16]


def _records(df: pd.DataFrame) -> dict:
    # JSON through pandas so numpy scalars and NaN serialise (NaN becomes null).
    return json.loads(df.to_json(orient="split", index=False))


def _frame(d: dict, columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame(d["data"], columns=d["columns"])
    return df[columns] if set(columns) <= set(df.columns) else df


@dataclass
class FrameStore:
    """A source's frames opened read-only.

    ``frames[i]`` is frame i, uint8 (112, 112) grey, rows = y (top to bottom), columns = x.
    ``index`` has one row per video (``INDEX_COLUMNS``); ``traced`` one row per traced frame.
    """

    path: str
    group: zarr.Group
    index: pd.DataFrame
    traced: pd.DataFrame

    @property
    def frames(self) -> zarr.Array:
        return self.group["frames"]

    @property
    def traced_masks(self) -> zarr.Array:
        return self.group["traced_masks"]

    @property
    def gt_masks(self) -> zarr.Array | None:
        return self.group["gt_masks"] if "gt_masks" in self.group else None

    @property
    def fingerprint(self) -> str:
        return self.group.attrs["fingerprint"]

    def video(self, i: int) -> np.ndarray:
        """Frames of video row ``i``: uint8 (T, 112, 112)."""
        row = self.index.iloc[i]
        return self.frames[int(row.start):int(row.stop)]

    def split_rows(self, split: str) -> pd.DataFrame:
        return self.index[self.index["Split"] == split]


def open_frames(path: str | os.PathLike) -> FrameStore:
    """Open a frame store written by :func:`write_frame_store` (see module docstring)."""
    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"frame store {path!r} does not exist: run the ingest stage")
    group = zarr.open_group(path, mode="r")
    attrs = group.attrs.asdict()
    for key in ("videos", "traced", "fingerprint"):
        if key not in attrs:
            raise InputError(f"{path!r} is not a complete frame store (attribute {key!r} "
                             "missing): rerun the ingest stage")
    index = _frame(attrs["videos"], INDEX_COLUMNS)
    traced = _frame(attrs["traced"], TRACED_COLUMNS)
    return FrameStore(path=path, group=group, index=index, traced=traced)


def init_frame_store(path: str | os.PathLike, index: pd.DataFrame, n_traced: int, *,
                     with_gt: bool, shard_frames: int, chunk_frames: int) -> zarr.Group:
    """Create an empty frame store at ``path`` (normally a ``.partial`` staging path).

    ``index`` must hold ``INDEX_COLUMNS``; its ``stop`` column gives the total frame count.
    """
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index lacks columns {missing}")
    n = int(index["stop"].max()) if len(index) else 0
    if Path(path).exists():
        shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w")
    create_frame_array(group, "frames", n, shard_frames=shard_frames, chunk_frames=chunk_frames,
                       compressor=frame_compressor())
    if with_gt:
        create_frame_array(group, "gt_masks", n, shard_frames=shard_frames,
                           chunk_frames=chunk_frames)
    create_frame_array(group, "traced_masks", n_traced, shard_frames=shard_frames,
                       chunk_frames=chunk_frames)
    return group


def content_sha(array: zarr.Array, block_frames: int | None = None) -> str:
    """SHA-256 (16 hex) of an array's decoded bytes, read one shard (or chunk) at a time, so
    memory stays bounded. Frames decode fast (Blosc-LZ4): about 1 s per 100k frames on one
    core, small beside decoding the videos."""
    if block_frames is None:
        block_frames = int((array.shards or array.chunks)[0])
    h = hashlib.sha256()
    for start, stop in shard_blocks(int(array.shape[0]), max(1, block_frames)):
        h.update(np.ascontiguousarray(array[start:stop]).data)
    return h.hexdigest()[:16]


def finish_frame_store(group: zarr.Group, index: pd.DataFrame, traced: pd.DataFrame,
                       content: str | None = None, **extra_attrs) -> None:
    """Write the index attributes; call last, once every array is filled.

    ``attrs["fingerprint"]`` identifies the frames by layout *and content*: the hash of the
    index fingerprint (file names, frame ranges) and of the frames' bytes
    (:func:`content_sha`). Mask stores record the fingerprint of the frames they were made for,
    so a re-ingested video with the same length but other pixels invalidates them (and stops a
    resumed teacher inference from keeping masks of the old frames). ``content``: that hash
    when the writer computed it on the way in (the same bytes in the same order, as ingest
    does), else the frames are read back to compute it.
    """
    if content is None:
        content = content_sha(group["frames"])
    key = f"{fingerprint(index)}|{content}"
    group.attrs.update({
        "videos": _records(index[INDEX_COLUMNS]),
        "traced": _records(traced[TRACED_COLUMNS]),
        "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16],
        "content_sha": content,
        **extra_attrs,
    })


@dataclass
class MaskStore:
    """Soft masks aligned with a frame store: ``masks[i]`` uint8 (112, 112), 0..255 = p*255."""

    path: str
    group: zarr.Group

    @property
    def masks(self) -> zarr.Array:
        return self.group["masks"]

    @property
    def attrs(self) -> dict:
        return self.group.attrs.asdict()


def write_uncovered_masks(path: str | os.PathLike, frames: FrameStore, reason: str) -> None:
    """Write, atomically, a mask store that holds no masks: a record that the teacher does not
    label ``frames``'s source (an evaluation-only source), with the ``reason``. Stages that
    depend on a source's teacher masks read it with :func:`teacher_covers` and leave
    teacher-referenced results out instead of failing or reading a store left by an older
    configuration."""
    staging = partial_path(path)
    if staging.exists():
        shutil.rmtree(staging)
    group = zarr.open_group(str(staging), mode="w")
    group.attrs.update({"complete": True, "covered": False, "reason": reason,
                        "source_fingerprint": frames.fingerprint})
    commit(staging, path)


def teacher_covers(path: str | os.PathLike) -> bool:
    """Whether the mask store at ``path`` holds masks (False for :func:`write_uncovered_masks`'
    records); a missing or incomplete store is an error naming the path."""
    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"mask store {path!r} does not exist: run the stage that "
                                "writes it")
    attrs = zarr.open_group(path, mode="r").attrs.asdict()
    if "complete" not in attrs:
        raise InputError(f"mask store {path!r} is incomplete (interrupted write): rerun the "
                         "stage that writes it")
    return bool(attrs.get("covered", True))


def open_masks(path: str | os.PathLike, frames: FrameStore | None = None) -> MaskStore:
    """Open a mask store; with ``frames``, check it is aligned with that frame store."""
    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"mask store {path!r} does not exist")
    group = zarr.open_group(path, mode="r")
    store = MaskStore(path=path, group=group)
    if "complete" not in store.attrs:
        raise InputError(f"mask store {path!r} is incomplete (interrupted write): rerun the "
                         "stage that writes it")
    if not store.attrs.get("covered", True):
        raise InputError(f"{path!r} holds no masks: {store.attrs.get('reason', '')}")
    if frames is not None:
        n, m = frames.frames.shape[0], store.masks.shape[0]
        if n != m:
            raise InputError(f"mask store {path!r} has {m} frames but {frames.path!r} has {n}: "
                             "rerun the stage that wrote it")
        fp = store.attrs.get("source_fingerprint")
        if fp != frames.fingerprint:
            raise InputError(
                f"mask store {path!r} was made for frames {fp!r}, not for {frames.path!r} "
                f"({frames.fingerprint!r}): rerun the stage that wrote it")
    return store


def init_mask_store(path: str | os.PathLike, frames: FrameStore, *, shard_frames: int,
                    chunk_frames: int, resume: bool = False, **attrs) -> zarr.Group:
    """Create (or, with ``resume``, reopen) a mask store aligned with ``frames``.

    Resuming reuses an existing store at ``path`` only if it was made for the same frames;
    finished blocks are recorded in ``attrs["done_blocks"]`` by the writer.
    """
    if resume and Path(path).exists():
        group = zarr.open_group(str(path), mode="r+")
        a = group.attrs.asdict()
        if (a.get("source_fingerprint") == frames.fingerprint and "masks" in group
                and group["masks"].shape[0] == frames.frames.shape[0]
                and all(a.get(k) == v for k, v in attrs.items())):
            return group
    if Path(path).exists():
        shutil.rmtree(path)
    group = zarr.open_group(str(path), mode="w")
    create_frame_array(group, "masks", frames.frames.shape[0], shard_frames=shard_frames,
                       chunk_frames=chunk_frames)
    group.attrs.update({"source_fingerprint": frames.fingerprint, "done_blocks": [], **attrs})
    return group


def shard_blocks(n_frames: int, shard_frames: int) -> list[tuple[int, int]]:
    """Shard-aligned (start, stop) frame blocks covering ``range(n_frames)``."""
    return [(s, min(s + shard_frames, n_frames)) for s in range(0, n_frames, shard_frames)]
