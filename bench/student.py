"""Benchmark: student training input pipeline and student vs teacher inference speed.

One run, all figures measured side by side (the machine may be shared and noisy: compare the
ratios, not the absolute numbers):

1. Training clips/s (``sequence_length`` frames + soft masks, as float tensors) from
   (a) RAM after one load from Zarr (what ``echodfkd.student.train`` does; the load time is printed),
   (b) the Zarr stores read clip by clip, (c) MJPG AVI files decoded for every clip plus the
   teacher's ``.seg.npz`` masks (what a loader over EchoNet-style files does), and for scale
   the student's training step (forward + backward) in clips/s.
2. Inference frames/s at 112x112 of the default student (whole video, state carried) and of a
   teacher ``UNet`` (``echodfkd.teacher.unet``, width 16, depth 3) on the same frames, with
   weights and FLOPs per frame.

3. ``StudentNet`` against the same network written the common way (``StraightStudent``
   below: one conv over ``[x_t, h]`` at every time step, ``chunk`` + three sigmoids, nearest
   upsampling then conv, 1x1 conv head; same parameters, loaded from the same state_dict),
   for the pipeline's default student (``--params``' ``students.student``, 4 blocks x 2
   layers x hidden 2 at the time of writing) and the paper's (3 x 3 x 12): training (forward
   + backward of BCE, batch 2 x 16 frames) and inference (no grad, 1 video x 32 frames, state
   from zero), at 112 and 56 pixels, with 1 and 2 torch threads. Inference rows add the
   TorchScript export (``echodfkd.student.export``) run on the same frames. Variants are interleaved
   round by round and each figure is the median over ``--rounds`` rounds; "noise" is the
   largest (p75 - p25) / median over the variants of a row. ``convs`` replays only the
   convolutions the straightforward network runs (:class:`ConvReplay`: the same conv calls on
   inputs of the same shapes, with their backward for training), and ``ceiling`` = straight
   time / convs time is the largest ratio any formulation can reach while running those
   convolutions with the same kernels: StudentNet goes above it only where it runs *other*
   conv calls that are faster (its split input gradients, its decoder at low resolution).
   The last line prints the median and the smallest project / straightforward ratio.
   ``--device cuda`` runs the same rows on a GPU in one pass (no thread counts, no
   TorchScript column) and adds ``project amp`` (bf16 autocast, the ``train.amp`` path) to
   the training rows; the clock stops after ``torch.cuda.synchronize``.

   What StudentNet does differently (``echodfkd/student/model.py``; per-shape figures from
   ``bench/convlstm_kernels.py``): under autograd each ConvLSTM layer is one autograd Function
   over the whole sequence (hand-written backward through time: fused sigmoid/tanh backward
   kernels into one gate-gradient buffer, the weight gradient and the input gradients as
   separate conv-backward calls, the thin ones -- fewer than 16 channels -- with the im2col
   kernel, 1.75x faster than autograd's single oneDNN call at layer 0 of the default student,
   ~1.0x on the wider layers); without grad the gate math in place; the 2x2 max-pool without
   grad as two ``torch.maximum`` (11-14x faster than ``F.max_pool2d``'s CPU kernel).

   Tried and dropped (measured no gain or a loss on the 2-core EPYC): the input half of the
   ConvLSTM conv batched over all B*T frames, in the forward (one large conv leaves the
   caches) and in the backward (the weight gradient over 2, 4, 8 or 16 steps per call is no
   faster than per step, over 16 it is 1.2-2x slower: big fresh buffers are page-faulted on
   every call), channels_last for the recurrence, splitting the per-frame convs into small
   frame groups, chunking inference in time, ``torch.compile`` of the gate math (guard
   overhead ~ its gain), a hand-written max-pool backward with max_pool2d's tie rule (slower
   than max_pool2d's own). bf16 convolutions were 1.4-1.6x faster on the deeper layers but
   change the logits by ~1e-2: not used. The paper student is bound by its convolutions
   (~80% of a training step, oneDNN near its best on these shapes), which both formulations
   run with the same FLOPs: a 3x3 conv of 96 -> 192 channels at 28 px (batch 2) runs at
   ~110 GFLOP/s on one core in either layout, which is two 256-bit FMAs every cycle at
   ~3.4 GHz, the most this Zen 4 core issues: direct convolution has no headroom left.
   Measured and dropped in the last round (whole ConvLSTM layer, forward + backward over 16
   steps, channels-last against channels-first): channels-last layers 0.94-1.08x except one
   shape (6 -> 12 channels at 56 px, 1.33x), because the gate math on channel slices of
   interleaved pixels is slower than what the faster conv saves; NNPACK's Winograd
   (``torch._nnpack_spatial_convolution``, forward only) 0.7-1.4x oneDNN per shape; a
   Winograd F(4x4, 3x3) written in torch ops (tile gather, transforms as small matrix
   products, 36 batched GEMMs; forward, batch 2) against oneDNN channels-last: 1.55-1.94x on
   the 28- and 14-px layers of the paper student, 1.15-1.23x at 56 px and 0.55-0.77x at
   112 px, with 3x the rounding error. A third of the paper student's conv work is at 28 px,
   so even with the same gain in the backward that is an estimated 5-10% of a training step,
   far from what the target needs; not adopted.

4. Export formats (``echodfkd.student.export``): the default and the paper student at 112x112, one
   video of ``--export-frames`` frames, state carried: eager ``StudentNet`` (inference_mode,
   one call), the TorchScript step and the ONNX step in onnxruntime (CPUExecutionProvider,
   intra-op threads = torch threads), with 1 and 2 threads; frames/s (median over ``--rounds``
   interleaved rounds, the order rotated every round), the per-round speed ratios to eager and
   to TorchScript (median, eager's p25-p75), and the parity (max abs diff of the logits and
   the final state against eager). Without onnx/onnxruntime the ONNX rows are skipped
   ("onnxruntime not installed: skipped"). On a shared machine run it with
   ``OMP_WAIT_POLICY=PASSIVE`` (onnxruntime's spinning is then turned off too): torch's
   busy-waiting OpenMP threads otherwise make its 2-thread rows 10-30x slower. The last line
   prints the median and smallest onnxruntime / TorchScript ratio; the figures and the choice
   are in ``echodfkd/student/export.py``'s docstring.

Data: ``--frames``/``--masks`` stores when they exist (default: the synthetic source of the
pipeline), else a small phantom store (ground-truth masks as targets) built in a temp folder.

    python bench/student.py [--videos 8] [--clips 40] [--threads 1] [--sections 1 2 3 4]
    python bench/student.py --sections 3 --device cuda     # section 3 on a GPU (+ bf16 AMP)
    OMP_WAIT_POLICY=PASSIVE python bench/student.py --sections 4 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from echodfkd.cost import count_weights, flops_per_frame, frames_per_second
from echodfkd.student.export import (export_student, export_student_onnx, load_exported,
                             load_exported_onnx)
from echodfkd.student.model import StudentNet
from echodfkd.data.store import (INDEX_COLUMNS, TRACED_COLUMNS, finish_frame_store, init_frame_store,
                            init_mask_store, open_frames, open_masks)
from echodfkd.student.infer import predict_video
from echodfkd.student.train import TrainConfig


ROOT = Path(__file__).resolve().parents[1]

def phantom_stores(folder: Path, n_videos: int, n_frames: int = 64) -> tuple[Path, Path]:
    """A synthetic-style phantom frame store and a mask store of its ground truth * 255."""
    from echodfkd.data.phantom import make_video

    vids = [make_video("synthetic", 0, "TRAIN", i, n_frames, i) for i in range(n_videos)]
    stop = np.arange(1, n_videos + 1) * n_frames
    index = pd.DataFrame({
        "FileName": [v["FileName"] for v in vids], "Split": "TRAIN", "start": stop - n_frames,
        "stop": stop, "FPS": [v["FPS"] for v in vids], "EF": [v["EF"] for v in vids],
        "ESV": 0.0, "EDV": 0.0, "FrameHeight": 112, "FrameWidth": 112,
        "NumberOfFrames": n_frames})[INDEX_COLUMNS]
    fpath, mpath = folder / "frames.zarr", folder / "masks.zarr"
    from echodfkd.cli import read_params
    params = read_params(("ingest.shard_frames", "ingest.chunk_frames"), ROOT / "params.yaml")
    layout = {k: params.value(f"ingest.{k}", int) for k in ("shard_frames", "chunk_frames")}
    g = init_frame_store(fpath, index, 0, with_gt=False, **layout)
    g["frames"][:] = np.concatenate([v["frames"] for v in vids])
    finish_frame_store(g, index, pd.DataFrame(columns=TRACED_COLUMNS))
    mg = init_mask_store(mpath, open_frames(fpath), **layout)
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


class StraightCell(nn.Module):
    """ConvLSTM layer written the common way: one conv over [x_t, h] at every step."""

    def __init__(self, in_ch: int, hidden: int, kernel_size: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_ch + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(self, x, state=None):
        b, t, _, hh, ww = x.shape
        h = c = x.new_zeros(b, self.hidden, hh, ww)
        if state is not None:
            h, c = state
        out = []
        for k in range(t):
            i, f, o, g = self.conv(torch.cat([x[:, k], h], 1)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            out.append(h)
        return torch.stack(out, 1), (h, c)


class StraightStudent(nn.Module):
    """StudentNet(skip=False)'s architecture and parameter names, written the common way
    (BatchNorm, pooling, decoder and head applied per frame on (B*T, C, H, W))."""

    def __init__(self, blocks: int, layers_per_block: int, hidden: int,
                 kernel_size: int = 3) -> None:
        super().__init__()
        self.blocks, self.layers_per_block = blocks, layers_per_block
        self.cells, self.norms = nn.ModuleList(), nn.ModuleList()
        in_ch = 1
        for k in range(blocks):
            for _ in range(layers_per_block):
                self.cells.append(StraightCell(in_ch, hidden * 2 ** k, kernel_size))
                self.norms.append(nn.BatchNorm2d(hidden * 2 ** k))
                in_ch = hidden * 2 ** k
        self.up_convs, self.up_norms = nn.ModuleList(), nn.ModuleList()
        for k in range(blocks - 1, 0, -1):
            self.up_convs.append(nn.Conv2d(hidden * 2 ** k, hidden * 2 ** (k - 1), 3, padding=1))
            self.up_norms.append(nn.BatchNorm2d(hidden * 2 ** (k - 1)))
        self.head = nn.Conv2d(hidden, 1, 1)

    def forward(self, x, state=None):
        def per_frame(fn, y):
            z = fn(y.flatten(0, 1))
            return z.view(y.shape[0], y.shape[1], *z.shape[1:])
        new, layer = [], 0
        for k in range(self.blocks):
            for _ in range(self.layers_per_block):
                x, s = self.cells[layer](x, None if state is None else state[layer])
                new.append(s)
                x = per_frame(self.norms[layer], x)
                layer += 1
            if k < self.blocks - 1:
                x = per_frame(lambda y: F.max_pool2d(y, 2), x)
        for conv, norm in zip(self.up_convs, self.up_norms):
            x = per_frame(lambda y: F.relu(norm(conv(F.interpolate(y, scale_factor=2)))), x)
        return per_frame(self.head, x), new


class ConvReplay:
    """The convolutions a network runs in one call, and nothing else: the constructor runs the
    network once on ``x`` with forward hooks on its ``nn.Conv2d`` modules and keeps, for every
    conv call, a random input of the same shape (and whether that input needed a gradient);
    calling the replay runs the same ``conv2d`` calls again, and with ``backward`` each one's
    ``convolution_backward`` (input gradient only where autograd computed one, weight and
    bias always) on a random output gradient. Its time is the floor of any formulation that
    runs these convolutions with the same kernels."""

    def __init__(self, net: nn.Module, x: torch.Tensor) -> None:
        self.calls = []

        def hook(module, inputs, output):
            z = inputs[0]
            self.calls.append((module, torch.rand(z.shape, device=z.device), z.requires_grad,
                               torch.rand(output.shape, device=z.device)))
        handles = [m.register_forward_hook(hook) for m in net.modules()
                   if isinstance(m, nn.Conv2d)]
        try:
            with torch.enable_grad():
                net(x)
        finally:
            for h in handles:
                h.remove()

    def __call__(self, backward: bool) -> None:
        for conv, z, z_grad, g in self.calls:
            with torch.no_grad():
                F.conv2d(z, conv.weight, conv.bias, padding=conv.padding)
            if backward:
                torch.ops.aten.convolution_backward(
                    g, z, conv.weight, [conv.weight.shape[0]], [1, 1], list(conv.padding),
                    [1, 1], False, [0, 0], 1, [z_grad, True, True])


def main_student(params: Path) -> tuple[int, int, int]:
    """(blocks, layers_per_block, hidden) of the pipeline's main student (params.yaml
    ``student``)."""
    from echodfkd.cli import read_params
    from echodfkd.student.shape import StudentShape
    row = read_params(("student",), params).config("student", StudentShape)
    return row.blocks, row.layers_per_block, row.hidden


def interleaved(variants: dict, rounds: int, device: torch.device = torch.device("cpu")
                ) -> dict[str, list[float]]:
    """Seconds per call of each variant: one warm-up call each, then ``rounds`` rounds that
    call every variant once in turn (on CUDA the clock stops after a synchronize)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = {k: [] for k in variants}
    for fn in variants.values():
        fn()
    sync()
    for _ in range(rounds):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return times


