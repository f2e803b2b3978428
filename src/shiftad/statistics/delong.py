"""DeLong's test for two correlated ROC AUCs on the same images, and a DeLong interval for one AUC.

Why: an analytic, resampling-free comparison of two models' image AUROCs that accounts for
their scores being computed on the same images (correlated AUCs).

Uses the fast algorithm of Sun & Xu (2014, IEEE Signal Processing Letters 21(11)): the
structural components (DeLong, DeLong & Clarke-Pearson 1988) come from midranks,

    V10_i = (T_Z(X_i) − T_X(X_i)) / n        (positive i: fraction of negatives it beats)
    V01_j = 1 − (T_Z(Y_j) − T_Y(Y_j)) / m    (negative j: fraction of positives beating it)

with T_Z / T_X / T_Y the midranks among all / positive / negative scores (ties count ½),
m positives and n negatives. AUC = mean(V10); Cov(AUC) = S10/m + S01/n with S10, S01 the
sample covariance matrices (ddof=1) of the V10 / V01 rows of the models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from shiftad.evaluate.thresholds import as_scores_labels


@dataclass(frozen=True)
class DeLongResult:
    """Two-sided DeLong test of ``auc_a == auc_b``; ``difference`` is auc_a − auc_b."""

    auc_a: float
    auc_b: float
    difference: float
    variance: float
    z: float
    p_value: float


@dataclass(frozen=True)
class DeLongInterval:
    """Single AUROC with its DeLong variance and normal-approximation interval (clipped to [0, 1])."""

    auc: float
    variance: float
    low: float
    high: float


def _covariance(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for the (k, N) scores of k models."""
    m = int(np.count_nonzero(labels))
    n = labels.size - m
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 anomalous and 2 normal images, got {m} and {n}")
    positives, negatives = scores[:, labels], scores[:, ~labels]
    t_z = stats.rankdata(scores, axis=1)  # midranks ("average")
    t_x = stats.rankdata(positives, axis=1)
    t_y = stats.rankdata(negatives, axis=1)
    v10 = (t_z[:, labels] - t_x) / n
    v01 = 1.0 - (t_z[:, ~labels] - t_y) / m
    aucs = v10.mean(axis=1)
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return aucs, s10 / m + s01 / n


def delong_test(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray) -> DeLongResult:
    """DeLong test for two models' AUROCs on the same images (same ``labels``, same order).

    Two-sided p-value from the standard normal. Degenerate variance (0, e.g. identical or
    perfectly separating models): z = 0 and p = 1.0 when the difference is 0, otherwise
    z = ±inf and p = 0.0 -- a non-zero difference with no sampling variability.
    """
    scores_a, labels = as_scores_labels(scores_a, labels)
    scores_b, _ = as_scores_labels(scores_b, labels)
    aucs, cov = _covariance(np.stack([scores_a, scores_b]), labels)
    difference = float(aucs[0] - aucs[1])
    variance = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    if variance > 0:
        z = difference / math.sqrt(variance)
        p_value = float(2 * special.ndtr(-abs(z)))
    elif difference == 0:
        z, p_value = 0.0, 1.0
    else:
        z, p_value = math.copysign(math.inf, difference), 0.0
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, variance, float(z), p_value)


def delong_interval(scores: np.ndarray, labels: np.ndarray, confidence: float = 0.95) -> DeLongInterval:
    """AUROC with a DeLong (normal-approximation) interval, clipped to [0, 1]; an analytic
    cross-check of the bootstrap interval for image AUROC."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores, labels = as_scores_labels(scores, labels)
    aucs, cov = _covariance(scores[None, :], labels)
    auc, variance = float(aucs[0]), max(float(cov[0, 0]), 0.0)
    half = float(special.ndtri(0.5 + confidence / 2)) * math.sqrt(variance)
    return DeLongInterval(auc, variance, max(0.0, auc - half), min(1.0, auc + half))
