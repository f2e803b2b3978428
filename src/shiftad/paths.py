"""Where each stage reads and writes (relative to the project root)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

RAW_DIR = Path("data/raw")
MANIFEST = Path("data/processed/manifest.json")
SPLITS = Path("data/processed/splits.json")
SHIFTED_DIR = Path("data/shifted")
SHIFTED_SPLITS = Path("data/processed/shifted_splits.json")
MODELS_DIR = Path("results/models")
SCORES_DIR = Path("results/scores")
METRICS_DIR = Path("results/metrics")
PREDICTIONS_DIR = Path("results/predictions")
HEATMAPS_DIR = Path("results/heatmaps")
PLOTS_DIR = Path("results/plots")
ROC_DIR = PLOTS_DIR / "roc"  # one CSV per run and category: DVC plots, `dvc plots diff`
PR_DIR = PLOTS_DIR / "pr"
STATISTICS_DIR = Path("results/statistics")
ROBUSTNESS_DIR = Path("results/robustness")
KSHOT_DIR = Path("results/kshot")
FEWSHOT_DIR = Path("results/fewshot")  # score files of the few-shot adapted banks (one DVC output per detector, regime)
BUNDLES_DIR = Path("results/bundles")  # `shiftad export`: one bundle per fitted model
TEACHERS_DIR = Path("results/teachers")  # `shiftad distill-teacher`: networks shared by every category
REPORT_DIR = Path("report")


def seed_folder(seed: int) -> str:
    """The folder level of a training seed (params `seeds`)."""
    return f"seed{seed}"


def model_dir(detector: str, regime: str, domain: str, category: str, seed: int) -> Path:
    """A fitted model (training seed `seed`): state files + meta.json."""
    return MODELS_DIR / detector / regime / domain / seed_folder(seed) / category


def domain_splits_file(domain: str) -> Path:
    return SPLITS if domain == "clean" else SHIFTED_SPLITS


def robustness_file(detector: str, category: str) -> Path:
    return ROBUSTNESS_DIR / detector / f"{category}.npz"


def scores_file(detector: str, regime: str, model_domain: str, data_domain: str, split: str, category: str, seed: int) -> Path:
    """Scores of the `model_domain` model (training seed `seed`) on the `data_domain` images of one
    split and category (`fewshot_k<K>`: the clean bank plus K shifted normals, under results/fewshot/)."""
    root = FEWSHOT_DIR if model_domain.startswith("fewshot_k") else SCORES_DIR
    return root / detector / regime / seed_folder(seed) / f"{model_domain}_on_{data_domain}" / split / f"{category}.npz"


EXTRA_MAP_PREFIX = "extra_map_"  # score-file key of a detector's auxiliary map `<name>`: extra_map_<name>


def extra_map_names(keys: Iterable[str]) -> list[str]:
    """Names of the auxiliary maps (`Scores.extra_maps`) among a score file's keys (a loaded npz dict), sorted."""
    return sorted(key[len(EXTRA_MAP_PREFIX):] for key in keys if key.startswith(EXTRA_MAP_PREFIX))


def curve_file(detector: str, regime: str, scenario: str, category: str) -> str:
    """File name of one ROC / PR curve (flat, so `dvc plots` lists one plot per curve)."""
    return f"{detector}__{regime}__{scenario}__{category}.csv"


def parse_curve_file(name: str) -> dict[str, str]:
    detector, regime, scenario, category = Path(name).stem.split("__")
    return {"detector": detector, "regime": regime, "scenario": scenario, "category": category}


def bundle_dir(detector: str, regime: str, domain: str) -> Path:
    return BUNDLES_DIR / detector / regime / domain


def teacher_dir(detector: str = "efficientad") -> Path:
    """The teacher a detector's fits share (weights + teacher.json)."""
    return TEACHERS_DIR / detector
