"""GPU check: every CUDA path of the pipeline once, with figures beside the CPU's (issue 18).

    python bench/gpu_check.py            # a few minutes on one GPU

Without CUDA it prints one line saying so and exits 0. With CUDA, side by side with the CPU
(same weights, same inputs; CPU figures with all cores):

- teacher inference (``TeacherModel.predict_proba``, the teacher_infer path): the full
  EchoNet DeepLabV3-ResNet50 and the default UNet teacher, fp32 and AMP (bf16 autocast):
  frames/s, and parity: the largest |p_cuda - p_cpu| and the fraction of pixels whose
  binarised (p > 0.5) mask differs;
- student training steps (the train stage's forward, loss and backward on 112x112 clips of
  ``train.sequence_length`` frames), fp32 and ``train.amp``: frames/s and peak GPU memory, for
  the default student (params.yaml ``student``) and the paper's 3 x 3 x 12; parity: the
  relative difference of the first step's loss against the CPU's;
- student inference (``predict_videos``, the infer path) with 8 videos per batch on CUDA and 1
  on the CPU: frames/s; parity: the largest |uint8 difference| of the masks.

Weights are random (seeded); the figures are about speed and numerical agreement, not quality.
The last line is the headline: the GPU/CPU speed ratios of teacher and student inference.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn, cuda: bool, repeats: int) -> float:
    """Best wall time (s) of ``repeats`` calls after one warm-up call."""
    import torch

    fn()
    if cuda:
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def teacher_rows(frames: np.ndarray, cpu_frames: int, repeats: int, accel
                 ) -> tuple[list[str], float]:
    """The teacher lines, and the GPU/CPU speed ratio of DeepLabV3 with AMP (the first
    model's AMP row)."""
    import torch
    from echodfkd.teacher.archs import build_model
    from echodfkd.teacher.model import TeacherModel

    rows, amp_ratio = [], 0.0
    cuda, cpu = accel, torch.device("cpu")
    sync = accel.type == "cuda"
    for label, arch, config in [("DeepLabV3-ResNet50", "deeplabv3_resnet50", {"num_classes": 1}),
                                ("UNet w8 (default)", "unet", {"width": 8, "depth": 3})]:
        torch.manual_seed(0)
        model = build_model(arch, config).eval()
        on_cpu = TeacherModel(arch, config, model, cpu, amp=False)
        p_cpu = on_cpu.predict_proba(frames[:cpu_frames], 16)
        cpu_fps = cpu_frames / _timed(lambda: on_cpu.predict_proba(frames[:cpu_frames], 16),
                                      False, 1)
        gpu_model = build_model(arch, config)
        gpu_model.load_state_dict(model.state_dict())
        gpu_model = gpu_model.to(cuda).eval()
        for amp in (False, True):
            on_gpu = TeacherModel(arch, config, gpu_model, cuda, amp=amp)
            fps = len(frames) / _timed(lambda: on_gpu.predict_proba(frames, 64), sync, repeats)
            p = on_gpu.predict_proba(frames[:cpu_frames], 64)
            diff = float(np.abs(p - p_cpu).max())
            flips = float(((p > 0.5) != (p_cpu > 0.5)).mean())
            rows.append(f"teacher {label:<19} {'amp' if amp else 'fp32':<5} "
                        f"{fps:>10.0f} fr/s  CPU {cpu_fps:>7.1f} fr/s  x{fps / cpu_fps:>7.1f}  "
                        f"max|dp| {diff:.1e}  mask flips {flips:.1e}")
            if amp:
                amp_ratio = amp_ratio or fps / cpu_fps
    return rows, amp_ratio


def student_rows(shapes: dict, clip: int, batch: int, steps: int, videos: np.ndarray,
                 repeats: int, accel) -> tuple[list[str], float]:
    import torch
    from echodfkd.student.infer import predict_videos
    from echodfkd.student.model import StudentNet
    from echodfkd.student.train import training_loss

    rows, infer_ratio = [], 0.0
    cuda, sync = accel, accel.type == "cuda"
    gen = np.random.default_rng(0)
    x_np = gen.random((batch, clip, 1, 112, 112), dtype=np.float32)
    y_np = (gen.random((batch, clip, 1, 112, 112)) > 0.5).astype(np.float32)
    for name, shape in shapes.items():
        torch.manual_seed(0)
        model = StudentNet(**shape)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for amp in (False, True):
            m = StudentNet(**shape).to(cuda)
            m.load_state_dict(state)
            m.train()
            opt = torch.optim.Adam(m.parameters(), 1e-3)
            x, y = torch.from_numpy(x_np).to(cuda), torch.from_numpy(y_np).to(cuda)
            first = []

            def step():
                with torch.autocast(cuda.type, dtype=torch.bfloat16, enabled=amp):
                    logits, _ = m(x)
                loss = training_loss(logits.float(), y, "bce", 1.0)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                first.append(loss.item())

            step()
            if sync:
                torch.cuda.reset_peak_memory_stats()
            fps = steps * batch * clip / _timed(lambda: [step() for _ in range(steps)], sync, 1)
            mem = torch.cuda.max_memory_allocated() / 2 ** 20 if sync else float("nan")
            ref = StudentNet(**shape)
            ref.load_state_dict(state)
            ref.train()
            with torch.no_grad():
                cpu_loss = float(training_loss(ref(torch.from_numpy(x_np))[0], torch.from_numpy(
                    y_np), "bce", 1.0))
            rows.append(f"train   {name:<19} {'amp' if amp else 'fp32':<5} {fps:>10.0f} fr/s  "
                        f"peak {mem:>7.0f} MiB  first-step loss rel. diff "
                        f"{abs(first[0] - cpu_loss) / cpu_loss:.1e}")
        model.eval()
        gpu = StudentNet(**shape).to(cuda).eval()
        gpu.load_state_dict(state)
        cpu_out = predict_videos(model, videos[:1], chunk=64, window=0, warmup=0)
        cpu_fps = videos.shape[1] / _timed(
            lambda: predict_videos(model, videos[:1], chunk=64, window=0, warmup=0), False, 1)
        gpu_fps = videos[:8].size / (112 * 112) / _timed(
            lambda: predict_videos(gpu, videos[:8], chunk=64, window=0, warmup=0), sync, repeats)
        gpu_out = predict_videos(gpu, videos[:1], chunk=64, window=0, warmup=0)
        diff = int(np.abs(gpu_out.astype(int) - cpu_out.astype(int)).max())
        rows.append(f"infer   {name:<19} 8 vid {gpu_fps:>10.0f} fr/s  CPU {cpu_fps:>7.1f} fr/s  "
                    f"x{gpu_fps / cpu_fps:>7.1f}  max|d uint8| {diff}")
        infer_ratio = infer_ratio or gpu_fps / cpu_fps
    return rows, infer_ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=512, help="teacher frames per GPU call set")
    ap.add_argument("--cpu-frames", type=int, default=32, help="teacher frames on the CPU")
    ap.add_argument("--steps", type=int, default=10, help="timed training steps")
    ap.add_argument("--batch", type=int, default=8, help="training clips per step")
    ap.add_argument("--video-frames", type=int, default=192, help="frames per student video")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpu-dry-run", action="store_true",
                    help="run every path with the CPU standing in for the GPU (tests the "
                         "script; the figures mean nothing)")
    args = ap.parse_args(argv)

    import torch
    accel = torch.device("cpu" if args.cpu_dry_run else "cuda")
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device (torch {torch.__version__}, "
              f"cuda build {torch.version.cuda}): nothing to check")
        return 0
    from echodfkd.cli import read_params
    from echodfkd.student.shape import StudentShape

    params = read_params(("student", "train"), ROOT / "params.yaml")
    shape = asdict(params.config("student", StudentShape))
    clip = params.value("train.sequence_length", int)
    name = "CPU dry run" if args.cpu_dry_run else torch.cuda.get_device_name()
    print(f"{name}; torch {torch.__version__}; CPU: "
          f"{torch.get_num_threads()} threads")
    gen = np.random.default_rng(0)
    frames = gen.integers(0, 256, (args.frames, 112, 112), dtype=np.uint8)
    videos = gen.integers(0, 256, (8, args.video_frames, 112, 112), dtype=np.uint8)
    t0 = time.perf_counter()
    t_rows, teacher_ratio = teacher_rows(frames, args.cpu_frames, args.repeats, accel)
    print("\n".join(t_rows), flush=True)
    shapes = {"default " + "x".join(str(shape[k]) for k in ("blocks", "layers_per_block",
                                                            "hidden")): shape,
              "paper 3x3x12": {**shape, "blocks": 3, "layers_per_block": 3, "hidden": 12}}
    s_rows, infer_ratio = student_rows(shapes, clip, args.batch, args.steps, videos,
                                       args.repeats, accel)
    print("\n".join(s_rows))
    print(f"checked in {time.perf_counter() - t0:.0f} s; headline GPU/CPU: DeepLabV3 teacher "
          f"(amp) x{teacher_ratio:.1f}, default student inference x{infer_ratio:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
