"""Loaders for what the evaluate and statistics stages wrote, as data frames.

Shared by the report stage and the notebooks, so both show the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from shiftad.io import read_json
from shiftad.paths import KSHOT_DIR, METRICS_DIR, PR_DIR, PREDICTIONS_DIR, ROC_DIR, STATISTICS_DIR, parse_curve_file

STATISTICS_TABLES = ("intervals", "comparisons", "breakdowns", "robustness", "errors", "cross_shift")


def read_curves(folder: Path) -> pd.DataFrame:
    """Every curve file of `results/plots/roc` or `pr`, tagged with detector, regime, scenario, category."""
    frames = [pd.read_csv(f).assign(**parse_curve_file(f.name)) for f in sorted(Path(folder).glob("*.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_predictions(scenarios: pd.DataFrame, root: Path = Path(".")) -> pd.DataFrame:
    """One row per test image and run: score, ground truth, threshold, heatmap and mask paths."""
    rows = []
    for row in scenarios.itertuples():
        for p in read_json(root / PREDICTIONS_DIR / row.detector / row.regime / row.scenario / f"{row.category}.json"):
            rows.append({"detector": row.detector, "regime": row.regime, "scenario": row.scenario, "category": row.category,
                         "score": p["prediction"]["anomaly_score"], "is_anomalous": p["ground_truth"]["is_anomalous"],
                         "threshold": row.threshold, "filename": p["filename"], "heatmap_path": p["prediction"]["heatmap_path"],
                         "mask_path": p["ground_truth"].get("mask_path"), "defect_type": p["ground_truth"]["defect_type"],
                         "correct": p["correct"]})
    return pd.DataFrame(rows)


@dataclass
class Results:
    scenarios: pd.DataFrame  # point metrics per run and category (evaluate)
    intervals: pd.DataFrame  # metrics with bootstrap CIs, incl. the macro mean (category "mean")
    comparisons: pd.DataFrame
    breakdowns: pd.DataFrame
    robustness: pd.DataFrame
    errors: pd.DataFrame
    cross_shift: pd.DataFrame  # each fitted domain's models on every scored domain: image AUROC with CIs
    roc: pd.DataFrame
    pr: pd.DataFrame
    kshot: pd.DataFrame  # K-shot learning curves, one row per detector, category, K and draw (empty without)
    coreset: pd.DataFrame  # memory-bank size trade-off, one row per detector, category, coreset ratio and test domain
    routing: pd.DataFrame  # where routing detectors sent the test images (evaluate; empty without one)

    def predictions(self, root: Path = Path(".")) -> pd.DataFrame:
        return read_predictions(self.scenarios, root)


def load_results(root: str | Path = ".") -> Results:
    root = Path(root)
    stats = {name: pd.read_csv(root / STATISTICS_DIR / f"{name}.csv") for name in STATISTICS_TABLES}
    return Results(scenarios=pd.read_csv(root / METRICS_DIR / "scenarios.csv"), roc=read_curves(root / ROC_DIR),
                   pr=read_curves(root / PR_DIR), kshot=read_kshot(root / KSHOT_DIR), coreset=read_coreset(root / KSHOT_DIR),
                   routing=read_routing(root / METRICS_DIR / "routing.csv"), **stats)


def read_routing(path: Path) -> pd.DataFrame:
    """`routing.csv` with category names kept as written (a category called `NA` or `01` stays a string)."""
    names = {c: str for c in ("detector", "regime", "scenario", "model_domain", "test_domain", "category", "label", "routed_category")}
    return pd.read_csv(path, dtype=names, keep_default_na=False)


def read_kshot(folder: Path) -> pd.DataFrame:
    """Every K-shot table (`results/kshot/<detector>/<category>.csv`), stacked."""
    files = sorted(f for f in folder.glob("*/*.csv") if not f.name.startswith("coreset_")) if folder.is_dir() else []
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def read_coreset(folder: Path) -> pd.DataFrame:
    """Every memory-bank size trade-off (`results/kshot/<detector>/coreset_<category>.csv`), stacked."""
    files = sorted(folder.glob("*/coreset_*.csv")) if folder.is_dir() else []
    frames = [frame for f in files for frame in [pd.read_csv(f, dtype={"category": str, "test_domain": str})] if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
