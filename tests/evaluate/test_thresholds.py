from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from shiftad.evaluate.thresholds import (
    ThresholdResult,
    compute_thresholds,
    f1_max_threshold,
    mean_std_threshold,
    percentile_threshold,
)


def f1_at(scores: np.ndarray, labels: np.ndarray, t: float) -> float:
    pred = scores >= t
    tp = np.sum(pred & labels)
    fp = np.sum(pred & ~labels)
    fn = np.sum(~pred & labels)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def random_val(seed: int, n: int = 25, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    labels[0], labels[1] = True, False  # both classes
    scores = rng.normal(size=n) + labels
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


@pytest.mark.parametrize("seed", range(20))
def test_f1_max_matches_brute_force(seed: int) -> None:
    scores, labels = random_val(seed, ties=seed % 2 == 0)
    best = max(f1_at(scores, labels, t) for t in np.unique(scores))
    t = f1_max_threshold(scores, labels)
    assert t in scores
    assert f1_at(scores, labels, t) == pytest.approx(best, abs=1e-12)


def test_f1_max_separable() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    labels = np.array([0, 0, 0, 1, 1])
    assert f1_max_threshold(scores, labels) == 0.8


def test_f1_max_undefined_without_anomalies() -> None:
    with pytest.raises(ValueError, match="no anomalous"):
        f1_max_threshold(np.array([0.1, 0.2]), np.array([0, 0]))


def test_percentile_and_mean_std_match_numpy() -> None:
    normal = np.random.default_rng(0).normal(size=101)
    assert percentile_threshold(normal) == pytest.approx(np.percentile(normal, 95))
    assert percentile_threshold(normal, q=90) == pytest.approx(np.percentile(normal, 90))
    assert mean_std_threshold(normal) == pytest.approx(normal.mean() + 3 * normal.std(ddof=0))
    assert mean_std_threshold(normal, k=2) == pytest.approx(normal.mean() + 2 * np.std(normal))
    with pytest.raises(ValueError, match="percentile"):
        percentile_threshold(normal, q=101)


@pytest.mark.parametrize("rule", ["f1_max", "percentile", "mean_std"])
def test_compute_thresholds_all_rules(rule: str) -> None:
    scores, labels = random_val(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning when val holds anomalies
        result = compute_thresholds(scores, labels, rule, percentile=90, std_multiplier=2)
    normal = scores[~labels]
    assert result.f1_max == f1_max_threshold(scores, labels)
    assert result.percentile == pytest.approx(np.percentile(normal, 90))
    assert result.mean_std == pytest.approx(normal.mean() + 2 * normal.std())
    assert result.rule == result.used_rule == rule
    assert result.value == getattr(result, rule)
    assert all(type(v) is float for v in (result.f1_max, result.percentile, result.mean_std, result.value))


def test_fallback_to_percentile_with_warning() -> None:
    normal = np.random.default_rng(1).normal(size=40)
    with pytest.warns(UserWarning, match=r"(?s)bottle.*no anomalous.*percentile"):
        result = compute_thresholds(normal, np.zeros(40, dtype=bool), "f1_max", 95, 3, context="bottle")
    assert result.f1_max is None
    assert (result.rule, result.used_rule) == ("f1_max", "percentile")
    assert result.value == result.percentile == pytest.approx(np.percentile(normal, 95))
    assert result.mean_std == pytest.approx(normal.mean() + 3 * normal.std())


def test_other_rules_do_not_warn_without_anomalies() -> None:
    normal = np.random.default_rng(1).normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = compute_thresholds(normal, np.zeros(40), "mean_std", 95, 3)
    assert result.f1_max is None and result.used_rule == "mean_std"


def test_no_normal_images_raises() -> None:
    with pytest.raises(ValueError, match="(?s)carpet.*no normal image"):
        compute_thresholds(np.array([0.5, 0.7]), np.array([1, 1]), "f1_max", 95, 3, context="carpet")


def test_bad_inputs() -> None:
    scores, labels = random_val(0)
    with pytest.raises(ValueError, match="unknown threshold rule"):
        compute_thresholds(scores, labels, "median", 95, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        compute_thresholds(scores, labels * 2, "f1_max", 95, 3)
    with pytest.raises(ValueError, match="scores but"):
        compute_thresholds(scores[:-1], labels, "f1_max", 95, 3)
    with pytest.raises(ValueError, match="NaN"):
        compute_thresholds(np.r_[scores[:-1], np.nan], labels, "f1_max", 95, 3)


def test_result_is_frozen() -> None:
    scores, labels = random_val(0)
    result = compute_thresholds(scores, labels, "f1_max", 95, 3)
    assert isinstance(result, ThresholdResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.value = 0.0  # type: ignore[misc]
