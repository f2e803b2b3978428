"""The evaluate stage: one loop over (detector, regime, scenario, category) reading score files.

A scenario names the domain of the model, of the validation images that set the threshold,
and of the test images the metrics are computed on. Thresholds see validation scores only.
Outputs: `results/metrics/scenarios.{csv,json}` (one tidy row per run and category, for the
reference training seed, params `seeds[0]`), `results/metrics/seeds.csv` (the same rows for every
training seed, with a `seed` column: the across-seed spread the statistics stage reports),
`results/metrics/summary.json` (macro means, for `dvc metrics show`), `results/metrics/routing.csv`
(where a routing detector sent each test image, counted per true category and label), one ROC and one PR curve
file per run and category in `results/plots/{roc,pr}/` (DVC plots), per-image records in
`results/predictions/` and heatmap overlays in `results/heatmaps/` (plus `<stem>_<name>.jpg` per
auxiliary map `extra_map_<name>` of the score files, listed in a record's
`prediction.extra_heatmaps`).
"""

from __future__ import annotations

import logging
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import precision_recall_curve, roc_curve
from tqdm.auto import tqdm

from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.evaluate.metrics import image_metrics, pixel_metrics
from shiftad.evaluate.thresholds import compute_thresholds
from shiftad.geometry import frame_image, frame_mask
from shiftad.io import atomic_dir, atomic_path, load_npz, write_json, write_text
from shiftad.parallel import parallel_map
from shiftad.params import Params, ScenarioRun
from shiftad.paths import (EXTRA_MAP_PREFIX, HEATMAPS_DIR, METRICS_DIR, PR_DIR, PREDICTIONS_DIR, ROC_DIR, curve_file, extra_map_names,
                           scores_file)
from shiftad.pipeline import REGIMES
from shiftad.split import domain_view

log = logging.getLogger(__name__)
HEADLINE_METRICS = ("image_auroc", "image_auprc", "f1", "pixel_auroc", "aupro")


def ground_truth_masks(records: list[ImageRecord], size: tuple[int, int], resize: str = "squash") -> tuple[np.ndarray | None, np.ndarray]:
    """Ground-truth masks in the map frame (`shiftad.geometry`, params `resize`) at the map size
    (nearest; None when an anomalous image has no mask
    file) and which images count in pixel metrics: all but the anomalous images whose mask has
    no defect pixel (annotated at image level only: not normal pixels)."""
    masks = np.zeros((len(records), *size), dtype=bool)
    pixel_images = np.ones(len(records), dtype=bool)
    for i, record in enumerate(records):
        if not record.is_anomalous:
            continue
        if record.mask_path is None:
            return None, pixel_images
        full = read_mask(record.mask_path)
        pixel_images[i] = bool(full.any())
        masks[i] = frame_mask(full, size, resize)
    return masks, pixel_images


HEATMAP_ALPHA = 0.45  # share of the heat colour in the blend: the image stays readable beneath


def overlay(image: np.ndarray, heat: np.ndarray, vmin: float, vmax: float, resize: str = "squash") -> np.ndarray:
    """The anomaly map as a semi-transparent jet layer (blue = low, red = at or above `vmax`)
    over the image in the map frame (`resize`: the run's policy) at the map size. The ground truth is not drawn in: the report
    layers it on top, so the heat stays visible under it."""
    from matplotlib import colormaps

    base = frame_image(image, heat.shape, resize).astype(np.float32) / 255.0
    level = np.clip((heat - vmin) / max(vmax - vmin, 1e-12), 0.0, 1.0)
    colour = colormaps["jet"](level)[..., :3]
    blended = (1.0 - HEATMAP_ALPHA) * base + HEATMAP_ALPHA * colour
    return (blended * 255).round().astype(np.uint8)


def extra_map_range(val_maps: np.ndarray, val_labels: np.ndarray, test_maps: np.ndarray) -> tuple[float, float]:
    """Colour range (vmin, vmax) of an auxiliary map (e.g. uncertainty), from validation images.
    Blue at the median of the normal validation images' values, red at the largest of their
    per-image 99.9th percentiles: red = beyond what any normal image shows, without one hot
    pixel stretching the scale. With no normal validation image, vmin is the test maps' minimum
    (as for the heatmaps) and vmax comes from all validation images: vmax is never test-derived."""
    normal = val_maps[val_labels == 0]
    reference = normal if len(normal) else val_maps
    vmin = float(np.median(normal)) if len(normal) else float(test_maps.min())
    vmax = float(np.percentile(reference.reshape(len(reference), -1), 99.9, axis=1).max())
    return vmin, max(vmax, vmin + 1e-6)


