"""Teacher inference on a dask.distributed cluster against local threads, on the same store.

    python bench/teacher_cluster.py [--frames 6144] [--block 512] [--rounds 2]

Builds a frame store of random frames (``--frames``, shards of ``--block`` frames = one task
each) and a default-size teacher (UNet width 8, depth 3, random weights: the cost does not depend
on the weights), then runs :func:`echodfkd.teacher.infer.infer_teacher` over it:

- local threads, 1 worker;
- local threads, 2 workers;
- a ``dask.distributed.LocalCluster`` of 2 worker processes x 1 thread (what a user gets by
  setting ``ingest.scheduler`` to a scheduler address; here the scheduler is local).

Each worker uses one torch thread. Rounds alternate the three set-ups (medians reported), and
each output is checked equal to the first. The cluster's start-up is timed apart. Then the same
three set-ups run :func:`echodfkd.data.ingest.ingest_source` over a phantom source in EchoNet
layout (``--ingest-videos`` videos x 64 frames, with ground truth and tracings; 0 skips it),
each store checked identical (content hash and index) to the first. Prints frames/s and ratios
(to local threads with 2 workers and with 1); the last line is the headline ratio, teacher
inference on the cluster / local threads (2 workers).

Measured on the 2-core machine (6,144 frames, batch 16, 3 rounds): threads x1 192 frames/s,
threads x2 375, LocalCluster x2 367: headline 0.98 (x1.91 of one worker). Ingest, 320 videos:
4,787 / 4,789 / 4,850 frames/s (x1.01: the decoding threads hold the GIL for part of each
video, and on the cluster every frame passes through the one driver process). Before ``runtime.tune_malloc`` the headline was 0.55: the nanny's
``MALLOC_TRIM_THRESHOLD_`` made glibc mmap every large buffer on every call.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch


def build(root: Path, n_frames: int, block: int):
    from echodfkd.teacher.unet import UNet
    from echodfkd.data.store import finish_frame_store, init_frame_store, open_frames
    from echodfkd.teacher.checkpoint import save_teacher

    per = 64
    n_videos = n_frames // per
    stops = np.arange(1, n_videos + 1) * per
    index = pd.DataFrame({"FileName": [f"v{i}" for i in range(n_videos)], "Split": "TRAIN",
                          "start": stops - per, "stop": stops, "FPS": 50.0, "EF": 60.0,
                          "ESV": 0.0, "EDV": 0.0, "FrameHeight": 112, "FrameWidth": 112,
                          "NumberOfFrames": per})
    g = init_frame_store(root / "f.zarr", index, 0, with_gt=False, shard_frames=block,
                         chunk_frames=min(128, block))
    rng = np.random.default_rng(0)
    for s in range(0, n_videos * per, block):
        g["frames"][s:s + block] = rng.integers(0, 256, (min(block, n_videos * per - s), 112,
                                                          112), dtype=np.uint8)
    finish_frame_store(g, index, pd.DataFrame(columns=["FileName", "video", "frame", "phase",
                                                       "row"]))
    torch.manual_seed(0)
    save_teacher(root / "teacher.pt", "unet", {"width": 8, "depth": 3}, UNet(width=8, depth=3))
    return open_frames(root / "f.zarr")


def run_ingest(root: Path, videos: int, rounds: int, runs: dict, times: dict) -> int:
    """Ingest a phantom source under each set-up of ``runs`` ``rounds`` times into ``times``;
    returns the frame count. Every store must hold the same frames and index as the first."""
    import zarr

    from echodfkd.cli import read_params
    from echodfkd.data.ingest import ingest_source
    from echodfkd.data.phantom import generate_set

    src = root / "src"
    generate_set(src, echonet_lengths=[], style="real", seed=5, n_train=videos, n_val=0,
                 n_test=0, n_extra=0, n_frames=64, progress=False)
    params = read_params(("ingest",), Path(__file__).resolve().parents[1] / "params.yaml")
    fixed = {k: params.value(f"ingest.{k}", t) for k, t in (
        ("shard_frames", int), ("chunk_frames", int), ("max_bad_fraction", float),
        ("tracing_policy", str))}
    ref = None
    for r in range(rounds):
        for name, kw in runs.items():
            out = root / f"i-{r}-{name[:5]}.zarr"
            t = time.perf_counter()
            report = ingest_source(src, out, progress=False, **fixed, **kw)
            times[name].append(time.perf_counter() - t)
            attrs = dict(zarr.open_group(str(out), mode="r").attrs)
            key = (attrs["content_sha"], attrs["fingerprint"])
            ref = ref or key
            assert key == ref, f"ingest on {name}: a different store"
    return report.frames


def table(times: dict[str, list[float]], n: int) -> None:
    """frames/s per set-up (medians) and ratios to local threads with 2 and 1 workers."""
    two = n / statistics.median(times["local threads, 2 workers"])
    one = n / statistics.median(times["local threads, 1 worker"])
    print(f"{'set-up':<28}{'frames/s':>10}{'vs threads x2':>15}{'vs 1 worker':>13}")
    for name, ts in times.items():
        fps = n / statistics.median(ts)
        print(f"{name:<28}{fps:>10.0f}{fps / two:>15.2f}{fps / one:>13.2f}")


def _one_thread() -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6144)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ingest-videos", type=int, default=320,
                    help="phantom videos x 64 frames for the ingest comparison (0: skip)")
    ap.add_argument("--batch", type=int, default=16, help="frames per forward pass (the "
                    "pipeline's CPU default, echodfkd.runtime.teacher_batch)")
    a = ap.parse_args(argv)
    from distributed import Client, LocalCluster

    from echodfkd.teacher.infer import infer_teacher
    from echodfkd.teacher.members import ModelMember

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = build(root, a.frames, a.block)
        n = int(store.frames.shape[0])
        members = [ModelMember(str(root / "teacher.pt"))]
        t0 = time.perf_counter()
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        with Client(cluster) as client:
            client.run(_one_thread)
        startup = time.perf_counter() - t0
        runs = {"local threads, 1 worker": dict(scheduler="", workers=1),
                "local threads, 2 workers": dict(scheduler="", workers=2),
                "LocalCluster, 2 processes": dict(scheduler=cluster.scheduler_address,
                                                  workers=1)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        ingest_times: dict[str, list[float]] = {k: [] for k in runs}
        ref = None
        try:
            if a.ingest_videos:
                ingest_frames = run_ingest(root, a.ingest_videos, a.rounds, runs, ingest_times)
            for r in range(a.rounds):
                for name, kw in runs.items():
                    out = root / f"m-{r}-{len(times[name])}-{name[:5]}.zarr"
                    t = time.perf_counter()
                    ms = infer_teacher(members, store, out, batch_size=a.batch, device="auto",
                                       amp=False, progress=False, **kw)
                    times[name].append(time.perf_counter() - t)
                    masks = ms.masks[:]
                    if ref is None:
                        ref = masks
                    assert np.array_equal(masks, ref), f"{name}: different masks"
        finally:
            cluster.close()
    if a.ingest_videos:
        print(f"ingest: {a.ingest_videos} phantom videos x 64 frames ({ingest_frames} frames, "
              f"ground truth and tracings); medians of {a.rounds} rounds")
        table(ingest_times, ingest_frames)
    print(f"teacher_infer: {n} frames in blocks of {a.block}; UNet w8 teacher; 1 torch thread "
          f"per worker; medians of {a.rounds} rounds; cluster start-up {startup:.1f} s "
          f"(not counted)")
    table(times, n)
    base = n / statistics.median(times["local threads, 2 workers"])
    fps = n / statistics.median(times["LocalCluster, 2 processes"])
    print(f"LocalCluster (2 workers) / local threads (2 workers): {fps / base:.2f}")


if __name__ == "__main__":
    main()
