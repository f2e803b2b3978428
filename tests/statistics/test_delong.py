"""DeLong test against sklearn AUCs and a plain O(n²) structural-components computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shiftad.statistics.delong import delong_interval, delong_test


def psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def brute_force_covariance(scores: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988) written out: placements V10 / V01 by double loops, S10 / S01 as
    sample covariances, Cov = S10/m + S01/n."""
    positives = [s[labels] for s in scores]
    negatives = [s[~labels] for s in scores]
    m, n, k = len(positives[0]), len(negatives[0]), len(scores)
    v10 = np.array([[sum(psi(x, y) for y in negatives[r]) / n for x in positives[r]] for r in range(k)])
    v01 = np.array([[sum(psi(x, y) for x in positives[r]) / m for y in negatives[r]] for r in range(k)])
    s10 = np.empty((k, k))
    s01 = np.empty((k, k))
    for r in range(k):
        for s in range(k):
            s10[r, s] = sum((v10[r, i] - v10[r].mean()) * (v10[s, i] - v10[s].mean()) for i in range(m)) / (m - 1)
            s01[r, s] = sum((v01[r, j] - v01[r].mean()) * (v01[s, j] - v01[s].mean()) for j in range(n)) / (n - 1)
    return s10 / m + s01 / n


def pair(seed: int, n: int = 70) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    labels[:2] = [True, False]
    labels[2:4] = [True, False]
    a = np.round(rng.normal(size=n) + 1.2 * labels, 1)  # rounded: ties within and across classes
    b = np.round(0.5 * a + rng.normal(size=n) + 0.4 * labels, 1)
    return a, b, labels


@pytest.mark.parametrize("seed", range(4))
def test_aucs_and_variance_match_sklearn_and_brute_force(seed: int) -> None:
    a, b, labels = pair(seed)
    result = delong_test(a, b, labels)
    assert result.auc_a == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result.auc_b == pytest.approx(roc_auc_score(labels, b), abs=1e-12)
    assert result.difference == pytest.approx(result.auc_a - result.auc_b, abs=1e-15)
    cov = brute_force_covariance([a, b], labels)
    assert result.variance == pytest.approx(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], rel=1e-10)
    assert result.z == pytest.approx(result.difference / np.sqrt(result.variance), rel=1e-12)
    interval = delong_interval(a, labels)
    assert interval.auc == result.auc_a
    assert interval.variance == pytest.approx(cov[0, 0], rel=1e-10)
    half = 1.959963984540054 * np.sqrt(cov[0, 0])
    assert interval.low == pytest.approx(max(0, result.auc_a - half), rel=1e-9)
    assert interval.high == pytest.approx(min(1, result.auc_a + half), rel=1e-9)


def test_swapping_the_models_keeps_the_p_value() -> None:
    a, b, labels = pair(5)
    forward, backward = delong_test(a, b, labels), delong_test(b, a, labels)
    assert backward.difference == -forward.difference and backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-12)
    assert backward.variance == pytest.approx(forward.variance, rel=1e-12)


def test_clearly_different_models_and_noisy_copies() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(80, dtype=bool), np.ones(80, dtype=bool)]
    base = rng.normal(size=160) + 1.5 * labels
    weak = rng.normal(size=160) + 0.2 * labels
    assert delong_test(base, weak, labels).p_value < 0.05
    copy_a = base + 0.3 * rng.normal(size=160)
    copy_b = base + 0.3 * rng.normal(size=160)
    assert delong_test(copy_a, copy_b, labels).p_value > 0.2


def test_degenerate_variance() -> None:
    a, _, labels = pair(2)
    same = delong_test(a, a, labels)
    assert same.difference == 0 and same.variance == 0 and same.z == 0 and same.p_value == 1.0
    # perfectly separating vs perfectly inverted: both placements constant, variance 0
    perfect = labels.astype(float)
    opposite = delong_test(perfect, -perfect, labels)
    assert (opposite.auc_a, opposite.auc_b, opposite.variance) == (1.0, 0.0, 0.0)
    assert opposite.z == np.inf and opposite.p_value == 0.0


def test_needs_two_images_per_class() -> None:
    with pytest.raises(ValueError, match="at least 2 anomalous and 2 normal"):
        delong_test(np.arange(4.0), np.arange(4.0), np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="scores but"):
        delong_test(np.arange(4.0), np.arange(3.0), np.array([0, 0, 1, 1]))
