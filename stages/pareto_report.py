"""Pareto report over the students of params.yaml's ``students:`` table: collect each
student's point.json, flag Pareto-optimal students, plot Dice against weights/FLOPs with the
teacher as reference, rank-correlate human- and teacher-referenced scores across students, and
summarise the distillation gap (teacher Dice minus best / main student Dice), and write the
report's front page (--index): the Pareto plots, every student's row linked to its page
(<reports>/<name>/index.html, written by the evaluate stage) and the gap.

    python stages/pareto_report.py --reports reports/students --main student \
        --csv reports/pareto.csv --plot reports/pareto.png \
        --agreement-plot reports/annotation_free.png --summary reports/pareto_summary.json \
        --index reports/index.html

Reads params.yaml: ``students`` (stage name -> shape section) and the shapes in ``student``
and ``grid``, to check each report against the architecture it should have.
"""

import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from echodfkd.cli import read_params, run
from echodfkd.data.store import write_text_atomic
from echodfkd.errors import InputError
from echodfkd.evaluation import html, pareto, plots
from echodfkd.student.shape import StudentShape

log = logging.getLogger("pareto_report")

PARAMS = ("students", "student", "grid")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reports", required=True, help="folder of <name>/point.json, metrics.json")
    ap.add_argument("--main", required=True, help="the main student (teacher scores, gap_main)")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--agreement-plot", required=True)
    ap.add_argument("--summary", required=True, help="flat JSON: best, gaps, rank agreement")
    ap.add_argument("--index", required=True, help="the report's front page (HTML)")
    a = ap.parse_args(argv)
    params = read_params(PARAMS)
    students = {name: asdict(params.config(section, StudentShape))
                for name, section in params.value("students", dict[str, str]).items()}
    names = list(students)
    if a.main not in students:
        raise InputError(f"--main {a.main!r} is not in params.yaml students {names}: add it "
                         f"there")
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
    here = Path(a.index).parent
    html.write_index_page(a.index, students=df, summary=summary,
                          student_href=os.path.relpath(a.reports, here),
                          pareto_plots=[os.path.relpath(p, here) for p in (a.plot,
                                                                           a.agreement_plot)])


if __name__ == "__main__":
    run(main)
