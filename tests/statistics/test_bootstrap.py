"""Stratified bootstrap: resamples, vectorised metrics against materialised resamples, intervals."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.special import ndtr
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from shiftad.evaluate.aupro import au_pro, sorted_negated
from shiftad.evaluate.metrics import exact_auroc, image_metrics, pixel_metrics
from shiftad.statistics.bootstrap import (
    METRICS,
    ResampleMetrics,
    TestSet,
    bootstrap_metrics,
    bootstrap_p_value,
    macro_distribution,
    macro_interval,
    paired_bootstrap,
    percentile_interval,
    rethreshold,
    stratified_weights,
)


def realistic(n: int = 24, size: int = 64, seed: int = 0, decimals: int | None = None) -> TestSet:
    """Smooth noise maps; anomalous images get 1-3 blob defects (some touching) scored higher."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=bool)
    labels[rng.permutation(n)[: n // 2]] = True
    maps = gaussian_filter(rng.normal(size=(n, size, size)), sigma=(0, 2, 2))
    masks = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[:size, :size]
    for i in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(0, size, 2)
            radius = rng.integers(2, size // 6)
            masks[i] |= (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        maps[i] += rng.uniform(0.05, 0.4) * gaussian_filter(masks[i].astype(float), 1.5)
    if decimals is not None:  # ties within and across images
        maps = np.round(maps, decimals)
    maps = maps.astype(np.float32)
    scores = maps.reshape(n, -1).max(axis=1).astype(np.float64)
    if decimals is not None:
        scores = np.round(scores, 1)
    return TestSet(scores, labels, float(np.median(scores)), maps, masks)


def materialise(weights_row: np.ndarray) -> np.ndarray:
    """Image indices of one resample, each repeated as often as it was drawn."""
    return np.repeat(np.arange(len(weights_row)), weights_row.astype(int))


# --- TestSet ----------------------------------------------------------------------------------


def test_testset_validates_shapes() -> None:
    scores, labels = np.arange(4.0), np.array([0, 1, 0, 1])
    maps = np.zeros((4, 5, 5))
    with pytest.raises(ValueError, match="4 scores but 3 labels"):
        TestSet(scores, labels[:3], 0.5)
    with pytest.raises(ValueError, match=r"maps must have shape \(n, h, w\)"):
        TestSet(scores, labels, 0.5, maps=np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="masks shape"):
        TestSet(scores, labels, 0.5, maps=maps, masks=np.zeros((4, 5, 6)))
    with pytest.raises(ValueError, match="masks given without maps"):
        TestSet(scores, labels, 0.5, masks=np.zeros((4, 5, 5)))
    with pytest.raises(ValueError, match="threshold is NaN"):
        TestSet(scores, labels, float("nan"))
    test = TestSet(scores, labels, 1, maps=maps, masks=np.zeros((4, 5, 5), dtype=np.uint8))
    assert test.labels.dtype == bool and test.masks.dtype == bool and test.threshold == 1.0


# --- resamples --------------------------------------------------------------------------------


def test_resamples_are_stratified_and_deterministic() -> None:
    labels = np.array([0] * 7 + [1] * 5)
    weights = stratified_weights(labels, n_resamples=300, seed=3)
    assert weights.shape == (300, 12)
    assert np.array_equal(weights, np.round(weights)) and (weights >= 0).all()
    assert (weights[:, labels == 0].sum(axis=1) == 7).all()
    assert (weights[:, labels == 1].sum(axis=1) == 5).all()
    assert np.array_equal(weights, stratified_weights(labels, n_resamples=300, seed=3))
    assert not np.array_equal(weights, stratified_weights(labels, n_resamples=300, seed=4))
    # resamples really vary: every image is left out of some resample
    assert ((weights == 0).sum(axis=0) > 0).all()


def test_a_single_image_class_is_held_fixed() -> None:
    labels = np.array([0, 0, 0, 0, 1])
    weights = stratified_weights(labels, n_resamples=50, seed=0)
    assert (weights[:, 4] == 1).all() and (weights[:, :4].sum(axis=1) == 4).all()
    result = bootstrap_metrics(TestSet(np.array([0.1, 0.5, 0.2, 0.9, 0.7]), labels, 0.6), n_resamples=50)
    assert result.estimate["image_auroc"] == 0.75
    assert np.isfinite(result.distribution["image_auroc"]).all()


def test_bootstrap_uses_exactly_those_resamples_for_every_metric_and_method() -> None:
    test = realistic(seed=1)
    weights = stratified_weights(test.labels, n_resamples=40, seed=7)
    expected = ResampleMetrics(test)(weights)
    for method in ("percentile", "basic", "BCa"):
        result = bootstrap_metrics(test, n_resamples=40, seed=7, method=method)
        for metric in METRICS:
            np.testing.assert_allclose(result.distribution[metric], expected[metric], rtol=1e-12)


@pytest.mark.parametrize("method", ["percentile", "BCa"])
def test_rethreshold_equals_a_full_bootstrap_under_the_other_threshold(method: str) -> None:
    """Threshold-only keeps no adaptation's threshold-free metrics and bootstraps F1 alone: it must
    be the full bootstrap of the other threshold, bit for bit (the same resamples)."""
    test = realistic(seed=3)
    full = bootstrap_metrics(test, n_resamples=200, seed=11, method=method)
    other = TestSet(test.scores, test.labels, float(np.quantile(test.scores, 0.3)), test.maps, test.masks)
    expected = bootstrap_metrics(other, n_resamples=200, seed=11, method=method)
    got = rethreshold(full, other)
    assert got.estimate["f1"] != full.estimate["f1"]  # the threshold moved F1, or this test shows nothing
    for metric in METRICS:
        assert got.estimate[metric] == expected.estimate[metric]
        assert (got.low[metric], got.high[metric]) == (expected.low[metric], expected.high[metric])
        np.testing.assert_array_equal(got.distribution[metric], expected.distribution[metric])
    assert (got.seed, got.method, got.n_resamples) == (full.seed, full.method, full.n_resamples)


# --- vectorised metrics against materialised resamples -----------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorised_metrics_equal_references_on_materialised_resamples(seed: int) -> None:
    test = realistic(n=20, size=48, seed=seed, decimals=2)
    assert len(np.unique(test.scores)) < len(test.scores)  # ties present
    weights = stratified_weights(test.labels, n_resamples=20, seed=seed)
    values = ResampleMetrics(test)(weights)
    for b, row in enumerate(weights):
        idx = materialise(row)
        labels, scores = test.labels[idx], test.scores[idx]
        assert values["image_auroc"][b] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert values["image_auprc"][b] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
        assert values["image_auprc"][b] == pytest.approx(
            average_precision_score(test.labels, test.scores, sample_weight=row), abs=1e-12
        )
        assert values["f1"][b] == pytest.approx(f1_score(labels, scores >= test.threshold), abs=1e-12)
        assert values["pixel_auroc"][b] == pytest.approx(exact_auroc(test.maps[idx], test.masks[idx]), abs=1e-12)
        assert values["aupro"][b] == pytest.approx(au_pro(test.maps[idx], test.masks[idx]), abs=2e-3)


def test_f1_is_zero_without_true_positive() -> None:
    test = TestSet(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1]), threshold=5.0)
    assert (ResampleMetrics(test)(np.ones((3, 4)))["f1"] == 0).all()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("fpr_limit", [0.05, 0.3, 1.0])
def test_aupro_grid_is_within_2e3_of_exact(seed: int, fpr_limit: float) -> None:
    test = realistic(n=16, size=96, seed=seed)
    grid = ResampleMetrics(test, fpr_limit=fpr_limit, metrics=["aupro"])(np.ones((1, len(test))))["aupro"][0]
    assert abs(grid - au_pro(test.maps, test.masks, fpr_limit=fpr_limit)) < 2e-3


def test_unit_weights_give_the_exact_values_elsewhere() -> None:
    test = realistic(seed=5, decimals=2)
    values = ResampleMetrics(test)(np.ones((1, len(test))))
    exact = image_metrics(test.scores, test.labels, test.threshold) | pixel_metrics(test.maps, test.masks)
    for metric in ("image_auroc", "image_auprc", "f1", "pixel_auroc"):
        assert values[metric][0] == pytest.approx(exact[metric], abs=1e-12)


# --- bootstrap_metrics --------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "decimals"), [(2, None), (5, 2), (9, 1)])  # rounded maps: many tied pixels
def test_point_estimates_are_the_evaluate_stage_numbers(seed: int, decimals: int | None) -> None:
    test = realistic(seed=seed, decimals=decimals)
    result = bootstrap_metrics(test, n_resamples=20, fpr_limit=0.2)
    image = image_metrics(test.scores, test.labels, test.threshold)
    pixel = pixel_metrics(test.maps, test.masks, fpr_limit=0.2)
    for metric in ("image_auroc", "image_auprc", "f1"):
        assert result.estimate[metric] == image[metric]
    assert result.estimate["pixel_auroc"] == pixel["pixel_auroc"] == exact_auroc(test.maps, test.masks)
    assert result.estimate["aupro"] == pixel["aupro"] == au_pro(test.maps, test.masks, fpr_limit=0.2)


def test_anomalous_images_with_empty_masks_are_left_out_of_pixel_metrics() -> None:
    """Their pixels are neither defect nor normal: estimates and every resample equal the
    metrics over the other images' pixels (image metrics still count them)."""
    full = realistic(seed=8)
    anomalous = np.flatnonzero(full.labels)
    masks = full.masks.copy()
    masks[anomalous[:3]] = False  # annotated at image level only
    keep = np.ones(len(full), bool)
    keep[anomalous[:3]] = False
    test = TestSet(full.scores, full.labels, full.threshold, full.maps, masks, pixel_images=keep)
    result = bootstrap_metrics(test, n_resamples=20, fpr_limit=0.2)
    assert result.estimate["pixel_auroc"] == exact_auroc(full.maps[keep], masks[keep]) != exact_auroc(full.maps, masks)
    assert result.estimate["aupro"] == au_pro(full.maps[keep], masks[keep], fpr_limit=0.2)
    assert result.estimate["image_auroc"] == image_metrics(full.scores, full.labels, full.threshold)["image_auroc"]
    weights = stratified_weights(test.labels, 4, np.random.default_rng(0))
    values = ResampleMetrics(test)(weights)
    for b, row in enumerate(weights):
        idx = materialise(row)
        idx = idx[keep[idx]]
        assert values["pixel_auroc"][b] == pytest.approx(exact_auroc(full.maps[idx], masks[idx]), abs=1e-12)


@pytest.mark.parametrize("decimals", [None, 1])
def test_sorted_pixels_from_the_engine_are_a_full_sort_of_the_maps(decimals: int | None) -> None:
    """The engine's merge of its sorted normal and defect pixels is what AU-PRO's one full sort gives."""
    test = realistic(seed=6, decimals=decimals)
    engine = ResampleMetrics(test)
    np.testing.assert_array_equal(engine.sorted_negated_pixels(), sorted_negated(test.maps))
    assert ResampleMetrics(test, metrics=("image_auroc", "pixel_auroc")).sorted_negated_pixels() is None  # no AU-PRO: nothing held


def test_percentile_bounds_are_the_distribution_quantiles() -> None:
    result = bootstrap_metrics(realistic(seed=3), n_resamples=200, confidence=0.9)
    for metric in METRICS:
        low, high = percentile_interval(result.distribution[metric], 0.9)
        assert result.low[metric] == pytest.approx(low, abs=1e-12)
        assert result.high[metric] == pytest.approx(high, abs=1e-12)
        assert result.low[metric] - 2e-3 <= result.estimate[metric] <= result.high[metric] + 2e-3


@pytest.mark.parametrize("method", ["BCa", "basic", "bca"])
def test_other_methods_give_finite_intervals(method: str) -> None:
    result = bootstrap_metrics(realistic(seed=4), n_resamples=200, method=method)
    for metric in METRICS:
        assert result.low[metric] < result.high[metric]
        assert result.low[metric] - 0.05 < result.estimate[metric] < result.high[metric] + 0.05


def test_invalid_options_raise() -> None:
    test = TestSet(np.arange(4.0), np.array([0, 1, 0, 1]), 1.0)
    with pytest.raises(ValueError, match="method"):
        bootstrap_metrics(test, method="normal")
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_metrics(test, confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_metrics(test, n_resamples=0)


def test_pixel_metrics_are_nan_without_masks_or_defects() -> None:
    test = realistic(seed=0)
    for masks in (None, np.zeros_like(test.masks)):
        result = bootstrap_metrics(TestSet(test.scores, test.labels, test.threshold, test.maps, masks), n_resamples=30)
        for metric in ("pixel_auroc", "aupro"):
            assert all(math.isnan(r[metric]) for r in (result.estimate, result.low, result.high))
            assert np.isnan(result.distribution[metric]).all() and result.distribution[metric].shape == (30,)
        assert np.isfinite([result.low["image_auroc"], result.high["image_auroc"]]).all()


def test_image_ranking_metrics_are_nan_with_one_class() -> None:
    result = bootstrap_metrics(TestSet(np.arange(6.0), np.zeros(6, dtype=int), 3.0), n_resamples=30)
    assert math.isnan(result.estimate["image_auroc"]) and math.isnan(result.low["image_auprc"])
    assert result.estimate["f1"] == result.low["f1"] == result.high["f1"] == 0.0


def test_interval_coverage_of_the_true_auroc() -> None:
    """Normal N(0,1) vs anomalous N(d,1): true AUROC = Φ(d/√2); 95% percentile intervals
    should cover it in about 95% of repetitions."""
    d, n, repetitions = 1.0, 40, 200
    true_auc = float(ndtr(d / math.sqrt(2)))
    rng = np.random.default_rng(2024)
    labels = np.r_[np.zeros(n), np.ones(n)]
    covered = 0
    start = time.perf_counter()
    for rep in range(repetitions):
        scores = np.r_[rng.normal(0, 1, n), rng.normal(d, 1, n)]
        result = bootstrap_metrics(TestSet(scores, labels, d / 2), n_resamples=1000, seed=rep)
        covered += result.low["image_auroc"] <= true_auc <= result.high["image_auroc"]
    fraction = covered / repetitions
    print(f"coverage {fraction:.3f} in {time.perf_counter() - start:.1f} s")
    assert 0.90 <= fraction <= 0.99


# --- paired bootstrap ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["percentile", "BCa", "basic"])
def test_identical_models_differ_by_exactly_zero(method: str) -> None:
    test = realistic(seed=6)
    result = paired_bootstrap(test, test, n_resamples=200, method=method)
    for metric in METRICS:
        assert result.difference[metric] == 0.0
        assert result.low[metric] == result.high[metric] == 0.0
        assert result.p_value[metric] == 1.0
        assert (result.distribution[metric] == 0).all()


def test_a_clearly_better_model_is_significant() -> None:
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(50), np.ones(50)]
    noise = rng.normal(size=100)
    good = TestSet(noise + 2.5 * labels, labels, 1.25)
    weak = TestSet(rng.normal(size=100) + 0.3 * labels, labels, 0.15)
    result = paired_bootstrap(good, weak, n_resamples=1000, seed=1)
    assert result.difference["image_auroc"] > 0.3
    assert result.p_value["image_auroc"] < 0.01 and result.low["image_auroc"] > 0
    swapped = paired_bootstrap(weak, good, n_resamples=1000, seed=1)
    assert swapped.p_value["image_auroc"] == result.p_value["image_auroc"]
    np.testing.assert_allclose(swapped.distribution["image_auroc"], -result.distribution["image_auroc"])


def test_paired_replicates_share_the_resamples_of_single_runs() -> None:
    a, b = realistic(seed=7), realistic(seed=8)
    b = TestSet(b.scores, a.labels, b.threshold, b.maps, a.masks)  # same images, another model
    paired = paired_bootstrap(a, b, n_resamples=50, seed=11)
    single_a = bootstrap_metrics(a, n_resamples=50, seed=11)
    single_b = bootstrap_metrics(b, n_resamples=50, seed=11)
    for metric in METRICS:
        np.testing.assert_allclose(paired.distribution_a[metric], single_a.distribution[metric], rtol=1e-12)
        np.testing.assert_allclose(paired.distribution_b[metric], single_b.distribution[metric], rtol=1e-12)
        np.testing.assert_allclose(
            paired.distribution[metric], single_a.distribution[metric] - single_b.distribution[metric], atol=1e-12
        )
        assert paired.difference[metric] == single_a.estimate[metric] - single_b.estimate[metric]


def test_paired_bootstrap_rejects_different_images() -> None:
    a = TestSet(np.arange(6.0), np.array([0, 1, 0, 1, 0, 1]), 2.0)
    with pytest.raises(ValueError, match="labels of a and b differ"):
        paired_bootstrap(a, TestSet(np.arange(6.0), np.array([1, 0, 0, 1, 0, 1]), 2.0))
    with pytest.raises(ValueError, match="labels of a and b differ"):
        paired_bootstrap(a, TestSet(np.arange(5.0), np.array([0, 1, 0, 1, 0]), 2.0))
    masks = np.zeros((6, 4, 4), dtype=bool)
    masks[1, 0, 0] = True
    other = masks.copy()
    other[3, 1, 1] = True
    with pytest.raises(ValueError, match="masks of a and b differ"):
        paired_bootstrap(
            TestSet(a.scores, a.labels, 2.0, np.zeros((6, 4, 4)), masks),
            TestSet(a.scores, a.labels, 2.0, np.zeros((6, 4, 4)), other),
        )


def test_bootstrap_p_value_uses_the_plus_one_correction() -> None:
    assert bootstrap_p_value(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(-np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p_value(np.zeros(10)) == 1.0
    # 3 of 9 replicates <= 0: 2 · (1 + 3) / 10
    assert bootstrap_p_value(np.array([-1, -1, -1, 1, 1, 1, 1, 1, 1.0])) == pytest.approx(0.8)
    assert math.isnan(bootstrap_p_value(np.array([1.0, np.nan])))


# --- macro helpers ------------------------------------------------------------------------------


def test_macro_distribution_averages_replicates_and_skips_undefined_categories() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500)
    undefined = np.full(500, np.nan)
    np.testing.assert_allclose(macro_distribution([a, b, undefined]), (a + b) / 2)
    assert macro_interval([a, b, undefined], 0.9) == percentile_interval((a + b) / 2, 0.9)
    assert np.isnan(macro_distribution([undefined, undefined])).all()
    assert all(math.isnan(v) for v in macro_interval([undefined]))
    with pytest.raises(ValueError, match="same number of replicates"):
        macro_distribution([a, b[:10]])


def test_macro_interval_of_categories_is_narrower_than_each() -> None:
    results = [bootstrap_metrics(realistic(seed=s), n_resamples=300, seed=100 + s) for s in range(4)]
    distributions = [r.distribution["image_auroc"] for r in results]
    low, high = macro_interval(distributions)
    mean_estimate = np.mean([r.estimate["image_auroc"] for r in results])
    assert low < mean_estimate < high
    assert high - low < min(r.high["image_auroc"] - r.low["image_auroc"] for r in results)


# --- speed sanity (measured, not asserted) ------------------------------------------------------


def test_speed_sanity_50_maps_of_256(record_property: Callable[[str, object], None]) -> None:
    test = realistic(n=50, size=256, seed=9)
    start = time.perf_counter()
    result = bootstrap_metrics(test, n_resamples=1000)
    elapsed = time.perf_counter() - start
    record_property("bootstrap_metrics_50x256x256_B1000_s", elapsed)
    print(f"bootstrap_metrics, 50 maps of 256x256, B=1000: {elapsed:.2f} s")
    assert all(np.isfinite(result.low[m]) for m in METRICS)
