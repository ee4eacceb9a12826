"""Benchmark: does the pipeline scale with the data set? Wall time and peak RSS per stage at 1x
and 8x the data, and streaming vs in-RAM training side by side (issue 10).

Builds two phantom sets in EchoNet layout ("real" style: traced, so that evaluate can score),
1x and 8x the videos, and runs, each stage in a fresh child process (peak RSS = the child's
``ru_maxrss`` from ``os.wait4``; wall time of the child):

    ingest         echodfkd.data.ingest.ingest_source (AVI -> frame store)
    teacher_infer  echodfkd.teacher.infer.infer_teacher with the repo's models/teacher
                   (falls back to the ground-truth masks as a stand-in if that fails; said so)
    train_stream   train_student for 2 epochs x --steps steps, streamed from Zarr
                   (stream_above_mb 0, chunk cache --cache-mb, --workers reader threads)
    train_ram      the same, loaded into RAM (stream_above_mb huge)
    infer          echodfkd.student.infer.infer_store over the TEST split
    evaluate       echodfkd.evaluation.evaluate.evaluate_source on TEST

Training speed is the second epoch's time (steps + validation, data already open), so the
one-off RAM load is not counted against the RAM path. The last two lines are the headline
ratios (targets: RSS ratio <= 1.3, speed ratio >= 0.8):

    train peak RSS, 8x data / 1x data: <train_stream RSS 8x / 1x>
    streaming/RAM training speed: <RAM epoch time / streaming epoch time, at 8x>

    python bench/scale.py --quick          # 12 vs 96 videos x 48 frames, a few minutes
    python bench/scale.py                  # 40 vs 320 videos x 64 frames

EchoNet-scale rehearsal (issue 18): one run at a tenth of EchoNet-Synthetic, every stage with
the pipeline's own params.yaml settings (threads, teacher batch, streaming, cache, window):

    python bench/scale.py --rehearsal      # 1,000 videos x 192 frames (192k frames), ~20 min

It prints, per stage, the wall time, frames/s and peak RSS, and the extrapolation to 1.9M
frames (ingest, teacher_infer, infer and evaluate scale with the frames; train with its step
budget, plus validation, which scales with the VAL videos); then the streaming chunk cache's
hit rate and how long training waited for clip reads. Its last line is the headline: minutes
end to end at 192k frames and the estimate at 1.9M. Measured on the 2-core CPU: 13.3 min end to
end (teacher_infer 8:15 of it), ~2.0 h estimated at 1.9M frames; chunk cache hit rate 14.9%,
training waited 2.8% of its time for reads (README, "At EchoNet scale").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _params(*keys: str):
    """The project's params.yaml sections ``keys`` (the pipeline's settings)."""
    from echodfkd.cli import read_params
    return read_params(keys, ROOT / "params.yaml")


def _layout() -> dict:
    """``ingest.shard_frames`` and ``ingest.chunk_frames``: the stores' layout."""
    params = _params("ingest")
    return {k: params.value(f"ingest.{k}", int) for k in ("shard_frames", "chunk_frames")}


# ------------------------------------------- stages with the pipeline's settings (both modes)

def _ingest(raw: Path, frames: Path, **over) -> None:
    """ingest_source with params.yaml's ``ingest`` section (``over`` replaces keys)."""
    from dataclasses import asdict, replace

    from echodfkd.data.ingest import IngestConfig, ingest_source

    cfg = replace(_params("ingest").config("ingest", IngestConfig), **over)
    ingest_source(raw, frames, **asdict(cfg), progress=False)


def _teacher_infer(frames: Path, teacher: Path) -> None:
    """The repo's models/teacher over every frame, as the teacher_infer stage runs it."""
    from echodfkd.runtime import teacher_batch
    from echodfkd.teacher.infer import infer_teacher
    from echodfkd.teacher.members import load_members

    params = _params("teacher.device", "teacher_infer", "ingest.scheduler")
    device = params.value("teacher.device", str)
    infer_teacher(load_members(ROOT / "models" / "teacher"), frames, teacher,
                  batch_size=teacher_batch(params.value("teacher_infer.batch", int), device),
                  device=device, amp=params.value("teacher_infer.amp", bool),
                  scheduler=params.value("ingest.scheduler", str),
                  workers=params.value("teacher_infer.workers", int), progress=False)


