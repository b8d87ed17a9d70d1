"""Image augmentation on a batch already in memory (and on the GPU when training is): flips by
mask, and shift and rotation as one affine resampling per sample. Draws come from torch's
global generator, which the engine seeds per epoch, so augmented runs resume exactly."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.spec import Augmentation


def augment(x: torch.Tensor, spec: Augmentation) -> torch.Tensor:
    """x: (N, C, H, W) images (or any float batch, for noise alone)."""
    if spec.horizontal_flip:
        x = torch.where(_coin(x), x.flip(-1), x)
    if spec.vertical_flip:
        x = torch.where(_coin(x), x.flip(-2), x)
    if spec.shift > 0 or spec.rotation > 0:
        x = _affine(x, spec.shift, spec.rotation)
    if spec.noise_stddev > 0:
        x = x + torch.randn(x.shape, device=x.device, dtype=x.dtype) * spec.noise_stddev
    return x


def _coin(x: torch.Tensor) -> torch.Tensor:
    """One fair coin per sample, broadcast over the sample's axes."""
    return (torch.rand(len(x), device=x.device) < 0.5).view(-1, *([1] * (x.dim() - 1)))


def _affine(x: torch.Tensor, shift: float, rotation: float) -> torch.Tensor:
    n = len(x)
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(rotation)
    # affine_grid works in [-1, 1] coordinates: a shift of a fraction f of the width is 2f there.
    move = (torch.rand(n, 2, device=x.device) * 2 - 1) * (2 * shift)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
