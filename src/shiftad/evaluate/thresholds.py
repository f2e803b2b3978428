"""Decision thresholds on image scores, computed from the VALIDATION split only.

Every function takes the validation scores (and labels) explicitly; nothing here sees test
data, so a threshold can never leak test information into the reported metrics.
Convention everywhere: an image is predicted anomalous when ``score >= threshold``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import precision_recall_curve

Rule = Literal["f1_max", "percentile", "mean_std"]
RULES: tuple[str, ...] = ("f1_max", "percentile", "mean_std")


def as_scores_labels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate 1-D finite scores and binary labels of the same length; labels become bool."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {scores.shape} and {labels.shape}")
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    if len(scores) == 0:
        raise ValueError("no scores given")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"labels must be 0 (normal) / 1 (anomalous), got values {np.unique(labels)[:10]}")
        labels = labels.astype(bool)
    return scores, labels


def _as_normal_scores(normal_scores: np.ndarray) -> np.ndarray:
    normal_scores = np.asarray(normal_scores, dtype=np.float64).ravel()
    if len(normal_scores) == 0:
        raise ValueError("no normal scores given")
    if not np.isfinite(normal_scores).all():
        raise ValueError("normal scores contain NaN or infinite values")
    return normal_scores


def f1_max_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (one of the scores) that maximises F1 on the given validation images.

    Raises ValueError when ``labels`` hold no anomaly: F1 is then undefined and the caller
    must fall back to another rule (``compute_thresholds`` does).
    """
    scores, labels = as_scores_labels(scores, labels)
    if not labels.any():
        raise ValueError("F1-max threshold is undefined: the validation labels hold no anomalous image")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last (precision=1, recall=0) point has no threshold. sklearn omits thresholds below
    # the first one reaching full recall: they only add false positives, so cannot win.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(thresholds[int(np.argmax(f1))])


def percentile_threshold(normal_scores: np.ndarray, q: float = 95) -> float:
    """The q-th percentile (linear interpolation) of the normal validation scores."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    return float(np.percentile(_as_normal_scores(normal_scores), q))


def mean_std_threshold(normal_scores: np.ndarray, k: float = 3) -> float:
    """mean + k * std (population std, ddof=0) of the normal validation scores."""
    normal_scores = _as_normal_scores(normal_scores)
    return float(normal_scores.mean() + k * normal_scores.std())


@dataclass(frozen=True)
class ThresholdResult:
    """All candidate thresholds of one validation split, and the one the rule picked."""

    f1_max: float | None  # None when validation holds no anomalous image
    percentile: float
    mean_std: float
    rule: str  # the rule asked for
    used_rule: str  # the rule that decided ``value`` (differs after a fallback)
    value: float


def compute_thresholds(
    scores: np.ndarray,
    labels: np.ndarray,
    rule: Rule,
    percentile: float = 95,
    std_multiplier: float = 3,
    context: str | None = None,
) -> ThresholdResult:
    """Thresholds of all three rules from validation scores/labels; ``value`` is the one ``rule`` gives.

    ``rule="f1_max"`` falls back to the percentile rule (with a warning) when validation holds
    no anomalous image. ``context`` (e.g. the category) is named in messages.
    """
    if rule not in RULES:
        raise ValueError(f"unknown threshold rule {rule!r}; expected one of {RULES}")
    scores, labels = as_scores_labels(scores, labels)
    where = f" for {context}" if context else ""
    normal_scores = scores[~labels]
    if len(normal_scores) == 0:
        raise ValueError(
            f"validation split{where} holds no normal image: percentile and mean+k·std thresholds "
            "need normal scores; add normal images to the validation split"
        )

    f1 = f1_max_threshold(scores, labels) if labels.any() else None
    values = {
        "f1_max": f1,
        "percentile": percentile_threshold(normal_scores, percentile),
        "mean_std": mean_std_threshold(normal_scores, std_multiplier),
    }
    used_rule = rule
    if values[rule] is None:
        used_rule = "percentile"
        warnings.warn(
            f"validation split{where} holds no anomalous image, so the F1-max threshold is undefined; "
            f"falling back to the {percentile:g}th percentile of normal validation scores",
            stacklevel=2,
        )
    return ThresholdResult(
        f1_max=f1,
        percentile=values["percentile"],
        mean_std=values["mean_std"],
        rule=rule,
        used_rule=used_rule,
        value=values[used_rule],
    )
