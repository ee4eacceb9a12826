"""Training clips from frame and mask stores: in RAM for small sets, streamed from Zarr at scale.

A *clip* is ``L`` consecutive frames of one video with their soft masks. Training draws clips
with :func:`sample_clips`; this module reads them, from one of two interchangeable sources that
give byte-identical clips for the same (video, start) draws:

- :class:`ClipSet` (the fast path for small sets): every selected frame and mask in RAM, uint8,
  2 x 12.5 kB per frame (the phantom's 100 x 64 training frames: ~160 MB; EchoNet-Synthetic's
  ~1.9M frames would need ~48 GB, hence the other path).
- :class:`StreamingClips`: only the video table is held; each batch's clips are read from the
  Zarr stores on demand. Reads are chunk-aware: the frames a batch needs are grouped by stored
  chunk (frames: 128-frame chunks, masks: the mask store's chunks), every chunk is decoded once
  per batch, and decoded chunks stay in a :class:`ChunkCache` (LRU, byte budget ``cache_mb``) so
  that one decoded chunk serves every later clip that falls in it. Peak memory is the cache
  budget plus the batches in flight, whatever the data set size.

Which path a run takes is chosen by size (:func:`choose_streaming`, called by
:func:`echodfkd.student.train.train_student`) and logged; both share the
video table (video order, lengths, short-video policy), so the sampler draws the same clips.

Short videos (fewer frames than L) are skipped, or with ``"pad"`` padded by repeating their
last frame and mask: :class:`ClipSet` materialises the padding, :class:`StreamingClips` clamps
the frame index to the video's last frame, which reads the same bytes.

Composite training (docs/design.md §1: synthetic data "in composite batches"): each
:class:`Source` is a *group* with a mixing ``weight``; :func:`sample_clips` draws a clip's group
with probability weight / sum of weights, then a video uniformly within the group. With one
group the draws are exactly the single-source sampler's (video uniform over all videos).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from echodfkd.errors import InputError
from echodfkd.data.store import FRAME_SIZE, open_frames, open_masks

log = logging.getLogger(__name__)

FRAME_BYTES = FRAME_SIZE * FRAME_SIZE  # one uint8 112x112 frame


SHORT_VIDEO_POLICIES = ("skip", "pad")  # videos shorter than a clip: left out, or padded

@dataclass(frozen=True)
class Source:
    """A frame store, the mask store aligned with it (soft targets), the splits to use and the
    source's mixing weight in composite training (probability weight / sum of weights)."""

    frames: str
    masks: str
    splits: tuple[str, ...] = ("TRAIN",)
    weight: float = 1.0


def select_videos(index: pd.DataFrame, splits: Sequence[str], *, filter_column: str | None,
                  filter_min: float | None, filter_max: float | None,
                  where: str = "index") -> pd.DataFrame:
    """Rows of a frame store's video ``index`` in ``splits`` (and, with ``filter_column``,
    with ``filter_min <= value <= filter_max``; missing values are excluded). The filter is
    ``train.filter_*`` (None: no column condition / unbounded), passed explicitly."""
    rows = index[index["Split"].isin(list(splits))]
    if filter_column is not None:
        if filter_column not in index.columns:
            raise InputError(f"filter column {filter_column!r} is not in the video index of "
                             f"{where} (columns: {list(index.columns)}): set train.filter_column "
                             f"to one of them or to empty")
        values = rows[filter_column].astype("float64")
        keep = values.notna()
        if filter_min is not None:
            keep &= values >= filter_min
        if filter_max is not None:
            keep &= values <= filter_max
        rows = rows[keep.to_numpy()]
    return rows


@dataclass
class VideoTable:
    """The selected videos of one or more sources, without pixels.

    All arrays int64 (V,), in the order clips are indexed (sources in the given order, videos
    by frame position within a source): ``store[v]`` indexes ``stores`` (distinct (frames, masks)
    store pairs), ``offset[v]`` is the video's first frame in that store, ``length[v]`` its
    stored frame count, ``group[v]`` the :class:`Source` it was selected by.
    """

    stores: list[tuple[str, str]]
    store: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    group: np.ndarray
    names: list[str]
    weights: list[float]

    @property
    def frames(self) -> int:
        return int(self.length.sum())


