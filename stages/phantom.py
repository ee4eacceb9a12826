"""Stage phantom: generate one phantom set in an EchoNet layout and its preview montage.

    python stages/phantom.py --out data/raw/real --preview reports/phantom/real.png \
        --style real --seed 11 --train 120 --val 20 --test 40 --frames 64 --extra 0
"""

from __future__ import annotations

import argparse

from echodfkd.cli import run
from echodfkd.data.phantom import STYLES, generate_set, render_preview


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="set folder to write (replaced atomically)")
    ap.add_argument("--preview", required=True, help="PNG montage to write")
    ap.add_argument("--style", required=True, choices=STYLES)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--train", type=int, required=True, help="TRAIN videos")
    ap.add_argument("--val", type=int, required=True, help="VAL videos")
    ap.add_argument("--test", type=int, required=True, help="TEST videos")
    ap.add_argument("--extra", type=int, required=True, help="EXTRA videos (synthetic style only)")
    ap.add_argument("--frames", type=int, required=True, help="frames per video")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    filelist = generate_set(args.out, style=args.style, seed=args.seed, n_train=args.train,
                            n_val=args.val, n_test=args.test, n_extra=args.extra,
                            n_frames=args.frames, progress=not args.no_progress)
    render_preview(args.out, args.preview)
    counts = filelist["Split"].value_counts().to_dict()
    print(f"phantom {args.style}: {len(filelist)} videos {counts} -> {args.out}")


if __name__ == "__main__":
    run(main)
