"""Bootstrap confidence intervals and paired bootstrap comparisons of anomaly-detection metrics.

Why: one test-set number hides how much it would move on another draw of test images; these
functions give that spread (and paired model comparisons) without touching any pipeline I/O.

Resampling is STRATIFIED: every resample draws normal images with replacement from the normal
images and anomalous images from the anomalous ones, so class counts are kept (AUROC stays
defined, F1 keeps its prevalence). It runs through ``scipy.stats.bootstrap``:
``data=(normal_indices, anomalous_indices)`` with ``paired=False`` (each sample is resampled
on its own, which is exactly stratification) and a ``vectorized=True`` statistic. That
statistic receives the resampled image-index arrays (leading batch axis), turns them into
per-image multiplicity weights ``W`` (B, n) and returns ALL metrics at once, shape
(n_metrics, B) -- scipy 1.17 supports such multi-output statistics -- so every metric of a
call sees the same resamples. ``rng=np.random.default_rng(seed)`` makes results deterministic
per seed; the resamples do not depend on ``method``. A class with a single image cannot be
handed to scipy (it wants >= 2 observations per sample); it is held fixed (weight 1 in every
resample), which is what resampling it would do anyway. ``stratified_weights`` returns the
exact weights a call with the same labels and seed uses.

Metrics on resamples are computed from ``W`` without materialising any resample (no loop
over resamples), see ``ResampleMetrics``:

* image AUROC: ``Σ_pos Σ_neg w_i w_j ([s_i>s_j] + ½[s_i=s_j]) / (Σw_pos Σw_neg)`` via a
  pos × neg comparison matrix (exact);
* image AUPRC: average precision exactly as sklearn's ``average_precision_score`` with
  ``sample_weight`` (steps at distinct scores, ties grouped);
* F1 at the fixed threshold (anomalous when ``score >= threshold``) from weighted tp/fp/fn;
  0 when tp == 0;
* pixel AUROC: ``A[i, j]`` = pairs (defect pixel of image i, normal pixel of image j) won by
  the defect pixel, ties ½, counted exactly per image with searchsorted; then
  ``AUROC_b = w_b A w_b / ((w_b·P)(w_b·N))`` (P, N: defect / normal pixel counts) -- exact;
* AU-PRO: a GRID APPROXIMATION. Thresholds are quantiles of all normal-pixel scores at
  ``N_GRID`` FPR levels evenly covering [0, min(1, 2·fpr_limit)] plus ``N_TAIL`` levels up to
  FPR 1 (and one threshold just above the highest normal score). Per image, the normal pixels
  at or above each threshold (``F[j, t]``); per 8-connected region (as ``evaluate.aupro``),
  the fraction of its pixels at or above each threshold (``O[r, t]``). Then
  ``FPR_b(t) = Σ_j w_j F[j,t] / Σ_j w_j N_j`` and ``PRO_b(t)`` = the ``w``-weighted mean of
  ``O[r, t]`` over regions (a region weighs as much as its image); the curve (0,0) →
  grid → (1,1) is integrated with the trapezoid rule up to ``fpr_limit`` (interpolating at the
  limit) and divided by it. Between grid points the exact curve is replaced by a chord; the
  error is at most (FPR grid spacing / fpr_limit) ≈ 1e-3 and in practice ~1e-5 (tests check
  < 2e-3 against the exact ``au_pro``).

Point estimates are always the EXACT evaluate-stage numbers (``image_metrics``,
``exact_auroc``, ``au_pro``). Note that scipy's 'basic' and 'BCa' intervals evaluate the
statistic on the original sample too, i.e. for AU-PRO they use the grid value there (within
the approximation error above of the exact estimate).

NaN conventions: image AUROC/AUPRC are NaN when a class is missing; pixel metrics are NaN
(with NaN interval and NaN replicates) when maps/masks are missing or no defect pixel exists.
A NaN in any replicate makes that metric's interval (and p-value) NaN: it is then undefined.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

from shiftad.evaluate.aupro import au_pro
from shiftad.evaluate.metrics import image_metrics, pixel_metrics
from shiftad.evaluate.thresholds import as_scores_labels

METRICS: tuple[str, ...] = ("image_auroc", "image_auprc", "f1", "pixel_auroc", "aupro")
METHODS: tuple[str, ...] = ("percentile", "BCa", "basic")

#: AU-PRO grid: FPR levels evenly over [0, min(1, 2·fpr_limit)] and over the rest up to 1.
N_GRID = 2000
N_TAIL = 200

# 8-connectivity within each image, none across images (same as shiftad.evaluate.aupro).
_STRUCTURE_8_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_8_IN_PLANE[1] = True

# Resamples per block in the AU-PRO integration: bounds temporaries to ~block × grid floats.
_AUPRO_BLOCK = 250

NAN = float("nan")


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestSet:
    """One model's test results: image scores, labels, its decision threshold, optional pixel maps.

    ``scores`` (n,) finite; ``labels`` (n,) 0/1 (stored as bool); ``threshold`` the image-level
    threshold (anomalous when ``score >= threshold``); ``maps`` (n, h, w) float anomaly maps and
    ``masks`` (n, h, w) ground truth (stored as bool), either None when unavailable;
    ``pixel_images`` (n,) bool, the images whose pixels count in pixel metrics (None: all; an
    anomalous image whose mask is empty is left out, as `evaluate` does).
    """

    __test__ = False  # not a pytest test class, despite the name

    scores: np.ndarray
    labels: np.ndarray
    threshold: float
    maps: np.ndarray | None = None
    masks: np.ndarray | None = None
    pixel_images: np.ndarray | None = None

    def __post_init__(self) -> None:
        scores, labels = as_scores_labels(self.scores, self.labels)
        threshold = float(self.threshold)
        if math.isnan(threshold):
            raise ValueError("threshold is NaN")
        maps, masks = self.maps, self.masks
        if maps is not None:
            maps = np.asarray(maps)
            if maps.ndim != 3 or maps.shape[0] != len(scores):
                raise ValueError(f"maps must have shape (n, h, w) with n = {len(scores)} images, got {maps.shape}")
            if not np.issubdtype(maps.dtype, np.floating):
                maps = maps.astype(np.float64)
            if not np.isfinite(maps).all():
                raise ValueError("maps contain NaN or infinite values")
        if masks is not None:
            if maps is None:
                raise ValueError("masks given without maps")
            masks = np.asarray(masks)
            if masks.shape != maps.shape:
                raise ValueError(f"masks shape {masks.shape} does not match maps shape {maps.shape}")
            if masks.dtype != bool:
                masks = masks != 0
        pixel_images = self.pixel_images
        if pixel_images is not None:
            pixel_images = np.asarray(pixel_images, dtype=bool)
            if pixel_images.shape != (len(scores),):
                raise ValueError(f"pixel_images must have shape ({len(scores)},), got {pixel_images.shape}")
            if pixel_images.all():
                pixel_images = None
        object.__setattr__(self, "pixel_images", pixel_images)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "threshold", threshold)
        object.__setattr__(self, "maps", maps)
        object.__setattr__(self, "masks", masks)

    def __len__(self) -> int:
        return len(self.scores)

    def pixel_maps_and_masks(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The maps and masks of the images that count in pixel metrics."""
        if self.pixel_images is None or self.maps is None or self.masks is None:
            return self.maps, self.masks
        return self.maps[self.pixel_images], self.masks[self.pixel_images]