@lru_cache(maxsize=512)
def _overlay_base(path: str, size: tuple[int, int], resize: str) -> np.ndarray:
    """A test image resized to the map size as `overlay` does it: every run of a category draws
    over the same images (~50 runs each), read and resized once per worker process."""
    base = frame_image(read_image(path), size, resize)
    base.setflags(write=False)  # shared between runs
    return base


OVERLAY_QUALITY = 90  # with full-resolution colour (no 4:2:0 subsampling): a heatmap is colour


def _write_heatmaps(folder: Path, records: list[ImageRecord], maps: np.ndarray, vmin: float, vmax: float,
                    extra: dict[str, tuple[np.ndarray, float, float]] | None = None, resize: str = "squash") -> tuple[list[str], list[dict[str, str]]]:
    """One overlay JPEG per test image, plus `<its stem>_<name>.jpg` per auxiliary map in `extra`
    (name -> (maps, vmin, vmax)). Returns the heatmap paths and, per image, name -> extra path.
    JPEG: pictures to look at (the metrics use the maps themselves), 7x smaller and 80x faster
    to write than PNG, which was most of the evaluate stage (~7,000 overlays a run)."""
    paths, extra_paths = [], []
    for i, record in enumerate(records):
        path = folder / f"{i:04d}_{record.defect_type}_{Path(record.path).stem}.jpg"  # index: stems may repeat
        image = _overlay_base(record.path, maps.shape[1:], resize)  # in the map frame already: overlay's resize is a copy
        with atomic_path(path) as tmp:
            Image.fromarray(overlay(image, maps[i], vmin, vmax)).save(tmp, format="JPEG", quality=OVERLAY_QUALITY, subsampling=0)
        paths.append(path.as_posix())
        written = {}
        for name, (extra_maps, extra_vmin, extra_vmax) in (extra or {}).items():
            extra_path = path.with_name(f"{path.stem}_{name}.jpg")
            with atomic_path(extra_path) as tmp:
                Image.fromarray(overlay(image, extra_maps[i], extra_vmin, extra_vmax)).save(tmp, format="JPEG", quality=OVERLAY_QUALITY, subsampling=0)
            written[name] = extra_path.as_posix()
        extra_paths.append(written)
    return paths, extra_paths


def evaluate_category(
    params: Params, records: list[ImageRecord], val: dict[str, np.ndarray], test: dict[str, np.ndarray], context: str,
    heatmap_folder: Path | None, threshold_rule: str | None = None, pixel: dict | None = None,
) -> tuple[dict, list[dict], pd.DataFrame, pd.DataFrame]:
    """One run on one category. `pixel`: its pixel metrics when already computed for a run with
    the same maps (threshold-free: a threshold-only run's are its no-adaptation twin's)."""
    settings = params.evaluation
    if list(test["paths"]) != [r.path for r in records]:
        raise RuntimeError(f"{context}: score file does not match splits.json; rerun the score stage")
    rule = threshold_rule or settings.threshold.rule
    thresholds = compute_thresholds(
        val["image_scores"], val["labels"], rule, settings.threshold.percentile, settings.threshold.std_multiplier, context=context
    )
    scores, labels, maps = test["image_scores"], test["labels"], test["maps"]
    masks, pixel_images = ground_truth_masks(records, maps.shape[1:], params.resize)
    row = {
        **image_metrics(scores, labels, thresholds.value),
        **(pixel if pixel is not None else pixel_metrics(maps, masks, settings.aupro_fpr_limit, pixel_images)),
        "threshold": thresholds.value,
        "threshold_rule": thresholds.used_rule,
        "threshold_f1_max": thresholds.f1_max,
        "threshold_percentile": thresholds.percentile,
        "threshold_mean_std": thresholds.mean_std,
        "n_val": int(len(val["labels"])),
        "n_test": int(len(labels)),
        "n_test_anomalous": int(labels.sum()),
        "n_test_pixel_excluded": int((~pixel_images).sum()),  # anomalous images whose mask is empty
        "ms_per_image": float(test["seconds_per_image"]) * 1000.0,
    }
    heatmap_paths: list[str | None] = [None] * len(records)
    extra_paths: list[dict[str, str]] = [{} for _ in records]
    if heatmap_folder is not None:
        normal_val_maps = val["maps"][val["labels"] == 0]
        vmin = float(np.median(normal_val_maps)) if len(normal_val_maps) else float(maps.min())
        extra = {}
        for name in extra_map_names(test):
            key = EXTRA_MAP_PREFIX + name
            if key not in val:
                raise RuntimeError(f"{context}: the test scores hold extra map '{name}' but the validation scores do not; rerun the score stage")
            extra[name] = (test[key], *extra_map_range(val[key], val["labels"], test[key]))
        heatmap_paths, extra_paths = _write_heatmaps(heatmap_folder, records, maps, vmin, max(thresholds.value, vmin + 1e-6), extra,
                                                   params.resize)
    routed = test.get("routed_categories")
    predictions = [
        {
            "filename": record.path,
            "ground_truth": {"is_anomalous": record.is_anomalous, "defect_type": record.defect_type, "mask_path": record.mask_path},
            "prediction": {"is_anomalous": bool(score >= thresholds.value), "anomaly_score": float(score), "heatmap_path": heatmap,
                           **({"extra_heatmaps": extras} if extras else {}),  # only detectors with auxiliary maps
                           **({} if routed is None else {"routed_category": str(routed[i])})},
            "correct": bool((score >= thresholds.value) == record.is_anomalous),
        }
        for i, (record, score, heatmap, extras) in enumerate(zip(records, scores, heatmap_paths, extra_paths))
    ]
    roc, pr = pd.DataFrame(), pd.DataFrame()
    if 0 < labels.sum() < len(labels):
        fpr, tpr, roc_thresholds = roc_curve(labels, scores)
        roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": roc_thresholds})
        precision, recall, pr_thresholds = precision_recall_curve(labels, scores)
        pr = pd.DataFrame({"recall": recall, "precision": precision, "threshold": np.append(pr_thresholds, np.nan)})
    return row, predictions, roc, pr


