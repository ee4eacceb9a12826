"""Benchmark: student training input pipeline and student vs teacher inference speed.

One run, all figures measured side by side (the machine may be shared and noisy: compare the
ratios, not the absolute numbers):

1. Training clips/s (``sequence_length`` frames + soft masks, as float tensors) from
   (a) RAM after one load from Zarr (what ``echodfkd.train`` does; the load time is printed),
   (b) the Zarr stores read clip by clip, (c) MJPG AVI files decoded for every clip plus the
   teacher's ``.seg.npz`` masks (what a loader over EchoNet-style files does), and for scale
   the student's training step (forward + backward) in clips/s.
2. Inference frames/s at 112x112 of the default student (whole video, state carried) and of a
   teacher ``UNet`` (``echodfkd.models.unet``, width 16, depth 3) on the same frames, with
   weights and FLOPs per frame.

Data: ``--frames``/``--masks`` stores when they exist (default: the synthetic source of the
pipeline), else a small phantom store (ground-truth masks as targets) built in a temp folder.

    python bench/student.py [--videos 8] [--clips 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from echodfkd.cost import count_weights, flops_per_frame, frames_per_second
from echodfkd.models.convlstm import StudentNet
from echodfkd.store import (INDEX_COLUMNS, TRACED_COLUMNS, finish_frame_store, init_frame_store,
                            init_mask_store, open_frames, open_masks)
from echodfkd.student_infer import predict_video
from echodfkd.train import TrainConfig


def phantom_stores(folder: Path, n_videos: int, n_frames: int = 64) -> tuple[Path, Path]:
    """A synthetic-style phantom frame store and a mask store of its ground truth * 255."""
    from echodfkd.phantom import make_video

    vids = [make_video("synthetic", 0, "TRAIN", i, n_frames, i) for i in range(n_videos)]
    stop = np.arange(1, n_videos + 1) * n_frames
    index = pd.DataFrame({
        "FileName": [v["FileName"] for v in vids], "Split": "TRAIN", "start": stop - n_frames,
        "stop": stop, "FPS": [v["FPS"] for v in vids], "EF": [v["EF"] for v in vids],
        "ESV": 0.0, "EDV": 0.0, "FrameHeight": 112, "FrameWidth": 112,
        "NumberOfFrames": n_frames})[INDEX_COLUMNS]
    fpath, mpath = folder / "frames.zarr", folder / "masks.zarr"
    g = init_frame_store(fpath, index, 0, with_gt=False)
    g["frames"][:] = np.concatenate([v["frames"] for v in vids])
    finish_frame_store(g, index, pd.DataFrame(columns=TRACED_COLUMNS))
    mg = init_mask_store(mpath, open_frames(fpath))
    mg["masks"][:] = np.concatenate([v["masks"] for v in vids]) * 255
    mg.attrs["complete"] = True
    return fpath, mpath


def write_avi(path: Path, frames: np.ndarray, fps: float = 50.0) -> None:
    w = cv2.VideoWriter(str(path), cv2.CAP_OPENCV_MJPEG, cv2.VideoWriter_fourcc(*"MJPG"),
                        fps, (frames.shape[2], frames.shape[1]), True)
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_GRAY2BGR))
    w.release()


def decode_avi(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f[..., 0])
    cap.release()
    return np.stack(out)


def to_tensors(frames: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255),
            torch.from_numpy(np.ascontiguousarray(masks)).float().div_(255))


def clips_per_second(fetch, clips: list[tuple[int, int]]) -> float:
    t0 = time.perf_counter()
    for v, s in clips:
        fetch(v, s)
    return len(clips) / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", default="data/frames/synthetic.zarr")
    p.add_argument("--masks", default="data/teacher/synthetic.zarr")
    p.add_argument("--videos", type=int, default=8, help="videos the clips are drawn from")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--sequence-length", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    L = a.sequence_length
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if Path(a.frames).exists() and Path(a.masks).exists():
            fpath, mpath, origin = Path(a.frames), Path(a.masks), a.frames
        else:
            fpath, mpath = phantom_stores(tmp, a.videos)
            origin = f"phantom store built for the bench ({a.videos} videos x 64 frames)"
        fs = open_frames(fpath)
        ms = open_masks(mpath, frames=fs)
        rows = fs.index.iloc[:a.videos]
        starts, stops = rows["start"].to_numpy(), rows["stop"].to_numpy()
        avi_dir = tmp / "avi"
        avi_dir.mkdir()
        for i, r in enumerate(rows.itertuples()):
            write_avi(avi_dir / f"{r.FileName}.avi", fs.video(i))
            seg = ms.masks[int(r.start):int(r.stop)][:, None]  # (T, 1, 112, 112) as EchoNet
            np.savez_compressed(avi_dir / f"{r.FileName}.seg.npz", seg)
        rng = np.random.default_rng(0)
        vids = rng.integers(0, len(rows), a.clips)
        clips = [(int(v), int(rng.integers(0, stops[v] - starts[v] - L + 1))) for v in vids]

        t0 = time.perf_counter()
        ram_f = [np.asarray(fs.frames[s:e]) for s, e in zip(starts, stops)]
        ram_m = [np.asarray(ms.masks[s:e]) for s, e in zip(starts, stops)]
        load_s = time.perf_counter() - t0
        n_frames = int((stops - starts).sum())

        def from_ram(v, s):
            return to_tensors(ram_f[v][s:s + L], ram_m[v][s:s + L])

        def from_zarr(v, s):
            a0 = int(starts[v]) + s
            return to_tensors(fs.frames[a0:a0 + L], ms.masks[a0:a0 + L])

        names = rows["FileName"].tolist()

        def from_avi(v, s):
            frames = decode_avi(avi_dir / f"{names[v]}.avi")
            with np.load(avi_dir / f"{names[v]}.seg.npz") as z:
                masks = z["arr_0"][:, 0]
            return to_tensors(frames[s:s + L], masks[s:s + L])

        x_ram, _ = from_ram(*clips[0])
        x_avi, _ = from_avi(*clips[0])
        mjpg_err = (x_ram - x_avi).abs().max().item() * 255
        rates = {"RAM (loaded once from Zarr)": clips_per_second(from_ram, clips),
                 "Zarr, clip by clip": clips_per_second(from_zarr, clips),
                 "AVI decode + .seg.npz per clip": clips_per_second(from_avi, clips)}

        cfg = TrainConfig()
        torch.manual_seed(0)
        student = StudentNet(**cfg.model_config())
        opt = torch.optim.Adam(student.parameters(), cfg.lr)
        xb = torch.rand(cfg.batch_size, L, 1, 112, 112)
        yb = torch.rand_like(xb)

        def step():
            logits, _ = student(xb)
            loss = F.binary_cross_entropy_with_logits(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step_rate = frames_per_second(step, cfg.batch_size, repeats=3)

        print(f"data: {origin}; clips of {L} frames from {len(rows)} videos; "
              f"{a.threads} torch thread(s); shared machine: timings are noisy, compare ratios")
        print(f"\n1. training input, {a.clips} clips (frames + soft masks -> float tensors)")
        print(f"   one-time load into RAM: {load_s:.2f} s for {n_frames} frames "
              f"({n_frames / load_s:.0f} frames/s)")
        base = rates["AVI decode + .seg.npz per clip"]
        for k, r in rates.items():
            print(f"   {k:32s} {r:9.1f} clips/s   x{r / base:6.1f} vs AVI")
        print(f"   student training step (default config, batch {cfg.batch_size} at 112x112): "
              f"{step_rate:.1f} clips/s")
        print(f"   (MJPG round trip changes pixels by up to {mjpg_err:.0f} grey levels)")

        student.eval()
        video = fs.video(0)
        t = len(video)
        s_fps = frames_per_second(lambda: predict_video(student, video, chunk=64), t, repeats=3)
        lines = [("student " + " ".join(f"{k}={v}" for k, v in cfg.model_config().items()),
                  count_weights(student), flops_per_frame(student, "video"), s_fps)]
        try:
            from echodfkd.models.unet import UNet
        except ImportError:
            print("\n   echodfkd.models.unet.UNet not available: teacher timing skipped")
        else:
            unet = UNet(width=16, depth=3).eval()
            xt = torch.from_numpy(video).float().div(255)[:, None]

            def run_unet():
                with torch.inference_mode():
                    for i in range(0, t, 64):
                        torch.sigmoid(unet(xt[i:i + 64]))
            lines.append(("teacher UNet width=16 depth=3", count_weights(unet),
                          flops_per_frame(unet, "image"),
                          frames_per_second(run_unet, t, repeats=3)))
        print(f"\n2. inference at 112x112 on a {t}-frame video (chunks / batches of 64 frames)")
        for name, w, fl, fps in lines:
            print(f"   {name:52s} {w:9,d} weights {fl / 1e9:7.3f} GFLOPs/frame "
                  f"{fps:8.1f} frames/s")
        if len(lines) == 2:
            print(f"   student / teacher: weights x{lines[0][1] / lines[1][1]:.3f}, FLOPs "
                  f"x{lines[0][2] / lines[1][2]:.3f}, speed x{lines[0][3] / lines[1][3]:.2f}")


if __name__ == "__main__":
    main()
