import time

import pytest
import torch
from torch import nn

from echodfkd.cost import count_weights, flops_per_frame, frames_per_second
from echodfkd.student.model import StudentNet


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_count_weights_trainable_only():
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    assert count_weights(m) == 4 * 9 + 4 + 8
    m[0].weight.requires_grad_(False)
    assert count_weights(m) == 4 + 8


def test_flops_single_conv_hand_checked():
    conv = nn.Conv2d(1, 4, 3, padding=1)
    # one multiply-add = 2 FLOPs: 2 * out 4 * in 1 * 9 taps * 8*8 pixels
    assert flops_per_frame(conv, "image", size=8) == 2 * 4 * 9 * 64
    assert flops_per_frame(conv, "teacher", size=8, in_channels=1) == 2 * 4 * 9 * 64


def test_student_flops_hand_checked_and_per_frame():
    net = StudentNet(blocks=1, layers_per_block=1, hidden=4, kernel_size=3, skip=False)
    # cell conv over [x (1), h (4)] -> 16 channels, 3x3; head 4 -> 1
    expected = 2 * 16 * 16 * (16 * 5 * 9 + 4)
    assert flops_per_frame(net, "video", size=16, frames=3) == expected
    assert flops_per_frame(net, "student", size=16, frames=7) == expected


def test_student_flops_scale():
    small = flops_per_frame(StudentNet(2, 1, 8, kernel_size=3, skip=False), "video", size=56)
    full = flops_per_frame(StudentNet(2, 1, 8, kernel_size=3, skip=False), "video", size=112)
    assert full == 4 * small
    wide = flops_per_frame(StudentNet(2, 1, 16, kernel_size=3, skip=False), "video", size=112)
    assert 2 * full < wide <= 4 * full
    deep = flops_per_frame(StudentNet(3, 3, 12, kernel_size=3, skip=False), "video", size=112)
    assert deep > wide > 0


def test_flops_rejects_unknown_kind():
    with pytest.raises(ValueError, match="'movie'"):
        flops_per_frame(nn.Conv2d(1, 1, 1), "movie")


def test_flops_restores_training_mode():
    net = StudentNet(1, 1, 2, kernel_size=3, skip=False).train()
    flops_per_frame(net, "video", size=8)
    assert net.training


def test_frames_per_second():
    fps = frames_per_second(lambda: time.sleep(0.02), 10, repeats=3, warmup=0)
    assert 200 < fps <= 500
