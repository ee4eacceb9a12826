"""Teacher stage: build the teacher directory (fitted / converted checkpoints, imported outputs).

    python stages/teacher.py --out models/teacher --frames data/frames/real.zarr

Reads params.yaml ``seed`` and ``teacher`` (members, fit_source, arch, width, depth, epochs,
batch, lr, dice_weight, device); ``--frames`` is the store of ``teacher.fit_source``.

Writes ``--out`` atomically: ``teacher.json`` (members; checkpoint paths relative to the
directory, output folders as given), ``member<i>.pt`` per fit/checkpoint member,
``fit_history.csv`` when a member is fitted and ``cost.json``. ``--frames`` is read only when
a member is fitted (an outputs-only teacher needs no labelled store).
"""

from __future__ import annotations

import argparse
import json
import shutil

from echodfkd.cli import read_params, run
from echodfkd.data.store import commit, open_frames, partial_path
from echodfkd.teacher.build import TeacherConfig, make_teacher_dir
from echodfkd.teacher.members import (load_members, parse_member_specs, parse_member_text,
                                      teacher_cost)

PARAMS = ("seed", "teacher")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="teacher directory to write")
    ap.add_argument("--frames", required=True, help="labelled frame store (for 'fit' members)")
    args = ap.parse_args(argv)
    params = read_params(PARAMS)
    cfg = params.config("teacher", TeacherConfig)
    members = parse_member_specs([parse_member_text(m) for m in cfg.members])
    frames = open_frames(args.frames) if any(m["kind"] == "fit" for m in members) else None
    staging = partial_path(args.out)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _, history = make_teacher_dir(
            staging, members, frames, arch=cfg.arch, width=cfg.width, depth=cfg.depth,
            epochs=cfg.epochs, batch_size=cfg.batch, lr=cfg.lr, dice_weight=cfg.dice_weight,
            seed=params.value("seed", int),
            device=cfg.device)
        if history is not None:
            # Wall-clock seconds would make the git-tracked teacher differ on every refit.
            history.drop(columns=["seconds"], errors="ignore").to_csv(
                staging / "fit_history.csv", index=False)
        cost = teacher_cost(load_members(staging))
        (staging / "cost.json").write_text(json.dumps(cost, indent=2) + "\n")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a refused member leaves nothing behind
        raise
    commit(staging, args.out)


if __name__ == "__main__":
    run(main)
