"""Benchmark: how should a student trained on short clips segment long videos? (issue 17)

A student is trained on clips of ``train.sequence_length`` frames (16 by default), each from a
fresh ConvLSTM state; EchoNet-Dynamic videos run 100-400+ frames. This script segments the
same long videos under several inference regimes and scores each exactly as the evaluate stage
does, side by side:

    carried    infer.window 0: one state carried over the whole video
    w<W>+<U>   windows of W frames, each from a fresh state warmed on the U frames before it

It runs on the pipeline's own artifacts (run ``dvc repro`` first): the frame store of
``evaluate.source`` (by default the real phantom, whose TEST videos take EchoNet-like lengths,
64-700 frames), its teacher masks, and the trained students' files. For each student and
regime, ``echodfkd.student.infer.infer_store`` writes a mask store into a temporary folder and
``echodfkd.evaluation.evaluate.evaluate_source`` scores it with params.yaml's evaluate settings.
Columns:

    dice          mean Dice at the traced ED and ES frames (higher is better)
    worst         the lowest per-video Dice (mean of its ED and ES), and
    med           the median per-video Dice: worst << med means some videos fall apart
    afd           mean aFD, frames
    ef_mae        volume-EF mean absolute error, EF points
    late          mean per-frame Dice against the teacher over frames >= 64 of the videos
                  longer than 64 frames (where a carried state has run beyond every clip seen)
    early         the same over their first 64 frames
    coll          n_collapsed (videos flagged by the evaluate.collapse_* limits)
    cost          wall time of inference relative to the carried regime (same machine, run
                  back to back; < 1 is faster)

The last line states the headline: the chosen regime's worst-video Dice and late agreement
against the carried regime's, and its cost ratio.

    python bench/long_videos.py                         # every student, default regimes
    python bench/long_videos.py --students student --regimes 0+0 16+8 32+16
    python bench/long_videos.py --students student --train-long 48   # + (c): the main student
                                                         # trained on 48-frame clips
    python bench/long_videos.py --student-file other=path/to/student.pt
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EARLY = 64          # frames: the default phantom's video length, beyond every training clip


def _regime(text: str) -> tuple[int, int]:
    try:
        window, warmup = (int(v) for v in text.split("+"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"regime {text!r} is not <window>+<warmup>, e.g. 16+8")
    return window, warmup


def _label(window: int, warmup: int) -> str:
    return "carried" if window == 0 else f"w{window}+{warmup}"


def late_agreement(frames, pred, teacher, rows, threshold: float) -> tuple[float, float]:
    """Mean per-frame Dice of ``pred`` against ``teacher`` (binarised at ``threshold``) over
    frames [0, EARLY) and [EARLY, T) of the videos ``rows`` longer than EARLY frames."""
    from echodfkd.evaluation.metrics import binarize
    from echodfkd.overlap import dice_per_frame

    early, late = [], []
    for i in rows:
        start, stop = (int(frames.index.loc[i, c]) for c in ("start", "stop"))
        if stop - start <= EARLY:
            continue
        d = dice_per_frame(binarize(pred.masks[start:stop], threshold),
                           binarize(teacher.masks[start:stop], threshold))
        early.append(d[:EARLY])
        late.append(d[EARLY:])
    if not late:
        return math.nan, math.nan
    return float(np.concatenate(early).mean()), float(np.concatenate(late).mean())


def train_long(frames: int, tmp: Path) -> tuple[str, Path, float]:
    """Train the main student (params.yaml ``student``, ``train``, ``seed``) on clips of
    ``frames`` frames, ``train.batch * train.sequence_length // frames`` clips per step (at
    least 1), as the train stage does. Returns its name, file and training seconds."""
    from dataclasses import replace

    from echodfkd.cli import read_params
    from echodfkd.data.store import teacher_covers
    from echodfkd.student.clips import parse_sources
    from echodfkd.student.files import save_student
    from echodfkd.student.shape import StudentShape
    from echodfkd.student.train import TrainConfig, train_student

    params = read_params(("seed", "train", "student"), ROOT / "params.yaml")
    config = params.config("train", TrainConfig)
    config = replace(config, sequence_length=frames,
                     batch=max(1, config.batch * config.sequence_length // frames))
    shape = params.config("student", StudentShape)
    frames_dir, masks_dir = ROOT / "data" / "frames", ROOT / "data" / "teacher"

    def covers(source: str) -> bool:
        return teacher_covers(masks_dir / f"{source}.zarr")

    train = parse_sources(config.sources, frames_dir, masks_dir, covers, what="train.sources")
    val = parse_sources(config.val, frames_dir, masks_dir, covers, weights=False,
                        what="train.val")
    name = f"student-L{frames}"
    t0 = time.perf_counter()
    result = train_student(train, val, shape, config, params.value("seed", int),
                           tmp / f"{name}.ckpt" / "last.pt", progress=False)
    secs = time.perf_counter() - t0
    path = tmp / name / "student.pt"
    save_student(path, result.model, {**result.meta, "name": name})
    return name, path, secs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", nargs="*", default=None,
                    help="students of params.yaml's `students:` (default: all)")
    ap.add_argument("--student-file", action="append", default=[], metavar="NAME=PATH",
                    help="another student file to compare (repeatable)")
    ap.add_argument("--regimes", nargs="+", type=_regime,
                    default=[(0, 0), (16, 8), (32, 16), (16, 0), (64, 16)],
                    metavar="WINDOW+WARMUP", help="0+0 is the carried state")
    ap.add_argument("--train-long", type=int, default=0, metavar="FRAMES",
                    help="also train the main student on clips of FRAMES frames (regime (c): "
                         "long-horizon training; batch scaled to keep frames per step) and "
                         "compare it carried and windowed over FRAMES")
    ap.add_argument("--headline", type=_regime, default=(16, 8),
                    help="the regime compared with the carried one on the last line")
    args = ap.parse_args(argv)

    import torch
    from echodfkd.cli import read_params
    from echodfkd.data.store import open_frames, open_masks
    from echodfkd.evaluation.evaluate import EvaluateConfig, evaluate_source, _split_rows
    from echodfkd.student.files import trained_horizon
    from echodfkd.student.infer import InferConfig, infer_store

    params = read_params(("evaluate", "infer", "ingest", "students"), ROOT / "params.yaml")
    ev = params.config("evaluate", EvaluateConfig)
    source, split, threshold, limits = ev.source, ev.split, ev.threshold, ev.collapse
    frames_path = ROOT / "data" / "frames" / f"{source}.zarr"
    teacher_path = ROOT / "data" / "teacher" / f"{source}.zarr"
    students = {name: ROOT / "models" / "students" / name / "student.pt"
                for name in (args.students or list(params["students"]))}
    for spec in args.student_file:
        name, _, path = spec.partition("=")
        students[name] = Path(path)
    missing = [str(p) for p in [frames_path, teacher_path, *students.values()] if not p.exists()]
    if missing:
        sys.exit(f"missing pipeline artifacts {missing}: run `dvc repro` first")
    if (0, 0) not in args.regimes:
        args.regimes.insert(0, (0, 0))
    regimes = {name: list(args.regimes) for name in students}

    torch.manual_seed(0)
    frames = open_frames(frames_path)
    teacher = open_masks(teacher_path, frames)
    rows = _split_rows(frames, split)
    lengths = (frames.index.loc[rows, "stop"] - frames.index.loc[rows, "start"]).to_numpy()
    print(f"{source} {split}: {len(rows)} videos, {int(lengths.min())}-{int(lengths.max())} "
          f"frames (median {int(np.median(lengths))}), {int(lengths.sum())} frames; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    infer = params.config("infer", InferConfig)
    layout = {k: params.value(f"ingest.{k}", int) for k in ("shard_frames", "chunk_frames")}
    header = (f"{'student':<12} {'regime':<9} {'dice':>6} {'worst':>6} {'med':>6} {'afd':>5} "
              f"{'ef_mae':>6} {'early':>6} {'late':>6} {'coll':>4} {'cost':>5}")
    results: dict[tuple[str, tuple[int, int]], dict] = {}
    with tempfile.TemporaryDirectory(prefix="long_videos_") as tmp:
        if args.train_long:
            name, path, secs = train_long(args.train_long, Path(tmp))
            print(f"\n{name}: trained in {secs:.0f} s")
            students[name] = path
            regimes[name] = [(0, 0), (args.train_long, args.train_long // 2)]
        for name, path in students.items():
            print(f"\n{name}: trained on {trained_horizon(path)}-frame clips ({path})")
            print(header)
            base_time = None
            for window, warmup in regimes[name]:
                out = Path(tmp) / f"{name}-{window}-{warmup}.zarr"
                t0 = time.perf_counter()
                infer_store(path, frames_path, out, chunk=infer.chunk, window=window,
                            warmup=warmup, videos_per_batch=None, device=infer.device,
                            shard_frames=layout["shard_frames"],
                            chunk_frames=layout["chunk_frames"], progress=False,
                            splits=[split])
                secs = time.perf_counter() - t0
                base_time = base_time or secs
                pred = open_masks(out, frames)
                per_video, summary = evaluate_source(frames, pred, teacher=teacher, split=split,
                                                     threshold=threshold, collapse=limits,
                                                     progress=False)
                video_dice = per_video[["dice_ed", "dice_es"]].mean(axis=1).dropna()
                early, late = late_agreement(frames, pred, teacher, rows, threshold)
                r = {"dice": summary["dice"], "worst": float(video_dice.min()),
                     "med": float(video_dice.median()), "afd": summary["afd"],
                     "ef_mae": summary["ef_mae"], "early": early, "late": late,
                     "coll": summary["n_collapsed"], "cost": secs / base_time}
                results[(name, (window, warmup))] = r
                print(f"{name:<12} {_label(window, warmup):<9} {r['dice']:6.3f} "
                      f"{r['worst']:6.3f} {r['med']:6.3f} {r['afd']:5.2f} {r['ef_mae']:6.1f} "
                      f"{r['early']:6.3f} {r['late']:6.3f} {r['coll']:4d} {r['cost']:5.2f}",
                      flush=True)
    name = next(iter(students))
    carried, chosen = results[(name, (0, 0))], results.get((name, args.headline))
    if chosen is None:
        print(f"headline regime {_label(*args.headline)} was not run")
        return 1
    # a carried state that lost a whole video scores 0: a ratio to it says nothing
    ratio = (f"x{chosen['worst'] / carried['worst']:.2f}" if carried['worst'] >= 0.01
             else "the carried state lost a video")
    print(f"\nheadline ({name}): {_label(*args.headline)} vs carried: worst-video Dice "
          f"{chosen['worst']:.3f} vs {carried['worst']:.3f} ({ratio}), late agreement "
          f"{chosen['late']:.3f} vs {carried['late']:.3f}, n_collapsed {chosen['coll']} vs "
          f"{carried['coll']}, inference time x{chosen['cost']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
