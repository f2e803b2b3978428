"""Figure functions for the study report (and the notebooks).

Every function takes the tidy frames the pipeline writes (see the statistics and evaluate
stages), draws ONE figure and returns the `matplotlib.figure.Figure`; the caller saves it with
`save_figure` (PNG, and PDF when asked, written atomically). Nothing here reads files except
`gallery_figure`, which opens the images its records point at.

Conventions: colours come from a fixed palette keyed by the sorted names of what they stand
for (categories, shift families, scenarios), so a scenario has the same colour in every figure
drawn from the same table; pass ``colors={name: colour}`` to override. NaN values are skipped;
an empty frame (or one with nothing left after filtering) gives a figure with a centred
"no data" note instead of an exception. `CAPTIONS` holds a one-sentence caption per function.
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend; everything else draws headless
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from shiftad.io import atomic_path  # noqa: E402

__all__ = [
    "CAPTIONS", "FIGURE_CAPTIONS", "TRUTH_COLORS", "anomalous_shares", "confusion_figure", "curves_figure",
    "defect_size_figure", "defect_type_figure", "gallery_figure", "kshot_figure", "palette", "recovery_figure", "robustness_figure", "routing_figure", "training_figure",
    "save_figure", "score_distributions_figure", "shift_effects_figure", "adaptation_figure", "cross_shift_figure", "coreset_figure",
]

CAPTIONS: dict[str, str] = {
    "curves_figure": (
        "Image-level ROC (top) and precision-recall (bottom) curves per shift scenario, one line per category "
        "with its AUROC / AUPRC in the legend; the dotted diagonal is chance and the dashed line the anomalous share; "
        "a threshold-only run has the curves of its no-adaptation run (the same model and images): one panel shows both."
    ),
    "score_distributions_figure": (
        "Test anomaly-score histograms of normal and anomalous images per category (rows) and scenario (columns), "
        "with the decision threshold chosen on validation images as a vertical line; a threshold-only run scores "
        "as its no-adaptation run does (the same model and images): its threshold is in the tables."
    ),
    "cross_shift_figure": (
        "Cross-shift generalisation: macro image AUROC of the models fitted on each domain (rows; model and threshold from "
        "it) on the test images of each domain (columns); grey where the pair is not scored (models fitted on a shift "
        "domain score the fitted domains only); the Domains table gives the bootstrap CIs."
    ),
    "coreset_figure": (
        "Memory-bank size trade-off (PatchCore's greedy coreset, every train image of a category): macro image AUROC on "
        "the test images of each domain (clean bold) and inference milliseconds per image, against the coreset ratio."
    ),
    "adaptation_figure": (
        "Every adaptation against K normal train images of the shift domain (macro mean, its bootstrap CI as a band): "
        "fewshot adds their patches to the clean bank (labelled normals); feature_align re-standardises the domain's patch "
        "features with their per-channel statistics and adabn re-estimates the network's batch-norm statistics on them "
        "(both label-free); dashed: no adaptation, threshold only and refit."
    ),
    "shift_effects_figure": (
        "Macro-mean metric differences with paired-bootstrap 95% CIs: each shift scenario minus clean (degradation) "
        "and each adaptation minus no adaptation (recovery); * marks Holm-adjusted bootstrap p < 0.05."
    ),
    "robustness_figure": (
        "Macro-mean metric against shift severity (0 = clean) for each shift family and published corruption, "
        "per detector (clean per-class models), with the bootstrap CI as a shaded band where available."
    ),
    "kshot_figure": (
        "Image AUROC against the number K of clean training images in the memory bank (log scale), per detector: "
        "one line per category (mean over seeded draws of the K images, whiskers ± sd over draws) and the macro mean "
        "in black; thresholds from validation images, metrics on the test images."
    ),
    "training_figure": (
        "Training loss of each trained detector's per-class clean models (reference seed), log scale, one line per "
        "category, against its steps or epochs, with the scale's share of the paper's training in the title; a loss "
        "still falling at the end means the detector stopped far from converged, so its AUROCs are a budget's, "
        "not the method's (benchmarks/learning_curves.py measures AUROC against training length)."
    ),
    "recovery_figure": (
        "Few-shot adaptation under shift, the clean model's memory bank plus the patches of K shifted normal training "
        "images: from no adaptation (clean threshold) through K = 0 (threshold from shifted validation images only) "
        "to the full refit on shifted training images, thin lines per category, the macro mean bold with its "
        "bootstrap CI as a band and the clean macro mean dashed."
    ),
    "defect_type_figure": (
        "Image AUROC with bootstrap CIs per defect type (each type's anomalous images against all normal test images), "
        "per category, one colour per scenario."
    ),
    "defect_size_figure": (
        "Macro-mean image AUROC with bootstrap CIs (top) and detection rate at the decision threshold (bottom) "
        "for small, medium and large defects, per detector, one colour per scenario."
    ),
    "confusion_figure": (
        "Confusion matrices at the decision threshold summed over categories, one per scenario "
        "(counts, with the share of the true class; shading = that share)."
    ),
    "routing_figure": (
        "Routing confusion matrices of the routed (global) model on the test images: rows = true category, columns = "
        "the category the router chose, for normal and anomalous images, on clean data and under shift (router trained on "
        "clean images); counts, shaded by the share of the true category."
    ),
    "gallery_figure": (
        "Example test images with anomaly-map overlays; the white contour is the ground-truth defect and the border "
        "shows whether the thresholded decision was right (green) or wrong (red)."
    ),
}
FIGURE_CAPTIONS = CAPTIONS  # the name the report stage looks up

TRUTH_COLORS = {"normal": "#4477aa", "anomalous": "#cc3311"}
BORDER_COLORS = {True: "#2ca02c", False: "#d62728", None: "#8c8c8c"}
SIZE_ORDER = ("small", "medium", "large")
METRIC_LABELS = {"image_auroc": "image AUROC", "image_auprc": "image AUPRC", "f1": "F1", "pixel_auroc": "pixel AUROC",
                 "aupro": "AUPRO", "detection_rate": "detection rate"}
NO_DATA = "no data"


# --------------------------------------------------------------------------------------------- helpers

def palette(names: Iterable[Any], colors: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Fixed colours keyed by the sorted distinct names (tab10, tab20 beyond ten names); `colors` overrides."""
    ordered = sorted({str(n) for n in names if not _missing(n)})
    base = plt.get_cmap("tab10").colors if len(ordered) <= 10 else plt.get_cmap("tab20").colors
    out = {name: to_hex(base[i % len(base)]) for i, name in enumerate(ordered)}
    if colors:
        out.update({str(k): to_hex(v) for k, v in colors.items()})
    return out


