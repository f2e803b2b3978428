"""The statistics stage: uncertainty for every number the report prints.

Reads the score files, `results/metrics/seeds.csv` (every training seed's metrics), `results/metrics/scenarios.csv` (thresholds, chosen on validation
images by the evaluate stage), the predictions (heatmap paths) and the robustness sweep;
writes into `results/statistics/`:

- `intervals.csv`: per run (detector, regime, scenario) and category, and for the macro mean
  over categories, each headline metric of the reference training seed (params `seeds[0]`)
  with its stratified bootstrap CI over test images, and next to it the spread over the
  training seeds (`results/metrics/seeds.csv`: `n_seeds`, `seed_mean`, `seed_sd`, `seed_min`,
  `seed_max`; a macro row's spread is that of the per-seed macro means);
- `headline.json`: the macro means with their CIs (the DVC metrics file), and the seed spread
  when there is more than one training seed;
- `comparisons.csv`: paired comparisons on the same test images (detector vs detector,
  per-class vs global, each shift scenario vs clean, adaptation vs no adaptation) with the
  paired bootstrap CI of the difference, its p-value (Wald, bootstrap SE), DeLong's p for
  image AUROC, and Holm-adjusted p-values within each family; a test whose two sides are
  the same numbers by design (AUROC of threshold-only vs no adaptation) is left out, and a
  test repeated across scenarios is listed once;
- `breakdowns.csv`: image AUROC (with CI) and detection rate per defect type and per defect
  size (small / medium / large by mask area, `statistics.size_edges`);
- `robustness.csv`: the severity sweep per shift family (severity 0 = clean), with CIs;
- `errors.csv`: the top-K false positives and false negatives per run and category.

Pairing: within a category every test set is resampled with the same seed and has the same
labels in the same order (a shifted test image sits where its source image sits; checked),
so replicate ``b`` of every run uses the same images, and the replicate differences of two
runs are their paired bootstrap distribution. Categories are resampled independently, so the
macro mean's replicate ``b`` is the mean of the categories' replicates ``b``.
"""

from __future__ import annotations

import logging
import zlib
from collections import defaultdict
from dataclasses import replace
from itertools import combinations

import numpy as np
import pandas as pd

from shiftad.data.records import ImageRecord
from shiftad.evaluate.stage import ground_truth_masks
from shiftad.io import load_npz, read_json, write_json, write_text
from shiftad.parallel import parallel_map
from shiftad.params import Params
from shiftad.paths import METRICS_DIR, PREDICTIONS_DIR, STATISTICS_DIR, robustness_file, scores_file
from shiftad.pipeline import REGIMES
from shiftad.split import domain_view
from scipy.stats import norm

from shiftad.statistics.bootstrap import (METRICS, TestSet, bootstrap_metrics, macro_distribution, macro_interval, percentile_interval,
                                         rethreshold)
from shiftad.statistics.delong import delong_test
from shiftad.statistics.multiple import holm

log = logging.getLogger(__name__)
Run = tuple[str, str, str]  # detector, regime, scenario
SIZE_GROUPS = ("small", "medium", "large")


def category_seed(seed: int, category: str) -> int:
    """One bootstrap seed per category, shared by every run of it (that is what pairs them)."""
    return int(np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))]).integers(2**31))


MIN_GROUP_ANOMALOUS = 5  # fewer anomalous images in a breakdown group: no interval (it would be degenerate)
THRESHOLD_FREE = {"image_auroc", "image_auprc", "pixel_auroc", "aupro"}


def wald_p_value(difference: float, replicates: np.ndarray) -> float:
    """Two-sided p of "no difference" from the bootstrap standard error: 2·Φ(−|Δ| / sd(Δ*)).

    Unlike the share of replicates beyond zero, it is not floored at 2/(B+1), which with
    B = 1000 and Holm over a family of 24 tests would make every per-category test
    non-significant however large the effect. sd = 0: p = 1 when Δ = 0, else 0."""
    replicates = np.asarray(replicates, dtype=float)
    if not np.isfinite(difference) or replicates.size < 2 or np.isnan(replicates).any():
        return float("nan")
    sd = float(np.std(replicates, ddof=1))
    if sd == 0.0:
        return 1.0 if difference == 0 else 0.0
    return float(2 * norm.sf(abs(difference) / sd))


