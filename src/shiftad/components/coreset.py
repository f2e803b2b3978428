"""Greedy k-center coreset selection (PatchCore §3.2) with a Johnson-Lindenstrauss projection."""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm


def greedy_coreset_indices(
    features: torch.Tensor, ratio: float, projection_dim: int = 128, seed: int = 0, progress: bool = True
) -> torch.Tensor:
    """Indices of a greedy k-center subset of `features` (N, C), k = ceil(ratio · N).

    Distances are computed in a random Gaussian projection to `projection_dim` dimensions, as the
    paper does, using ‖a−b‖² = ‖a‖² − 2a·b + ‖b‖² so each step is one matrix-vector product.
    """
    n = features.shape[0]
    k = max(1, math.ceil(ratio * n))
    if k >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    if projection_dim < x.shape[1]:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        x = x @ projection
    x = x.contiguous()
    sq_norms = (x * x).sum(dim=1)
    selected = torch.empty(k, dtype=torch.long)
    current = int(torch.randint(n, (1,), generator=generator))
    min_dist = torch.full((n,), float("inf"))
    for i in tqdm(range(k), desc="coreset", unit="pt", disable=not progress, mininterval=1.0, leave=False):
        selected[i] = current
        dist = sq_norms - 2.0 * (x @ x[current]) + sq_norms[current]
        torch.minimum(min_dist, dist, out=min_dist)
        current = int(torch.argmax(min_dist))
    return selected
