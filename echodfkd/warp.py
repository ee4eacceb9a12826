"""Random-affine augmentation shared by the teacher's fitting (:func:`echodfkd.teacher.fit.augment`)
and the student's training (:func:`echodfkd.student.train.apply_spatial`): the affine matrices
and the warp of images together with their masks, so that the targets stay valid.

Images and masks: float (N, C, H, W), rows = y, columns = x. Matrices: (N, 2, 3), those of
``torch.nn.functional.affine_grid``, mapping output to input coordinates in [-1, 1]
(``align_corners=False``: one pixel is 2 / W along x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def affine_matrices(angle: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor,
                    ty: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) matrices of a rotation by ``angle`` (rad), a zoom by ``scale`` (> 1 enlarges
    the content) and a shift by (``tx``, ``ty``) in [-1, 1] units (output(p) = input(p + t));
    every argument (N,), same dtype."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)


def warp_pair(images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``images`` and ``masks`` (float (N, C, H, W)) by ``theta[n]`` ((N, 2, 3), same
    dtype and device), the same map on both: bilinear sampling, 0 outside the frame. Returns
    the warped (images, masks), same shapes."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)

    def warp(z: torch.Tensor) -> torch.Tensor:
        return F.grid_sample(z, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    return warp(images), warp(masks)
