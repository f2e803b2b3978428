"""PatchCore (Roth et al., CVPR 2022): a coreset memory bank of locally aware patch features.

fit: backbone mid-level features -> 3×3 neighbourhood aggregation -> upsample + concatenate ->
greedy k-center coreset. score: nearest memory-bank distance per patch; image score = max
patch score (or the paper's reweighting, eq. 7); map = patch scores upsampled to the image
size and Gaussian-smoothed (σ = 4).
"""

from __future__ import annotations

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
from shiftad.params import Params


class PatchCore(Detector):
    name = "patchcore"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
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
        self.neighbourhood = neighbourhood
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.image_score = image_score
        self.reweight_neighbours = reweight_neighbours
        self.map_sigma = map_sigma
        self.batch_size = batch_size
        self.knn_batch = knn_batch
        self.seed = seed
        self._extractor: FeatureExtractor | None = None

    @classmethod
    def from_params(cls, params: Params) -> "PatchCore":
        p = params.patchcore
        return cls(
            backbone=params.backbone.name,
            weights=params.backbone.weights,
            layers=p.layers,
            image_size=params.image_size,
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

    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.backbone, self.layers, self.weights)
        return self._extractor

    def embed(self, images: list[np.ndarray]) -> torch.Tensor:
        """Locally aware patch embeddings (B, C, h, w) for a batch of RGB uint8 images."""
        return aggregate_patches(self.extractor(to_tensor_batch(images, self.image_size)), self.neighbourhood)

    def _embed_all(self, records: Sequence[ImageRecord], desc: str) -> torch.Tensor:
        batches = iter_image_batches(records, self.batch_size)
        total = -(-len(records) // self.batch_size)
        return torch.cat([self.embed(b) for b in tqdm(batches, total=total, desc=desc, disable=not self.progress, leave=False)])

    def fit(self, records: Sequence[ImageRecord]) -> "PatchCore":
        if any(r.is_anomalous for r in records):
            raise ValueError("PatchCore.fit got anomalous images; training uses normal images only")
        if not records:
            raise ValueError("PatchCore.fit needs at least one training image")
        embeddings = self._embed_all(records, "features (train)")
        self.feature_grid_ = tuple(embeddings.shape[-2:])
        patches = to_patch_rows(embeddings)
        keep = greedy_coreset_indices(patches, self.coreset_ratio, self.projection_dim, self.seed, self.progress)
        self.memory_bank_ = patches[keep].contiguous().numpy()
        self.n_train_patches_ = int(patches.shape[0])
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)
        return self

    def _image_scores(self, patch_distances: np.ndarray, nearest: np.ndarray, patches: np.ndarray) -> np.ndarray:
        """(B, P) patch distances -> (B,) image scores."""
        best = patch_distances.argmax(axis=1)
        top = patch_distances[np.arange(len(best)), best]
        if self.image_score == "max":
            return top
        # Paper eq. 7: weight s* by how isolated its nearest bank item m* is among m*'s neighbours.
        scores = np.empty_like(top)
        for i, (patch_index, s_star) in enumerate(zip(best, top)):
            m_star = self.memory_bank_[nearest[i, patch_index]]
            _, neighbour_ids = self._index.query(m_star[None], self.reweight_neighbours)
            distances = np.linalg.norm(self.memory_bank_[neighbour_ids[0]] - patches[i, patch_index], axis=1)
            # softmax-style weight computed stably: exp(s*) / Σ exp(d) = 1 / Σ exp(d - s*)
            weight = 1.0 - 1.0 / np.exp(distances.astype(np.float64) - s_star).sum()
            scores[i] = weight * s_star
        return scores

    def score(self, records: Sequence[ImageRecord]) -> Scores:
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError("PatchCore.score called before fit/load")
        image_scores, maps = [], []
        total = -(-len(records) // self.batch_size)
        for images in tqdm(iter_image_batches(records, self.batch_size), total=total, desc="scoring", disable=not self.progress, leave=False):
            embedding = self.embed(images)
            b, _, h, w = embedding.shape
            patches = to_patch_rows(embedding).numpy()
            distances, nearest = self._index.query(patches, 1)
            patch_distances = distances[:, 0].reshape(b, h * w)
            nearest_ids = nearest[:, 0].reshape(b, h * w)
            image_scores.append(self._image_scores(patch_distances, nearest_ids, patches.reshape(b, h * w, -1)))
            maps.append(upsample_and_smooth(torch.from_numpy(patch_distances.reshape(b, h, w)), self.image_size, self.map_sigma))
        return Scores(np.concatenate(image_scores).astype(np.float64), np.concatenate(maps))

    def _save_state(self, folder: Path) -> dict[str, Any]:
        save_file({"memory_bank": torch.from_numpy(self.memory_bank_)}, str(folder / "memory_bank.safetensors"))
        return {"memory_bank_size": int(self.memory_bank_.shape[0]), "n_train_patches": self.n_train_patches_, "feature_grid": list(self.feature_grid_)}

    def _load_state(self, folder: Path) -> None:
        self.memory_bank_ = load_file(str(folder / "memory_bank.safetensors"))["memory_bank"].numpy()
        meta = read_json(folder / "meta.json")
        self.n_train_patches_ = meta["n_train_patches"]
        self.feature_grid_ = tuple(meta["feature_grid"])
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)
