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
    paper does, using ‖a−b‖² = ‖a‖² − 2a·b + ‖b‖², one matrix-vector product per center and
    block of rows (see `_Block`: the same indices as a plain loop over all rows, ~3x faster).
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
    blocks = [_Block(x[s : s + BLOCK_ROWS], sq_norms[s : s + BLOCK_ROWS], min_dist[s : s + BLOCK_ROWS], s)
              for s in range(0, n, BLOCK_ROWS)]
    centers: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in tqdm(range(k), desc="coreset", unit="pt", disable=not progress, mininterval=1.0, leave=False):
        selected[i] = current
        centers.append((x[current], sq_norms[current]))
        while True:
            block = max(blocks, key=lambda b: b.max)  # the first block among equal bounds: argmax's tie rule
            if block.seen == len(centers):
                break
            block.catch_up(centers)
        current = block.start + block.arg
    return selected


BLOCK_ROWS = 4096  # 2 MB of 128-d rows: a block stays in cache while it meets the centers it missed


class _Block:
    """Rows [start, start + len) of the projected features, their distance to the nearest
    selected center so far (``min_dist``, a view of the full vector) and the largest of those.

    Lazy greedy, exact: a block meets only the centers picked since it last did (``seen`` of
    them so far), when its stale maximum, an upper bound (distances only shrink), is the largest
    of all blocks. A block that is current and on top holds the farthest point. The distances
    are the plain loop's, expression for expression (the same matrix-vector product on a slice
    of the rows), so the indices are identical; the win is locality: 2 MB at a time instead of
    streaming all rows from memory at every pick.
    """

    __slots__ = ("x", "sq_norms", "min_dist", "start", "seen", "max", "arg")

    def __init__(self, x: torch.Tensor, sq_norms: torch.Tensor, min_dist: torch.Tensor, start: int) -> None:
        self.x, self.sq_norms, self.min_dist, self.start = x, sq_norms, min_dist, start
        self.seen, self.max, self.arg = 0, math.inf, 0

    def catch_up(self, centers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for center, sq_norm in centers[self.seen :]:
            torch.minimum(self.min_dist, self.sq_norms - 2.0 * (self.x @ center) + sq_norm, out=self.min_dist)
        self.seen = len(centers)
        self.arg = int(torch.argmax(self.min_dist))
        self.max = float(self.min_dist[self.arg])
