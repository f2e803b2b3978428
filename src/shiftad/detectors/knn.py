"""Few-shot patch kNN (the memory-bank design of AnomalyDINO, Damm et al. 2025).

fit: patch features of K normal images (which K is the pipeline's choice) form the memory
bank, optionally thinned by a random or greedy coreset. score: per patch, the mean distance
to its k nearest bank patches (euclidean, or cosine on L2-normalised features); image score =
max patch score or the mean of the top 1%; map = patch scores upsampled to the image size and
Gaussian-smoothed (σ = 4). `add_normals` appends the patches of more normal images (the
few-shot adaptation under shift) without refitting anything else.

WIP (issue 8): DINOv2 backbones and their PCA foreground masking, the K-shot stage and the
few-shot adaptation scenario are not built yet.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from shiftad.backbones import FeatureExtractor, to_tensor_batch
from shiftad.components.aggregation import aggregate_patches, to_patch_rows
from shiftad.components.coreset import greedy_coreset_indices
from shiftad.components.knn import NearestNeighbours
from shiftad.components.maps import upsample_and_smooth
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, Scores, iter_image_batches
from shiftad.io import read_json

DISTANCES = ("euclidean", "cosine")
IMAGE_SCORES = ("max", "top1pct")
CORESETS = ("none", "random", "greedy")


def patch_scores_from_neighbours(distances: np.ndarray) -> np.ndarray:
    """(M, k) neighbour distances -> (M,) patch scores: the mean over the k nearest."""
    return distances.mean(axis=1)


def image_scores_from_patches(patch_scores: np.ndarray, rule: str) -> np.ndarray:
    """(B, P) patch scores -> (B,): the max, or the mean of the top 1% (at least one patch)."""
    if rule == "max":
        return patch_scores.max(axis=1)
    top = max(1, math.ceil(0.01 * patch_scores.shape[1]))
    return np.sort(patch_scores, axis=1)[:, -top:].mean(axis=1)


class FewShotKNN(Detector):
    name = "knn"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
        neighbourhood: int = 3,
        distance: str = "euclidean",
        k: int = 1,
        image_score: str = "max",
        coreset: str = "none",
        coreset_ratio: float = 1.0,
        map_sigma: float = 4.0,
        batch_size: int = 16,
        knn_batch: int = 8192,
        seed: int = 0,
    ) -> None:
        for value, allowed, what in ((distance, DISTANCES, "distance"), (image_score, IMAGE_SCORES, "image_score"), (coreset, CORESETS, "coreset")):
            if value not in allowed:
                raise ValueError(f"{what} must be one of {allowed}, got {value!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.backbone, self.weights, self.layers = backbone, weights, list(layers)
        self.image_size, self.neighbourhood = image_size, neighbourhood
        self.distance, self.k, self.image_score = distance, k, image_score
        self.coreset, self.coreset_ratio = coreset, coreset_ratio
        self.map_sigma, self.batch_size, self.knn_batch, self.seed = map_sigma, batch_size, knn_batch, seed
        self._extractor: FeatureExtractor | None = None

    @classmethod
    def from_params(cls, params) -> "FewShotKNN":
        p = params.knn
        return cls(backbone=params.backbone.name, weights=params.backbone.weights, layers=p.layers, image_size=params.image_size,
                   neighbourhood=p.neighbourhood, distance=p.distance, k=p.k, image_score=p.image_score, coreset=p.coreset,
                   coreset_ratio=p.coreset_ratio, map_sigma=p.map_sigma, batch_size=params.backbone.batch_size,
                   knn_batch=p.knn_batch, seed=params.seed)

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.backbone, self.layers, self.weights)
        return self._extractor

    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        return aggregate_patches(self.extractor(to_tensor_batch(images, self.image_size)), self.neighbourhood)

    def _rows(self, embedding: torch.Tensor) -> np.ndarray:
        """Patch rows as the bank stores them (unit length for the cosine distance)."""
        rows = to_patch_rows(embedding).numpy().astype(np.float32)
        if self.distance == "cosine":
            rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        return rows

    def _patches(self, records: Sequence[ImageRecord], desc: str) -> np.ndarray:
        if any(r.is_anomalous for r in records):
            raise ValueError(f"{type(self).__name__}: the memory bank takes normal images only")
        total = -(-len(records) // self.batch_size)
        batches = tqdm(iter_image_batches(records, self.batch_size), total=total, desc=desc, disable=not self.progress, leave=False)
        rows = []
        for images in batches:
            embedding = self.embed(images)
            self.feature_grid_ = tuple(embedding.shape[-2:])
            rows.append(self._rows(embedding))
        return np.concatenate(rows)

    def _thin(self, patches: np.ndarray) -> np.ndarray:
        if self.coreset == "none" or self.coreset_ratio >= 1.0:
            return patches
        if self.coreset == "random":
            n = max(1, math.ceil(self.coreset_ratio * len(patches)))
            keep = np.sort(np.random.default_rng(self.seed).choice(len(patches), size=n, replace=False))
            return patches[keep]
        keep = greedy_coreset_indices(torch.from_numpy(patches), self.coreset_ratio, seed=self.seed, progress=self.progress)
        return patches[keep.numpy()]

    def fit(self, records: Sequence[ImageRecord]) -> "FewShotKNN":
        if not records:
            raise ValueError("FewShotKNN.fit needs at least one normal image")
        patches = self._patches(records, "features (bank)")
        self.n_fit_images_ = len(records)
        self.memory_bank_ = np.ascontiguousarray(self._thin(patches))
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)
        return self

    def add_normals(self, records: Sequence[ImageRecord]) -> int:
        """Append every patch of `records` (normal images) to the bank; returns how many were added."""
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError("FewShotKNN.add_normals called before fit/load")
        if not records:
            return 0
        added = self._patches(records, "features (added normals)")
        self.memory_bank_ = np.ascontiguousarray(np.concatenate([self.memory_bank_, added]))
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)
        return int(len(added))

    def patch_distances(self, rows: np.ndarray) -> np.ndarray:
        """(M, k) distances of query rows to their k nearest bank patches, in this detector's metric."""
        euclidean, _ = self._index.query(rows, self.k)
        if self.distance == "cosine":  # unit vectors: 1 - cos = ‖a − b‖² / 2
            return (euclidean.astype(np.float64) ** 2) / 2.0
        return euclidean.astype(np.float64)

    def score(self, records: Sequence[ImageRecord]) -> Scores:
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError("FewShotKNN.score called before fit/load")
        image_scores, maps = [], []
        total = -(-len(records) // self.batch_size)
        for images in tqdm(iter_image_batches(records, self.batch_size), total=total, desc="scoring", disable=not self.progress, leave=False):
            embedding = self.embed(images)
            b, _, h, w = embedding.shape
            patch = patch_scores_from_neighbours(self.patch_distances(self._rows(embedding))).reshape(b, h * w)
            image_scores.append(image_scores_from_patches(patch, self.image_score))
            maps.append(upsample_and_smooth(torch.from_numpy(patch.reshape(b, h, w)), self.image_size, self.map_sigma))
        return Scores(np.concatenate(image_scores).astype(np.float64), np.concatenate(maps))

    def _save_state(self, folder: Path) -> dict[str, Any]:
        save_file({"memory_bank": torch.from_numpy(self.memory_bank_)}, str(folder / "memory_bank.safetensors"))
        return {"memory_bank_size": int(self.memory_bank_.shape[0]), "n_fit_images": self.n_fit_images_, "feature_grid": list(self.feature_grid_)}

    def _load_state(self, folder: Path) -> None:
        self.memory_bank_ = load_file(str(folder / "memory_bank.safetensors"))["memory_bank"].numpy()
        meta = read_json(folder / "meta.json")
        self.n_fit_images_, self.feature_grid_ = meta["n_fit_images"], tuple(meta["feature_grid"])
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)
