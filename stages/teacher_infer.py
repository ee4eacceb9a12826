"""Teacher inference stage: run the (fused) teacher over every frame of a source.

    python stages/teacher_infer.py --teacher models/teacher --frames data/frames/<src>.zarr \
        --out data/teacher/<src>.zarr --source <src>

Reads params.yaml ``teacher_infer`` (batch, amp, workers), ``teacher.device``,
``ingest.scheduler`` and ``sources.<src>.teacher``. When that is false (an evaluation-only
source) it writes a mask store holding no masks, only that record, so that later stages leave
the teacher-referenced results of that source out (they never read a store left by another
configuration).

Writes the mask store ``--out`` (uint8 masks = p * 255, aligned with the frames) atomically;
an interrupted run resumes from ``<out>.partial``, skipping finished blocks, when its inputs
(frames, teacher members, imported output files) are unchanged.
"""

from __future__ import annotations

import argparse

from echodfkd.cli import read_params, run
from echodfkd.runtime import teacher_batch
from echodfkd.data.store import open_frames, write_uncovered_masks
from echodfkd.teacher.infer import TeacherInferConfig, infer_teacher
from echodfkd.teacher.members import load_members

PARAMS = ("teacher_infer", "teacher.device", "ingest.scheduler")  # + sources.<src>.teacher


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, help="teacher directory (teacher stage)")
    ap.add_argument("--frames", required=True, help="frame store of the source")
    ap.add_argument("--out", required=True, help="mask store to write")
    ap.add_argument("--source", required=True, help="the source's name in params.yaml")
    args = ap.parse_args(argv)
    covered = f"sources.{args.source}.teacher"
    params = read_params(PARAMS + (covered,))
    cfg = params.config("teacher_infer", TeacherInferConfig)
    device = params.value("teacher.device", str)
    if not params.value(covered, bool):
        write_uncovered_masks(args.out, open_frames(args.frames),
                              "the teacher does not label this source (sources.<source>.teacher "
                              "is false): an evaluation-only source")
        return

    infer_teacher(load_members(args.teacher), args.frames, args.out,
                  batch_size=teacher_batch(cfg.batch, device), device=device, amp=cfg.amp,
                  scheduler=params.value("ingest.scheduler", str), workers=cfg.workers)


if __name__ == "__main__":
    run(main)
