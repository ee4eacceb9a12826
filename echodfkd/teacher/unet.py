"""A light U-Net: the default teacher fitted on the labelled phantom frames."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by BatchNorm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` 2x2 poolings; level k has ``width * 2**k`` channels.

    Input: float32 (B, 1, H, W), pixel values / 255 in [0, 1]; H and W divisible by
    ``2**depth``. Output: float32 logits (B, 1, H, W); sigmoid gives the LV probability.
    Decoder: bilinear x2 upsampling, a 1x1 conv halving the channels, concatenation with the
    encoder skip, then a conv block. The fitted teacher's ``width`` and ``depth`` are
    params.yaml's ``teacher.width`` / ``teacher.depth``; a checkpoint records them in its config.
    """

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"UNet needs width >= 1 and depth >= 1, got width={width}, "
                             f"depth={depth}")
        self.width, self.depth = width, depth
        chans = [width * 2 ** k for k in range(depth + 1)]
        self.down = nn.ModuleList(
            [_block(1 if k == 0 else chans[k - 1], chans[k]) for k in range(depth)])
        self.bottom = _block(chans[depth - 1], chans[depth])
        self.reduce = nn.ModuleList(
            [nn.Conv2d(chans[k + 1], chans[k], 1) for k in reversed(range(depth))])
        self.up = nn.ModuleList([_block(2 * chans[k], chans[k]) for k in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], 1, 1)
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"UNet expects (B, 1, H, W), got {tuple(x.shape)}")
        m = 2 ** self.depth
        if x.shape[2] % m or x.shape[3] % m:
            raise ValueError(f"UNet(depth={self.depth}) needs H, W divisible by {m}, "
                             f"got {tuple(x.shape[2:])}")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for reduce, block, skip in zip(self.reduce, self.up, reversed(skips)):
            x = reduce(self.upsample(x))
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)
