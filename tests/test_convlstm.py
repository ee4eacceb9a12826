import math

import pytest
import torch

from echodfkd.models.convlstm import ConvLSTMCell, StudentNet


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
    net = StudentNet(blocks=3, layers_per_block=2, hidden=4, skip=skip)
    y, state = net(torch.rand(2, 3, 1, 16, 24))
    assert y.shape == (2, 3, 1, 16, 24)
    assert len(state) == 6
    assert state[0][0].shape == (2, 4, 16, 24)      # block 0
    assert state[-1][1].shape == (2, 16, 4, 6)      # block 2: 4*2**2 channels, /4 size
    assert net.config() == {"blocks": 3, "layers_per_block": 2, "hidden": 4,
                            "kernel_size": 3, "skip": skip}


def test_student_rejects_bad_sizes():
    net = StudentNet(blocks=3, layers_per_block=1, hidden=2)
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
    assert n_weights(StudentNet(2, 1, 4)) == 736 + 8 + 3488 + 16 + 292 + 8 + 5
    # skip: the decoder conv sees 8+4 channels: 12*4*9+4=436
    assert n_weights(StudentNet(2, 1, 4, skip=True)) == 736 + 8 + 3488 + 16 + 436 + 8 + 5
    # paper default 3x3, hidden 12: ~0.6M
    assert n_weights(StudentNet(3, 3, 12)) == 611_185


@pytest.mark.parametrize("skip", [False, True])
def test_chunked_equals_whole(skip):
    torch.manual_seed(1)
    net = StudentNet(blocks=2, layers_per_block=2, hidden=3, skip=skip).eval()
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
    net = StudentNet(blocks=1, layers_per_block=1, hidden=2).eval()
    x = torch.rand(1, 4, 1, 8, 8)
    with torch.no_grad():
        _, state = net(x[:, :2])
        carried, _ = net(x[:, 2:], state)
        fresh, _ = net(x[:, 2:])
    assert not torch.allclose(carried, fresh)


def test_upsample_conv_equals_upsample_then_conv():
    from echodfkd.models.convlstm import upsample_conv
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
    net = StudentNet(blocks=3, layers_per_block=2, hidden=3).train()
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
    keys = set(StudentNet(2, 1, 4).state_dict())
    assert {"cells.0.conv.weight", "cells.1.conv.bias", "up_convs.0.weight", "head.weight",
            "head.bias", "norms.1.running_var"} <= keys