def _evaluate(frames: Path, pred: Path, teacher: Path) -> dict:
    """evaluate_source on TEST with params.yaml's ``evaluate`` threshold and collapse
    limits; returns its summary."""
    from echodfkd.data.store import open_frames, open_masks
    from echodfkd.evaluation.evaluate import EvaluateConfig, evaluate_source

    ev = _params("evaluate").config("evaluate", EvaluateConfig)
    fs = open_frames(frames)
    _, summary = evaluate_source(fs, open_masks(pred, fs), teacher=open_masks(teacher, fs),
                                 split="TEST", threshold=ev.threshold, collapse=ev.collapse,
                                 progress=False)
    return summary


def _test_frames(frames: Path) -> int:
    """Frames of the TEST split's videos."""
    from echodfkd.data.store import open_frames

    idx = open_frames(frames).index
    return int((idx.stop - idx.start)[idx.Split == "TEST"].sum())


# ----------------------------------------------------------------------------- child side

def _child(stage: str, spec: dict) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(spec["threads"])
    d = Path(spec["dir"])
    frames, teacher = str(d / "frames.zarr"), str(d / "teacher.zarr")
    if stage == "phantom":
        from echodfkd.data.phantom import generate_set

        n = spec["videos"]
        generate_set(d / "raw", echonet_lengths=[], style="real", seed=3, n_train=n - n // 3,
                     n_val=n // 6, n_test=n // 3 - n // 6, n_extra=0,
                     n_frames=spec["frames"], progress=False)
        return {}
    if stage == "ingest":
        _ingest(d / "raw", Path(frames), workers=2)
        return {}
    if stage == "teacher_infer":
        try:
            _teacher_infer(Path(frames), Path(teacher))
            return {"note": "models/teacher"}
        except Exception as exc:  # the teacher package is being reworked: a stand-in
            from echodfkd.data.store import init_mask_store, open_frames

            fs = open_frames(frames)
            g = init_mask_store(teacher, fs, **_layout(), model="ground truth stand-in")
            for a in range(0, fs.frames.shape[0], 2048):
                g["masks"][a:a + 2048] = fs.gt_masks[a:a + 2048] * 255
            g.attrs["complete"] = True
            return {"note": f"stand-in (ground truth): {type(exc).__name__}: {exc}"[:120]}
    if stage.startswith("train"):
        from dataclasses import replace

        from echodfkd.cli import read_params
        from echodfkd.student.files import save_student
        from echodfkd.student.shape import StudentShape
        from echodfkd.student.train import Source, TrainConfig, train_student

        stream = stage == "train_stream"
        params = read_params(("seed", "train", "student"), ROOT / "params.yaml")
        config = replace(params.config("train", TrainConfig), epochs=2,
                         steps_per_epoch=spec["steps"], patience=10,
                         stream_above_mb=0 if stream else 1e9, cache_mb=spec["cache_mb"],
                         loader_workers=spec["workers"])
        ends = [time.perf_counter()]
        res = train_student([Source(frames, teacher, ("TRAIN",))],
                            [Source(frames, teacher, ("VAL",))],
                            params.config("student", StudentShape), config,
                            params.value("seed", int), d / f"{stage}.ckpt" / "last.pt",
                            progress=False, device="cpu",
                            on_epoch_end=lambda e, r: ends.append(time.perf_counter()))
        save_student(d / f"{stage}.pt", res.model, res.meta)
        return {"epoch2_s": ends[2] - ends[1], "path": res.meta["data_path"],
                "cache": res.meta.get("chunk_cache")}
    if stage == "infer":
        from echodfkd.student.infer import InferConfig, infer_store

        cfg = _params("infer").config("infer", InferConfig)
        infer_store(d / "train_stream.pt", frames, d / "student.zarr", chunk=cfg.chunk, window=0, warmup=0,
                    videos_per_batch=cfg.videos_per_batch or None, device="cpu", **_layout(),
                    splits=["TEST"], progress=False)
        return {}
    if stage == "evaluate":
        summary = _evaluate(Path(frames), d / "student.zarr", Path(teacher))
        return {"dice": float(np.round(summary.get("dice", float("nan")), 3))}
    raise SystemExit(f"unknown stage {stage!r}")


