"""Uninformed Students' patch networks (Bergmann et al., CVPR 2020, supplementary tables).

One architecture per patch size p ∈ {17, 33, 65}: a p×p patch maps to one d-dimensional
descriptor (LeakyReLU 5e-3 after every layer but the last). `width` scales the hidden channel
counts (1 = the paper's 128/256). `dense` gives the descriptor of every pixel of an image: the
network on the p×p patch centred there (the image padded by reflection), computed at once by
running each layer after a stride-2 max-pool with stride 1 and its dilation doubled — the same
numbers as patch-wise evaluation, as in Bailer et al.'s fast dense feature extraction.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZES = (17, 33, 65)
LEAK = 5e-3

# ("conv", hidden channels at width 1 or None = the descriptor, kernel) | ("pool", 2)
LayerSpec = tuple[Literal["conv", "pool"], int | None, int]
ARCHITECTURES: dict[int, list[LayerSpec]] = {
    17: [("conv", 128, 6), ("conv", 256, 5), ("conv", 256, 5), ("conv", None, 4)],
    33: [("conv", 128, 5), ("pool", 0, 2), ("conv", 256, 5), ("pool", 0, 2), ("conv", 256, 2), ("conv", None, 4)],
    65: [("conv", 128, 5), ("pool", 0, 2), ("conv", 128, 5), ("pool", 0, 2), ("conv", 256, 5), ("pool", 0, 2),
         ("conv", 256, 4), ("conv", None, 1)],
}


def hidden_channels(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


class PatchNet(nn.Module):
    """A patch network of the given patch size: (B, 3, p, p) -> (B, d) in `forward`, (B, 3, H, W) ->
    (B, d, H, W) in `dense`. Inputs are ImageNet-normalised."""

    def __init__(self, patch_size: int, descriptor_dim: int, width: float = 1.0) -> None:
        super().__init__()
        if patch_size not in ARCHITECTURES:
            raise ValueError(f"patch size {patch_size}: the paper's networks are for {list(ARCHITECTURES)}")
        self.patch_size, self.descriptor_dim = patch_size, descriptor_dim
        layers: list[nn.Module] = []
        channels = 3
        spec = ARCHITECTURES[patch_size]
        for i, (kind, out, kernel) in enumerate(spec):
            if kind == "pool":
                layers.append(nn.MaxPool2d(kernel, stride=kernel))
                continue
            out_channels = descriptor_dim if out is None else hidden_channels(out, width)
            layers.append(nn.Conv2d(channels, out_channels, kernel))
            if i < len(spec) - 1:
                layers.append(nn.LeakyReLU(LEAK))
            channels = out_channels
        self.layers = nn.Sequential(*layers)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if patches.shape[-2:] != (self.patch_size, self.patch_size):
            raise ValueError(f"expected {self.patch_size}x{self.patch_size} patches, got {tuple(patches.shape[-2:])}")
        out = self.layers(patches)
        return out.reshape(out.shape[0], self.descriptor_dim)

    def dense(self, images: torch.Tensor) -> torch.Tensor:
        """The descriptor of the patch centred at every pixel, (B, d, H, W)."""
        h, w = images.shape[-2:]
        before, after = self.patch_size // 2, self.patch_size - 1 - self.patch_size // 2
        x = F.pad(images, (before, after, before, after), mode="reflect")
        dilation = 1
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                x = F.conv2d(x, layer.weight, layer.bias, dilation=dilation)
            elif isinstance(layer, nn.MaxPool2d):
                x = dilated_max_pool2(x, dilation)
                dilation *= 2
            else:
                x = layer(x)
        return x[..., :h, :w]


def dilated_max_pool2(x: torch.Tensor, dilation: int) -> torch.Tensor:
    """`F.max_pool2d(x, 2, stride=1, dilation=dilation)` as the maximum of four shifted views:
    the same numbers, several times faster on CPU (forward and backward)."""
    d = dilation
    top = torch.maximum(x[..., :-d, :-d], x[..., :-d, d:])
    bottom = torch.maximum(x[..., d:, :-d], x[..., d:, d:])
    return torch.maximum(top, bottom)


def compactness_loss(descriptors: torch.Tensor) -> torch.Tensor:
    """Sum of the absolute off-diagonal entries of the d × d correlation matrix of the descriptor
    DIMENSIONS over the batch (B, d) — decorrelated dimensions, compact descriptors."""
    if descriptors.ndim != 2 or descriptors.shape[0] < 2:
        raise ValueError(f"compactness needs a (batch >= 2, d) tensor, got {tuple(descriptors.shape)}")
    centred = descriptors - descriptors.mean(dim=0, keepdim=True)
    scaled = centred / centred.pow(2).sum(dim=0, keepdim=True).sqrt().clamp_min(1e-8)
    correlation = scaled.T @ scaled
    return correlation.abs().sum() - correlation.diagonal().abs().sum()


def student_scores(students: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression error and predictive variance per position.

    `students`: (M, B, d, H, W) student outputs, `teacher`: (B, d, H, W) normalised teacher output.
    e = ||mean_k S_k - T||², v = (1/M) sum_k ||S_k - mean_k S_k||² — each (B, H, W)."""
    mean = students.mean(dim=0)
    error = (mean - teacher).pow(2).sum(dim=1)
    variance = (students - mean).pow(2).sum(dim=2).mean(dim=0)
    return error, variance