def test_signature(params: Params, run: Run, metric: str) -> tuple:
    """What a metric of a run depends on: threshold-free metrics only on the model and the test
    images, F1 also on the threshold's domain. Equal signatures = the same numbers."""
    scenario = params.scenario_runs()[run[2]]
    base = (run[0], run[1], *scenario.test_scores)
    return base if metric in THRESHOLD_FREE else (*base, scenario.threshold)


def macro(distributions: list[np.ndarray], confidence: float, estimates: list[float]) -> tuple[float, float, float]:
    """Macro mean over categories (those where the metric is defined) and its bootstrap interval."""
    finite = [e for e in estimates if e is not None and np.isfinite(e)]
    estimate = float(np.mean(finite)) if finite else float("nan")
    low, high = macro_interval(distributions, confidence) if distributions else (float("nan"), float("nan"))
    return estimate, low, high


def size_group(area_fraction: float, edges: list[float]) -> str:
    return SIZE_GROUPS[int(np.searchsorted(edges, area_fraction, side="right"))]


class RunData:
    """One run's test set of one category: scores, maps, masks, threshold, records."""

    def __init__(self, test: TestSet, records: list[ImageRecord], areas: np.ndarray):
        self.test, self.records, self.areas = test, records, areas


def _thresholds(params: Params) -> dict[tuple[str, str, str, str], float]:
    table = pd.read_csv(METRICS_DIR / "scenarios.csv")
    return {(r.detector, r.regime, r.scenario, r.category): float(r.threshold) for r in table.itertuples()}


def _source_order(records: list[ImageRecord], domain: str, category: str) -> list[str]:
    """The clean source image of each test record (identity for clean records)."""
    if domain == "clean":
        return [r.path for r in records]
    from shiftad.paths import domain_splits_file

    entries = read_json(domain_splits_file(domain))["categories"][category]["test"]
    return [e["source_path"] for e in entries]


def defect_areas(records: list[ImageRecord]) -> np.ndarray:
    """Mask area / image area per record (0 for normal images, NaN when a mask is missing)."""
    from shiftad.data.images import read_mask

    return np.array([float(read_mask(r.mask_path).mean()) if r.is_anomalous and r.mask_path else (0.0 if not r.is_anomalous else np.nan)
                     for r in records])


def load_run(params: Params, run: Run, category: str, threshold: float, records: list[ImageRecord], areas: np.ndarray) -> RunData:
    detector, regime, scenario_name = run
    scenario = params.scenario_runs()[scenario_name]
    scores = load_npz(scores_file(detector, regime, scenario.model_key, scenario.test, "test", category, params.reference_seed))
    if list(scores["paths"]) != [r.path for r in records]:
        raise RuntimeError(f"{detector}/{regime}/{scenario_name}/{category}: score file does not match the splits; rerun the score stage")
    masks, pixel_images = ground_truth_masks(records, scores["maps"].shape[1:], params.resize)
    test = TestSet(scores=scores["image_scores"].astype(np.float64), labels=scores["labels"].astype(np.int64),
                   threshold=threshold, maps=scores["maps"] if masks is not None else None, masks=masks,
                   pixel_images=pixel_images if masks is not None else None)
    return RunData(test, records, areas)


def _interval_rows(run: Run, category: str, estimate: dict, low: dict, high: dict, params: Params) -> list[dict]:
    return [{"detector": run[0], "regime": run[1], "scenario": run[2], "category": category, "metric": m,
             "estimate": estimate[m], "ci_low": low[m], "ci_high": high[m],
             "n_resamples": params.statistics.n_resamples, "confidence": params.statistics.confidence} for m in METRICS]


def comparison_pairs(params: Params) -> list[tuple[str, Run, Run]]:
    """(family, A, B) with difference A − B, on the same test images."""
    pairs: list[tuple[str, Run, Run]] = []
    for a, b in combinations(params.detectors, 2):
        common = [s for s in params.scenario_runs(a) if s in params.scenario_runs(b)]
        pairs += [("detector", (a, r, s), (b, r, s)) for r in REGIMES for s in common]
    pairs += [("regime", (d, "per_class", s), (d, "global", s)) for d in params.detectors for s in params.scenario_runs(d)]
    for d in params.detectors:
        scenarios = params.scenario_runs(d)
        clean = [n for n, s in scenarios.items() if (s.model, s.threshold, s.test) == ("clean", "clean", "clean")]
        # per test domain, the clean model with the clean threshold: what adaptation is measured against
        no_adaptation = {s.test: n for n, s in reversed(scenarios.items()) if (s.model, s.threshold) == ("clean", "clean")}
        shifted = [n for n, s in scenarios.items() if s.test != "clean"]
        for r in REGIMES:
            if clean:  # few-shot runs are compared with no adaptation (their recovery), not with clean
                pairs += [("scenario", (d, r, s), (d, r, clean[0])) for s in shifted if scenarios[s].k is None]
            pairs += [("adaptation", (d, r, s), (d, r, no_adaptation[scenarios[s].test])) for s in shifted
                      if scenarios[s].test in no_adaptation and s != no_adaptation[scenarios[s].test]]
    return pairs