def anomalous_shares(scenarios_table: pd.DataFrame, detector: str, regime: str) -> dict[tuple[str, str], float]:
    """(scenario, category) -> share of anomalous test images, from the confusion counts of `scenarios.csv`."""
    table = _select(scenarios_table, ("tn", "fp", "fn", "tp"), detector=detector, regime=regime)
    out: dict[tuple[str, str], float] = {}
    for row in table.itertuples(index=False):
        total = row.tn + row.fp + row.fn + row.tp
        if str(row.category) != "mean" and np.isfinite(total) and total > 0:
            out[(str(row.scenario), str(row.category))] = float((row.fn + row.tp) / total)
    return out


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _select(frame: pd.DataFrame | None, columns: Iterable[str], **equal: Any) -> pd.DataFrame:
    """Rows of `frame` whose columns equal the given values; an empty frame when it lacks a needed column."""
    needed = set(columns) | set(equal)
    if frame is None or not needed <= set(frame.columns):
        return pd.DataFrame(columns=sorted(needed))
    keep = np.ones(len(frame), dtype=bool)
    for column, value in equal.items():
        keep &= (frame[column].astype(str) == str(value)).to_numpy()
    return frame.loc[keep]


def _ordered(values: Iterable[Any]) -> list[str]:
    """Distinct values as strings in order of first appearance (NaN dropped)."""
    return list(dict.fromkeys(str(v) for v in values if not _missing(v)))


def _as_bool(series: pd.Series) -> np.ndarray:
    if series.dtype == bool:
        return series.to_numpy()
    if pd.api.types.is_numeric_dtype(series):
        return series.fillna(0).to_numpy(dtype=float) != 0
    return series.astype(str).str.strip().str.lower().isin(["true", "1", "1.0", "yes"]).to_numpy()


def _no_data(title: str, message: str = NO_DATA) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 2.5), layout="constrained")
    ax.set_axis_off()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=12, color="#59636e", transform=ax.transAxes)
    fig.suptitle(title)
    return fig


def _panel_no_data(ax: Axes) -> None:
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", color="#59636e", transform=ax.transAxes)


def _whiskers(ax: Axes, positions: Sequence[float], low: Sequence[float], high: Sequence[float], *,
              horizontal: bool = False, **kwargs: Any) -> Any:
    """Error bars that span exactly [low, high] at each position (pairs with a non-finite end are skipped).

    Drawn as an errorbar centred on the interval, so an estimate outside its percentile interval
    never gives negative error lengths. Returns the ErrorbarContainer (None when nothing is drawn).
    """
    pos, lo, hi = (np.asarray(v, dtype=float) for v in (positions, low, high))
    ok = np.isfinite(pos) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    pos, lo, hi = pos[ok], np.minimum(lo[ok], hi[ok]), np.maximum(lo[ok], hi[ok])
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    style = {"fmt": "none", "ecolor": "#222222", "elinewidth": 1.1, "capsize": 3, "label": "_ci"} | kwargs
    if horizontal:
        return ax.errorbar(mid, pos, xerr=half, **style)
    return ax.errorbar(pos, mid, yerr=half, **style)


def _grid(n_panels: int, max_cols: int, panel: tuple[float, float], **kwargs: Any) -> tuple[Figure, list[Axes]]:
    """A near-square grid of `n_panels` axes (unused cells removed)."""
    cols = max(1, min(max_cols, n_panels))
    rows = math.ceil(n_panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(panel[0] * cols, panel[1] * rows), squeeze=False,
                             layout="constrained", **kwargs)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


# --------------------------------------------------------------------------------------------- saving

PNG_COMPRESS_LEVEL = 1
SAVE_DPI = 130


def save_figure(fig: Figure, stem: str | Path, pdf: bool = True) -> list[Path]:
    """Save `fig` as `stem.png` (dpi 130) and, if `pdf`, `stem.pdf`, each atomically; close the figure.

    The layout is solved once and the tight bounding box (`bbox_inches="tight"`'s, with its
    padding) measured once without rasterising; each format then draws the figure once. (savefig
    with "tight" draws twice per format and solves the layout in each draw: 4 draws where 2 do.)
    Returns the written paths. The PDF carries no creation date, so reruns give identical bytes.
    """
    stem = Path(stem)
    # PNG at zlib level 1: 3-5x faster to write than the default 6 (a heatmap gallery: 0.95 -> 0.18 s)
    # for ~18 % more bytes; the report's PNG encoding was a quarter of its time
    targets = [(stem.with_name(stem.name + ".png"), "png", {"Software": None}, {"pil_kwargs": {"compress_level": PNG_COMPRESS_LEVEL}})]
    if pdf:
        targets.append((stem.with_name(stem.name + ".pdf"), "pdf", {"CreationDate": None, "ModDate": None}, {}))
    written: list[Path] = []
    try:
        fig.set_dpi(SAVE_DPI)
        renderer = fig.canvas.get_renderer()
        engine = fig.get_layout_engine()
        if engine is not None:
            engine.execute(fig)
        fig.set_layout_engine("none")  # solved (figure-relative, the same for every format): kept as is
        bbox = fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])
        for target, fmt, metadata, options in targets:
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=SAVE_DPI, bbox_inches=bbox, metadata=metadata, **options)
            written.append(target)
    finally:
        plt.close(fig)
    return written


# --------------------------------------------------------------------------------------------- 1. curves

def _interval_estimates(intervals: pd.DataFrame | None, detector: str, regime: str, metric: str) -> dict[tuple[str, str], float]:
    table = _select(intervals, ("scenario", "category", "estimate"), detector=detector, regime=regime, metric=metric)
    return {(str(r.scenario), str(r.category)): float(r.estimate) for r in table.itertuples(index=False) if _finite(r.estimate)}