def _rehearsal_child(stage: str, spec: dict) -> dict:
    """One rehearsal stage with params.yaml's settings; returns frames processed and extras."""
    import threading

    from echodfkd.data.store import open_frames
    from echodfkd.runtime import set_threads

    d = Path(spec["dir"])
    frames, teacher, student = d / "frames.zarr", d / "teacher.zarr", d / "student.zarr"
    params = _params("seed", "train", "student", "infer")
    set_threads(params.value("train.threads", int))
    if stage == "ingest":
        _ingest(d / "raw", frames)
        return {"frames": int(open_frames(frames).frames.shape[0])}
    if stage == "teacher_infer":
        _teacher_infer(frames, teacher)
        return {"frames": int(open_frames(frames).frames.shape[0])}
    if stage == "train":
        import echodfkd.student.train as train_module
        from echodfkd.student.clips import StreamingClips
        from echodfkd.student.shape import StudentShape
        from echodfkd.student.train import Source, TrainConfig, train_student

        config = params.config("train", TrainConfig)
        # instrumentation (this process only): time spent validating, reading clips in the
        # reader threads, and waiting in the training loop for the next batch's clips
        spent = {"validate": 0.0, "read": 0.0, "wait": 0.0}
        lock = threading.Lock()
        validate, read, prefetch = (train_module.validate, StreamingClips.read,
                                    train_module.prefetch)

        def timed_validate(*args, **kw):
            t = time.perf_counter()
            try:
                return validate(*args, **kw)
            finally:
                spent["validate"] += time.perf_counter() - t

        def timed_read(self, *args, **kw):
            t = time.perf_counter()
            try:
                return read(self, *args, **kw)
            finally:
                if threading.current_thread().name.startswith("clips"):
                    with lock:
                        spent["read"] += time.perf_counter() - t

        def timed_prefetch(*args, **kw):
            it = prefetch(*args, **kw)
            while True:
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                spent["wait"] += time.perf_counter() - t
                yield item

        train_module.validate, train_module.prefetch = timed_validate, timed_prefetch
        StreamingClips.read = timed_read
        t0 = time.perf_counter()
        res = train_student([Source(str(frames), str(teacher), ("TRAIN",))],
                            [Source(str(frames), str(teacher), ("VAL",))],
                            params.config("student", StudentShape), config,
                            params.value("seed", int), d / "student.ckpt" / "last.pt",
                            progress=False)
        wall = time.perf_counter() - t0
        from echodfkd.student.files import save_student

        save_student(d / "student.pt", res.model, res.meta)
        m = res.meta
        L = config.sequence_length
        train_frames = m["epochs_run"] * m["steps_per_epoch"] * config.batch * L
        val_frames = m["epochs_run"] * m["val_clips"] * L
        return {"frames": train_frames + val_frames, "train_frames": train_frames,
                "val_frames": val_frames, "val_videos": m["val_videos"], "wall_in": wall,
                "epochs": m["epochs_run"], "path": m["data_path"],
                "cache": m.get("chunk_cache"), **{f"{k}_s": v for k, v in spent.items()}}
    if stage == "infer":
        from echodfkd.student.infer import InferConfig, infer_store

        cfg = params.config("infer", InferConfig)
        infer_store(d / "student.pt", frames, student, chunk=cfg.chunk, window=cfg.window,
                    warmup=cfg.warmup, videos_per_batch=cfg.videos_per_batch or None,
                    device=cfg.device, **_layout(), splits=["TEST"], progress=False)
        return {"frames": _test_frames(frames)}
    if stage == "evaluate":
        summary = _evaluate(frames, student, teacher)
        return {"frames": _test_frames(frames),
                **{k: round(float(summary[k]), 3) for k in ("dice", "dice_teacher")
                   if k in summary}, "n_collapsed": summary.get("n_collapsed")}
    raise SystemExit(f"unknown rehearsal stage {stage!r}")