ROUTING_COLUMNS = ["detector", "regime", "scenario", "model_domain", "test_domain", "category", "label", "routed_category", "n"]


def routing_counts(test: dict[str, np.ndarray], key: dict[str, str]) -> list[dict]:
    """Where a routing detector sent each test image: counts per (true category, label, routed
    category); none for detectors without a router. `key` names the run and true category."""
    routed = test.get("routed_categories")
    if routed is None:
        return []
    frame = pd.DataFrame({"label": np.where(test["labels"] == 1, "anomalous", "normal"), "routed_category": routed.astype(str)})
    counts = frame.groupby(["label", "routed_category"], sort=True).size().reset_index(name="n")
    return [{**key, **row} for row in counts.to_dict("records")]


def summarise(table: pd.DataFrame) -> dict:
    """Macro means over categories, nested detector -> regime -> scenario (for `dvc metrics show`)."""
    summary: dict = {}
    for (detector, regime, scenario), group in table.groupby(["detector", "regime", "scenario"], sort=True):
        means = {m: round(float(group[m].mean()), 4) if group[m].notna().any() else None for m in HEADLINE_METRICS}
        summary.setdefault(detector, {}).setdefault(regime, {})[scenario] = means
    return summary


EFFECT_METRICS = ("image_auroc", "f1", "pixel_auroc", "aupro")
EFFECT_STEPS = {"no_adaptation": ("clean", "clean"), "threshold_only": ("clean", "target"), "refit": ("target", "target")}  # (model, threshold)


def effect_scenarios(params: Params) -> dict[str, dict[str, str]]:
    """Per shift domain, its scenarios by step (no_adaptation, threshold_only, refit: the clean
    model with the clean threshold, with the domain's, the domain's own model), where params have them."""
    runs = params.scenario_runs()
    steps: dict[str, dict[str, str]] = {}
    for name, run in runs.items():
        if run.k is not None or run.test == "clean":
            continue
        roles = ("target" if run.model == run.test else run.model, "target" if run.threshold == run.test else run.threshold)
        for step, wanted in EFFECT_STEPS.items():
            if roles == wanted:
                steps.setdefault(run.test, {}).setdefault(step, name)
    return steps