def plan_videos(sources: Sequence[Source], *, filter_column: str | None,
                filter_min: float | None, filter_max: float | None) -> VideoTable:
    """Select the videos of ``sources`` (splits, column filter as :func:`select_videos`; None:
    none); checks that each mask store is complete and aligned with its frame store
    (:func:`echodfkd.data.store.open_masks`)."""
    stores: list[tuple[str, str]] = []
    store, offset, length, group, names = [], [], [], [], []
    for g, src in enumerate(sources):
        if not src.weight > 0:
            raise InputError(f"source {src.frames!r} has mixing weight {src.weight}: weights "
                             f"must be > 0 (drop the source instead)")
        fs = open_frames(src.frames)
        open_masks(src.masks, frames=fs)
        key = (src.frames, src.masks)
        if key not in stores:
            stores.append(key)
        rows = select_videos(fs.index, src.splits, filter_column=filter_column,
                             filter_min=filter_min, filter_max=filter_max, where=src.frames)
        rows = rows.sort_values("start")
        starts = rows["start"].to_numpy(np.int64)
        store.extend([stores.index(key)] * len(rows))
        offset.extend(starts.tolist())
        length.extend((rows["stop"].to_numpy(np.int64) - starts).tolist())
        group.extend([g] * len(rows))
        names.extend(f"{src.frames}:{n}" for n in rows["FileName"].astype(str))
    as64 = lambda a: np.asarray(a, np.int64)  # noqa: E731
    return VideoTable(stores, as64(store), as64(offset), as64(length), as64(group), names,
                      [float(s.weight) for s in sources])


