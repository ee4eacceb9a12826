"""Pareto report over the students of params.yaml's ``students:`` table: collect each
student's point.json, flag Pareto-optimal students, plot Dice against weights/FLOPs with the
teacher as reference, rank-correlate human- and teacher-referenced scores across students, and
summarise the distillation gap (teacher Dice minus best / main student Dice).

The students table comes last on the command line as DVC unpacks ``${students}``:
``--student.blocks 3 --student.hidden 6 --b3-l1-h3.blocks 3 --b3-l1-h3.skip ...``.
"""

import argparse
import json
import logging

from echodfkd.evaluation import pareto
from echodfkd.evaluation import plots
from echodfkd.cli import run
from echodfkd.errors import InputError
from echodfkd.data.store import write_text_atomic

log = logging.getLogger("pareto_report")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", required=True, help="folder of <name>/point.json, metrics.json")
    ap.add_argument("--main", required=True, help="the main student (teacher scores, gap_main)")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--agreement-plot", required=True)
    ap.add_argument("--summary", required=True, help="flat JSON: best, gaps, rank agreement")
    a, rest = ap.parse_known_args(argv)
    students = pareto.table(rest)
    names = list(students)
    if a.main not in students:
        raise InputError(f"--main {a.main!r} is not in the students table {names}: add it to "
                         f"params.yaml `students:`")
    stale = pareto.stale_reports(a.reports, names)
    if stale:  # reports of students no longer in params.yaml (DVC leaves them on disk)
        log.info("ignoring %s in %s: not in the students table", stale, a.reports)
    rows = pareto.load_points(a.reports, names)
    pareto.check_against_table(rows, students)
    df = pareto.collect(rows)
    teacher = pareto.read_teacher_point(
        pareto.point_file(a.reports, a.main).with_name("metrics.json"))
    write_text_atomic(a.csv, df.drop(columns=["source"], errors="ignore").to_csv(index=False))
    plots.plot_pareto(a.plot, df, teacher=teacher)
    plots.plot_reference_agreement(a.agreement_plot, df, list(pareto.DEFAULT_PAIRS))
    summary, notes = pareto.report_summary(df, teacher, main=a.main)
    for note in notes:
        log.info("%s", note)
    write_text_atomic(a.summary, json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