# ---------------------------------------------------------------------------- parent side

def measure(stage: str, spec: dict) -> dict:
    """Run one stage in a child process: wall seconds, peak RSS (MiB) and what it returned."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", stage, json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    # the child prints its own ru_maxrss (RUSAGE_SELF, KiB on Linux) last: one figure per
    # stage, where RUSAGE_CHILDREN would give the maximum over every child so far
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{stage} failed ({proc.returncode}):\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    res["wall_s"] = wall
    return res


ECHONET_FRAMES = 1.9e6  # EchoNet-Synthetic: about 10,000 videos x 192 frames


def _clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss`` under an hour)."""
    m, sec = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def rehearsal(videos: int, frames: int, work: Path) -> None:
    """Build ``videos`` x ``frames`` phantom videos and run every stage once (module doc)."""
    spec = {"dir": str(work), "videos": videos, "frames": frames, "threads": 1}
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if not (work / "raw" / "FileList.csv").exists():
        measure("phantom", spec)
    print(f"phantom: {videos} videos x {frames} frames ({_clock(time.perf_counter() - t)}, "
          f"not a pipeline stage)", file=sys.stderr, flush=True)
    stages = ["ingest", "teacher_infer", "train", "infer", "evaluate"]
    res = {}
    for s in stages:
        res[s] = measure("rehearsal_" + s, spec)
        print(f"  {s}: {_clock(res[s]['wall_s'])}, {res[s]['rss_mb']:.0f} MiB",
              file=sys.stderr, flush=True)
    total = res["ingest"]["frames"]
    scale = ECHONET_FRAMES / total
    print(f"EchoNet-scale rehearsal: {videos} phantom videos x {frames} frames = {total:,} "
          f"frames (train/val/test 4:1:1), params.yaml settings, {os.cpu_count()} cores")
    print(f"{'stage':<14}{'wall':>9}{'frames':>10}{'frames/s':>10}{'peak RSS MiB':>14}"
          f"{'at 1.9M frames':>16}")
    estimate = 0.0
    for s in stages:
        r = res[s]
        if s == "train":  # the step budget does not grow with the data; validation does
            val = r["validate_s"]
            at = (r["wall_s"] - val) + val * scale
        else:
            at = r["wall_s"] * scale
        estimate += at
        print(f"{s:<14}{_clock(r['wall_s']):>9}{r['frames']:>10,}"
              f"{r['frames'] / r['wall_s']:>10.0f}{r['rss_mb']:>14.0f}{_clock(at):>16}")
    tr = res["train"]
    cache = tr.get("cache") or {}
    looked = cache.get("hits", 0) + cache.get("misses", 0)
    hit = f"{cache['hits'] / looked:.1%} of {looked:,} chunk look-ups" if looked else "n/a"
    print(f"train: {tr['epochs']} epochs, {tr['train_frames']:,} training + "
          f"{tr['val_frames']:,} validation frames ({tr['val_videos']} VAL videos; validation "
          f"{tr['validate_s']:.0f} s of {tr['wall_in']:.0f} s), data path {tr['path']}")
    print(f"train streaming: chunk cache hit rate {hit}; reader threads spent "
          f"{tr['read_s']:.0f} s reading clips; the training loop waited {tr['wait_s']:.1f} s "
          f"for them ({tr['wait_s'] / max(tr['wall_in'] - tr['validate_s'], 1e-9):.1%} of its "
          f"training time)")
    print(f"evaluate: Dice {res['evaluate'].get('dice')}, collapsed videos "
          f"{res['evaluate'].get('n_collapsed')}")
    wall = sum(r["wall_s"] for r in res.values())
    print(f"rehearsal: {total:,} frames end to end in {wall / 60:.1f} min; estimated "
          f"{estimate / 3600:.1f} h at 1.9M frames on this machine")


