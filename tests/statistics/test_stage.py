"""The statistics stage's own logic: pairing, Holm families, size groups, error lists, seeds."""

import numpy as np
import pandas as pd
import pytest

from shiftad.data.records import ImageRecord
from shiftad.params import validate_params
from shiftad.statistics.bootstrap import TestSet, bootstrap_metrics, paired_bootstrap
from shiftad.statistics.multiple import holm
from shiftad.statistics.stage import (RunData, _breakdown_rows, _error_rows, add_holm, category_seed, comparison_pairs, map_twin_groups,
                                     size_group)


ONE_DOMAIN = {"domains": {"shift": {"recipe": "mvtec_shift"}}, "refit": {"domains": ["shift"]}}  # runs named shift_<template>
NO_FEWSHOT = {"clean": {}, "no_adaptation": {"test": "target"}, "threshold_only": {"threshold": "target", "test": "target"},
              "refit": {"model": "target", "threshold": "target", "test": "target"}}


def test_comparison_families_cover_detectors_regimes_and_scenarios():
    pairs = comparison_pairs(validate_params({"detectors": ["patchcore", "padim"], **ONE_DOMAIN, "scenarios": NO_FEWSHOT}))
    families = {f for f, _, _ in pairs}
    assert families == {"detector", "regime", "scenario", "adaptation"}
    assert ("detector", ("patchcore", "per_class", "clean"), ("padim", "per_class", "clean")) in pairs
    assert ("regime", ("padim", "per_class", "shift_refit"), ("padim", "global", "shift_refit")) in pairs
    # every shift scenario against clean; every adaptation against no adaptation
    assert ("scenario", ("patchcore", "global", "shift_no_adaptation"), ("patchcore", "global", "clean")) in pairs
    assert ("adaptation", ("patchcore", "global", "shift_refit"), ("patchcore", "global", "shift_no_adaptation")) in pairs
    assert not any(a == b for _, a, b in pairs)
    assert len(pairs) == 8 + 8 + 12 + 8


def test_adaptation_is_measured_against_no_adaptation_on_the_same_domain():
    domains = {"mvtec_shift": {"recipe": "mvtec_shift"}, "camera_change": {"recipe": "camera_change"},
               "brightness": {"recipe": "corruption", "corruption": "brightness"}}
    pairs = comparison_pairs(validate_params({"detectors": ["padim"], "scenarios": NO_FEWSHOT, "domains": domains,
                                              "refit": {"domains": ["camera_change"]}}))
    adaptation = {(a[2], b[2]) for f, a, b in pairs if f == "adaptation"}
    assert ("camera_change_refit", "camera_change_no_adaptation") in adaptation
    assert ("brightness_threshold_only", "brightness_no_adaptation") in adaptation
    assert all(a.split("_")[0] == b.split("_")[0] for a, b in adaptation)  # never across domains


def test_few_shot_runs_are_compared_with_no_adaptation_and_across_memory_bank_detectors():
    scenarios = {"clean": {}, "no_adaptation": {"test": "target"}, "few": {"model": "fewshot", "threshold": "target", "test": "target"}}
    params = validate_params({"detectors": ["patchcore", "padim", "knn"], **ONE_DOMAIN, "scenarios": scenarios, "few_shot": {"adaptation_k": [0, 2]}})
    pairs = comparison_pairs(params)
    assert ("adaptation", ("knn", "global", "shift_few_k2"), ("knn", "global", "shift_no_adaptation")) in pairs
    assert ("detector", ("patchcore", "per_class", "shift_few_k0"), ("knn", "per_class", "shift_few_k0")) in pairs
    assert not any("few" in a[2] and f in ("scenario", "regime") and a[0] == "padim" for f, a, _ in pairs)
    assert not any(f == "scenario" and "few" in a[2] for f, a, _ in pairs)  # recovery is measured against no adaptation
    assert not any(a[0] == "padim" and "few" in a[2] or b[0] == "padim" and "few" in b[2] for _, a, b in pairs)


def test_one_detector_has_no_detector_family():
    pairs = comparison_pairs(validate_params({"detectors": ["padim"]}))
    assert "detector" not in {f for f, _, _ in pairs}


