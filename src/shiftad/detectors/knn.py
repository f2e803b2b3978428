"""Few-shot patch kNN (the memory-bank design of AnomalyDINO, Damm et al. 2025).

fit: patch features of K normal images (`knn.shots` per category, a seeded draw from the
training images; the K-shot stage sweeps K) form the memory bank, optionally thinned by a random or greedy coreset. score: per patch, the mean distance
to its k nearest bank patches (euclidean, or cosine on L2-normalised features); image score =
max patch score or the mean of the top 1%; map = patch scores upsampled to the image size and
Gaussian-smoothed (σ = 4).

Backbone: DINOv2 ViT-S/14 or ViT-B/14 patch tokens (`knn.backbone:
vit_small_patch14_dinov2.lvd142m`, weights downloaded or from `knn.weights`), or by default
the pipeline's offline CNN backbone with PatchCore's locally aware features. For ViT tokens
an optional foreground mask (first principal component, AnomalyDINO) keeps background
patches out of the bank and out of the scores.
"""

from __future__ import annotations

import math
import zlib
from typing import Sequence

import numpy as np
import torch

from shiftad.backbones import is_vision_transformer
from shiftad.components.coreset import greedy_coreset_indices
from shiftad.components.foreground import foreground_mask
from shiftad.data.records import ImageRecord
from shiftad.detectors.memory_bank import PatchBankDetector
from shiftad.errors import ParamsError

DISTANCES = ("euclidean", "cosine")
IMAGE_SCORES = ("max", "top1pct")
CORESETS = ("none", "random", "greedy")
FOREGROUND = ("auto", "on", "off")


def patch_scores_from_neighbours(distances: np.ndarray) -> np.ndarray:
    """(M, k) neighbour distances -> (M,) patch scores: the mean over the k nearest."""
    return distances.mean(axis=1)


def image_scores_from_patches(patch_scores: np.ndarray, rule: str) -> np.ndarray:
    """(B, P) patch scores -> (B,): the max, or the mean of the top 1% (at least one patch)."""
    if rule == "max":
        return patch_scores.max(axis=1)
    top = max(1, math.ceil(0.01 * patch_scores.shape[1]))
    return np.sort(patch_scores, axis=1)[:, -top:].mean(axis=1)


def few_shot_draw(records: Sequence[ImageRecord], shots: int, seed: int) -> list[ImageRecord]:
    """`shots` records per category, a seeded draw (all of a category's records when it has
    no more than `shots`, or when shots = 0); records keep their order."""
    if shots == 0:
        return list(records)
    keep: list[int] = []
    for category in dict.fromkeys(r.category for r in records):
        indices = [i for i, r in enumerate(records) if r.category == category]
        if len(indices) > shots:
            rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
            indices = sorted(rng.choice(indices, size=shots, replace=False).tolist())
        keep += indices
    return [records[i] for i in sorted(keep)]


class FewShotKNN(PatchBankDetector):
    name = "knn"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
        resize: str = "squash",
        normalisation: str = "model",
        neighbourhood: int = 3,
        distance: str = "euclidean",
        k: int = 1,
        image_score: str = "max",
        coreset: str = "none",
        coreset_ratio: float = 1.0,
        shots: int = 8,
        foreground_mask: str = "auto",
        foreground_threshold: float = 10.0,
        map_sigma: float = 4.0,
        batch_size: int = 16,
        knn_batch: int = 8192,
        seed: int = 0,
    ) -> None:
        for value, allowed, what in ((distance, DISTANCES, "distance"), (image_score, IMAGE_SCORES, "image_score"),
                                     (coreset, CORESETS, "coreset"), (foreground_mask, FOREGROUND, "foreground_mask")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if shots < 0:
            raise ValueError(f"shots must be >= 0 (0 = every training image), got {shots}")
        if foreground_mask == "on" and not is_vision_transformer(backbone):
            raise ParamsError(f"knn.foreground_mask: 'on' needs ViT patch tokens (DINOv2); '{backbone}' is a CNN, use auto or off")
        self.backbone, self.weights, self.layers = backbone, weights, list(layers)
        self.image_size, self.resize, self.normalisation, self.neighbourhood = image_size, resize, normalisation, neighbourhood
        self.distance, self.k, self.image_score = distance, k, image_score
        self.coreset, self.coreset_ratio, self.shots = coreset, coreset_ratio, shots
        self.foreground_mask, self.foreground_threshold = foreground_mask, foreground_threshold
        self.map_sigma, self.batch_size, self.knn_batch, self.seed = map_sigma, batch_size, knn_batch, seed

    @classmethod
    def from_params(cls, params) -> "FewShotKNN":
        p = params.knn
        own_backbone = p.backbone != "default"  # otherwise the pipeline's backbone and its weights
        return cls(backbone=p.backbone if own_backbone else params.backbone.name,
                   weights=p.weights if own_backbone else params.backbone.weights,
                   layers=p.layers, image_size=params.image_size, resize=params.resize,
                   normalisation=params.backbone.normalisation, neighbourhood=p.neighbourhood, distance=p.distance,
                   k=p.k, image_score=p.image_score, coreset=p.coreset, coreset_ratio=p.coreset_ratio, shots=p.shots,
                   foreground_mask=p.foreground_mask, foreground_threshold=p.foreground_threshold, map_sigma=p.map_sigma,
                   batch_size=params.backbone.batch_size, knn_batch=p.knn_batch, seed=params.seed)

    def _backbone_param_key(self) -> str:
        return "knn"

    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "FewShotKNN":
        """The bank holds `shots` normal images per category (a seeded draw), or all of them."""
        return super().fit(few_shot_draw(records, self.shots, self.seed))

    @property
    def uses_foreground_mask(self) -> bool:
        return self.foreground_mask == "on" or (self.foreground_mask == "auto" and is_vision_transformer(self.backbone))

    def _prepare_rows(self, rows: np.ndarray) -> np.ndarray:
        if self.distance == "cosine":
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    def _foreground(self, rows: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
        if not self.uses_foreground_mask:
            return None
        return np.stack([foreground_mask(image_rows, grid, self.foreground_threshold) for image_rows in rows])

    @property
    def keeps_every_patch(self) -> bool:
        return self.coreset == "none" or self.coreset_ratio >= 1.0

    def _thin(self, patches: np.ndarray) -> np.ndarray:
        if self.keeps_every_patch:
            return patches
        if self.coreset == "random":
            n = max(1, math.ceil(self.coreset_ratio * len(patches)))
            keep = np.sort(np.random.default_rng(self.seed).choice(len(patches), size=n, replace=False))
            return patches[keep]
        keep = greedy_coreset_indices(torch.from_numpy(patches), self.coreset_ratio, seed=self.seed, progress=self.progress)
        return patches[keep.numpy()]

    @property
    def n_neighbours(self) -> int:
        return self.k

    def patch_distances(self, rows: np.ndarray) -> np.ndarray:
        """(M, C) prepared rows -> (M, k) distances to the k nearest bank rows in this detector's metric."""
        return self.metric(self.neighbours(rows)[0])

    def metric(self, euclidean: np.ndarray) -> np.ndarray:
        """Euclidean bank distances in this detector's metric (cosine: 1 − cos of unit vectors = ‖a − b‖² / 2)."""
        euclidean = euclidean.astype(np.float64)
        return euclidean**2 / 2.0 if self.distance == "cosine" else euclidean

    def _patch_scores(self, distances: np.ndarray) -> np.ndarray:
        return patch_scores_from_neighbours(self.metric(distances))

    def _image_scores(self, patch_scores: np.ndarray, nearest: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return image_scores_from_patches(patch_scores, self.image_score)
