"""Stage: run the trained student over the videos of a frame store (all, or those of --splits),
writing its soft masks (uint8 round(p*255), aligned with the frames) to a mask store of its own."""

from __future__ import annotations

import argparse

import torch

from echodfkd.cli import words
from echodfkd.student_infer import infer_store


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--student", required=True, help="student.pt written by stages/train.py")
    p.add_argument("--frames", required=True, help="frame store to segment")
    p.add_argument("--out", required=True, help="mask store to write")
    p.add_argument("--splits", nargs="*", default=None,
                   help="only the videos of these splits (words may hold several: 'TEST VAL')")
    p.add_argument("--chunk", type=int, default=64, help="frames per forward call")
    p.add_argument("--videos-per-batch", type=int, default=None,
                   help="videos run together (default 1 on CPU, 8 on CUDA)")
    p.add_argument("--shard-frames", type=int, default=2048)
    p.add_argument("--chunk-frames", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default CUDA when available)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads for torch (0: torch's default, all cores)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    a = parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    splits = None if a.splits is None else words(a.splits)
    infer_store(a.student, a.frames, a.out, chunk=a.chunk, videos_per_batch=a.videos_per_batch,
                device=a.device, shard_frames=a.shard_frames, chunk_frames=a.chunk_frames,
                splits=splits)


if __name__ == "__main__":
    main()
