"""Greedy k-center coreset selection (PatchCore §3.2) with a Johnson-Lindenstrauss projection.

Exact and pruned: each point remembers the center it is nearest to, and each center the
largest distance of its points (its radius). A new center c can only come closer to the
points of a center a when ‖c − a‖ < 2 · radius(a) (triangle inequality), so every step updates
the points of those clusters only. Early steps touch every point; once the coreset has a few
hundred centers most clusters are far from the new one, and a step costs a fraction of a full
pass. The picks are those of the plain loop (`greedy_coreset_reference`): pruning skips only
points whose distance provably cannot drop, with a margin for float32 rounding.
"""

from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

ROUNDING = 1e-4  # bound on the float32 error of ‖a‖² − 2a·b + ‖b‖², relative to the largest ‖x‖² (≈ d·eps with d = 128, ×10)


def _projected(features: torch.Tensor, ratio: float, projection_dim: int, seed: int) -> tuple[torch.Tensor, int, torch.Generator]:
    """The rows in the random projection, the coreset size and the generator that draws the first pick."""
    n = features.shape[0]
    k = max(1, math.ceil(ratio * n))
    generator = torch.Generator().manual_seed(seed)
    x = features.float()
    if k < n and projection_dim < x.shape[1]:
        projection = torch.randn(x.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
        x = x @ projection
    return x.contiguous(), k, generator


def greedy_coreset_indices(
    features: torch.Tensor, ratio: float, projection_dim: int = 128, seed: int = 0, progress: bool = True
) -> torch.Tensor:
    """Indices of a greedy k-center subset of `features` (N, C), k = ceil(ratio · N), in pick order.

    Distances are computed in a random Gaussian projection to `projection_dim` dimensions, as the
    paper does, using ‖a−b‖² = ‖a‖² − 2a·b + ‖b‖² (one matrix-vector product per step, over the
    points that the triangle inequality cannot rule out).
    """
    n = features.shape[0]
    x, k, generator = _projected(features, ratio, projection_dim, seed)
    if k >= n:
        return torch.arange(n)
    sq_norms = (x * x).sum(dim=1)
    # a pruned point's computed distance provably stays >= its current minimum with this margin (see the module docstring)
    margin = 4.0 * math.sqrt(ROUNDING * float(sq_norms.max()))
    selected = torch.empty(k, dtype=torch.long)
    centers = torch.empty(k, x.shape[1])
    center_sq = torch.empty(k)
    radius = torch.zeros(k)  # per center: max distance of its points (exact after each step for touched clusters)
    owner = torch.zeros(n, dtype=torch.long)  # the center each point is nearest to
    min_dist = torch.full((n,), float("inf"))
    everything = torch.arange(n)
    current = int(torch.randint(n, (1,), generator=generator))
    for i in tqdm(range(k), desc="coreset", unit="pt", disable=not progress, mininterval=1.0, leave=False):
        selected[i] = current
        point = x[current]
        centers[i], center_sq[i] = point, sq_norms[current]
        if i == 0:
            touched = everything
        else:
            to_centers = (center_sq[:i] - 2.0 * (centers[:i] @ point) + sq_norms[current]).clamp_(min=0.0)
            near = to_centers < (2.0 * radius[:i] + margin) ** 2  # clusters whose points may come closer
            near_centers = near.nonzero().squeeze(1)
            touched = near[owner].nonzero().squeeze(1) if len(near_centers) < i else everything
            radius[near_centers] = 0.0
        dist = sq_norms[touched] - 2.0 * (x[touched] @ point) + sq_norms[current]
        before = min_dist[touched]
        closer = dist < before
        min_dist[touched] = torch.where(closer, dist, before)
        owner[touched[closer]] = i
        radius.scatter_reduce_(0, owner[touched], min_dist[touched].clamp(min=0.0).sqrt(), reduce="amax")
        current = int(torch.argmax(min_dist))
    return selected


def greedy_coreset_reference(features: torch.Tensor, ratio: float, projection_dim: int = 128, seed: int = 0) -> torch.Tensor:
    """The plain greedy loop (every point, every step): what `greedy_coreset_indices` must equal."""
    n = features.shape[0]
    x, k, generator = _projected(features, ratio, projection_dim, seed)
    if k >= n:
        return torch.arange(n)
    sq_norms = (x * x).sum(dim=1)
    selected = torch.empty(k, dtype=torch.long)
    current = int(torch.randint(n, (1,), generator=generator))
    min_dist = torch.full((n,), float("inf"))
    for i in range(k):
        selected[i] = current
        dist = sq_norms - 2.0 * (x @ x[current]) + sq_norms[current]
        torch.minimum(min_dist, dist, out=min_dist)
        current = int(torch.argmax(min_dist))
    return selected
