"""Teacher throughput benchmark: frames/s and achieved GFLOP/s against the machine's matmul rate.

    python bench/teacher.py [--device auto|cpu|cuda] [--batch 16] [--threads 1] [--repeats 3]

Prints one table, measured side by side in one run (absolute figures on a shared machine are
noisy; the ratios are the useful part):

- the fp32 matmul rate (torch.mm of two n x n matrices, 2 n^3 FLOPs), and bf16 on CUDA;
- per model (default UNet teacher, full DeepLabV3-ResNet50) at 112x112: weights, GFLOPs per
  frame (torch.utils.flop_counter.FlopCounterMode: convolutions and matmuls only, a
  multiply-add counted as 2 FLOPs), frames/s of the forward pass on a prepared batch and of the
  whole ``TeacherModel.predict_proba`` path (uint8 in, preprocessing, sigmoid, copy back),
  achieved GFLOP/s and its fraction of the matmul rate. On CUDA also with autocast (``amp``),
  compared with the bf16 matmul rate.

The matmul rate is a yardstick, not a hard peak: a fraction above 1 happens when the
convolution library beats the BLAS behind torch.mm (on AMD EPYC CPUs MKL's sgemm takes a
slower path than oneDNN's AVX-512 convolutions; on CUDA cuDNN convolutions may use TF32 while
fp32 matmuls do not, by torch's defaults).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from echodfkd.runtime import resolve_device
from echodfkd.teacher.archs import ARCHS, amp_dtype, build_model
from echodfkd.teacher.model import TeacherModel


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call, seconds."""
    fn()
    _sync(dev)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def matmul_gflops(dev: torch.device, n: int, dtype: torch.dtype, repeats: int) -> float:
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: torch.mm(a, b), dev, repeats) / 1e9


def flops_per_frame(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--unet-width", type=int, default=8,
                    help="width of the default teacher UNet (params.yaml teacher.width)")
    ap.add_argument("--matmul-n", type=int, default=0, help="0: 2048 on CPU, 8192 on CUDA")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = resolve_device(args.device)
    n = args.matmul_n or (8192 if dev.type == "cuda" else 2048)

    half = amp_dtype(dev)
    peak = {"fp32": matmul_gflops(dev, n, torch.float32, 3 * args.repeats)}
    if dev.type == "cuda":
        peak["amp"] = matmul_gflops(dev, n, half, 3 * args.repeats)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch} frames of 112x112")
    for k, v in peak.items():
        kind = "fp32" if k == "fp32" else str(half).removeprefix("torch.")
        print(f"matmul {kind} ({n}x{n}): {v:,.1f} GFLOP/s")
    print("FLOPs: FlopCounterMode (conv + matmul), a multiply-add = 2 FLOPs\n")

    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 112, 112), dtype=np.uint8)
    models = [(f"unet w{args.unet_width} d3", "unet", {"width": args.unet_width, "depth": 3}),
              ("deeplabv3_resnet50", "deeplabv3_resnet50", {"num_classes": 1})]
    header = (f"{'model':<20} {'mode':<5} {'weights':>11} {'GFLOP/frame':>11} "
              f"{'fwd fr/s':>9} {'GFLOP/s':>9} {'of mm':>6} {'pipe fr/s':>9}")
    print(header + "\n" + "-" * len(header))
    for label, arch, config in models:
        try:
            model = build_model(arch, config).to(dev).eval()
        except ImportError as e:
            print(f"{label:<20} unavailable ({e})")
            continue
        x = ARCHS[arch].preprocess(torch.from_numpy(frames).to(dev))
        gflop = flops_per_frame(model, x) / 1e9
        weights = sum(p.numel() for p in model.parameters())
        for mode in peak:
            amp = mode == "amp"
            teacher = TeacherModel(arch, config, model, dev, amp=amp)
            def forward():
                with torch.inference_mode(), torch.autocast(dev.type, dtype=half,
                                                            enabled=amp):
                    model(x)

            fwd = args.batch / timed(forward, dev, args.repeats)
            pipe = args.batch / timed(lambda: teacher.predict_proba(frames, args.batch), dev,
                                      args.repeats)
            achieved = gflop * fwd
            print(f"{label:<20} {mode:<5} {weights:>11,} {gflop:>11.3f} {fwd:>9.1f} "
                  f"{achieved:>9.1f} {achieved / peak[mode]:>6.2f} {pipe:>9.1f}")


if __name__ == "__main__":
    main()
