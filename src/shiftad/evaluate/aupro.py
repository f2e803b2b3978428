"""AU-PRO (area under the per-region-overlap curve), as MVTec AD's official evaluation computes it.

Reproduces ``compute_pro`` and ``trapezoid`` from the MVTec AD evaluation code
(``generic_util.py`` / ``pro_curve_util.py``):

* ground-truth regions are the 8-connected components of each image's binary mask;
* all pixels of all images are ranked by ONE global descending sort of their scores;
* at each distinct score (threshold, "score >= t is positive"):
  FPR = fraction of all normal pixels at or above t,
  PRO = mean over all regions of the fraction of the region's pixels at or above t;
* the curve starts at (0, 0) and ends at (1, 1);
* it is integrated with the trapezoid rule up to ``fpr_limit`` (interpolating at exactly the
  limit) and divided by ``fpr_limit``.

Implementation differences that do not change the result (beyond float rounding): instead of
argsorting every pixel together with per-pixel FPR/PRO increments, we sort the scores once
(a plain sort is several times faster than an argsort), read off how many pixels score at or
above each distinct threshold, and subtract the defect pixels among them; only the (usually
few) defect pixels are argsorted, to carry their PRO weights. FPRs stay float64 (the reference
casts them to float32). Peak memory is about 3-4 arrays of 8 bytes per pixel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# 8-connectivity within each image, no connectivity across images of the stack.
_STRUCTURE_8_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8_IN_PLANE[1] = True


def _check_inputs(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    maps = np.asarray(maps)
    masks = np.asarray(masks)
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must have shape (N, H, W), got {maps.shape}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks shape {masks.shape} does not match anomaly maps shape {maps.shape}")
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinite values")
    if masks.dtype != bool:
        masks = masks != 0  # e.g. 0/255 uint8 masks as stored on disk
    return maps, masks


def sorted_negated(maps: np.ndarray) -> np.ndarray:
    """Every pixel's score negated, sorted ascending (= the scores in descending order, negated):
    the one full sort AU-PRO needs, which pixel AUROC can share (`shiftad.evaluate.metrics`)."""
    neg_sorted = np.negative(maps, order="C").ravel()  # a fresh array (ravel is a view of it)
    neg_sorted.sort()
    return neg_sorted


def _region_weights(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Per defect pixel (in ``masks`` boolean-index order): 1 / size of its region; and the region count."""
    labels, n_regions = ndimage.label(masks, structure=_STRUCTURE_8_IN_PLANE)
    defect_labels = labels[masks]
    sizes = np.bincount(defect_labels, minlength=n_regions + 1)
    return 1.0 / sizes[defect_labels], int(n_regions)


def _curve(maps: np.ndarray, masks: np.ndarray, neg_sorted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The PRO curve, or None when it is undefined (no defect region, or no normal pixel).
    `neg_sorted`: the negated scores of every pixel, sorted ascending, when the caller has them
    (read only)."""
    n_pixels = maps.size
    n_defect = int(np.count_nonzero(masks))
    n_normal = n_pixels - n_defect
    if n_defect == 0 or n_normal == 0:
        return None

    weights, n_regions = _region_weights(masks)

    # Sorting NEGATED scores ascending gives the reference's descending order directly, so every
    # array below is already in curve order (contiguous, no reversed copies).
    # Defect pixels: their PRO weights accumulated from the highest score down.
    neg_defect = np.negative(maps[masks])
    order = np.argsort(neg_defect)  # order within ties is irrelevant: ties are merged below
    neg_defect = neg_defect[order]
    pro_cumsum = np.cumsum(weights[order])
    del order, weights

    # All pixels: one global sort; a distinct threshold's group ends where the next value starts,
    # so `n_ge[i]` = number of pixels scoring >= threshold i (the reference's cumsum position).
    if neg_sorted is None:
        neg_sorted = sorted_negated(maps)
    last_of_value = np.empty(n_pixels, dtype=bool)
    last_of_value[-1] = True
    np.not_equal(neg_sorted[:-1], neg_sorted[1:], out=last_of_value[:-1])
    n_ge = np.flatnonzero(last_of_value)
    del last_of_value
    neg_thresholds = neg_sorted[n_ge]
    del neg_sorted
    n_ge += 1

    # defect pixels scoring >= each threshold
    defect_ge = np.searchsorted(neg_defect, neg_thresholds, side="right")
    del neg_thresholds

    # Outputs are filled between the (0, 0) start and the (1, 1) end point in place, so no
    # full-size temporary gets concatenated.
    n_points = len(n_ge)
    fprs = np.empty(n_points + 2)
    fprs[0], fprs[-1] = 0.0, 1.0
    n_ge -= defect_ge  # -> false positives
    np.divide(n_ge, n_normal, out=fprs[1:-1])
    del n_ge

    pros = np.empty(n_points + 2)
    pros[0], pros[-1] = 0.0, 1.0
    # pro_cumsum[k - 1] = summed weight of the k highest-scoring defect pixels; the thresholds
    # above every defect pixel (PRO 0) come first.
    n_without = n_points - int(np.count_nonzero(defect_ge))
    pros[1 : n_without + 1] = 0.0
    defect_ge -= 1  # counts -> indices into pro_cumsum
    # mode="clip" (indices are valid anyway) lets take() write straight into `pros` unbuffered
    np.take(pro_cumsum, defect_ge[n_without:], out=pros[n_without + 1 : -1], mode="clip")
    del defect_ge
    pros[1:-1] /= n_regions

    # Guard against cumsum rounding pushing values above 1, as the reference does.
    np.clip(fprs, None, 1.0, out=fprs)
    np.clip(pros, None, 1.0, out=pros)
    return fprs, pros


def pro_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fprs, pros) of the PRO curve, from (0, 0) to (1, 1), one point per distinct score.

    maps: float (N, H, W) anomaly maps; masks: bool (N, H, W) ground truth.
    Raises ValueError when the curve is undefined (no defect pixel, or no normal pixel).
    """
    maps, masks = _check_inputs(maps, masks)
    curve = _curve(maps, masks)
    if curve is None:
        raise ValueError("PRO curve is undefined: the masks need at least one defect and one normal pixel")
    return curve


def trapezoid(x: np.ndarray, y: np.ndarray, x_max: float | None = None) -> float:
    """Area under y(x) by the trapezoid rule, up to ``x_max`` (interpolating y at exactly x_max).

    Same as the MVTec reference: ``x`` must be non-decreasing.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    correction = 0.0
    if x_max is not None:
        if not np.any(x == x_max):
            # Like the reference's bisect (right side) on non-decreasing x.
            ins = int(np.searchsorted(x, x_max, side="right"))
            if not 0 < ins < len(x):
                raise ValueError(f"x_max={x_max} is outside the curve's range [{x[0]}, {x[-1]}]")
            # The piece between the last point before x_max and x_max itself.
            y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
            correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
        keep = x <= x_max
        x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def au_pro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, neg_sorted: np.ndarray | None = None) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (1.0 is perfect).

    NaN when there is no defect region (or no normal pixel), where AU-PRO is undefined.
    ``neg_sorted``: `sorted_negated(maps)` when the caller already has it.
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    maps, masks = _check_inputs(maps, masks)
    curve = _curve(maps, masks, neg_sorted)
    if curve is None:
        return float("nan")
    fprs, pros = curve
    return trapezoid(fprs, pros, x_max=fpr_limit) / fpr_limit
