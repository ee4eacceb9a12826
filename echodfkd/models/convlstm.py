"""The student: a ConvLSTM encoder-decoder that segments the LV frame by frame (docs/design.md §3).

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

Speed on CPU (measured with ``bench/student.py`` against the same network written the common
way; the choices below are the ones that paid, the others are listed in the bench's docstring):

- the ConvLSTM step is one conv over ``[x_t, h]`` per time step. Running the input half of the
  conv once over all ``B*T`` frames (an earlier version) was *slower*: one conv over 32 frames
  of 112x112 leaves the CPU caches, 16 small ones do not;
- the gate math splits the conv output once (``split``, whose backward is one ``cat``) and
  uses one sigmoid over i, f, o and ``addcmul``: 6 elementwise kernels instead of 9;
- the decoder's "x2 nearest upsampling -> 3x3 conv" runs as one 3x3 conv at the *low*
  resolution with 4x the output channels (one kernel per output phase, the taps that fall on
  the same low-resolution pixel summed) followed by ``pixel_shuffle``: the same FLOPs and the
  same result up to float rounding, without the upsampled tensor, and a conv shape that
  oneDNN runs 1.5-2x faster (skip=False; with skip connections the plain path is used);
- the 1x1 head (C -> 1 channel) is a matrix product over channels: oneDNN's 1-output-channel
  conv was ~10x slower than the rest of the head's memory traffic.

None of these change the parameters: ``state_dict`` keys and shapes are those of the plain
modules (``cells.k.conv``, ``up_convs.k``, ``head``), and FLOPs counted by
``echodfkd.cost.flops_per_frame`` are unchanged.
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
        """Gate math: ``gates`` (B, 4*hidden, H, W) pre-activations in order i, f, o, g."""
        n = self.hidden
        sig, g = gates.split([3 * n, n], dim=1)
        i, f, o = torch.sigmoid(sig).split(n, dim=1)
        c = torch.addcmul(f * c, i, torch.tanh(g))
        h = o * torch.tanh(c)
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

        Same result as calling :meth:`forward` frame by frame (it is that loop). ``unbind``,
        not ``x[:, k]``: the backward of T selects would allocate T full-size zero gradients.
        """
        b, t, ch, hh, ww = x.shape
        if ch != self.in_ch:
            raise ValueError(f"expected {self.in_ch} input channels, got {ch} "
                             f"(shape {tuple(x.shape)})")
        h, c = self.zero_state(x[:, 0]) if state is None else state
        out = []
        for xt in x.unbind(1):
            h, c = self._update(self.conv(torch.cat([xt, h], dim=1)), c)
            out.append(h)
        return torch.stack(out, dim=1), (h, c)


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of ``x`` (B, T, C, H, W)."""
    b, t = x.shape[:2]
    y = module(x.reshape(b * t, *x.shape[2:]))
    return y.reshape(b, t, *y.shape[1:])


def _phase_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along axis ``dim`` (size 3) of a 3x3 kernel, the two kernels that a conv at low
    resolution needs to give the even and odd outputs of "x2 nearest upsampling -> conv".

    The even output 2i reads upsampled rows 2i-1, 2i, 2i+1 = low rows i-1, i, i: taps
    ``[w0, w1 + w2, 0]``; the odd output 2i+1 reads low rows i, i, i+1: ``[0, w0 + w1, w2]``.
    Zero padding of the upsampled image is the upsampling of zero padding, so borders agree.
    Built from adds and stacks only (no matrix product, so no FLOPs are counted for it).
    """
    a, b, c = w.unbind(dim)
    z = torch.zeros_like(a)
    return torch.stack([a, b + c, z], dim), torch.stack([z, a + b, c], dim)


def upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                  ) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)``
    computed at the low resolution.

    Args:
        x: float (N, C_in, H, W).
        weight: (C_out, C_in, 3, 3); bias: (C_out,) or None.
    Returns:
        float (N, C_out, 2H, 2W), equal to the plain formula up to float rounding (the taps
        that land on the same low-resolution pixel are summed before the product). One 3x3
        conv gives ``4 * C_out`` channels, channel ``4*o + 2*a + b`` being output channel o at
        row phase a and column phase b, which is ``pixel_shuffle``'s order.
    """
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"upsample_conv needs a 3x3 kernel, got {tuple(weight.shape)}")
    rows = _phase_taps(weight, 2)
    w4 = torch.stack([k for r in rows for k in _phase_taps(r, 3)], dim=1)
    w4 = w4.reshape(4 * weight.shape[0], *weight.shape[1:])
    b4 = None if bias is None else bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, w4, b4, padding=1), 2)


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

    def __init__(self, blocks: int, layers_per_block: int, hidden: int,
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
            if self.skip:
                x = _per_frame(lambda y: F.interpolate(y, scale_factor=2, mode="nearest"), x)
                x = torch.cat([x, skips.pop()], dim=2)
                x = _per_frame(lambda y: F.relu(norm(conv(y)), inplace=True), x)
            else:
                x = _per_frame(lambda y: F.relu(norm(upsample_conv(y, conv.weight, conv.bias)),
                                                inplace=True), x)
        # head: 1x1 conv to one channel, as a product over channels (C,) . (B*T, C, H*W)
        b, t, ch, hh, ww = x.shape
        y = torch.matmul(self.head.weight.view(1, ch), x.reshape(b * t, ch, hh * ww))
        return (y + self.head.bias.view(1, 1, 1)).view(b, t, 1, hh, ww), new_state