def side_by_side(rounds: int, threads: list[int], tmp: Path,
                 students: dict[str, tuple[int, int, int]],
                 device: torch.device = torch.device("cpu")) -> list[dict]:
    """Section 3: one row per student x mode x resolution x threads (see module docstring).
    On CUDA one pass (threads do not apply) adds ``project amp`` (bf16 autocast, as
    ``train.amp``) to the training rows and leaves out the TorchScript export."""
    rows = []
    cuda = device.type == "cuda"
    for n_threads in ([0] if cuda else threads):
        if not cuda:
            torch.set_num_threads(n_threads)
        for name, cfg in students.items():
            for mode in ("train", "infer"):
                for res in (112, 56):
                    torch.manual_seed(0)
                    proj = StudentNet(*cfg, kernel_size=3, skip=False)
                    straight = StraightStudent(*cfg)
                    straight.load_state_dict(proj.state_dict())
                    proj, straight = proj.to(device), straight.to(device)
                    if mode == "train":
                        x = torch.rand(2, 16, 1, res, res, device=device)
                        y = torch.rand_like(x)

                        def call(m, x=x, y=y, amp=False):
                            m.zero_grad(set_to_none=True)
                            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                                out = m(x)[0]
                            F.binary_cross_entropy_with_logits(out.float(), y).backward()
                        variants = {"project": lambda: call(proj),
                                    "straight": lambda: call(straight)}
                        if cuda:
                            variants["project amp"] = lambda: call(proj, amp=True)
                    else:
                        proj.eval()
                        straight.eval()
                        x = torch.rand(1, 32, 1, res, res, device=device)

                        def call(m, x=x):
                            with torch.inference_mode():
                                return m(x)[0]
                        variants = {"project": lambda: call(proj),
                                    "straight": lambda: call(straight)}
                        if not cuda:
                            exported = load_exported(export_student(proj, tmp / "s.ts",
                                                                    size=res))
                            variants["exported"] = lambda: call(exported)
                        others = [straight] + ([] if cuda else [exported])
                        with torch.inference_mode():
                            err = max((call(proj) - call(m)).abs().max().item()
                                      for m in others)
                        assert err < 1e-3, f"outputs differ by {err}"
                    times = interleaved(variants, rounds, device)
                    # the conv floor in rounds of its own, paired with the straightforward
                    # network again: its large buffers must not change the heap the project /
                    # straightforward rounds run on
                    replay = ConvReplay(straight, x)
                    ftimes = interleaved({"straight": variants["straight"],
                                          "convs": partial(replay, backward=mode == "train")},
                                         rounds, device)
                    del replay
                    med = {k: statistics.median(v) for k, v in times.items()}
                    fmed = {k: statistics.median(v) for k, v in ftimes.items()}
                    noise = max((np.percentile(v, 75) - np.percentile(v, 25)) / med[k]
                                for k, v in times.items())
                    frames = x.shape[0] * x.shape[1]
                    rows.append({"student": name, "mode": mode, "res": res,
                                 "threads": "gpu" if cuda else n_threads,
                                 **{f"{k} fps": frames / m for k, m in med.items()},
                                 "convs fps": frames / fmed["convs"],
                                 "ratio": med["straight"] / med["project"],
                                 "ceiling": fmed["straight"] / fmed["convs"], "noise": noise})
                    print("   " + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else
                                            f"{k}={v}" for k, v in rows[-1].items()),
                          flush=True)
    return rows