def _share_lines(share: Any, scenario: str, categories: Sequence[str]) -> list[tuple[str | None, float]]:
    """(category or None for the whole panel, share) baselines for one PR panel."""
    if share is None:
        return []
    if isinstance(share, Mapping):
        if scenario in share and _finite(share[scenario]):
            return [(None, float(share[scenario]))]
        lines = [(c, float(share[(scenario, c)])) for c in categories if (scenario, c) in share and _finite(share[(scenario, c)])]
        lines += [(c, float(share[c])) for c in categories if c in share and _finite(share[c]) and c not in dict(lines)]
        return lines
    return [(None, float(share))] if _finite(share) else []


def curves_figure(roc: pd.DataFrame, pr: pd.DataFrame, intervals: pd.DataFrame | None, detector: str, regime: str, *,
                  anomalous_share: float | Mapping[Any, float] | None = None,
                  colors: Mapping[str, Any] | None = None) -> Figure:
    """Image-level ROC (row 1) and PR (row 2) curves, one column per scenario and one line per category.

    `anomalous_share` draws the PR chance baseline: a number (every panel), a mapping scenario ->
    share, or (scenario, category) -> share (see `anomalous_shares`) for one dashed line per category.
    """
    title = f"Image-level ROC and precision-recall curves: {detector} / {regime}"
    roc = _select(roc, ("scenario", "category", "fpr", "tpr"), detector=detector, regime=regime)
    pr = _select(pr, ("scenario", "category", "recall", "precision"), detector=detector, regime=regime)
    scenarios = _ordered([*roc["scenario"], *pr["scenario"]])
    if not scenarios:
        return _no_data(title)
    categories = sorted(set(_ordered([*roc["category"], *pr["category"]])))
    color = palette(categories, colors)
    auroc = _interval_estimates(intervals, detector, regime, "image_auroc")
    auprc = _interval_estimates(intervals, detector, regime, "image_auprc")
    n = len(scenarios)
    many = len(categories) > 5
    legend_height = 0.2 * math.ceil((len(categories) + 2) / 2) + 0.3 if many else 0.0
    fig, axes = plt.subplots(2, n, figsize=(4.2 * n + 0.6, 8.4 + 2 * legend_height), squeeze=False, layout="constrained")
    rows = ((roc, "fpr", "tpr", auroc, "AUROC", "ROC", "false positive rate", "true positive rate"),
            (pr, "recall", "precision", auprc, "AUPRC", "PR", "recall", "precision"))
    for r, (frame, xcol, ycol, values, name, kind, xlabel, ylabel) in enumerate(rows):
        for c, scenario in enumerate(scenarios):
            ax = axes[r, c]
            panel = frame[frame["scenario"].astype(str) == scenario]
            for category in categories:
                points = panel[panel["category"].astype(str) == category][[xcol, ycol]].astype(float).dropna()
                if points.empty:
                    continue
                value = values.get((scenario, category))
                label = f"{category} ({name} {value:.3f})" if value is not None else category
                ax.plot(points[xcol], points[ycol], color=color[category], lw=1.5, label=label)
            if r == 0:
                ax.plot([0, 1], [0, 1], color="grey", lw=0.9, ls=":", label="chance")
            else:
                labelled = False
                for category, share in _share_lines(anomalous_share, scenario, categories):
                    if category is None:
                        ax.axhline(share, color="grey", lw=1.0, ls="--", label=f"anomalous share ({share:.2f})")
                    else:
                        ax.axhline(share, color=color[category], lw=0.9, ls="--", alpha=0.8,
                                   label="_nolegend_" if labelled else "anomalous share (dashed)")
                        labelled = True
            macro = values.get((scenario, "mean"))
            ax.set_title(f"{kind}: {scenario}" + (f" (macro {name} {macro:.3f})" if macro is not None else ""), fontsize=10)
            ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(-0.01, 1.01), ylim=(-0.01, 1.02))
            ax.set_aspect("equal", adjustable="box")
            if panel.empty:
                _panel_no_data(ax)
            if ax.get_legend_handles_labels()[0]:
                if many:  # below the panel, where it hides no curve
                    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=7.5, ncols=2, frameon=False)
                else:
                    ax.legend(loc="lower right" if r == 0 else "lower left", fontsize=7.5, framealpha=0.85)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 2. scores

def score_distributions_figure(predictions: pd.DataFrame, detector: str, regime: str, *, bins: int = 30,
                               density: bool = False) -> Figure:
    """Step histograms of normal and anomalous test scores per category (rows) and scenario (columns),
    on bins shared within each panel, with the decision threshold as a labelled vertical line."""
    title = f"Test score distributions: {detector} / {regime}"
    frame = _select(predictions, ("scenario", "category", "score", "is_anomalous", "threshold"), detector=detector, regime=regime)
    if frame.empty:
        return _no_data(title)
    scenarios = _ordered(frame["scenario"])
    categories = sorted(_ordered(frame["category"]))
    fig, axes = plt.subplots(len(categories), len(scenarios), figsize=(3.6 * len(scenarios) + 0.4, 2.6 * len(categories) + 0.6),
                             squeeze=False, layout="constrained")
    for i, category in enumerate(categories):
        for j, scenario in enumerate(scenarios):
            ax = axes[i, j]
            panel = frame[(frame["category"].astype(str) == category) & (frame["scenario"].astype(str) == scenario)]
            scores = pd.to_numeric(panel["score"], errors="coerce").to_numpy(dtype=float)
            anomalous = _as_bool(panel["is_anomalous"])
            ok = np.isfinite(scores)
            ax.set_title(f"{category}: {scenario}", fontsize=9.5)
            ax.set_xlabel("anomaly score", fontsize=9)
            ax.set_ylabel("density" if density else "images", fontsize=9)
            if not ok.any():
                _panel_no_data(ax)
                continue
            edges = np.histogram_bin_edges(scores[ok], bins=bins)
            for name, members in (("normal", ~anomalous), ("anomalous", anomalous)):
                values = scores[ok & members]
                if values.size:
                    ax.hist(values, bins=edges, histtype="step", lw=1.6, density=density, color=TRUTH_COLORS[name],
                            label=f"{name} (n={values.size})")
            thresholds = pd.to_numeric(panel["threshold"], errors="coerce").to_numpy(dtype=float)
            thresholds = thresholds[np.isfinite(thresholds)]
            if thresholds.size:
                threshold = float(np.median(thresholds))
                ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold {threshold:.3g}")
            ax.legend(fontsize=7, framealpha=0.85)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 3. shift effects

