"""The real DAG on a tiny config, in a temp copy of the project: Snakemake, then DVC."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file

from shiftad.params import deep_merge, load_params
from shiftad.pipeline import GLOBAL_CATEGORY

from conftest import REPO

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "environment.yml", "workflow", "src", "notebooks", ".dvc/config", ".dvc/.gitignore", ".dvcignore"]


def copy_project(target: Path) -> Path:
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / name)
    shutil.copy(REPO / "tests/e2e/tiny.yaml", target / "tiny.yaml")
    return target


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


DOMAINS = ["mvtec_shift", "camera_change", "contrast"]  # tiny.yaml: one domain per recipe; camera_change is fitted and adapted to
SCENARIOS = ["clean", "camera_change_refit"] + [f"{d}_{s}" for d in DOMAINS for s in ("no_adaptation", "threshold_only")]
FEWSHOT_K = [0, 1, 4]  # tiny.yaml few_shot.adaptation_k
MEMORY_BANK = ("patchcore", "knn")
LABEL_FREE = {"feature_align": {"patchcore", "padim"}, "adabn": {"patchcore"}}  # params.yaml: the label-free adaptations' detectors


def project_params(project: Path):
    """The params the project's DAG ran with (params.yaml + tiny.yaml)."""
    return load_params([project / "params.yaml", project / "tiny.yaml"])


def check_outputs(project: Path, categories=("brick", "widget"), detectors=("padim", "knn", "routed_ae", "efficientad", "uninformed_students", "patchcore")) -> pd.DataFrame:
    manifest = {r["path"]: r for r in json.loads((project / "data/processed/manifest.json").read_text())["records"]}
    splits = json.loads((project / "data/processed/splits.json").read_text())["categories"]
    assert sorted(splits) == sorted(categories)
    for domain in DOMAINS:
        content = json.loads((project / f"data/processed/domains/{domain}.json").read_text())
        assert content["domain"] == domain
        for category, parts in content["categories"].items():
            for split, entries in parts.items():
                assert [e["source_path"] for e in entries] == splits[category][split]
                assert all((project / e["path"]).is_file() and f"data/domains/{domain}/" in e["path"] for e in entries)
    assert json.loads((project / "data/processed/domains/contrast.json").read_text())["corruption"] == "contrast"
    shifted = json.loads((project / "data/processed/domains/camera_change.json").read_text())["categories"]
    for parts in splits.values():
        assert parts["train"] and not any(manifest[p]["label"] for p in parts["train"])
        assert any(manifest[p]["label"] for p in parts["val"]), "f1_max needs anomalies in val"
    table = pd.read_csv(project / "results/metrics/scenarios.csv")
    assert set(table["category"]) == set(categories)
    assert table[["image_auroc", "pixel_auroc", "aupro"]].apply(lambda c: c.between(0, 1)).all().all()
    own_rules = {"knn": "percentile", "routed_ae": "mean_std"}  # the methods' own defaults
    assert (table["threshold_rule"] == table["detector"].map(own_rules).fillna("f1_max")).all()
    # every detector x regime x scenario x category, once; few-shot runs (one per K) for memory-bank detectors
    refitted = [d for d in detectors if "camera_change" in project_params(project).fit_domains_of(d)]
    assert refitted == [d for d in detectors if d not in ("efficientad", "uninformed_students")]  # params.yaml refit.detectors
    runs_per_regime = sum(len(SCENARIOS) - (d not in refitted) + (len(FEWSHOT_K) if d in MEMORY_BANK else 0)
                          + len(FEWSHOT_K) * sum(d in ds for ds in LABEL_FREE.values()) for d in detectors)
    assert len(table) == runs_per_regime * 2 * len(categories)
    fewshot_names = [f"camera_change_fewshot_k{k}" for k in FEWSHOT_K]
    fewshot_names += [f"camera_change_{m}_k{k}" for m, ds in LABEL_FREE.items() if ds & set(detectors) for k in FEWSHOT_K]
    assert sorted(table["scenario"].unique()) == sorted(SCENARIOS + fewshot_names) and sorted(table["regime"].unique()) == ["global", "per_class"]
    check_few_shot(project, table, categories, [d for d in detectors if d in MEMORY_BANK])
    check_label_free(project, table, categories, detectors)
    shifted_rows = table[table["test_domain"] != "clean"]
    assert (shifted_rows["shift_severity"] == 3).all() and table.loc[table["test_domain"] == "clean", "shift_severity"].isna().all()
    recipes = shifted_rows.groupby("test_domain")["shift_recipe"].first().to_dict()
    assert recipes == {"mvtec_shift": "mvtec_shift", "camera_change": "camera_change", "contrast": "corruption"}
    # threshold-only reuses the no-adaptation scores: same ranking, threshold from the domain's val
    for domain in DOMAINS:
        a = table[table["scenario"] == f"{domain}_no_adaptation"].set_index(["detector", "regime", "category"])
        b = table[table["scenario"] == f"{domain}_threshold_only"].set_index(["detector", "regime", "category"])
        pd.testing.assert_series_equal(a["image_auroc"], b["image_auroc"])
        assert (b["threshold_domain"] == domain).all() and (a["threshold_domain"] == "clean").all()
    effects = pd.read_csv(project / "results/metrics/shift_effects.csv")
    mean = effects[(effects["category"] == "mean") & (effects["metric"] == "image_auroc")]
    assert len(mean) == len(detectors) * 2 * len(DOMAINS)
    assert (mean["degradation"] - (mean["clean"] - mean["no_adaptation"])).abs().max() < 1e-5  # CSV keeps 6 digits
    camera = mean[mean["domain"] == "camera_change"]
    assert camera.loc[camera["detector"].isin(refitted), "recovery_refit"].notna().all()
    assert camera.loc[~camera["detector"].isin(refitted), "recovery_refit"].isna().all()  # not in refit.detectors
    assert mean.loc[mean["domain"] == "mvtec_shift", "recovery_refit"].isna().all()  # not in refit.domains
    for category in categories:
        records = json.loads((project / f"results/predictions/{detectors[-1]}/per_class/camera_change_refit/{category}.json").read_text())
        assert len(records) == len(shifted[category]["test"])
        for record in records:
            assert set(record) == {"filename", "ground_truth", "prediction", "correct"}  # (no routed_category: not a router)
            assert (project / record["prediction"]["heatmap_path"]).is_file()
    assert len(list((project / "results/plots/roc").glob("*.csv"))) == len(table)  # one curve per run and category
    assert len(list((project / "results/plots/pr").glob("*.csv"))) == len(table)
    summary = json.loads((project / "results/metrics/summary.json").read_text())
    assert 0 <= summary[detectors[-1]]["global"]["camera_change_refit"]["image_auroc"] <= 1
    check_statistics(project, table, categories, detectors)
    check_report(project, detectors)
    check_bundles(project, table, categories, detectors)
    for detector in set(detectors) - set(refitted):  # fitted on clean only: no camera_change model, scores or bundle
        assert not (project / f"results/models/{detector}/per_class/camera_change").exists()
        assert not list((project / f"results/scores/{detector}").rglob("camera_change_on_*"))
        assert sorted(p.name for p in (project / f"results/bundles/{detector}/global").iterdir()) == ["clean"]
    if "routed_ae" in detectors:
        check_routing(project, table, categories)
    if "efficientad" in detectors:
        check_efficientad(project, categories)
    if "uninformed_students" in detectors:
        check_uninformed_students(project, categories)
    return table


