"""Classifier-routed feature autoencoders: a category router in front of one convolutional
autoencoder per category.

Features: two mid-level backbone stages, 3×3 average pooling, bilinear alignment to the finer
grid, channel concatenation (`aggregate_patches`, as PatchCore), then standardised per channel
with the category's train statistics so that no channel dominates the error.
Autoencoder: 1×1 convolutions only (the spatial size is kept), C → hidden → latent and back,
batch norm and ReLU between; trained with MSE on the category's normal train images (feature
positions shuffled across images are the samples), Adam, early stopping on the category's
validation normal images (never test images).
Score: error map E = mean over channels of (F − R)²; image score = mean of the `top_k` highest
positions of E; map = E upsampled to the image size and Gaussian-smoothed.
Threshold per category: μ + kσ of the validation normal image scores under oracle routing
(`thresholds.json` beside the model, k = `std_multiplier`). The pipeline's decisions (evaluate,
bundles) use the evaluate stage's threshold from the score files, by default the same rule.
The same validation normals pick the best epoch, so their scores run slightly low and so may
the threshold.
Router: a multinomial logistic regression (scikit-learn) on the standardised spatial mean of
the same features, trained on the train images of every category the model was fitted on.
With one category (the per-class regime) there is nothing to route: that is oracle routing.
`score_images(images, category=C)` skips the router (oracle routing with a known category).
"""

from __future__ import annotations

import copy
import logging
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from shiftad.backbones import FeatureExtractor, shared_feature_extractor, to_tensor_batch
from shiftad.components.aggregation import aggregate_patches
from shiftad.components.maps import to_map_frame, upsample_and_smooth
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, FeatureNetwork, Scores, iter_image_batches
from shiftad.io import read_json, write_json
from shiftad.params import Params

log = logging.getLogger(__name__)
THRESHOLDS_FILE = "thresholds.json"


