import math

import pytest
import torch

from echodfkd.student.model import ConvLSTMCell, StudentNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_cell_zero_weights_hand_checked():
    cell = ConvLSTMCell(1, 2, 3)
    with torch.no_grad():
        cell.conv.weight.zero_()
        cell.conv.bias.zero_()
        cell.conv.bias[6:8] = 1.0  # gate g (order i, f, o, g) -> tanh(1)
    x = torch.rand(1, 1, 4, 4)
    c0 = torch.full((1, 2, 4, 4), 2.0)
    h, (h2, c) = cell(x, (torch.zeros(1, 2, 4, 4), c0))
    # i = f = o = sigmoid(0) = 0.5; c = 0.5*2 + 0.5*tanh(1); h = 0.5*tanh(c)
    c_expected = 1.0 + 0.5 * math.tanh(1.0)
    assert torch.allclose(c, torch.full_like(c, c_expected))
    assert torch.allclose(h, torch.full_like(h, 0.5 * math.tanh(c_expected)))
    assert h is h2


def test_cell_zero_state_default_and_forget_bias():
    cell = ConvLSTMCell(3, 5, 5)
    assert torch.all(cell.conv.bias[5:10] == 1.0)
    h, (_, c) = cell(torch.rand(2, 3, 6, 6))
    assert h.shape == c.shape == (2, 5, 6, 6)
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(1, 2, 4)


def test_sequence_equals_step_by_step():
    torch.manual_seed(0)
    cell = ConvLSTMCell(2, 3, 3)
    x = torch.rand(2, 5, 2, 8, 8)
    hs, (h, c) = cell.forward_sequence(x)
    state = None
    for t in range(5):
        ht, state = cell(x[:, t], state)
        assert torch.allclose(hs[:, t], ht, atol=1e-6)
    assert torch.allclose(state[1], c, atol=1e-6)


@pytest.mark.parametrize("skip", [False, True])
def test_student_shapes(skip):
    net = StudentNet(blocks=3, layers_per_block=2, hidden=4, kernel_size=3, skip=skip)
    y, state = net(torch.rand(2, 3, 1, 16, 24))
    assert y.shape == (2, 3, 1, 16, 24)
    assert len(state) == 6
    assert state[0][0].shape == (2, 4, 16, 24)      # block 0
    assert state[-1][1].shape == (2, 16, 4, 6)      # block 2: 4*2**2 channels, /4 size
    assert net.config() == {"blocks": 3, "layers_per_block": 2, "hidden": 4,
                            "kernel_size": 3, "skip": skip}


def test_student_rejects_bad_sizes():
    net = StudentNet(blocks=3, layers_per_block=1, hidden=2, kernel_size=3, skip=False)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.rand(1, 2, 1, 10, 12))
    with pytest.raises(ValueError, match=r"\(B, T, 1, H, W\)"):
        net(torch.rand(1, 1, 8, 8))


def n_weights(m):
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_weight_count_formula():
    # blocks 2, layers 1, hidden 4, k 3:
    # cell0 (1+4)*16*9+16=736, BN 8; cell1 (4+8)*32*9+32=3488, BN 16;
    # decoder conv 8->4: 8*4*9+4=292, BN 8; head 4+1=5
    assert (n_weights(StudentNet(2, 1, 4, kernel_size=3, skip=False))
            == 736 + 8 + 3488 + 16 + 292 + 8 + 5)
    # skip: the decoder conv sees 8+4 channels: 12*4*9+4=436
    assert (n_weights(StudentNet(2, 1, 4, kernel_size=3, skip=True))
            == 736 + 8 + 3488 + 16 + 436 + 8 + 5)
    # paper default 3x3, hidden 12: ~0.6M
    assert n_weights(StudentNet(3, 3, 12, kernel_size=3, skip=False)) == 611_185


@pytest.mark.parametrize("skip", [False, True])
def test_chunked_equals_whole(skip):
    torch.manual_seed(1)
    net = StudentNet(blocks=2, layers_per_block=2, hidden=3, kernel_size=3, skip=skip).eval()
    x = torch.rand(1, 11, 1, 8, 8)
    with torch.no_grad():
        whole, _ = net(x)
        parts, state = [], None
        for s in range(0, 11, 4):
            y, state = net(x[:, s:s + 4], state)
            parts.append(y)
    assert torch.allclose(torch.cat(parts, 1), whole, atol=1e-5)


