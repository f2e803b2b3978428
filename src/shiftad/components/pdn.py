"""EfficientAD's networks and losses (Batzner et al., WACV 2024, and the official code).

Patch description networks (PDN) S and M, the autoencoder, hard feature loss, teacher
standardisation statistics and quantile map normalisation. `width` scales every hidden
channel count (1 = the paper's layer tables); the layer order matches the official
`nn.Sequential`s so official teacher weights load by key.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

ModelSize = Literal["small", "medium"]
MAP_PADDING = 4  # output pixels padded around the maps before resizing (the official code's value)


def _channels(base: int, width: float) -> int:
    return max(8, int(round(base * width)))


def pdn(size: ModelSize, out_channels: int, width: float = 1.0, padding: bool = False) -> nn.Sequential:
    """PDN-S / PDN-M. Without padding (detection) a 256-px input gives a 56×56 map and each output
    sees a 33×33 patch; with padding (teacher distillation) the map is input/4 on a side."""
    pad = 1 if padding else 0
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    if size == "small":
        c1, c2 = _channels(128, width), _channels(256, width)
        return nn.Sequential(
            nn.Conv2d(3, c1, 4, padding=3 * pad), relu(), nn.AvgPool2d(2, 2, padding=1 * pad),
            nn.Conv2d(c1, c2, 4, padding=3 * pad), relu(), nn.AvgPool2d(2, 2, padding=1 * pad),
            nn.Conv2d(c2, c2, 3, padding=1 * pad), relu(),
            nn.Conv2d(c2, out_channels, 4),
        )
    if size == "medium":
        c1, c2 = _channels(256, width), _channels(512, width)
        return nn.Sequential(
            nn.Conv2d(3, c1, 4, padding=3 * pad), relu(), nn.AvgPool2d(2, 2, padding=1 * pad),
            nn.Conv2d(c1, c2, 4, padding=3 * pad), relu(), nn.AvgPool2d(2, 2, padding=1 * pad),
            nn.Conv2d(c2, c2, 1), relu(),
            nn.Conv2d(c2, c2, 3, padding=1 * pad), relu(),
            nn.Conv2d(c2, out_channels, 4), relu(),
            nn.Conv2d(out_channels, out_channels, 1),
        )
    raise ValueError(f"model size must be 'small' or 'medium', got {size!r}")


def pdn_output_size(image_size: int, padding: bool = False) -> int:
    """Side of a PDN's output map (S and M agree) for a square input."""
    if padding:
        return (((image_size + 3) // 2 + 1 + 3) // 2 + 1) - 3
    return ((image_size - 3) // 2 - 3) // 2 - 2 - 3


def autoencoder(out_channels: int, image_size: int, output_size: int, width: float = 1.0) -> nn.Sequential:
    """The official autoencoder for any input size: the last encoder kernel spans what five
    stride-2 convolutions leave of the input (8 at 256 px, not a constant), the decoder's
    intermediate sizes scale with the input, and it ends at the PDN's output size."""
    narrow, wide = _channels(32, width), _channels(64, width)
    side = image_size
    for _ in range(5):
        side = side // 2  # 4×4 kernel, stride 2, padding 1
    if side < 1:
        raise ValueError(f"the autoencoder needs an input of at least 32 px, got {image_size}")
    relu = lambda: nn.ReLU(inplace=True)  # noqa: E731
    layers: list[nn.Module] = [
        nn.Conv2d(3, narrow, 4, stride=2, padding=1), relu(),
        nn.Conv2d(narrow, narrow, 4, stride=2, padding=1), relu(),
        nn.Conv2d(narrow, wide, 4, stride=2, padding=1), relu(),
        nn.Conv2d(wide, wide, 4, stride=2, padding=1), relu(),
        nn.Conv2d(wide, wide, 4, stride=2, padding=1), relu(),
        nn.Conv2d(wide, wide, side),
    ]
    for reference in (3, 8, 15, 32, 63, 127):  # the official sizes at 256 px
        layers += [nn.Upsample(size=max(1, round(reference * image_size / 256)), mode="bilinear"),
                   nn.Conv2d(wide, wide, 4, stride=1, padding=2), relu(), nn.Dropout(0.2)]
    layers += [nn.Upsample(size=output_size, mode="bilinear"),
               nn.Conv2d(wide, wide, 3, stride=1, padding=1), relu(),
               nn.Conv2d(wide, out_channels, 3, stride=1, padding=1)]
    return nn.Sequential(*layers)


def normalise_input(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> ImageNet-normalised: the one place EfficientAD's inputs are normalised
    (applying it twice is a known pitfall of other implementations)."""
    mean = torch.tensor((0.485, 0.456, 0.406), device=images.device).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225), device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def hard_feature_loss(distance: torch.Tensor, quantile: float = 0.999) -> torch.Tensor:
    """Mean of the largest (1 − quantile) share of the squared differences: exactly
    ceil((1 − q)·n) elements. `topk` has none of `torch.quantile`'s input size limit (2^24)."""
    flat = distance.reshape(-1)
    k = max(1, math.ceil(round((1.0 - quantile) * flat.numel(), 6)))
    return flat.topk(k, sorted=False).values.mean()


@torch.no_grad()
def channel_statistics(outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over every position of every map: (1, C, 1, 1) each."""
    total = sum(o.shape[0] * o.shape[2] * o.shape[3] for o in outputs)
    mean = sum(o.double().sum(dim=(0, 2, 3)) for o in outputs) / total
    var = sum(((o.double() - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3)) for o in outputs) / total
    return mean.float().view(1, -1, 1, 1), var.sqrt().float().clamp_min(1e-6).view(1, -1, 1, 1)


def map_quantiles(maps: np.ndarray | torch.Tensor, low: float, high: float) -> tuple[float, float]:
    """The two quantiles of the (unpadded, not resized) maps; numpy has no input size limit."""
    values = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, dtype=np.float64).ravel()
    q_low, q_high = np.quantile(values, [low, high])
    return float(q_low), float(q_high)


def normalise_map(maps: torch.Tensor, q_low: float, q_high: float) -> torch.Tensor:
    """Maps q_low to 0 and q_high to 0.1 (the official normalisation)."""
    return 0.1 * (maps - q_low) / max(q_high - q_low, 1e-12)
