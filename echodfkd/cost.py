"""Cost of a model: trainable weights, FLOPs per 112x112 frame, frames per second.

Used for the students (video models, input (B, T, 1, H, W)) and the teachers (2D models such as
the UNet or DeepLabV3, input (B, C, H, W)).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode``, which counts a multiply-add
as 2 FLOPs and counts only matrix products and convolutions (conv, mm, bmm, addmm, attention):
elementwise work (activations, gates, BatchNorm, pooling, upsampling) is not counted. The
"≈ 7.8 GFLOPs" per frame often quoted for EchoNet's DeepLabV3-ResNet50 counts multiply-adds;
this counter gives 15.65 GFLOPs for it (2 x 7.83 G multiply-adds).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

VIDEO_KINDS = ("video", "student")
IMAGE_KINDS = ("image", "teacher")


def count_weights(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``); BatchNorm running stats excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _input_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f"cannot infer the input channels of {type(model).__name__}: no Conv2d; "
                     f"pass in_channels")


def flops_per_frame(model: nn.Module, kind: str, size: int = 112, *, frames: int = 8,
                    in_channels: int | None = None) -> int:
    """FLOPs (multiply-add = 2) to process one ``size`` x ``size`` frame, in eval mode.

    Args:
        model: the network; its device is used for the dummy input.
        kind: ``"video"`` (alias ``"student"``): input (1, frames, 1, size, size), the count is
            divided by ``frames`` (a ConvLSTM does the same work on every frame, so the result
            does not depend on ``frames``); ``"image"`` (alias ``"teacher"``): one frame
            (1, C, size, size), C = ``in_channels`` or the first Conv2d's input channels.
        size: frame side in pixels.
        frames: clip length for video models.
    """
    if kind in VIDEO_KINDS:
        shape = (1, frames, 1, size, size)
        per = frames
    elif kind in IMAGE_KINDS:
        shape = (1, in_channels or _input_channels(model), size, size)
        per = 1
    else:
        raise ValueError(f"kind must be one of {VIDEO_KINDS + IMAGE_KINDS}, got {kind!r}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.rand(shape, device=device)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // per


def frames_per_second(fn: Callable[[], object], frames_per_call: int, *, repeats: int = 5,
                      warmup: int = 1) -> float:
    """Throughput of ``fn`` (which processes ``frames_per_call`` frames per call), frames/s.

    Runs ``warmup`` untimed calls, then ``repeats`` timed calls, and uses the median call time
    (robust to a noisy, shared machine). Synchronises CUDA around each call when available.
    """
    if frames_per_call < 1 or repeats < 1:
        raise ValueError(f"frames_per_call and repeats must be >= 1, got "
                         f"{frames_per_call}, {repeats}")
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return frames_per_call / statistics.median(times)