def _comparison_rows(family: str, a: Run, b: Run, category: str, est_a: dict, est_b: dict, diffs: dict, params: Params,
                     delong: float) -> list[dict]:
    """One row per metric, leaving out tests whose two sides are the same numbers by design
    (e.g. AUROC of threshold-only vs no adaptation: same model, same images)."""
    rows = []
    for m in METRICS:
        if test_signature(params, a, m) == test_signature(params, b, m):
            continue
        low, high = percentile_interval(diffs[m], params.statistics.confidence)
        rows.append({
            "family": family, "a": "/".join(a), "b": "/".join(b), "category": category, "metric": m,
            "estimate_a": est_a[m], "estimate_b": est_b[m], "difference": est_a[m] - est_b[m], "ci_low": low, "ci_high": high,
            "p_bootstrap": wald_p_value(est_a[m] - est_b[m], diffs[m]), "p_delong": delong if m == "image_auroc" else float("nan"),
            "signature": (family, test_signature(params, a, m), test_signature(params, b, m), m, category),
        })
    return rows


def drop_duplicate_tests(table: pd.DataFrame) -> pd.DataFrame:
    """A test that repeats another of its family (same models, images and thresholds on both
    sides, e.g. threshold-only rows for AUROC) is listed once, so it is not counted twice by Holm."""
    return table[~table["signature"].duplicated()].drop(columns="signature").reset_index(drop=True)


def add_holm(table: pd.DataFrame) -> pd.DataFrame:
    """Holm-adjusted p-values within each family of tests: (comparison family, metric, test,
    per-category vs macro level)."""
    table = table.copy()
    table["level"] = np.where(table["category"] == "mean", "macro", "category")
    for test in ("bootstrap", "delong"):
        column = f"p_{test}"
        table[f"{column}_holm"] = np.nan
        for _, index in table.groupby(["family", "metric", "level"]).groups.items():
            table.loc[index, f"{column}_holm"] = holm(table.loc[index, column].to_numpy(dtype=float))
    return table.drop(columns="level")


def _breakdown_rows(run: Run, category: str, data: RunData, params: Params, seed: int,
                    twin: tuple[list[dict], dict] | None = None) -> tuple[list[dict], dict]:
    """Per defect type and per size group: normals vs that group's anomalous images. Size groups
    come from the clean masks (`data.areas`), so a shifted image stays in its source's group.
    `twin`: the rows and replicates of a run with the same scores under another threshold, whose
    image AUROC and CI are kept (only the detection and false-positive rates change)."""
    test, records = data.test, data.records
    labels = test.labels.astype(bool)
    groups: dict[tuple[str, str], np.ndarray] = {}
    for defect in sorted({r.defect_type for r in records if r.is_anomalous}):
        groups[("defect_type", defect)] = np.array([r.is_anomalous and r.defect_type == defect for r in records])
    if not np.isnan(data.areas[labels]).any():
        sizes = np.array([size_group(a, params.statistics.size_edges) if l else "" for a, l in zip(data.areas, labels)])
        for group in SIZE_GROUPS:
            if (sizes == group).any():
                groups[("defect_size", group)] = sizes == group
    rows, distributions = [], {}
    twin_rows = {(r["breakdown"], r["group"]): r for r in twin[0]} if twin else {}
    for (kind, group), members in groups.items():
        detected = float(np.mean(test.scores[members] >= test.threshold))
        row = {"detector": run[0], "regime": run[1], "scenario": run[2], "category": category, "breakdown": kind, "group": group,
               "n_normal": int((~labels).sum()), "n_anomalous": int(members.sum())}
        if twin:
            row |= {m: twin_rows[(kind, group)][m] for m in ("image_auroc", "ci_low", "ci_high")}
            distributions[(kind, group)] = twin[1][(kind, group)]
        else:
            keep = ~labels | members
            subset = TestSet(scores=test.scores[keep], labels=test.labels[keep], threshold=test.threshold)
            result = bootstrap_metrics(subset, params.statistics.n_resamples, params.statistics.confidence, seed=seed)
            small = int(members.sum()) < MIN_GROUP_ANOMALOUS
            row |= {"image_auroc": result.estimate["image_auroc"], "ci_low": float("nan") if small else result.low["image_auroc"],
                    "ci_high": float("nan") if small else result.high["image_auroc"]}
            distributions[(kind, group)] = result.distribution["image_auroc"]
        rows.append(row | {"detection_rate": detected, "false_positive_rate": float(np.mean(test.scores[~labels] >= test.threshold))})
    return rows, distributions


