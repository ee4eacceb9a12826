"""Ingest an EchoNet-layout source folder into a Zarr frame store (see ``echodfkd.store``).

Videos are decoded in parallel by dask tasks (local threads, or the workers of a
``dask.distributed`` scheduler) in batches, with a bounded number of batches in flight.
The driver receives the decoded videos in FileList order, appends them to shard-sized
buffers and writes each shard exactly once, whole, in order: no two writers ever touch the
same shard, memory stays bounded (in-flight batches plus one shard buffer per array) and the
store is byte-identical for identical inputs.
"""

from __future__ import annotations

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
import dask
import numpy as np
import pandas as pd
import zarr
from tqdm import tqdm

from echodfkd.echonet import (
    BAD_KINDS, SKIP_COLUMNS, Skip, TracedFrame, VideoError, decode_video, read_filelist,
    read_tracings, safe_video_path, skips_frame, tracing_masks,
)
from echodfkd.store import (
    FRAME_SIZE, INDEX_COLUMNS, TRACED_COLUMNS, commit, finish_frame_store, init_frame_store,
    partial_path, write_text_atomic,
)

GT_COLUMNS = ["FileName", "video", "frame", "phase"]


class IngestError(RuntimeError):
    """Too many bad videos; ``report`` holds the skips found (the store was not written)."""

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
    out = _Loaded(item.name)
    try:
        video = decode_video(item.video_path)
    except _INPUT_ERRORS as e:
        out.error = Skip(item.name, f"Videos/{item.name}.avi", item.row, "video", str(e))
        return out
    n = video.frames.shape[0]
    if item.gt_path is not None:
        try:
            out.gt_masks, out.gt_events = _load_ground_truth(item.gt_path, n)
        except _INPUT_ERRORS as e:
            out.error = Skip(item.name, f"GroundTruth/{item.name}.npz", item.row,
                             "ground_truth", f"{type(e).__name__}: {e}")
            return out
    if item.tracings is not None:
        out.traced, out.skips = tracing_masks(item.tracings, n)
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

    Local: each batch is one ``dask.compute`` on the threaded scheduler; all batches share
    one pool of ``workers`` threads and are driven from helper threads, so the driver keeps
    writing while the next batches decode. Distributed: ``Client.compute`` on the
    scheduler at ``scheduler``.
    """

    def __init__(self, workers: int, scheduler: str, in_flight: int):
        self.client = None
        self.run_id = uuid.uuid4().hex[:12]
        self.n = 0
        if scheduler:
            from distributed import Client
            self.client = Client(scheduler)
        else:
            self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="ingest-decode")
            self.driver = ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="ingest-dask")

    def submit(self, batch: list[_Item]):
        # traverse=False and explicit keys: nothing to hash or unpack in the items.
        tasks = []
        for item in batch:
            self.n += 1
            tasks.append(dask.delayed(_load, pure=False, traverse=False)(
                item, dask_key_name=f"ingest-load-{self.run_id}-{self.n}"))
        if self.client is not None:
            return _Handle(self.client, self.client.compute(tasks))
        return self.driver.submit(
            lambda: list(dask.compute(*tasks, scheduler="threads", pool=self.pool)))

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


class _ShardAppender:
    """Appends frames to a uint8 (N, 112, 112) zarr array, growing it one whole shard at a
    time, so that every shard file is written exactly once and never read back.

    Full shards are handed to ``writer`` (one thread shared by all appenders: the single
    writer, in order) so that compression overlaps with decoding; at most two shards per
    array wait for it.
    """

    def __init__(self, array: zarr.Array, writer: ThreadPoolExecutor):
        self.array = array
        self.writer = writer
        self.block = int(array.shards[0]) if array.shards else int(array.chunks[0])
        self.buf = np.empty((self.block, FRAME_SIZE, FRAME_SIZE), dtype=np.uint8)
        self.fill = 0
        self.written = 0  # frames handed to the writer
        self.pending: deque = deque()

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
        start, stop, buf = self.written, self.written + self.fill, self.buf[:self.fill]
        self.pending.append(self.writer.submit(self._write, start, stop, buf))
        self.written, self.fill = stop, 0
        self.buf = np.empty_like(self.buf)
        while len(self.pending) > 2:
            self.pending.popleft().result()

    def _write(self, start: int, stop: int, buf: np.ndarray) -> None:
        self.array.resize((stop, FRAME_SIZE, FRAME_SIZE))
        self.array[start:stop] = buf

    def finish(self) -> None:
        """Write the last (partial) shard and wait for every write."""
        if self.fill:
            self._hand_over()
        while self.pending:
            self.pending.popleft().result()


def _records(df: pd.DataFrame) -> dict:
    return json.loads(df.to_json(orient="split", index=False))


def write_skips_csv(skips: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write the skip report atomically (``SKIP_COLUMNS`` header even when empty)."""
    buf = io.StringIO()
    skips.reindex(columns=SKIP_COLUMNS).to_csv(buf, index=False)
    write_text_atomic(path, buf.getvalue())


