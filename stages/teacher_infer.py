"""Teacher inference stage: run the (fused) teacher over every frame of a source.

    python stages/teacher_infer.py --teacher models/teacher --frames data/frames/<src>.zarr \
        --out data/teacher/<src>.zarr --batch 64 --amp true --scheduler ""

Writes the mask store ``--out`` (uint8 masks = p * 255, aligned with the frames) atomically;
an interrupted run resumes from ``<out>.partial``, skipping finished blocks.
"""

from __future__ import annotations

import argparse

from echodfkd.cli import boolean
from echodfkd.teacher import infer_teacher, load_members


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher directory (teacher stage)")
    ap.add_argument("--frames", required=True, help="frame store of the source")
    ap.add_argument("--out", required=True, help="mask store to write")
    ap.add_argument("--batch", type=int, default=64, help="frames per forward pass")
    ap.add_argument("--amp", type=boolean, default=False,
                    help="true: bf16/fp16 autocast on CUDA (no effect on the CPU)")
    ap.add_argument("--scheduler", default="",
                    help="dask.distributed scheduler address; '' runs local threads")
    ap.add_argument("--block-frames", type=int, default=None,
                    help="frames per task = mask shard (default: the frame store's shard)")
    ap.add_argument("--workers", type=int, default=1, help="local threads ('' scheduler)")
    ap.add_argument("--device", default="auto", help="'auto': CUDA when available")
    args = ap.parse_args(argv)

    infer_teacher(load_members(args.teacher), args.frames, args.out, batch_size=args.batch,
                  block_frames=args.block_frames, device=args.device, amp=args.amp,
                  scheduler=args.scheduler, workers=args.workers)


if __name__ == "__main__":
    main()
