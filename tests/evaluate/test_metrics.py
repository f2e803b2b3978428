from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from shiftad.evaluate.aupro import au_pro
from shiftad.evaluate.metrics import exact_auroc, image_metrics, pixel_metrics


def random_scores(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    labels[:2] = [True, False]
    scores = np.round(rng.normal(size=n) + labels, 1)  # rounding -> ties, also across classes
    return scores, labels


@pytest.mark.parametrize("seed", range(8))
def test_image_metrics_match_sklearn(seed: int) -> None:
    scores, labels = random_scores(seed)
    threshold = float(np.median(scores))  # a score value: exercises score == threshold
    m = image_metrics(scores, labels, threshold)
    pred = scores >= threshold
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert m["image_auprc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[False, True]).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["f1"] == pytest.approx(f1_score(labels, pred), abs=1e-12)
    assert m["precision"] == pytest.approx(precision_score(labels, pred), abs=1e-12)
    assert m["recall"] == pytest.approx(recall_score(labels, pred), abs=1e-12)
    assert m["accuracy"] == pytest.approx(accuracy_score(labels, pred), abs=1e-12)


def test_image_metrics_types_are_json_plain() -> None:
    scores, labels = random_scores(0)
    m = image_metrics(scores, labels.astype(int), 0.5)
    for key in ("tn", "fp", "fn", "tp"):
        assert type(m[key]) is int
    for key in ("image_auroc", "image_auprc", "f1", "precision", "recall", "accuracy"):
        assert type(m[key]) is float
    json.dumps(m)


def test_single_class_gives_nan_auc_without_exception() -> None:
    scores = np.array([0.1, 0.5, 0.9])
    for labels in (np.zeros(3, dtype=bool), np.ones(3, dtype=bool)):
        m = image_metrics(scores, labels, 0.5)
        assert math.isnan(m["image_auroc"]) and math.isnan(m["image_auprc"])
    m = image_metrics(scores, np.zeros(3, dtype=bool), 0.5)
    # no positives: precision/recall/F1 undefined -> 0 (sklearn's zero_division=0)
    assert (m["tn"], m["fp"], m["f1"], m["precision"], m["recall"]) == (1, 2, 0.0, 0.0, 0.0)


def test_threshold_above_all_scores() -> None:
    scores, labels = random_scores(1)
    m = image_metrics(scores, labels, scores.max() + 1)
    pred = np.zeros_like(labels)
    assert m["tp"] == m["fp"] == 0
    assert m["f1"] == f1_score(labels, pred, zero_division=0)
    assert m["precision"] == precision_score(labels, pred, zero_division=0)


@pytest.mark.parametrize("seed", range(5))
def test_exact_auroc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    positives = rng.random(5000) < 0.05
    scores = np.round(rng.random(5000) + 0.3 * positives, 2)  # many ties
    assert exact_auroc(scores, positives) == pytest.approx(roc_auc_score(positives, scores), abs=1e-12)


def test_exact_auroc_edge_cases() -> None:
    assert exact_auroc(np.array([1.0, 1.0, 1.0]), np.array([True, False, False])) == 0.5
    assert exact_auroc(np.array([0.0, 1.0]), np.array([False, True])) == 1.0
    assert exact_auroc(np.array([1.0, 0.0]), np.array([False, True])) == 0.0
    assert math.isnan(exact_auroc(np.array([1.0, 2.0]), np.array([False, False])))


def make_pixels(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((4, 16, 16), dtype=bool)
    masks[0, 2:6, 3:7] = True
    masks[1, 9:12, 1:3] = True
    masks[1, 12, 3] = True
    maps = np.round(rng.random(masks.shape) + 0.4 * masks, 2).astype(np.float32)
    return maps, masks


@pytest.mark.parametrize("seed", range(3))
def test_pixel_metrics(seed: int) -> None:
    maps, masks = make_pixels(seed)
    m = pixel_metrics(maps, masks, fpr_limit=0.2)
    assert m["pixel_auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert m["aupro"] == au_pro(maps, masks, fpr_limit=0.2)  # one shared sort gives each its own value exactly
    assert m["pixel_auroc"] == exact_auroc(maps, masks)
    assert type(m["pixel_auroc"]) is float and type(m["aupro"]) is float
    json.dumps(m)


def test_pixel_metrics_nan_without_masks() -> None:
    maps, masks = make_pixels(0)
    for no_masks in (None, np.zeros_like(masks)):
        m = pixel_metrics(maps, no_masks)
        assert math.isnan(m["pixel_auroc"]) and math.isnan(m["aupro"])