def conv_autoencoder(channels: int, hidden: int, latent: int) -> nn.Sequential:
    """1×1 convolutions only: every position is encoded on its own and the grid size is kept."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(channels, hidden), *block(hidden, latent), *block(latent, hidden), nn.Conv2d(hidden, channels, 1))


def error_map(features: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """E = mean over channels of (F − R)²: (B, C, h, w) -> (B, h, w)."""
    return (features - reconstruction).pow(2).mean(dim=1)


def top_k_mean(error: torch.Tensor, k: int) -> torch.Tensor:
    """Image score: mean of the k highest positions of each (h, w) error map -> (B,)."""
    flat = error.reshape(error.shape[0], -1)
    return flat.topk(min(k, flat.shape[1]), dim=1).values.mean(dim=1)


def mean_std_threshold(scores: np.ndarray, multiplier: float) -> dict[str, float]:
    scores = np.asarray(scores, dtype=np.float64)
    mean, std = float(scores.mean()), float(scores.std())
    return {"value": mean + multiplier * std, "mean": mean, "std": std, "n_val_normals": int(scores.size)}


class CategoryRouter:
    """Multinomial logistic regression on standardised pooled features; argmax = the route."""

    def __init__(self, classes: Sequence[str], mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.classes = list(classes)
        self.mean, self.scale = mean.astype(np.float64), scale.astype(np.float64)
        self.coef, self.intercept = coef.astype(np.float64), intercept.astype(np.float64)

    @classmethod
    def train(cls, pooled: np.ndarray, categories: Sequence[str], c: float, seed: int) -> "CategoryRouter":
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        classes = sorted(set(categories))
        if len(classes) < 2:
            raise ValueError("a router needs at least two categories")
        scaler = StandardScaler().fit(pooled)
        head = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(pooled), list(categories))
        coef, intercept = head.coef_, head.intercept_
        if len(classes) == 2:  # one decision function: logits (0, z) give the same argmax and softmax
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        return cls(list(head.classes_), scaler.mean_, scaler.scale_, coef, intercept)

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        return ((np.asarray(pooled, dtype=np.float64) - self.mean) / self.scale) @ self.coef.T + self.intercept

    def predict(self, pooled: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.logits(pooled).argmax(axis=1)]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"router.{k}": torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in ("mean", "scale", "coef", "intercept")}

    @classmethod
    def from_tensors(cls, classes: Sequence[str], state: dict[str, torch.Tensor]) -> "CategoryRouter":
        return cls(classes, *(state[f"router.{k}"].numpy() for k in ("mean", "scale", "coef", "intercept")))


class RoutedAutoencoder(Detector):
    name = "routed_ae"
    can_route = True

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
        resize: str = "squash",
        normalisation: str = "model",
        neighbourhood: int = 3,
        hidden: int = 128,
        latent: int = 100,
        epochs: int = 6,
        patience: int = 2,
        learning_rate: float = 2e-3,
        train_batch: int = 512,
        top_k: int = 10,
        std_multiplier: float = 3.0,
        router_c: float = 1.0,
        map_sigma: float = 4.0,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        for key, value in (("hidden", hidden), ("latent", latent), ("epochs", epochs), ("top_k", top_k), ("patience", patience)):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if train_batch < 2:
            raise ValueError(f"train_batch must be >= 2 (batch norm), got {train_batch}")
        self.backbone = backbone
        self.weights = weights
        self.layers = list(layers)
        self.image_size = image_size
        self.resize = resize
        self.normalisation = normalisation
        self.neighbourhood = neighbourhood
        self.hidden = hidden
        self.latent = latent
        self.epochs = epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.train_batch = train_batch
        self.top_k = top_k
        self.std_multiplier = std_multiplier
        self.router_c = router_c
        self.map_sigma = map_sigma
        self.batch_size = batch_size
        self.seed = seed
        self._extractor: FeatureExtractor | None = None
        self.autoencoders_: dict[str, nn.Sequential] = {}
        self.router_: CategoryRouter | None = None

    @classmethod
    def from_params(cls, params: Params) -> "RoutedAutoencoder":
        p = params.routed_ae
        return cls(backbone=params.backbone.name, weights=params.backbone.weights, layers=p.layers, image_size=params.image_size,
                   resize=params.resize, normalisation=params.backbone.normalisation,
                   neighbourhood=p.neighbourhood, hidden=p.hidden, latent=p.latent, epochs=p.epochs, patience=p.patience,
                   learning_rate=p.learning_rate, train_batch=p.train_batch, top_k=p.top_k,
                   std_multiplier=p.std_multiplier, router_c=p.router_c, map_sigma=p.map_sigma,
                   batch_size=params.backbone.batch_size, seed=params.seed)

    # -- features -----------------------------------------------------------------------------
    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = shared_feature_extractor(self.backbone, tuple(self.layers), self.weights, normalisation=self.normalisation)
        return self._extractor

    def feature_network(self) -> FeatureNetwork:
        return FeatureNetwork(self.extractor, self.image_size)

    def feature_spec(self) -> dict[str, Any]:
        return {"network": "timm_layers", "backbone": self.backbone, "weights": self.weights, "layers": list(self.layers),
                "image_size": self.image_size, "resize": self.resize, "normalisation": self.normalisation}

    def prepare_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return to_tensor_batch(images, self.image_size, self.resize)

    def embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """(B, C, h, w): pooled, aligned, concatenated mid-level features (not standardised)."""
        return aggregate_patches(self.features(self.prepare_batch(images)), self.neighbourhood)

    def _embed_records(self, records: Sequence[ImageRecord], desc: str) -> torch.Tensor:
        total = -(-len(records) // self.batch_size)
        parts = [self.embed(images) for images in
                 tqdm(iter_image_batches(records, self.batch_size), total=total, desc=desc, disable=not self.progress, leave=False)]
        return torch.cat(parts)

    # -- fitting ------------------------------------------------------------------------------
    @property
    def categories_(self) -> list[str]:
        return sorted(self.autoencoders_)

    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "RoutedAutoencoder":
        if any(r.is_anomalous for r in [*records, *validation]):
            raise ValueError("routed_ae.fit takes normal train and validation images only, got anomalous ones")
        categories = sorted({r.category for r in records})
        if not categories:
            raise ValueError("routed_ae.fit needs at least one normal training image")
        features = self._embed_records(records, "features (train)")
        val_features = self._embed_records(validation, "features (val)") if validation else torch.zeros(0)
        train_names, val_names = np.array([r.category for r in records]), np.array([r.category for r in validation])
        self.autoencoders_, self.feature_stats_, self.thresholds_, self.training_ = {}, {}, {}, {}
        for category in categories:
            val_rows = np.flatnonzero(val_names == category)
            if len(val_rows) == 0:
                raise ValueError(f"routed_ae: category '{category}' has no validation normal images for early stopping and its "
                                 "threshold; give the split more normal images in val (split.ratios.val, split.mvtec.train_fraction)")
            self._fit_category(category, features[np.flatnonzero(train_names == category)], val_features[val_rows])
        self.feature_grid_ = tuple(features.shape[-2:])
        self.router_ = None
        if len(categories) > 1:
            self.router_ = CategoryRouter.train(features.mean(dim=(2, 3)).numpy(), train_names.tolist(), self.router_c, self.seed)
            train_accuracy = float(np.mean(np.array(self.router_.predict(features.mean(dim=(2, 3)).numpy())) == train_names))
            self.router_train_accuracy_ = train_accuracy
        self.n_fit_images_ = len(records)
        return self

    def _fit_category(self, category: str, train: torch.Tensor, val: torch.Tensor) -> None:
        mean = train.mean(dim=(0, 2, 3), keepdim=True)
        std = train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        train_std, val_std = (train - mean) / std, (val - mean) / std
        # one seed per category: its autoencoder is the same whether fitted alone or with the others
        seed = self.seed * 1_000_003 + zlib.crc32(category.encode())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = conv_autoencoder(train.shape[1], self.hidden, self.latent)
            order = torch.Generator().manual_seed(seed)
            optimiser = torch.optim.Adam(model.parameters(), lr=self.learning_rate)
            best, best_loss, best_epoch, history = copy.deepcopy(model.state_dict()), float("inf"), 0, []
            # 1×1 convolutions see every position on its own, so positions are the samples: shuffled
            # across images, `train_batch` per step (many more steps per epoch than batches of whole maps)
            positions = train_std.permute(0, 2, 3, 1).reshape(-1, train_std.shape[1], 1, 1)
            for epoch in range(1, self.epochs + 1):
                model.train()
                for batch in torch.randperm(len(positions), generator=order).split(self.train_batch):
                    if len(batch) < 2:
                        continue  # batch norm needs more than one sample
                    optimiser.zero_grad()
                    loss = nn.functional.mse_loss(model(positions[batch]), positions[batch])
                    loss.backward()
                    optimiser.step()
                model.eval()
                with torch.no_grad():
                    val_loss = float(error_map(val_std, model(val_std)).mean())
                history.append(round(val_loss, 6))
                if val_loss < best_loss:
                    best, best_loss, best_epoch = copy.deepcopy(model.state_dict()), val_loss, epoch
                elif epoch - best_epoch >= self.patience:
                    break
            model.load_state_dict(best)
        model.eval().requires_grad_(False)
        self.autoencoders_[category] = model
        self.feature_stats_[category] = (mean, std)
        val_scores = self._score_features(category, val)[0].numpy()
        self.thresholds_[category] = mean_std_threshold(val_scores, self.std_multiplier)
        self.training_[category] = {"epochs_run": len(history), "best_epoch": best_epoch, "best_val_loss": round(best_loss, 6),
                                    "val_loss": history, "n_train": int(len(train)), "n_val": int(len(val))}
        log.info("routed_ae %s: best val loss %.4f at epoch %d of %d", category, best_loss, best_epoch, len(history))

    # -- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_features(self, category: str, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, h, w) raw features -> image scores (B,) and error maps (B, h, w) of `category`'s autoencoder."""
        mean, std = self.feature_stats_[category]
        standardised = (features - mean) / std
        error = error_map(standardised, self.autoencoders_[category](standardised))
        return top_k_mean(error, self.top_k), error

    def route(self, features: torch.Tensor) -> list[str]:
        """The category each image is sent to (the only one, without a router)."""
        if self.router_ is None:
            return [self.categories_[0]] * len(features)
        return self.router_.predict(features.mean(dim=(2, 3)).numpy())

    @torch.no_grad()
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        """Scores of the routed category's autoencoder; `category` (known) skips the router."""
        if not self.autoencoders_:
            raise RuntimeError("routed_ae.score called before fit/load")
        if category is not None and category not in self.autoencoders_:
            raise ValueError(f"unknown category '{category}'; this model knows {self.categories_}")
        if not len(images):
            return Scores(np.zeros(0), np.zeros((0, self.image_size, self.image_size), dtype=np.float32), np.zeros(0, dtype=str))
        features = self.embed(images)
        routes = [category] * len(images) if category is not None else self.route(features)
        scores = torch.zeros(len(images), dtype=torch.float64)
        errors = torch.zeros(len(images), *features.shape[-2:])
        for name in sorted(set(routes)):
            rows = torch.tensor([i for i, r in enumerate(routes) if r == name])
            image_scores, error = self._score_features(name, features[rows])
            scores[rows], errors[rows] = image_scores.double(), error
        maps = to_map_frame(upsample_and_smooth(errors, self.image_size, self.map_sigma), [image.shape[:2] for image in images], self.resize)
        return Scores(scores.numpy(), maps, np.array(routes))

    # -- persistence --------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> dict[str, Any]:
        state: dict[str, torch.Tensor] = {}
        for category, model in self.autoencoders_.items():
            mean, std = self.feature_stats_[category]
            # "/" cannot occur in a category name: no prefix of one category matches another's keys
            state |= {f"{category}/ae/{k}": v.contiguous() for k, v in model.state_dict().items()}
            state |= {f"{category}/feature_mean": mean.contiguous(), f"{category}/feature_std": std.contiguous()}
        if self.router_ is not None:
            state |= self.router_.tensors()
        save_file(state, str(folder / "routed_ae.safetensors"))
        write_json(folder / THRESHOLDS_FILE, {"rule": "mean_std", "std_multiplier": self.std_multiplier,
                                              "source": "validation normal images, scored by their own category's autoencoder",
                                              "categories": self.thresholds_})
        facts: dict[str, Any] = {"categories": self.categories_, "channels": int(next(iter(self.feature_stats_.values()))[0].shape[1]),
                                 "feature_grid": list(self.feature_grid_), "n_fit_images": self.n_fit_images_, "training": self.training_,
                                 "router": None}
        if self.router_ is not None:
            facts["router"] = {"classes": self.router_.classes, "train_accuracy": round(self.router_train_accuracy_, 6)}
        return facts

    def _load_state(self, folder: Path) -> None:
        meta = read_json(folder / "meta.json")
        state = load_file(str(folder / "routed_ae.safetensors"))
        channels = int(meta["channels"])
        self.autoencoders_, self.feature_stats_ = {}, {}
        for category in meta["categories"]:
            model = conv_autoencoder(channels, self.hidden, self.latent)
            prefix = f"{category}/ae/"
            model.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
            self.autoencoders_[category] = model.eval().requires_grad_(False)
            self.feature_stats_[category] = (state[f"{category}/feature_mean"], state[f"{category}/feature_std"])
        self.thresholds_ = read_json(folder / THRESHOLDS_FILE)["categories"]
        self.training_, self.n_fit_images_ = meta["training"], meta["n_fit_images"]
        self.feature_grid_ = tuple(meta["feature_grid"])
        self.router_ = None
        if meta["router"] is not None:
            self.router_ = CategoryRouter.from_tensors(meta["router"]["classes"], state)
            self.router_train_accuracy_ = meta["router"]["train_accuracy"]
