"""Stage: run a trained student over the videos of a frame store (those of --splits), writing
its soft masks (uint8 round(p*255), aligned with the frames) to a mask store of its own.

    python stages/infer.py --student models/students/<name>/student.pt \
        --frames data/frames/<src>.zarr --out data/student/<name>/<src>.zarr \
        --splits "TEST VAL" --threads 0 --chunk 64 --videos-per-batch 0 --device auto \
        --shard-frames 2048 --chunk-frames 64        (every option is required)
"""

from __future__ import annotations

import argparse

import torch

from echodfkd.cli import run, words
from echodfkd.student.infer import infer_store


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--student", required=True, help="student.pt written by stages/train.py")
    p.add_argument("--frames", required=True, help="frame store to segment")
    p.add_argument("--out", required=True, help="mask store to write")
    p.add_argument("--splits", required=True,
                   help="space-separated splits whose videos are segmented, e.g. 'TEST VAL'")
    p.add_argument("--threads", type=int, required=True, help="torch CPU threads (0: all)")
    p.add_argument("--chunk", type=int, required=True, help="frames per forward call")
    p.add_argument("--videos-per-batch", type=int, required=True,
                   help="videos run together (0: auto, 1 on CPU, 8 on CUDA)")
    p.add_argument("--device", required=True, help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--shard-frames", type=int, required=True)
    p.add_argument("--chunk-frames", type=int, required=True)
    a = p.parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    infer_store(a.student, a.frames, a.out, chunk=a.chunk,
                videos_per_batch=a.videos_per_batch or None, device=a.device,
                shard_frames=a.shard_frames, chunk_frames=a.chunk_frames,
                splits=words([a.splits]))


if __name__ == "__main__":
    run(main)
