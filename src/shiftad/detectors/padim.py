"""PaDiM (Defard et al., ICPR 2021) through anomalib's `PadimModel` (anomalib 2.7).

fit: backbone mid-level features of the chosen layers, upsampled (nearest) to the first
layer's grid and concatenated, a random subset of `n_features` channels kept -> one
multivariate Gaussian per patch position (mean, inverse covariance with 0.01·I
regularisation). score: Mahalanobis distance of each patch to its position's Gaussian;
map = distances upsampled bilinearly to the input size and Gaussian-smoothed (σ = map_sigma);
image score = max of the map.

What is anomalib's and what is ours:
- anomalib's torch model draws the channel subset (its `idx`) and does the Gaussian fit
  (`PadimModel.fit()`, which is all `Padim.fit()` calls after the training epoch). Scoring
  runs its `generate_embedding` and `compute_distance` as `padim_embedding` and
  `mahalanobis_grid` (the same expressions, bit-identical, tested) on the learned tensors, so a
  loaded model scores without importing anomalib (~4 s) or building its model (~1 s each):
  half of every PaDiM scoring and export job. Its timm extractor is built with `pre_trained=False`
  and filled with shiftad's offline ImageNet weights (`create_backbone`), every tensor checked,
  so the anomalib model is whole; the features themselves come from shiftad's
  `FeatureExtractor` (the same layers of the same network to ~1e-6, channels-last: half the
  time), which PatchCore, the kNN and the routed autoencoders share, so the features stage
  runs the network once for all four.
- pre-processing is shiftad's (`to_tensor_batch` + the backbone's own timm mean/std), as for
  PatchCore, not anomalib's PreProcessor (ImageNet mean/std).
- anomalib's post-processing (score normalisation, which clamps to [0, 1]) and its threshold
  (tuned on the test set) are never used: scores and maps are raw Mahalanobis distances; the
  pipeline thresholds on validation images.
- maps: anomalib's map generator (bilinear upsampling, then its 2-D Gaussian blur, σ = 4 by
  default) computed with `shiftad.components.maps.upsample_and_smooth`, the smoother PatchCore
  uses: same upsampling, same ±4σ kernel, same reflect padding, but as two 1-D passes (a test
  holds it to anomalib's `AnomalyMapGenerator` within 1e-5); σ = map_sigma.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from shiftad.backbones import BackboneWeightsError, FeatureExtractor, create_backbone, shared_feature_extractor, to_tensor_batch
from shiftad.components.maps import to_map_frame, upsample_and_smooth
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import META_FILE, Detector, FeatureNetwork, Scores, iter_image_batches
from shiftad.errors import ParamsError
from shiftad.io import read_json
from shiftad.params import Params

if TYPE_CHECKING:
    from anomalib.models.image.padim.torch_model import PadimModel

STATE_FILE = "padim.safetensors"


def _anomalib_padim() -> tuple[type, type]:
    """anomalib's PadimModel and AnomalyMapGenerator, imported on first use.

    Importing anomalib takes seconds (it loads every model), so the detector registry does not
    pay for it; the FutureWarnings it raises concern other models (dinov2 layers) and are muted.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from anomalib.models.image.padim.anomaly_map import AnomalyMapGenerator
        from anomalib.models.image.padim.torch_model import PadimModel
    return PadimModel, AnomalyMapGenerator


def anomalib_map_sigma() -> float:
    """The σ of the blur in anomalib's PaDiM maps: `PadimModel` builds `AnomalyMapGenerator()` with its default."""
    _, generator = _anomalib_padim()
    return float(inspect.signature(generator).parameters["sigma"].default)


def feature_stages(backbone: str) -> dict[str, int]:
    """Layer name -> channels for the layers anomalib's timm extractor can return (features_only stages)."""
    if backbone.startswith("torchvision/"):
        raise ParamsError(f"backbone.name: PaDiM runs on anomalib's timm extractor; '{backbone}' is not a timm model")
    import timm

    try:
        model = timm.create_model(backbone, pretrained=False, features_only=True, exportable=True)
    except RuntimeError as exc:  # unknown name, or no features_only support
        raise ParamsError(f"backbone.name: '{backbone}' cannot serve as a timm feature extractor ({exc})") from None
    return dict(zip(model.feature_info.module_name(), model.feature_info.channels()))