def test_state_matters():
    torch.manual_seed(2)
    net = StudentNet(blocks=1, layers_per_block=1, hidden=2, kernel_size=3, skip=False).eval()
    x = torch.rand(1, 4, 1, 8, 8)
    with torch.no_grad():
        _, state = net(x[:, :2])
        carried, _ = net(x[:, 2:], state)
        fresh, _ = net(x[:, 2:])
    assert not torch.allclose(carried, fresh)


def test_upsample_conv_equals_upsample_then_conv():
    from echodfkd.student.model import upsample_conv
    torch.manual_seed(4)
    x = torch.rand(2, 3, 5, 4)
    w, b = torch.randn(2, 3, 3, 3), torch.randn(2)
    plain = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), w, b, padding=1)
    assert torch.allclose(upsample_conv(x, w, b), plain, atol=1e-5)
    # hand check on a 1x1 image: upsampled 2x2 of value v, kernel of ones -> 4v in every corner
    one = upsample_conv(torch.full((1, 1, 1, 1), 2.0), torch.ones(1, 1, 3, 3), None)
    assert torch.equal(one, torch.full((1, 1, 2, 2), 8.0))


def _plain_forward(net, x):
    """StudentNet(skip=False) computed the plain way from its own modules."""
    F = torch.nn.functional
    layer = 0
    for k in range(net.blocks):
        for _ in range(net.layers_per_block):
            cell, state, out = net.cells[layer], None, []
            for t in range(x.shape[1]):
                h, state = cell(x[:, t], state)
                out.append(h)
            x = torch.stack(out, 1)
            x = net.norms[layer](x.flatten(0, 1)).view(x.shape)
            layer += 1
        if k < net.blocks - 1:
            x = F.max_pool2d(x.flatten(0, 1), 2).view(*x.shape[:3], x.shape[3] // 2, -1)
    b, t = x.shape[:2]
    y = x.flatten(0, 1)
    for conv, norm in zip(net.up_convs, net.up_norms):
        y = F.relu(norm(conv(F.interpolate(y, scale_factor=2, mode="nearest"))))
    return net.head(y).view(b, t, 1, *y.shape[2:])


def test_student_equals_plain_formulation_with_gradients():
    torch.manual_seed(5)
    net = StudentNet(blocks=3, layers_per_block=2, hidden=3, kernel_size=3, skip=False).train()
    x = torch.rand(2, 3, 1, 16, 16)
    fast, _ = net(x)
    fast.square().mean().backward()
    g_fast = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    plain = _plain_forward(net, x)
    plain.square().mean().backward()
    assert torch.allclose(fast, plain, atol=1e-5)
    for gf, p in zip(g_fast, net.parameters()):
        assert torch.allclose(gf, p.grad, atol=1e-5, rtol=1e-4)


def test_state_dict_keys_are_the_plain_modules():
    keys = set(StudentNet(2, 1, 4, kernel_size=3, skip=False).state_dict())
    assert {"cells.0.conv.weight", "cells.1.conv.bias", "up_convs.0.weight", "head.weight",
            "head.bias", "norms.1.running_var"} <= keys


# --- the fused ConvLSTM layer (hand-written backward through time) against plain autograd ---

def _run(net, x, state, fused):
    """Logits, state and the gradients of a loss that uses both (parameters, then x, then
    every state tensor that requires grad)."""
    net.fused = fused
    y, new = net(x, state)
    loss = (y * torch.linspace(-1, 1, y.numel()).view(y.shape)).sum() + sum(
        (h * 0.3 - c * 0.7).square().sum() for h, c in new)
    leaves = list(net.parameters()) + [x] + [t for hc in (state or []) for t in hc
                                             if t.requires_grad]
    return y, new, torch.autograd.grad(loss, leaves)


def _close(a, b, tol=2e-5):
    return torch.allclose(a, b, atol=tol * max(1.0, b.abs().max().item()), rtol=1e-4)


def test_layer_function_gradcheck_float64():
    from echodfkd.student.model import _ConvLSTMSequence
    torch.manual_seed(6)
    # 2 steps, batch 2, in_ch 2, hidden 2, 4x4 frames, kernel 3; every input requires grad
    x = torch.randn(2, 2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _ConvLSTMSequence.apply(*a, 1),
                                    (x, w, b, h0, c0))


def test_layer_function_gradcheck_wide_float64():
    """[x, h] with >= 24 channels: the joint input-gradient branch (one call over [x, h]). The
    weight is held fixed here (18k entries make gradcheck slow); its gradient in this branch
    is compared with autograd in test_fused_backward_paper_width_float32."""
    from echodfkd.student.model import _ConvLSTMSequence
    torch.manual_seed(7)
    x = torch.randn(2, 1, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(64, 32, 3, 3, dtype=torch.float64) * 0.1
    b = torch.randn(64, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 16, 3, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.zeros(1, 16, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x, b, h0: _ConvLSTMSequence.apply(x, w, b, h0, c0, 1),
                                    (x, b, h0))


@pytest.mark.parametrize("layers,skip", [(1, False), (3, False), (1, True), (3, True)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fused_equals_autograd_with_carried_state(layers, skip, mode):
    torch.manual_seed(8)
    net = StudentNet(blocks=3, layers_per_block=layers, hidden=6, kernel_size=3, skip=skip)
    net.train(mode == "train")
    x1 = torch.rand(2, 4, 1, 32, 32, requires_grad=True)
    x2 = torch.rand(2, 3, 1, 32, 32, requires_grad=True)
    # chunk 1 from zero state, chunk 2 carrying chunk 1's state (gradient flows through it)
    outs = {}
    for fused in (True, False):
        net.fused = fused
        y1, s1 = net(x1)
        s1 = [(h.detach().requires_grad_(), c.detach().requires_grad_()) for h, c in s1]
        outs[fused] = (y1,) + _run(net, x2, s1, fused)
    (a1, a2, sa, ga), (b1, b2, sb, gb) = outs[True], outs[False]
    assert _close(a1, b1) and _close(a2, b2)
    for (ha, ca), (hb, cb) in zip(sa, sb):
        assert _close(ha, hb) and _close(ca, cb)
    assert len(ga) == len(gb) == len(list(net.parameters())) + 1 + 2 * 3 * layers
    for u, v in zip(ga, gb):
        assert _close(u, v, 1e-4)


def test_fused_backward_paper_width_float32():
    """A realistic width (hidden 16 -> 16/32/64 channels: both input-gradient branches)."""
    torch.manual_seed(9)
    net = StudentNet(blocks=3, layers_per_block=2, hidden=16, kernel_size=3, skip=False).train()
    x = torch.rand(2, 5, 1, 32, 32, requires_grad=True)
    ya, sa, ga = _run(net, x, None, True)
    yb, sb, gb = _run(net, x, None, False)
    assert _close(ya, yb)
    for u, v in zip(ga, gb):
        assert _close(u, v, 1e-4)


def test_nograd_path_equals_autograd_and_keeps_caller_state():
    torch.manual_seed(10)
    net = StudentNet(blocks=2, layers_per_block=2, hidden=5, kernel_size=3, skip=False).eval()
    x = torch.rand(1, 6, 1, 16, 16)
    with torch.no_grad():
        _, state = net(x[:, :2])
        kept = [(h.clone(), c.clone()) for h, c in state]
        net.fused = False
        plain, plain_state = net(x[:, 2:], state)
        net.fused = True
    with torch.inference_mode():
        fast, fast_state = net(x[:, 2:], state)
    assert _close(fast, plain)
    for (h, c), (hp, cp), (hk, ck) in zip(fast_state, plain_state, kept):
        assert _close(h, hp) and _close(c, cp)
    for (h, c), (hk, ck) in zip(state, kept):     # the caller's state is not written
        assert torch.equal(h, hk) and torch.equal(c, ck)


def test_cell_forward_sequence_paths_agree():
    torch.manual_seed(11)
    cell = ConvLSTMCell(3, 4, 3)
    x = torch.rand(2, 5, 3, 6, 6, requires_grad=True)
    hs, (h, c) = cell.forward_sequence(x)
    hp, (h2, c2) = cell.forward_sequence(x, fused=False)
    assert hs.shape == (2, 5, 4, 6, 6)
    assert _close(hs, hp) and _close(c, c2) and torch.equal(hs[:, -1], h)
    ga = torch.autograd.grad(hs.sum() + c.sum(), [x, cell.conv.weight])
    gb = torch.autograd.grad(hp.sum() + c2.sum(), [x, cell.conv.weight])
    assert all(_close(u, v, 1e-4) for u, v in zip(ga, gb))


def test_double_backward_needs_the_plain_path():
    torch.manual_seed(12)
    net = StudentNet(blocks=1, layers_per_block=1, hidden=2, kernel_size=3, skip=False)
    x = torch.rand(1, 2, 1, 4, 4, requires_grad=True)
    net.fused = False
    (g,) = torch.autograd.grad(net(x)[0].square().sum(), x, create_graph=True)
    g.sum().backward()                              # plain path: twice differentiable
    assert net.cells[0].conv.weight.grad is not None
    net.fused = True
    (g,) = torch.autograd.grad(net(x)[0].square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|twice"):
        g.sum().backward()


@pytest.mark.parametrize("in_ch", [6, 24])                # im2col kernel / oneDNN kernel
def test_dgrad_kernels_equal_conv2d_input(in_ch):
    from echodfkd.student.model import _dgrad
    torch.manual_seed(13)
    w = torch.randn(8, in_ch, 3, 3)
    g = torch.randn(2, 8, 7, 5)
    like = torch.empty(2, in_ch, 7, 5)
    ref = torch.nn.grad.conv2d_input(like.shape, w, g, padding=1)
    assert _close(_dgrad(g, like, w, 1), ref)


def test_flops_identical_on_both_paths():
    from echodfkd.cost import flops_per_frame
    net = StudentNet(3, 1, 6, kernel_size=3, skip=False)
    fused = flops_per_frame(net, "video", 32)
    net.fused = False
    assert flops_per_frame(net, "video", 32) == fused > 0


def test_max_pool2x2_equals_max_pool2d():
    from echodfkd.student.model import max_pool2x2
    x = torch.tensor([[[[1., 5., 0., -1.],
                        [3., 2., -2., -3.]]]])
    assert torch.equal(max_pool2x2(x), torch.tensor([[[[5., 0.]]]]))   # by hand
    torch.manual_seed(14)
    x = torch.randn(3, 4, 6, 8)
    x[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        fast, ref = max_pool2x2(x), torch.nn.functional.max_pool2d(x, 2)
    assert torch.equal(fast.nan_to_num(7.0), ref.nan_to_num(7.0)) and fast[0, 0, 0, 0].isnan()
    x.requires_grad_()                      # under autograd: max_pool2d itself
    assert max_pool2x2(x).grad_fn is not None


def test_training_step_under_autocast():
    """train.amp runs the forward under bf16 autocast: the ConvLSTM layers then take the plain
    autograd loop (the hand-written backward takes float32), so a training step runs, and its
    gradients stay near the float32 ones (bf16 keeps ~3 significant digits)."""
    torch.manual_seed(0)
    net = StudentNet(blocks=2, layers_per_block=1, hidden=2, kernel_size=3, skip=False)
    x = torch.rand(2, 4, 1, 16, 16)
    y = (torch.rand(2, 4, 1, 16, 16) > 0.5).float()

    def grads(amp: bool) -> list[torch.Tensor]:
        net.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            logits, _ = net(x)
        torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
        return [p.grad.clone() for p in net.parameters()]

    ref, amp = (torch.cat([g.flatten() for g in grads(a)]) for a in (False, True))
    assert torch.isfinite(amp).all()
    assert (amp - ref).norm() <= 0.1 * ref.norm()          # the whole gradient, not per tensor
    assert torch.nn.functional.cosine_similarity(amp, ref, dim=0) > 0.99