@dataclass(frozen=True)
class MetricIntervals:
    """Per metric: exact point estimate, interval bounds and the (B,) bootstrap replicates."""

    estimate: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    distribution: dict[str, np.ndarray]
    confidence: float
    method: str
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class PairedIntervals:
    """Per metric: both models' exact estimates, their difference a − b, its interval and p-value.

    ``distribution`` holds the (B,) replicates of the difference; ``distribution_a`` /
    ``distribution_b`` each model's replicates on the same resamples.
    """

    estimate_a: dict[str, float]
    estimate_b: dict[str, float]
    difference: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    p_value: dict[str, float]
    distribution: dict[str, np.ndarray]
    distribution_a: dict[str, np.ndarray]
    distribution_b: dict[str, np.ndarray]
    confidence: float
    method: str
    n_resamples: int
    seed: int


# --- vectorised metrics on weighted resamples --------------------------------------------


class ResampleMetrics:
    """Metrics of one ``TestSet`` for many resamples at once, each given as per-image weights.

    Precomputes what depends only on the data (comparison matrices, pixel pair counts, the
    AU-PRO grid), so that evaluating B resamples costs a few matrix products.
    ``weights`` is (B, n): how often each image occurs in each resample (any non-negative
    numbers work; integer multiplicities reproduce the materialised resample).
    """

    def __init__(self, test: TestSet, fpr_limit: float = 0.3, metrics: Sequence[str] = METRICS) -> None:
        unknown = set(metrics) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
        if not 0 < fpr_limit <= 1:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        self.metrics = tuple(metrics)
        self.n = len(test)
        self.fpr_limit = float(fpr_limit)
        labels, scores = test.labels, test.scores
        self._pos = np.flatnonzero(labels)
        self._neg = np.flatnonzero(~labels)
        both = len(self._pos) > 0 and len(self._neg) > 0
        self._image_ok = both

        if both and "image_auroc" in self.metrics:
            s_pos, s_neg = scores[self._pos, None], scores[None, self._neg]
            self._compare = (s_pos > s_neg) + 0.5 * (s_pos == s_neg)  # (n_pos, n_neg)

        if both and "image_auprc" in self.metrics:
            order = np.argsort(-scores, kind="stable")
            ordered = scores[order]
            self._ap_order = order
            self._ap_pos = labels[order].astype(np.float64)
            self._ap_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])

        predicted = scores >= test.threshold
        self._tp_vec = (predicted & labels).astype(np.float64)
        self._fp_vec = (predicted & ~labels).astype(np.float64)
        self._fn_vec = (~predicted & labels).astype(np.float64)

        want_pixel = {"pixel_auroc", "aupro"} & set(self.metrics)
        self._pixel_ok = False
        self._normal_sorted: np.ndarray | None = None  # every normal pixel's score, sorted (AU-PRO)
        self._defect_sorted: np.ndarray | None = None  # every defect pixel's score, sorted
        counted = test.pixel_maps_and_masks()[1]
        if want_pixel and counted is not None and counted.any() and not counted.all():
            self._pixel_ok = True
            self._prepare_pixels(test.maps, test.masks, want_pixel, test.pixel_images)

    # pixel precomputation ----------------------------------------------------------------

    def _prepare_pixels(self, maps: np.ndarray, masks: np.ndarray, wanted: set[str], pixel_images: np.ndarray | None) -> None:
        n = self.n
        # an image left out of pixel metrics has an empty mask: it adds no defect pixel, and no
        # normal pixel either
        normal_sorted = [np.sort(maps[j][~masks[j]]) if pixel_images is None or pixel_images[j] else maps[j][:0, 0]
                         for j in range(n)]
        self._n_normal = np.array([len(s) for s in normal_sorted], dtype=np.float64)
        defect_img = np.nonzero(masks)[0]
        defect_vals = maps[masks]
        self._n_defect = np.bincount(defect_img, minlength=n).astype(np.float64)

        if "pixel_auroc" in wanted:
            # Rows only for images that hold defect pixels; twice the win count (2·below + tied
            # = left + right insertion points) stays an integer, summed exactly in float64.
            self._defect_rows = np.flatnonzero(self._n_defect)
            row_of_img = np.full(n, -1)
            row_of_img[self._defect_rows] = np.arange(len(self._defect_rows))
            order = np.argsort(defect_vals, kind="stable")  # sorted needles search faster
            values, rows = defect_vals[order], row_of_img[defect_img[order]]
            self._defect_sorted = values
            twice_wins = np.zeros((len(self._defect_rows), n))
            for j, normals in enumerate(normal_sorted):
                if len(normals):
                    counts = np.searchsorted(normals, values, "left") + np.searchsorted(normals, values, "right")
                    twice_wins[:, j] = np.bincount(rows, weights=counts, minlength=len(self._defect_rows))
            self._twice_wins = twice_wins

        if "aupro" in wanted:
            # sorted runs, one per image: a merge (timsort finds the runs) is faster than a full sort
            all_normal = np.sort(np.concatenate(normal_sorted), kind="stable")
            self._normal_sorted = all_normal
            if self._defect_sorted is None:
                self._defect_sorted = np.sort(defect_vals)
            n_all = len(all_normal)
            reach = min(1.0, 2 * self.fpr_limit)
            levels = np.concatenate([np.linspace(0, reach, N_GRID), np.linspace(reach, 1, N_TAIL + 1)[1:]])
            # k normal pixels at or above the k-th highest normal score; k = 0 -> just above the top.
            k = np.unique(np.clip(np.ceil(levels * n_all).astype(np.int64), 1, n_all))
            top = np.nextafter(all_normal[-1], np.inf, dtype=all_normal.dtype)
            thresholds = np.unique(np.concatenate([[top], all_normal[n_all - k]]))[::-1]  # descending
            self._thresholds = thresholds
            self._normal_ge = np.stack(
                [len(s) - np.searchsorted(s, thresholds, "left") for s in normal_sorted]
            ).astype(np.float64)  # (n, T)
            regions, n_regions = ndimage.label(masks, structure=_STRUCTURE_8_IN_PLANE)
            region_of_pixel = regions[masks] - 1
            self._region_img = np.empty(n_regions, dtype=np.intp)
            self._region_img[region_of_pixel] = defect_img
            order = np.lexsort((defect_vals, region_of_pixel))
            vals_by_region = defect_vals[order]
            bounds = np.searchsorted(region_of_pixel[order], np.arange(n_regions + 1))
            overlap = np.empty((n_regions, len(thresholds)))
            for r in range(n_regions):
                vals = vals_by_region[bounds[r] : bounds[r + 1]]
                overlap[r] = (len(vals) - np.searchsorted(vals, thresholds, "left")) / len(vals)
            self._overlap = overlap  # (R, T)

    # metrics ------------------------------------------------------------------------------

    def __call__(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Each requested metric as a (B,) array for the (B, n) ``weights``."""
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != self.n:
            raise ValueError(f"weights must have shape (B, {self.n}), got {w.shape}")
        nan = np.full(len(w), NAN)
        compute = {
            "image_auroc": self._image_auroc if self._image_ok else None,
            "image_auprc": self._image_auprc if self._image_ok else None,
            "f1": self._f1,
            "pixel_auroc": self._pixel_auroc if self._pixel_ok else None,
            "aupro": self._aupro if self._pixel_ok else None,
        }
        return {m: (compute[m](w) if compute[m] is not None else nan.copy()) for m in self.metrics}

    def stack(self, weights: np.ndarray) -> np.ndarray:
        """The requested metrics as one (n_metrics, B) array, in ``self.metrics`` order."""
        values = self(weights)
        return np.stack([values[m] for m in self.metrics])

    def _image_auroc(self, w: np.ndarray) -> np.ndarray:
        w_pos, w_neg = w[:, self._pos], w[:, self._neg]
        wins = np.einsum("bi,bi->b", w_pos @ self._compare, w_neg)
        return _ratio(wins, w_pos.sum(1) * w_neg.sum(1))

    def _image_auprc(self, w: np.ndarray) -> np.ndarray:
        ordered = w[:, self._ap_order]
        tp_step = np.add.reduceat(ordered * self._ap_pos, self._ap_starts, axis=1)
        fp_step = np.add.reduceat(ordered * (1.0 - self._ap_pos), self._ap_starts, axis=1)
        tp, fp = np.cumsum(tp_step, axis=1), np.cumsum(fp_step, axis=1)
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        # AP = Σ (R_k − R_{k−1}) P_k with R = tp / total positives
        return _ratio(np.einsum("bk,bk->b", tp_step, precision), tp[:, -1])

    def _f1(self, w: np.ndarray) -> np.ndarray:
        tp, fp, fn = w @ self._tp_vec, w @ self._fp_vec, w @ self._fn_vec
        return np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=tp > 0)

    @property
    def counts_pixel_wins(self) -> bool:
        return self._pixel_ok and hasattr(self, "_twice_wins")

    def sorted_negated_pixels(self) -> np.ndarray | None:
        """`evaluate.aupro.sorted_negated` of the test maps (every pixel negated, ascending) from the
        sorted normal and defect pixels held for AU-PRO: two sorted runs merged instead of a full
        sort of every pixel. None when AU-PRO was not prepared."""
        if self._normal_sorted is None or self._defect_sorted is None or not np.issubdtype(self._normal_sorted.dtype, np.floating):
            return None
        merged = np.concatenate([np.negative(self._normal_sorted[::-1]), np.negative(self._defect_sorted[::-1])])
        merged.sort(kind="stable")
        return merged

    def pixel_auroc_of_the_data(self) -> float:
        """Pixel AUROC of the test set itself (every image once): twice the win count, summed
        exactly in float64, over 2 · defect · normal pixels: `exact_auroc`'s value bit for bit."""
        return float(self._pixel_auroc(np.ones((1, self.n)))[0])

    def _pixel_auroc(self, w: np.ndarray) -> np.ndarray:
        twice = np.einsum("bi,bi->b", w[:, self._defect_rows] @ self._twice_wins, w)
        return _ratio(twice, 2 * (w @ self._n_defect) * (w @ self._n_normal))

    def _aupro(self, w: np.ndarray) -> np.ndarray:
        out = np.empty(len(w))
        for start in range(0, len(w), _AUPRO_BLOCK):
            block = w[start : start + _AUPRO_BLOCK]
            out[start : start + _AUPRO_BLOCK] = self._aupro_block(block)
        return out

    def _aupro_block(self, w: np.ndarray) -> np.ndarray:
        b = len(w)
        normal_total = w @ self._n_normal
        w_region = w[:, self._region_img]
        region_total = w_region.sum(1)
        ok = (normal_total > 0) & (region_total > 0)
        x = np.empty((b, len(self._thresholds) + 2))
        y = np.empty_like(x)
        x[:, 0] = y[:, 0] = 0.0
        x[:, -1] = y[:, -1] = 1.0
        with np.errstate(invalid="ignore", divide="ignore"):
            np.divide(w @ self._normal_ge, normal_total[:, None], out=x[:, 1:-1])
            np.divide(w_region @ self._overlap, region_total[:, None], out=y[:, 1:-1])
        np.clip(x, None, 1.0, out=x)
        np.clip(y, None, 1.0, out=y)
        area = _trapezoid_rows(x, y, self.fpr_limit) / self.fpr_limit
        area[~ok] = NAN
        return area


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den == 0 (metric undefined on that resample)."""
    return np.divide(num, den, out=np.full_like(num, NAN, dtype=np.float64), where=den > 0)


def _trapezoid_rows(x: np.ndarray, y: np.ndarray, x_max: float) -> np.ndarray:
    """Row-wise trapezoid area under y(x) up to x_max, interpolating at x_max (x non-decreasing).

    Same as ``evaluate.aupro.trapezoid``: segments beyond x_max are dropped, the one crossing it
    is cut at x_max by linear interpolation.
    """
    x0, x1, y0, y1 = x[:, :-1], x[:, 1:], y[:, :-1], y[:, 1:]
    x1c = np.minimum(x1, x_max)
    width = x1c - x0
    span = x1 - x0
    with np.errstate(invalid="ignore", divide="ignore"):
        y1c = np.where(x1 > x_max, y0 + (y1 - y0) * (x_max - x0) / span, y1)
    pieces = np.where(width > 0, 0.5 * (y0 + y1c) * width, 0.0)
    return pieces.sum(1)


# --- resampling ----------------------------------------------------------------------------


def _check_options(n_resamples: int, confidence: float, method: str) -> str:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    lookup = {m.lower(): m for m in METHODS}
    if method.lower() not in lookup:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return lookup[method.lower()]


def _run_bootstrap(
    labels: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    n_resamples: int,
    confidence: float,
    seed: int,
    method: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified bootstrap of a (B, n)-weights -> (K, B) statistic through scipy.stats.bootstrap.

    Returns the replicates (K, B) and the interval bounds (K,), (K,).
    """
    n = len(labels)
    strata, fixed = [], []
    for cls in (False, True):  # normals first, then anomalous: fixes the order of the draws
        idx = np.flatnonzero(labels == cls)
        (strata if len(idx) >= 2 else fixed).append(idx)
    fixed_idx = np.concatenate(fixed) if fixed else np.empty(0, dtype=np.intp)

    if not strata:  # every class has at most one image: every resample is the sample itself
        dist = np.asarray(statistic(np.ones((n_resamples, n))), dtype=np.float64)
        return dist, dist[:, 0].copy(), dist[:, 0].copy()

    def weights_statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        lead = samples[0].shape[:-1]  # () for the original sample, (batch,) for resamples
        batch = int(np.prod(lead, dtype=np.int64))
        w = np.zeros((batch, n))
        offsets = (np.arange(batch) * n)[:, None]
        for sample in samples:
            flat = (sample.reshape(batch, -1) + offsets).ravel()
            w += np.bincount(flat, minlength=batch * n).reshape(batch, n)
        w[:, fixed_idx] = 1.0
        values = np.asarray(statistic(w), dtype=np.float64)
        return values.reshape(values.shape[:1] + lead)

    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # BCa cannot handle a constant or NaN distribution (0/0 in its acceleration, NaN
        # bounds); such cases are handled below instead of warned about.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(strata),
            weights_statistic,
            n_resamples=n_resamples,
            vectorized=True,
            paired=False,
            axis=-1,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    dist = np.asarray(result.bootstrap_distribution, dtype=np.float64)
    low = np.array(result.confidence_interval.low, dtype=np.float64, ndmin=1)
    high = np.array(result.confidence_interval.high, dtype=np.float64, ndmin=1)
    # A constant distribution (e.g. identical models, or F1 = 1 everywhere): the interval is
    # that constant (BCa would give NaN).
    constant = np.all(dist == dist[:, :1], axis=1)
    low[constant] = high[constant] = dist[constant, 0]
    # Any NaN replicate: the interval is undefined.
    undefined = np.isnan(dist).any(axis=1)
    low[undefined] = high[undefined] = NAN
    failed = ~undefined & (np.isnan(low) | np.isnan(high))
    if failed.any():
        warnings.warn(
            f"the {method} interval could not be computed for {int(failed.sum())} statistic(s); "
            "consider method='percentile'",
            RuntimeWarning,
            stacklevel=3,
        )
    return dist, low, high


def stratified_weights(labels: np.ndarray, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """The (B, n) per-image multiplicities of the resamples that a bootstrap call with these
    labels and ``seed`` uses (for any metric and method): lets one inspect or reuse them."""
    labels = as_scores_labels(np.zeros(len(np.asarray(labels))), labels)[1]
    _check_options(n_resamples, 0.95, "percentile")
    dist, _, _ = _run_bootstrap(labels, lambda w: w.T, n_resamples, 0.95, seed, "percentile")
    return dist.T.copy()


def _point_estimates(test: TestSet, fpr_limit: float, engine: "ResampleMetrics | None" = None) -> dict[str, float]:
    """Exact metrics on the original data, the same functions as the evaluate stage. With an
    `engine` that has counted the pixel wins, pixel AUROC comes from those counts: the same
    integers `exact_auroc` counts and one division, so the same float without sorting every
    pixel again."""
    image = image_metrics(test.scores, test.labels, test.threshold)
    maps, masks = test.pixel_maps_and_masks()
    if engine is not None and engine.counts_pixel_wins:
        pixel = {"pixel_auroc": engine.pixel_auroc_of_the_data(),
                 "aupro": au_pro(maps, masks, fpr_limit=fpr_limit, neg_sorted=engine.sorted_negated_pixels())}
    else:
        pixel = pixel_metrics(maps, masks, fpr_limit=fpr_limit)
    return {
        "image_auroc": float(image["image_auroc"]),
        "image_auprc": float(image["image_auprc"]),
        "f1": float(image["f1"]),
        "pixel_auroc": float(pixel["pixel_auroc"]),
        "aupro": float(pixel["aupro"]),
    }


def _fill(available: Sequence[str], rows: np.ndarray, n_resamples: int) -> dict[str, np.ndarray]:
    out = {m: np.full(n_resamples, NAN) for m in METRICS}
    out.update({m: rows[k] for k, m in enumerate(available)})
    return out


def _fill_scalar(available: Sequence[str], values: np.ndarray) -> dict[str, float]:
    out = dict.fromkeys(METRICS, NAN)
    out.update({m: float(values[k]) for k, m in enumerate(available)})
    return out


def bootstrap_metrics(
    test: TestSet,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    fpr_limit: float = 0.3,
) -> MetricIntervals:
    """Exact point estimates of all ``METRICS`` with stratified bootstrap intervals.

    ``method``: 'percentile' (default), 'BCa' or 'basic' (scipy.stats.bootstrap's methods).
    Metrics undefined on the data (see module docstring) are NaN throughout.
    """
    method = _check_options(n_resamples, confidence, method)
    engine = ResampleMetrics(test, fpr_limit=fpr_limit)  # computes what the data defines; the rest is NaN
    estimate = _point_estimates(test, fpr_limit, engine)
    available = [m for m in METRICS if math.isfinite(estimate[m])]

    def statistic(weights: np.ndarray) -> np.ndarray:
        values = engine(weights)
        return np.stack([values[m] for m in available])

    dist, low, high = _run_bootstrap(test.labels, statistic, n_resamples, confidence, seed, method)
    return MetricIntervals(
        estimate=estimate,
        low=_fill_scalar(available, low),
        high=_fill_scalar(available, high),
        distribution=_fill(available, dist, n_resamples),
        confidence=confidence,
        method=method,
        n_resamples=int(n_resamples),
        seed=seed,
    )


THRESHOLD_METRICS: tuple[str, ...] = ("f1",)  # the metrics a decision threshold enters; the others are threshold-free


def rethreshold(result: MetricIntervals, test: TestSet) -> MetricIntervals:
    """`result` of the same scores, labels and maps under `test.threshold`: the threshold-free
    metrics are the same numbers by definition and are kept; the threshold's metrics (F1) are
    bootstrapped on the same resamples (`result`'s seed and method), so the outcome equals a
    full `bootstrap_metrics(test, ...)` bit for bit at a fraction of its cost (no pixel metrics)."""
    engine = ResampleMetrics(TestSet(scores=test.scores, labels=test.labels, threshold=test.threshold), metrics=THRESHOLD_METRICS)
    estimate = {**result.estimate, "f1": float(image_metrics(test.scores, test.labels, test.threshold)["f1"])}
    available = [m for m in THRESHOLD_METRICS if math.isfinite(estimate[m])]
    low, high, distribution = dict(result.low), dict(result.high), dict(result.distribution)
    for m in THRESHOLD_METRICS:
        low[m] = high[m] = NAN
        distribution[m] = np.full(result.n_resamples, NAN)
    if available:
        dist, lo, hi = _run_bootstrap(test.labels, lambda w: np.stack([engine(w)[m] for m in available]), result.n_resamples,
                                      result.confidence, result.seed, result.method)
        for k, m in enumerate(available):
            low[m], high[m], distribution[m] = float(lo[k]), float(hi[k]), dist[k]
    return MetricIntervals(estimate=estimate, low=low, high=high, distribution=distribution, confidence=result.confidence,
                           method=result.method, n_resamples=result.n_resamples, seed=result.seed)


def _check_same_images(a: TestSet, b: TestSet) -> None:
    if len(a) != len(b) or not np.array_equal(a.labels, b.labels):
        raise ValueError("paired bootstrap needs the same images in the same order: the labels of a and b differ")
    if a.masks is not None and b.masks is not None and not np.array_equal(a.masks, b.masks):
        raise ValueError("paired bootstrap needs the same images in the same order: the masks of a and b differ")
    if a.masks is not None and b.masks is not None and not np.array_equal(
            np.ones(len(a), bool) if a.pixel_images is None else a.pixel_images,
            np.ones(len(b), bool) if b.pixel_images is None else b.pixel_images):
        raise ValueError("paired bootstrap needs the same images in the same order: the images left out of pixel metrics differ")


def paired_bootstrap(
    a: TestSet,
    b: TestSet,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    fpr_limit: float = 0.3,
) -> PairedIntervals:
    """Compare two models scored on the same images: difference a − b per metric, with its
    interval and a two-sided bootstrap p-value, both models evaluated on the SAME resamples
    (which is what makes the comparison paired and far tighter than two separate intervals).

    p-value: ``bootstrap_p_value`` of the difference replicates. A metric undefined for either
    model is NaN throughout. Raises ValueError when labels (or available masks) differ.
    """
    method = _check_options(n_resamples, confidence, method)
    _check_same_images(a, b)
    est_a, est_b = _point_estimates(a, fpr_limit), _point_estimates(b, fpr_limit)
    available = [m for m in METRICS if math.isfinite(est_a[m]) and math.isfinite(est_b[m])]
    engine_a = ResampleMetrics(a, fpr_limit=fpr_limit, metrics=available)
    engine_b = ResampleMetrics(b, fpr_limit=fpr_limit, metrics=available)

    def statistic(w: np.ndarray) -> np.ndarray:
        va, vb = engine_a.stack(w), engine_b.stack(w)
        return np.concatenate([va - vb, va, vb])

    dist, low, high = _run_bootstrap(a.labels, statistic, n_resamples, confidence, seed, method)
    k = len(available)
    differences = _fill(available, dist[:k], n_resamples)
    return PairedIntervals(
        estimate_a=est_a,
        estimate_b=est_b,
        difference={m: est_a[m] - est_b[m] for m in METRICS},
        low=_fill_scalar(available, low[:k]),
        high=_fill_scalar(available, high[:k]),
        p_value={m: bootstrap_p_value(differences[m]) for m in METRICS},
        distribution=differences,
        distribution_a=_fill(available, dist[k : 2 * k], n_resamples),
        distribution_b=_fill(available, dist[2 * k :], n_resamples),
        confidence=confidence,
        method=method,
        n_resamples=int(n_resamples),
        seed=seed,
    )


# --- helpers on replicate arrays ------------------------------------------------------------


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value for "difference = 0": ``2·min(P*(Δ ≤ 0), P*(Δ ≥ 0))``, each
    tail estimated as ``(1 + count) / (B + 1)`` (never 0: the smallest attainable p is
    2/(B+1)), capped at 1. NaN when any replicate is NaN."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    if d.size == 0 or np.isnan(d).any():
        return NAN
    n = d.size
    below = (1 + np.count_nonzero(d <= 0)) / (n + 1)
    above = (1 + np.count_nonzero(d >= 0)) / (n + 1)
    return float(min(1.0, 2 * min(below, above)))


def percentile_interval(distribution: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of replicates (linear quantiles, as scipy.stats.bootstrap's
    'percentile'); (NaN, NaN) when any replicate is NaN."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    d = np.asarray(distribution, dtype=np.float64).ravel()
    if d.size == 0 or np.isnan(d).any():
        return NAN, NAN
    alpha = (1 - confidence) / 2
    low, high = np.quantile(d, [alpha, 1 - alpha])
    return float(low), float(high)


def macro_distribution(distributions: Sequence[np.ndarray]) -> np.ndarray:
    """Replicates of the macro mean over categories: replicate b = mean of the categories'
    replicate b. Valid because categories are resampled independently -- give each category
    its own seed, or identical class counts would reuse the same index pattern.

    Categories whose replicates are all NaN (metric undefined there) are left out; when all
    are, the result is all NaN. All arrays must have the same length B.
    """
    arrays = [np.asarray(d, dtype=np.float64).ravel() for d in distributions]
    if not arrays:
        raise ValueError("no distributions given")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"all distributions need the same number of replicates, got lengths {sorted(lengths)}")
    kept = [a for a in arrays if not np.isnan(a).all()]
    if not kept:
        return np.full(lengths.pop(), NAN)
    return np.mean(np.stack(kept), axis=0)


def macro_interval(distributions: Sequence[np.ndarray], confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the macro mean over categories (see ``macro_distribution``)."""
    return percentile_interval(macro_distribution(distributions), confidence)
