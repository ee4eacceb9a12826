"""Stage ingest@<source>: decode an EchoNet-layout folder into a Zarr frame store.

    python stages/ingest.py --src data/raw/real --out data/frames/real.zarr \
        --skipped reports/ingest/real_skipped.csv --scheduler "" --workers 2 \
        --max-bad-fraction 0.05 --shard-frames 2048 --chunk-frames 128 --tracing-policy first

Every value comes from params.yaml (``ingest.*``) through dvc.yaml; none has a default here.
Outputs: the store at --out (written atomically) and the skip report at --skipped (CSV,
header even when empty; written atomically after decoding, or when the stage fails on
--max-bad-fraction). Bad input or settings end in one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse

from echodfkd.cli import run
from echodfkd.data.echonet import TRACING_POLICIES
from echodfkd.data.ingest import ingest_source


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Ingest an EchoNet-layout folder into Zarr.")
    ap.add_argument("--src", required=True, help="folder with Videos/ and FileList.csv")
    ap.add_argument("--out", required=True, help="frame store to write (.zarr)")
    ap.add_argument("--skipped", required=True, help="CSV report of skipped inputs")
    ap.add_argument("--scheduler", required=True,
                    help='dask.distributed scheduler address; "" decodes on local threads')
    ap.add_argument("--workers", type=int, required=True, help="local decoding threads (>= 1)")
    ap.add_argument("--max-bad-fraction", type=float, required=True,
                    help="fail when more than this fraction (0-1) of FileList rows is bad")
    ap.add_argument("--shard-frames", type=int, required=True, help="frames per shard file")
    ap.add_argument("--chunk-frames", type=int, required=True,
                    help="frames per compressed chunk (divides --shard-frames)")
    ap.add_argument("--tracing-policy", required=True,
                    help=f"which annotator's tracing of a traced frame to use: "
                         f"{', '.join(TRACING_POLICIES)}")
    ap.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = ap.parse_args(argv)
    report = ingest_source(
        args.src, args.out, shard_frames=args.shard_frames, chunk_frames=args.chunk_frames,
        workers=args.workers, scheduler=args.scheduler, max_bad_fraction=args.max_bad_fraction,
        tracing_policy=args.tracing_policy, progress=not args.no_progress,
        skipped_path=args.skipped)
    kinds = report.skips["kind"].value_counts().to_dict()
    print(f"ingested {report.videos} videos ({report.frames} frames) from {args.src} into "
          f"{args.out} in {report.seconds:.1f} s; {report.bad} of {report.rows} FileList rows "
          f"bad; skip report {args.skipped} {kinds}")


if __name__ == "__main__":
    run(main)
