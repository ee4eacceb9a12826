"""Teacher architectures: how to build each one and how to feed it frames.

``ARCHS`` maps an architecture name to its :class:`ArchSpec`. The project's light UNet reads
frames scaled to [0, 1]; EchoNet-Dynamic's DeepLabV3-ResNet50 reads 3 channels normalised with
EchoNet's per-channel mean and std (docs/design.md §2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from echodfkd.errors import InputError
from torch import nn

ECHONET_MEAN = (32.085175, 32.591923, 33.37932)   # per channel (R, G, B), 0..255 pixel units
ECHONET_STD = (50.129288, 50.487717, 51.34619)


def echonet_normalise(frames: torch.Tensor) -> torch.Tensor:
    """EchoNet-Dynamic input: uint8 grey (B, H, W) 0..255 -> float32 (B, 3, H, W).

    The grey frame is repeated to 3 channels; channel c becomes (x - ECHONET_MEAN[c]) /
    ECHONET_STD[c] on 0..255 values.
    """
    x = frames.float().unsqueeze(1).expand(-1, 3, -1, -1)
    mean = torch.tensor(ECHONET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(ECHONET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def unit_scale(frames: torch.Tensor) -> torch.Tensor:
    """Project UNet input: uint8 (B, H, W) -> float32 (B, 1, H, W) = frames / 255."""
    return frames.float().unsqueeze(1) / 255.0


def _build_unet(**config: Any) -> nn.Module:
    from echodfkd.teacher.unet import UNet  # written alongside; imported on use
    return UNet(**config)


def _build_deeplab(**config: Any) -> nn.Module:
    from echodfkd.teacher.deeplabv3 import DeepLabV3ResNet50
    return DeepLabV3ResNet50(**config)


@dataclass(frozen=True)
class ArchSpec:
    """How to build an architecture from its config and how to feed it frames."""

    build: Callable[..., nn.Module]
    preprocess: Callable[[torch.Tensor], torch.Tensor]


ARCHS: dict[str, ArchSpec] = {
    "unet": ArchSpec(_build_unet, unit_scale),
    "deeplabv3_resnet50": ArchSpec(_build_deeplab, echonet_normalise),
}


def build_model(arch: str, config: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model of architecture ``arch`` with constructor kwargs ``config``."""
    if arch not in ARCHS:
        raise InputError(f"unknown teacher architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch].build(**dict(config))


def amp_dtype(device: torch.device) -> torch.dtype:
    """Autocast dtype used with ``amp``: bfloat16 on CUDA where supported, else float16."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.bfloat16