def test_shared_seed_makes_replicate_differences_the_paired_bootstrap():
    """The stage pairs two runs by subtracting their replicates; that must equal a paired bootstrap."""
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(30, int), np.ones(12, int)]
    a = TestSet(scores=rng.normal(size=42) + labels, labels=labels, threshold=0.5)
    b = TestSet(scores=rng.normal(size=42) + 0.5 * labels, labels=labels, threshold=0.5)
    seed = category_seed(0, "brick")
    da = bootstrap_metrics(a, 300, seed=seed).distribution["image_auroc"]
    db = bootstrap_metrics(b, 300, seed=seed).distribution["image_auroc"]
    paired = paired_bootstrap(a, b, 300, seed=seed)
    np.testing.assert_allclose(da - db, paired.distribution["image_auroc"], atol=1e-12)


def test_category_seeds_differ_and_are_stable():
    assert category_seed(0, "brick") == category_seed(0, "brick")
    assert len({category_seed(0, c) for c in ("brick", "gravel", "widget")}) == 3
    assert category_seed(0, "brick") != category_seed(1, "brick")


def test_holm_runs_within_each_family_and_level():
    table = pd.DataFrame({
        "family": ["detector", "detector", "scenario", "scenario", "scenario"],
        "category": ["a", "b", "a", "b", "mean"],
        "metric": ["image_auroc"] * 5,
        "p_bootstrap": [0.01, 0.04, 0.01, 0.04, 0.01],
        "p_delong": [0.02, np.nan, 0.2, 0.3, np.nan],
    })
    out = add_holm(table)
    np.testing.assert_allclose(out["p_bootstrap_holm"][:2], holm(np.array([0.01, 0.04])))
    assert out["p_bootstrap_holm"].iloc[4] == 0.01  # the macro row is its own family of one
    assert out["p_delong_holm"].iloc[0] == 0.02 and np.isnan(out["p_delong_holm"].iloc[1])


@pytest.mark.parametrize("area, group", [(0.001, "small"), (0.005, "medium"), (0.0199, "medium"), (0.02, "large"), (0.5, "large")])
def test_size_groups_by_mask_area(area, group):
    assert size_group(area, [0.005, 0.02]) == group


def test_error_lists_take_the_most_confident_mistakes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    records = [ImageRecord(f"img{i}.png", "c", int(i >= 4), "dent" if i >= 4 else "good", None, "test") for i in range(8)]
    scores = np.array([0.1, 0.9, 0.7, 0.2, 0.3, 0.8, 0.1, 0.6])  # normals 1, 2 above 0.5; anomalous 4, 6 below
    data = RunData(TestSet(scores=scores, labels=np.array([r.label for r in records]), threshold=0.5), records, np.zeros(8))
    folder = tmp_path / "results/predictions/d/r/s"
    folder.mkdir(parents=True)
    (folder / "c.json").write_text("[]")
    rows = _error_rows(("d", "r", "s"), "c", data, k=5)
    fps = [r["filename"] for r in rows if r["kind"] == "false_positive"]
    fns = [r["filename"] for r in rows if r["kind"] == "false_negative"]
    assert fps == ["img1.png", "img2.png"] and fns == ["img6.png", "img4.png"]
    assert _error_rows(("d", "r", "s"), "c", data, k=1)[0]["margin"] == pytest.approx(0.4)


def test_threshold_only_is_grouped_with_no_adaptation_and_nothing_else():
    params = validate_params({"detectors": ["patchcore", "padim"], **ONE_DOMAIN, "scenarios": NO_FEWSHOT})
    runs = [(d, r, s) for d in params.detectors for r in ("per_class", "global") for s in params.scenario_runs(d)]
    groups = map_twin_groups(params, runs)
    assert sorted(sum(groups, [])) == sorted(runs)  # every run once
    twins = [g for g in groups if len(g) > 1]
    assert {tuple(s for _, _, s in g) for g in twins} == {("shift_no_adaptation", "shift_threshold_only")}
    assert len(twins) == 4 and all(len({(d, r) for d, r, _ in g}) == 1 for g in twins)  # per detector and regime


def test_a_twins_breakdown_keeps_the_aurocs_and_recounts_the_decisions():
    records = [ImageRecord(f"img{i}.png", "c", int(i >= 10), ("dent" if i % 2 else "scratch") if i >= 10 else "good", None, "test")
               for i in range(22)]
    rng = np.random.default_rng(0)
    labels = np.array([r.label for r in records])
    scores = rng.normal(size=22) + labels
    params = validate_params({"statistics": {"n_resamples": 200}})
    areas = np.where(labels == 1, 0.01, 0.0)
    first = RunData(TestSet(scores=scores, labels=labels, threshold=0.5), records, areas)
    second = RunData(TestSet(scores=scores, labels=labels, threshold=-0.5), records, areas)
    twin = _breakdown_rows(("d", "r", "a"), "c", first, params, seed=3)
    expected = _breakdown_rows(("d", "r", "b"), "c", second, params, seed=3)
    got = _breakdown_rows(("d", "r", "b"), "c", second, params, seed=3, twin=twin)
    assert pd.DataFrame(got[0]).equals(pd.DataFrame(expected[0]))
    assert got[1].keys() == expected[1].keys() and all(np.array_equal(got[1][k], expected[1][k]) for k in got[1])
    assert [r["detection_rate"] for r in got[0]] != [r["detection_rate"] for r in twin[0]]  # the threshold counts