def check_efficientad(project: Path, categories) -> None:
    """One teacher, distilled before every fit and copied into each model; maps normalised by
    validation quantiles; the report labels the smoke scale and names the penalty pool."""
    teacher = json.loads((project / "results/teachers/efficientad/teacher.json").read_text())
    assert teacher["source"] == "distilled" and teacher["images"]["train_images"] > 0 and teacher["images"]["skimage_photos"] > 0
    for regime, names in (("per_class", categories), ("global", ["all"])):
        for name in names:
            meta = json.loads((project / f"results/models/efficientad/{regime}/clean/seed0/{name}/meta.json").read_text())
            assert meta["scale"] == "smoke" and meta["teacher"]["final_loss"] == teacher["final_loss"]
            assert meta["training"]["n_val_normals"] > 0 and all(low < high for low, high in meta["quantiles"].values())
            left_out = [c for c in (categories if regime == "global" else [name]) if c in ("brick", "gravel", "grass")]
            assert all(c in meta["penalty_pool"].split("left out as fitted categories:")[1] for c in left_out)
    detectors = pd.read_csv(project / "report/tables/detectors.csv")
    row = detectors[detectors["detector"] == "efficientad"].iloc[0]
    assert row["scale"] == "smoke" and "SMOKE SCALE" in row["notes"] and "penalty images" in row["notes"]
    page = (project / "report/index.md").read_text()
    assert "Scale per detector:" in page and "efficientad smoke" in page  # the headline caption names every detector's scale
    training = pd.read_csv(project / "report/tables/training.csv")  # the tidy histories: tiny.yaml trains 30 steps
    steps = training[training["detector"] == "efficientad"]
    assert set(steps["category"]) == set(categories) and (steps["planned"] == 30).all() and steps["progress"].max() == 30
    assert (project / "report/figures/training_loss.png").is_file()


def check_uninformed_students(project: Path, categories) -> None:
    """Teachers distilled once for every fit; each scored image carries an uncertainty map, drawn
    per test image and shown in the report gallery beside its heatmap; the smoke scale is labelled."""
    teacher = json.loads((project / "results/teachers/uninformed_students/teacher.json").read_text())
    assert teacher["source"] == "distilled" and teacher["images"]["train_images"] > 0 and teacher["patch_sizes"] == [17]
    for regime, name in (("per_class", categories[0]), ("global", "all")):
        meta = json.loads((project / f"results/models/uninformed_students/{regime}/clean/seed0/{name}/meta.json").read_text())
        assert meta["scale"] == "smoke" and meta["teacher"]["seconds"] == teacher["seconds"] and meta["training"]["n_val_normals"] > 0
        assert meta["standardisation"]["17"]["e_std"] > 0 and meta["standardisation"]["17"]["v_std"] > 0
    scores = np.load(project / f"results/scores/uninformed_students/per_class/seed0/clean_on_mvtec_shift/test/{categories[0]}.npz")
    assert scores["extra_map_uncertainty"].shape == scores["maps"].shape
    records = json.loads((project / f"results/predictions/uninformed_students/per_class/clean/{categories[0]}.json").read_text())
    assert records and all((project / r["prediction"]["extra_heatmaps"]["uncertainty"]).is_file() for r in records)
    page = (project / "report/index.html").read_text()
    assert re.search(r'src="gallery/uninformed_students/[^"]+_uncertainty\.jpg"', page)
    assert "<figcaption>uncertainty</figcaption>" in page
    detectors = pd.read_csv(project / "report/tables/detectors.csv")
    row = detectors[detectors["detector"] == "uninformed_students"].iloc[0]
    assert row["scale"] == "smoke" and "SMOKE SCALE" in row["notes"]