def _run_parts(run: Any) -> tuple[str, str, str]:
    parts = str(run).split("/")
    if len(parts) < 3:
        parts += [""] * (3 - len(parts))
    return parts[0], parts[1], "/".join(parts[2:])


def shift_effects_figure(comparisons: pd.DataFrame, metric: str = "image_auroc", *, alpha: float = 0.05,
                         colors: Mapping[str, Any] | None = None) -> Figure:
    """Macro-mean differences with CI whiskers: shift scenario − clean (degradation) and adaptation −
    no adaptation (recovery), bars grouped by detector/regime, one colour per scenario, * where the
    Holm-adjusted bootstrap p < `alpha`."""
    title = f"Effect of shift and adaptation on {_metric_label(metric)} (macro mean, difference a − b)"
    frame = _select(comparisons, ("family", "a", "b", "difference", "ci_low", "ci_high"), category="mean", metric=metric)
    frame = frame[frame["family"].astype(str).isin(["scenario", "adaptation"])]
    if frame.empty:
        return _no_data(title)
    all_scenarios = {_run_parts(v)[2] for v in [*frame["a"], *frame["b"]]}
    color = palette(all_scenarios, colors)
    families = [f for f in ("scenario", "adaptation") if (frame["family"].astype(str) == f).any()]
    groups = _ordered(f"{d}/{r}" for d, r, _ in map(_run_parts, frame["a"]))
    fig, axes = plt.subplots(1, len(families), figsize=(max(5.0, 1.1 * len(groups) + 2.5) * len(families), 4.8),
                             squeeze=False, sharey=True, layout="constrained")
    for ax, family in zip(axes[0], families):
        part = frame[frame["family"].astype(str) == family]
        parts_a = [_run_parts(v) for v in part["a"]]
        group_of = [f"{d}/{r}" for d, r, _ in parts_a]
        bars = _ordered(s for _, _, s in parts_a)
        baselines = _ordered(_run_parts(v)[2] for v in part["b"])
        width = 0.8 / len(bars)
        starred = False
        for k, scenario in enumerate(bars):
            xs, ys, lows, highs, stars = [], [], [], [], []
            for (row, (_, _, s), group) in zip(part.itertuples(index=False), parts_a, group_of):
                if s != scenario or not _finite(row.difference):
                    continue
                xs.append(groups.index(group) - 0.4 + width * (k + 0.5))
                ys.append(float(row.difference))
                lows.append(float(row.ci_low) if _finite(row.ci_low) else np.nan)
                highs.append(float(row.ci_high) if _finite(row.ci_high) else np.nan)
                p = getattr(row, "p_bootstrap_holm", np.nan)
                stars.append(_finite(p) and float(p) < alpha)
            if not xs:
                continue
            ax.bar(xs, ys, width=width * 0.92, color=color[scenario], label=scenario)
            _whiskers(ax, xs, lows, highs)
            for x, y, lo, hi, star in zip(xs, ys, lows, highs, stars):
                if not star:
                    continue
                starred = True
                if y >= 0:
                    ax.annotate("*", (x, np.nanmax([y, hi])), xytext=(0, 1), textcoords="offset points",
                                ha="center", va="bottom", fontsize=13, fontweight="bold")
                else:
                    ax.annotate("*", (x, np.nanmin([y, lo])), xytext=(0, -1), textcoords="offset points",
                                ha="center", va="top", fontsize=13, fontweight="bold")
        ax.axhline(0, color="black", lw=0.9)
        ax.set_xticks(range(len(groups)), groups, rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.margins(y=0.12)
        baseline = baselines[0] if len(baselines) == 1 else ("clean" if family == "scenario" else "no adaptation")
        ax.set_title(("Degradation: shift scenario − " if family == "scenario" else "Recovery: adaptation − ") + baseline, fontsize=10)
        ax.set_xlabel("detector / regime")
        ax.set_ylabel(f"Δ {_metric_label(metric)}")
        handles, labels = ax.get_legend_handles_labels()
        if starred:
            handles.append(Line2D([], [], ls="none", marker="$*$", color="black", markersize=9))
            labels.append(f"Holm p < {alpha:g}")
        ax.legend(handles, labels, fontsize=8, framealpha=0.85)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 4. robustness

def robustness_figure(robustness: pd.DataFrame, metric: str = "image_auroc", *,
                      colors: Mapping[str, Any] | None = None) -> Figure:
    """Macro-mean `metric` against severity (0 = clean), one panel per detector and one line per shift
    family, with the bootstrap CI as a shaded band (image AUROC only: the other metrics have no CI)."""
    title = f"Robustness to shift severity: {_metric_label(metric)} (macro mean)"
    frame = _select(robustness, ("detector", "family", "severity", metric), category="mean")
    if frame.empty:
        return _no_data(title)
    detectors = _ordered(frame["detector"])
    families = sorted(_ordered(frame["family"]))
    color = palette(families, colors)
    band = metric == "image_auroc" and {"ci_low", "ci_high"} <= set(frame.columns)
    fig, axes = _grid(len(detectors), 3, (4.6, 3.9), sharey=True)
    for ax, detector in zip(axes, detectors):
        panel = frame[frame["detector"].astype(str) == detector]
        drawn = False
        severities: set[float] = set()
        for family in families:
            rows = panel[panel["family"].astype(str) == family].copy()
            rows["x"] = pd.to_numeric(rows["severity"], errors="coerce")
            rows["y"] = pd.to_numeric(rows[metric], errors="coerce")
            rows = rows[np.isfinite(rows["x"]) & np.isfinite(rows["y"])].sort_values("x")
            if rows.empty:
                continue
            drawn = True
            severities |= set(rows["x"])
            ax.plot(rows["x"], rows["y"], marker="o", ms=4, lw=1.6, color=color[family], label=family)
            if band:
                lo = pd.to_numeric(rows["ci_low"], errors="coerce").to_numpy(dtype=float)
                hi = pd.to_numeric(rows["ci_high"], errors="coerce").to_numpy(dtype=float)
                if np.isfinite(lo).any() and np.isfinite(hi).any():
                    ax.fill_between(rows["x"].to_numpy(dtype=float), lo, hi, where=np.isfinite(lo) & np.isfinite(hi),
                                    color=color[family], alpha=0.18, lw=0, label="_ci")
        ax.set_title(detector, fontsize=10)
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylabel(_metric_label(metric))
        if severities:
            ticks = sorted(severities)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        if drawn:
            ax.legend(title="shift family / corruption", fontsize=8, title_fontsize=8, framealpha=0.85)
            ax.grid(alpha=0.3)
        else:
            _panel_no_data(ax)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 5. defect type

def defect_type_figure(breakdowns: pd.DataFrame, detector: str, regime: str, scenarios: Sequence[str], *,
                       colors: Mapping[str, Any] | None = None) -> Figure:
    """Horizontal bars of image AUROC with CI whiskers per defect type, one panel per category and one
    colour per scenario."""
    title = f"Image AUROC per defect type: {detector} / {regime}"
    full = _select(breakdowns, ("detector", "regime", "scenario", "category", "group", "image_auroc", "ci_low", "ci_high"),
                   breakdown="defect_type")
    color = palette([*full["scenario"], *scenarios], colors)
    scenarios = [str(s) for s in scenarios]
    frame = _select(full, (), detector=detector, regime=regime)
    frame = frame[frame["scenario"].astype(str).isin(scenarios) & (frame["category"].astype(str) != "mean")]
    if frame.empty:
        return _no_data(title)
    categories = sorted(_ordered(frame["category"]))
    n_types = max(frame[frame["category"].astype(str) == c]["group"].nunique() for c in categories)
    height = 0.55 + 0.32 * n_types * max(1, len(scenarios)) ** 0.5
    fig, axes = _grid(len(categories), 3, (4.8, height + 0.9))
    width = 0.8 / len(scenarios)
    present = [s for s in scenarios if (frame["scenario"].astype(str) == s).any()]
    for ax, category in zip(axes, categories):
        panel = frame[frame["category"].astype(str) == category]
        types = sorted(_ordered(panel["group"]))
        for k, scenario in enumerate(scenarios):
            rows = panel[panel["scenario"].astype(str) == scenario]
            ys, xs, lows, highs = [], [], [], []
            for row in rows.itertuples(index=False):
                if not _finite(row.image_auroc):
                    continue
                ys.append(types.index(str(row.group)) - 0.4 + width * (k + 0.5))
                xs.append(float(row.image_auroc))
                lows.append(float(row.ci_low) if _finite(row.ci_low) else np.nan)
                highs.append(float(row.ci_high) if _finite(row.ci_high) else np.nan)
            if ys:
                ax.barh(ys, xs, height=width * 0.9, color=color[scenario], label=scenario)
                _whiskers(ax, ys, lows, highs, horizontal=True, capsize=2)
        ax.axvline(0.5, color="grey", ls=":", lw=0.9)
        ax.set_yticks(range(len(types)), types, fontsize=8.5)
        ax.set_ylim(len(types) - 0.5, -0.5)  # first type on top
        ax.set_xlim(0, 1.02)
        ax.set_title(category, fontsize=10)
        ax.set_xlabel("image AUROC")
        ax.set_ylabel("defect type")
        ax.grid(axis="x", alpha=0.3)
    handles = [Patch(color=color[s], label=s) for s in present]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), title="scenario", fontsize=8.5)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 6. defect size