def test_wald_p_value_from_the_bootstrap_standard_error():
    from scipy.stats import norm

    from shiftad.statistics.stage import wald_p_value

    replicates = np.random.default_rng(0).normal(0.1, 0.05, size=1000)
    sd = replicates.std(ddof=1)
    assert wald_p_value(0.1, replicates) == pytest.approx(2 * norm.sf(0.1 / sd))
    assert wald_p_value(0.3, replicates) < 2 / 1001  # not floored at 2/(B+1) like a share of replicates
    assert wald_p_value(0.0, np.zeros(10)) == 1.0 and wald_p_value(0.2, np.zeros(10)) == 0.0
    assert np.isnan(wald_p_value(0.1, np.array([0.1, np.nan])))


def test_tests_that_compare_a_run_with_itself_are_left_out_and_repeats_listed_once():
    from shiftad.statistics.stage import _comparison_rows, drop_duplicate_tests

    params = validate_params(ONE_DOMAIN)
    a, b = ("patchcore", "per_class", "shift_threshold_only"), ("patchcore", "per_class", "shift_no_adaptation")
    est = {m: 0.5 for m in ("image_auroc", "image_auprc", "f1", "pixel_auroc", "aupro")}
    diffs = {m: np.zeros(10) for m in est}
    rows = _comparison_rows("adaptation", a, b, "brick", est, est, diffs, params, 1.0)
    assert [r["metric"] for r in rows] == ["f1"]  # only the threshold differs between the two
    # detector comparisons under no adaptation and threshold only repeat each other for AUROC
    c, d = ("padim", "per_class", "shift_no_adaptation"), ("padim", "per_class", "shift_threshold_only")
    table = pd.DataFrame(_comparison_rows("detector", b, c, "brick", est, est, diffs, params, 0.5)
                         + _comparison_rows("detector", a, d, "brick", est, est, diffs, params, 0.5))
    kept = drop_duplicate_tests(table)
    assert sorted(kept["metric"]) == sorted(list(est) + ["f1"])  # 5 + the second f1
    assert "signature" not in kept


def test_the_cross_shift_matrix_covers_every_scored_pair_with_sklearn_aurocs(tmp_path, monkeypatch):
    from sklearn.metrics import roc_auc_score

    from shiftad.io import save_npz
    from shiftad.paths import scores_file
    from shiftad.statistics.stage import cross_shift_rows

    monkeypatch.chdir(tmp_path)
    params = validate_params({"detectors": ["padim"], "categories": ["a", "b"], **ONE_DOMAIN,
                              "statistics": {"n_resamples": 200}})
    rng = np.random.default_rng(0)
    expected = {}
    for regime in ("per_class", "global"):
        for model, test in params.scored_pairs():
            for category in ("a", "b"):
                labels = np.array([0] * 8 + [1] * 6)
                scores = rng.normal(size=14) + labels * rng.uniform(0, 2)
                save_npz(scores_file("padim", regime, model, test, "test", category, 0), image_scores=scores, labels=labels,
                         paths=np.array([f"{i}.png" for i in range(14)]))
                expected[(regime, model, test, category)] = roc_auc_score(labels, scores)
    table = cross_shift_rows(params, {"a": 1, "b": 2})
    assert set(zip(table["model_domain"], table["test_domain"])) == set(params.scored_pairs()) == {
        ("clean", "clean"), ("clean", "shift"), ("shift", "clean"), ("shift", "shift")}
    for row in table[table["category"] != "mean"].itertuples():
        assert row.image_auroc == pytest.approx(expected[(row.regime, row.model_domain, row.test_domain, row.category)])
        assert row.ci_low <= row.image_auroc <= row.ci_high
    mean = table[table["category"] == "mean"].set_index(["regime", "model_domain", "test_domain"])["image_auroc"]
    assert mean[("global", "shift", "clean")] == pytest.approx(np.mean([expected[("global", "shift", "clean", c)] for c in "ab"]))