def check_routing(project: Path, table: pd.DataFrame, categories) -> None:
    """The routed model records where its router sent each test image; evaluate counts it, the
    report shows it, and `shiftad predict` without a category routes the same way."""
    routing = pd.read_csv(project / "results/metrics/routing.csv")
    routed = routing[(routing["detector"] == "routed_ae") & (routing["regime"] == "global")]
    per_run = routed.groupby(["scenario", "category"])["n"].sum()
    counts = table[(table["detector"] == "routed_ae") & (table["regime"] == "global")].set_index(["scenario", "category"])["n_test"]
    assert per_run.sort_index().tolist() == counts.loc[per_run.sort_index().index].tolist()  # every test image, once
    oracle = routing[(routing["detector"] == "routed_ae") & (routing["regime"] == "per_class")]
    assert (oracle["routed_category"] == oracle["category"]).all()  # per-class = oracle routing
    assert set(routing["detector"]) == {"routed_ae"}  # the other detectors do not route
    for name in ("tables/routing.md", "tables/routing.csv", "figures/routing_routed_ae.png"):
        assert (project / "report" / name).is_file(), name
    assert "AUROC predicted routing" in (project / "report/tables/routing.md").read_text()
    for model in ("clean", "camera_change"):
        thresholds = json.loads((project / f"results/models/routed_ae/global/{model}/seed0/all/thresholds.json").read_text())
        assert sorted(thresholds["categories"]) == sorted(categories)
    scores = {c: np.load(project / f"results/scores/routed_ae/global/seed0/clean_on_clean/test/{c}.npz") for c in categories}
    paths = [str(p) for c in categories for p in scores[c]["paths"]]
    out = project / "predictions_routed"
    run([str(BIN / "shiftad"), "predict", "--bundle", "results/bundles/routed_ae/global/clean", "--out", str(out), "--quiet", *paths], project)
    records = json.loads((out / "predictions.json").read_text())
    assert [r["routed_category"] for r in records] == [str(x) for c in categories for x in scores[c]["routed_categories"]]
    np.testing.assert_allclose([r["prediction"]["anomaly_score"] for r in records],
                               np.concatenate([scores[c]["image_scores"] for c in categories]), rtol=1e-5)
    for c in categories:
        predictions = json.loads((project / f"results/predictions/routed_ae/global/clean/{c}.json").read_text())
        assert [p["prediction"]["routed_category"] for p in predictions] == [str(x) for x in scores[c]["routed_categories"]]


def check_bundles(project: Path, table: pd.DataFrame, categories, detectors) -> None:
    """One bundle per fitted model; `shiftad predict` with a bundle reproduces the pipeline's
    test scores and uses the threshold validation chose (torch exactly, ONNX Runtime closely)."""
    params = project_params(project)
    for detector in detectors:
        for regime in ("per_class", "global"):
            for domain in params.fit_domains_of(detector):  # clean, and camera_change for refit.detectors
                meta = json.loads((project / f"results/bundles/{detector}/{regime}/{domain}/bundle.json").read_text())
                assert meta["categories"] == list(categories)
                # export chooses thresholds from the validation scores itself: the same as the evaluate stage's
                own = table[(table["detector"] == detector) & (table["regime"] == regime) & (table["model_domain"] == domain)
                            & (table["threshold_domain"] == domain) & (table["test_domain"] == domain)].drop_duplicates("category")
                assert sorted(own["category"]) == sorted(categories)
                for row in own.itertuples():
                    chosen = meta["thresholds"][row.category]
                    # scenarios.csv writes 6 significant digits; the bundle keeps the float itself
                    assert chosen["value"] == pytest.approx(row.threshold, rel=1e-5, abs=1e-9) and chosen["rule"] == row.threshold_rule
                if detector in ("efficientad", "uninformed_students"):  # no frozen feature network: torch only
                    assert meta["onnx"] is None
                else:
                    assert meta["onnx"]["parity_max_rel_diff"] <= 1e-4
    detector, category = detectors[-1], categories[0]
    scores = np.load(project / f"results/scores/{detector}/per_class/seed0/clean_on_clean/test/{category}.npz")
    clean = table[(table["detector"] == detector) & (table["regime"] == "per_class") & (table["scenario"] == "clean")
                  & (table["category"] == category)]
    for runtime, rtol in (("torch", 1e-5), ("onnx", 1e-3)):
        out = project / f"predictions_{runtime}"
        run([str(BIN / "shiftad"), "predict", "--bundle", f"results/bundles/{detector}/per_class/clean", "--category", category,
             "--out", str(out), "--runtime", runtime, "--quiet", *map(str, scores["paths"])], project)
        records = json.loads((out / "predictions.json").read_text())
        assert [r["filename"] for r in records] == list(scores["paths"])
        np.testing.assert_allclose([r["prediction"]["anomaly_score"] for r in records], scores["image_scores"], rtol=rtol, atol=rtol)
        thresholds = {r["prediction"]["threshold"] for r in records}
        assert len(thresholds) == 1 and thresholds.pop() == pytest.approx(float(clean["threshold"].iloc[0]), rel=1e-5)  # the CSV's 6 digits