def _error_rows(run: Run, category: str, data: RunData, k: int) -> list[dict]:
    predictions = {p["filename"]: p for p in read_json(PREDICTIONS_DIR / run[0] / run[1] / run[2] / f"{category}.json")}
    test = data.test
    flagged = test.scores >= test.threshold
    normal, anomalous = test.labels == 0, test.labels == 1
    fp = np.flatnonzero(normal & flagged)
    fn = np.flatnonzero(anomalous & ~flagged)
    rows = []
    for kind, index in (("false_positive", fp[np.argsort(-test.scores[fp], kind="stable")][:k]),
                        ("false_negative", fn[np.argsort(test.scores[fn], kind="stable")][:k])):
        for rank, i in enumerate(index, start=1):
            record = data.records[i]
            rows.append({"detector": run[0], "regime": run[1], "scenario": run[2], "category": category, "kind": kind, "rank": rank,
                         "filename": record.path, "defect_type": record.defect_type, "score": float(test.scores[i]),
                         "threshold": test.threshold, "margin": float(test.scores[i] - test.threshold),
                         "heatmap_path": predictions.get(record.path, {}).get("prediction", {}).get("heatmap_path")})
    return rows


def cross_shift_rows(params: Params, seeds: dict[str, int]) -> pd.DataFrame:
    """The cross-shift matrix: image AUROC [CI] of each fitted domain's models (the row; model
    and threshold from that domain: AUROC needs no threshold) on each domain's test images (the
    column), per detector, regime and category plus the macro mean, for every pair scored for
    the detector (`Params.scored_pairs`: a row for each domain it is fitted on). The diagonal is each domain's own model; the clean row is no adaptation."""
    settings = params.statistics
    rows = []
    for detector in params.detectors:
        for regime in REGIMES:
            for model, test in params.scored_pairs(detector):
                distributions, estimates = [], []
                for category in params.categories:
                    scores = load_npz(scores_file(detector, regime, model, test, "test", category, params.reference_seed))
                    result = bootstrap_metrics(TestSet(scores=scores["image_scores"].astype(np.float64),
                                                       labels=scores["labels"].astype(np.int64), threshold=0.0),
                                               settings.n_resamples, settings.confidence, seed=seeds[category])
                    distributions.append(result.distribution["image_auroc"])
                    estimates.append(result.estimate["image_auroc"])
                    rows.append({"detector": detector, "regime": regime, "model_domain": model, "test_domain": test, "category": category,
                                 "image_auroc": result.estimate["image_auroc"], "ci_low": result.low["image_auroc"],
                                 "ci_high": result.high["image_auroc"]})
                estimate, low, high = macro(distributions, settings.confidence, estimates)
                rows.append({"detector": detector, "regime": regime, "model_domain": model, "test_domain": test, "category": "mean",
                             "image_auroc": estimate, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["detector", "regime", "model_domain", "test_domain", "category", "image_auroc", "ci_low", "ci_high"])


def robustness_rows(params: Params, thresholds: dict, clean_results: dict, seeds: dict[str, int]) -> pd.DataFrame:
    """Robustness curves: per detector, family, severity (0 = clean) and category, plus the macro mean."""
    clean_names = [n for n, s in params.scenarios.items() if (s.model, s.threshold, s.test) == ("clean", "clean", "clean")]
    if not clean_names:  # the sweep's threshold and severity 0 come from the clean scenario
        log.warning("robustness: no clean scenario (model, threshold and test clean) in params.scenarios; sweep not reported")
        return pd.DataFrame()
    rows, replicates = [], defaultdict(list)
    for detector in params.robustness.detectors or []:
        for category in params.categories:
            sweep = load_npz(robustness_file(detector, category))
            threshold = thresholds.get((detector, "per_class", clean_names[0], category), float("nan")) if clean_names else float("nan")
            for c, (family, severity) in enumerate(zip(sweep["families"], sweep["severities"])):
                test = TestSet(scores=sweep["image_scores"][c], labels=sweep["labels"], threshold=threshold)
                result = bootstrap_metrics(test, params.statistics.n_resamples, params.statistics.confidence, seed=seeds[category])
                key = (detector, str(family), int(severity))
                replicates[key].append(result.distribution["image_auroc"])
                rows.append({"detector": detector, "family": str(family), "severity": int(severity), "category": category,
                             "image_auroc": result.estimate["image_auroc"], "ci_low": result.low["image_auroc"],
                             "ci_high": result.high["image_auroc"], "f1": result.estimate["f1"],
                             "pixel_auroc": float(sweep["pixel_auroc"][c]), "aupro": float(sweep["aupro"][c])})
            clean = clean_results.get((detector, "per_class", clean_names[0], category))
            if clean is not None:
                for family in sorted({str(f) for f in sweep["families"]}):
                    replicates[(detector, family, 0)].append(clean.distribution["image_auroc"])
                    rows.append({"detector": detector, "family": family, "severity": 0, "category": category,
                                 "image_auroc": clean.estimate["image_auroc"], "ci_low": clean.low["image_auroc"],
                                 "ci_high": clean.high["image_auroc"], "f1": clean.estimate["f1"],
                                 "pixel_auroc": clean.estimate["pixel_auroc"], "aupro": clean.estimate["aupro"]})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    macro_rows = []
    for (detector, family, severity), group in table.groupby(["detector", "family", "severity"]):
        estimate, low, high = macro(replicates[(detector, family, severity)], params.statistics.confidence,
                                             estimates=group["image_auroc"].to_list())
        macro_rows.append({"detector": detector, "family": family, "severity": severity, "category": "mean", "image_auroc": estimate,
                      "ci_low": low, "ci_high": high, "f1": group["f1"].mean(), "pixel_auroc": group["pixel_auroc"].mean(),
                      "aupro": group["aupro"].mean()})
    table = pd.concat([table, pd.DataFrame(macro_rows)], ignore_index=True)
    table["is_mean"] = table["category"] == "mean"  # the macro rows last in each block
    return table.sort_values(["detector", "family", "is_mean", "category", "severity"], ignore_index=True).drop(columns="is_mean")


SEED_COLUMNS = ("n_seeds", "seed_mean", "seed_sd", "seed_min", "seed_max")


def seed_spread(replicates: pd.DataFrame, metrics: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Per run, category (and the macro mean over categories, per seed first) and metric: the
    metric's spread over training seeds (sample sd, ddof 1; NaN with one seed)."""
    keys = ["detector", "regime", "scenario", "seed"]
    long = replicates.melt(id_vars=[*keys, "category"], value_vars=list(metrics), var_name="metric")
    macro = long.groupby([*keys, "metric"], as_index=False)["value"].mean().assign(category="mean")
    long = pd.concat([long, macro], ignore_index=True)
    spread = long.groupby(["detector", "regime", "scenario", "category", "metric"], as_index=False)["value"].agg(
        n_seeds="count", seed_mean="mean", seed_sd="std", seed_min="min", seed_max="max")
    return spread


def add_seed_spread(intervals: pd.DataFrame, replicates: pd.DataFrame) -> pd.DataFrame:
    """`intervals` with the seed-spread columns of `replicates` (seeds.csv: every seed's metrics)."""
    merged = intervals.merge(seed_spread(replicates), on=["detector", "regime", "scenario", "category", "metric"], how="left",
                             validate="one_to_one")
    if merged["n_seeds"].isna().any():
        missing = merged.loc[merged["n_seeds"].isna(), ["detector", "regime", "scenario", "category"]].drop_duplicates().head(3)
        raise RuntimeError(f"{METRICS_DIR / 'seeds.csv'}: no rows for {missing.to_dict('records')}; rerun the evaluate stage")
    merged["n_seeds"] = merged["n_seeds"].astype(int)
    return merged


def headline(intervals: pd.DataFrame) -> dict:
    """Macro means with CIs nested detector -> regime -> scenario -> metric (for `dvc metrics`);
    with several training seeds also their sd and range over seeds."""
    out: dict = {}
    for row in intervals[intervals["category"] == "mean"].itertuples():
        value = {"value": _round(row.estimate), "ci_low": _round(row.ci_low), "ci_high": _round(row.ci_high)}
        if row.n_seeds > 1:
            value |= {"seed_sd": _round(row.seed_sd), "seed_min": _round(row.seed_min), "seed_max": _round(row.seed_max),
                      "n_seeds": int(row.n_seeds)}
        out.setdefault(row.detector, {}).setdefault(row.regime, {}).setdefault(row.scenario, {})[row.metric] = value
    return out


def _round(x: float) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 4)


def _run_category_task(task: tuple) -> list[tuple]:
    """Runs that share a model and test images (threshold-only and no adaptation: the same scores
    and maps under another threshold) on one category: per run its bootstrap (MetricIntervals),
    its test set without the maps (scores and labels, for DeLong), its breakdown rows and
    replicates, its error rows. The threshold-free metrics (pixel ones above all) are
    bootstrapped once, for the first run, and kept for the others (`rethreshold`)."""
    params, runs, category, thresholds, records, areas, seed = task
    settings = params.statistics
    first = load_run(params, runs[0], category, thresholds[0], records, areas)
    outcomes, shared = [], None
    for run, threshold in zip(runs, thresholds):
        data = first if shared is None else RunData(replace(first.test, threshold=threshold), first.records, first.areas)
        if shared is None:
            result = bootstrap_metrics(data.test, settings.n_resamples, settings.confidence, seed=seed,
                                       fpr_limit=params.evaluation.aupro_fpr_limit)
            rows, distributions = _breakdown_rows(run, category, data, params, seed)
            shared = (result, (rows, distributions))
        else:
            result = rethreshold(shared[0], data.test)
            rows, distributions = _breakdown_rows(run, category, data, params, seed, twin=shared[1])
        errors = _error_rows(run, category, data, settings.top_errors)
        test = TestSet(scores=data.test.scores, labels=data.test.labels, threshold=data.test.threshold)
        outcomes.append((result, test, rows, distributions, errors))
    return outcomes


def map_twin_groups(params: Params, runs: list[Run]) -> list[list[Run]]:
    """`runs` grouped by what their threshold-free metrics depend on (detector, regime, model,
    test images: `test_signature`), in order; a group's runs differ only in their threshold."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(test_signature(params, run, "image_auroc"), []).append(run)
    return list(groups.values())


def run_statistics_stage(params: Params, progress: bool = True) -> dict[str, pd.DataFrame]:
    settings = params.statistics
    thresholds = _thresholds(params)
    runs: list[Run] = [(d, r, s) for d in params.detectors for r in REGIMES for s in params.scenario_runs(d)]
    scenario_runs = params.scenario_runs()
    twin_groups = map_twin_groups(params, runs)
    pairs = comparison_pairs(params)
    views = {domain: domain_view(domain) for domain in {s.test for s in params.scenario_runs().values()}}
    seeds = {c: category_seed(params.seed, c) for c in params.categories}

    interval_rows, comparison_rows, breakdown_rows, error_rows = [], [], [], []
    run_replicates: dict[Run, list[dict]] = defaultdict(list)  # per category: metric -> replicates
    run_estimates: dict[Run, list[dict]] = defaultdict(list)
    pair_replicates: dict[tuple, list[dict]] = defaultdict(list)
    breakdown_replicates: dict[tuple, list[np.ndarray]] = defaultdict(list)
    all_results: dict = {}  # (detector, regime, scenario, category) -> MetricIntervals
    tasks, prepared = [], {}
    for category in params.categories:
        records = {d: views[d].get(category, "test") for d in views}
        orders = {d: _source_order(records[d], d, category) for d in views}
        reference = next(iter(orders.values()))
        if any(order != reference for order in orders.values()):
            raise RuntimeError(f"{category}: the clean and shifted test lists are not in the same image order; rerun the shift stage")
        areas = defect_areas(records["clean"]) if "clean" in records else defect_areas(next(iter(records.values())))
        for group in twin_groups:
            domain = scenario_runs[group[0][2]].test
            tasks.append((params, group, category, [thresholds[(*run, category)] for run in group], records[domain], areas,
                          seeds[category]))
    # Every (group of map twins, category) on its own (a worker process each, `threads` of them); the pairs below only combine
    # their results.
    for task, outcomes in zip(tasks, parallel_map(_run_category_task, tasks, params.threads, "statistics", progress)):
        for run, outcome in zip(task[1], outcomes):
            prepared[(run, task[2])] = outcome

    for category in params.categories:
        results, tests = {}, {}
        for run in runs:
            result, test, rows, distributions, errors = prepared.pop((run, category))
            results[run], tests[run] = result, test
            interval_rows += _interval_rows(run, category, result.estimate, result.low, result.high, params)
            run_replicates[run].append(result.distribution)
            run_estimates[run].append(result.estimate)
            all_results[(*run, category)] = result
            breakdown_rows += rows
            for key, dist in distributions.items():
                if key[0] == "defect_size":
                    breakdown_replicates[(*run, *key)].append(dist)
            error_rows += errors
        for family, a, b in pairs:
            diffs = {m: results[a].distribution[m] - results[b].distribution[m] for m in METRICS}
            try:
                delong = delong_test(tests[a].scores, tests[b].scores, tests[a].labels).p_value
            except ValueError:  # fewer than two images in a class
                delong = float("nan")
            comparison_rows += _comparison_rows(family, a, b, category, results[a].estimate, results[b].estimate, diffs, params, delong)
            pair_replicates[(family, a, b)].append(diffs)

    # macro means over categories
    for run in runs:
        estimate, low, high = {}, {}, {}
        for m in METRICS:
            estimate[m], low[m], high[m] = macro([r[m] for r in run_replicates[run]], settings.confidence,
                                                          estimates=[e[m] for e in run_estimates[run]])
        interval_rows += _interval_rows(run, "mean", estimate, low, high, params)
    intervals = add_seed_spread(pd.DataFrame(interval_rows), pd.read_csv(METRICS_DIR / "seeds.csv"))
    by_key = intervals[intervals["category"] == "mean"].set_index(["detector", "regime", "scenario", "metric"])["estimate"]
    for family, a, b in pairs:
        diffs = {m: macro_distribution([d[m] for d in pair_replicates[(family, a, b)]]) for m in METRICS}
        est_a = {m: by_key[(*a, m)] for m in METRICS}
        est_b = {m: by_key[(*b, m)] for m in METRICS}
        comparison_rows += _comparison_rows(family, a, b, "mean", est_a, est_b, diffs, params, float("nan"))
    comparisons = add_holm(drop_duplicate_tests(pd.DataFrame(comparison_rows)))

    breakdowns = pd.DataFrame(breakdown_rows)
    if not breakdowns.empty:
        size_rows = []
        sizes = breakdowns[breakdowns["breakdown"] == "defect_size"]
        for (d, r, s, group), rows in sizes.groupby(["detector", "regime", "scenario", "group"]):
            estimate, low, high = macro(breakdown_replicates[(d, r, s, "defect_size", group)], settings.confidence,
                                                 estimates=rows["image_auroc"].to_list())
            size_rows.append({"detector": d, "regime": r, "scenario": s, "category": "mean", "breakdown": "defect_size", "group": group,
                          "n_normal": int(rows["n_normal"].sum()), "n_anomalous": int(rows["n_anomalous"].sum()),
                          "image_auroc": estimate, "ci_low": low, "ci_high": high,
                          "detection_rate": float(np.average(rows["detection_rate"], weights=rows["n_anomalous"]))})
        breakdowns = pd.concat([breakdowns, pd.DataFrame(size_rows)], ignore_index=True)
    robustness = robustness_rows(params, thresholds, all_results, seeds)
    errors = pd.DataFrame(error_rows, columns=["detector", "regime", "scenario", "category", "kind", "rank", "filename", "defect_type",
                                               "score", "threshold", "margin", "heatmap_path"])

    cross = cross_shift_rows(params, seeds)
    tables = {"intervals": intervals, "comparisons": comparisons, "breakdowns": breakdowns, "robustness": robustness, "errors": errors,
              "cross_shift": cross}
    for name, table in tables.items():
        write_text(STATISTICS_DIR / f"{name}.csv", table.to_csv(index=False, float_format="%.6g"))
    write_json(STATISTICS_DIR / "headline.json", headline(intervals))
    log.info("statistics: %d intervals, %d comparisons, %d breakdown rows, %d robustness rows, %d errors",
             len(intervals), len(comparisons), len(breakdowns), len(robustness), len(errors))
    return tables
