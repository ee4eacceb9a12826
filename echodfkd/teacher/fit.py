"""Fit the default teacher (a light U-Net) on labelled frames.

EchoNet-Dynamic fitted its teacher on the two traced frames (ED and ES) of each TRAIN video
against the tracing masks; the default teacher is fitted the same way on the real-like phantom.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from echodfkd.overlap import dice_per_frame
from echodfkd.teacher.unet import UNet
from echodfkd.warp import affine_matrices, warp_pair


def _check_pair(images: np.ndarray, masks: np.ndarray, what: str) -> None:
    images, masks = np.asarray(images), np.asarray(masks)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{what} images must be uint8 (N, H, W), got {images.dtype} "
                         f"{images.shape}")
    if masks.shape != images.shape:
        raise ValueError(f"{what} masks have shape {masks.shape}, images {images.shape}")
    if len(images) == 0:
        raise ValueError(f"no {what} images")
    if masks.size and int(masks.max()) > 1:
        raise ValueError(f"{what} masks must be 0/1, found value {int(masks.max())}")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice per image, averaged; logits and target (B, 1, H, W)."""
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1.0 - (2.0 * inter + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def seg_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float) -> torch.Tensor:
    """BCE with logits + ``dice_weight`` * soft Dice loss."""
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if dice_weight:
        loss = loss + dice_weight * dice_loss(logits, target)
    return loss


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, shift: float = 0.06,
            rotate_deg: float = 10.0, scale: float = 0.08, gain: float = 0.2
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (shift as a fraction of the half-size, rotation, scale) of images and
    masks together, then a random gain and gamma on the images. x, y float (B, 1, H, W)."""
    b = x.shape[0]
    r = torch.rand(b, 6, generator=gen, device="cpu").to(x.device)
    ang = (r[:, 0] * 2 - 1) * math.radians(rotate_deg)
    sc = 1.0 + (r[:, 1] * 2 - 1) * scale
    tx, ty = (r[:, 2] * 2 - 1) * shift * 2, (r[:, 3] * 2 - 1) * shift * 2
    x, y = warp_pair(x, y, affine_matrices(ang, sc, tx, ty))
    g = (1.0 + (r[:, 4] * 2 - 1) * gain).view(b, 1, 1, 1)
    gamma = torch.exp((r[:, 5] * 2 - 1) * gain).view(b, 1, 1, 1)
    x = (x.clamp(0, 1) ** gamma * g).clamp(0, 1)
    return x, y


@torch.no_grad()
def predict_proba(model: torch.nn.Module, images: np.ndarray, *, batch_size: int = 64,
                  device: str = "cpu") -> np.ndarray:
    """LV probabilities float32 (N, H, W) for uint8 images (N, H, W)."""
    model.eval()
    out = np.empty(images.shape, np.float32)
    for i in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device)
        x = x.float().div_(255.0).unsqueeze(1)
        out[i:i + batch_size] = torch.sigmoid(model(x))[:, 0].cpu().numpy()
    return out


def dice_scores(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dice per image between binary masks (N, H, W) or (N, 1, H, W) (bool or 0/1); 1 when both
    are empty."""
    p, t = (np.asarray(m).astype(bool) for m in (pred, target))
    return dice_per_frame(p.reshape(len(p), -1, p.shape[-1]), t.reshape(len(t), -1, t.shape[-1]))


def fit_teacher(train_images: np.ndarray, train_masks: np.ndarray, val_images: np.ndarray,
                val_masks: np.ndarray, *, width: int, depth: int, epochs: int,
                batch_size: int, lr: float, dice_weight: float, seed: int,
                device: str = "cpu", patience: int = 10, augmentation: bool = True,
                progress: bool = True) -> tuple[UNet, pd.DataFrame]:
    """Fit a :class:`UNet` to segment the LV.

    train_images / val_images: uint8 (N, H, W) grey frames (H, W divisible by 2**depth);
    train_masks / val_masks: uint8 (N, H, W) 0/1 LV masks. Loss: BCE with logits +
    ``dice_weight`` * soft Dice; Adam with a cosine learning-rate decay over ``epochs``;
    random shifts, rotations, scaling and gain when ``augmentation``. Stops after ``patience``
    epochs without a better validation loss.

    Returns the model holding the weights of the epoch with the lowest validation loss (in
    eval mode, on ``device``) and the history: one row per epoch with epoch, train_loss,
    val_loss, val_dice (mean Dice at threshold 0.5), lr, seconds. Deterministic on CPU for
    a seed.

    ``width``, ``depth``, ``epochs``, ``batch_size``, ``lr`` and ``dice_weight`` are
    params.yaml's ``teacher`` section (``batch``: ``batch_size``) and ``seed`` its ``seed``
    (plus the member's index), passed explicitly. With params.yaml's values (width 8, depth 3,
    30 epochs, batch 16, lr 0.003, dice_weight 0: the calibrated default teacher, BCE only; see
    docs/design.md §3 "The worst video" for why not BCE + Dice) and the defaults of
    ``patience`` and ``augmentation`` here, on the real-like phantom's traced TRAIN frames it
    reaches Dice ~0.93 against the human tracings at ED/ES on TEST, in about 30 x 2 s on 2 CPU
    threads (113k weights).
    """
    from tqdm import tqdm

    _check_pair(train_images, train_masks, "train")
    _check_pair(val_images, val_masks, "validation")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = UNet(width=width, depth=depth).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 0.02)

    def tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).unsqueeze(1)
        y = torch.from_numpy(np.ascontiguousarray(masks)).float().unsqueeze(1)
        return x.to(device), y.to(device)

    xt, yt = tensors(train_images, train_masks)
    xv, yv = tensors(val_images, val_masks)
    n = len(xt)
    best, best_loss, since = None, math.inf, 0
    rows = []
    bar = tqdm(range(1, epochs + 1), desc="teacher", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size].to(device)
            if len(idx) < 2 and n >= 2:  # BatchNorm needs two samples
                continue
            x, y = xt[idx], yt[idx]
            if augmentation:
                x, y = augment(x, y, gen)
            loss = seg_loss(model(x), y, dice_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        lr_now = opt.param_groups[0]["lr"]
        sched.step()
        model.eval()
        with torch.no_grad():
            vl, dices = 0.0, []
            for i in range(0, len(xv), 64):
                logits = model(xv[i:i + 64])
                vl += float(seg_loss(logits, yv[i:i + 64], dice_weight)) * len(logits)
                dices.append(dice_scores((logits > 0).cpu().numpy(),
                                         yv[i:i + 64].cpu().numpy() > 0.5))
            vl /= len(xv)
        row = dict(epoch=epoch, train_loss=total / n, val_loss=vl,
                   val_dice=float(np.concatenate(dices).mean()), lr=lr_now,
                   seconds=time.perf_counter() - t0)
        rows.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{vl:.3f}",
                        dice=f"{row['val_dice']:.3f}")
        if vl < best_loss:
            best_loss, since = vl, 0
            best = copy.deepcopy(model.state_dict())
        else:
            since += 1
            if since >= patience:
                break
    model.load_state_dict(best)
    model.eval()
    return model, pd.DataFrame(rows)