def check_few_shot(project: Path, table: pd.DataFrame, categories, detectors) -> None:
    for domain in ["camera_change"]:  # params.yaml: the adaptations target camera_change
        fewshot = table[table["scenario_group"] == f"{domain}_fewshot"]
        assert sorted(fewshot["k"].unique()) == FEWSHOT_K and set(fewshot["detector"]) == set(detectors)
        assert (fewshot["test_domain"] == domain).all()
        # K = 0 is the clean bank with the domain's val threshold: threshold only, to the last digit
        k0 = fewshot[fewshot["k"] == 0].set_index(["detector", "regime", "category"])
        only = table[table["scenario"] == f"{domain}_threshold_only"].set_index(["detector", "regime", "category"]).loc[k0.index]
        pd.testing.assert_series_equal(k0["image_auroc"], only["image_auroc"])
        pd.testing.assert_series_equal(k0["threshold"], only["threshold"])
    for detector in detectors:
        grid = json.loads((project / f"results/models/{detector}/per_class/clean/seed0/{categories[0]}/meta.json").read_text())["feature_grid"]
        patches = int(np.prod(grid))  # one image's patches (blocks.2 of Lite0: 12 x 12 at 96 px)
        for regime, covered, model in (("per_class", 1, categories[0]), ("global", len(categories), GLOBAL_CATEGORY)):
            sizes = {k: int(np.load(project / f"results/fewshot/{detector}/{regime}/seed0/fewshot_k{k}_on_camera_change/test/{categories[0]}.npz")["memory_bank_size"])
                     for k in FEWSHOT_K if k}
            # K = 0 is the clean model itself: its bank
            sizes[0] = json.loads((project / f"results/models/{detector}/{regime}/clean/seed0/{model}/meta.json").read_text())["memory_bank_size"]
            assert sizes[4] - sizes[0] == 4 * patches * covered and sizes[1] - sizes[0] == patches * covered  # exactly their patches
    for detector in detectors:
        for category in categories:
            kshot = pd.read_csv(project / f"results/kshot/{detector}/{category}.csv")
            assert list(kshot["k"]) == [1, 1, 2, 2, 4, 4] and list(kshot["draw"]) == [0, 1] * 3
            assert kshot["image_auroc"].between(0, 1).all() and (kshot["memory_bank_size"] > 0).all()
            assert all(len(set(map(int, images.split()))) == k for images, k in zip(kshot["train_images"].astype(str), kshot["k"]))


def check_label_free(project: Path, table: pd.DataFrame, categories, detectors) -> None:
    """The label-free adaptations (PatchCore and PaDiM): K = 0 is threshold only; a bank stays the clean one."""
    for method, adapted in LABEL_FREE.items():
        runs = table[table["scenario_group"] == f"camera_change_{method}"]
        assert set(runs["detector"]) == adapted & set(detectors)
        assert runs.empty or sorted(runs["k"].unique()) == FEWSHOT_K
        for detector in adapted & set(detectors):
            only = table[(table["scenario"] == "camera_change_threshold_only") & (table["detector"] == detector)].set_index(["regime", "category"])
            k0 = runs[(runs["k"] == 0) & (runs["detector"] == detector)].set_index(["regime", "category"])
            pd.testing.assert_series_equal(k0["image_auroc"], only.loc[k0.index, "image_auroc"])
            # K = 0 is the clean model's own scores, not recomputed
            assert not (project / f"results/fewshot/{detector}/per_class/seed0/{method}_k0_on_camera_change").exists()
            files = [project / f"results/fewshot/{detector}/{regime}/seed0/{method}_k{k}_on_camera_change/test/{c}.npz"
                     for regime in ("per_class", "global") for k in FEWSHOT_K if k for c in categories]
            assert all(f.is_file() for f in files)
            if detector == "patchcore":
                assert len({int(np.load(f)["memory_bank_size"]) for f in files if "per_class" in str(f) and categories[0] in f.name}) == 1


