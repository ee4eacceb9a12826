"""Ingest an EchoNet-layout source folder into a Zarr frame store (see ``echodfkd.data.store``).

Videos are decoded in parallel by dask tasks (local threads, or the workers of a
``dask.distributed`` scheduler) in batches, with a bounded number of batches in flight.
The driver receives the decoded videos in FileList order, appends them to shard-sized
buffers and writes each shard exactly once, whole, in order: no two writers ever touch the
same shard, memory stays bounded (``IN_FLIGHT`` batches of decoded frames plus at most
``MAX_PENDING_SHARDS + 1`` shard buffers per array) and the store is byte-identical for
identical inputs. The writer thread also hashes the frames on their way in (the store's
``content_sha``), so the store is never read back.

Speed: OpenCV releases the GIL on every call (twice per decoded frame), so the decoding
threads lose time to any GIL-holding Python elsewhere in the process. The driver therefore
keeps its per-video work small (dict lookups, one copy into the shard buffer), the task
graphs are built directly, and the frames codec is the cheap Blosc-LZ4
(``echodfkd.data.store.frame_compressor``). ``bench/ingest.py`` measures the result against
plain cv2 decoding.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
import zipfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import dask.threaded
import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm

from echodfkd.data.echonet import (
    BAD_KINDS, SKIP_COLUMNS, TRACING_POLICIES, Skip, TracedFrame, VideoError, name_problem,
    decode_video, outside_problem, read_filelist, read_tracings, safe_video_path, skips_frame,
    tracing_masks,
)
from echodfkd.errors import InputError
from echodfkd.runtime import tune_malloc
from echodfkd.data.store import (
    FRAME_SIZE, INDEX_COLUMNS, TRACED_COLUMNS, check_positive, check_shard_layout, commit,
    finish_frame_store, init_frame_store, partial_path, store_writes, write_text_atomic,
)

GT_COLUMNS = ["FileName", "video", "frame", "phase"]


class IngestError(InputError):
    """Too many bad videos (or no FileList rows); ``report`` holds the skips found (the
    store was not written). An :class:`InputError`, so a stage prints it as one line."""

    def __init__(self, message: str, report: "IngestReport"):
        super().__init__(message)
        self.report = report


@dataclass
class IngestReport:
    """Outcome of :func:`ingest_source`.

    ``videos``/``frames``: what the store holds; ``rows``: usable-or-not FileList rows;
    ``bad``: FileList rows that did not become a video; ``skips``: DataFrame with
    ``SKIP_COLUMNS`` (FileName, file, row, kind, reason); ``seconds``: wall time.
    """

    videos: int
    frames: int
    rows: int
    bad: int
    skips: pd.DataFrame
    seconds: float


@dataclass
class _Item:
    """One FileList row to decode (built on the driver, shipped to a dask task)."""

    name: str
    row: int
    video_path: str
    gt_path: str | None
    tracings: pd.DataFrame | None
    tracing_policy: str
    cwd: str     # the driver's working directory: a distributed worker's is another one

    def local(self, path: str) -> str:
        """``path`` (as given, maybe relative to the driver) as a worker must open it."""
        return os.path.join(self.cwd, path)


@dataclass
class _Loaded:
    """A task's result: decoded frames and what belongs to them, or ``error``."""

    name: str
    frames: np.ndarray | None = None
    fps: float = float("nan")
    height: int = 0
    width: int = 0
    gt_masks: np.ndarray | None = None
    gt_events: list[tuple[int, str]] = field(default_factory=list)
    traced: list[TracedFrame] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    error: Skip | None = None


# Input problems a single video can have; anything else is a bug and propagates.
_INPUT_ERRORS = (VideoError, OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                 cv2.error)


