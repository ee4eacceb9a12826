"""Segmentation videos (echodfkd.evaluation.video): render + encode time, size and determinism of
each encoder, side by side.

    python bench/report_video.py                 # 200 frames, 5 rounds, pinned to one core
    python bench/report_video.py --frames 400 --rounds 3

One phantom video (``echodfkd.data.phantom.writer.make_video``, "real" style) with a student
(the ground-truth mask blurred and shifted 2 px, as soft uint8 round(p*255)), a teacher (the
ground truth), the two traced frames and the true ED/ES frames as the found ones, rendered at
scale 3 (336 px wide). The process (and the ffmpeg child of imageio-ffmpeg) is pinned to one core
unless ``--cores 0``. For each available backend of ``video.BACKENDS``, median over rounds:

- ``render``: :func:`video.render_frames` alone (the same for every backend);
- ``encode``: :func:`video.encode_video` of the rendered array;
- ``write``: :func:`video.write_video`, render and encode streamed (what the report calls);
- frames/s of ``write``, file size, the installed size of the backend's package, the frames
  cv2.VideoCapture counts in the MP4, and whether the bytes are the same every time: two fresh
  child processes each write the video three times (the first encode of a process included,
  where PyAV's libx264 with mbtree on differs from later ones) and all six must agree.

The same is repeated for the H.264 backends at x264's next slower preset, ``veryfast``, with
mbtree on (its default there): smaller files for more time, and PyAV's libx264 then writes
different bytes on the first encode of a process (hence ``X264_PARAMS="mbtree=0"``). The last
line is the headline ratio: the chosen (first available) backend's ``write`` time for the video
over the 1 s budget.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from echodfkd.data.phantom.writer import make_video
from echodfkd.evaluation import video as V

PACKAGES = {"pyav": ["av"], "imageio-ffmpeg": ["imageio-ffmpeg"], "webp": ["pillow"]}


def installed_mb(dists: list[str]) -> float:
    total = 0
    for name in dists:
        try:
            files = md.distribution(name).files or []
        except md.PackageNotFoundError:
            continue
        for f in files:
            p = Path(f.locate())
            if p.is_file():
                total += p.stat().st_size
    return total / 1e6


def inputs(n_frames: int, seed: int) -> dict:
    v = make_video("real", seed, "TEST", 0, n_frames)
    truth = (v["masks"] > 0).astype(np.uint8) * 255
    student = np.stack([cv2.GaussianBlur(np.roll(m, 2, axis=1), (7, 7), 0) for m in truth])
    traced = {int(f): v["masks"][int(f)] > 0 for f, _ in v["tracings"]}
    ed = {int(e) for e in v["ed"]}
    tr = {("ED" if f in ed else "ES"): f for f in traced}
    return dict(frames=v["frames"], student=student, teacher=truth, traced=traced,
                threshold=0.5, found={"ED": [int(e) for e in v["ed"]],
                                      "ES": [int(e) for e in v["es"]]},
                traced_frames=tr), float(v["FPS"])


def timed(fn, rounds: int) -> tuple[float, list]:
    times, results = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), results


def child(backend: str, preset: str, x264: str, n_frames: int, seed: int, path: str) -> None:
    """Print the sha256 of three consecutive writes of the bench video in this process."""
    V.PRESET, V.X264_PARAMS = preset, x264
    kw, fps = inputs(n_frames, seed)
    for _ in range(3):
        print(hashlib.sha256(V.write_video(path, **kw, fps=fps, backend=backend)
                             .read_bytes()).hexdigest())


def same_bytes(backend: str, n_frames: int, seed: int, tmp: str) -> bool:
    """True when two fresh processes each write identical bytes three times."""
    digests = set()
    for k in range(2):
        out = subprocess.run([sys.executable, __file__, "--child", backend, V.PRESET, V.X264_PARAMS,
                              "--frames", str(n_frames), "--seed", str(seed),
                              "--out", str(Path(tmp) / f"child{k}.mp4")],
                             capture_output=True, text=True, check=True).stdout.split()
        digests.update(out)
    return len(digests) == 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cores", type=int, default=1, help="pin to this many cores (0: no pin)")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)   # backend preset x264-params
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.frames, args.seed, args.out)
    if args.cores > 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.cores])
    cv2.setNumThreads(1)
    kw, fps = inputs(args.frames, args.seed)
    t_render, outs = timed(lambda: V.render_frames(**kw), args.rounds)
    rgb = outs[0]
    backends = V.available_backends()
    print(f"{args.frames} frames of {rgb.shape[2]}x{rgb.shape[1]} px at {fps:g} fps, "
          f"{args.rounds} rounds (medians), pinned to "
          f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} core(s)")
    print(f"render_frames alone: {t_render:.3f} s ({args.frames / t_render:.0f} frames/s)")
    missing = [b for b in V.BACKENDS if b not in backends]
    for b in missing:
        print(f"{b}: not available ({V._unavailable(b)})")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        def run(b: str, label: str):
            path = Path(tmp) / f"{label}.mp4"
            t_enc, _ = timed(lambda: V.encode_video(rgb, path, fps, backend=b), args.rounds)
            t_write, paths = timed(lambda: V.write_video(path, **kw, fps=fps, backend=b),
                                   args.rounds)
            same = same_bytes(b, args.frames, args.seed, tmp)
            size = paths[-1].stat().st_size
            cap = cv2.VideoCapture(str(paths[-1])) if paths[-1].suffix == ".mp4" else None
            n_dec = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap is not None else -1
            rows.append((label, t_enc, t_write, args.frames / t_write, size / 1e3,
                         same, installed_mb(PACKAGES[b]), n_dec))

        for b in backends:
            run(b, b)
        default = V.PRESET, V.X264_PARAMS
        try:
            V.PRESET, V.X264_PARAMS = "veryfast", "mbtree=1"
            for b in backends:
                if b != "webp":
                    run(b, f"{b} veryfast+mbtree")
        finally:
            V.PRESET, V.X264_PARAMS = default

    print(f"\n{'encoder':<32}{'encode s':>9}{'write s':>9}{'frames/s':>10}{'size KB':>9}"
          f"{'same bytes':>11}{'install MB':>11}{'cv2 frames':>11}")
    for label, te, tw, fs, kb, same, mb, nd in rows:
        print(f"{label:<32}{te:>9.3f}{tw:>9.3f}{fs:>10.0f}{kb:>9.0f}{'yes' if same else 'NO':>11}"
              f"{mb:>11.0f}{nd if nd >= 0 else '-':>11}")
    by = {r[0]: r for r in rows}
    if len(backends) >= 2:
        a, b = backends[0], backends[1]
        print(f"\n{a} / {b}: write time {by[a][2] / by[b][2]:.2f}, size {by[a][4] / by[b][4]:.2f}")
    if "webp" in by and backends and backends[0] != "webp":
        print(f"{backends[0]} / webp: write time {by[backends[0]][2] / by['webp'][2]:.2f}, "
              f"size {by[backends[0]][4] / by['webp'][4]:.2f}")
    if not backends:
        sys.exit("no encoder available")
    chosen = backends[0]
    print(f"chosen encoder ({chosen}) render+encode of {args.frames} frames / 1 s budget: "
          f"{by[chosen][2] / 1.0:.2f}")


if __name__ == "__main__":
    main()
