"""echodfkd/warp.py: affine matrices and the joint warp of images and masks, checked by hand."""

import math

import torch

from echodfkd.warp import affine_matrices, warp_pair


def test_affine_matrices_by_hand():
    one, zero = torch.ones(1), torch.zeros(1)
    torch.testing.assert_close(affine_matrices(zero, one, zero, zero),
                               torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]))
    # a quarter turn at zoom 2 with a shift: cos 0, sin 1/2 after dividing by the scale
    th = affine_matrices(torch.tensor([math.pi / 2]), torch.tensor([2.0]),
                         torch.tensor([0.25]), torch.tensor([-0.5]))
    torch.testing.assert_close(th, torch.tensor([[[0.0, -0.5, 0.25], [0.5, 0.0, -0.5]]]))


def test_warp_pair_moves_images_and_masks_together():
    x = torch.zeros(2, 1, 8, 8)
    x[:, 0, 4, 5] = 1.0                       # one bright pixel at row 4, column 5
    y = x * 0.5
    one, zero = torch.ones(2), torch.zeros(2)
    xs, ys = warp_pair(x, y, affine_matrices(zero, one, zero, zero))
    torch.testing.assert_close(xs, x)         # the identity leaves both unchanged
    torch.testing.assert_close(ys, y)
    # output(p) = input(p + 2 px): one pixel is 2 / 8 in [-1, 1], so tx = 0.5 for image 0;
    # image 1 shifts 1 px down instead (ty = -0.25: output(p) = input(p - 1 px))
    th = affine_matrices(zero, one, torch.tensor([0.5, 0.0]), torch.tensor([0.0, -0.25]))
    xs, ys = warp_pair(x, y, th)
    expect = torch.zeros_like(x)
    expect[0, 0, 4, 3] = 1.0
    expect[1, 0, 5, 5] = 1.0
    torch.testing.assert_close(xs, expect)
    torch.testing.assert_close(ys, expect * 0.5)
