"""Stage infer@<student>-<source>: run a trained student over the videos of a frame store that
the evaluation reads (splits ``evaluate.split`` and ``evaluate.agreement_split``), writing its
soft masks (uint8 round(p*255), aligned with the frames) to a mask store of its own.

    python stages/infer.py --student models/students/<name>/student.pt \
        --frames data/frames/<src>.zarr --out data/student/<name>/<src>.zarr

Reads params.yaml: ``infer``, ``train.threads``, ``evaluate.split``,
``evaluate.agreement_split``, ``ingest.shard_frames`` and ``ingest.chunk_frames``.
"""

from __future__ import annotations

import argparse

from echodfkd.cli import read_params, run
from echodfkd.runtime import set_threads
from echodfkd.student.infer import InferConfig, infer_store

PARAMS = ("infer", "train.threads", "evaluate.split", "evaluate.agreement_split",
          "ingest.shard_frames", "ingest.chunk_frames")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", required=True, help="student.pt written by stages/train.py")
    p.add_argument("--frames", required=True, help="frame store to segment")
    p.add_argument("--out", required=True, help="mask store to write")
    a = p.parse_args(argv)
    params = read_params(PARAMS)
    config = params.config("infer", InferConfig)
    set_threads(params.value("train.threads", int))
    splits = [params.value(k, str) for k in ("evaluate.split", "evaluate.agreement_split")]
    infer_store(a.student, a.frames, a.out, chunk=config.chunk, window=config.window,
                warmup=config.warmup,
                videos_per_batch=config.videos_per_batch or None, device=config.device,
                shard_frames=params.value("ingest.shard_frames", int),
                chunk_frames=params.value("ingest.chunk_frames", int), splits=splits)


if __name__ == "__main__":
    run(main)
