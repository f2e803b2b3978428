"""Detector registry: params name -> class. Adding a detector touches its module and this dict."""

from __future__ import annotations

from pathlib import Path

from shiftad.detectors.base import Detector, Scores
from shiftad.detectors.efficientad import EfficientAD
from shiftad.detectors.knn import FewShotKNN
from shiftad.detectors.padim import PaDiM
from shiftad.detectors.patchcore import PatchCore
from shiftad.detectors.routed_ae import RoutedAutoencoder
from shiftad.detectors.uninformed_students import UninformedStudents
from shiftad.params import Params

DETECTORS: dict[str, type[Detector]] = {cls.name: cls for cls in (PatchCore, PaDiM, FewShotKNN, RoutedAutoencoder, EfficientAD, UninformedStudents)}


def detector_class(name: str) -> type[Detector]:
    try:
        return DETECTORS[name]
    except KeyError:
        raise KeyError(f"unknown detector '{name}'; known: {sorted(DETECTORS)}") from None


def build_detector(name: str, params: Params) -> Detector:
    """An unfitted detector, its frozen backbone set to run on params' backbone.device."""
    return detector_class(name).from_params(params).use_device(params.backbone.device, params.backbone.mixed_precision)


def load_detector(name: str, folder: str | Path, params: Params) -> Detector:
    """A fitted detector from `folder`, its frozen backbone set to run on params' backbone.device."""
    return detector_class(name).load(folder).use_device(params.backbone.device, params.backbone.mixed_precision)


__all__ = ["DETECTORS", "Detector", "Scores", "build_detector", "detector_class", "load_detector"]
