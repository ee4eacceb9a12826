"""Teacher stage: build the teacher directory (fitted / converted checkpoints, imported outputs).

    python stages/teacher.py --out models/teacher --frames data/frames/real.zarr \
        --members "fit [checkpoint:PATH[@W] outputs:DIR[@W] ...]" \
        --arch unet --width 8 --depth 3 --epochs 30 --batch 16 --lr 0.003 --seed 0 --device auto

Writes ``--out`` atomically: ``teacher.json`` (members; checkpoint paths relative to the
directory, output folders as given), ``member<i>.pt`` per fit/checkpoint member,
``fit_history.csv`` when a member is fitted and ``cost.json``. ``--frames`` is read only when
a member is fitted (an outputs-only teacher needs no labelled store).
"""

from __future__ import annotations

import argparse
import json
import shutil

from echodfkd.cli import run, words
from echodfkd.data.store import commit, open_frames, partial_path
from echodfkd.teacher.build import make_teacher_dir
from echodfkd.teacher.members import (load_members, parse_member_specs, parse_member_text,
                                      teacher_cost)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="teacher directory to write")
    ap.add_argument("--frames", required=True, help="labelled frame store (for 'fit' members)")
    ap.add_argument("--members", nargs="+", required=True,
                    help="teachers to fuse, each KIND[:PATH][@WEIGHT], KIND fit|checkpoint|outputs")
    ap.add_argument("--arch", required=True)
    for name in ("--width", "--depth", "--epochs", "--batch", "--seed"):
        ap.add_argument(name, type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--device", required=True, help="'auto': CUDA when available")
    args = ap.parse_args(argv)

    members = parse_member_specs([parse_member_text(m) for m in words(args.members)])
    frames = open_frames(args.frames) if any(m["kind"] == "fit" for m in members) else None
    staging = partial_path(args.out)
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _, history = make_teacher_dir(
            staging, members, frames, arch=args.arch, width=args.width, depth=args.depth,
            epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed,
            device=args.device)
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
