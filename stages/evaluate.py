"""Evaluate student (and teacher) masks: ED/ES Dice, aFD, EF, teacher agreement, plots.

Full report:  --metrics/--per-video/--plots/--curves-csv.  Grid point:  --point with the
architecture (--name/--blocks/--layers-per-block/--hidden, or the same keys in --student-cost).
"""

import argparse
import json
import shutil
from pathlib import Path

from echodfkd import evaluate as E
from echodfkd import pareto, plots
from echodfkd.store import commit, open_frames, open_masks, partial_path, write_text_atomic

TEACHER_KEYS = ("dice_ed", "dice_es", "dice", "afd_ed", "afd_es", "afd", "ef_r", "ef_mae")


def _cost(path):
    return json.loads(Path(path).read_text()) if path else {}


def _source(path, split):
    return f"{Path(path).name.removesuffix('.zarr')}_{split.lower()}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--frames", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--teacher-masks")
    ap.add_argument("--split", default="TEST")
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--agreement-frames")
    ap.add_argument("--agreement-pred")
    ap.add_argument("--agreement-teacher")
    ap.add_argument("--agreement-split", default="TEST")
    ap.add_argument("--student-cost")
    ap.add_argument("--teacher-cost")
    ap.add_argument("--metrics")
    ap.add_argument("--per-video")
    ap.add_argument("--plots")
    ap.add_argument("--curves-csv")
    ap.add_argument("--n-examples", type=int, default=4)
    ap.add_argument("--point")
    ap.add_argument("--name")
    for k in pareto.ARCH:
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    a = ap.parse_args(argv)
    group = (a.agreement_frames, a.agreement_pred, a.agreement_teacher)
    if any(group) and not all(group):
        ap.error("--agreement-frames, --agreement-pred and --agreement-teacher go together")

    frames = open_frames(a.frames)
    pred = open_masks(a.pred, frames)
    teacher = open_masks(a.teacher_masks, frames) if a.teacher_masks else None
    df, summary = E.evaluate_source(frames, pred, teacher=teacher, split=a.split,
                                    threshold=a.threshold)
    scores = {k: v for k, v in summary.items() if k != "agreement"}
    if "agreement" in summary:
        scores[f"agreement_{_source(a.frames, a.split)}"] = summary["agreement"]
    if a.agreement_frames:
        af = open_frames(a.agreement_frames)
        _, s = E.evaluate_agreement(af, open_masks(a.agreement_pred, af),
                                    open_masks(a.agreement_teacher, af), a.agreement_split,
                                    a.threshold)
        scores[f"agreement_{_source(a.agreement_frames, a.agreement_split)}"] = s["agreement"]
    cost = _cost(a.student_cost)
    if a.point:
        arch = {k: getattr(a, k) if getattr(a, k) is not None else cost.get(k)
                for k in pareto.ARCH}
        if a.name is None or None in arch.values() or "weights" not in cost:
            ap.error("--point needs --name, the architecture and --student-cost")
        extra = {k: v for k, v in scores.items() if k.startswith("agreement_")}
        pareto.write_point(a.point, pareto.point_record(
            a.name, **arch, weights=cost["weights"], flops=cost["flops"], summary=summary,
            **extra))
    if not (a.metrics or a.per_video or a.plots or a.curves_csv):
        return
    if teacher is not None:
        tdf, tsum = E.evaluate_source(frames, teacher, teacher=None, split=a.split,
                                      threshold=a.threshold)
        scores.update(E.prefixed(tsum, "teacher_", TEACHER_KEYS))
        df = E.merge_per_video(df, tdf)
    tcost = _cost(a.teacher_cost)
    scores.update({k: cost.get(k) for k in ("weights", "flops") if k in cost})
    scores.update({"teacher_" + k: tcost.get(k) for k in ("weights", "flops") if k in tcost})
    if a.metrics:
        write_text_atomic(a.metrics, json.dumps(E.json_ready(scores), indent=2) + "\n")
    if a.per_video:
        write_text_atomic(a.per_video, df.to_csv(index=False))
    kw = dict(teacher=teacher, split=a.split, threshold=a.threshold, n_videos=a.n_examples)
    panels = E.area_panels(frames, pred, **kw)
    if a.curves_csv:
        write_text_atomic(a.curves_csv, E.area_curves_table(panels).to_csv(index=False))
    if a.plots:
        tmp = partial_path(a.plots)
        shutil.rmtree(tmp, ignore_errors=True)
        plots.plot_area_curves(tmp / "area_curves.png", panels)
        plots.plot_overlays(tmp / "overlays.png", E.overlay_panels(frames, pred, **kw))
        commit(tmp, a.plots)


if __name__ == "__main__":
    main()