def _plan(root: Path) -> tuple[pd.DataFrame, list[_Item], list[Skip], bool, int]:
    """Read FileList (+ tracings, + ground truth) and list Videos/: what to decode.

    Returns (usable FileList rows, items to decode, skips so far, whether ground truth
    exists, number of FileList rows).
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
    listed: set[str] = set()
    kept = np.ones(len(filelist), dtype=bool)
    for i, (name, row) in enumerate(zip(filelist["FileName"], filelist["row"])):
        path = safe_video_path(root, name)
        listed.add(path.name)
        if path.name not in on_disk:
            skips.append(Skip(name, f"Videos/{name}.avi", int(row), "missing",
                              f"video file {str(path)!r} does not exist"))
            kept[i] = False
            continue
        gt_path = gt_dir / f"{name}.npz" if with_gt else None
        if gt_path is not None and not gt_path.is_file():
            skips.append(Skip(name, f"GroundTruth/{name}.npz", int(row), "ground_truth",
                              f"ground truth {str(gt_path)!r} does not exist"))
            kept[i] = False
            continue
        items.append(_Item(name, int(row), str(path), None if gt_path is None else str(gt_path),
                           by_name.get(name)))
    for extra in sorted(on_disk - listed):
        skips.append(Skip(extra[:-4], f"Videos/{extra}", None, "extra",
                          "video is not listed in FileList.csv: ignored"))
    listed_names = set(filelist["FileName"])
    for name, rows in by_name.items():
        if name not in listed_names:
            skips.append(Skip(name, "VolumeTracings.csv", int(rows["row"].iloc[0]), "tracing",
                              "tracings of a video that is not in FileList.csv: ignored"))
    return filelist[kept].reset_index(drop=True), items, skips, with_gt, n_rows


def _check_bad(root: Path, n_rows: int, skips: list[Skip], max_bad_fraction: float,
               skipped_path: str | os.PathLike | None, t0: float) -> IngestReport:
    df = skips_frame(skips)
    bad = int(df["kind"].isin(BAD_KINDS).sum())
    report = IngestReport(videos=0, frames=0, rows=n_rows, bad=bad, skips=df,
                          seconds=time.perf_counter() - t0)
    if skipped_path is not None:
        write_skips_csv(df, skipped_path)
    if n_rows == 0 or bad > max_bad_fraction * n_rows:
        counts = df[df["kind"].isin(BAD_KINDS)]["kind"].value_counts().to_dict()
        where = (f"see {str(skipped_path)!r}" if skipped_path is not None
                 else "pass skipped_path to get the skip report")
        raise IngestError(
            f"{bad} of {n_rows} FileList rows of {str(root)!r} are bad "
            f"({bad / max(n_rows, 1):.1%} > max_bad_fraction {max_bad_fraction:.1%}; "
            f"by kind: {counts}); no store was written; {where}", report)
    return report


def ingest_source(root: str | os.PathLike, out_path: str | os.PathLike, *,
                  shard_frames: int = 2048, chunk_frames: int = 64, workers: int = 2,
                  scheduler: str = "", max_bad_fraction: float = 0.05, progress: bool = True,
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

    Decoding runs as dask tasks on ``workers`` local threads, or on the cluster at
    ``scheduler`` (a ``dask.distributed`` address) when non-empty, ``batch_videos`` videos
    per task batch (default ``4 * workers``), at most three batches in flight. The store is
    built at ``partial_path(out_path)`` and committed atomically; raises
    :class:`IngestError` (leaving ``out_path`` untouched) when more than
    ``max_bad_fraction`` of the FileList rows are bad.
    """
    t0 = time.perf_counter()
    root, out_path = Path(root), Path(out_path)
    filelist, items, skips, with_gt, n_rows = _plan(root)
    _check_bad(root, n_rows, skips, max_bad_fraction, skipped_path, t0)

    by_name = filelist.set_index("FileName")
    staging = partial_path(out_path)
    empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in INDEX_COLUMNS})
    group = init_frame_store(staging, empty, 0, with_gt=with_gt, shard_frames=shard_frames,
                             chunk_frames=chunk_frames)
    frames_out = _ShardAppender(group["frames"])
    gt_out = _ShardAppender(group["gt_masks"]) if with_gt else None
    traced_out = _ShardAppender(group["traced_masks"])
    index_rows: list[dict] = []
    traced_rows: list[tuple] = []
    gt_rows: list[tuple] = []
    batch = max(1, batch_videos if batch_videos else 4 * max(1, workers))
    in_flight = 3
    runner = _Runner(workers, scheduler, in_flight)
    pending: deque = deque()
    batches = [items[i:i + batch] for i in range(0, len(items), batch)]
    bar = tqdm(total=len(items), desc=f"ingest {root.name}", unit="video", disable=not progress)
    try:
        next_batch = 0
        while next_batch < len(batches) or pending:
            while next_batch < len(batches) and len(pending) < in_flight:
                pending.append(runner.submit(batches[next_batch]))
                next_batch += 1
            for loaded in pending.popleft().result():
                bar.update(1)
                if loaded.error is not None:
                    skips.append(loaded.error)
                    continue
                skips.extend(loaded.skips)
                meta = by_name.loc[loaded.name]
                n = int(loaded.frames.shape[0])
                start = frames_out.written + frames_out.fill
                video = len(index_rows)
                frames_out.append(loaded.frames)
                if gt_out is not None:
                    gt_out.append(loaded.gt_masks)
                    gt_rows.extend((loaded.name, video, f, p) for f, p in loaded.gt_events)
                for t in loaded.traced:
                    traced_rows.append((loaded.name, video, t.frame, t.phase, len(traced_rows)))
                    traced_out.append(t.mask[None])
                listed_n = meta["NumberOfFrames"]
                if np.isfinite(listed_n) and int(listed_n) != n:
                    skips.append(Skip(loaded.name, f"Videos/{loaded.name}.avi", int(meta["row"]),
                                      "note", f"FileList NumberOfFrames is {int(listed_n)}, "
                                      f"{n} frames decoded (the decoded count is used)"))
                index_rows.append({
                    "FileName": loaded.name, "Split": meta["Split"],
                    "start": start, "stop": start + n,
                    "FPS": meta["FPS"] if np.isfinite(meta["FPS"]) else loaded.fps,
                    "EF": meta["EF"], "ESV": meta["ESV"], "EDV": meta["EDV"],
                    "FrameHeight": (meta["FrameHeight"] if np.isfinite(meta["FrameHeight"])
                                    else float(loaded.height)),
                    "FrameWidth": (meta["FrameWidth"] if np.isfinite(meta["FrameWidth"])
                                   else float(loaded.width)),
                    "NumberOfFrames": listed_n if np.isfinite(listed_n) else float(n),
                })
        bar.close()
        frames_out.flush()
        if gt_out is not None:
            gt_out.flush()
        traced_out.flush()
        report = _check_bad(root, n_rows, skips, max_bad_fraction, skipped_path, t0)
        index = pd.DataFrame(index_rows, columns=INDEX_COLUMNS)
        index["start"] = index["start"].astype("int64")
        index["stop"] = index["stop"].astype("int64")
        traced = pd.DataFrame(traced_rows, columns=TRACED_COLUMNS)
        extra = {}
        if with_gt:
            extra["gt_events"] = _records(pd.DataFrame(gt_rows, columns=GT_COLUMNS))
        finish_frame_store(group, index, traced, **extra)
        commit(staging, out_path)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        runner.close()
    report.videos = len(index)
    report.frames = int(frames_out.written)
    report.seconds = time.perf_counter() - t0
    return report
