"""The real DAG on a tiny config, in a temp copy of the project: Snakemake, then DVC."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from shiftad.params import deep_merge

from conftest import REPO

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc/config", ".dvcignore"]


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


SCENARIOS = ["clean", "shift_adapted", "shift_no_adaptation", "shift_threshold_only"]


def check_outputs(project: Path, categories=("brick", "widget"), detectors=("padim", "patchcore")) -> pd.DataFrame:
    manifest = {r["path"]: r for r in json.loads((project / "data/processed/manifest.json").read_text())["records"]}
    splits = json.loads((project / "data/processed/splits.json").read_text())["categories"]
    assert sorted(splits) == sorted(categories)
    shifted = json.loads((project / "data/processed/shifted_splits.json").read_text())["categories"]
    for category, parts in shifted.items():
        for split, entries in parts.items():
            assert [e["source_path"] for e in entries] == splits[category][split]
            assert all((project / e["path"]).is_file() and "shifted" in e["path"] for e in entries)
    for parts in splits.values():
        assert parts["train"] and not any(manifest[p]["label"] for p in parts["train"])
        assert any(manifest[p]["label"] for p in parts["val"]), "f1_max needs anomalies in val"
    table = pd.read_csv(project / "results/metrics/scenarios.csv")
    assert set(table["category"]) == set(categories)
    assert table[["image_auroc", "pixel_auroc", "aupro"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["threshold_rule"] == "f1_max").all()
    # every detector x regime x scenario x category, once
    assert len(table) == len(detectors) * 2 * 4 * len(categories)
    assert sorted(table["scenario"].unique()) == SCENARIOS and sorted(table["regime"].unique()) == ["global", "per_class"]
    shifted_rows = table[table["test_domain"] == "shift"]
    assert (shifted_rows["shift_severity"] == 3).all() and table.loc[table["test_domain"] == "clean", "shift_severity"].isna().all()
    # threshold-only reuses the no-adaptation scores: same ranking, threshold from shifted val
    a = table[table["scenario"] == "shift_no_adaptation"].set_index(["detector", "regime", "category"])
    b = table[table["scenario"] == "shift_threshold_only"].set_index(["detector", "regime", "category"])
    pd.testing.assert_series_equal(a["image_auroc"], b["image_auroc"])
    effects = pd.read_csv(project / "results/metrics/shift_effects.csv")
    mean = effects[(effects["category"] == "mean") & (effects["metric"] == "image_auroc")]
    assert len(mean) == len(detectors) * 2
    assert (mean["degradation"] - (mean["clean"] - mean["shift_no_adaptation"])).abs().max() < 1e-5  # CSV keeps 6 digits
    for category in categories:
        records = json.loads((project / f"results/predictions/{detectors[-1]}/per_class/shift_adapted/{category}.json").read_text())
        assert len(records) == len(shifted[category]["test"])
        for record in records:
            assert set(record) == {"filename", "ground_truth", "prediction", "correct"}
            assert (project / record["prediction"]["heatmap_path"]).is_file()
    for name in ("tables/metrics.csv", "tables/metrics.md", f"figures/roc_{detectors[-1]}_global_shift_adapted.png",
                 f"figures/gallery_{detectors[-1]}_per_class_clean.png", "index.md"):
        assert (project / "report" / name).is_file(), name
    summary = json.loads((project / "results/metrics/summary.json").read_text())
    assert 0 <= summary[detectors[-1]]["global"]["shift_adapted"]["image_auroc"] <= 1
    return table


DATA_FILES = ["data/processed/manifest.json", "data/processed/splits.json", "data/processed/shifted_splits.json"]


def test_snakemake_runs_the_whole_study_and_one_seed_gives_identical_data(tmp_path):
    project = copy_project(tmp_path)
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml"], project)
    check_outputs(project)
    before = {name: (project / name).read_bytes() for name in DATA_FILES}
    shifted_image = next((project / "data/shifted").rglob("*.png"))
    image_bytes = shifted_image.read_bytes()
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml", "--forcerun", "data", "--until", "shift"], project)
    assert {name: (project / name).read_bytes() for name in DATA_FILES} == before
    assert shifted_image.read_bytes() == image_bytes


def test_dvc_repro_reruns_only_what_a_patchcore_param_touches(tmp_path):
    project = copy_project(tmp_path)
    params = deep_merge(yaml.safe_load((project / "params.yaml").read_text()), yaml.safe_load((project / "tiny.yaml").read_text()))
    params.update(detectors=["patchcore"], categories=["widget"])  # stage behaviour, not coverage: keep it quick
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "repro"], project)
    check_outputs(project, categories=("widget",), detectors=("patchcore",))
    assert "image_auroc" in run([str(BIN / "dvc"), "metrics", "show"], project)
    assert "up to date" in run([str(BIN / "dvc"), "status"], project).lower()

    params["patchcore"]["coreset_ratio"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([str(BIN / "dvc"), "status", "--json"], project)
    changed = set(json.loads(status[status.index("{"):]))
    fits = {f"fit@patchcore-{d}-widget" for d in ("clean", "shift")} | {f"fit_global@patchcore-{d}" for d in ("clean", "shift")}
    assert changed == fits, changed  # later stages follow once fit's outputs change
    manifest_mtime = (project / "data/processed/manifest.json").stat().st_mtime_ns
    log = run([str(BIN / "dvc"), "repro"], project)
    for stage in ("data", "split", "shift"):
        assert f"Stage '{stage}' didn't change, skipping" in log, stage
    scores = {f"score@patchcore-{m}-widget" for m in ("clean", "shift")} | {f"score_global@patchcore-{m}-widget" for m in ("clean", "shift")}
    for stage in sorted(fits | scores) + ["evaluate", "report"]:
        assert f"Running stage '{stage}'" in log, stage
    assert (project / "data/processed/manifest.json").stat().st_mtime_ns == manifest_mtime
