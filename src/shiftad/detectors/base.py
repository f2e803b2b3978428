"""The one detector interface, scikit-learn style.

Hyperparameters come in through the constructor (and are what `get_params` returns and
`meta.json` stores); learned state ends with an underscore. `fit` learns from normal training
images, `score_images` returns image scores and full-resolution anomaly maps of images held
in memory, plus any named auxiliary maps (`Scores.extra_maps`, e.g. an uncertainty map)
(`score` reads records from disk in batches and calls it), `save`/`load` use
safetensors / npz / JSON only (no pickle).

A detector built on a frozen network names it in `feature_network()` (the module from its
prepared input batch to feature maps): the bundle exports it to ONNX, and
`use_feature_runner` swaps in another runtime (ONNX Runtime) without touching the detector.
"""

from __future__ import annotations

import inspect
import itertools
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shiftad import __version__
from shiftad.backbones import resolve_device
from shiftad.components.feature_store import FeatureStore, NetworkClock, serves
from shiftad.data.images import read_image
from shiftad.data.records import ImageRecord
from shiftad.io import read_json, write_json
from shiftad.params import Params
from shiftad.paths import EXTRA_MAP_PREFIX

META_FILE = "meta.json"


EXTRA_MAP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")  # becomes part of npz keys and file names


@dataclass(frozen=True)
class Scores:
    image_scores: np.ndarray  # (N,) higher = more anomalous
    maps: np.ndarray  # (N, H, W) float32 at the model's input size
    categories: np.ndarray | None = None  # (N,) str: the category each image was routed to (routed detectors only)
    # Named auxiliary per-pixel maps (e.g. "uncertainty"), each (N, H, W) like `maps`: saved as
    # `extra_map_<name>` in the score files and drawn beside the heatmap in the report.
    extra_maps: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image_scores.shape[0] != self.maps.shape[0]:
            raise ValueError("image_scores and maps disagree on the number of images")
        if self.categories is not None and self.categories.shape[0] != self.image_scores.shape[0]:
            raise ValueError("categories and image_scores disagree on the number of images")
        for name, extra in self.extra_maps.items():
            if not isinstance(name, str) or not EXTRA_MAP_NAME.match(name):
                raise ValueError(f"extra map name {name!r}: use lower-case letters, digits and '_', starting with a letter")
            if np.shape(extra) != self.maps.shape:
                raise ValueError(f"extra map '{name}' has shape {np.shape(extra)}, maps have {self.maps.shape}; they must match")

    @staticmethod
    def concat(parts: Sequence["Scores"]) -> "Scores":
        routed = [p.categories for p in parts]
        categories = None if any(r is None for r in routed) else np.concatenate(routed)
        names = {frozenset(p.extra_maps) for p in parts}
        if len(names) > 1:
            raise ValueError(f"cannot concatenate scores with different extra maps: {sorted(sorted(n) for n in names)}")
        extra = {name: np.concatenate([p.extra_maps[name] for p in parts]) for name in (parts[0].extra_maps if parts else {})}
        return Scores(np.concatenate([p.image_scores for p in parts]).astype(np.float64), np.concatenate([p.maps for p in parts]), categories, extra)

    def extra_map_arrays(self) -> dict[str, np.ndarray]:
        """The extra maps as score-file entries: `extra_map_<name>` -> float32 (N, H, W)."""
        return {f"{EXTRA_MAP_PREFIX}{name}": extra.astype(np.float32) for name, extra in self.extra_maps.items()}


@dataclass(frozen=True)
class FeatureNetwork:
    """A detector's frozen network: `module` maps the prepared batch (B, 3, size, size) float32
    to a tuple of feature maps."""

    module: nn.Module
    input_size: int

FeatureRunner = Callable[[torch.Tensor], Sequence[torch.Tensor]]


T = TypeVar("T")


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter); Python 3.11 has no itertools.batched."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_image_batches(records: Sequence[ImageRecord], batch_size: int) -> Iterator[list[np.ndarray]]:
    return batched((read_image(r.path) for r in records), batch_size)


