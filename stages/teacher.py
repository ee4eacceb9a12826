"""Teacher stage: build the teacher directory (fitted / converted checkpoints, imported outputs).

    python stages/teacher.py --out models/teacher --frames data/frames/real.zarr \
        --members fit [checkpoint:PATH[@W] outputs:DIR[@W] ...] \
        --arch unet --width 16 --depth 3 --epochs 40 --batch 16 --lr 0.001 --seed 0

Writes ``--out`` atomically: ``teacher.json`` (members; checkpoint paths relative to the
directory, output folders as given), ``member<i>.pt`` per fit/checkpoint member, and
``fit_history.csv`` when a member is fitted.
"""

from __future__ import annotations

import argparse
import json
import shutil

from echodfkd.store import commit, open_frames, partial_path
from echodfkd.teacher import (load_members, make_teacher_dir, parse_member_specs,
                              parse_member_text, teacher_cost)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="teacher directory to write")
    ap.add_argument("--frames", required=True, help="labelled frame store (for 'fit' members)")
    ap.add_argument("--members", nargs="+", required=True,
                    help="teachers to fuse, each KIND[:PATH][@WEIGHT], KIND fit|checkpoint|outputs")
    ap.add_argument("--arch", default="unet")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="'auto': CUDA when available")
    args = ap.parse_args(argv)

    members = parse_member_specs([parse_member_text(m) for m in args.members])
    frames = open_frames(args.frames) if any(m["kind"] == "fit" for m in members) else None
    staging = partial_path(args.out)
    if staging.exists():
        shutil.rmtree(staging)
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
    commit(staging, args.out)


if __name__ == "__main__":
    main()