def shift_effects(table: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Per shift domain: degradation (clean -> no adaptation) and recovery (no adaptation ->
    threshold only, -> refit where the domain is fitted) per detector, regime and category, plus
    the macro mean; one row per metric."""
    clean = next((n for n, r in params.scenario_runs().items() if (r.model, r.threshold, r.test) == ("clean", "clean", "clean")), None)
    if clean is None or clean not in set(table["scenario"]):
        return pd.DataFrame()
    frames = []
    for domain, steps in effect_scenarios(params).items():
        if "no_adaptation" not in steps:
            continue
        names = {clean: "clean", **{name: step for step, name in steps.items()}}
        long = table[table["scenario"].isin(names)].melt(
            id_vars=["detector", "regime", "scenario", "category"], value_vars=list(EFFECT_METRICS), var_name="metric")
        long["scenario"] = long["scenario"].map(names)
        wide = long.pivot_table(index=["detector", "regime", "metric", "category"], columns="scenario", values="value", dropna=False).reset_index()
        columns = [c for c in ("clean", *EFFECT_STEPS) if c in wide.columns]
        macro = wide.groupby(["detector", "regime", "metric"], as_index=False)[columns].mean().assign(category="mean")
        wide = pd.concat([wide, macro], ignore_index=True)
        wide["degradation"] = wide["clean"] - wide["no_adaptation"]
        for step in ("threshold_only", "refit"):
            wide[f"recovery_{step}"] = wide[step] - wide["no_adaptation"] if step in wide.columns else np.nan
        wide.insert(0, "domain", domain)
        frames.append(wide)
    if not frames:
        return pd.DataFrame()
    wide = pd.concat(frames, ignore_index=True)
    wide.columns.name = None
    wide["is_mean"] = wide["category"] == "mean"  # the macro row last in each block
    order = {d: i for i, d in enumerate(params.domains)}
    wide["domain_order"] = wide["domain"].map(order)
    return (wide.sort_values(["domain_order", "detector", "regime", "metric", "is_mean", "category"], ignore_index=True)
            .drop(columns=["is_mean", "domain_order"]))


def domain_description(params: Params, domain: str) -> dict:
    """The columns that say what a test domain is (empty for clean)."""
    if domain == "clean":
        return {}
    recipe = params.domains[domain]
    if recipe.recipe == "corruption":
        return {"shift_recipe": "corruption", "shift_severity": recipe.severity or 3, "shift_families": recipe.corruption}
    return {"shift_recipe": recipe.recipe, "shift_severity": recipe.severity or params.shift.severity,
            "shift_families": "+".join(recipe.families or params.shift.families)}


def _row(params: Params, detector: str, regime: str, scenario: ScenarioRun, category: str, metrics: dict) -> dict:
    return {"detector": detector, "regime": regime, "scenario": scenario.name, "category": category,
            "scenario_group": scenario.group, "k": scenario.k,
            "model_domain": scenario.model, "threshold_domain": scenario.threshold, "test_domain": scenario.test,
            **domain_description(params, scenario.test), **metrics}


def seed_table(params: Params, seed: int, views: dict, progress: bool) -> pd.DataFrame:
    """scenarios.csv's rows for the models of another training seed (metrics only: thresholds
    from its own validation scores, no maps or predictions written)."""
    rows = []
    runs = [(d, r, s) for d in params.detectors for r in REGIMES for s in params.scenario_runs(d).values()]
    for detector, regime, scenario in tqdm(runs, desc=f"evaluate seed {seed}", disable=not progress):
        for category in params.categories:
            context = f"{detector}/{regime}/{scenario.name}/{category} (seed {seed})"
            val = load_npz(scores_file(detector, regime, scenario.model_key, scenario.threshold, "val", category, seed))
            test = load_npz(scores_file(detector, regime, scenario.model_key, scenario.test, "test", category, seed))
            row, _, _, _ = evaluate_category(params, views[scenario.test].get(category, "test"), val, test, context, None,
                                             params.threshold_rule(detector))
            rows.append(_row(params, detector, regime, scenario, category, row))
    return pd.DataFrame(rows).assign(seed=seed)


PIXEL_METRICS = ("pixel_auroc", "aupro")


def evaluate_run(params: Params, detector: str, regime: str, scenario: ScenarioRun, category: str, records: list[ImageRecord],
                 heat_folder: Path | None, pixel: dict | None = None) -> tuple[dict, list[dict], pd.DataFrame, pd.DataFrame, list[dict]]:
    """One run on one category with the reference seed's scores: its scenarios.csv row, per-image
    predictions (heatmaps drawn into `heat_folder`), ROC and PR curves, routing counts. `pixel`:
    see `evaluate_category`."""
    context = f"{detector}/{regime}/{scenario.name}/{category}"
    reference = params.reference_seed
    val = load_npz(scores_file(detector, regime, scenario.model_key, scenario.threshold, "val", category, reference))
    test = load_npz(scores_file(detector, regime, scenario.model_key, scenario.test, "test", category, reference))
    row, predictions, roc, pr = evaluate_category(params, records, val, test, context, heat_folder, params.threshold_rule(detector), pixel)
    routing = routing_counts(test, {"detector": detector, "regime": regime, "scenario": scenario.name, "model_domain": scenario.model,
                                    "test_domain": scenario.test, "category": category})
    log.info("%s: image AUROC %.3f, pixel AUROC %.3f, AU-PRO %.3f", context, row["image_auroc"], row["pixel_auroc"], row["aupro"])
    return _row(params, detector, regime, scenario, category, row), predictions, roc, pr, routing


def _evaluate_task(task: tuple) -> list[tuple]:
    """Runs of one category that share a model and test images (threshold-only and no adaptation):
    the pixel metrics (threshold-free, most of the metrics' cost) are computed once, for the first."""
    results, pixel = [], None
    for run_task in task:
        result = evaluate_run(*run_task, pixel=pixel)
        pixel = {m: result[0][m] for m in PIXEL_METRICS}
        results.append(result)
    return results


def run_evaluate_stage(params: Params, progress: bool = True) -> pd.DataFrame:
    views = {domain: domain_view(domain) for domain in {s.test for s in params.scenario_runs().values()}}
    runs = [(d, r, s) for d in params.detectors for r in REGIMES for s in params.scenario_runs(d).values()]
    reference = params.reference_seed  # its scores give the predictions, heatmaps and curves; every seed gives seeds.csv
    rows, routing = [], []
    with (atomic_dir(PREDICTIONS_DIR) as predictions_dir, atomic_dir(HEATMAPS_DIR) as heatmaps_dir,
          atomic_dir(ROC_DIR) as roc_dir, atomic_dir(PR_DIR) as pr_dir):
        def final(path: str) -> str:  # an overlay's path once the temporary heatmaps folder is renamed into place
            return (HEATMAPS_DIR / Path(path).relative_to(heatmaps_dir)).as_posix()

        tasks, groups = [], {}  # groups: task indices of the runs with the same model and test images (map twins), per category
        for detector, regime, scenario in runs:
            for category in params.categories:
                # few-shot runs: metrics and curves only (their maps look like threshold-only's; the report draws recovery curves)
                draw = params.evaluation.heatmaps and scenario.k is None
                heat_folder = heatmaps_dir / detector / regime / scenario.name / category if draw else None
                groups.setdefault((detector, regime, *scenario.test_scores, category), []).append(len(tasks))
                tasks.append((params, detector, regime, scenario, category, views[scenario.test].get(category, "test"), heat_folder))
        indices = list(groups.values())
        grouped = parallel_map(_evaluate_task, [[tasks[i] for i in group] for group in indices], params.threads, "evaluate", progress)
        results: list = [None] * len(tasks)
        for group, outcomes in zip(indices, grouped):
            for i, outcome in zip(group, outcomes):
                results[i] = outcome
        for (_, detector, regime, scenario, category, _, heat_folder), (row, predictions, roc, pr, counts) in zip(tasks, results):
            run_path = Path(detector) / regime / scenario.name
            if heat_folder is not None:  # record the final location, not the temporary one
                for p in predictions:
                    p["prediction"]["heatmap_path"] = final(p["prediction"]["heatmap_path"])
                    if "extra_heatmaps" in p["prediction"]:
                        p["prediction"]["extra_heatmaps"] = {n: final(x) for n, x in p["prediction"]["extra_heatmaps"].items()}
            rows.append(row)
            routing += counts
            write_json(predictions_dir / run_path / f"{category}.json", predictions)
            if not roc.empty:
                write_text(roc_dir / curve_file(detector, regime, scenario.name, category), roc.to_csv(index=False, float_format="%.6g"))
                write_text(pr_dir / curve_file(detector, regime, scenario.name, category), pr.to_csv(index=False, float_format="%.6g"))
    table = pd.DataFrame(rows)
    replicates = [table.assign(seed=reference)] + [seed_table(params, seed, views, progress) for seed in params.seeds[1:]]
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    write_text(METRICS_DIR / "seeds.csv", pd.concat(replicates, ignore_index=True).to_csv(index=False, float_format="%.6g"))
    write_text(METRICS_DIR / "scenarios.csv", table.to_csv(index=False, float_format="%.6g"))
    write_json(METRICS_DIR / "scenarios.json", json.loads(table.to_json(orient="records")))  # NaN -> null
    write_json(METRICS_DIR / "summary.json", summarise(table))
    write_text(METRICS_DIR / "shift_effects.csv", shift_effects(table, params).to_csv(index=False, float_format="%.6g"))
    write_text(METRICS_DIR / "routing.csv", pd.DataFrame(routing, columns=ROUTING_COLUMNS).to_csv(index=False))
    return table
