"""Stage: train a ConvLSTM student on cached teacher masks (see echodfkd/student/train.py).

    python stages/train.py --name student --sources "synthetic:TRAIN@3 real:TRAIN@1" \
        --val synthetic:VAL --frames-dir data/frames --masks-dir data/teacher \
        --filter-column "" --filter-min "" --filter-max "" \
        --out models/students/student --checkpoint models/students/student.ckpt/last.pt \
        --live dvclive/student ...   (every option is required; values come from params.yaml)

Writes ``<out>/student.pt`` (weights, config, meta), ``<out>/student.onnx`` (ONNX export of one
time step, state in and out: echodfkd/student/export.py; chosen over TorchScript by measurement), ``<out>/train.json`` (best-epoch metrics,
flat, for ``dvc metrics``) and ``<out>/cost.json`` (weights, flops, blocks, layers_per_block,
hidden); curves go to ``--live`` (empty: none). The per-epoch ``--checkpoint`` (outside
``<out>``, so that DVC does not delete it before a rerun) lets an interrupted run resume.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from echodfkd.cli import boolean, run
from echodfkd.student.clips import parse_sources
from echodfkd.cost import count_weights, flops_per_frame
from echodfkd.student.export import ONNX_NAME, export_student_onnx
from echodfkd.data.store import teacher_covers, write_text_atomic
from echodfkd.student.files import save_student
from echodfkd.student.train import LoaderConfig, TrainConfig, train_student


def _opt_float(text: str) -> float | None:
    return float(text) if text.strip() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("name", "sources", "val", "frames-dir", "masks-dir", "filter-column", "out",
                 "checkpoint", "live"):
        p.add_argument("--" + name, required=True)
    for name in ("blocks", "layers-per-block", "hidden", "kernel-size", "sequence-length",
                 "batch", "epochs", "steps-per-epoch", "patience", "seed", "threads",
                 "val-clips-per-video", "loader-workers", "burn-in"):
        p.add_argument("--" + name, type=int, required=True)  # steps-per-epoch 0: one pass
    for name in ("lr", "cache-mb", "stream-above-mb", "augment-strength", "sharpen",
                 "dice-weight", "ema"):
        p.add_argument("--" + name, type=float, required=True)
    for name in ("filter-min", "filter-max"):
        p.add_argument("--" + name, type=_opt_float, required=True, help="empty: no bound")
    for name in ("skip", "half-resolution", "augment", "amp"):
        p.add_argument("--" + name, type=boolean, required=True)
    p.add_argument("--short-videos", choices=["skip", "pad"], required=True)
    p.add_argument("--loss", choices=["bce", "bce_dice"], required=True)
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], required=True)
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    # the teacher labels a source when its mask store holds masks (store.teacher_covers)
    def covers(name: str) -> bool:
        return teacher_covers(Path(a.masks_dir) / f"{name}.zarr")

    train = parse_sources(a.sources, a.frames_dir, a.masks_dir, covers, what="--sources")
    val = parse_sources(a.val, a.frames_dir, a.masks_dir, covers, weights=False, what="--val")
    config = TrainConfig(
        blocks=a.blocks, layers_per_block=a.layers_per_block, hidden=a.hidden,
        kernel_size=a.kernel_size, skip=a.skip, sequence_length=a.sequence_length,
        batch_size=a.batch, lr=a.lr, epochs=a.epochs,
        steps_per_epoch=a.steps_per_epoch if a.steps_per_epoch > 0 else None,
        patience=a.patience, half_resolution=a.half_resolution, augment=a.augment, seed=a.seed,
        val_clips_per_video=a.val_clips_per_video, short_videos=a.short_videos,
        filter_column=a.filter_column or None, filter_min=a.filter_min, filter_max=a.filter_max,
        loss=a.loss, dice_weight=a.dice_weight, lr_schedule=a.lr_schedule, burn_in=a.burn_in,
        augment_strength=a.augment_strength, sharpen=a.sharpen, ema=a.ema)
    loader = LoaderConfig(stream_above_mb=a.stream_above_mb, cache_mb=a.cache_mb,
                          workers=a.loader_workers, amp=a.amp)
    result = train_student(train, val, config, a.checkpoint, loader=loader,
                           live_dir=a.live or None)
    out = Path(a.out)
    save_student(out / "student.pt", result.model, {**result.meta, "name": a.name})
    keys = ("best_epoch", "val_loss", "val_dice_vs_teacher", "epochs_run", "weights",
            "train_videos", "val_videos")
    write_text_atomic(out / "train.json",
                      json.dumps({k: result.meta[k] for k in keys}, indent=2) + "\n")
    cost = {"weights": count_weights(result.model),
            "flops": flops_per_frame(result.model, "student"),
            "blocks": a.blocks, "layers_per_block": a.layers_per_block, "hidden": a.hidden}
    write_text_atomic(out / "cost.json", json.dumps(cost, indent=2) + "\n")
    export_student_onnx(result.model, out / ONNX_NAME)  # for deployment (onnxruntime)


if __name__ == "__main__":
    run(main)