def defect_size_figure(breakdowns: pd.DataFrame, regime: str, scenarios: Sequence[str], *,
                       colors: Mapping[str, Any] | None = None) -> Figure:
    """Macro-mean image AUROC with CI whiskers (top row) and detection rate (bottom row) for small /
    medium / large defects, one column per detector, one colour per scenario."""
    title = f"Effect of defect size (macro mean over categories): {regime}"
    full = _select(breakdowns, ("detector", "regime", "scenario", "group", "image_auroc", "ci_low", "ci_high"),
                   breakdown="defect_size", category="mean")
    color = palette([*full["scenario"], *scenarios], colors)
    scenarios = [str(s) for s in scenarios]
    frame = _select(full, (), regime=regime)
    frame = frame[frame["scenario"].astype(str).isin(scenarios)]
    if frame.empty:
        return _no_data(title)
    detectors = _ordered(frame["detector"])
    groups = _ordered(frame["group"])
    groups = [g for g in SIZE_ORDER if g in groups] + sorted(g for g in groups if g not in SIZE_ORDER)
    has_rate = "detection_rate" in frame.columns
    n_rows = 2 if has_rate else 1
    fig, axes = plt.subplots(n_rows, len(detectors), figsize=(max(4.2, 1.1 * len(groups) * max(1, len(scenarios)) ** 0.5) * len(detectors), 3.6 * n_rows + 0.6),
                             squeeze=False, sharey="row", layout="constrained")
    width = 0.8 / len(scenarios)
    present = [s for s in scenarios if (frame["scenario"].astype(str) == s).any()]
    for c, detector in enumerate(detectors):
        panel = frame[frame["detector"].astype(str) == detector]
        for r in range(n_rows):
            ax = axes[r, c]
            column = "image_auroc" if r == 0 else "detection_rate"
            for k, scenario in enumerate(scenarios):
                rows = panel[panel["scenario"].astype(str) == scenario]
                xs, ys, lows, highs = [], [], [], []
                for row in rows.itertuples(index=False):
                    value = getattr(row, column)
                    if str(row.group) not in groups or not _finite(value):
                        continue
                    xs.append(groups.index(str(row.group)) - 0.4 + width * (k + 0.5))
                    ys.append(float(value))
                    lows.append(float(row.ci_low) if _finite(row.ci_low) else np.nan)
                    highs.append(float(row.ci_high) if _finite(row.ci_high) else np.nan)
                if not xs:
                    continue
                bars = ax.bar(xs, ys, width=width * 0.92, color=color[scenario], label=scenario)
                if r == 0:
                    _whiskers(ax, xs, lows, highs, capsize=2)
                else:
                    ax.bar_label(bars, labels=[f"{y:.0%}" for y in ys], fontsize=7, padding=1)
            ax.set_xticks(range(len(groups)), groups)
            ax.set_xlabel("defect size")
            ax.set_ylabel(_metric_label(column))
            ax.set_ylim(0, 1.1 if r else 1.05)
            if r == 0:
                ax.axhline(0.5, color="grey", ls=":", lw=0.9)
            ax.set_title(f"{detector}: {_metric_label(column)}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    handles = [Patch(color=color[s], label=s) for s in present]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), title="scenario", fontsize=8.5)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 7. confusion

def confusion_figure(scenarios_table: pd.DataFrame, detector: str, regime: str) -> Figure:
    """One 2×2 confusion matrix per scenario (truth rows normal/anomalous, predicted columns), counts
    summed over categories and annotated, shaded by the share of the true class."""
    title = f"Confusion matrices at the decision threshold (all categories): {detector} / {regime}"
    frame = _select(scenarios_table, ("scenario", "category", "tn", "fp", "fn", "tp"), detector=detector, regime=regime)
    frame = frame[frame["category"].astype(str) != "mean"]
    if frame.empty:
        return _no_data(title)
    scenarios = _ordered(frame["scenario"])
    fig, axes = _grid(len(scenarios), 4, (3.3, 3.3))
    labels = ["normal", "anomalous"]
    for ax, scenario in zip(axes, scenarios):
        rows = frame[frame["scenario"].astype(str) == scenario]
        counts = {k: pd.to_numeric(rows[k], errors="coerce") for k in ("tn", "fp", "fn", "tp")}
        ax.set_title(scenario, fontsize=10)
        ax.set_xlabel("predicted")
        ax.set_ylabel("truth")
        ax.set_xticks([0, 1], labels)
        ax.set_yticks([0, 1], labels, rotation=90, va="center")
        if all(c.isna().all() for c in counts.values()):
            _panel_no_data(ax)
            continue
        matrix = np.array([[counts["tn"].sum(), counts["fp"].sum()], [counts["fn"].sum(), counts["tp"].sum()]], dtype=float)
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(2):
            for j in range(2):
                text = f"{int(round(matrix[i, j]))}\n({share[i, j]:.0%})" if totals[i, 0] > 0 else f"{int(round(matrix[i, j]))}"
                ax.text(j, i, text, ha="center", va="center", fontsize=11,
                        color="white" if share[i, j] > 0.6 else "black")
    fig.suptitle(title)
    return fig


def routing_figure(routing: pd.DataFrame, detector: str) -> Figure:
    """One category confusion matrix per (test domain, label) of the routed regime's clean-trained router."""
    title = f"Routing confusion matrices (true → routed category): {detector} / global"
    frame = _select(routing, ("regime", "model_domain", "test_domain", "category", "label", "routed_category", "n"),
                    detector=detector, regime="global")
    frame = frame[frame["model_domain"].astype(str) == "clean"].drop_duplicates(["test_domain", "category", "label", "routed_category"])
    if frame.empty:
        return _no_data(title)
    categories = sorted(set(frame["category"].astype(str)) | set(frame["routed_category"].astype(str)))
    panels = [(test, label) for test in _ordered(frame["test_domain"].astype(str)) for label in ("normal", "anomalous")
              if ((frame["test_domain"] == test) & (frame["label"] == label)).any()]
    side = 1.2 + 0.45 * len(categories)
    fig, axes = _grid(len(panels), 4, (max(3.3, side), max(3.0, side)))
    for ax, (test, label) in zip(axes, panels):
        rows = frame[(frame["test_domain"] == test) & (frame["label"] == label)]
        matrix = rows.pivot_table(index="category", columns="routed_category", values="n", aggfunc="sum", fill_value=0)
        matrix = matrix.reindex(index=categories, columns=categories, fill_value=0).to_numpy(dtype=float)
        totals = matrix.sum(axis=1, keepdims=True)
        share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        accuracy = np.trace(matrix) / matrix.sum() if matrix.sum() else float("nan")
        ax.set_title(f"{test} test, {label} (accuracy {accuracy:.1%})", fontsize=10)
        ax.set_xlabel("routed to")
        ax.set_ylabel("true category")
        ax.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
        ax.set_yticks(range(len(categories)), categories)
        for i in range(len(categories)):
            for j in range(len(categories)):
                if matrix[i, j] or i == j:
                    ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=10,
                            color="white" if share[i, j] > 0.6 else "black")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------- 8. gallery

