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
each output is checked equal to the first. The cluster's start-up is timed apart. Prints frames/s
and ratios; the last line is the headline ratio, cluster / local threads (2 workers).

Measured on the 2-core machine (4,096 frames, batch 16, 3 rounds): threads x1 207 frames/s,
threads x2 353, LocalCluster x2 330: headline 0.94. Before ``runtime.tune_malloc`` it was 0.55:
the nanny's ``MALLOC_TRIM_THRESHOLD_`` made glibc mmap every large buffer on every call.
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


def _one_thread() -> None:
    torch.set_num_threads(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6144)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
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
        ref = None
        try:
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
    base = n / statistics.median(times["local threads, 2 workers"])
    print(f"{n} frames in blocks of {a.block}; UNet w8 teacher; 1 torch thread per worker; "
          f"medians of {a.rounds} rounds; cluster start-up {startup:.1f} s (not counted)")
    print(f"{'set-up':<28}{'frames/s':>10}{'vs threads x2':>15}")
    for name, ts in times.items():
        fps = n / statistics.median(ts)
        print(f"{name:<28}{fps:>10.0f}{fps / base:>15.2f}")
    fps = n / statistics.median(times["LocalCluster, 2 processes"])
    print(f"LocalCluster (2 workers) / local threads (2 workers): {fps / base:.2f}")


if __name__ == "__main__":
    main()