class Detector(ABC):
    name: ClassVar[str]
    progress: bool = False  # progress bars on long steps; the CLI turns them on
    can_route: ClassVar[bool] = False  # fitted on several categories, it picks each image's category itself
    batch_size: int = 8  # images per forward pass (detectors take it as a hyperparameter)
    _feature_runner: FeatureRunner | None = None
    # Where `features()` runs the frozen network: a runtime choice, not a learned parameter (a
    # model fitted on a GPU scores on a CPU); the stages set it from backbone.device.
    feature_device: str = "cpu"
    feature_mixed_precision: bool = False
    _feature_store: "FeatureStore | None" = None

    @classmethod
    @abstractmethod
    def from_params(cls, params: Params) -> "Detector":
        """Build an unfitted detector from the validated params."""

    @classmethod
    def _param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    @abstractmethod
    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "Detector":
        """Learn from normal training images. `validation`: normal validation images of the same
        categories and domain, for what a method tunes on held-out normals (early stopping, map
        or score normalisation); never test images. Detectors that need none ignore it."""

    @abstractmethod
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        """Scores and maps of H×W×3 uint8 RGB images held in memory (one batch). `category`:
        the images' category when known; a routing detector then uses that category's model
        instead of its router (oracle routing); the others need not look at it."""

    def score(self, records: Sequence[ImageRecord]) -> Scores:
        """Scores and maps of images on disk, read and scored `batch_size` at a time."""
        return self.score_batches(iter_image_batches(records, self.batch_size), total=-(-len(records) // self.batch_size))

    def score_batches(self, batches: Iterable[Sequence[np.ndarray]], total: int | None = None) -> Scores:
        """Scores and maps of RGB uint8 images that arrive in batches (e.g. made in memory), in order."""
        parts = [self.score_images(images) for images in
                 tqdm(batches, total=total, desc="scoring", disable=not self.progress, leave=False)]
        if not parts:
            return self.score_images([])
        return Scores.concat(parts)

    # -- the frozen network, and other runtimes for it -----------------------------------------
    def feature_network(self) -> FeatureNetwork | None:
        """The frozen network this detector runs on every image, or None when it has none."""
        return None

    def prepare_batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB uint8 images -> the batch the feature network takes."""
        raise NotImplementedError(f"{self.name} has no feature network")

    def use_feature_runner(self, runner: FeatureRunner | None) -> None:
        """Run the feature network through `runner` (e.g. an ONNX Runtime session); None = torch."""
        if runner is not None and self.feature_network() is None:
            raise ValueError(f"{self.name} has no feature network to replace")
        self._feature_runner = runner

    def feature_spec(self) -> dict[str, Any] | None:
        """What the frozen network is (implementation, backbone, weights, layers, input size) as
        JSON, for the features stage's store; None when the detector has no frozen network.
        `shiftad.pipeline.feature_spec` says the same from params (a test holds them equal)."""
        return None

    def use_feature_store(self, store: "FeatureStore | None") -> None:
        """Take the frozen network's outputs from `store` where it holds the batch's exact
        inputs (the features stage ran the network once for every stage); None = always run it."""
        if store is not None and not serves(store.spec, self.feature_spec() or {}):
            raise ValueError(f"{store.folder}: features of {store.spec}, but this {self.name} model runs {self.feature_spec()}")
        self._feature_store = store

    def clock(self) -> NetworkClock:
        """A stopwatch (`with model.clock() as c: ...; c.seconds`) that counts the frozen network's
        time even where the store served its outputs (see NetworkClock)."""
        return NetworkClock(self._feature_store)

    def use_device(self, device: str, mixed_precision: bool = False) -> "Detector":
        """Run the frozen feature network on `device` (auto | cpu | cuda; checked when it first
        runs), under float16 autocast on CUDA when `mixed_precision`. Features come back as
        float32 CPU tensors either way, so everything after them is unchanged."""
        self.feature_device, self.feature_mixed_precision = device, mixed_precision
        return self

    def features(self, batch: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of a prepared batch, through the runner in use (float32, on the CPU)."""
        if self._feature_runner is not None:
            return list(self._feature_runner(batch))
        if self._feature_store is not None:
            stored = self._feature_store.lookup(batch, (self.feature_spec() or {}).get("layers"))
            if stored is not None:
                return stored
        network = self.feature_network()
        if network is None:
            raise ValueError(f"{self.name} has no feature network")
        device = resolve_device(self.feature_device, "backbone.device")
        # the module's own device, not a flag of this model's: stages share one frozen network between models
        current = next(itertools.chain(network.module.buffers(), network.module.parameters()), None)
        if current is None or current.device.type != device.type or (device.index is not None and current.device.index != device.index):
            network.module.to(device)
        autocast = self.feature_mixed_precision and device.type == "cuda"
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=autocast):
            outputs = network.module(batch.to(device))
        return [o.float().cpu() for o in outputs]

    @abstractmethod
    def _save_state(self, folder: Path) -> dict[str, Any]:
        """Write learned state into `folder`; return extra facts for meta.json."""

    @abstractmethod
    def _load_state(self, folder: Path) -> None: ...

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        facts = self._save_state(folder)
        write_json(folder / META_FILE, {"detector": self.name, "params": self.get_params(), "shiftad_version": __version__, **facts})

    @classmethod
    def load(cls, folder: str | Path) -> "Detector":
        folder = Path(folder)
        meta = read_json(folder / META_FILE)
        if meta.get("detector") != cls.name:
            raise ValueError(f"{folder}: holds a '{meta.get('detector')}' model, not '{cls.name}'")
        detector = cls(**meta["params"])
        detector._load_state(folder)
        return detector