def export_formats(rounds: int, threads: list[int], n_frames: int, tmp: Path,
                   students: dict[str, tuple[int, int, int]]) -> tuple[list[dict], str | None]:
    """Section 4: one row per export format x student x torch/onnxruntime threads (module
    docstring). Returns the rows and why ONNX was skipped (None when it ran)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it)
        import onnxruntime  # noqa: F401
        skipped = None
    except ImportError as e:
        skipped = f"{e.name} not installed: skipped"
    passive = os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    rows = []
    for name, cfg in students.items():
        torch.manual_seed(0)
        net = StudentNet(*cfg, kernel_size=3, skip=False)
        with torch.no_grad():  # one train-mode pass: non-trivial BatchNorm statistics
            net(torch.rand(2, 4, 1, 112, 112))
        net.eval()
        x = torch.rand(1, n_frames, 1, 112, 112)
        with torch.inference_mode():
            ref, ref_state = net(x)
        ts = load_exported(export_student(net, tmp / "s.ts"))
        onnx_path = None if skipped else export_student_onnx(net, tmp / "s.onnx")
        for n_threads in threads:
            torch.set_num_threads(n_threads)

            def eager(net=net, x=x):
                with torch.inference_mode():
                    return net(x)
            variants = {"eager": eager, "torchscript": lambda ts=ts, x=x: ts(x)}
            if onnx_path is not None:
                ort_student = load_exported_onnx(onnx_path, threads=n_threads,
                                                 spinning=not passive)
                variants["onnxruntime"] = lambda m=ort_student, x=x: m(x)
            parity = {}
            for k, fn in variants.items():  # warm-up and parity (whole video, state carried)
                logits, state = fn()
                parity[k] = max([(logits - ref).abs().max().item()] + [
                    (a - b).abs().max().item()
                    for hc, hc_ref in zip(state, ref_state) for a, b in zip(hc, hc_ref)])
            times = {k: [] for k in variants}
            order = list(variants)
            for r in range(rounds):  # interleaved, the order rotated every round
                for k in order[r % len(order):] + order[:r % len(order)]:
                    t0 = time.perf_counter()
                    variants[k]()
                    times[k].append(time.perf_counter() - t0)
            for k, v in times.items():
                per_round = np.array(times["eager"]) / np.array(v)  # speed / eager, per round
                ts_ratio = np.array(times["torchscript"]) / np.array(v)
                rows.append({"format": k, "student": name, "threads": n_threads,
                             "fps": n_frames / statistics.median(v),
                             "x eager": float(np.median(per_round)),
                             "x eager p25": float(np.percentile(per_round, 25)),
                             "x eager p75": float(np.percentile(per_round, 75)),
                             "x torchscript": float(np.median(ts_ratio)),
                             "noise": (np.percentile(v, 75) - np.percentile(v, 25))
                             / statistics.median(v),
                             "max abs diff": parity[k]})
                print("   " + "  ".join(f"{c}={val:.3g}" if isinstance(val, float) else
                                        f"{c}={val}" for c, val in rows[-1].items()), flush=True)
    return rows, skipped


def inputs_and_inference(a: argparse.Namespace) -> None:
    """Sections 1 and 2 (module docstring)."""
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

        from dataclasses import asdict

        from echodfkd.cli import read_params
        from echodfkd.student.shape import StudentShape
        params = read_params(("train", "student"), ROOT / "params.yaml")
        cfg = params.config("train", TrainConfig)
        torch.manual_seed(0)
        student = StudentNet(**asdict(params.config("student", StudentShape)))
        opt = torch.optim.Adam(student.parameters(), cfg.lr)
        xb = torch.rand(cfg.batch, L, 1, 112, 112)
        yb = torch.rand_like(xb)

        def step():
            logits, _ = student(xb)
            loss = F.binary_cross_entropy_with_logits(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step_rate = frames_per_second(step, cfg.batch, repeats=3)

        print(f"data: {origin}; clips of {L} frames from {len(rows)} videos; "
              f"{a.threads} torch thread(s); shared machine: timings are noisy, compare ratios")
        print(f"\n1. training input, {a.clips} clips (frames + soft masks -> float tensors)")
        print(f"   one-time load into RAM: {load_s:.2f} s for {n_frames} frames "
              f"({n_frames / load_s:.0f} frames/s)")
        base = rates["AVI decode + .seg.npz per clip"]
        for k, r in rates.items():
            print(f"   {k:32s} {r:9.1f} clips/s   x{r / base:6.1f} vs AVI")
        print(f"   student training step (default config, batch {cfg.batch} at 112x112): "
              f"{step_rate:.1f} clips/s")
        print(f"   (MJPG round trip changes pixels by up to {mjpg_err:.0f} grey levels)")

        student.eval()
        video = fs.video(0)
        t = len(video)
        s_fps = frames_per_second(
            lambda: predict_video(student, video, chunk=64, window=0, warmup=0), t, repeats=3)
        shape = asdict(params.config("student", StudentShape))
        lines = [("student " + " ".join(f"{k}={v}" for k, v in shape.items()),
                  count_weights(student), flops_per_frame(student, "video"), s_fps)]
        try:
            from echodfkd.teacher.unet import UNet
        except ImportError:
            print("\n   echodfkd.teacher.unet.UNet not available: teacher timing skipped")
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", default="data/frames/synthetic.zarr")
    p.add_argument("--device", default="cpu",
                   help="section 3: cpu, or cuda for the comparison on a GPU")
    p.add_argument("--params", default="params.yaml",
                   help="sections 3 and 4: the default student is this file's "
                   "students.student")
    p.add_argument("--masks", default="data/teacher/synthetic.zarr")
    p.add_argument("--videos", type=int, default=8, help="videos the clips are drawn from")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--sequence-length", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sections", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--rounds", type=int, default=5, help="sections 3 and 4: interleaved rounds")
    p.add_argument("--side-threads", type=int, nargs="+", default=[1, 2],
                   help="sections 3 and 4: torch (and onnxruntime) thread counts")
    p.add_argument("--export-frames", type=int, default=32,
                   help="section 4: frames of the video run through every format")
    a = p.parse_args(argv)
    if {3, 4} & set(a.sections):
        cfg = main_student(Path(a.params))
        students = {"default " + "x".join(map(str, cfg)): cfg, "paper 3x3x12": (3, 3, 12)}
    if 3 in a.sections:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n3. StudentNet vs the same network written the common way (frames/s, "
                  f"median of {a.rounds} interleaved rounds; ratio = project / straightforward "
                  "speed)", flush=True)
            rows = side_by_side(a.rounds, a.side_threads, Path(tmp), students,
                                torch.device(a.device))
        table = pd.DataFrame(rows)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        worst = table.loc[table["ratio"].idxmin()]
        print(f"noise: (p75-p25)/median up to {table['noise'].max():.2f} "
              f"(median {table['noise'].median():.2f}) over the rows")
        top = table.loc[table["ceiling"].idxmin()]
        print(f"ceiling (straightforward time / its convolutions' time): median "
              f"{table['ceiling'].median():.2f}, smallest {top['ceiling']:.2f} "
              f"({top['student']}, {top['mode']}, {top['res']}px, {top['threads']} thread(s))")
        print(f"median ratio {table['ratio'].median():.2f}; smallest ratio project / "
              f"straightforward: {worst['ratio']:.2f} ({worst['student']}, {worst['mode']}, "
              f"{worst['res']}px, {worst['threads']} thread(s))")
    if {1, 2} & set(a.sections):
        inputs_and_inference(a)
    if 4 in a.sections:
        with tempfile.TemporaryDirectory() as tmp:
            print("\n4. export formats at 112x112, 1 video x "
                  f"{a.export_frames} frames, state carried (frames/s, median of {a.rounds} "
                  "interleaved rounds; x eager / x torchscript: median over rounds of the "
                  "per-round speed ratio; max abs diff: logits and final state vs eager; "
                  f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')})",
                  flush=True)
            if max(a.side_threads) > 1 and os.environ.get("OMP_WAIT_POLICY") is None:
                print("   note: OMP_WAIT_POLICY unset: torch's OpenMP threads busy-wait, and on "
                      "a machine whose cores are busy elsewhere torch with 2+ threads can run "
                      "10-30x slower; rerun with OMP_WAIT_POLICY=PASSIVE", flush=True)
            rows, skipped = export_formats(a.rounds, a.side_threads, a.export_frames,
                                           Path(tmp), students)
        table = pd.DataFrame(rows)
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
        print(f"noise: (p75-p25)/median of the times up to {table['noise'].max():.2f} "
              f"(median {table['noise'].median():.2f}) over the rows")
        if skipped:
            print(f"ONNX: {skipped}; TorchScript / eager speed: median "
                  f"{table.loc[table['format'] == 'torchscript', 'x eager'].median():.2f}")
        else:
            o = table[table["format"] == "onnxruntime"]
            worst = o.loc[o["x torchscript"].idxmin()]
            print(f"onnxruntime / TorchScript speed: median {o['x torchscript'].median():.2f}, "
                  f"smallest {worst['x torchscript']:.2f} ({worst['student']}, "
                  f"{worst['threads']} thread(s))")


if __name__ == "__main__":
    main()
