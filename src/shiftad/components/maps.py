"""Anomaly maps: patch-grid scores upsampled to the image and Gaussian-smoothed."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel covering ±4σ (the convention PatchCore and anomalib use)."""
    return 2 * int(4.0 * sigma + 0.5) + 1


def upsample_and_smooth(patch_scores: torch.Tensor, size: int | tuple[int, int], sigma: float = 4.0) -> np.ndarray:
    """(B, h, w) patch scores -> (B, H, W) float32 maps: bilinear upsampling, then Gaussian blur."""
    size = (size, size) if isinstance(size, int) else size
    maps = F.interpolate(patch_scores[:, None].float(), size=size, mode="bilinear", align_corners=False)
    if sigma > 0:
        maps = TF.gaussian_blur(maps, kernel_size=[gaussian_kernel_size(sigma)] * 2, sigma=[sigma, sigma])
    return maps[:, 0].numpy().astype(np.float32)
