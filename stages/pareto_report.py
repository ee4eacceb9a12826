"""Pareto report: collect grid-point JSONs, flag Pareto-optimal students, plot score against
weights/FLOPs with the teacher as reference, and rank-correlate human- and model-referenced
scores across students."""

import argparse
import json
from pathlib import Path

from echodfkd import pareto, plots
from echodfkd.evaluate import json_ready
from echodfkd.store import write_text_atomic


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", required=True, help="directory of <name>.json grid points")
    ap.add_argument("--blocks", type=int, nargs="+", required=True, help="grid: blocks")
    ap.add_argument("--layers_per_block", type=int, nargs="+", required=True, help="grid: layers")
    ap.add_argument("--hidden", type=int, nargs="+", required=True, help="grid: hidden channels")
    ap.add_argument("--extra", nargs="*", default=["student"],
                    help="other points in --points to include (default: the main student)")
    ap.add_argument("--teacher-metrics", help="evaluate stage metrics.json (teacher_* keys)")
    ap.add_argument("--score", default="dice")
    ap.add_argument("--csv", required=True)
    ap.add_argument("--plot", required=True)
    ap.add_argument("--agreement-plot")
    ap.add_argument("--summary", help="flat JSON: best score, gap, rank correlations")
    a = ap.parse_args(argv)

    names = pareto.grid_names(a.blocks, a.layers_per_block, a.hidden) + a.extra
    stale = sorted({p.stem for p in Path(a.points).glob("*.json")} - set(names))
    if stale:  # outputs of grid points no longer in params.yaml (DVC leaves them on disk)
        print(f"pareto_report: ignoring {stale} in {a.points}: not in the current grid")
    df = pareto.collect(pareto.load_points(a.points, names), score=a.score)
    teacher = None
    if a.teacher_metrics:
        teacher = pareto.teacher_point(json.loads(Path(a.teacher_metrics).read_text()))
    write_text_atomic(a.csv, df.drop(columns=["source"], errors="ignore").to_csv(index=False))
    plots.plot_pareto(a.plot, df, score=a.score, teacher=teacher)
    if a.agreement_plot:
        plots.plot_reference_agreement(a.agreement_plot, df, list(pareto.DEFAULT_PAIRS))
    if a.summary:
        s = pareto.report_summary(df, teacher, score=a.score)
        write_text_atomic(a.summary, json.dumps(json_ready(s), indent=2) + "\n")


if __name__ == "__main__":
    main()
