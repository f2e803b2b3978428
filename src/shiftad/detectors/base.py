"""The one detector interface, scikit-learn style.

Hyperparameters come in through the constructor (and are what `get_params` returns and
`meta.json` stores); learned state ends with an underscore. `fit` learns from normal training
images, `score` returns image scores and full-resolution anomaly maps, `save`/`load` use
safetensors / npz / JSON only (no pickle).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from shiftad import __version__
from shiftad.data.images import read_image
from shiftad.data.records import ImageRecord
from shiftad.io import read_json, write_json
from shiftad.params import Params

META_FILE = "meta.json"


@dataclass(frozen=True)
class Scores:
    image_scores: np.ndarray  # (N,) higher = more anomalous
    maps: np.ndarray  # (N, H, W) float32 at the model's input size

    def __post_init__(self) -> None:
        if self.image_scores.shape[0] != self.maps.shape[0]:
            raise ValueError("image_scores and maps disagree on the number of images")


def iter_image_batches(records: Sequence[ImageRecord], batch_size: int) -> Iterator[list[np.ndarray]]:
    for start in range(0, len(records), batch_size):
        yield [read_image(r.path) for r in records[start : start + batch_size]]


class Detector(ABC):
    name: ClassVar[str]
    progress: bool = False  # progress bars on long steps; the CLI turns them on

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
    def fit(self, records: Sequence[ImageRecord]) -> "Detector": ...

    @abstractmethod
    def score(self, records: Sequence[ImageRecord]) -> Scores: ...

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
