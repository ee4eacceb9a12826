"""Stage train@<name>: train a ConvLSTM student on cached teacher masks (echodfkd/student/train.py).

    python stages/train.py --name student --shape student --frames-dir data/frames \
        --masks-dir data/teacher --out models/students/student --live dvclive/student

Reads params.yaml: ``seed``, ``train`` (the recipe) and the section ``--shape`` names (the
student's architecture: ``student`` or ``grid.<name>``). Writes ``--out``:
``student.pt`` (weights, shape, meta), ``student.onnx`` (one time step, state in and out:
echodfkd/student/export.py), ``train.json`` (best-epoch metrics, flat, for ``dvc metrics``) and
``cost.json`` (weights, flops, blocks, layers_per_block, hidden); curves go to ``--live``.
The per-epoch checkpoint ``<out>.ckpt/last.pt`` (outside
the output, so that DVC does not delete it before a rerun) lets an interrupted run resume.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from echodfkd.cli import read_params, run
from echodfkd.cost import count_weights, flops_per_frame
from echodfkd.data.store import teacher_covers, write_text_atomic
from echodfkd.runtime import set_threads
from echodfkd.student.clips import parse_sources
from echodfkd.student.export import ONNX_NAME, export_student_onnx
from echodfkd.student.files import save_student
from echodfkd.student.shape import StudentShape
from echodfkd.student.train import TrainConfig, train_student

PARAMS = ("seed", "train")  # plus the --shape section
METRICS = ("best_epoch", "val_loss", "val_dice_vs_teacher", "epochs_run", "weights",
           "train_videos", "val_videos")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="the student's stage name")
    p.add_argument("--shape", required=True, help="params section of its shape")
    for name in ("--frames-dir", "--masks-dir", "--out", "--live"):
        p.add_argument(name, required=True, type=Path)
    a = p.parse_args(argv)
    params = read_params(PARAMS + (a.shape,))
    config = params.config("train", TrainConfig)
    shape = params.config(a.shape, StudentShape)
    set_threads(config.threads)

    def covers(source: str) -> bool:  # the teacher labels it: its mask store holds masks
        return teacher_covers(a.masks_dir / f"{source}.zarr")

    train = parse_sources(config.sources, a.frames_dir, a.masks_dir, covers,
                          what="train.sources")
    val = parse_sources(config.val, a.frames_dir, a.masks_dir, covers, weights=False,
                        what="train.val")
    out = a.out
    result = train_student(train, val, shape, config, params.value("seed", int),
                           out.with_name(f"{out.name}.ckpt") / "last.pt", live_dir=a.live)
    save_student(out / "student.pt", result.model, {**result.meta, "name": a.name})
    write_text_atomic(out / "train.json",
                      json.dumps({k: result.meta[k] for k in METRICS}, indent=2) + "\n")
    cost = {"weights": count_weights(result.model),
            "flops": flops_per_frame(result.model, "student"),
            **{k: v for k, v in asdict(shape).items() if k in ("blocks", "layers_per_block",
                                                              "hidden")}}
    write_text_atomic(out / "cost.json", json.dumps(cost, indent=2) + "\n")
    export_student_onnx(result.model, out / ONNX_NAME)  # for deployment (onnxruntime)


if __name__ == "__main__":
    run(main)
