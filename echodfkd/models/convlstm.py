"""The student: a ConvLSTM encoder-decoder that segments the LV frame by frame (design.md §3).

Tensors follow PyTorch's channel-first order. A video batch is float32 ``(B, T, C, H, W)``
(batch, time, channel, rows, columns); the network's input has ``C = 1`` grey channel scaled
to [0, 1] and its output one logit per pixel per frame, ``(B, T, 1, H, W)``.

Architecture (``StudentNet``)::

    encoder  block k = 0..blocks-1: layers_per_block x [ConvLSTM(hidden*2**k) -> BatchNorm]
             2x2 max-pool after every block but the last
    decoder  for each pooled level, deepest first: x2 nearest upsampling -> 3x3 conv halving
             the channels -> BatchNorm -> ReLU   (skip=True: the encoder output of the level
             it lands on is concatenated before the conv, U-Net style)
    head     1x1 conv -> 1 logit

The ReLU after each decoder BatchNorm is our choice: without it the decoder would be a chain of
linear maps (upsample, conv, affine BN) that a single conv could replace. The encoder's
ConvLSTM outputs are already bounded by ``tanh``.

Paper default ``StudentNet(3, 3, 12)`` has 611,185 trainable weights (≈0.6M as quoted).

The recurrence is causal, BatchNorm in eval mode acts per frame, and every other layer is
per frame, so a long video may be fed in chunks carrying the returned state and gives exactly
the same logits as one pass (up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LayerState = tuple[torch.Tensor, torch.Tensor]
"""(h, c) of one ConvLSTM layer, each float32 (B, hidden, H, W)."""


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer.

    A single ``kernel_size`` x ``kernel_size`` convolution (``padding = kernel_size // 2``) over
    the concatenation ``[x, h]`` (``in_ch + hidden`` channels) gives ``4 * hidden`` channels,
    split in this order into gates i, f, o, g::

        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    The state (h, c) starts at zero. The forget-gate bias is initialised to 1 (as Keras'
    ``unit_forget_bias``), the other weights with PyTorch's default conv initialisation.
    """

    def __init__(self, in_ch: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        if in_ch < 1 or hidden < 1:
            raise ValueError(f"in_ch and hidden must be >= 1, got in_ch={in_ch}, hidden={hidden}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        self.in_ch, self.hidden, self.kernel_size = in_ch, hidden, kernel_size
        self.conv = nn.Conv2d(in_ch + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.conv.bias[hidden:2 * hidden].fill_(1.0)

    def zero_state(self, x: torch.Tensor) -> LayerState:
        """Zero (h, c) for an input frame batch ``x`` (B, in_ch, H, W)."""
        b, _, hh, ww = x.shape
        z = x.new_zeros((b, self.hidden, hh, ww))
        return z, z

    def _update(self, gates: torch.Tensor, c: torch.Tensor) -> LayerState:
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def forward(self, x: torch.Tensor, state: LayerState | None = None
                ) -> tuple[torch.Tensor, LayerState]:
        """One time step: ``x`` (B, in_ch, H, W) -> ``(h, (h, c))``, h and c (B, hidden, H, W)."""
        h, c = self.zero_state(x) if state is None else state
        gates = self.conv(torch.cat([x, h], dim=1))
        h, c = self._update(gates, c)
        return h, (h, c)

    def forward_sequence(self, x: torch.Tensor, state: LayerState | None = None
                         ) -> tuple[torch.Tensor, LayerState]:
        """All time steps: ``x`` (B, T, in_ch, H, W) -> ``(hs (B, T, hidden, H, W), (h, c))``.

        Same result as calling :meth:`forward` frame by frame, but the input half of the
        convolution (a conv is linear in its input channels) runs once over all T frames.
        """
        b, t, ch, hh, ww = x.shape
        if ch != self.in_ch:
            raise ValueError(f"expected {self.in_ch} input channels, got {ch} "
                             f"(shape {tuple(x.shape)})")
        w_x, w_h = self.conv.weight[:, :self.in_ch], self.conv.weight[:, self.in_ch:]
        pad = self.kernel_size // 2
        gx = F.conv2d(x.reshape(b * t, ch, hh, ww), w_x, self.conv.bias, padding=pad)
        gx = gx.reshape(b, t, 4 * self.hidden, hh, ww)
        h, c = self.zero_state(x[:, 0]) if state is None else state
        out = []
        # unbind, not gx[:, k]: the backward of T selects would allocate T full-size zero
        # gradients (O(T^2) memory traffic); unbind's backward is one stack.
        for g in gx.unbind(1):
            h, c = self._update(g + F.conv2d(h, w_h, None, padding=pad), c)
            out.append(h)
        return torch.stack(out, dim=1), (h, c)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of ``x`` (B, T, C, H, W)."""
    b, t = x.shape[:2]
    y = module(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


class StudentNet(nn.Module):
    """ConvLSTM encoder-decoder (see module docstring).

    Args:
        blocks: encoder blocks (resolution levels); input H and W must be divisible by
            ``2 ** (blocks - 1)``.
        layers_per_block: ConvLSTM layers per block.
        hidden: channels of block 0; block k has ``hidden * 2**k``.
        kernel_size: odd ConvLSTM kernel size (the decoder convs are 3x3).
        skip: U-Net-style skip connections from encoder to decoder (False = paper's model).
    """

    def __init__(self, blocks: int = 3, layers_per_block: int = 3, hidden: int = 12,
                 kernel_size: int = 3, skip: bool = False) -> None:
        super().__init__()
        if blocks < 1 or layers_per_block < 1 or hidden < 1:
            raise ValueError(f"blocks, layers_per_block and hidden must be >= 1, got "
                             f"{blocks}, {layers_per_block}, {hidden}")
        self.blocks, self.layers_per_block, self.hidden = blocks, layers_per_block, hidden
        self.kernel_size, self.skip = kernel_size, skip
        self.cells = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = 1
        for k in range(blocks):
            ch = hidden * 2 ** k
            for _ in range(layers_per_block):
                self.cells.append(ConvLSTMCell(in_ch, ch, kernel_size))
                self.norms.append(nn.BatchNorm2d(ch))
                in_ch = ch
        self.up_convs = nn.ModuleList()
        self.up_norms = nn.ModuleList()
        for k in range(blocks - 1, 0, -1):  # level k -> level k-1
            out_ch = hidden * 2 ** (k - 1)
            self.up_convs.append(nn.Conv2d(hidden * 2 ** k + (out_ch if skip else 0), out_ch,
                                           3, padding=1))
            self.up_norms.append(nn.BatchNorm2d(out_ch))
        self.head = nn.Conv2d(hidden, 1, 1)

    def config(self) -> dict:
        """Constructor arguments, enough to rebuild the network: ``StudentNet(**config)``."""
        return {"blocks": self.blocks, "layers_per_block": self.layers_per_block,
                "hidden": self.hidden, "kernel_size": self.kernel_size, "skip": self.skip}

    def forward(self, x: torch.Tensor, state: list[LayerState] | None = None
                ) -> tuple[torch.Tensor, list[LayerState]]:
        """``x`` float32 (B, T, 1, H, W) in [0, 1] -> (logits (B, T, 1, H, W), state).

        ``state`` is the list of (h, c) per ConvLSTM layer (encoder order) returned by the
        previous call on the preceding frames of the same videos, or None to start at zero.
        """
        if x.dim() != 5 or x.shape[2] != 1:
            raise ValueError(f"expected input (B, T, 1, H, W), got shape {tuple(x.shape)}")
        f = 2 ** (self.blocks - 1)
        if x.shape[3] % f or x.shape[4] % f:
            raise ValueError(f"frame size {tuple(x.shape[3:])} is not divisible by {f} "
                             f"(2**(blocks-1) with blocks={self.blocks})")
        if state is not None and len(state) != len(self.cells):
            raise ValueError(f"state has {len(state)} layers, the network {len(self.cells)}")
        new_state: list[LayerState] = []
        skips: list[torch.Tensor] = []
        layer = 0
        for k in range(self.blocks):
            for _ in range(self.layers_per_block):
                x, s = self.cells[layer].forward_sequence(
                    x, None if state is None else state[layer])
                new_state.append(s)
                x = _per_frame(self.norms[layer], x)
                layer += 1
            if k < self.blocks - 1:
                skips.append(x)
                x = _per_frame(lambda y: F.max_pool2d(y, 2), x)
        for conv, norm in zip(self.up_convs, self.up_norms):
            x = _per_frame(lambda y: F.interpolate(y, scale_factor=2, mode="nearest"), x)
            if self.skip:
                x = torch.cat([x, skips.pop()], dim=2)
            x = _per_frame(lambda y: F.relu(norm(conv(y))), x)
        return _per_frame(self.head, x), new_state
