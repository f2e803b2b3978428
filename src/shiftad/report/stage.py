"""The report stage (first version): per-category metrics tables, ROC curves, heatmap galleries.

Reads only what evaluate wrote: `results/metrics/scenarios.csv`, `results/plots/roc.csv`,
`results/predictions/` and the heatmap overlays they point at.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from shiftad.io import atomic_dir, read_json, write_text  # noqa: E402
from shiftad.params import Params  # noqa: E402
from shiftad.paths import METRICS_DIR, PLOTS_DIR, PREDICTIONS_DIR, REPORT_DIR  # noqa: E402

TABLE_COLUMNS = [
    "detector", "regime", "scenario", "category", "image_auroc", "image_auprc", "f1", "precision", "recall",
    "accuracy", "pixel_auroc", "aupro", "threshold", "threshold_rule", "n_test", "n_test_anomalous", "ms_per_image",
]


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """Counts (`n_*` columns) print as integers (a mean as %g), every other number with `digits` decimals."""

    def cell(value: object, column: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isnan(value):
                return "–"
            return f"{value:g}" if column.startswith("n_") else f"{value:.{digits}f}"
        return str(value)

    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(cell(v, c) for v, c in zip(row, frame.columns)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def with_macro_mean(table: pd.DataFrame) -> pd.DataFrame:
    """Per-category rows followed by one macro-mean row per (detector, regime, scenario)."""
    numeric = [c for c in table.columns if c not in ("detector", "regime", "scenario", "category", "threshold_rule")]
    parts = []
    for keys, group in table.groupby(["detector", "regime", "scenario"], sort=True):
        mean = group[numeric].mean(numeric_only=True).to_dict()
        parts.append(group)
        parts.append(pd.DataFrame([{**dict(zip(["detector", "regime", "scenario"], keys)), "category": "mean", "threshold_rule": "", **mean}]))
    return pd.concat(parts, ignore_index=True)[table.columns]


def roc_figure(roc: pd.DataFrame, run: str, table: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for curve, points in roc[roc["curve"].str.startswith(run + "/")].groupby("curve", sort=True):
        category = curve.rsplit("/", 1)[1]
        auroc = table.loc[table["category"] == category, "image_auroc"].iloc[0]
        ax.plot(points["fpr"], points["tpr"], label=f"{category} (AUROC {auroc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"Image ROC: {run}", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def gallery_figure(run_dir: Path, run: str, per_category: int, path: Path) -> bool:
    """Per category: the highest-scored anomalous images and the highest-scored normal ones."""
    files = sorted(run_dir.glob("*.json"))
    rows = []
    for file in files:
        records = [r for r in read_json(file) if r["prediction"]["heatmap_path"]]
        by_score = sorted(records, key=lambda r: -r["prediction"]["anomaly_score"])
        anomalous = [r for r in by_score if r["ground_truth"]["is_anomalous"]][: math.ceil(per_category / 2)]
        normal = [r for r in by_score if not r["ground_truth"]["is_anomalous"]][: per_category - len(anomalous)]
        rows.append((file.stem, anomalous + normal))
    if not rows:
        return False
    cols = max(len(r) for _, r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.0 * cols, 2.2 * len(rows)), dpi=110, squeeze=False)
    for (category, records), axes_row in zip(rows, axes):
        for ax in axes_row:
            ax.axis("off")
        for record, ax in zip(records, axes_row):
            ax.imshow(np.asarray(Image.open(record["prediction"]["heatmap_path"])))
            truth = record["ground_truth"]
            verdict = "ok" if record["correct"] else "WRONG"
            ax.set_title(f"{category}: {truth.get('defect_type', '')}\nscore {record['prediction']['anomaly_score']:.2f} {verdict}", fontsize=7)
    fig.suptitle(f"Heatmaps (red = at or above the decision threshold; white = ground truth): {run}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def run_report_stage(params: Params) -> Path:
    table = pd.read_csv(METRICS_DIR / "scenarios.csv")
    roc = pd.read_csv(PLOTS_DIR / "roc.csv")
    full = with_macro_mean(table)[TABLE_COLUMNS]
    figures: list[str] = []
    with atomic_dir(REPORT_DIR / "tables") as tables_dir, atomic_dir(REPORT_DIR / "figures") as figures_dir:
        write_text(tables_dir / "metrics.csv", full.to_csv(index=False, float_format="%.6g"))
        write_text(tables_dir / "metrics.md", markdown_table(full))
        for (detector, regime, scenario), group in table.groupby(["detector", "regime", "scenario"], sort=True):
            run = f"{detector}/{regime}/{scenario}"
            stem = f"{detector}_{regime}_{scenario}"
            roc_figure(roc, run, group, figures_dir / f"roc_{stem}.png")
            figures.append(f"figures/roc_{stem}.png")
            if gallery_figure(PREDICTIONS_DIR / run, run, params.report.gallery_images, figures_dir / f"gallery_{stem}.png"):
                figures.append(f"figures/gallery_{stem}.png")
    lines = ["# shiftad report", "", "Per-category test metrics (thresholds chosen on validation images only).", "",
             markdown_table(full), "Tables: [CSV](tables/metrics.csv), [Markdown](tables/metrics.md)", ""]
    lines += [f"![{Path(f).stem}]({f})" for f in figures]
    write_text(REPORT_DIR / "index.md", "\n".join(lines) + "\n")
    return REPORT_DIR
