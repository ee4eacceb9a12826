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