def _runs(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """Merge sorted, contiguous [start, stop) ranges into maximal runs (fewer Zarr reads)."""
    runs: list[list[int]] = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        if runs and runs[-1][1] == a:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    return [(a, b) for a, b in runs]


def _starts(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


@dataclass
class ClipSet:
    """Videos held in RAM, concatenated like a frame store.

    ``frames``, ``masks``: uint8 (N, 112, 112); video v is ``[starts[v], starts[v] + lengths[v])``
    (int64 arrays of shape (V,)); ``names[v]`` is ``"<frame store>:<FileName>"``. ``groups``
    (int64 (V,), default all 0) and ``weights`` (one per group) drive composite sampling.
    ``skipped`` / ``padded`` name the videos shorter than the clip length that were dropped /
    padded by :func:`prepare_short_videos`.
    """

    frames: np.ndarray
    masks: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    weights: list[float] = field(default_factory=lambda: [1.0])

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = np.zeros(len(self.names), np.int64)

    def __len__(self) -> int:
        return len(self.names)

    def read(self, videos: np.ndarray, starts: np.ndarray, sequence_length: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """Frames and masks of clips: two uint8 (B, L, 112, 112) arrays."""
        idx = self.starts[videos][:, None] + starts[:, None] + np.arange(sequence_length)
        return self.frames[idx], self.masks[idx]


def load_videos(sources: Sequence[Source], *, filter_column: str | None,
                filter_min: float | None, filter_max: float | None,
                table: VideoTable | None = None) -> ClipSet:
    """Read the frames and soft masks of the selected videos of ``sources`` (filter as
    :func:`plan_videos`) into RAM (``table``: the :func:`plan_videos` result for these
    sources and this filter, to avoid planning twice)."""
    if table is None:
        table = plan_videos(sources, filter_column=filter_column, filter_min=filter_min,
                            filter_max=filter_max)
    total = table.frames
    frames = np.empty((total, FRAME_SIZE, FRAME_SIZE), np.uint8)  # filled in place
    masks = np.empty((total, FRAME_SIZE, FRAME_SIZE), np.uint8)
    pos = 0
    opened = {}
    for s, (fpath, mpath) in enumerate(table.stores):
        fs = open_frames(fpath)
        opened[s] = (fs.frames, open_masks(mpath).masks)
    # consecutive videos of one store that are contiguous on disk are read in one call
    v = 0
    while v < len(table.names):
        w = v + 1
        while (w < len(table.names) and table.store[w] == table.store[v]
               and table.offset[w] == table.offset[w - 1] + table.length[w - 1]):
            w += 1
        a = int(table.offset[v])
        b = int(table.offset[w - 1] + table.length[w - 1])
        fa, ma = opened[int(table.store[v])]
        frames[pos:pos + b - a] = fa[a:b]
        masks[pos:pos + b - a] = ma[a:b]
        pos += b - a
        v = w
    return ClipSet(frames, masks, _starts(table.length), table.length.copy(), list(table.names),
                   groups=table.group.copy(), weights=list(table.weights))


class ChunkCache:
    """Decoded chunks, least recently used first out, within ``budget_bytes`` (thread-safe).

    Keys are ``(store, kind, chunk number)``. :meth:`get_many` returns every requested chunk
    (the batch being read holds its own references, so a budget smaller than one batch only
    costs re-reads, never a wrong clip). ``hits`` / ``misses`` count chunk look-ups.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise InputError(f"cache budget must be >= 0 bytes, got {budget_bytes}")
        self.budget = int(budget_bytes)
        self.bytes = 0
        self.hits = self.misses = 0
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Sequence[tuple], load: Callable[[tuple], np.ndarray]
                 ) -> dict[tuple, np.ndarray]:
        out, missing = {}, []
        with self._lock:
            for k in keys:
                if k in self._data:
                    self._data.move_to_end(k)
                    out[k] = self._data[k]
                    self.hits += 1
                else:
                    missing.append(k)
                    self.misses += 1
        for k in missing:  # decode outside the lock: other readers go on meanwhile
            out[k] = load(k)
        with self._lock:
            for k in missing:
                if k not in self._data and out[k].nbytes <= self.budget:
                    self._data[k] = out[k]
                    self.bytes += out[k].nbytes
            while self.bytes > self.budget and self._data:
                _, old = self._data.popitem(last=False)
                self.bytes -= old.nbytes
        return out


class StreamingClips:
    """Clips read from the Zarr stores on demand (see module docstring).

    Same table attributes as :class:`ClipSet` (``lengths`` = frames a clip may span, i.e. the
    padded length for padded videos; ``names``, ``groups``, ``weights``, ``skipped``,
    ``padded``), no pixels: :meth:`read` fetches them through a :class:`ChunkCache` of
    ``cache_bytes``.
    """

    def __init__(self, table: VideoTable, cache_bytes: int) -> None:
        self.table = table
        self.video_store = table.store.copy()     # which store pair holds the video
        self.video_offset = table.offset.copy()   # its first frame in that store
        self.stored = table.length.copy()         # frames on disk per video
        self.lengths = table.length.copy()        # frames a clip may span (>= stored if padded)
        self.names = list(table.names)
        self.groups = table.group.copy()
        self.weights = list(table.weights)
        self.skipped: list[str] = []
        self.padded: list[str] = []
        self.cache = ChunkCache(cache_bytes)
        self._arrays: dict[int, tuple] = {}
        self._open_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def _array(self, store: int, kind: int):
        with self._open_lock:
            if store not in self._arrays:
                fpath, mpath = self.table.stores[store]
                self._arrays[store] = (open_frames(fpath).frames, open_masks(mpath).masks)
        return self._arrays[store][kind]

    def _load(self, key: tuple) -> np.ndarray:
        store, kind, c = key
        arr = self._array(store, kind)
        cf = arr.chunks[0]
        return np.asarray(arr[c * cf:min((c + 1) * cf, arr.shape[0])])

    def keep(self, rows: np.ndarray, lengths: np.ndarray) -> "StreamingClips":
        """The videos ``rows`` (int64) with clip lengths ``lengths``; shares stores and cache."""
        new = object.__new__(StreamingClips)
        new.__dict__.update(self.__dict__)
        for name in ("video_store", "video_offset", "stored", "groups"):
            setattr(new, name, getattr(self, name)[rows])
        new.lengths = np.asarray(lengths, np.int64)
        new.names = [self.names[i] for i in rows.tolist()]
        new.skipped, new.padded = list(self.skipped), list(self.padded)
        return new

    def read(self, videos: np.ndarray, starts: np.ndarray, sequence_length: int
             ) -> tuple[np.ndarray, np.ndarray]:
        """Frames and masks of clips: two uint8 (B, L, 112, 112) arrays, each needed chunk
        decoded at most once (and not at all when cached)."""
        videos = np.asarray(videos, np.int64)
        b = len(videos)
        t = np.minimum(np.asarray(starts, np.int64)[:, None] + np.arange(sequence_length),
                       self.stored[videos][:, None] - 1)   # padding: repeat the last frame
        frame = self.video_offset[videos][:, None] + t           # (B, L) frame in its store
        store = np.broadcast_to(self.video_store[videos][:, None], frame.shape)
        outs = []
        for kind in (0, 1):
            out = np.empty((b, sequence_length, FRAME_SIZE, FRAME_SIZE), np.uint8)
            cf = np.array([self._array(int(s), kind).chunks[0] for s in store[:, 0]],
                          np.int64)[:, None]
            chunk = frame // cf
            keys = sorted({(int(s), kind, int(c)) for s, c in zip(store.ravel(), chunk.ravel())})
            got = self.cache.get_many(keys, self._load)
            for key in keys:
                sel = (store == key[0]) & (chunk == key[2])
                rows, cols = np.nonzero(sel)
                out[rows, cols] = got[key][(frame[rows, cols] - key[2] * cf[rows, 0])]
            outs.append(out)
        return outs[0], outs[1]


def short_video_plan(lengths: np.ndarray, sequence_length: int, policy: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Which videos to keep and which of those to pad: (kept rows int64, padded bool per kept
    row). ``"skip"`` drops videos shorter than ``sequence_length``; ``"pad"`` keeps them
    (empty videos are always dropped)."""
    if policy not in SHORT_VIDEO_POLICIES:
        raise InputError(f"short_videos must be one of {list(SHORT_VIDEO_POLICIES)}, got "
                         f"{policy!r}")
    lengths = np.asarray(lengths, np.int64)
    short = lengths < sequence_length
    keep = (lengths > 0) & (~short if policy == "skip" else True)
    rows = np.flatnonzero(keep).astype(np.int64)
    return rows, short[rows]


def _log_short(skipped: list[str], padded: list[str], sequence_length: int) -> None:
    if skipped:
        log.warning("skipped %d video(s) shorter than the clip length %d: %s",
                    len(skipped), sequence_length, ", ".join(skipped[:5]))
    if padded:
        log.warning("padded %d video(s) shorter than the clip length %d by repeating their "
                    "last frame: %s", len(padded), sequence_length, ", ".join(padded[:5]))


def prepare_short_videos(clips, sequence_length: int, policy: str):
    """Drop (``"skip"``) or pad by repeating the last frame (``"pad"``) the videos shorter
    than ``sequence_length``; empty videos are always dropped. Logs what it did. Works on a
    :class:`ClipSet` (padding materialised) or a :class:`StreamingClips` (index clamped)."""
    rows, pad = short_video_plan(clips.lengths, sequence_length, policy)
    if len(rows) == len(clips) and not pad.any():
        return clips
    dropped = sorted(set(range(len(clips))) - set(rows.tolist()))
    skipped = [clips.names[i] for i in dropped]
    padded = [clips.names[i] for i in rows[pad].tolist()]
    _log_short(skipped, padded, sequence_length)
    new_lengths = np.maximum(clips.lengths[rows], np.where(pad, sequence_length, 0))
    if isinstance(clips, StreamingClips):
        out = clips.keep(rows, new_lengths)
    else:
        keep_f, keep_m = [], []
        for v, p in zip(rows.tolist(), pad.tolist()):
            a, n = int(clips.starts[v]), int(clips.lengths[v])
            f, m = clips.frames[a:a + n], clips.masks[a:a + n]
            if p:
                reps = np.full(n, 1)
                reps[-1] += sequence_length - n
                f, m = np.repeat(f, reps, axis=0), np.repeat(m, reps, axis=0)
            keep_f.append(f)
            keep_m.append(m)
        empty = np.zeros((0, FRAME_SIZE, FRAME_SIZE), np.uint8)
        out = ClipSet(np.concatenate(keep_f) if keep_f else empty,
                      np.concatenate(keep_m) if keep_m else empty,
                      _starts(new_lengths), new_lengths, [clips.names[i] for i in rows.tolist()],
                      list(clips.skipped), list(clips.padded), clips.groups[rows],
                      list(clips.weights))
    out.skipped = list(clips.skipped) + skipped
    out.padded = list(clips.padded) + padded
    return out


def sample_clips(lengths: np.ndarray, n: int, sequence_length: int, rng: np.random.Generator,
                 groups: np.ndarray | None = None, weights: Sequence[float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` clips: (video ids int64 (n,), start frames int64 (n,)).

    One group (``groups`` None or ``weights`` of length <= 1): the video is drawn uniformly.
    Several: the group g with probability ``weights[g] / sum(weights)``, then a video uniformly
    among ``groups == g``. The start is uniform in ``[0, lengths[v] - sequence_length]``; every
    video must hold at least ``sequence_length`` frames.
    """
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) == 0:
        raise ValueError("no video to sample clips from")
    if lengths.min() < sequence_length:
        raise ValueError(f"video of {lengths.min()} frames is shorter than the clip length "
                         f"{sequence_length}")
    if groups is None or weights is None or len(weights) <= 1:
        videos = rng.integers(0, len(lengths), size=n)
    else:
        w = np.asarray(weights, np.float64)
        groups = np.asarray(groups, np.int64)
        order = np.argsort(groups, kind="stable")
        counts = np.bincount(groups, minlength=len(w))
        if (counts == 0).any():
            raise InputError(f"training source(s) {np.flatnonzero(counts == 0).tolist()} "
                             f"(0-based, in --sources order) have no usable video: fix the "
                             f"splits/filter or drop the source")
        first = _starts(counts)
        g = rng.choice(len(w), size=n, p=w / w.sum())
        videos = order[first[g] + rng.integers(0, counts[g])]
    starts = rng.integers(0, lengths[videos] - sequence_length + 1)
    return videos.astype(np.int64), starts.astype(np.int64)


def fixed_clips(lengths: np.ndarray, sequence_length: int,
                per_video: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic clips: ``per_video`` starts per video evenly spaced over
    ``[0, length - sequence_length]`` (duplicates removed). Returns (videos, starts)."""
    videos, starts = [], []
    for v, n in enumerate(np.asarray(lengths, np.int64).tolist()):
        if n < sequence_length:
            continue
        s = np.unique(np.round(np.linspace(0, n - sequence_length, per_video)).astype(np.int64))
        videos.extend([v] * len(s))
        starts.extend(s.tolist())
    return np.asarray(videos, np.int64), np.asarray(starts, np.int64)


def choose_streaming(table_frames: int, stream_above_mb: float) -> bool:
    """True when the frames and masks of ``table_frames`` frames (2 x 12,544 bytes each) exceed
    ``stream_above_mb`` MiB: stream from Zarr instead of loading into RAM."""
    return 2 * FRAME_BYTES * table_frames > stream_above_mb * 2 ** 20


def store_identity(frames: str, masks: str) -> str:
    """Content identity of a (frame store, mask store) pair without reading every frame.

    Frames: the frame store's index fingerprint (file names, frame ranges) and its
    ``attrs["content_sha"]`` when recorded. Masks: ``attrs["content_sha"]`` (sha256 of the mask
    bytes, recorded when the teacher's store is committed) when present, else a sha256 over the
    bytes of the files of its ``masks`` array (read 4 MiB at a time: bounded memory). Teacher
    masks are computed from the frames, so new frame contents give new mask contents.
    """
    fs = open_frames(frames)
    ms = open_masks(masks)
    fattrs = fs.group.attrs.asdict()
    parts = [f"frames:{fs.fingerprint}:{fattrs.get('content_sha', '')}"]
    sha = ms.attrs.get("content_sha")
    if sha:
        parts.append(f"masks:content_sha:{sha}")
    else:
        h = hashlib.sha256()
        root = Path(masks) / "masks"
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(root)).encode() + b"\0")
                with open(p, "rb") as f:
                    for block in iter(lambda: f.read(1 << 22), b""):
                        h.update(block)
        parts.append(f"masks:files:{h.hexdigest()[:16]}")
    return "|".join(parts)


def inputs_fingerprint(sources: Sequence[Source], *sets) -> str:
    """16 hex digits identifying what training reads: the identity of every (frames, masks)
    store pair of ``sources`` (:func:`store_identity`), and per clip set (:class:`ClipSet` or
    :class:`StreamingClips`) the selected videos' names, clip lengths and mixing weights.
    Cheap at any scale: no frame is decoded."""
    h = hashlib.sha256()
    for frames, masks in sorted({(s.frames, s.masks) for s in sources}):
        h.update(store_identity(frames, masks).encode() + b"\n")
    for s in sets:
        h.update("\n".join(s.names).encode())
        h.update(np.ascontiguousarray(np.asarray(s.lengths, np.int64)))
        h.update(repr([float(w) for w in s.weights]).encode())
    return h.hexdigest()[:16]


def prefetch(draw: Callable[[], tuple], read: Callable[..., tuple], steps: int, workers: int,
             depth: int) -> Iterator[tuple]:
    """Yield ``(plan, read(*plan[:2]))`` for ``steps`` plans from ``draw()``.

    ``draw`` is called in step order in the calling thread (so random draws happen in exactly
    the order of a loop without prefetch); with ``workers`` > 0 the reads run in that many
    background threads, up to ``depth`` steps ahead.
    """
    if workers <= 0:
        for _ in range(steps):
            plan = draw()
            yield plan, read(plan[0], plan[1])
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="clips") as ex:
        queue: deque = deque()
        try:
            for _ in range(steps):
                plan = draw()
                queue.append((plan, ex.submit(read, plan[0], plan[1])))
                if len(queue) > depth:
                    p, fut = queue.popleft()
                    yield p, fut.result()
            while queue:
                p, fut = queue.popleft()
                yield p, fut.result()
        finally:
            for _, fut in queue:
                fut.cancel()


def parse_sources(spec: str, frames_dir: str | os.PathLike, masks_dir: str | os.PathLike,
                  covers: Callable[[str], bool], *, weights: bool = True,
                  what: str) -> list[Source]:
    """Sources from a spec such as ``"synthetic:TRAIN@3 real:TRAIN+VAL@1"``.

    Space-separated entries ``<source>:<SPLIT>[+<SPLIT>...][@<weight>]`` (weight default 1,
    only with ``weights``); the stores are ``<frames_dir>/<source>.zarr`` and
    ``<masks_dir>/<source>.zarr``. ``covers(source)`` tells whether the teacher labels a source
    (has cached masks for it); every source must be covered. Raises :class:`InputError` naming
    ``what`` (the setting the spec comes from, e.g. ``"train.sources"``) and the bad entry.
    """
    entries = spec.split()
    if not entries:
        raise InputError(f"{what} is empty: give at least one <source>:<SPLIT>, e.g. "
                         f"synthetic:TRAIN")
    out = []
    for entry in entries:
        body, weight = entry, 1.0
        if "@" in entry:
            if not weights:
                raise InputError(f"{what} entry {entry!r} has a weight, which has no meaning "
                                 f"here: drop the '@...'")
            body, _, text = entry.rpartition("@")
            try:
                weight = float(text)
            except ValueError:
                weight = float("nan")
            if not weight > 0 or not np.isfinite(weight):
                raise InputError(f"{what} entry {entry!r}: weight {text!r} is not a positive "
                                 f"number (write e.g. synthetic:TRAIN@3)")
        name, sep, splits = body.partition(":")
        split_list = tuple(s for s in splits.split("+") if s)
        if not sep or not name or not split_list or "/" in name:
            raise InputError(f"{what} entry {entry!r} is not <source>:<SPLIT>[+<SPLIT>...]"
                             f"{'[@<weight>]' if weights else ''} (e.g. synthetic:TRAIN"
                             f"{'@3' if weights else ''})")
        if not covers(name):
            raise InputError(f"{what} source {name!r} has no teacher masks: set "
                             f"sources.{name}.teacher: true in params.yaml")
        out.append(Source(str(Path(frames_dir) / f"{name}.zarr"),
                          str(Path(masks_dir) / f"{name}.zarr"), split_list, weight))
    return out
