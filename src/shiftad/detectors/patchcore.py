"""PatchCore (Roth et al., CVPR 2022): a coreset memory bank of locally aware patch features.

fit: backbone mid-level features -> 3×3 neighbourhood aggregation -> upsample + concatenate ->
greedy k-center coreset. score: nearest memory-bank distance per patch; image score = max
patch score (or the paper's reweighting, eq. 7); map = patch scores upsampled to the image
size and Gaussian-smoothed (σ = 4). The bank, embedding and maps are shared with the few-shot
kNN (`memory_bank.py`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from shiftad.components.coreset import greedy_coreset_indices
from shiftad.detectors.memory_bank import PatchBankDetector
from shiftad.params import Params


class PatchCore(PatchBankDetector):
    name = "patchcore"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
        resize: str = "squash",
        normalisation: str = "model",
        neighbourhood: int = 3,
        coreset_ratio: float = 0.1,
        projection_dim: int = 128,
        image_score: str = "max",
        reweight_neighbours: int = 9,
        map_sigma: float = 4.0,
        batch_size: int = 16,
        knn_batch: int = 8192,
        seed: int = 0,
    ) -> None:
        if image_score not in ("max", "reweighted"):
            raise ValueError(f"image_score must be 'max' or 'reweighted', got {image_score!r}")
        self.backbone = backbone
        self.weights = weights
        self.layers = list(layers)
        self.image_size = image_size
        self.resize = resize
        self.normalisation = normalisation
        self.neighbourhood = neighbourhood
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.image_score = image_score
        self.reweight_neighbours = reweight_neighbours
        self.map_sigma = map_sigma
        self.batch_size = batch_size
        self.knn_batch = knn_batch
        self.seed = seed

    @classmethod
    def from_params(cls, params: Params) -> "PatchCore":
        p = params.patchcore
        return cls(
            backbone=params.backbone.name,
            weights=params.backbone.weights,
            layers=p.layers,
            image_size=params.image_size,
            resize=params.resize,
            normalisation=params.backbone.normalisation,
            neighbourhood=p.neighbourhood,
            coreset_ratio=p.coreset_ratio,
            projection_dim=p.projection_dim,
            image_score=p.image_score,
            reweight_neighbours=p.reweight_neighbours,
            map_sigma=p.map_sigma,
            batch_size=params.backbone.batch_size,
            knn_batch=p.knn_batch,
            seed=params.seed,
        )

    def _thin(self, patches: np.ndarray) -> np.ndarray:
        keep = greedy_coreset_indices(torch.from_numpy(patches), self.coreset_ratio, self.projection_dim, self.seed, self.progress)
        return patches[keep.numpy()]

    def _patch_scores(self, distances: np.ndarray) -> np.ndarray:
        return distances[:, 0].astype(np.float64)

    def _image_scores(self, patch_scores: np.ndarray, nearest: np.ndarray, rows: np.ndarray) -> np.ndarray:
        best = patch_scores.argmax(axis=1)
        top = patch_scores[np.arange(len(best)), best]
        if self.image_score == "max":
            return top
        # Paper eq. 7: weight s* by how isolated its nearest bank item m* is among m*'s neighbours.
        scores = np.empty_like(top)
        for i, (patch_index, s_star) in enumerate(zip(best, top)):
            m_star = self.memory_bank_[nearest[i, patch_index]]
            _, neighbour_ids = self._index.query(m_star[None], self.reweight_neighbours)
            distances = np.linalg.norm(self.memory_bank_[neighbour_ids[0]] - rows[i, patch_index], axis=1)
            # softmax-style weight computed stably: exp(s*) / Σ exp(d) = 1 / Σ exp(d - s*)
            weight = 1.0 - 1.0 / np.exp(distances.astype(np.float64) - s_star).sum()
            scores[i] = weight * s_star
        return scores
