"""Where each stage reads and writes (relative to the project root)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

RAW_DIR = Path("data/raw")
MANIFEST = Path("data/processed/manifest.json")
SPLITS = Path("data/processed/splits.json")
DOMAINS_DIR = Path("data/domains")  # `shiftad shift --domain D`: the images of shift domain D under data/domains/D/
DOMAIN_SPLITS_DIR = Path("data/processed/domains")  # ... and their records, data/processed/domains/D.json
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
    """The records of a domain's splits: clean = splits.json (paths into the manifest), a shift domain its own file."""
    return SPLITS if domain == "clean" else DOMAIN_SPLITS_DIR / f"{domain}.json"


def domain_images_dir(domain: str) -> Path:
    """Where the shift stage writes a shift domain's images."""
    return DOMAINS_DIR / domain


def robustness_file(detector: str, category: str) -> Path:
    return ROBUSTNESS_DIR / detector / f"{category}.npz"


def is_adapted_model(model_key: str) -> bool:
    """An adapted model's key, `<adaptation>_k<K>` (fewshot_k8, feature_align_k4), not a domain."""
    import re

    return re.fullmatch(r"(fewshot|feature_align|adabn)_k\d+", model_key) is not None


def scores_file(detector: str, regime: str, model_domain: str, data_domain: str, split: str, category: str, seed: int) -> Path:
    """Scores of the `model_domain` model (training seed `seed`) on the `data_domain` images of one
    split and category (`<adaptation>_k<K>`: the clean model adapted to K normals of `data_domain`, under results/fewshot/)."""
    root = FEWSHOT_DIR if is_adapted_model(model_domain) else SCORES_DIR
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
