"""Tests for the light U-Net (echodfkd/teacher/unet.py) and fit_teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echodfkd.cost import count_weights
from echodfkd.teacher.unet import UNet
from echodfkd.teacher.fit import dice_scores, fit_teacher, predict_proba


def test_unet_shapes_and_size():
    torch.manual_seed(0)
    for width, depth, size in [(4, 1, 8), (8, 3, 112), (4, 4, 32)]:
        m = UNet(width=width, depth=depth).eval()
        x = torch.rand(2, 1, size, size)
        y = m(x)
        assert y.shape == (2, 1, size, size) and y.dtype == torch.float32
    assert 50_000 < count_weights(UNet(width=8, depth=3)) < 200_000
    assert count_weights(UNet(width=16, depth=3)) < 600_000


def test_unet_rejects_bad_input():
    m = UNet(width=4, depth=3)
    with pytest.raises(ValueError, match="divisible by 8"):
        m(torch.rand(1, 1, 20, 20))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="width"):
        UNet(width=0, depth=3)


def test_dice_scores_by_hand():
    a = np.zeros((3, 4, 4), np.uint8)
    b = np.zeros((3, 4, 4), np.uint8)
    a[0, :2] = 1          # 8 pixels
    b[0, :1] = 1          # 4 pixels, all inside a
    a[1, 0, 0] = 1        # disjoint
    b[1, 3, 3] = 1
    # image 2: both empty
    assert dice_scores(a, b) == pytest.approx([8 / 12, 0.0, 1.0])


def discs(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Dark discs in a bright speckled ring on a grey background, and their masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, size, size), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cx, cy = rng.uniform(10, size - 10, 2)
        r = rng.uniform(4, 8)
        d = np.hypot(xx - cx, yy - cy)
        img = np.where(d < r, 20, np.where(d < r + 3, 200, 90)) + rng.normal(0, 15, d.shape)
        images[i] = np.clip(img, 0, 255)
        masks[i] = d < r
    return images, masks


def test_fit_teacher_learns_and_is_deterministic():
    torch.set_num_threads(1)
    xt, yt = discs(24, 0)
    xv, yv = discs(8, 1)
    kw = dict(width=4, depth=2, epochs=20, batch_size=8, lr=1e-2, dice_weight=0.5, seed=3,
              progress=False)
    m1, h1 = fit_teacher(xt, yt, xv, yv, **kw)
    m2, h2 = fit_teacher(xt, yt, xv, yv, **kw)
    assert list(h1.columns[:4]) == ["epoch", "train_loss", "val_loss", "val_dice"]
    assert h1["train_loss"].iloc[-1] < 0.6 * h1["train_loss"].iloc[0]
    assert h1["val_dice"].max() > 0.8
    # The returned model is the epoch with the best validation loss.
    p = predict_proba(m1, xv)
    assert p.shape == xv.shape and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
    assert dice_scores(p > 0.5, yv).mean() == pytest.approx(
        h1.loc[h1["val_loss"].idxmin(), "val_dice"], abs=1e-6)
    # Same seed, same everything.
    assert h1.drop(columns="seconds").equals(h2.drop(columns="seconds"))
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k


def test_fit_teacher_rejects_bad_data():
    x, y = discs(4, 0)
    kw = dict(width=8, depth=3, epochs=1, batch_size=16, lr=3e-3, dice_weight=0.0, seed=0,
              progress=False)
    with pytest.raises(ValueError, match="uint8"):
        fit_teacher(x.astype(np.float32), y, x, y, **kw)
    with pytest.raises(ValueError, match="0/1"):
        fit_teacher(x, y * 255, x, y, **kw)
    with pytest.raises(ValueError, match="shape"):
        fit_teacher(x, y[:, :16], x, y, **kw)