def check_statistics(project: Path, table: pd.DataFrame, categories, detectors) -> None:
    stats = project / "results/statistics"
    intervals = pd.read_csv(stats / "intervals.csv")
    assert len(intervals) == (len(table) + len(table) // len(categories)) * 5  # each run: categories + mean, 5 metrics
    merged = intervals.merge(table, on=["detector", "regime", "scenario", "category"])
    for metric in ("image_auroc", "f1", "aupro"):
        rows = merged[merged["metric"] == metric]
        assert (rows["estimate"] - rows[metric]).abs().max() < 1e-5, metric  # the evaluate stage's exact numbers
    defined = intervals.dropna(subset=["ci_low"])
    assert (defined["ci_low"] <= defined["estimate"] + 1e-9).all() and (defined["estimate"] <= defined["ci_high"] + 1e-9).all()
    comparisons = pd.read_csv(stats / "comparisons.csv")
    assert {"scenario", "adaptation", "regime"} <= set(comparisons["family"])
    assert comparisons["p_bootstrap_holm"].dropna().between(0, 1).all()
    assert (comparisons["p_bootstrap_holm"] >= comparisons["p_bootstrap"] - 1e-12).all()
    robustness = pd.read_csv(stats / "robustness.csv")
    families = robustness[robustness["family"] != "contrast"]
    assert sorted(families["severity"].unique()) == [0, 1, 5]
    assert set(robustness["family"]) == {"geometric", "photometric", "illumination", "contrast"}
    swept = robustness[(robustness["family"] == "contrast") & (robustness["category"] == "mean")].set_index(["detector", "severity"])
    assert sorted(swept.index.get_level_values("severity").unique()) == [0, 3]
    domain = intervals[(intervals["category"] == "mean") & (intervals["metric"] == "image_auroc") & (intervals["regime"] == "per_class")
                       ].set_index(["detector", "scenario"])["estimate"]
    swept_detectors = project_params(project).robustness.detectors
    assert sorted(swept.index.get_level_values("detector").unique()) == sorted(d for d in detectors if d in swept_detectors)
    assert set(swept_detectors) == {"patchcore", "padim", "knn", "routed_ae"} & set(detectors)  # params.yaml: no trained detector
    for detector in swept_detectors:  # the sweep's corruption condition is the corruption domain's test set, scored by the same models
        assert swept.loc[(detector, 3), "image_auroc"] == pytest.approx(domain[(detector, "contrast_no_adaptation")], abs=1e-6), detector
    breakdowns = pd.read_csv(stats / "breakdowns.csv")
    assert {"defect_type", "defect_size"} == set(breakdowns["breakdown"])
    cross = pd.read_csv(stats / "cross_shift.csv")
    params = project_params(project)
    for detector in detectors:  # a row per domain the detector is fitted on
        rows = cross[cross["detector"] == detector]
        assert set(zip(rows["model_domain"], rows["test_domain"])) == {("clean", d) for d in ["clean", *DOMAINS]} | (
            {("camera_change", "clean"), ("camera_change", "camera_change")} if "camera_change" in params.fit_domains_of(detector) else set())
    mean = cross[cross["category"] == "mean"].set_index(["detector", "regime", "model_domain", "test_domain"])["image_auroc"]
    same = intervals[(intervals["category"] == "mean") & (intervals["metric"] == "image_auroc")].set_index(["detector", "regime", "scenario"])["estimate"]
    for detector in detectors:  # the matrix's cells are the scenarios' numbers where both exist
        assert mean[(detector, "per_class", "clean", "camera_change")] == pytest.approx(same[(detector, "per_class", "camera_change_no_adaptation")], abs=1e-6)
        if "camera_change" in params.fit_domains_of(detector):
            assert mean[(detector, "global", "camera_change", "camera_change")] == pytest.approx(same[(detector, "global", "camera_change_refit")], abs=1e-6)
    if "patchcore" in detectors:
        coreset = pd.concat([pd.read_csv(project / f"results/kshot/patchcore/coreset_{c}.csv") for c in categories])
        assert sorted(coreset["coreset_ratio"].unique()) == [0.01, 0.05, 0.1, 0.25] and set(coreset["test_domain"]) == {"clean", *DOMAINS}
        banks = coreset.groupby("coreset_ratio")["memory_bank_size"].mean()
        assert banks.is_monotonic_increasing and coreset["image_auroc"].between(0, 1).all()
    headline = json.loads((stats / "headline.json").read_text())
    value = headline[detectors[-1]]["per_class"]["clean"]["image_auroc"]
    assert value["ci_low"] <= value["value"] <= value["ci_high"]


def check_report(project: Path, detectors) -> None:
    from shiftad.report.html import check_links

    report = project / "report"
    for name in ("index.html", "index.md", "tables/headline.csv", "tables/headline.md", "tables/headline.tex",
                 "tables/comparisons.tex", "tables/robustness.md", f"figures/curves_{detectors[-1]}_per_class.png",
                 f"figures/curves_{detectors[-1]}_per_class.pdf", "figures/robustness_image_auroc.png",
                 "figures/shift_effects_image_auroc.pdf", f"figures/scores_{detectors[-1]}_global.png",
                 "tables/kshot.md", "tables/kshot_categories.csv", "tables/fewshot_recovery_camera_change.tex", "figures/kshot_image_auroc.png",
                 "figures/fewshot_recovery_camera_change_image_auroc.png", "figures/fewshot_recovery_camera_change_aupro.pdf",
                 "figures/adaptation_camera_change_image_auroc.png", "tables/cross_shift.md", "figures/cross_shift_per_class.png",
                 "tables/coreset.csv", "figures/coreset_tradeoff.png",
                 "tables/domains.md", "tables/domain_recovery.csv", "tables/corruptions.md",
                 f"figures/gallery_{detectors[-1]}_per_class_clean.png", "notebooks/04_shift_analysis.html",
                 "notebooks/05_statistics.ipynb"):
        assert (report / name).is_file(), name
    assert "\\toprule" in (report / "tables/headline.tex").read_text()
    headline = pd.read_csv(report / "tables/headline.csv")
    assert {"clean", *(f"{d}_no_adaptation" for d in DOMAINS)} <= set(headline["scenario"])  # every domain in the headline
    recovery = pd.read_csv(report / "tables/domain_recovery.csv")
    assert set(recovery["domain"]) == set(DOMAINS)
    refit = recovery[(recovery["step"] == "refit")]
    assert set(refit["domain"]) == {"camera_change"}  # the only fitted shift domain
    row = recovery[(recovery["step"] == "refit") & (recovery["detector"] == detectors[-1])].iloc[0]
    none = recovery[(recovery["domain"] == row["domain"]) & (recovery["detector"] == row["detector"]) & (recovery["regime"] == row["regime"])]
    clean, lost = (float(none.loc[none["step"] == s, "estimate"].iloc[0]) for s in ("clean", "no adaptation"))
    if clean - lost >= 0.02:
        assert row["recovered"] == pytest.approx((row["estimate"] - lost) / (clean - lost), rel=1e-4)  # the CSV keeps 6 digits
    page = (report / "index.html").read_text()
    assert check_links(report / "index.html") == []
    assert "://" not in page.replace("http://www.w3.org", "")  # self-contained: relative links only
    assert page.count('class="tile') >= 10 and "Anomalous" in page and "notebooks/01_data_exploration.html" in page


def check_page_renders(page: Path, png: Path) -> None:
    """The real report in headless Chromium: it renders (tables, figures), not a blank page."""
    import numpy as np
    from PIL import Image

    from shiftad.report.browser import find_chromium, screenshot

    if find_chromium() is None:
        pytest.skip("chromium not installed (apt-get install chromium): the rendered page was not checked")
    screenshot(page, png, width=1280, height=2000)
    pixels = np.asarray(Image.open(png).convert("L"))
    assert pixels.shape == (2000, 1280)
    dark = pixels < 100  # text and table rules
    assert dark.mean() > 0.01 and dark[:400].any() and dark[1500:].any(), "the page looks blank"


DATA_FILES = ["data/processed/manifest.json", "data/processed/splits.json", *(f"data/processed/domains/{d}.json" for d in DOMAINS)]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """The whole tiny study, run once by Snakemake; the checks below share it (in file order:
    the later ones rerun stages in place)."""
    project = copy_project(tmp_path_factory.mktemp("study"))
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml"], project)
    return project


def test_snakemake_runs_the_whole_study(tiny_study):
    check_outputs(tiny_study)
    features = sorted((tiny_study / "results/features").glob("*/*/spec.json"))
    assert [f.parent.parent.name for f in features] == ["robustness", "study"]  # one network for PatchCore, PaDiM, kNN, routed AE
    for detector in ("patchcore", "padim"):
        logs = [*(tiny_study / "logs/score").glob(f"{detector}_*.log"), tiny_study / f"logs/robustness/{detector}.log"]
        assert len(logs) == 3  # one scoring job per regime (every fitted domain's models), one sweep
        for log in logs:  # every frozen-network batch came from the store, the sweep's images too
            uses = re.findall(rf"{detector}: \d+ images' features from the store, (\d+) through the network", log.read_text())
            assert uses and set(uses) == {"0"}, (log, uses)


def test_every_job_leaves_a_benchmark_file_that_the_profile_reads(tiny_study):
    out = run([sys.executable, str(REPO / "benchmarks/profile_dag.py"), "--configfile", "tiny.yaml"], tiny_study)
    jobs = int(re.search(r"^(\d+) jobs; wall", out, re.M).group(1))
    dry = run([str(BIN / "snakemake"), "-n", "--forceall", "--configfile", "tiny.yaml"], tiny_study)
    assert jobs == int(re.search(r"^total\s+(\d+)$", dry, re.M).group(1)) - 1  # every job but `all`
    assert re.search(r"^critical path: \d+ s over \d+ jobs", out, re.M) and "have no benchmark file" not in out


def test_a_resources_only_override_reruns_nothing(tiny_study):
    (tiny_study / "cluster.yaml").write_text(yaml.safe_dump({"resources": {"mem_mb": 2000, "rules": {"fit": {"runtime": 90}}}}))
    dry = run([str(BIN / "snakemake"), "-n", "--configfile", "tiny.yaml", "cluster.yaml"], tiny_study)
    assert "Nothing to be done" in dry, dry[-2000:]


def test_snakemakes_report_and_the_page(tiny_study, tmp_path):
    run([str(BIN / "snakemake"), "--configfile", "tiny.yaml", "--report", "report/snakemake.html"], tiny_study)
    assert "curves_patchcore_per_class" in (tiny_study / "report/snakemake.html").read_text(errors="replace")
    check_page_renders(tiny_study / "report/index.html", tmp_path / "page.png")


def test_one_seed_gives_identical_data(tiny_study):
    before = {name: (tiny_study / name).read_bytes() for name in DATA_FILES}
    shifted_image = next((tiny_study / "data/domains/camera_change").rglob("*.png"))
    image_bytes = shifted_image.read_bytes()
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml", "--forcerun", "data", "--until", "shift"], tiny_study)
    assert {name: (tiny_study / name).read_bytes() for name in DATA_FILES} == before
    assert shifted_image.read_bytes() == image_bytes


def test_the_result_stages_import_no_deep_learning_stack_and_one_process_writes_what_workers_wrote(tiny_study):
    """The DAG ran evaluate, statistics, notebooks and report with two worker processes (params'
    resources.rules); rerun here in one process each, they write byte-identical tables and figures."""
    def snapshot() -> dict[str, bytes]:
        files = [*(tiny_study / "results/statistics").glob("*.*"), *(tiny_study / "report/figures").glob("*.*"),
                 *(tiny_study / "results/metrics").glob("*.*")]
        return {f.relative_to(tiny_study).as_posix(): f.read_bytes() for f in files if not f.name.startswith(".")}

    before = snapshot()
    assert len(before) > 20
    check_result_stages_import_no_deep_learning_stack(tiny_study, threads=1)
    after = snapshot()
    assert after.keys() == before.keys()
    assert [name for name in before if after[name] != before[name]] == []


# Runs a stage as its job does, then prints the deep-learning modules the process had loaded.
STAGE_PROBE = ("import json, sys\nfrom shiftad.cli import main\nstatus = main(sys.argv[1:])\n"
               "print('loaded:', json.dumps(sorted(m for m in ('torch', 'timm', 'torchvision', 'faiss') if m in sys.modules)))\nsys.exit(status)")


def check_result_stages_import_no_deep_learning_stack(project: Path, threads: int | None = None) -> None:
    """A job pays only for what it uses: the stages that read results run for real (on this
    run's outputs, rewriting them) without loading torch, timm, torchvision or faiss."""
    for stage in ("evaluate", "statistics", "report"):
        extra = ["--threads", str(threads)] if threads else []
        out = run([sys.executable, "-c", STAGE_PROBE, stage, "--params", "params.yaml", "--params", "tiny.yaml", "--quiet", *extra], project)
        loaded = json.loads(re.search(r"^loaded: (.*)$", out, re.M).group(1))
        assert loaded == [], f"shiftad {stage} loaded {loaded}"


def check_two_seeds(project: Path) -> None:
    """seeds: [0, 1]: each seed fits its own models (the seed reaches the detector), and the
    statistics and the headline put the across-seed spread next to the bootstrap CI."""
    banks = [load_file(project / f"results/models/patchcore/per_class/clean/seed{s}/widget/memory_bank.safetensors")["memory_bank"]
             for s in (0, 1)]
    assert banks[0].shape == banks[1].shape and not np.array_equal(banks[0], banks[1])  # another coreset draw
    seeds = pd.read_csv(project / "results/metrics/seeds.csv")
    table = pd.read_csv(project / "results/metrics/scenarios.csv")
    assert sorted(seeds["seed"].unique()) == [0, 1] and len(seeds) == 2 * len(table)
    intervals = pd.read_csv(project / "results/statistics/intervals.csv")
    assert (intervals["n_seeds"] == 2).all() and intervals["seed_sd"].notna().all()
    headline = json.loads((project / "results/statistics/headline.json").read_text())
    cell = headline["patchcore"]["per_class"]["clean"]["image_auroc"]
    assert cell["n_seeds"] == 2 and cell["seed_min"] <= cell["seed_max"] and {"ci_low", "ci_high", "seed_sd"} <= set(cell)
    page = (project / "report/index.md").read_text()
    assert "± is the sd of the macro mean over 2 training seeds (0, 1)" in page


def git(args: list[str], cwd: Path) -> str:
    return run(["git", "-c", "user.name=shiftad-test", "-c", "user.email=test@shiftad.invalid", *args], cwd)


def check_remote_round_trip(project: Path, tmp_path: Path) -> None:
    """Push the run's artifacts to a local-folder DVC remote, clone the repo elsewhere, pull:
    DVC sees everything up to date and Snakemake has nothing to recompute."""
    shutil.copy(REPO / ".gitignore", project / ".gitignore")
    run([str(BIN / "dvc"), "remote", "add", "-d", "shared", str(tmp_path / "remote")], project)
    run([str(BIN / "dvc"), "push"], project)
    git(["add", "-A"], project)
    git(["commit", "-qm", "study"], project)
    assert not any(line.split()[-1].startswith(("results/", "data/")) and not line.endswith((".gitignore", "README.md"))
                   for line in git(["ls-files"], project).splitlines()), "git holds results"
    clone = tmp_path / "clone"
    git(["clone", "-q", str(project), str(clone)], tmp_path)
    run([str(BIN / "dvc"), "pull"], clone)
    assert "up to date" in run([str(BIN / "dvc"), "status"], clone).lower()
    for name in ("results/statistics/headline.json", "results/metrics/seeds.csv", "report/index.html"):
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name
    run([str(BIN / "snakemake"), "--touch", "--cores", "1"], clone)  # pulled files have new times in any order: mark them current
    dry = run([str(BIN / "snakemake"), "-n"], clone)
    assert "Nothing to be done" in dry, dry[-2000:]


def test_dvc_repro_two_seeds_remote_round_trip_and_reruns_only_what_a_patchcore_param_touches(tmp_path):
    project = copy_project(tmp_path / "project")
    params = deep_merge(yaml.safe_load((project / "params.yaml").read_text()), yaml.safe_load((project / "tiny.yaml").read_text()))
    params.update(detectors=["patchcore"], categories=["widget"], seeds=[0, 1])  # stage behaviour, not coverage: keep it quick
    for section in ("few_shot", "refit", "robustness"):
        params[section]["detectors"] = ["patchcore"]
    params["few_shot"]["adaptation_detectors"] = ["patchcore"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "repro"], project)
    check_outputs(project, categories=("widget",), detectors=("patchcore",))
    check_two_seeds(project)
    metrics = run([str(BIN / "dvc"), "metrics", "show"], project)
    assert "image_auroc" in metrics and "ci_low" in metrics  # headline.json: macro means with CIs
    run([str(BIN / "dvc"), "plots", "show", "-o", "dvc_plots"], project)
    assert (project / "dvc_plots/index.html").is_file()
    assert "up to date" in run([str(BIN / "dvc"), "status"], project).lower()
    check_remote_round_trip(project, tmp_path)

    params["patchcore"]["coreset_ratio"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([str(BIN / "dvc"), "status", "--json"], project)
    changed = set(json.loads(status[status.index("{"):]))
    fits = ({f"fit@patchcore-{r}-{seed}" for r in ("per_class", "global") for seed in (0, 1)}  # the clean models
            | {f"refit@patchcore-{r}-camera_change-{seed}" for r in ("per_class", "global") for seed in (0, 1)})
    assert changed == fits | {"kshot@patchcore"}, changed  # later stages follow once fit's outputs change
    manifest_mtime = (project / "data/processed/manifest.json").stat().st_mtime_ns
    log = run([str(BIN / "dvc"), "repro"], project)
    for stage in ("data", "split", *(f"shift@{d}" for d in DOMAINS)):
        assert f"Stage '{stage}' didn't change, skipping" in log, stage
    scores = {f"score@patchcore-{r}-{seed}" for r in ("per_class", "global") for seed in (0, 1)}
    fewshot = {f"fewshot@patchcore-{r}-{seed}" for r in ("per_class", "global") for seed in (0, 1)}
    for stage in sorted(fits | scores | fewshot) + ["kshot@patchcore", "evaluate", "robustness@patchcore", "statistics", "notebooks", "report"]:
        assert f"Running stage '{stage}'" in log, stage
    assert (project / "data/processed/manifest.json").stat().st_mtime_ns == manifest_mtime


def test_jobs_that_share_no_filesystem_work_only_through_storage(tmp_path):
    """What profiles/kubernetes relies on: with a default storage provider Snakemake copies each
    job's declared inputs out of the storage and its outputs back, and the CLI works inside
    that copy (--root). Run here with the fs provider on a local folder: the whole DAG must
    complete with every file in the storage and nothing written to the project folder (an
    undeclared input or output would fail a job or land outside)."""
    if shutil.which("rsync") is None:
        pytest.skip("Snakemake's fs storage plugin needs rsync (apt-get install rsync)")
    project = copy_project(tmp_path / "project")
    (project / "small.yaml").write_text(yaml.safe_dump({"detectors": ["patchcore"], "categories": ["widget"],
                                                        "few_shot": {"detectors": ["patchcore"], "adaptation_detectors": ["patchcore"]},
                                                        "refit": {"detectors": ["patchcore"]}, "robustness": {"detectors": ["patchcore"]}}))
    store = tmp_path / "store"
    store.mkdir()
    log = run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml", "small.yaml", "--printshellcmds",
               "--default-storage-provider", "fs", "--default-storage-prefix", str(store)], project)
    commands = [line for line in log.splitlines() if "shiftad " in line and "--params " in line]
    assert commands and all(f"--root .snakemake/storage/fs{store}" in c for c in commands), commands[:3]
    for name in ("data/processed/manifest.json", "results/metrics/scenarios.csv", "results/statistics/headline.json",
                 "results/bundles/patchcore/per_class/clean/bundle.json", "report/index.html", "report/notebooks"):
        assert (store / name).exists(), name
    assert not any((project / d).exists() for d in ("data", "results", "report")), "a stage wrote outside the storage"
    headline = json.loads((store / "results/statistics/headline.json").read_text())
    assert 0 <= headline["patchcore"]["per_class"]["clean"]["image_auroc"]["value"] <= 1


def test_a_public_layout_runs_through_snakemake_with_only_dataset_and_categories(tmp_path):
    """VisA as published (its split file, JPEG images, masks holding defect indices): Snakemake
    with an override of `dataset` and `categories` only, through the data and split stages (every
    later stage reads the manifest and the splits, whatever the source)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from test_layouts import write_visa

    project = copy_project(tmp_path / "project")
    write_visa(tmp_path / "VisA")
    (project / "visa.yaml").write_text(yaml.safe_dump({"dataset": {"source": "visa", "root": str(tmp_path / "VisA")}, "categories": ["candle"]}))
    run([str(BIN / "snakemake"), "--cores", "1", "--configfile", "visa.yaml", "--until", "split"], project)
    assert "candle: 5 images: test/anomaly: 1 (masks); test/good: 1; train/good: 3" in (project / "logs/data.log").read_text()
    candle = json.loads((project / "data/processed/splits.json").read_text())["categories"]["candle"]
    assert sorted(sum(candle.values(), [])) == sorted(str(p) for p in (tmp_path / "VisA" / "candle").rglob("*.JPG"))
    assert not any("Anomaly" in path for path in candle["train"])  # never an anomalous image in training
