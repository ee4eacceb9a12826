"""The phantom's set writer: one video in memory, a whole set on disk in an EchoNet layout.

The layout, file names and per-video seeds are described in the package docstring
(:mod:`echodfkd.data.phantom`; docs/design.md §5).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echodfkd.data.phantom.heart import (LOOKS, STYLES, _choose_fps, _es_scale, _fit_in_fan,
                                         _sample_heart, extreme_frames, volume_ml)
from echodfkd.data.phantom.render import SIZE, _render
from echodfkd.data.phantom.tracings import TRACING_COLUMNS, _tracing
from echodfkd.data.store import commit, partial_path
from echodfkd.errors import InputError

SPLITS = ("TRAIN", "VAL", "TEST", "EXTRA")
FILELIST_COLUMNS = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS",
                    "NumberOfFrames", "Split"]
FORMAT_VERSION = 1


def _video_seed(seed: int, split: str, i: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), i))


def _length_seed(seed: int, split: str, i: int) -> np.random.SeedSequence:
    """The stream of video i's length: separate from the video's own stream, so a set whose
    lengths change keeps every other draw of its videos."""
    return np.random.SeedSequence(seed, spawn_key=(SPLITS.index(split), i, 1))


# EchoNet-Dynamic-like video lengths (docs/design.md §5, "Video lengths"): most videos a
# log-normal around LENGTH_MEDIAN frames within LENGTH_RANGE, LONG_FRACTION of them longer,
# uniform in LONG_RANGE.
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_RANGE = 175.0, 0.3, (100, 400)
LONG_FRACTION, LONG_RANGE = 0.05, (400, 700)


def echonet_length(seed: int, split: str, i: int) -> int:
    """Frames of video ``i`` of ``split`` in a set whose ``split`` takes EchoNet-Dynamic-like
    lengths: an int in [100, 700], most within 100-400 (median ~175), about 5% in 400-700;
    the same for the same (seed, split, i)."""
    rng = np.random.default_rng(_length_seed(seed, split, i))
    if rng.random() < LONG_FRACTION:
        return int(rng.integers(LONG_RANGE[0], LONG_RANGE[1] + 1))
    n = LENGTH_MEDIAN * np.exp(LENGTH_SIGMA * rng.standard_normal())
    return int(np.clip(round(n), *LENGTH_RANGE))


def video_length(seed: int, split: str, i: int, n_frames: int,
                 echonet_lengths: Sequence[str]) -> int:
    """Frames of video ``i`` of ``split``: :func:`echonet_length` when ``split`` is one of
    ``echonet_lengths``, else ``n_frames``."""
    return echonet_length(seed, split, i) if split in echonet_lengths else n_frames


def _file_name(rng: np.random.Generator, style: str, number: int) -> str:
    if style == "synthetic":
        return f"sample_{number:06d}"
    return "0X" + rng.bytes(8).hex().upper()


def write_avi(path: str | os.PathLike, frames: np.ndarray, fps: float) -> None:
    """Write uint8 (T, 112, 112) grey frames as an MJPG AVI with 3 identical channels.

    Uses OpenCV's built-in MJPEG encoder (deterministic, no FFmpeg needed), quality 95.
    """
    writer = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"),
                             float(fps), (frames.shape[2], frames.shape[1]), True)
    if not writer.isOpened():
        raise OSError(f"cannot open an MJPG video writer for {path!r}")
    writer.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    finally:
        writer.release()


def make_video(style: str, seed: int, split: str, i: int, n_frames: int, number: int = 0
               ) -> dict:
    """Generate one video in memory.

    Returns a dict with FileName, FPS, EF, EDV, ESV (mL), frames uint8 (T, 112, 112), masks
    uint8 (T, 112, 112) 0/1, ed / es int64 arrays, and for the real style ``tracings``: a list
    of (frame, float (21, 4) X1 Y1 X2 Y2) for one ED and one ES frame.
    """
    check_set(style, {}, n_frames)
    rng = np.random.default_rng(_video_seed(seed, split, i))
    name = _file_name(rng, style, number)
    fps = _choose_fps(rng, style)
    h = _fit_in_fan(_sample_heart(rng, style, fps, n_frames))
    frames, masks, g = _render(h, LOOKS[style], rng)
    area = masks.reshape(n_frames, -1).sum(1).astype(np.float64)
    ed, es = extreme_frames(area, h.period, h.t_ed0, h.systole)
    sl, sw = _es_scale(h)
    edv = round(volume_ml(h.length_ed, h.width_ed, h), 3)
    esv = round(volume_ml(h.length_ed * sl, h.width_ed * sw, h), 3)
    out = dict(FileName=name, FPS=fps, EF=round(100.0 * (edv - esv) / edv, 4), EDV=edv, ESV=esv,
               frames=frames, masks=masks, ed=ed, es=es, heart=h)
    if style == "synthetic":
        out.update(EF=h.ef, EDV=0.0, ESV=0.0)
    else:
        # A consecutive ED/ES pair (either order), as EchoNet's annotators traced.
        pairs = [(a, b) for a in ed for b in es if 0 < abs(int(b) - int(a)) < h.period]
        if not pairs:
            raise RuntimeError(f"video {name}: no ED/ES pair inside {n_frames} frames "
                               f"(ed={ed.tolist()}, es={es.tolist()})")
        f_ed, f_es = pairs[int(rng.integers(len(pairs)))]
        out["tracings"] = [(int(f), _tracing(h, g, int(f), rng)) for f in sorted((f_ed, f_es))]
    return out


@dataclass(frozen=True)
class PhantomSet:
    """One ``phantom.<name>`` section of params.yaml: a set of ``style`` ("real" or
    "synthetic") generated from ``seed`` with ``train``/``val``/``test``/``extra`` videos of
    ``frames`` frames each, except the splits of ``echonet_lengths`` (e.g. ``[TEST]``), whose
    videos take EchoNet-Dynamic-like lengths (:func:`echonet_length`; :func:`generate_set`'s
    arguments)."""

    style: str
    seed: int
    train: int
    val: int
    test: int
    extra: int
    frames: int
    echonet_lengths: list[str]

    def __post_init__(self) -> None:
        check_set(self.style, {"TRAIN": self.train, "VAL": self.val, "TEST": self.test,
                               "EXTRA": self.extra}, self.frames)
        check_length_splits(self.echonet_lengths)


def check_length_splits(echonet_lengths: Sequence[str]) -> None:
    """Raise :class:`InputError` unless ``echonet_lengths`` is a list of split names."""
    if isinstance(echonet_lengths, str) or not isinstance(echonet_lengths, Sequence):
        raise InputError(f"echonet_lengths must be a list of splits (e.g. [TEST]), got "
                         f"{echonet_lengths!r}")
    bad = [s for s in echonet_lengths if s not in SPLITS]
    if bad:
        raise InputError(f"echonet_lengths: {bad!r} not a split; use some of {list(SPLITS)}")


def check_set(style: str, counts: dict[str, int], n_frames: int) -> None:
    """Raise :class:`InputError` unless ``style`` is known, every split's video count
    ``counts[split]`` is >= 0 (the real style has no EXTRA videos) and a video holds a cardiac
    cycle (``n_frames`` >= 16)."""
    if style not in STYLES:
        raise InputError(f"style must be one of {list(STYLES)}, got {style!r}")
    for k, n in counts.items():
        if n < 0:
            raise InputError(f"{k.lower()} must be >= 0 videos, got {n!r}")
    if style == "real" and counts.get("EXTRA"):
        raise InputError(f"the real style (EchoNet-Dynamic) has no EXTRA split, got "
                         f"{counts['EXTRA']!r} EXTRA videos: set extra to 0")
    if n_frames < 16:
        raise InputError(f"frames must be >= 16 to hold a cardiac cycle, got {n_frames!r}")


def generate_set(out_dir: str | os.PathLike, *, style: str, seed: int, n_train: int, n_val: int,
                 n_test: int, n_frames: int, n_extra: int, echonet_lengths: Sequence[str],
                 progress: bool = True) -> pd.DataFrame:
    """Write a phantom set in the EchoNet layout (see the module docstring); return its FileList.

    The arguments are a ``phantom.<set>`` section of params.yaml (:class:`PhantomSet`: ``train``,
    ``val``, ``test``, ``extra``, ``frames``, ``echonet_lengths``), passed explicitly: videos of
    the splits in ``echonet_lengths`` have :func:`echonet_length` frames, the others
    ``n_frames``; FileList's NumberOfFrames gives each video's length.

    The set is built under ``<out_dir>.partial`` and renamed into place when complete.
    Output is byte-identical for the same arguments.
    """
    from tqdm import tqdm

    counts = {"TRAIN": n_train, "VAL": n_val, "TEST": n_test, "EXTRA": n_extra}
    check_set(style, counts, n_frames)
    check_length_splits(echonet_lengths)
    out_dir = Path(out_dir)
    stage = partial_path(out_dir)
    if stage.exists():
        shutil.rmtree(stage)
    (stage / "Videos").mkdir(parents=True)
    (stage / "GroundTruth").mkdir()
    rows, traces = [], []
    jobs = [(split, i) for split in SPLITS for i in range(counts[split])]
    for number, (split, i) in enumerate(tqdm(jobs, desc=f"phantom {style}", disable=not progress)):
        length = video_length(seed, split, i, n_frames, echonet_lengths)
        vid = make_video(style, seed, split, i, length, number)
        name = vid["FileName"]
        write_avi(stage / "Videos" / f"{name}.avi", vid["frames"], vid["FPS"])
        with open(stage / "GroundTruth" / f"{name}.npz", "wb") as fh:
            np.savez_compressed(fh, masks=vid["masks"], ed=vid["ed"], es=vid["es"])
        rows.append(dict(FileName=name, EF=vid["EF"], ESV=vid["ESV"], EDV=vid["EDV"],
                         FrameHeight=SIZE, FrameWidth=SIZE, FPS=vid["FPS"],
                         NumberOfFrames=length, Split=split))
        for frame, tr in vid.get("tracings", []):
            for x1, y1, x2, y2 in tr:
                traces.append((f"{name}.avi", x1, y1, x2, y2, frame))
    filelist = pd.DataFrame(rows, columns=FILELIST_COLUMNS)
    if filelist["FileName"].duplicated().any():
        dup = filelist.loc[filelist["FileName"].duplicated(), "FileName"].tolist()
        raise RuntimeError(f"duplicate FileNames {dup} (seed {seed})")
    if style == "synthetic":
        filelist["EF"] = filelist["EF"].astype(np.int64)
        filelist[["ESV", "EDV"]] = 0
    else:
        filelist = filelist.sort_values("FileName", kind="stable").reset_index(drop=True)
        tr = pd.DataFrame(traces, columns=TRACING_COLUMNS)
        tr.to_csv(stage / "VolumeTracings.csv", index=False, float_format="%.4f")
    filelist.to_csv(stage / "FileList.csv", index=False)
    meta = dict(format_version=FORMAT_VERSION, style=style, seed=seed, n_frames=n_frames,
                echonet_lengths=list(echonet_lengths), counts=counts, look=asdict(LOOKS[style]))
    (stage / "GroundTruth" / "phantom.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    commit(stage, out_dir)
    return filelist
