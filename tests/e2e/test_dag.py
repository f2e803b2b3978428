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
METRICS = ["image_auroc", "image_auprc", "f1", "precision", "recall", "accuracy", "pixel_auroc", "aupro", "threshold"]


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


def check_outputs(project: Path) -> pd.DataFrame:
    manifest = {r["path"]: r for r in json.loads((project / "data/processed/manifest.json").read_text())["records"]}
    splits = json.loads((project / "data/processed/splits.json").read_text())["categories"]
    assert sorted(splits) == ["brick", "widget"]
    for parts in splits.values():
        assert parts["train"] and not any(manifest[p]["label"] for p in parts["train"])
        assert any(manifest[p]["label"] for p in parts["val"]), "f1_max needs anomalies in val"
    table = pd.read_csv(project / "results/metrics/scenarios.csv")
    assert sorted(table["category"]) == ["brick", "widget"]
    assert table[["image_auroc", "pixel_auroc", "aupro"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["threshold_rule"] == "f1_max").all()
    for category in ("brick", "widget"):
        records = json.loads((project / f"results/predictions/patchcore/per_class/clean/{category}.json").read_text())
        assert len(records) == len(splits[category]["test"])
        for record in records:
            assert set(record) == {"filename", "ground_truth", "prediction", "correct"}
            assert (project / record["prediction"]["heatmap_path"]).is_file()
    for name in ("tables/metrics.csv", "tables/metrics.md", "figures/roc_patchcore_per_class_clean.png",
                 "figures/gallery_patchcore_per_class_clean.png", "index.md"):
        assert (project / "report" / name).is_file(), name
    summary = json.loads((project / "results/metrics/summary.json").read_text())
    assert 0 <= summary["patchcore"]["per_class"]["clean"]["image_auroc"] <= 1
    return table


def test_snakemake_runs_the_dag_and_one_seed_gives_identical_results(tmp_path):
    project = copy_project(tmp_path)
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml"], project)
    first = check_outputs(project)
    splits = (project / "data/processed/splits.json").read_bytes()
    manifest = (project / "data/processed/manifest.json").read_bytes()
    run([str(BIN / "snakemake"), "--cores", "2", "--configfile", "tiny.yaml", "--forceall"], project)
    second = check_outputs(project)
    assert (project / "data/processed/splits.json").read_bytes() == splits
    assert (project / "data/processed/manifest.json").read_bytes() == manifest
    pd.testing.assert_frame_equal(first[METRICS], second[METRICS])


def test_dvc_repro_reruns_only_what_a_patchcore_param_touches(tmp_path):
    project = copy_project(tmp_path)
    params = deep_merge(yaml.safe_load((project / "params.yaml").read_text()), yaml.safe_load((project / "tiny.yaml").read_text()))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], project)
    run([str(BIN / "dvc"), "repro"], project)
    check_outputs(project)
    assert "image_auroc" in run([str(BIN / "dvc"), "metrics", "show"], project)
    assert "up to date" in run([str(BIN / "dvc"), "status"], project).lower()

    params["patchcore"]["coreset_ratio"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([str(BIN / "dvc"), "status", "--json"], project)
    changed = set(json.loads(status[status.index("{"):]))
    fits = {f"fit@patchcore-per_class-clean-{c}" for c in ("brick", "widget")}
    assert changed == fits, changed  # later stages follow once fit's outputs change
    manifest_mtime = (project / "data/processed/manifest.json").stat().st_mtime_ns
    log = run([str(BIN / "dvc"), "repro"], project)
    assert "Stage 'data' didn't change, skipping" in log and "Stage 'split' didn't change, skipping" in log
    scores = {f"score@patchcore-per_class-clean-clean-{c}" for c in ("brick", "widget")}
    for stage in sorted(fits | scores) + ["evaluate", "report"]:
        assert f"Running stage '{stage}'" in log, stage
    assert (project / "data/processed/manifest.json").stat().st_mtime_ns == manifest_mtime
