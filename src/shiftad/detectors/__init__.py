"""Detector registry: params name -> class. Adding a detector touches its module and this dict."""

from __future__ import annotations

import logging
from pathlib import Path

from shiftad.detectors.base import Detector, Scores
from shiftad.detectors.efficientad import EfficientAD
from shiftad.detectors.knn import FewShotKNN
from shiftad.detectors.padim import PaDiM
from shiftad.detectors.patchcore import PatchCore
from shiftad.detectors.routed_ae import RoutedAutoencoder
from shiftad.detectors.uninformed_students import UninformedStudents
from shiftad.params import Params

log = logging.getLogger(__name__)

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (PatchCore, PaDiM, FewShotKNN, RoutedAutoencoder, EfficientAD, UninformedStudents)}


def detector_class(name: str) -> type[Detector]:
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector '{name}'; known: {sorted(DETECTORS)}") from None


def build_detector(name: str, params: Params, stored_features: bool = True) -> Detector:
    """An unfitted detector, its frozen backbone set to run on params' backbone.device (and its
    outputs taken from the features stage's store where it holds them, unless `stored_features` is False)."""
    model = detector_class(name).from_params(params).use_device(params.backbone.device, params.backbone.mixed_precision)
    return with_stored_features(model, params) if stored_features else model


def load_detector(name: str, folder: str | Path, params: Params) -> Detector:
    """A fitted detector from `folder`, its frozen backbone set to run on params' backbone.device
    (and its outputs taken from the features stage's store where it holds them)."""
    return with_stored_features(detector_class(name).load(folder).use_device(params.backbone.device, params.backbone.mixed_precision), params)


def with_stored_features(model: Detector, params: Params | None = None) -> Detector:
    """Attach the features stage's store that serves the model's frozen network, when there is
    one (results/features/<set>/<spec id>/: the same network with at least the model's layers;
    with `params`, only the study's current networks are considered, never a stale folder)."""
    from shiftad.components.feature_store import SPEC_FILE, FeatureStore, serves
    from shiftad.io import read_json
    from shiftad.pipeline import FEATURES_DIR, feature_specs

    spec = model.feature_spec()
    if spec is not None:
        current = set(feature_specs(params)) if params is not None else None
        by_id: dict[str, list[Path]] = {}
        for spec_file in sorted(Path(FEATURES_DIR).glob(f"*/*/{SPEC_FILE}")):
            folder = spec_file.parent
            if (current is None or folder.name in current) and serves(read_json(spec_file)["spec"], spec):
                by_id.setdefault(folder.name, []).append(folder)
        if by_id:  # any serving store holds the same outputs (same network, same inputs); the first by name
            folders = by_id[sorted(by_id)[0]]
            model.use_feature_store(FeatureStore(folders))
            log.info("%s: frozen-network outputs from %s where they hold the images", model.name, ", ".join(map(str, folders)))
    return model


def log_feature_use(model: Detector) -> None:
    """How many images the store served and how many ran the network (a job's log says it)."""
    store = getattr(model, "_feature_store", None)
    if store is not None:
        log.info("%s: %d images' features from the store, %d through the network", model.name, store.hits, store.misses)


__all__ = ["DETECTORS", "Detector", "Scores", "build_detector", "detector_class", "load_detector", "log_feature_use", "with_stored_features"]
