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

The paper's student ``StudentNet(3, 3, 12, kernel_size=3, skip=False)`` has 611,185 trainable
weights (≈0.6M as quoted).

The recurrence is causal, BatchNorm in eval mode acts per frame, and every other layer is
per frame, so a long video may be fed in chunks carrying the returned state and gives exactly
the same logits as one pass (up to float rounding).

Speed on CPU (measured with ``bench/student.py`` against the same network written the common
way, and per kernel with ``bench/convlstm_kernels.py``; the choices below are the ones that
paid, the others are listed in the bench's docstring):

- the network runs time-major, (T, B, C, H, W), inside ``forward``: every frame of a step is
  then contiguous and the ConvLSTM writes its outputs in place, without per-step stacks;
- under autograd a ConvLSTM layer is one ``torch.autograd.Function`` over the sequence
  (:class:`_ConvLSTMSequence`): the forward is the per-step conv over ``[x_t, h]`` and the
  gate math in place; the backward through time writes the gate gradients with fused
  ``sigmoid_backward``/``tanh_backward`` kernels into one buffer and asks separately for the
  weight gradient and the input gradients, the thin ones (< 16 channels) from the im2col
  kernel, which is 2.6x faster than oneDNN's for the h gradient of a hidden-6 layer. Batching
  the weight gradient over several steps was no faster (see the bench). ``StudentNet.fused =
  False`` gives the plain autograd step loop (twice differentiable);
- without autograd (``no_grad``/``inference_mode``) the same loop with the gate math in place
  (6 elementwise kernels a step), and the 2x2 max-pool as two ``torch.maximum`` (11-14x faster
  than ``F.max_pool2d``'s CPU kernel; the same values);
- the ConvLSTM step is one conv over ``[x_t, h]`` per time step. Running the input half of the
  conv once over all ``B*T`` frames (an earlier version) was *slower*: one conv over 32 frames
  of 112x112 leaves the CPU caches, 16 small ones do not;
- the decoder's "x2 nearest upsampling -> 3x3 conv" runs as one 3x3 conv at the *low*
  resolution with 4x the output channels (one kernel per output phase, the taps that fall on
  the same low-resolution pixel summed) followed by ``pixel_shuffle``: the same FLOPs and the
  same result up to float rounding, without the upsampled tensor, and a conv shape that
  oneDNN runs 1.5-2x faster (skip=False; with skip connections the plain path is used);
- the 1x1 head (C -> 1 channel) is a matrix product over channels: oneDNN's 1-output-channel
  conv was ~10x slower than the rest of the head's memory traffic.

None of these change the parameters: ``state_dict`` keys and shapes are those of the plain
modules (``cells.k.conv``, ``up_convs.k``, ``head``), and FLOPs counted by
``echodfkd.cost.flops_per_frame`` are unchanged (it runs without grad: the in-place loop calls
the same convs as the plain one). The fused and plain paths give the same logits, states and
gradients up to float rounding (tests/test_convlstm.py), so the fused path is the default
for training, inference and export (the export traces the plain ops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

LayerState = tuple[torch.Tensor, torch.Tensor]
"""(h, c) of one ConvLSTM layer, each float32 (B, hidden, H, W)."""

_SLOW_DGRAD_BELOW = 16
"""Input gradients of the recurrent conv with fewer channels than this (the h gradient of a
hidden-6/12 layer, the x gradient of a 6/12-channel input) use PyTorch's im2col + GEMM kernel
(``aten._slow_conv2d_backward``): oneDNN's backward-data kernel is 1.1-2.6x slower on them on
the 2-core EPYC (``bench/convlstm_kernels.py``). Wider ones use oneDNN; on a GPU every one goes
to ``convolution_backward`` (cuDNN)."""

_JOINT_DGRAD_FROM = 24
"""When ``x`` needs a gradient too and ``[x, h]`` has at least this many channels, both input
gradients come from one oneDNN call over ``[x, h]`` (with the weight gradient), which measured
faster than two separate calls from 24 channels on; below (6 + 12 channels) separate calls
are faster."""


def _dgrad(grad: torch.Tensor, like: torch.Tensor, weight: torch.Tensor, pad: int
           ) -> torch.Tensor:
    """Gradient w.r.t. the input of ``conv2d(inp, weight, padding=pad)`` (stride 1, no
    dilation), ``inp`` having the shape of ``like`` (N, C, H, W); ``grad`` (N, O, H, W),
    ``weight`` (O, C, k, k) contiguous. Returns float (N, C, H, W)."""
    k = list(weight.shape[2:])
    if weight.shape[1] < _SLOW_DGRAD_BELOW and grad.device.type == "cpu" \
            and hasattr(torch.ops.aten, "_slow_conv2d_backward"):
        return torch.ops.aten._slow_conv2d_backward.output_mask(
            grad, like, weight, k, [1, 1], [pad, pad], [True, False, False])[0]
    return torch.ops.aten.convolution_backward(
        grad, like, weight, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
        [True, False, False])[0]


def _gate_update_(gates: torch.Tensor, c_prev: torch.Tensor, c: torch.Tensor,
                  tc: torch.Tensor, h: torch.Tensor, n: int) -> None:
    """Gate math in place, no autograd, all tensors float (B, ., H, W). ``gates`` (B, 4n, H, W)
    pre-activations i, f, o, g become their activations (sigmoid x3, tanh); ``c`` (B, n, H, W)
    receives c_t = f * c_prev + i * g (``c`` may be ``c_prev``: the update is elementwise),
    ``tc`` tanh(c_t) and ``h`` o * tanh(c_t). Six elementwise kernels."""
    gates[:, :3 * n].sigmoid_()
    g = gates[:, 3 * n:].tanh_()
    torch.mul(gates[:, n:2 * n], c_prev, out=c)
    c.addcmul_(gates[:, :n], g)
    torch.tanh(c, out=tc)
    torch.mul(gates[:, 2 * n:3 * n], tc, out=h)


class _ConvLSTMSequence(torch.autograd.Function):
    """One ConvLSTM layer over a whole time-major sequence, with a hand-written
    backpropagation through time (docs/design.md §3 for the cell).

    forward(x (T, B, C, H, W) contiguous, weight (4n, C + n, k, k), bias (4n,), h0, c0
    (B, n, H, W)) -> (hs (T, B, n, H, W), h_T, c_T), float32, the same values as the autograd
    loop :meth:`ConvLSTMCell._sequence_autograd` up to float rounding.

    Per step the forward does the conv over ``[x_t, h]`` (oneDNN) and the gate math in place,
    keeping ``[x_t, h]``, the gate activations, c_t and tanh(c_t). The backward walks the steps
    in reverse: the gate derivatives with the fused ``sigmoid_backward``/``tanh_backward``
    kernels written straight into one (B, 4n, H, W) buffer, then separate weight and input
    gradient calls, each with the kernel that is fastest for its shape (:func:`_dgrad`);
    autograd's conv backward computes them in one oneDNN call (and the gradient of ``x`` even
    when ``x`` needs none). Not twice differentiable: use ``StudentNet.fused = False`` for that.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, h0, c0, pad):  # noqa: D401 (autograd signature)
        t_len, b, cin = x.shape[:3]
        n = h0.shape[1]
        zs = x.new_empty((t_len, b, cin + n) + tuple(x.shape[3:]))
        cs = x.new_empty((t_len,) + tuple(h0.shape))
        tcs = torch.empty_like(cs)
        hs = torch.empty_like(cs)
        acts = []
        h, c = h0, c0
        for t in range(t_len):
            torch.cat([x[t], h], 1, out=zs[t])
            gates = F.conv2d(zs[t], weight, bias, padding=pad)
            _gate_update_(gates, c, cs[t], tcs[t], hs[t], n)
            acts.append(gates)
            h, c = hs[t], cs[t]
        ctx.save_for_backward(weight, c0)
        ctx.zs, ctx.cs, ctx.tcs, ctx.acts, ctx.pad, ctx.n = zs, cs, tcs, acts, pad, n
        ctx.set_materialize_grads(False)
        return hs, h.clone(), c.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hs, g_h, g_c):
        weight, c0 = ctx.saved_tensors
        zs, cs, tcs, acts, pad, n = ctx.zs, ctx.cs, ctx.tcs, ctx.acts, ctx.pad, ctx.n
        need_x, need_w, need_b, need_h0, need_c0 = ctx.needs_input_grad[:5]
        t_len, cin = zs.shape[0], zs.shape[2] - n
        sb, tb = torch.ops.aten.sigmoid_backward, torch.ops.aten.tanh_backward
        joint = need_x and cin + n >= _JOINT_DGRAD_FROM
        wx = weight[:, :cin].contiguous() if need_x and not joint else None
        wh = weight[:, cin:].contiguous()
        dw = torch.zeros_like(weight) if need_w else None
        db = weight.new_zeros(weight.shape[0]) if need_b else None
        dxs = [None] * t_len
        dh, dc = g_h, g_c
        for t in range(t_len - 1, -1, -1):
            if g_hs is not None:
                dh = g_hs[t] if dh is None else dh + g_hs[t]
            if dh is None:
                dh = torch.zeros_like(cs[t])
            act, tc = acts[t], tcs[t]
            i, f, o, g = act[:, :n], act[:, n:2 * n], act[:, 2 * n:3 * n], act[:, 3 * n:]
            c_prev = cs[t - 1] if t > 0 else c0
            dct = tb(dh * o, tc)                       # dL/dc_t
            if dc is not None:
                dct += dc
            dg = torch.empty_like(act)                 # dL/d(pre-activation gates)
            sb.grad_input(dct * g, i, grad_input=dg[:, :n])
            sb.grad_input(dct * c_prev, f, grad_input=dg[:, n:2 * n])
            sb.grad_input(dh * tc, o, grad_input=dg[:, 2 * n:3 * n])
            tb.grad_input(dct * i, g, grad_input=dg[:, 3 * n:])
            dc = dct * f if (t > 0 or need_c0) else None
            z = zs[t]
            need_h = t > 0 or need_h0
            if joint:
                dz, dwt, dbt = torch.ops.aten.convolution_backward(
                    dg, z, weight, [weight.shape[0]], [1, 1], [pad, pad], [1, 1], False,
                    [0, 0], 1, [True, need_w, need_b])
                dxs[t], dh = dz[:, :cin], (dz[:, cin:] if need_h else None)
            else:
                _, dwt, dbt = torch.ops.aten.convolution_backward(
                    dg, z, weight, [weight.shape[0]], [1, 1], [pad, pad], [1, 1], False,
                    [0, 0], 1, [False, need_w, need_b]) if (need_w or need_b) else (None,) * 3
                if need_x:
                    dxs[t] = _dgrad(dg, z[:, :cin], wx, pad)
                dh = _dgrad(dg, z[:, cin:], wh, pad) if need_h else None
            if need_w:
                dw += dwt
            if need_b:
                db += dbt
        dx = torch.stack(dxs) if need_x else None
        return dx, dw, db, (dh if need_h0 else None), (dc if need_c0 else None), None


def _sequence_nograd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     h: torch.Tensor, c: torch.Tensor, pad: int
                     ) -> tuple[torch.Tensor, LayerState]:
    """Inference over a time-major sequence ``x`` (T, B, C, H, W): the conv over ``[x_t, h]``
    and the gate math in place (6 elementwise kernels a step), outputs written straight into
    ``hs`` (T, B, n, H, W). The caller's ``h`` and ``c`` are not modified."""
    t_len, b = x.shape[:2]
    n = h.shape[1]
    hs = x.new_empty((t_len,) + tuple(h.shape))
    c = c.clone()
    tc = torch.empty_like(c)
    for t in range(t_len):
        gates = F.conv2d(torch.cat([x[t], h], 1), weight, bias, padding=pad)
        _gate_update_(gates, c, c, tc, hs[t], n)
        h = hs[t]
    return hs, (h.clone(), c)


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

    def __init__(self, in_ch: int, hidden: int, kernel_size: int) -> None:
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
        """One time step: ``x`` (B, in_ch, H, W) -> ``(h, (h, c))``, h and c (B, hidden, H, W).
        Plain autograd (twice differentiable)."""
        h, c = self.zero_state(x) if state is None else state
        gates = self.conv(torch.cat([x, h], dim=1))
        h, c = self._update(gates, c)
        return h, (h, c)

    def _sequence_autograd(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
                           ) -> tuple[torch.Tensor, LayerState]:
        """Reference path: time-major ``x`` (T, B, in_ch, H, W), the step loop under autograd.
        ``unbind``, not ``x[t]``: the backward of T selects would allocate T full-size zero
        gradients."""
        out = []
        for xt in x.unbind(0):
            h, c = self._update(self.conv(torch.cat([xt, h], dim=1)), c)
            out.append(h)
        return torch.stack(out, 0), (h, c)

    def sequence_time_major(self, x: torch.Tensor, state: LayerState | None = None, *,
                            fused: bool = True) -> tuple[torch.Tensor, LayerState]:
        """All time steps of a time-major ``x`` float32 (T, B, in_ch, H, W) ->
        ``(hs (T, B, hidden, H, W), (h, c))``, the state after the last step.

        ``fused=True`` (default): with autograd recording (grad mode on and an input or
        parameter requiring grad) the whole sequence is one :class:`_ConvLSTMSequence`
        (hand-written backward through time); otherwise (``no_grad``/``inference_mode``, or
        nothing requires grad) the in-place inference loop. Both give the values of
        ``fused=False`` (plain autograd step loop, twice differentiable) up to float rounding.
        During ``torch.jit.trace`` the plain loop is used, so the traced graph is plain ops;
        under autocast (``train.amp`` on CUDA) too, because the hand-written backward takes
        float32 tensors and autocast casts op by op only in the plain loop.
        """
        if x.dim() != 5 or x.shape[2] != self.in_ch:
            raise ValueError(f"expected input (T, B, {self.in_ch}, H, W), got shape "
                             f"{tuple(x.shape)}")
        h, c = self.zero_state(x[0]) if state is None else state
        if not fused or torch.jit.is_tracing() or torch.is_autocast_enabled(x.device.type):
            return self._sequence_autograd(x, h, c)
        w, b = self.conv.weight, self.conv.bias
        pad = self.kernel_size // 2
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w, b, h, c)):
            hs, h, c = _ConvLSTMSequence.apply(x.contiguous(), w, b, h, c, pad)
            return hs, (h, c)
        with torch.no_grad():
            return _sequence_nograd(x, w, b, h, c, pad)

    def forward_sequence(self, x: torch.Tensor, state: LayerState | None = None, *,
                         fused: bool = True) -> tuple[torch.Tensor, LayerState]:
        """All time steps: ``x`` (B, T, in_ch, H, W) -> ``(hs (B, T, hidden, H, W), (h, c))``.

        Same result as calling :meth:`forward` frame by frame; batch-major wrapper of
        :meth:`sequence_time_major` (two transposed copies; ``StudentNet`` works time-major
        throughout and avoids them).
        """
        if x.dim() != 5 or x.shape[2] != self.in_ch:
            raise ValueError(f"expected {self.in_ch} input channels, got shape "
                             f"{tuple(x.shape)}")
        hs, state = self.sequence_time_major(x.transpose(0, 1).contiguous(), state,
                                             fused=fused)
        return hs.transpose(0, 1).contiguous(), state


def max_pool2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2)`` of float (N, C, H, W) -> (N, C, H/2, W/2).

    Without autograd (and H, W even, not tracing) it is two ``torch.maximum`` over strided
    views, the same values (NaN propagates as in max_pool2d) 10-17x faster than max_pool2d's
    CPU kernel on these shapes (``bench/convlstm_kernels.py``). Under autograd max_pool2d is
    kept: its gradient goes to the first maximum of a window, and a hand-written backward
    with that tie rule was slower than max_pool2d's forward + backward."""
    if (torch.is_grad_enabled() and x.requires_grad) or torch.jit.is_tracing() \
            or x.shape[-1] % 2 or x.shape[-2] % 2:
        return F.max_pool2d(x, 2)
    r = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(r[..., 0::2], r[..., 1::2])


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

    The arguments are a student shape of params.yaml (``student`` or ``grid.<name>``, a
    :class:`echodfkd.student.shape.StudentShape`): ``StudentNet(**asdict(shape))``.

    Args:
        blocks: encoder blocks (resolution levels); input H and W must be divisible by
            ``2 ** (blocks - 1)``.
        layers_per_block: ConvLSTM layers per block.
        hidden: channels of block 0; block k has ``hidden * 2**k``.
        kernel_size: odd ConvLSTM kernel size (the decoder convs are 3x3).
        skip: U-Net-style skip connections from encoder to decoder (False = paper's model).
    """

    def __init__(self, blocks: int, layers_per_block: int, hidden: int,
                 kernel_size: int, skip: bool) -> None:
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
        self.fused = True
        """ConvLSTM layers run as :class:`_ConvLSTMSequence` / the in-place inference loop
        (True) or as the plain autograd step loop (False: slower, twice differentiable). Not
        part of :meth:`config` nor of the state_dict: it changes no value beyond float
        rounding."""

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
        fused = getattr(self, "fused", True)  # objects pickled before the attribute existed
        new_state: list[LayerState] = []
        skips: list[torch.Tensor] = []
        x = x.transpose(0, 1).contiguous()  # time-major (T, B, C, H, W) throughout
        layer = 0
        for k in range(self.blocks):
            for _ in range(self.layers_per_block):
                x, s = self.cells[layer].sequence_time_major(
                    x, None if state is None else state[layer], fused=fused)
                new_state.append(s)
                x = _per_frame(self.norms[layer], x)
                layer += 1
            if k < self.blocks - 1:
                skips.append(x)
                x = _per_frame(max_pool2x2 if fused else (lambda y: F.max_pool2d(y, 2)), x)
        for conv, norm in zip(self.up_convs, self.up_norms):
            if self.skip:
                x = _per_frame(lambda y: F.interpolate(y, scale_factor=2, mode="nearest"), x)
                x = torch.cat([x, skips.pop()], dim=2)
                x = _per_frame(lambda y: F.relu(norm(conv(y)), inplace=True), x)
            else:
                x = _per_frame(lambda y: F.relu(norm(upsample_conv(y, conv.weight, conv.bias)),
                                                inplace=True), x)
        # head: 1x1 conv to one channel, as a product over channels (C,) . (T*B, C, H*W)
        t, b, ch, hh, ww = x.shape
        y = torch.matmul(self.head.weight.view(1, ch), x.reshape(t * b, ch, hh * ww))
        y = (y + self.head.bias.view(1, 1, 1)).view(t, b, 1, hh, ww)
        return y.transpose(0, 1).contiguous(), new_state
