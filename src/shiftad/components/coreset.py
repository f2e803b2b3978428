"""Greedy k-center coreset selection (PatchCore §3.2) with a Johnson-Lindenstrauss projection."""

from __future__ import annotations

import math

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

BOUND_DIMS = 32  # principal axes in the lower bound: on real patch features ~0.5 % of rows pass
GROUP_ROWS = 16  # BLAS computes rows in groups (4 with MKL on AVX-512); a gather padded to a
# multiple of 16 gives every row the bits it gets in a product over all rows
CHUNK_ROWS = 16384  # rows per float64 block while the rotation is set up (16 MB)
MARGIN = 1e-4  # relative slack on the bound: 10x float32's worst rounding of either distance


def greedy_coreset_indices(
    features: torch.Tensor, ratio: float, projection_dim: int = 128, seed: int = 0, progress: bool = True
) -> torch.Tensor:
    """Indices of a greedy k-center subset of `features` (N, C), k = ceil(ratio · N).

    Distances are computed in a random Gaussian projection to `projection_dim` dimensions, as the
    paper does, as ‖a‖² − 2a·b + ‖b‖² (one matrix-vector product per center). The result is the
    plain loop's — every row meets every center, argmax takes the first of equal maxima — bit
    for bit; see `_PrunedGreedy` for how most rows skip most centers.
    """
    n = features.shape[0]
    k = max(1, math.ceil(ratio * n))
    if k >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    # torch runs single-threaded here, the projection included: with several threads MKL rounds
    # the rows at the edge of a thread's share like the end of a product, and its dynamic
    # threading moves that edge with the machine's load, so one thread is what makes the picks
    # reproducible (the reference is the plain loop on one thread). The bound's product runs in
    # numpy's BLAS with the caller's threads; torch's pool is parked meanwhile (two pools
    # spinning on 2 cores cost 20x).
    torch.set_num_threads(1)
    try:
        x = features.float()
        if projection_dim < x.shape[1]:
            projection = torch.randn(x.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim)
            x = x @ projection
        x = x.contiguous()
        first = int(torch.randint(n, (1,), generator=generator))
        greedy = _PrunedGreedy(x)
        with threadpool_limits(threads, user_api="blas"):
            return torch.from_numpy(greedy.select(k, first, progress))
    finally:
        torch.set_num_threads(threads)


class _PrunedGreedy:
    """The exact greedy loop where a row meets a new center only if a cheap lower bound on
    their distance says the center could come closer than its nearest one so far.

    The bound: rotate the centred rows onto their principal axes (distances do not change),
    keep the first `BOUND_DIMS` coordinates z and the norm r of the rest; then
    ‖a−b‖² ≥ ‖z_a−z_b‖² + (r_a−r_b)². It is one product of a (BOUND_DIMS + 2)-row matrix with a
    vector per pick (22 MB for 163k rows, cache-resident, instead of 84 MB of full rows). Rows
    whose bound is below their current distance plus a margin that covers float32 rounding of
    both the bound and the exact distance are the candidates (≈ 0.5 % on real features); only
    they get the exact distance, by the same torch expression as the plain loop on a gather of
    their rows, so each gets the plain loop's bits and the argmax is the plain loop's.
    """

    def __init__(self, x: torch.Tensor) -> None:
        n, dims = x.shape
        self.x, self.n = x, n
        self.sq_norms = (x * x).sum(dim=1)  # the plain loop's expression: the same bits
        # float64 in row chunks: an accurate rotation without an (N, C) float64 copy of the bank
        mean = x.sum(dim=0, dtype=torch.float64) / n
        covariance = torch.zeros(dims, dims, dtype=torch.float64)
        for chunk in x.split(CHUNK_ROWS):
            centred = chunk.double() - mean
            covariance += centred.T @ centred
        axes = torch.linalg.eigh(covariance).eigenvectors.flip(1)  # orthonormal: the bound holds for any
        p = min(BOUND_DIMS, dims)
        # rows of the bound matrix: z, r and a 1 that carries the center's scalar terms
        self.bound_rows = np.ones((p + 2, n), dtype=np.float32)
        centred_sq = torch.empty(n, dtype=torch.float64)
        for start, chunk in zip(range(0, n, CHUNK_ROWS), x.split(CHUNK_ROWS)):
            centred = chunk.double() - mean
            rotated = centred @ axes
            stop = start + len(chunk)
            self.bound_rows[:p, start:stop] = rotated[:, :p].T.float().numpy()
            self.bound_rows[p, start:stop] = rotated[:, p:].square().sum(dim=1).sqrt().float().numpy()
            centred_sq[start:stop] = centred.square().sum(dim=1)
        self.centred_sq = centred_sq.float().numpy()
        self.margin = (MARGIN * (self.sq_norms.double() + centred_sq)).float().numpy()
        self.main_rows = n - n % GROUP_ROWS  # the rest get their bits from a product of their own

    def select(self, k: int, first: int, progress: bool) -> np.ndarray:
        x, xs, sq = self.x, self.x.numpy(), self.sq_norms.numpy()
        bound_rows, centred_sq, margin = self.bound_rows, self.centred_sq, self.margin
        min_dist = np.full(self.n, np.inf, dtype=np.float32)
        # a row is a candidate iff bound_rows·q > threshold, i.e. bound − margins < min_dist
        threshold = np.full(self.n, -np.inf, dtype=np.float32)
        query = np.empty(bound_rows.shape[0], dtype=np.float32)
        selected = np.empty(k, dtype=np.int64)
        current = first
        for i in tqdm(range(k), desc="coreset", unit="pt", disable=not progress, mininterval=1.0, leave=False):
            selected[i] = current
            query[:] = bound_rows[:, current]
            query[-1] = -0.5 * (centred_sq[current] - margin[current])
            candidates = np.flatnonzero(bound_rows.T @ query > threshold) if i else np.arange(self.n)
            distance = self._exact(candidates, x[current], sq[current], xs)
            closer = np.minimum(min_dist[candidates], distance)
            min_dist[candidates] = closer
            threshold[candidates] = 0.5 * (centred_sq[candidates] - (closer + margin[candidates]))
            current = int(min_dist.argmax())  # the first of equal maxima, as torch.argmax
        return selected

    def _exact(self, rows: np.ndarray, center: torch.Tensor, center_sq: np.float32, xs: np.ndarray) -> np.ndarray:
        """The plain loop's ‖x‖² − 2x·c + ‖c‖² for `rows` (sorted), bit for bit."""
        split = int(np.searchsorted(rows, self.main_rows))
        main, tail = rows[:split], rows[split:]
        padded = np.concatenate([main, np.full((-len(main)) % GROUP_ROWS, main[0] if len(main) else 0)])
        dots = (torch.from_numpy(xs[padded]) @ center).numpy()[: len(main)]
        if len(tail):  # the last n % GROUP_ROWS rows: a product over them alone, as at the end of x @ c
            tail_dots = (self.x[self.main_rows :] @ center).numpy()[tail - self.main_rows]
            dots = np.concatenate([dots, tail_dots])
        return self.sq_norms.numpy()[rows] - np.float32(2.0) * dots + center_sq