def _read_rgb(path: Any) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, TypeError):
        return None


def _read_mask(path: Any, shape: tuple[int, int], resize: str = "squash") -> np.ndarray | None:
    """The mask in the map frame (params `resize`) at `shape` (any non-zero pixel is defect, as
    everywhere); None if unreadable."""
    from shiftad.data.images import read_mask
    from shiftad.errors import DataError

    try:
        mask = read_mask(path)
    except (DataError, OSError, ValueError, TypeError):
        return None
    from shiftad.geometry import frame_mask

    return frame_mask(mask, shape, resize)


def gallery_figure(records: Sequence[Mapping[str, Any]], title: str, per_row: int = 4, resize: str = "squash") -> Figure:
    """A grid of overlay images with captions; the ground-truth mask (if given) is drawn as a white
    contour and the border is green for right decisions, red for wrong ones.

    Each record: {"image": path to an RGB overlay, "mask": optional binary-mask path, "caption": str,
    "correct": bool}. An unreadable image gives a labelled empty tile instead of an error.
    """
    records = list(records or [])
    if not records:
        return _no_data(title)
    per_row = max(1, int(per_row))
    fig, axes = _grid(len(records), per_row, (2.7, 3.0))
    for ax, record in zip(axes, records):
        ax.set_xticks([])
        ax.set_yticks([])
        image = _read_rgb(record.get("image"))
        if image is None:
            ax.text(0.5, 0.5, "image missing", ha="center", va="center", color="#59636e", transform=ax.transAxes)
        else:
            ax.imshow(image)
            if record.get("mask"):
                mask = _read_mask(record["mask"], image.shape[:2], resize)
                if mask is not None and mask.any() and not mask.all():
                    ax.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1.2)
        correct = record.get("correct")
        border = BORDER_COLORS[bool(correct)] if correct is not None and not _missing(correct) else BORDER_COLORS[None]
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_edgecolor(border)
            spine.set_linewidth(4)
        caption = str(record.get("caption", ""))
        ax.set_title("\n".join(textwrap.wrap(caption, 32)) or " ", fontsize=8)
    handles = [Patch(facecolor="none", edgecolor=BORDER_COLORS[True], lw=3, label="right decision"),
               Patch(facecolor="none", edgecolor=BORDER_COLORS[False], lw=3, label="wrong decision"),
               Line2D([], [], color="#bbbbbb", lw=1.5, label="ground-truth defect (white contour)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8.5)
    fig.suptitle(title)
    return fig


def kshot_figure(kshot: pd.DataFrame, metric: str = "image_auroc") -> Figure:
    """`metric` against K (log scale), one panel per detector, one line per category (mean over
    draws, whiskers ± sd) and the macro mean in black."""
    title = f"K-shot learning curves: {_metric_label(metric)}"
    frame = _select(kshot, ("detector", "category", "k", "draw", metric))
    if frame.empty:
        return _no_data(title)
    detectors = _ordered(frame["detector"])
    categories = sorted(_ordered(frame["category"]))
    color = palette(categories)
    fig, axes = _grid(len(detectors), 3, (4.6, 3.9), sharey=True)
    for ax, detector in zip(axes, detectors):
        panel = frame[frame["detector"].astype(str) == detector]
        for category in categories:
            stats = panel[panel["category"].astype(str) == category].groupby("k")[metric].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", ms=3.5, lw=1.2, capsize=2,
                        color=color[category], label=category)
        macro = panel.groupby(["k", "draw"])[metric].mean().groupby("k").agg(["mean", "std"]).fillna(0.0)
        ax.errorbar(macro.index, macro["mean"], yerr=macro["std"], marker="s", ms=4, lw=2.2, capsize=3, color="black", label="macro mean")
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(macro.index), [str(int(k)) for k in macro.index])
        ax.set_title(detector, fontsize=10)
        ax.set_xlabel("K (clean training images)")
        ax.set_ylabel(_metric_label(metric))
        ax.legend(fontsize=8, framealpha=0.85)
    fig.suptitle(title)
    return fig


