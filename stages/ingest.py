"""Stage ingest@<source>: decode an EchoNet-layout folder into a Zarr frame store.

    python stages/ingest.py --src data/raw/real --out data/frames/real.zarr \
        --skipped reports/ingest/real_skipped.csv

Reads params.yaml ``ingest`` (the source folder ``--src`` is ``sources.<name>.path``).
Outputs: the store at --out (written atomically) and the skip report at --skipped (CSV,
header even when empty; written atomically after decoding, or when the stage fails on
``ingest.max_bad_fraction``). Bad input or settings end in one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from echodfkd.cli import read_params, run
from echodfkd.data.ingest import IngestConfig, ingest_source

PARAMS = ("ingest",)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Ingest an EchoNet-layout folder into Zarr.")
    ap.add_argument("--src", required=True, help="folder with Videos/ and FileList.csv")
    ap.add_argument("--out", required=True, help="frame store to write (.zarr)")
    ap.add_argument("--skipped", required=True, help="CSV report of skipped inputs")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)
    cfg = read_params(PARAMS).config("ingest", IngestConfig)
    report = ingest_source(args.src, args.out, **asdict(cfg), progress=not args.no_progress,
                           skipped_path=args.skipped)
    kinds = report.skips["kind"].value_counts().to_dict()
    print(f"ingested {report.videos} videos ({report.frames} frames) from {args.src} into "
          f"{args.out} in {report.seconds:.1f} s; {report.bad} of {report.rows} FileList rows "
          f"bad; skip report {args.skipped} {kinds}")


if __name__ == "__main__":
    run(main)
