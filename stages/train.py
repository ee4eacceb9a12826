"""Stage: train the ConvLSTM student on cached teacher masks (see echodfkd/train.py).

Writes ``<out>/student.pt`` (weights, config, meta) and ``<out>/train.json`` (best-epoch
metrics, flat, for ``dvc metrics``); curves go to ``--live``; the per-epoch checkpoint
``--checkpoint`` (default ``<out>.ckpt/last.pt``, outside ``<out>`` so that DVC does not delete it
before a rerun) lets an interrupted run resume.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from echodfkd.cli import boolean, words
from echodfkd.cost import count_weights, flops_per_frame
from echodfkd.train import Source, TrainConfig, save_student, train_student
from echodfkd.store import write_text_atomic


def _opt_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", required=True, help="frame store of the main source")
    p.add_argument("--masks", required=True, help="teacher mask store aligned with --frames")
    p.add_argument("--splits", nargs="+", default=["TRAIN"], help="training splits")
    p.add_argument("--val-split", nargs="+", default=["VAL"], help="validation splits")
    p.add_argument("--extra-frames", help="optional second training source (frame store); "
                   "empty string: none")
    p.add_argument("--extra-masks", help="teacher mask store aligned with --extra-frames")
    p.add_argument("--extra-splits", nargs="+", default=["TRAIN"])
    p.add_argument("--out", required=True, help="output folder for student.pt, train.json")
    p.add_argument("--checkpoint", help="per-epoch checkpoint (default <out>.ckpt/last.pt)")
    p.add_argument("--live", help="dvclive folder for the curves")
    d = TrainConfig()
    for name in ("blocks", "layers_per_block", "hidden", "kernel_size", "sequence_length",
                 "epochs", "steps_per_epoch", "patience", "seed", "val_clips_per_video"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    # --steps-per-epoch 0: one pass, ceil(training videos / batch) steps per epoch
    p.add_argument("--batch", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--skip", type=boolean, nargs="?", const=True, default=d.skip,
                   help="U-Net skip connections (--skip, or --skip true/false)")
    p.add_argument("--half-resolution", type=boolean, nargs="?", const=True,
                   default=d.half_resolution,
                   help="train at 56x56 (--half-resolution, or --half-resolution true/false)")
    p.add_argument("--augment", type=boolean, nargs="?", const=True, default=d.augment,
                   help="random gain/gamma/speckle noise on training clips (true/false)")
    p.add_argument("--short-videos", choices=["skip", "pad"], default=d.short_videos)
    p.add_argument("--filter-column", help="FileList column to filter training videos on "
                   "(keeps --filter-min <= value <= --filter-max; empty string: no filter)")
    p.add_argument("--filter-min", type=_opt_float, help="empty string: no lower bound")
    p.add_argument("--filter-max", type=_opt_float, help="empty string: no upper bound")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (0: torch's "
                   "default, all cores; more threads were 5x slower on a busy 2-core machine)")
    a = p.parse_args(argv)
    for name in ("splits", "val_split", "extra_splits"):  # also accept "TRAIN VAL" as one word
        setattr(a, name, words(getattr(a, name)))
    return a


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    a = parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    if bool(a.extra_frames) != bool(a.extra_masks):
        raise SystemExit("--extra-frames and --extra-masks go together")
    config = TrainConfig(
        blocks=a.blocks, layers_per_block=a.layers_per_block, hidden=a.hidden,
        kernel_size=a.kernel_size, skip=a.skip, sequence_length=a.sequence_length,
        batch_size=a.batch, lr=a.lr, epochs=a.epochs,
        steps_per_epoch=a.steps_per_epoch if a.steps_per_epoch > 0 else None,
        patience=a.patience, half_resolution=a.half_resolution, augment=a.augment, seed=a.seed,
        val_clips_per_video=a.val_clips_per_video, short_videos=a.short_videos,
        filter_column=a.filter_column or None, filter_min=a.filter_min, filter_max=a.filter_max)
    train = [Source(a.frames, a.masks, tuple(a.splits))]
    if a.extra_frames:
        train.append(Source(a.extra_frames, a.extra_masks, tuple(a.extra_splits)))
    val = [Source(a.frames, a.masks, tuple(a.val_split))]
    out = Path(a.out)
    ckpt = Path(a.checkpoint) if a.checkpoint else out.with_name(out.name + ".ckpt") / "last.pt"
    result = train_student(train, val, config, ckpt, live_dir=a.live)
    save_student(out / "student.pt", result.model, result.meta)
    keys = ("best_epoch", "val_loss", "val_dice_vs_teacher", "epochs_run", "weights",
            "train_videos", "val_videos")
    write_text_atomic(out / "train.json",
                      json.dumps({k: result.meta[k] for k in keys}, indent=2) + "\n")
    cost = {"weights": count_weights(result.model),
            "flops": flops_per_frame(result.model, "student"),
            "blocks": a.blocks, "layers_per_block": a.layers_per_block, "hidden": a.hidden}
    write_text_atomic(out / "cost.json", json.dumps(cost, indent=2) + "\n")


if __name__ == "__main__":
    main()