def training_figure(training: pd.DataFrame) -> Figure:
    """Training loss against steps (EfficientAD) or epochs (Uninformed Students), one panel per
    trained detector, one line per category; the title says what share of the paper's training
    the scale is."""
    title = "Training of the trained detectors: how far from converged"
    frame = _select(training, ("detector", "scale", "category", "unit", "progress", "loss", "planned", "paper"))
    if frame.empty:
        return _no_data(title)
    detectors = _ordered(frame["detector"])
    categories = sorted(_ordered(frame["category"]))
    color = palette(categories)
    fig, axes = _grid(len(detectors), 2, (5.2, 3.9))
    for ax, detector in zip(axes, detectors):
        panel = frame[frame["detector"].astype(str) == detector]
        first = panel.iloc[0]
        for category in categories:
            curve = panel[panel["category"].astype(str) == category].sort_values("progress")
            ax.plot(curve["progress"], curve["loss"], marker=".", lw=1.3, color=color[category], label=category)
        ax.set_yscale("log")
        ax.set_xlabel(f"{first['unit']} (the paper trains {int(first['paper']):,})")
        ax.set_ylabel("training loss")
        ax.set_title(f"{detector}, {first['scale']} scale: {int(first['planned']):,} {first['unit']}s "
                     f"= {first['planned'] / first['paper']:.2%} of the paper's", fontsize=9)
        ax.legend(fontsize=8, framealpha=0.85)
    fig.suptitle(title)
    return fig


def cross_shift_figure(cross: pd.DataFrame, domains: Sequence[str], regime: str = "per_class") -> Figure:
    """The cross-shift matrix as heatmaps, one panel per detector: macro image AUROC of each
    fitted domain's models (rows) on each domain's test images (columns); grey where the pair is
    not scored. The first row is the clean model without adaptation, the diagonal each domain's own model."""
    title = f"Cross-shift generalisation ({regime}): macro image AUROC, model and threshold from the row's domain"
    frame = _select(cross, ("detector", "regime", "model_domain", "test_domain", "category", "image_auroc"), regime=regime)
    frame = frame[frame["category"].astype(str) == "mean"]
    if frame.empty:
        return _no_data(title)
    detectors = _ordered(frame["detector"])
    rows = _ordered(frame["model_domain"])
    columns = [d for d in domains if d in set(frame["test_domain"].astype(str))]
    fig, axes = _grid(len(detectors), 3, (0.9 * len(columns) + 2.2, 0.6 * len(rows) + 1.8))
    for ax, detector in zip(axes, detectors):
        part = frame[frame["detector"] == detector].pivot_table(index="model_domain", columns="test_domain", values="image_auroc")
        matrix = part.reindex(index=rows, columns=columns).to_numpy(dtype=float)
        image = ax.imshow(np.ma.masked_invalid(matrix), cmap="RdYlGn", vmin=0.5, vmax=1.0)
        image.cmap.set_bad("#dddddd")
        for i in range(len(rows)):
            for j in range(len(columns)):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("test domain")
        ax.set_title(detector, fontsize=10)
    fig.colorbar(image, ax=list(axes), shrink=0.6, label="image AUROC")
    fig.suptitle(title)
    return fig


def coreset_figure(coreset: pd.DataFrame, domains: Sequence[str]) -> Figure:
    """The memory-bank size trade-off: macro image AUROC against the coreset ratio, one line
    per test domain (left), and inference ms per image against it (right), per detector with a coreset."""
    title = "Memory-bank size: image AUROC and inference time against the coreset ratio"
    frame = _select(coreset, ("detector", "category", "coreset_ratio", "test_domain", "image_auroc", "ms_per_image"))
    detectors = [d for d in _ordered(frame["detector"]) if frame.loc[frame["detector"] == d, "coreset_ratio"].nunique() > 1]
    if not detectors:
        return _no_data(title)
    color = palette(domains)
    fig, axes = plt.subplots(len(detectors), 2, figsize=(10, 3.6 * len(detectors)), squeeze=False)
    for (left, right), detector in zip(axes, detectors):
        part = frame[frame["detector"] == detector]
        macro = part.groupby(["test_domain", "coreset_ratio"], as_index=False)["image_auroc"].mean()
        for domain in [d for d in domains if d in set(macro["test_domain"])]:
            line = macro[macro["test_domain"] == domain].sort_values("coreset_ratio")
            left.plot(line["coreset_ratio"], line["image_auroc"], marker="o", lw=2.2 if domain == "clean" else 1.2,
                      color="black" if domain == "clean" else color[domain], label=domain)
        timing = part[part["test_domain"] == "clean"].groupby("coreset_ratio", as_index=False)["ms_per_image"].mean()
        right.plot(timing["coreset_ratio"], timing["ms_per_image"], marker="s", color="black")
        for ax, label in ((left, "image AUROC (macro)"), (right, "ms per image")):
            ax.set_xscale("log")
            ax.set_xlabel("coreset ratio")
            ax.set_ylabel(label)
            ax.set_title(detector, fontsize=10)
        left.legend(fontsize=7, framealpha=0.85)
    fig.suptitle(title)
    return fig


