"""Evaluate one student on one source: Dice at ED/ES, aFD, EF (volumes and areas), teacher
agreement, annotation-free scores, the teacher's own scores, plots and its Pareto record.

    python stages/evaluate.py --name student --frames-dir data/frames \
        --pred-dir data/student/student --teacher-dir data/teacher \
        --student-cost models/students/student/cost.json \
        --teacher-cost models/teacher/cost.json --live dvclive/student \
        --out reports/students/student --videos reports/videos/student

Reads params.yaml ``evaluate``. Writes into --out (replaced as a whole): metrics.json,
per_video.csv, area_curves.csv, point.json, plots/area_curves.png, plots/overlays.png and
index.html, the student's page (echodfkd.evaluation.evaluate.write_report); into --videos
(replaced as a whole) one segmentation video per selected video (echodfkd.evaluation.report),
linked from the page. The training curves on the page are read from --live/plots/metrics.
Teacher masks are read only for sources the teacher labels (their teacher mask store holds
masks, see store.teacher_covers); other sources are evaluation-only (human-referenced scores
only; the log says what is left out and why).
"""

import argparse
import logging
import os
from pathlib import Path

from echodfkd.evaluation import evaluate as E
from echodfkd.evaluation import pareto
from echodfkd.evaluation import report as R
from echodfkd.evaluation.html import collapsed_videos
from echodfkd.cli import read_params, run
from echodfkd.data.store import open_frames, teacher_covers

log = logging.getLogger("evaluate")

PARAMS = ("evaluate",)


def store(folder: str, source: str) -> Path:
    """``<folder>/<source>.zarr``: where every stage keeps a source's frames or masks."""
    return Path(folder) / f"{source}.zarr"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True, help="the student's stage name")
    for opt in ("--frames-dir", "--pred-dir", "--teacher-dir", "--student-cost",
                "--teacher-cost", "--live", "--out", "--videos"):
        ap.add_argument(opt, required=True)
    a = ap.parse_args(argv)
    cfg = read_params(PARAMS).config("evaluate", E.EvaluateConfig)
    covered = [s for s in dict.fromkeys((cfg.source, cfg.agreement_source))
               if teacher_covers(store(a.teacher_dir, s))]

    frames = open_frames(store(a.frames_dir, cfg.source))
    pred = E.open_aligned(store(a.pred_dir, cfg.source), frames)
    teacher = None
    if cfg.source in covered:
        teacher = E.open_aligned(store(a.teacher_dir, cfg.source), frames)
    else:
        log.info("source %r is not labelled by the teacher (labelled: %s): no teacher masks, "
                 "so teacher_*, "
                 "*_teacher, *_teacher_ref and agreement_%s are not reported (human-referenced "
                 "scores are)", cfg.source, covered, E.source_key(cfg.source, cfg.split))
    agreement = None
    if cfg.agreement_source in covered:
        af = open_frames(store(a.frames_dir, cfg.agreement_source))
        agreement = E.AgreementSet(
            cfg.agreement_source, cfg.agreement_split, af,
            E.open_aligned(store(a.pred_dir, cfg.agreement_source), af),
            E.open_aligned(store(a.teacher_dir, cfg.agreement_source), af))
    else:
        log.info("agreement source %r is not labelled by the teacher (labelled: %s): "
                 "agreement_%s is not "
                 "reported", cfg.agreement_source, covered,
                 E.source_key(cfg.agreement_source, cfg.agreement_split))
    student_cost = E.load_cost(a.student_cost, E.COST_KEYS + pareto.ARCH)
    teacher_cost = None
    if Path(a.teacher_cost).is_file():
        teacher_cost = E.load_cost(a.teacher_cost, E.COST_KEYS, unknown_ok=True)
        if teacher_cost is None:
            log.info("teacher cost %s is unknown (a teacher given as outputs only): "
                     "teacher_weights and teacher_flops are not reported", a.teacher_cost)
    elif teacher is not None:
        log.info("teacher cost file %s does not exist (a teacher given as outputs only): "
                 "teacher_weights and teacher_flops are not reported", a.teacher_cost)

    report = E.report_student(a.name, frames, pred, source=cfg.source, split=cfg.split,
                              teacher=teacher, agreement=agreement, student_cost=student_cost,
                              teacher_cost=teacher_cost, threshold=cfg.threshold,
                              collapse=cfg.collapse, n_examples=cfg.n_examples)
    for name, why in collapsed_videos(report.per_video):
        log.warning("%s: %s collapsed (%s); listed on the report page", a.name, name, why)
    for key in report.undefined:
        log.info("%s is undefined on %s %s (too few videos with a value, or a constant "
                 "series): not reported", key, cfg.source, cfg.split)
    names = R.videos_to_render(report.per_video, cfg.videos, cfg.n_examples)
    written, skipped = R.write_videos(
        a.videos, R.video_inputs(frames, pred, teacher, report.per_video, names),
        threshold=cfg.threshold)
    link = Path(os.path.relpath(a.videos, a.out))
    page = E.Page(name=a.name, videos={n: (link / f).as_posix() for n, f in written.items()},
                  skipped=skipped,
                  training_curves=R.read_training_curves(Path(a.live) / "plots" / "metrics"))
    E.write_report(a.out, report, page)
    log.info("%s: dice %.4f, ef_r %s -> %s", a.name, report.metrics["dice"],
             report.metrics.get("ef_r", "undefined"), a.out)


if __name__ == "__main__":
    run(main)