def _load_ground_truth(path: str, n_frames: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Phantom ground truth: masks uint8 (T, 112, 112) 0/1 and [(frame, "ED"/"ES"), ...]."""
    with np.load(path, allow_pickle=False) as z:
        masks = np.asarray(z["masks"])
        ed = np.asarray(z["ed"]).reshape(-1)
        es = np.asarray(z["es"]).reshape(-1)
    if masks.shape != (n_frames, FRAME_SIZE, FRAME_SIZE):
        raise ValueError(f"ground truth {path!r} has masks of shape {masks.shape}; the video "
                         f"has {n_frames} frames of {FRAME_SIZE}x{FRAME_SIZE}")
    events = [(int(f), "ED") for f in ed] + [(int(f), "ES") for f in es]
    outside = [f for f, _ in events if not 0 <= f < n_frames]
    if outside:
        raise ValueError(f"ground truth {path!r} has ED/ES frames {outside} outside the "
                         f"video ({n_frames} frames)")
    return (masks > 0).astype(np.uint8), sorted(events)


def _load(item: _Item) -> _Loaded:
    """Decode one video (+ ground truth, + tracing masks). Runs in a dask task."""
    tune_malloc()  # in a dask worker process: undo the nanny's malloc setting (runtime.py)
    out = _Loaded(item.name)
    try:
        video = decode_video(item.local(item.video_path))
    except _INPUT_ERRORS as e:
        reason = str(e) if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
        reason = reason.replace(item.local(item.video_path), item.video_path)  # as the user gave it
        out.error = Skip(item.name, f"Videos/{item.name}.avi", item.row, "video", reason)
        return out
    n = video.frames.shape[0]
    if item.gt_path is not None:
        try:
            out.gt_masks, out.gt_events = _load_ground_truth(item.local(item.gt_path), n)
        except _INPUT_ERRORS as e:
            out.error = Skip(item.name, f"GroundTruth/{item.name}.npz", item.row, "ground_truth",
                             f"{type(e).__name__}: {e}".replace(item.local(item.gt_path),
                                                                item.gt_path))
            return out
    if item.tracings is not None:
        out.traced, out.skips = tracing_masks(item.tracings, n, width=video.width,
                                              height=video.height, policy=item.tracing_policy)
    out.frames, out.fps, out.height, out.width = video.frames, video.fps, video.height, video.width
    return out


class _Handle:
    """Result of a distributed batch: ``result()`` gathers its futures in order."""

    def __init__(self, client, futures):
        self.client, self.futures = client, futures

    def result(self) -> list[_Loaded]:
        return self.client.gather(self.futures)


class _Runner:
    """Runs batches of ``_load`` as dask tasks (one per video); ``submit`` returns a handle
    whose ``result()`` is the batch's list of ``_Loaded`` in order.

    Local: each batch is one task graph run by ``dask.threaded.get``; all batches share one
    pool of ``workers`` threads and are driven from helper threads, so the driver keeps
    writing while the next batches decode. The graph is written directly (one
    ``(_load, item)`` task per video): ``dask.delayed`` + ``dask.compute`` cost ~6 ms of
    GIL-holding Python per batch, which the decoding threads wait for (10x less this way).
    Distributed: ``Client.submit`` on the scheduler at ``scheduler``.
    """

    def __init__(self, workers: int, scheduler: str, in_flight: int):
        self.client = None
        self.run_id = uuid.uuid4().hex[:12]
        self.n = 0
        self.in_flight = in_flight
        self.threads = max(1, workers)
        if scheduler:
            from distributed import Client
            try:
                self.client = Client(scheduler, set_as_default=False, timeout="20s")
            except (OSError, TimeoutError) as e:
                raise InputError(f"cannot reach the dask scheduler {scheduler!r} ({e}): fix "
                                 f"ingest.scheduler, or set it to \"\" for local threads"
                                 ) from None
            self.threads = max(1, sum(self.client.nthreads().values()))
        else:
            self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ingest-decode")
            self.driver = ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="ingest-dask")

    def submit(self, batch: list[_Item]):
        keys = []
        for _ in batch:
            self.n += 1
            keys.append(f"ingest-load-{self.run_id}-{self.n}")
        if self.client is not None:
            return _Handle(self.client, [self.client.submit(_load, item, key=key, pure=False)
                                         for key, item in zip(keys, batch)])
        graph = {key: (_load, item) for key, item in zip(keys, batch)}
        return self.driver.submit(
            lambda: list(dask.threaded.get(graph, keys, pool=self.pool)))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        else:
            self.driver.shutdown(wait=True, cancel_futures=True)
            self.pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: list[_Item], frames_hint: list[float], target_frames: int,
             batch_videos: int | None) -> list[list[_Item]]:
    """Consecutive groups of items: ``batch_videos`` videos each, or (default) about
    ``target_frames`` frames each by the FileList's NumberOfFrames (200 where unknown)."""
    if batch_videos:
        return [items[i:i + batch_videos] for i in range(0, len(items), batch_videos)]
    out: list[list[_Item]] = []
    cur: list[_Item] = []
    acc = 0.0
    for item, n in zip(items, frames_hint):
        cur.append(item)
        acc += n if np.isfinite(n) and n > 0 else 200.0
        if acc >= target_frames:
            out.append(cur)
            cur, acc = [], 0.0
    if cur:
        out.append(cur)
    return out


#: Memory bounds of the driver (measured with ``bench/scale.py --quick``: peak RSS x1.10 for
#: 8x the data with 512-frame shards, where 3 batches of 512 frames per worker, two pending
#: shards per array and 2048-frame shards gave x1.61; throughput unchanged, bench/ingest.py).
#: Shards handed to the writer thread and not yet written, per array (besides the one filling).
MAX_PENDING_SHARDS = 1
#: Decoding batches in flight, and decoded frames per batch per worker thread.
IN_FLIGHT = 2
BATCH_FRAMES = 256


class _ShardAppender:
    """Appends frames to a uint8 (N, 112, 112) zarr array, growing it one whole shard at a
    time, so that every shard file is written exactly once and never read back.

    Full shards are handed to ``writer`` (one thread shared by all appenders: the single
    writer, in order) so that compression overlaps with decoding; at most
    ``MAX_PENDING_SHARDS`` shards per array wait for it. With ``digest``, the writer also
    hashes the frames in order (:meth:`hexdigest` then equals
    :func:`echodfkd.data.store.content_sha` of the array, without a second pass over the store).
    """

    def __init__(self, array: zarr.Array, writer: ThreadPoolExecutor, digest: bool = False):
        # Skipping all-zero chunks costs a full comparison per chunk (as much as zstd):
        # write every chunk instead.
        self.array = array.with_config({"write_empty_chunks": True})
        self.writer = writer
        self.block = int(array.shards[0]) if array.shards else int(array.chunks[0])
        self.buf = np.empty((self.block, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self.fill = 0
        self.written = 0  # frames handed to the writer
        self.pending: deque = deque()
        self.free: list[np.ndarray] = []  # buffers back from the writer, reused (no page faults)
        self.sha = hashlib.sha256() if digest else None

    @property
    def size(self) -> int:
        """Frames appended so far."""
        return self.written + self.fill

    def append(self, data: np.ndarray) -> None:
        pos = 0
        while pos < len(data):
            take = min(self.block - self.fill, len(data) - pos)
            self.buf[self.fill:self.fill + take] = data[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.block:
                self._hand_over()

    def _hand_over(self) -> None:
        start, stop = self.written, self.written + self.fill
        self.pending.append(self.writer.submit(self._write, start, stop, self.buf))
        self.written, self.fill = stop, 0
        while len(self.pending) > MAX_PENDING_SHARDS:
            self.free.append(self.pending.popleft().result())
        self.buf = self.free.pop() if self.free else np.empty_like(self.buf)

    def _write(self, start: int, stop: int, buf: np.ndarray) -> np.ndarray:
        """Runs on the writer thread: grow the array to ``stop`` and write ``buf[:stop-start]``
        (a whole shard, or the last one); returns ``buf`` for reuse."""
        self.array.resize((stop, FRAME_SIZE, FRAME_SIZE))
        self.array[start:stop] = buf[:stop - start]
        if self.sha is not None:
            self.sha.update(buf[:stop - start].data)
        return buf

    def hexdigest(self) -> str:
        """16 hex digits of the SHA-256 of every frame written (call after :meth:`finish`)."""
        return self.sha.hexdigest()[:16]

    def finish(self) -> None:
        """Write the last (partial) shard and wait for every write."""
        if self.fill:
            self._hand_over()
        while self.pending:
            self.pending.popleft().result()


def _records(df: pd.DataFrame) -> dict:
    return json.loads(df.to_json(orient="split", index=False))


def write_skips_csv(skips: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the skip report atomically (``SKIP_COLUMNS`` header even when empty); an OS
    error (full disk, ...) raises :class:`echodfkd.data.store.StoreWriteError` naming it, and
    leaves the old report as it was."""
    buf = io.StringIO()
    skips.reindex(columns=SKIP_COLUMNS).to_csv(buf, index=False)
    with store_writes("the skip report", path, "; the old report (if any) is as it was"):
        write_text_atomic(path, buf.getvalue())


def _plan(root: Path, tracing_policy: str
          ) -> tuple[pd.DataFrame, list[_Item], list[Skip], bool, int]:
    """Read FileList (+ tracings, + ground truth) and list Videos/: what to decode.

    Returns (usable FileList rows, items to decode, skips so far, whether ground truth
    exists, number of FileList rows). A video whose FileList row was refused is covered by
    that row's skip; it is not reported a second time as "not listed in FileList.csv".
    """
    filelist, skips = read_filelist(root / "FileList.csv")
    n_rows = len(filelist) + len(skips)
    tracing_path = root / "VolumeTracings.csv"
    by_name: dict[str, pd.DataFrame] = {}
    if tracing_path.exists():
        tracings = read_tracings(tracing_path)
        by_name = {str(k): g for k, g in tracings.groupby("FileName", sort=False)}
    gt_dir = root / "GroundTruth"
    with_gt = gt_dir.is_dir()
    videos_dir = root / "Videos"
    on_disk = ({p.name for p in videos_dir.iterdir() if p.suffix.lower() == ".avi"}
               if videos_dir.is_dir() else set())
    items: list[_Item] = []
    listed: set[str] = {safe_video_path(root, s.file_name).name for s in skips
                        if name_problem(s.file_name) is None}
    kept = np.ones(len(filelist), dtype=bool)
    for i, (name, row) in enumerate(zip(filelist["FileName"], filelist["row"])):
        path = safe_video_path(root, name)
        listed.add(path.name)
        if path.name not in on_disk:
            skips.append(Skip(name, f"Videos/{name}.avi", int(row), "missing",
                              f"video file {str(path)!r} does not exist"))
            kept[i] = False
            continue
        outside = outside_problem(root, path)
        if outside is not None:
            skips.append(Skip(name, f"Videos/{name}.avi", int(row), "video",
                              f"video file {outside}"))
            kept[i] = False
            continue
        gt_path = gt_dir / f"{name}.npz" if with_gt else None
        if gt_path is not None and not gt_path.is_file():
            skips.append(Skip(name, f"GroundTruth/{name}.npz", int(row), "ground_truth",
                              f"ground truth {str(gt_path)!r} does not exist"))
            kept[i] = False
            continue
        outside = None if gt_path is None else outside_problem(root, gt_path)
        if outside is not None:
            skips.append(Skip(name, f"GroundTruth/{name}.npz", int(row), "ground_truth",
                              f"ground truth {outside}"))
            kept[i] = False
            continue
        items.append(_Item(name, int(row), str(path), None if gt_path is None else str(gt_path),
                           by_name.get(name), tracing_policy, os.getcwd()))
    for extra in sorted(on_disk - listed):
        skips.append(Skip(extra[:-4], f"Videos/{extra}", None, "extra",
                          "video is not listed in FileList.csv: ignored"))
    listed_names = set(filelist["FileName"]) | {s.file_name for s in skips}
    for name, rows in by_name.items():
        if name not in listed_names:
            skips.append(Skip(name, "VolumeTracings.csv", int(rows["row"].iloc[0]), "tracing",
                              "tracings of a video that is not in FileList.csv: ignored"))
    return filelist[kept].reset_index(drop=True), items, skips, with_gt, n_rows


def _check_bad(root: Path, n_rows: int, skips: list[Skip], max_bad_fraction: float,
               skipped_path: str | os.PathLike | None, t0: float, final: bool) -> IngestReport:
    """Fail (IngestError) when too many FileList rows are bad, else return the report.

    The skip report is written (atomically) when failing, or when ``final`` (after
    decoding): never a partial report from before decoding."""
    df = skips_frame(skips)
    bad = int(df["kind"].isin(BAD_KINDS).sum())
    report = IngestReport(videos=0, frames=0, rows=n_rows, bad=bad, skips=df,
                          seconds=time.perf_counter() - t0)
    error = None
    if n_rows == 0:
        error = (f"{str(root / 'FileList.csv')!r} has no rows: nothing to ingest; add the "
                 f"videos' rows or point the source at another folder")
    elif bad > max_bad_fraction * n_rows:
        counts = df[df["kind"].isin(BAD_KINDS)]["kind"].value_counts().to_dict()
        where = (f"see {str(skipped_path)!r}" if skipped_path is not None
                 else "pass skipped_path to get the skip report")
        error = (f"{bad} of {n_rows} FileList rows of {str(root)!r} are bad "
                 f"({bad / max(n_rows, 1):.1%} > max_bad_fraction {max_bad_fraction:.1%}; "
                 f"by kind: {counts}); no store was written; {where}; fix those inputs or "
                 f"raise ingest.max_bad_fraction")
    if skipped_path is not None and (final or error is not None):
        write_skips_csv(df, skipped_path)
    if error is not None:
        raise IngestError(error, report)
    return report


def check_ingest_args(*, shard_frames: int, chunk_frames: int, workers: int,
                      max_bad_fraction: float, tracing_policy: str,
                      batch_videos: int | None) -> None:
    """Raise InputError (naming the value and the fix) for a setting that is out of range;
    nothing is coerced: a NaN fraction would switch the bad-input limit off, a size <= 0
    would be silently replaced."""
    check_shard_layout(shard_frames, chunk_frames, shard_param="ingest.shard_frames",
                       chunk_param="ingest.chunk_frames")
    check_positive("workers", workers, "ingest.workers")
    if batch_videos is not None:
        check_positive("batch_videos", batch_videos, "the batch_videos argument")
    if not (isinstance(max_bad_fraction, (int, float, np.floating))
            and 0.0 <= max_bad_fraction <= 1.0):
        raise InputError(f"max_bad_fraction must be a number in [0, 1], got "
                         f"{max_bad_fraction!r}: fix ingest.max_bad_fraction")
    if tracing_policy not in TRACING_POLICIES:
        raise InputError(f"tracing_policy {tracing_policy!r} is not one of "
                         f"{', '.join(TRACING_POLICIES)}: fix ingest.tracing_policy")


class _Assembler:
    """Driver side: appends decoded videos, in order, to the store's arrays and index."""

    def __init__(self, group: zarr.Group, by_name: dict[str, dict], with_gt: bool,
                 writer: ThreadPoolExecutor):
        self.by_name = by_name  # FileName -> FileList row (a pandas row lookup per video
        #                         costs ~0.4 ms of GIL time that the decoding thread waits for)
        self.frames = _ShardAppender(group["frames"], writer, digest=True)
        self.gt = _ShardAppender(group["gt_masks"], writer) if with_gt else None
        self.traced = _ShardAppender(group["traced_masks"], writer)
        self.index_rows: list[dict] = []
        self.traced_rows: list[tuple] = []
        self.gt_rows: list[tuple] = []

    def add(self, loaded: _Loaded, skips: list[Skip]) -> None:
        if loaded.error is not None:
            skips.append(loaded.error)
            return
        skips.extend(loaded.skips)
        meta = self.by_name[loaded.name]
        n = int(loaded.frames.shape[0])
        start, video = self.frames.size, len(self.index_rows)
        self.frames.append(loaded.frames)
        if self.gt is not None:
            self.gt.append(loaded.gt_masks)
            self.gt_rows.extend((loaded.name, video, f, p) for f, p in loaded.gt_events)
        for t in loaded.traced:
            self.traced_rows.append((loaded.name, video, t.frame, t.phase, self.traced.size))
            self.traced.append(t.mask[None])
        for column, decoded in (("FrameWidth", loaded.width), ("FrameHeight", loaded.height)):
            listed = float(meta[column])
            if np.isfinite(listed) and listed != decoded:
                skips.append(Skip(loaded.name, f"Videos/{loaded.name}.avi", int(meta["row"]),
                                  "note", f"FileList {column} is {listed:g} but the video is "
                                  f"{loaded.width}x{loaded.height} (the decoded size is used, "
                                  f"also to scale its tracings)"))
        listed_n = float(meta["NumberOfFrames"])
        if np.isfinite(listed_n) and listed_n != n:
            skips.append(Skip(loaded.name, f"Videos/{loaded.name}.avi", int(meta["row"]), "note",
                              f"FileList NumberOfFrames is {listed_n:g} but {n} frames were "
                              f"decoded (the decoded count is used)"))

        def listed_or(column: str, value: float) -> float:
            v = float(meta[column])
            return v if np.isfinite(v) else float(value)

        self.index_rows.append({
            "FileName": loaded.name, "Split": meta["Split"], "start": start, "stop": start + n,
            "FPS": listed_or("FPS", loaded.fps), "EF": float(meta["EF"]),
            "ESV": float(meta["ESV"]), "EDV": float(meta["EDV"]),
            "FrameHeight": listed_or("FrameHeight", loaded.height),
            "FrameWidth": listed_or("FrameWidth", loaded.width),
            "NumberOfFrames": listed_or("NumberOfFrames", n),
        })

    def finish(self, group: zarr.Group) -> pd.DataFrame:
        """Wait for the writes, then write the index attributes; returns the index."""
        for appender in (self.frames, self.gt, self.traced):
            if appender is not None:
                appender.finish()
        index = pd.DataFrame(self.index_rows, columns=INDEX_COLUMNS)
        index["start"] = index["start"].astype("int64")
        index["stop"] = index["stop"].astype("int64")
        traced = pd.DataFrame(self.traced_rows, columns=TRACED_COLUMNS)
        extra = {}
        if self.gt is not None:
            extra["gt_events"] = _records(pd.DataFrame(self.gt_rows, columns=GT_COLUMNS))
        finish_frame_store(group, index, traced, content=self.frames.hexdigest(), **extra)
        return index


@dataclass(frozen=True)
class IngestConfig:
    """The ``ingest:`` section of params.yaml; its fields are :func:`ingest_source`'s keyword
    arguments of the same names (validated there)."""

    scheduler: str
    workers: int
    max_bad_fraction: float
    shard_frames: int
    chunk_frames: int
    tracing_policy: str


def ingest_source(root: str | os.PathLike, out_path: str | os.PathLike, *,
                  shard_frames: int, chunk_frames: int, workers: int, scheduler: str,
                  max_bad_fraction: float, tracing_policy: str, progress: bool = True,
                  skipped_path: str | os.PathLike | None = None,
                  batch_videos: int | None = None) -> IngestReport:
    """Decode the source folder ``root`` (EchoNet layout) into the frame store ``out_path``.

    Videos are stored in FileList order; ``frames`` uint8 (N, 112, 112), ``gt_masks`` when
    ``root/GroundTruth`` exists (plus attribute ``gt_events``: FileName, video, frame, phase
    of the ground-truth ED/ES frames), ``traced_masks`` from VolumeTracings.csv. start/stop
    come from the decoded frame counts; FileList's NumberOfFrames is kept (a mismatch is
    recorded as a ``note`` skip). Bad rows, missing/undecodable videos, bad ground truth,
    refused traced frames and videos absent from FileList are reported in
    ``report.skips`` (and written to ``skipped_path`` if given, also on failure).

    The settings ``shard_frames`` ... ``tracing_policy`` are params.yaml's ``ingest``
    section (:class:`IngestConfig`), passed explicitly. Decoding runs as dask tasks (one per
    video) on ``workers`` local threads, or on the cluster at ``scheduler`` (a
    ``dask.distributed`` address) when non-empty, in batches of ``batch_videos`` videos
    (None: about ``BATCH_FRAMES * workers`` frames by FileList's NumberOfFrames; ``workers``
    is the cluster's thread count with a scheduler), ``IN_FLIGHT`` batches in flight
    (memory: about ``IN_FLIGHT * BATCH_FRAMES * workers`` decoded frames, plus up to
    ``MAX_PENDING_SHARDS + 1`` shard buffers per array); one writer thread writes whole
    shards in order. The store is built at ``partial_path(out_path)`` and committed
    atomically; raises :class:`IngestError` (leaving ``out_path`` untouched) when more than
    ``max_bad_fraction`` of the FileList rows are bad. A video (or ground-truth file) that
    resolves outside ``root`` (a symbolic link pointing elsewhere) is not read: it is a bad
    row (kind ``video``/``ground_truth``).

    An OS error while writing the store (disk full, file-size limit) raises
    :class:`echodfkd.data.store.StoreWriteError` (one line naming ``out_path`` and the
    error); as on any failure, the partial store is removed (ingest does not resume) and
    ``out_path`` and the skip report are left as they were.
    """
    check_ingest_args(shard_frames=shard_frames, chunk_frames=chunk_frames, workers=workers,
                      max_bad_fraction=max_bad_fraction, tracing_policy=tracing_policy,
                      batch_videos=batch_videos)
    t0 = time.perf_counter()
    root, out_path = Path(root), Path(out_path)
    filelist, items, skips, with_gt, n_rows = _plan(root, tracing_policy)
    _check_bad(root, n_rows, skips, max_bad_fraction, skipped_path, t0, final=False)

    by_name = filelist.set_index("FileName").to_dict("index")
    frames_hint = [float(by_name[it.name]["NumberOfFrames"]) for it in items]
    staging = partial_path(out_path)
    # An OS error writing the store (disk full, file-size limit): one line naming the store
    # and the error; the partial store is removed below, ``out_path`` is left as it was.
    writes = store_writes("the frame store", out_path,
                          f" (the partial store {str(staging)!r} is removed; "
                          f"{str(out_path)!r} is as it was)")
    writer = ThreadPoolExecutor(1, thread_name_prefix="ingest-write")
    runner = None
    bar = tqdm(total=len(items), desc=f"ingest {root.name}", unit="video", disable=not progress)
    try:
        runner = _Runner(workers, scheduler, in_flight=IN_FLIGHT)
        batches = _batches(items, frames_hint, BATCH_FRAMES * runner.threads, batch_videos)
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in INDEX_COLUMNS})
        with writes:
            group = init_frame_store(staging, empty, 0, with_gt=with_gt,
                                     shard_frames=shard_frames, chunk_frames=chunk_frames)
            assembler = _Assembler(group, by_name, with_gt, writer)
        pending: deque = deque()
        for batch in batches + [None] * runner.in_flight:  # None: drain
            if batch is not None:
                pending.append(runner.submit(batch))
            if pending and (batch is None or len(pending) == runner.in_flight):
                for loaded in pending.popleft().result():
                    with writes:  # appending hands full shards to the writer thread
                        assembler.add(loaded, skips)
                    bar.update(1)
        bar.close()
        with writes:
            index = assembler.finish(group)
        report = _check_bad(root, n_rows, skips, max_bad_fraction, skipped_path, t0,
                            final=True)
        with writes:
            commit(staging, out_path)
    except BaseException:
        bar.close()
        writer.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if runner is not None:
            runner.close()
        writer.shutdown(wait=True)
    report.videos = len(index)
    report.frames = int(index["stop"].max()) if len(index) else 0
    report.seconds = time.perf_counter() - t0
    return report
