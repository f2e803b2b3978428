"""Anomaly maps: patch-grid scores upsampled to the image and Gaussian-smoothed."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel covering ±4σ (the convention PatchCore and anomalib use)."""
    return 2 * int(4.0 * sigma + 0.5) + 1


def gaussian_blur(maps: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """torchvision's `gaussian_blur` (v2 functional: the same kernel, reflect padding) on float
    (B, C, H, W) maps, as two 1-D passes: the 2-D kernel is the outer product of the 1-D one, so
    the result is the same up to float rounding (< 1e-6 relative) at 2/k of the cost (33 taps at
    σ = 4: 16× fewer multiplications, the blur was half of a scoring job). Written out because
    importing torchvision also costs every scoring job ~1.5 s (torchvision.ops → torch._dynamo)."""
    lim = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    x = torch.linspace(-lim, lim, steps=kernel_size, dtype=maps.dtype, device=maps.device)
    kernel1d = torch.softmax(x.div(sigma).pow(2).neg(), dim=0)
    channels, pad = maps.shape[-3], kernel_size // 2
    padded = F.pad(maps, [pad, pad, pad, pad], mode="reflect")
    rows = F.conv2d(padded, kernel1d.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    return F.conv2d(rows, kernel1d.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)


def upsample_and_smooth(patch_scores: torch.Tensor, size: int | tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(B, h, w) patch scores -> (B, H, W) float32 maps: bilinear upsampling, then Gaussian blur."""
    size = (size, size) if isinstance(size, int) else size
    maps = F.interpolate(patch_scores[:, None].float(), size=size, mode="bilinear", align_corners=False)
    if sigma > 0:
        maps = gaussian_blur(maps, gaussian_kernel_size(sigma), sigma)
    return maps[:, 0].numpy().astype(np.float32)