def check_layers(backbone: str, layers: Sequence[str]) -> dict[str, int]:
    """Validate `layers` for anomalib's extractor; return each one's channel count.

    anomalib drops an unknown layer with only a log warning (and then fails later with a
    misleading message), and pairs the timm outputs, which come in network order, with the
    names in the order given: layers out of order would silently get each other's features.
    """
    stages = feature_stages(backbone)
    names = list(stages)
    if not layers:
        raise ParamsError("padim.layers: list at least one layer")
    if len(set(layers)) != len(layers):
        raise ParamsError(f"padim.layers: {list(layers)} names a layer twice")
    unknown = [layer for layer in layers if layer not in stages]
    if unknown:
        raise ParamsError(
            f"padim.layers: {unknown} not found in backbone '{backbone}'; anomalib's PaDiM extractor can use: {names}"
        )
    positions = [names.index(layer) for layer in layers]
    if positions != sorted(positions):
        in_order = sorted(layers, key=names.index)
        raise ParamsError(f"padim.layers: list the layers shallow to deep (network order), i.e. {in_order}, not {list(layers)}")
    return {layer: stages[layer] for layer in layers}


def load_backbone_weights(extractor: nn.Module, classifier: nn.Module, source: str) -> int:
    """Copy the classifier's tensors into anomalib's timm features_only model by name.

    features_only drops the head (conv_head, bn2, classifier); every tensor it keeps has the
    same name and shape in the classifier. Fail unless every one of them is filled.
    """
    source_state = classifier.state_dict()
    target_state = extractor.state_dict()
    unfilled = [k for k in target_state if k not in source_state or source_state[k].shape != target_state[k].shape]
    if unfilled:
        raise BackboneWeightsError(f"{source}: anomalib's extractor has tensors these weights lack: {unfilled[:10]}")
    extractor.load_state_dict({k: source_state[k] for k in target_state}, strict=True)
    return len(target_state)