def same_weights(a: Path, b: Path) -> bool:
    import torch

    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 vs 96 videos x 48 frames")
    p.add_argument("--rehearsal", action="store_true",
                   help="one run of every stage at --videos x --frames (default 1000 x 192)")
    p.add_argument("--videos", type=int, help="videos at 1x (default 40; rehearsal 1000)")
    p.add_argument("--frames", type=int, help="frames per video (default 64; rehearsal 192)")
    p.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    p.add_argument("--cache-mb", type=float, default=64.0, help="streaming chunk cache")
    p.add_argument("--workers", type=int, default=1, help="streaming reader threads")
    p.add_argument("--threads", type=int, default=1, help="torch threads per child")
    p.add_argument("--workdir", help="keep the stores here (default: a temporary folder)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        import resource

        stage, spec = a.child[0], json.loads(a.child[1])
        res = (_rehearsal_child(stage.removeprefix("rehearsal_"), spec)
               if stage.startswith("rehearsal_") else _child(stage, spec))
        res["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="scale_"))
    if a.rehearsal:
        rehearsal(a.videos or 1000, a.frames or 192, work)
        return
    videos, frames = (12, 48) if a.quick else (a.videos or 40, a.frames or 64)
    stages = ["ingest", "teacher_infer", "train_stream", "train_ram", "infer", "evaluate"]
    table: dict[str, dict[int, dict]] = {s: {} for s in stages}
    for scale in (1, 8):
        spec = {"dir": str(work / f"x{scale}"), "videos": videos * scale, "frames": frames,
                "steps": a.steps, "cache_mb": a.cache_mb, "workers": a.workers,
                "threads": a.threads}
        Path(spec["dir"]).mkdir(parents=True, exist_ok=True)
        measure("phantom", spec)
        for s in stages:
            table[s][scale] = measure(s, spec)
            print(f"  {scale}x {s}: {table[s][scale]['wall_s']:.1f} s, "
                  f"{table[s][scale]['rss_mb']:.0f} MiB", file=sys.stderr, flush=True)
    data_mb = {k: videos * k * frames * 2 * 112 * 112 / 2 ** 20 for k in (1, 8)}
    print(f"phantom: {videos} vs {8 * videos} videos x {frames} frames "
          f"({data_mb[1]:.0f} vs {data_mb[8]:.0f} MiB of frames + masks); train: 2 epochs x "
          f"{a.steps} steps, chunk cache {a.cache_mb:g} MiB, {a.workers} reader thread(s), "
          f"{a.threads} torch thread(s); {os.cpu_count()} cores")
    print(f"{'stage':<14}{'wall 1x s':>10}{'wall 8x s':>10}{'ratio':>7}"
          f"{'RSS 1x MiB':>12}{'RSS 8x MiB':>12}{'ratio':>7}")
    for s in stages:
        r1, r8 = table[s][1], table[s][8]
        print(f"{s:<14}{r1['wall_s']:>10.1f}{r8['wall_s']:>10.1f}"
              f"{r8['wall_s'] / r1['wall_s']:>7.2f}{r1['rss_mb']:>12.0f}{r8['rss_mb']:>12.0f}"
              f"{r8['rss_mb'] / r1['rss_mb']:>7.2f}")
    print(f"teacher_infer: {table['teacher_infer'][8].get('note')}")
    for k in (1, 8):
        ts, tr = table["train_stream"][k], table["train_ram"][k]
        print(f"{k}x epoch 2 (steps + validation): stream {ts['epoch2_s']:.2f} s "
              f"(chunk cache {ts['cache']}), RAM {tr['epoch2_s']:.2f} s; same weights: "
              f"{same_weights(work / f'x{k}' / 'train_stream.pt', work / f'x{k}' / 'train_ram.pt')}"
              f"; evaluate Dice {table['evaluate'][k].get('dice')}")
    rss = table["train_stream"][8]["rss_mb"] / table["train_stream"][1]["rss_mb"]
    speed = table["train_ram"][8]["epoch2_s"] / table["train_stream"][8]["epoch2_s"]
    print(f"train peak RSS, 8x data / 1x data: {rss:.2f}")
    print(f"streaming/RAM training speed: {speed:.2f}")


if __name__ == "__main__":
    main()
