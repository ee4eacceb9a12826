"""Stage phantom@<set>: generate one phantom set in an EchoNet layout and its preview montage.

    python stages/phantom.py --set real --out data/raw/real --preview reports/phantom/real.png

Reads params.yaml ``phantom.<set>`` (style, seed, train, val, test, extra, frames,
echonet_lengths).
"""

from __future__ import annotations

import argparse

from echodfkd.cli import read_params, run
from echodfkd.data.phantom import PhantomSet, generate_set, render_preview


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", required=True, help="the set's name under phantom: in params.yaml")
    ap.add_argument("--out", required=True, help="set folder to write (replaced atomically)")
    ap.add_argument("--preview", required=True, help="PNG montage to write")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    key = f"phantom.{args.set}"
    cfg = read_params((key,)).config(key, PhantomSet)
    filelist = generate_set(args.out, style=cfg.style, seed=cfg.seed, n_train=cfg.train,
                            n_val=cfg.val, n_test=cfg.test, n_extra=cfg.extra,
                            n_frames=cfg.frames, echonet_lengths=cfg.echonet_lengths,
                            progress=not args.no_progress)
    render_preview(args.out, args.preview)
    counts = filelist["Split"].value_counts().to_dict()
    n = filelist["NumberOfFrames"]
    print(f"phantom {cfg.style}: {len(filelist)} videos {counts}, {n.min()}-{n.max()} frames "
          f"(median {n.median():.0f}) -> {args.out}")


if __name__ == "__main__":
    run(main)
