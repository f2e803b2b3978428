"""What PatchCore and the few-shot kNN share: a memory bank of normal patch features.

Both embed an image into a grid of patch rows (locally aware CNN features, or ViT patch
tokens), keep a bank of normal rows, and score a test patch by its distance to the bank. The
methods differ in how the bank is thinned (greedy coreset / none or random) and how patch
distances become patch and image scores; everything else lives here once.

Work is split into an image step (`patch_rows`: backbone features of some images, computed
once) and array steps (`fit_rows`, `add_rows`, `score_rows`), so the K-shot and few-shot
stages extract features once and refit or extend the bank many times without the backbone.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from shiftad.backbones import FeatureExtractor, PatchTokenExtractor, is_vision_transformer, shared_feature_extractor, to_tensor_batch
from shiftad.components.aggregation import aggregate_patches, to_patch_rows
from shiftad.components.knn import NearestNeighbours
from shiftad.components.maps import to_map_frame, upsample_and_smooth
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, FeatureNetwork, Scores, iter_image_batches
from shiftad.io import read_json


@dataclass(frozen=True)
class PatchRows:
    """Patch features of n images on an h×w grid, as the bank stores them."""

    rows: np.ndarray  # (n, h·w, C) float32
    grid: tuple[int, int]
    foreground: np.ndarray | None = None  # (n, h·w) bool; None: every patch counts
    categories: np.ndarray | None = None  # (n,) category of each image
    shapes: np.ndarray | None = None  # (n, 2) each image's height and width (maps under resize: pad need them)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, indices: Sequence[int] | np.ndarray) -> "PatchRows":
        indices = np.asarray(indices, dtype=np.int64)
        return PatchRows(self.rows[indices], self.grid, None if self.foreground is None else self.foreground[indices],
                         None if self.categories is None else self.categories[indices], None if self.shapes is None else self.shapes[indices])

    def by_category(self) -> list["PatchRows"]:
        """One part per category, in order of first appearance (the whole set when unlabelled)."""
        if self.categories is None:
            return [self]
        names = list(dict.fromkeys(self.categories.tolist()))
        return [self.take(np.flatnonzero(self.categories == name)) for name in names]

    def bank_rows(self) -> np.ndarray:
        """(M, C): every foreground patch of every image."""
        flat = self.rows.reshape(-1, self.rows.shape[-1])
        return flat if self.foreground is None else flat[self.foreground.reshape(-1)]

    @staticmethod
    def concat(parts: Sequence["PatchRows"]) -> "PatchRows":
        def joined(arrays: list[np.ndarray | None]) -> np.ndarray | None:
            return None if any(a is None for a in arrays) else np.concatenate(arrays)

        return PatchRows(np.concatenate([p.rows for p in parts]), parts[0].grid, joined([p.foreground for p in parts]),
                         joined([p.categories for p in parts]), joined([p.shapes for p in parts]))


class PatchBankDetector(Detector):
    """Base of memory-bank detectors. Subclasses set the shared hyperparameters in their
    constructor (backbone, weights, layers, image_size, neighbourhood, map_sigma, batch_size,
    knn_batch, seed), thin the bank in `fit_rows` and turn distances into scores."""

    can_add_normals = True  # few-shot adaptation: extend a fitted bank with new normal patches
    _extractor: FeatureExtractor | PatchTokenExtractor | None = None

    @property
    def extractor(self) -> FeatureExtractor | PatchTokenExtractor:
        if self._extractor is None:
            if is_vision_transformer(self.backbone):
                self._extractor = PatchTokenExtractor(self.backbone, self.weights, self.name, self.normalisation)
            else:
                self._extractor = shared_feature_extractor(self.backbone, tuple(self.layers), self.weights, self._backbone_param_key(),
                                                           self.normalisation)
        return self._extractor

    def _backbone_param_key(self) -> str:
        return "backbone"

    def feature_network(self) -> FeatureNetwork:
        extractor = self.extractor
        size = extractor.input_size(self.image_size) if isinstance(extractor, PatchTokenExtractor) else self.image_size
        return FeatureNetwork(extractor, size)

    def feature_spec(self) -> dict[str, Any]:
        vit = is_vision_transformer(self.backbone)
        return {"network": "vit_patch_tokens" if vit else "timm_layers", "backbone": self.backbone, "weights": self.weights,
                "layers": [] if vit else list(self.layers), "image_size": self.image_size, "resize": self.resize,
                "normalisation": self.normalisation}

    def prepare_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        # a CNN takes image_size itself (no need to build the network for it); a ViT a multiple of its patch
        size = self.feature_network().input_size if is_vision_transformer(self.backbone) else self.image_size
        return to_tensor_batch(images, size, self.resize)

    def embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Patch features (B, C, h, w) of RGB uint8 images: ViT patch tokens, or locally aware
        CNN features (neighbourhood-averaged mid-level layers at the finer layer's grid)."""
        batch = self.prepare_batch(images)
        if is_vision_transformer(self.backbone):  # by name: the network is built only when the features stage has not run it
            return self.features(batch)[0]
        return aggregate_patches(self.features(batch), self.neighbourhood)

    def _prepare_rows(self, rows: np.ndarray) -> np.ndarray:
        """Hook: rows as the bank stores them (the kNN's cosine distance normalises them)."""
        return rows

    def _foreground(self, rows: np.ndarray, grid: tuple[int, int]) -> np.ndarray | None:
        """Hook: (n, P) foreground masks, or None when every patch counts."""
        return None

    def patch_rows(self, records: Sequence[ImageRecord], desc: str | None = "features") -> PatchRows:
        """Backbone features of `records` (the only step that runs the network); no bar when desc is None."""
        parts = []
        total = -(-len(records) // self.batch_size)
        batches = iter_image_batches(records, self.batch_size)
        for i, images in enumerate(tqdm(batches, total=total, desc=desc, disable=not self.progress or desc is None, leave=False)):
            names = [r.category for r in records[i * self.batch_size : i * self.batch_size + len(images)]]
            parts.append(self.image_rows(images, names))
        return PatchRows.concat(parts)

    def image_rows(self, images: Sequence[np.ndarray], categories: Sequence[str]) -> PatchRows:
        """Patch rows of one batch of images held in memory."""
        embedding = self.embed(images)
        b, c, h, w = embedding.shape
        rows = self._prepare_rows(to_patch_rows(embedding).numpy().astype(np.float32)).reshape(b, h * w, c)
        shapes = np.array([image.shape[:2] for image in images], dtype=np.int64).reshape(-1, 2)
        return PatchRows(rows, (h, w), self._foreground(rows, (h, w)), np.array(list(categories)), shapes)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "PatchBankDetector":
        _check_normal(type(self).__name__, records)
        return self.fit_rows(self.patch_rows(records, "features (train)"))

    def fit_rows(self, rows: PatchRows) -> "PatchBankDetector":
        """Build the bank from precomputed rows. Pooled categories (the global model) are
        thinned category by category: the greedy coreset costs O(ratio · N²), so selecting
        within each of c categories is c times cheaper, and the bank keeps every category's share."""
        if len(rows) == 0:
            raise ValueError(f"{type(self).__name__}.fit needs at least one normal image")
        self.feature_grid_ = tuple(rows.grid)
        self.n_fit_images_ = len(rows)
        self.n_train_patches_ = int(rows.bank_rows().shape[0])
        self._set_bank(np.concatenate([self._thin(part.bank_rows()) for part in rows.by_category()]))
        return self

    @property
    def keeps_every_patch(self) -> bool:
        """True when the bank is every normal patch (no coreset): then any subset of images'
        bank is the union of their patches, and per-image searches can be merged."""
        return False

    @abstractmethod
    def _thin(self, patches: np.ndarray) -> np.ndarray:
        """(M, C) normal patches -> the rows kept in the bank (a coreset, or all)."""

    def _set_bank(self, bank: np.ndarray) -> None:
        self.memory_bank_ = np.ascontiguousarray(bank, dtype=np.float32)
        self._index = NearestNeighbours(self.memory_bank_, self.knn_batch)

    def add_normals(self, records: Sequence[ImageRecord]) -> int:
        """Append every patch of more normal images to the bank (no refit); returns how many."""
        _check_normal(type(self).__name__, records)
        return self.add_rows(self.patch_rows(records, "features (added normals)")) if records else 0

    def add_rows(self, rows: PatchRows) -> int:
        self._require_fitted("add_rows")
        added = rows.bank_rows()
        self._set_bank(np.concatenate([self.memory_bank_, added]))
        return int(added.shape[0])

    # -- scoring ------------------------------------------------------------------------------
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        self._require_fitted("score")
        if not len(images):
            return Scores(np.zeros(0), np.zeros((0, self.image_size, self.image_size), dtype=np.float32))
        return self.score_rows(self.image_rows(images, [""] * len(images)))

    n_neighbours = 1  # bank neighbours per query patch (the kNN's k)

    def neighbours(self, flat_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(M, C) query rows -> euclidean distances and bank indices of their n_neighbours nearest, (M, n)."""
        return self._index.query(flat_rows, self.n_neighbours)

    def score_rows(self, rows: PatchRows, maps: bool = True) -> Scores:
        """Image scores and maps from precomputed patch rows (maps=False: image scores only,
        with empty maps)."""
        self._require_fitted("score_rows")
        distances, indices = self.neighbours(rows.rows.reshape(-1, rows.rows.shape[-1]))
        return self.scores_from_neighbours(rows, distances, indices, maps)

    def scores_from_neighbours(self, rows: PatchRows, distances: np.ndarray, indices: np.ndarray, maps: bool = True) -> Scores:
        """Scores from each patch's bank neighbours ((n·P, n_neighbours) euclidean distances and
        indices), however they were found: one search, or merged searches of bank parts."""
        n, p, _ = rows.rows.shape
        patch = self._patch_scores(distances).reshape(n, p)
        if rows.foreground is not None:  # background patches are not inspected
            patch = np.where(rows.foreground, patch, 0.0)
        image_scores = self._image_scores(patch, indices[:, 0].reshape(n, p), rows.rows) if n else np.zeros(0)
        if maps and n:
            heat = to_map_frame(upsample_and_smooth(torch.from_numpy(patch.reshape(n, *rows.grid)), self.image_size, self.map_sigma),
                                None if rows.shapes is None else rows.shapes.tolist(), self.resize)
        else:
            heat = np.zeros((n, 0, 0), dtype=np.float32)
        return Scores(np.asarray(image_scores, dtype=np.float64), heat)

    @abstractmethod
    def _patch_scores(self, distances: np.ndarray) -> np.ndarray:
        """(M, n_neighbours) euclidean distances to the nearest bank rows -> (M,) patch scores."""

    @abstractmethod
    def _image_scores(self, patch_scores: np.ndarray, nearest: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, P) patch scores (+ index of each patch's nearest bank row, query rows (B, P, C)) -> (B,) image scores."""

    def _require_fitted(self, what: str) -> None:
        if not hasattr(self, "memory_bank_"):
            raise RuntimeError(f"{type(self).__name__}.{what} called before fit/load")

    # -- persistence --------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> dict[str, Any]:
        save_file({"memory_bank": torch.from_numpy(self.memory_bank_)}, str(folder / "memory_bank.safetensors"))
        return {"memory_bank_size": int(self.memory_bank_.shape[0]), "n_train_patches": self.n_train_patches_,
                "n_fit_images": self.n_fit_images_, "feature_grid": list(self.feature_grid_)}

    def _load_state(self, folder: Path) -> None:
        meta = read_json(folder / "meta.json")
        self.n_train_patches_, self.n_fit_images_ = meta["n_train_patches"], meta["n_fit_images"]
        self.feature_grid_ = tuple(meta["feature_grid"])
        self._set_bank(load_file(str(folder / "memory_bank.safetensors"))["memory_bank"].numpy())


def _check_normal(detector: str, records: Sequence[ImageRecord]) -> None:
    if any(r.is_anomalous for r in records):
        raise ValueError(f"{detector}: the memory bank takes normal images only, got anomalous ones")
