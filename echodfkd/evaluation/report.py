"""What a person opens after a run: segmentation videos and the student's report page
(docs/design.md §4, "Segmentation videos" and "The report pages").

The evaluate stage scores a student (:func:`echodfkd.evaluation.evaluate.report_student`), then
this module picks the videos to show (:func:`videos_to_render`: the ``evaluate.n_examples``
worst and typical videos, or every evaluated video with ``evaluate.videos: all``), gathers each
one's arrays (:func:`video_inputs`), renders and encodes them
(:func:`write_videos`, through :mod:`echodfkd.evaluation.video`) and reads the training curves
that the train stage logged (:func:`read_training_curves`). The page itself is written by
:func:`echodfkd.evaluation.evaluate.write_report` with :mod:`echodfkd.evaluation.html`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from echodfkd.data.store import FrameStore, MaskStore, commit, partial_path
from echodfkd.errors import InputError
from echodfkd.evaluation import video as V
from echodfkd.evaluation.evaluate import VIDEO_CHOICES, _resolve_tracing, _tracings_by_video
from echodfkd.evaluation.html import collapsed_videos, safe_video_name

log = logging.getLogger(__name__)

# Frame rate used when the FileList gives none (EchoNet-Dynamic's usual 50 fps).
FALLBACK_FPS = 50.0

# The dvclive series the train stage logs (dvclive/<student>/plots/metrics/<name>.tsv).
TRAINING_SERIES = ("train_loss", "val_loss", "val_dice_vs_teacher")


def videos_to_render(per_video: pd.DataFrame, videos: str, n_examples: int) -> list[str]:
    """FileNames to render, in page order.

    ``videos``: ``"examples"`` for the videos flagged as collapsed (a non-empty ``collapse``
    cell, in table order, at most ``n_examples``) followed by
    :func:`echodfkd.evaluation.video.select_examples` of ``n_examples`` (the worst-scoring half
    and the rest closest to the median; the same videos on every run) not already listed;
    ``"all"`` for every row of ``per_video`` (scored or not: a video skipped for its tracings
    still has masks to watch).
    """
    if videos not in VIDEO_CHOICES:
        raise InputError(f"evaluate.videos must be one of {', '.join(VIDEO_CHOICES)}, "
                         f"got {videos!r}")
    if videos == "all":
        return per_video["FileName"].astype(str).tolist()
    names = [name for name, _ in collapsed_videos(per_video)][:n_examples]
    return names + [n for n in V.select_examples(per_video, n_examples) if n not in names]


@dataclass
class VideoInput:
    """One video's arrays for :func:`echodfkd.evaluation.video.write_video`.

    ``frames``: uint8 (T, 112, 112) grey echo; ``student``, ``teacher``: uint8 (T, 112, 112)
    soft masks round(p*255), ``teacher`` None where the teacher does not label the source;
    ``traced``: {frame: bool (112, 112) human tracing}; ``found``: {"ED"/"ES": [frames]} found
    on the student's area curve near the traced frames; ``traced_frames``: {"ED"/"ES": frame};
    ``fps``: frames per second (float > 0). Frame indices are 0-based within the video.
    """

    name: str
    frames: np.ndarray
    student: np.ndarray
    teacher: np.ndarray | None
    traced: dict[int, np.ndarray]
    found: dict[str, list[int]]
    traced_frames: dict[str, int]
    fps: float


def _frame_number(value) -> int | None:
    """A frame index from a per-video cell (NaN, -1 or missing: None)."""
    if value is None or pd.isna(value):
        return None
    return int(value) if int(value) >= 0 else None


def video_inputs(frames: FrameStore, pred: MaskStore, teacher: MaskStore | None,
                 per_video: pd.DataFrame, names: Iterable[str]) -> Iterator[VideoInput]:
    """Yield a :class:`VideoInput` per FileName of ``names`` (rows of ``per_video``, the
    evaluate stage's table, whose ``pred_ed_frame``/``pred_es_frame`` give the found frames),
    reading one video at a time from the stores (memory of one video)."""
    rows = {str(n): i for i, n in enumerate(frames.index["FileName"].astype(str))}
    table = per_video.set_index(per_video["FileName"].astype(str))
    tracings = _tracings_by_video(frames)
    for name in names:
        if name not in rows or name not in table.index:
            raise InputError(f"{frames.path!r}: no video {name!r} to render (not in the store "
                             f"or the per-video table)")
        i = rows[name]
        v = frames.index.iloc[i]
        start, stop = int(v.start), int(v.stop)
        chosen, _ = _resolve_tracing(tracings.get(i), stop - start)
        rec = table.loc[name]
        found = {}
        for phase in ("ED", "ES"):
            f = _frame_number(rec.get(f"pred_{phase.lower()}_frame"))
            if f is not None:
                found[phase] = [f]
        fps = float(v.FPS) if pd.notna(v.FPS) and float(v.FPS) > 0 else None
        if fps is None:
            log.info("%s: FileList FPS is %r, playing its video at %g fps", name, v.FPS,
                     FALLBACK_FPS)
        yield VideoInput(
            name=name, frames=np.asarray(frames.frames[start:stop]),
            student=np.asarray(pred.masks[start:stop]),
            teacher=None if teacher is None else np.asarray(teacher.masks[start:stop]),
            traced={f: np.asarray(frames.traced_masks[r]) > 0 for f, r in chosen.values()},
            found=found, traced_frames={p: f for p, (f, _) in chosen.items()},
            fps=fps or FALLBACK_FPS)


def write_videos(out: str | os.PathLike, inputs: Iterable[VideoInput], *, threshold: float,
                 progress: bool = True) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Render and encode every video of ``inputs`` into the folder ``out``, replacing it as a
    whole (built under ``<out>.partial``, then renamed).

    Files are named ``<safe_video_name(FileName)>.mp4`` (``.webp`` where no H.264 encoder is
    installed). Returns ({FileName: file name in ``out``}, [(FileName, why not rendered)]): a
    video of fewer than 2 frames is not rendered but listed.
    """
    out = Path(out)
    tmp = partial_path(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written, skipped = {}, []
    for item in tqdm(inputs, desc="videos", unit="video", disable=not progress):
        if len(item.frames) < 2:
            skipped.append((item.name, f"{len(item.frames)} frame(s): a video needs at least 2"))
            continue
        path = V.write_video(tmp / f"{safe_video_name(item.name)}.mp4", item.frames,
                             item.student, item.teacher, item.traced, threshold=threshold,
                             found=item.found, traced_frames=item.traced_frames, fps=item.fps)
        written[item.name] = path.name
    commit(tmp, out)
    return written, skipped


def read_training_curves(folder: str | os.PathLike) -> pd.DataFrame | None:
    """The training curves the train stage logged with dvclive: ``<folder>/<series>.tsv`` of
    :data:`TRAINING_SERIES` (tab-separated ``step``, value), joined on ``step``. Returns None
    when the folder holds none of them (a student trained elsewhere); a series that is
    present but unreadable raises :class:`InputError` naming the file."""
    folder = Path(folder)
    merged = None
    for series in TRAINING_SERIES:
        path = folder / f"{series}.tsv"
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path, sep="\t")
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable training curve ({e})") from e
        if list(df.columns) != ["step", series]:
            raise InputError(f"{path}: expected the columns step, {series}; got "
                             f"{list(df.columns)}")
        merged = df if merged is None else merged.merge(df, on="step", how="outer")
    return None if merged is None else merged.sort_values("step", kind="mergesort")
