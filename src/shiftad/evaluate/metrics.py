"""Image-level and pixel-level metrics. Every value is a plain Python float/int (JSON-serialisable)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from shiftad.evaluate.aupro import au_pro, sorted_negated
from shiftad.evaluate.thresholds import as_scores_labels

NAN = float("nan")


def image_metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    """AUROC, AUPRC (average precision) and, predicting anomalous when ``score >= threshold``,
    F1 / precision / recall / accuracy and the confusion matrix (tn, fp, fn, tp).

    AUROC and AUPRC are NaN when only one class is present; precision, recall and F1 are 0
    when undefined (no predicted / no actual positive), as sklearn's ``zero_division=0``.
    """
    scores, labels = as_scores_labels(scores, labels)
    both_classes = bool(labels.any() and not labels.all())
    predicted = scores >= threshold
    tp = int(np.count_nonzero(predicted & labels))
    fp = int(np.count_nonzero(predicted & ~labels))
    fn = int(np.count_nonzero(~predicted & labels))
    tn = int(np.count_nonzero(~predicted & ~labels))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    # 2tp / (2tp + fp + fn) equals 2PR/(P+R) and is 0 rather than undefined when tp == 0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return {
        "image_auroc": float(roc_auc_score(labels, scores)) if both_classes else NAN,
        "image_auprc": float(average_precision_score(labels, scores)) if both_classes else NAN,
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
        "accuracy": (tp + tn) / len(labels),
        "tn": tn,
        "fp": fp,
        "fn": fn,
        "tp": tp,
    }


def exact_auroc(scores: np.ndarray, positives: np.ndarray, all_sorted: np.ndarray | None = None) -> float:
    """ROC AUC = P(score_pos > score_neg) + 0.5 · P(tie), computed exactly by counting.

    Equals sklearn's ``roc_auc_score`` but needs only plain sorts (no argsort, no ROC curve),
    so it stays fast and lean on tens of millions of pixels.
    NaN when only one class is present. ``all_sorted``: every score sorted ascending, when the
    caller already has them.
    """
    scores = np.asarray(scores).ravel()
    positives = np.asarray(positives, dtype=bool).ravel()
    n_pos = int(np.count_nonzero(positives))
    n_neg = scores.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return NAN
    if all_sorted is None:
        all_sorted = np.sort(scores)
    pos_sorted = np.sort(scores[positives])
    # Per positive: negatives strictly below and negatives tied with it.
    below_all = np.searchsorted(all_sorted, pos_sorted, side="left")
    tied_all = np.searchsorted(all_sorted, pos_sorted, side="right") - below_all
    del all_sorted
    below_pos = np.searchsorted(pos_sorted, pos_sorted, side="left")
    tied_pos = np.searchsorted(pos_sorted, pos_sorted, side="right") - below_pos
    # Integer sum of 2·below + tied: exact, one rounding at the division.
    twice_wins = 2 * int((below_all - below_pos).sum()) + int((tied_all - tied_pos).sum())
    return twice_wins / (2 * n_pos * n_neg)


def pixel_metrics(
    maps: np.ndarray, masks: np.ndarray | None, fpr_limit: float = 0.3, pixel_images: np.ndarray | None = None
) -> dict[str, float]:
    """Pixel AUROC over all pixels of all images and AU-PRO up to ``fpr_limit``.

    ``pixel_images`` (bool per image) keeps only those images' pixels (an anomalous image whose
    mask has no defect pixel is left out, not counted as normal pixels); None keeps all.
    Both NaN when masks are unavailable (``masks=None``) or hold no defect pixel.
    """
    if masks is None:
        return {"pixel_auroc": NAN, "aupro": NAN}
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if masks.shape != maps.shape:
        raise ValueError(f"masks shape {masks.shape} does not match anomaly maps shape {maps.shape}")
    if pixel_images is not None and not np.all(pixel_images):
        maps, masks = maps[pixel_images], masks[pixel_images]
    if masks.dtype != bool:
        masks = masks != 0
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinite values")
    if not masks.any():
        return {"pixel_auroc": NAN, "aupro": NAN}
    # One full sort for both: AU-PRO's descending order, negated, is pixel AUROC's ascending one.
    neg_sorted = sorted_negated(maps)
    return {
        "pixel_auroc": exact_auroc(maps, masks, all_sorted=np.negative(neg_sorted[::-1])),
        "aupro": au_pro(maps, masks, fpr_limit=fpr_limit, neg_sorted=neg_sorted),
    }
