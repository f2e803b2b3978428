"""Exact nearest-neighbour search over a memory bank (faiss, flat L2)."""

from __future__ import annotations

import faiss
import numpy as np


class NearestNeighbours:
    """Exact k-NN in euclidean distance; returns true (not squared) distances."""

    def __init__(self, bank: np.ndarray, batch_size: int = 8192) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.batch_size = batch_size
        self.index = faiss.IndexFlatL2(self.bank.shape[1])
        self.index.add(self.bank)

    def query(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices), each (M, k)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.bank.shape[0])
        distances = np.empty((len(queries), k), dtype=np.float32)
        indices = np.empty((len(queries), k), dtype=np.int64)
        for start in range(0, len(queries), self.batch_size):
            stop = start + self.batch_size
            sq, idx = self.index.search(queries[start:stop], k)
            distances[start:stop] = np.sqrt(np.maximum(sq, 0.0))
            indices[start:stop] = idx
        return distances, indices


def merge_neighbours(
    distances: np.ndarray, indices: np.ndarray, more_distances: np.ndarray, more_indices: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest of two (M, ·) neighbour lists over disjoint bank parts (indices already
    global): exact k-NN of the union, which extends a bank without searching it again."""
    return nearest_of([(distances, indices), (more_distances, more_indices)], k)


def nearest_of(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest over any number of (M, ·) (distances, global indices) lists of disjoint bank parts."""
    d = np.concatenate([p[0] for p in parts], axis=1)
    i = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(d, axis=1, kind="stable")[:, : min(k, d.shape[1])]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)
