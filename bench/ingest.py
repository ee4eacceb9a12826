"""Ingest throughput against plain OpenCV decoding of the same files, side by side.

    python bench/ingest.py                       # writes 40 videos x 64 frames, then measures
    python bench/ingest.py --src data/raw/real   # measures an existing EchoNet-layout folder

Each round runs, one after the other: plain cv2 decoding (one thread: VideoCapture with
one FFmpeg thread and a read() loop, nothing else), ``read_video`` on every file (the
decoder ingest's tasks run), ``ingest_source`` with workers=1 and workers=2 (workers=1
is one decoding thread; the shard writer/compressor runs beside it on its own thread). The table gives the median over rounds of wall-clock frames/s and of frames per
CPU-second of this process (steadier on a shared machine), and each ratio to plain cv2.
Done-criterion: ingest on 1 worker >= 0.8x plain cv2 decoding (wall clock).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from echodfkd.cli import read_params
from echodfkd.data.echonet import read_video
from echodfkd.data.ingest import ingest_source

ROOT = Path(__file__).resolve().parents[1]


def make_source(root: Path, videos: int, frames: int, seed: int = 0) -> None:
    """Write ``videos`` MJPG AVIs of ``frames`` 112x112 echo-like frames and a FileList."""
    rng = np.random.default_rng(seed)
    (root / "Videos").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:112, :112].astype(np.float32)
    sector = ((np.arctan2(xx - 56, yy + 4) ** 2 < 0.55 ** 2) & (np.hypot(xx - 56, yy + 4) < 118))
    rows = []
    for v in range(videos):
        path = root / "Videos" / f"bench_{v:04d}.avi"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (112, 112))
        period = rng.uniform(30, 60)
        for t in range(frames):
            radius = 18 + 6 * np.cos(2 * np.pi * t / period)
            cavity = ((xx - 52) / (radius * 0.6)) ** 2 + ((yy - 50) / radius) ** 2 < 1
            speckle = cv2.GaussianBlur(rng.gamma(1.0, 1.0, (112, 112)).astype(np.float32),
                                       (0, 0), 1.0)
            img = np.clip((110 - 90 * cavity) * speckle * (1 - yy / 200), 0, 255) * sector
            writer.write(cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_GRAY2BGR))
        writer.release()
        rows.append({"FileName": path.stem, "EF": 55.0, "ESV": 0, "EDV": 0,
                     "FrameHeight": 112, "FrameWidth": 112, "FPS": 50,
                     "NumberOfFrames": frames, "Split": "TRAIN"})
    pd.DataFrame(rows).to_csv(root / "FileList.csv", index=False)


def plain_cv2(paths: list[Path]) -> int:
    """Decode every file with a bare OpenCV loop; returns the number of frames."""
    n = 0
    for p in paths:
        cap = cv2.VideoCapture(str(p), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
        while True:
            ok, _ = cap.read()
            if not ok:
                break
            n += 1
        cap.release()
    return n


def timed(fn) -> tuple[int, float, float]:
    """(frames, wall seconds, process CPU seconds) of ``fn()``."""
    c0, t0 = os.times(), time.perf_counter()
    n = fn()
    t1, c1 = time.perf_counter(), os.times()
    return n, t1 - t0, (c1.user - c0.user) + (c1.system - c0.system)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="", help="EchoNet-layout folder (default: make one)")
    ap.add_argument("--videos", type=int, default=160)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-frames", type=int, default=0, help="0: params.yaml's")
    ap.add_argument("--chunk-frames", type=int, default=0, help="0: params.yaml's")
    args = ap.parse_args(argv)
    cv2.setNumThreads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        src = Path(args.src) if args.src else work / "src"
        if not args.src:
            make_source(src, args.videos, args.frames)
        paths = sorted((src / "Videos").glob("*.avi"))
        # the pipeline's bad-row limit and tracing policy (params.yaml ``ingest``)
        params = read_params(("ingest.max_bad_fraction", "ingest.tracing_policy",
                              "ingest.shard_frames", "ingest.chunk_frames"), ROOT / "params.yaml")
        settings = {"max_bad_fraction": params.value("ingest.max_bad_fraction", float),
                    "tracing_policy": params.value("ingest.tracing_policy", str),
                    "shard_frames": args.shard_frames or params.value("ingest.shard_frames", int),
                    "chunk_frames": args.chunk_frames or params.value("ingest.chunk_frames", int)}

        def ingest(workers: int):
            return lambda: ingest_source(
                src, work / f"out{workers}.zarr", workers=workers, scheduler="", progress=False,
                **settings).frames

        methods = {"plain cv2 (1 thread)": lambda: plain_cv2(paths),
                   "read_video (1 thread)": lambda: sum(len(read_video(p)) for p in paths),
                   "ingest workers=1": ingest(1), "ingest workers=2": ingest(2)}
        plain_cv2(paths[:2])  # warm the page cache and OpenCV
        results: dict[str, list[tuple[int, float, float]]] = {k: [] for k in methods}
        for _ in range(args.rounds):
            for name, fn in methods.items():
                results[name].append(timed(fn))
        rows = {}
        for name, rs in results.items():
            frames = rs[0][0]
            rows[name] = (frames, statistics.median(r[1] for r in rs),
                          statistics.median(frames / r[1] for r in rs),
                          statistics.median(frames / max(r[2], 1e-9) for r in rs))
        base = rows["plain cv2 (1 thread)"]
        print(f"{len(paths)} videos, {base[0]} frames, {settings['shard_frames']}-frame shards, "
              f"{args.rounds} rounds, "
              f"{os.cpu_count()} CPUs (medians; the machine may be shared)")
        print(f"{'method':24s} {'frames':>7s} {'wall s':>7s} {'frames/s':>9s} {'ratio':>6s} "
              f"{'frames/CPU-s':>13s} {'ratio':>6s}")
        for name, (frames, sec, fps, cfps) in rows.items():
            print(f"{name:24s} {frames:7d} {sec:7.3f} {fps:9.0f} {fps / base[2]:6.2f} "
                  f"{cfps:13.0f} {cfps / base[3]:6.2f}")
        ratio = rows["ingest workers=1"][2] / base[2]
        print(f"criterion: ingest workers=1 >= 0.8x plain cv2 (wall clock): {ratio:.2f}x "
              f"{'PASS' if ratio >= 0.8 else 'FAIL'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