def padim_embedding(features: Sequence[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
    """anomalib's `PadimModel.generate_embedding`, expression for expression (a test holds them
    bit-identical): the layers' features (shallow to deep), each deeper one upsampled (nearest) to
    the first one's grid, concatenated, then the channels `idx` kept -> (B, n_features, h, w)."""
    embeddings = features[0]
    for layer_embedding in features[1:]:
        layer_embedding = F.interpolate(layer_embedding, size=embeddings.shape[-2:], mode="nearest")
        embeddings = torch.cat((embeddings, layer_embedding), 1)
    return torch.index_select(embeddings, 1, idx.to(embeddings.device))


def mahalanobis_grid(embedding: torch.Tensor, mean: torch.Tensor, inv_covariance: torch.Tensor) -> torch.Tensor:
    """anomalib's `AnomalyMapGenerator.compute_distance`, expression for expression (bit-identical,
    tested): each position's Mahalanobis distance to its Gaussian, (B, C, h, w) -> (B, 1, h, w)."""
    batch, channel, height, width = embedding.shape
    embedding = embedding.reshape(batch, channel, height * width)
    delta = (embedding - mean).permute(2, 0, 1)
    distances = (torch.matmul(delta, inv_covariance) * delta).sum(2).permute(1, 0)
    return distances.reshape(batch, 1, height, width).clamp(0).sqrt()


class PaDiM(Detector):
    name = "padim"

    def __init__(
        self,
        backbone: str = "tf_efficientnet_lite0",
        weights: str = "auto",
        layers: Sequence[str] = ("blocks.2", "blocks.4"),
        image_size: int = 256,
        resize: str = "squash",
        normalisation: str = "model",
        n_features: int = 100,
        map_sigma: float = 4.0,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        if n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {n_features}")
        if map_sigma < 0:
            raise ValueError(f"map_sigma must be >= 0, got {map_sigma}")
        self.backbone = backbone
        self.weights = weights
        self.layers = list(layers)
        self.image_size = image_size
        self.resize = resize
        self.normalisation = normalisation
        self.n_features = n_features
        self.map_sigma = map_sigma
        self.batch_size = batch_size
        self.seed = seed
        self._model: PadimModel | None = None
        self._extractor: FeatureExtractor | None = None
        # the learned state, held as plain tensors: a loaded model scores without anomalib (whose
        # import, ~4 s, and model build, ~1 s each, were most of a PaDiM scoring or export job)
        self._idx: torch.Tensor | None = None
        self._mean: torch.Tensor | None = None
        self._inv_covariance: torch.Tensor | None = None
        self._n_features_original: int | None = None

    @classmethod
    def from_params(cls, params: Params) -> "PaDiM":
        p = params.padim
        return cls(
            backbone=params.backbone.name,
            weights=params.backbone.weights,
            layers=p.layers,
            image_size=params.image_size,
            resize=params.resize,
            normalisation=params.backbone.normalisation,
            n_features=p.n_features,
            map_sigma=p.map_sigma,
            batch_size=params.backbone.batch_size,
            seed=params.seed,
        )

    # ------------------------------------------------------------------ the anomalib model

    def _build_model(self) -> "PadimModel":
        """anomalib's PadimModel with the offline weights and a seeded channel subset (not yet fitted)."""
        # Building draws random numbers (timm's random init before the weights are copied in,
        # anomalib's channel subset): keep them out of the caller's RNG stream.
        with torch.random.fork_rng(devices=[]):
            return self._build_model_forked()

    def _build_model_forked(self) -> "PadimModel":
        padim_model_class, _ = _anomalib_padim()
        channels = check_layers(self.backbone, self.layers)
        total = sum(channels.values())
        if self.n_features > total:
            raise ParamsError(f"padim.n_features: {self.n_features} exceeds the {total} channels of layers {self.layers}")
        classifier, _, _ = create_backbone(self.backbone, self.weights)
        # anomalib draws `idx` (torch.randperm, global RNG) while constructing: seed it right there.
        torch.manual_seed(self.seed)
        model = padim_model_class(backbone=self.backbone, layers=list(self.layers), pre_trained=False, n_features=self.n_features)
        extractor = model.feature_extractor
        dropped = [layer for layer in self.layers if layer not in extractor.layers]
        if dropped:  # cannot happen after check_layers, unless anomalib changes how it maps names
            raise ParamsError(f"padim.layers: anomalib's extractor dropped {dropped} for backbone '{self.backbone}'")
        load_backbone_weights(extractor.feature_extractor, classifier, f"backbone '{self.backbone}' ({self.weights} weights)")
        self._check_features(model, channels)
        return model.eval()

    def _check_features(self, model: "PadimModel", expected: dict[str, int]) -> None:
        """Every requested layer must produce a feature map with that layer's channel count."""
        features = model.feature_extractor(torch.zeros(1, 3, 64, 64))
        for layer in self.layers:
            feature = features.get(layer)
            if feature is None or feature.ndim != 4 or feature.shape[1] != expected[layer]:
                got = None if feature is None else tuple(feature.shape)
                raise ParamsError(
                    f"padim.layers: '{layer}' produced no {expected[layer]}-channel feature map in anomalib's extractor (got {got})"
                )

    @property
    def model(self) -> "PadimModel":
        """The anomalib torch model (built on first use; after `fit` the fitted one, after `load`
        one holding the loaded state). Fitting needs it; scoring does not (see `score_images`)."""
        if self._model is None:
            self._model = self._build_model()
            if self._mean is not None:  # loaded: the file's channel subset and Gaussians
                self._model.idx = self._idx
                self._model.gaussian.mean = self._mean
                self._model.gaussian.inv_covariance = self._inv_covariance
        return self._model

    @property
    def extractor(self) -> FeatureExtractor:
        """The frozen layers' network: shiftad's timm extractor, the one PatchCore, the kNN and the
        routed autoencoders run (same backbone, weights, layers and input size -> the features
        stage computes them once for all; anomalib's own extractor gives the same numbers to
        ~1e-6 relative, at twice the time: it runs channels-first)."""
        if self._extractor is None:
            with torch.random.fork_rng(devices=[]):  # timm's random inits: not the caller's RNG stream
                check_layers(self.backbone, self.layers)
            self._extractor = shared_feature_extractor(self.backbone, tuple(self.layers), self.weights, normalisation=self.normalisation)
        return self._extractor

    def prepare_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Same pixels as PatchCore sees: resized to image_size (antialiased bilinear); the
        network normalises with the backbone's own timm mean/std."""
        return to_tensor_batch(images, self.image_size, self.resize)

    def feature_network(self) -> FeatureNetwork:
        return FeatureNetwork(self.extractor, self.image_size)

    def feature_spec(self) -> dict[str, Any]:
        return {"network": "timm_layers", "backbone": self.backbone, "weights": self.weights, "layers": list(self.layers),
                "image_size": self.image_size, "resize": self.resize, "normalisation": self.normalisation}

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """PaDiM embeddings (B, n_features, h, w) for a batch of RGB uint8 images."""
        return padim_embedding(self.features(self.prepare_batch(images)), self.channel_idx_)

    # ------------------------------------------------------------------ learned state

    @property
    def is_fitted(self) -> bool:
        return self._mean is not None

    @property
    def channel_idx_(self) -> torch.Tensor:
        """Indices of the kept channels among the concatenated layer features (before fitting:
        the seeded draw of a freshly built anomalib model)."""
        return self._idx if self._idx is not None else self.model.idx

    @property
    def gaussian_mean_(self) -> torch.Tensor:
        """(n_features, h·w) mean embedding per patch position."""
        return self._mean

    @property
    def inv_covariance_(self) -> torch.Tensor:
        """(h·w, n_features, n_features) inverse covariance per patch position."""
        return self._inv_covariance

    # ------------------------------------------------------------------ fit / score

    def _batches(self, records: Sequence[ImageRecord], desc: str) -> Iterable[list[np.ndarray]]:
        total = -(-len(records) // self.batch_size)
        return tqdm(iter_image_batches(records, self.batch_size), total=total, desc=desc, disable=not self.progress, leave=False)

    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "PaDiM":
        if any(r.is_anomalous for r in records):
            raise ValueError("PaDiM.fit got anomalous images; training uses normal images only")
        if len(records) < 2:
            raise ValueError(f"PaDiM.fit needs at least 2 training images (a covariance per patch position), got {len(records)}")
        # A fresh model per fit: the seeded channel subset and an empty embedding memory bank.
        self._idx = self._mean = self._inv_covariance = None
        model = self._model = self._build_model()
        model.train()  # anomalib's training mode, whose memory_bank the loop below fills (through our feature path)
        with torch.no_grad():
            for images in self._batches(records, "features (train)"):
                model.memory_bank.append(self.embed(images))  # what the model's training-mode forward stores
        self.feature_grid_ = tuple(model.memory_bank[0].shape[-2:])
        # What anomalib's lightning `Padim.fit()` runs after the training epoch:
        # stack the embeddings, fit the per-position Gaussians, clear the memory bank.
        model.fit()
        # torch.linalg.inv returns column-major matrices; store them row-major, as they come back
        # from safetensors, so a loaded model runs the same kernels and reproduces scores bit for bit.
        model.gaussian.inv_covariance = model.gaussian.inv_covariance.contiguous()
        model.gaussian.mean = model.gaussian.mean.contiguous()
        model.eval()
        self._idx, self._mean, self._inv_covariance = model.idx, model.gaussian.mean, model.gaussian.inv_covariance
        self._n_features_original = int(model.n_features_original)
        self.n_train_images_ = len(records)
        return self

    @torch.no_grad()
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        if not self.is_fitted:
            raise RuntimeError("PaDiM.score called before fit/load")
        if not len(images):
            return Scores(np.zeros(0), np.zeros((0, self.image_size, self.image_size), dtype=np.float32))
        return self.score_embedding(self.embed(images), [image.shape[:2] for image in images])

    @torch.no_grad()
    def score_embedding(self, embedding: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> Scores:
        """Scores and maps from embeddings (B, n_features, h, w) of images of `shapes` (height, width)."""
        # anomalib's eval forward from the embedding on (Mahalanobis grid -> bilinear upsampling ->
        # Gaussian blur, σ = map_sigma; anomalib's own is 4), the blur as `upsample_and_smooth`:
        # anomalib's 33x33 2-D convolution was a third of a scoring job.
        distances = mahalanobis_grid(embedding, self._mean, self._inv_covariance)  # (B, 1, h, w)
        maps = to_map_frame(upsample_and_smooth(distances[:, 0], self.image_size, self.map_sigma), list(shapes), self.resize)
        image_scores = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)  # anomalib's pred_score: the map's max
        return Scores(np.asarray(image_scores, dtype=np.float64), maps.astype(np.float32, copy=False))

    @torch.no_grad()
    def embedding_of(self, records: Sequence[ImageRecord], desc: str | None = None) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The embeddings (N, n_features, h, w) of `records` (the feature store's outputs where it
        holds them) and the images' (height, width), for adaptations that work on embeddings."""
        parts, shapes = [], []
        for images in self._batches(records, desc or "features"):
            parts.append(self.embed(images))
            shapes += [image.shape[:2] for image in images]
        if not parts:
            return torch.zeros(0, self.n_features, *getattr(self, "feature_grid_", (0, 0))), shapes
        return torch.cat(parts), shapes

    @torch.no_grad()
    def fit_embeddings(self, embedding: torch.Tensor) -> "PaDiM":
        """Refit the per-position Gaussians on embeddings (N, n_features, h, w) made with this
        model's channel subset (anomalib's MultiVariateGaussian, as `fit`); the subset is kept."""
        if self._idx is None:
            raise RuntimeError("PaDiM.fit_embeddings needs the channel subset of a fitted or loaded model")
        if len(embedding) < 2:
            raise ValueError(f"PaDiM.fit_embeddings needs at least 2 images, got {len(embedding)}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            from anomalib.models.components.stats import MultiVariateGaussian
        gaussian = MultiVariateGaussian()
        gaussian.fit(embedding)
        self._mean, self._inv_covariance = gaussian.mean.contiguous(), gaussian.inv_covariance.contiguous()
        self._model = None  # a built anomalib model would hold the old Gaussians
        self.n_train_images_ = len(embedding)
        return self

    # ------------------------------------------------------------------ save / load

    def _save_state(self, folder: Path) -> dict[str, Any]:
        if not self.is_fitted:
            raise RuntimeError("PaDiM.save called before fit/load")
        state = {
            "gaussian_mean": self.gaussian_mean_.contiguous(),
            "inv_covariance": self.inv_covariance_.contiguous(),
            "channel_idx": self.channel_idx_.contiguous(),
        }
        save_file(state, str(folder / STATE_FILE))
        return {
            "feature_grid": list(self.feature_grid_),
            "n_train_images": self.n_train_images_,
            "n_features_original": self._n_features_original,
        }

    def _load_state(self, folder: Path) -> None:
        state = load_file(str(folder / STATE_FILE))
        meta = read_json(folder / META_FILE)
        self.feature_grid_ = tuple(meta["feature_grid"])
        self.n_train_images_ = meta["n_train_images"]
        n_positions = self.feature_grid_[0] * self.feature_grid_[1]
        expected = {
            "channel_idx": (self.n_features,),
            "gaussian_mean": (self.n_features, n_positions),
            "inv_covariance": (n_positions, self.n_features, self.n_features),
        }
        for key, shape in expected.items():
            if tuple(state[key].shape) != shape:
                raise ValueError(f"{folder / STATE_FILE}: '{key}' has shape {tuple(state[key].shape)}, expected {shape}")
        # The saved channel subset wins over a re-seeded one (torch's RNG stream may change between versions).
        self._idx, self._mean, self._inv_covariance = state["channel_idx"], state["gaussian_mean"], state["inv_covariance"]
        self._n_features_original = int(meta["n_features_original"])
        self._model = None  # anomalib's model is built only if asked for (`model`): scoring needs none