def adaptation_figure(intervals: pd.DataFrame, curves: Mapping[str, Sequence[tuple[int, str]]], metric: str = "image_auroc",
                      domain: str = "shift") -> Figure:
    """Every adaptation method on one shift domain against K (its unlabelled / labelled-normal
    target images): one panel per detector and regime, one line per method (macro mean, its
    bootstrap CI as a band); no adaptation, threshold only and refit as flat dashed references."""
    title = f"Adaptation to {domain} against K target normals: {_metric_label(metric)}"
    frame = _select(intervals, ("detector", "regime", "scenario", "category", "estimate", "ci_low", "ci_high"), metric=metric)
    frame = frame[frame["category"].astype(str) == "mean"].set_index(["detector", "regime", "scenario"])
    adapted = [m for m in curves if m not in ("no adaptation", "threshold only", "refit")]
    panels = [(d, r) for d, r, s in frame.index if any(s == name for m in adapted for _, name in curves[m])]
    panels = list(dict.fromkeys(panels))
    if not panels:
        return _no_data(title)
    color = palette(list(curves))
    every_k = sorted({k for points in curves.values() for k, _ in points})
    position = {k: i for i, k in enumerate(every_k)}  # one x axis for every method (their K values may differ)
    fig, axes = _grid(len(panels), 4, (4.4, 3.6), sharey=True)
    for ax, (detector, regime) in zip(axes, panels):
        for method, points in curves.items():
            ks = [k for k, _ in points]
            cells = [frame.loc[(detector, regime, name)] if (detector, regime, name) in frame.index else None for _, name in points]
            if all(c is None for c in cells):
                continue
            y = [np.nan if c is None else float(c["estimate"]) for c in cells]
            x = np.array([position[k] for k in ks])
            if method in adapted:
                lo = [np.nan if c is None else float(c["ci_low"]) for c in cells]
                hi = [np.nan if c is None else float(c["ci_high"]) for c in cells]
                ax.fill_between(x, lo, hi, color=color[method], alpha=0.15, lw=0)
                ax.plot(x, y, marker="o", ms=4, lw=1.8, color=color[method], label=method)
            else:
                ax.plot(x, y, ls="--", lw=1.2, color=color[method], label=method)
        ax.set_xticks(range(len(every_k)), [str(k) for k in every_k])
        ax.set_xlabel("K target normals")
        ax.set_title(f"{detector} ({regime})", fontsize=10)
        ax.set_ylabel(_metric_label(metric))
        ax.legend(fontsize=7, framealpha=0.85)
    fig.suptitle(title)
    return fig


def recovery_figure(intervals: pd.DataFrame, steps: Sequence[tuple[str, str]], reference: Mapping[str, str],
                    metric: str = "image_auroc", domain: str = "shift") -> Figure:
    """Recovery on a shift domain against the number of its normals added to the clean bank: one
    panel per detector and regime; x = no adaptation, K = 0 … (few-shot), full refit; thin lines
    per category, the macro mean bold with its bootstrap CI as a band; the clean macro mean dashed."""
    title = f"Few-shot recovery on {domain}: {_metric_label(metric)}"
    frame = _select(intervals, ("detector", "regime", "scenario", "category", "estimate", "ci_low", "ci_high"), metric=metric)
    names = [s for _, s in steps]
    frame = frame[frame["scenario"].astype(str).isin(names + list(reference.values()))]
    panels = [(d, r) for d, r in dict.fromkeys(zip(frame["detector"].astype(str), frame["regime"].astype(str)))
              if (frame[(frame["detector"] == d) & (frame["regime"] == r)]["scenario"] == steps[1][1]).any()]
    if not panels:
        return _no_data(title)
    categories = sorted(c for c in _ordered(frame["category"]) if c != "mean")
    color = palette(categories)
    x = np.arange(len(steps))
    fig, axes = _grid(len(panels), 4, (4.4, 3.8), sharey=True)
    for ax, (detector, regime) in zip(axes, panels):
        panel = frame[(frame["detector"] == detector) & (frame["regime"] == regime)].set_index(["category", "scenario"])
        for category in categories + ["mean"]:
            y = [float(panel.loc[(category, s), "estimate"]) if (category, s) in panel.index else np.nan for s in names]
            if category == "mean":
                lo = [float(panel.loc[("mean", s), "ci_low"]) if ("mean", s) in panel.index else np.nan for s in names]
                hi = [float(panel.loc[("mean", s), "ci_high"]) if ("mean", s) in panel.index else np.nan for s in names]
                ax.fill_between(x, lo, hi, color="black", alpha=0.12, lw=0)
                ax.plot(x, y, marker="s", ms=4, lw=2.2, color="black", label="macro mean [CI]")
            else:
                ax.plot(x, y, marker="o", ms=3, lw=1.0, alpha=0.8, color=color[category], label=category)
        for label, scenario in reference.items():
            if ("mean", scenario) in panel.index:
                ax.axhline(float(panel.loc[("mean", scenario), "estimate"]), ls="--", lw=1.2, color="#2ca02c", label=label)
        ax.set_xticks(x, [label for label, _ in steps], rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{detector} ({regime})", fontsize=10)
        ax.set_ylabel(_metric_label(metric))
        ax.legend(fontsize=7, framealpha=0.85)
    fig.suptitle(title)
    return fig
