"""Report tables: tidy numbers in CSV, the same table formatted for reading in Markdown and
LaTeX (booktabs). A cell with uncertainty reads "0.823 [0.790, 0.851]" (estimate [CI])."""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import pandas as pd

from shiftad.io import write_text
from shiftad.params import SCALE_MEANING, Params

METRIC_NAMES = {
    "image_auroc": "image AUROC", "image_auprc": "image AUPRC", "f1": "F1", "pixel_auroc": "pixel AUROC", "aupro": "AU-PRO",
}


def fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return str(value)


def ci_cell(estimate: float, low: float, high: float, digits: int = 3) -> str:
    if estimate is None or math.isnan(estimate):
        return "–"
    if low is None or math.isnan(low) or math.isnan(high):
        return fmt(estimate, digits)
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def p_cell(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """Counts (`n_*` columns) print as integers, other numbers with `digits` decimals, NaN as –."""

    def cell(value: object, column: str) -> str:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value) and str(column).startswith("n_"):
            return f"{value:g}"
        return fmt(value, digits).replace("|", "\\|")

    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    rows = ["| " + " | ".join(cell(v, c) for v, c in zip(row, frame.columns)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"


def with_macro_mean(table: pd.DataFrame) -> pd.DataFrame:
    """Per-category rows followed by one macro-mean row per (detector, regime, scenario)."""
    keys = ["detector", "regime", "scenario"]
    numeric = [c for c in table.columns if c not in (*keys, "category") and pd.api.types.is_numeric_dtype(table[c])]
    parts = []
    for values, group in table.groupby(keys, sort=False):
        parts.append(group)
        parts.append(pd.DataFrame([{**dict(zip(keys, values)), "category": "mean", **group[numeric].mean().to_dict()}]))
    return pd.concat(parts, ignore_index=True)[table.columns]


def latex_table(frame: pd.DataFrame, caption: str, label: str, digits: int = 3) -> str:
    """A booktabs table (\\toprule, \\midrule, \\bottomrule); text escaped for LaTeX."""
    shown = frame.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]):
            shown[column] = [fmt(v, digits) for v in shown[column]]
    shown.columns = [str(c) for c in shown.columns]
    styler = shown.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    body = styler.to_latex(hrules=True, caption=caption.replace("_", "\\_"), label=label, position="htbp",
                           position_float="centering", column_format="l" * len(shown.columns))
    return "% requires \\usepackage{booktabs}\n" + body


def write_table(folder: Path, name: str, display: pd.DataFrame, tidy: pd.DataFrame | None = None, caption: str = "") -> dict[str, str]:
    """`name`.csv (tidy numbers, or the display table), .md and .tex; returns {format: file name}."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / f"{name}.csv", (tidy if tidy is not None else display).to_csv(index=False, float_format="%.6g"))
    write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown_table(display))
    write_text(folder / f"{name}.tex", latex_table(display, caption or name, f"tab:{name}"))
    return {"CSV": f"{name}.csv", "Markdown": f"{name}.md", "LaTeX": f"{name}.tex"}


def _ordered(values: pd.Series, order: list[str] | None) -> list[str]:
    present = list(dict.fromkeys(values))
    return [v for v in order if v in present] + [v for v in present if v not in order] if order else present


def seed_cell(cell: str, n_seeds: int, seed_sd: float, digits: int = 3) -> str:
    """A CI cell with the across-seed sd appended (`± sd` over n training seeds) when n > 1."""
    if n_seeds > 1 and seed_sd is not None and not math.isnan(seed_sd):
        return f"{cell} ± {seed_sd:.{digits}f}"
    return cell


def headline_table(intervals: pd.DataFrame, scenarios: list[str], metrics: list[str]) -> pd.DataFrame:
    """Macro mean [bootstrap CI over test images] per detector, regime and metric (rows) and
    scenario (columns); with several training seeds, `± sd` over seeds after the CI."""
    mean = intervals[intervals["category"] == "mean"]
    rows = []
    for (detector, regime), group in mean.groupby(["detector", "regime"], sort=False):  # params order
        for metric in metrics:
            cells = group[group["metric"] == metric].set_index("scenario")
            row = {"detector": detector, "regime": regime, "metric": METRIC_NAMES.get(metric, metric)}
            for scenario in _ordered(group["scenario"], scenarios):
                r = cells.loc[scenario] if scenario in cells.index else None
                row[scenario] = "–" if r is None else seed_cell(ci_cell(r["estimate"], r["ci_low"], r["ci_high"]),
                                                                 int(r.get("n_seeds", 1)), r.get("seed_sd"))
            rows.append(row)
    return pd.DataFrame(rows)


def category_table(intervals: pd.DataFrame, scenarios: list[str], metric: str) -> pd.DataFrame:
    """One metric per detector, regime and category (rows; the macro mean last) and scenario (columns)."""
    picked = intervals[intervals["metric"] == metric]
    rows = []
    for (detector, regime), group in picked.groupby(["detector", "regime"], sort=False):
        categories = sorted(c for c in group["category"].unique() if c != "mean") + ["mean"]
        for category in categories:
            cells = group[group["category"] == category].set_index("scenario")
            row = {"detector": detector, "regime": regime, "category": category}
            for scenario in _ordered(group["scenario"], scenarios):
                r = cells.loc[scenario] if scenario in cells.index else None
                row[scenario] = "–" if r is None else ci_cell(r["estimate"], r["ci_low"], r["ci_high"])
            rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(comparisons: pd.DataFrame, metrics: list[str], category: str = "mean") -> pd.DataFrame:
    picked = comparisons[(comparisons["category"] == category) & comparisons["metric"].isin(metrics)]
    return pd.DataFrame({
        "family": picked["family"], "A": picked["a"], "B": picked["b"], "metric": picked["metric"].map(lambda m: METRIC_NAMES.get(m, m)),
        "A − B [CI]": [ci_cell(d, lo, hi) for d, lo, hi in zip(picked["difference"], picked["ci_low"], picked["ci_high"])],
        "p (bootstrap)": picked["p_bootstrap"].map(p_cell), "p Holm": picked["p_bootstrap_holm"].map(p_cell),
        "p (DeLong)": picked["p_delong"].map(p_cell), "p DeLong Holm": picked["p_delong_holm"].map(p_cell),
    }).reset_index(drop=True)


def robustness_table(robustness: pd.DataFrame) -> pd.DataFrame:
    """Macro image AUROC [CI] per detector and family (rows) and severity (columns; 0 = clean)."""
    mean = robustness[robustness["category"] == "mean"]
    rows = []
    for (detector, family), group in mean.groupby(["detector", "family"], sort=True):
        row = {"detector": detector, "family": family}
        for r in group.sort_values("severity").itertuples():
            row[f"severity {r.severity}" if r.severity else "clean"] = ci_cell(r.image_auroc, r.ci_low, r.ci_high)
        rows.append(row)
    return pd.DataFrame(rows)


def corruption_table(robustness: pd.DataFrame, corruptions: list[str]) -> pd.DataFrame:
    """The published corruption protocol: per detector (clean per-class models) and severity, macro
    image AUROC [CI] clean and under each corruption, the mean over the corruptions, and the
    macro pixel AUROC under each (no CI: the sweep stores its point value)."""
    mean = robustness[(robustness["category"] == "mean") & robustness["family"].isin(corruptions)]
    if mean.empty:
        return pd.DataFrame()
    clean = robustness[(robustness["category"] == "mean") & (robustness["severity"] == 0)].drop_duplicates("detector").set_index("detector")
    rows = []
    for (detector, severity), group in mean[mean["severity"] > 0].groupby(["detector", "severity"], sort=False):
        by_name = group.set_index("family")
        row = {"detector": detector, "severity": int(severity),
               "clean": ci_cell(*clean.loc[detector, ["image_auroc", "ci_low", "ci_high"]]) if detector in clean.index else "–"}
        for name in corruptions:
            if name in by_name.index:
                r = by_name.loc[name]
                row[name] = ci_cell(r["image_auroc"], r["ci_low"], r["ci_high"])
        row["mean of corruptions"] = fmt(float(group["image_auroc"].mean()))
        for name in corruptions:
            if name in by_name.index:
                row[f"{name} pixel AUROC"] = fmt(float(by_name.loc[name, "pixel_auroc"]))
        rows.append(row)
    return pd.DataFrame(rows)


def breakdown_table(breakdowns: pd.DataFrame, kind: str) -> pd.DataFrame:
    picked = breakdowns[breakdowns["breakdown"] == kind]
    if kind == "defect_size":
        picked = picked[picked["category"] == "mean"]
    return pd.DataFrame({
        "detector": picked["detector"], "regime": picked["regime"], "scenario": picked["scenario"], "category": picked["category"],
        "group": picked["group"], "n_anomalous": picked["n_anomalous"],
        "image AUROC [CI]": [ci_cell(e, lo, hi) for e, lo, hi in zip(picked["image_auroc"], picked["ci_low"], picked["ci_high"])],
        "detection rate": picked["detection_rate"],
        "normal FPR": picked["false_positive_rate"] if "false_positive_rate" in picked else float("nan"),
    }).reset_index(drop=True)


def data_table(scenarios_table: pd.DataFrame, scenario_order: list[str]) -> pd.DataFrame:
    """Per category and scenario test set: images, anomalous images, and the anomalous images
    whose mask has no defect pixel (counted in image metrics, left out of pixel metrics)."""
    rows = scenarios_table[scenarios_table["scenario"].isin(scenario_order)]
    columns = ["n_test", "n_test_anomalous"] + (["n_test_pixel_excluded"] if "n_test_pixel_excluded" in rows else [])
    table = rows.groupby(["category", "scenario"], sort=False)[columns].first().reset_index()
    table["scenario"] = pd.Categorical(table["scenario"], scenario_order, ordered=True)
    table = table.sort_values(["category", "scenario"]).reset_index(drop=True)
    table["scenario"] = table["scenario"].astype(str)
    return table.rename(columns={"n_test": "test images", "n_test_anomalous": "anomalous",
                                 "n_test_pixel_excluded": "anomalous, empty mask (not in pixel metrics)"})


def confusion_table(scenarios_table: pd.DataFrame) -> pd.DataFrame:
    """Counts at the validation-chosen threshold, summed over categories."""
    sums = scenarios_table.groupby(["detector", "regime", "scenario"], sort=False)[["tn", "fp", "fn", "tp"]].sum().reset_index()
    return sums.rename(columns={"tn": "n_tn", "fp": "n_fp", "fn": "n_fn", "tp": "n_tp"})


def kshot_table(kshot: pd.DataFrame) -> pd.DataFrame:
    """Per detector and K: the macro mean over categories of each draw, then mean ± sd over draws."""
    per_draw = kshot.groupby(["detector", "k", "draw"], sort=False).agg(
        image_auroc=("image_auroc", "mean"), f1=("f1", "mean"), threshold=("threshold", "mean"),
        memory_bank_size=("memory_bank_size", "mean"), fit_seconds=("fit_seconds", "mean"), ms_per_image=("ms_per_image", "mean"))
    rows = []
    for (detector, k), group in per_draw.groupby(level=["detector", "k"], sort=False):
        row = {"detector": detector, "K": int(k), "draws": len(group)}
        for column, label, digits in (("image_auroc", "image AUROC", 3), ("f1", "F1", 3), ("threshold", "threshold", 3)):
            row[label] = f"{group[column].mean():.{digits}f} ± {group[column].std(ddof=1) if len(group) > 1 else 0:.{digits}f}"
        row["bank size"] = int(round(group["memory_bank_size"].mean()))
        row["fit s"] = round(float(group["fit_seconds"].mean()), 3)
        row["ms / image"] = round(float(group["ms_per_image"].mean()), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def kshot_category_table(kshot: pd.DataFrame) -> pd.DataFrame:
    """Image AUROC mean ± sd over draws per detector, category (rows) and K (columns)."""
    stats = kshot.groupby(["detector", "category", "k"], sort=False)["image_auroc"].agg(["mean", "std"]).reset_index()
    stats["cell"] = [f"{m:.3f} ± {0 if pd.isna(s) else s:.3f}" for m, s in zip(stats["mean"], stats["std"])]
    wide = stats.pivot(index=["detector", "category"], columns="k", values="cell")
    wide.columns = [f"K={k}" for k in wide.columns]
    return wide.reset_index()


def recovery_table(intervals: pd.DataFrame, comparisons: pd.DataFrame, steps: list[tuple[str, str]],
                   metrics: tuple[str, ...] = ("image_auroc", "f1", "aupro"), per_category: bool = False) -> pd.DataFrame:
    """Metric [CI] per detector, regime and adaptation step (`steps`: (label, scenario) from no
    adaptation through K shifted normals to the full refit), with the paired difference to no
    adaptation; the macro mean, or every category then the mean (`per_category`)."""
    indexed = intervals.set_index(["detector", "regime", "scenario", "category", "metric"])
    diffs = comparisons[comparisons["family"] == "adaptation"] if not comparisons.empty else comparisons
    categories = (sorted(c for c in intervals["category"].unique() if c != "mean") if per_category else []) + ["mean"]
    rows = []
    for detector, regime in dict.fromkeys(zip(intervals["detector"], intervals["regime"])):
        if (detector, regime, steps[1][1], "mean", metrics[0]) not in indexed.index:
            continue  # this detector has no few-shot runs
        for category in categories:
            for label, scenario in steps:
                row = {"detector": detector, "regime": regime, **({"category": category} if per_category else {}), "step": label}
                for metric in metrics:
                    key = (detector, regime, scenario, category, metric)
                    row[METRIC_NAMES.get(metric, metric)] = ci_cell(*indexed.loc[key, ["estimate", "ci_low", "ci_high"]]) if key in indexed.index else "–"
                d = diffs[(diffs["a"] == f"{detector}/{regime}/{scenario}") & (diffs["category"] == category)
                          & (diffs["metric"] == metrics[0])] if not diffs.empty else diffs
                row[f"Δ {METRIC_NAMES.get(metrics[0])} vs no adaptation"] = (
                    ci_cell(d.iloc[0]["difference"], d.iloc[0]["ci_low"], d.iloc[0]["ci_high"]) if len(d) else "–")
                rows.append(row)
    return pd.DataFrame(rows)


def routing_accuracy(routing: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Routing accuracy per run of a routing detector's routed regime and image label (normal,
    anomalous, all), with a Wilson interval; one row per distinct (model, test) domain pair."""
    from scipy.stats import binomtest

    if routing.empty:
        return pd.DataFrame()
    routing = routing.assign(correct=routing["routed_category"] == routing["category"])
    rows = []
    routed = routing[routing["regime"] == "global"].drop_duplicates(["detector", "model_domain", "test_domain", "category", "label", "routed_category"])
    for (detector, scenario, model, test), group in routed.groupby(["detector", "scenario", "model_domain", "test_domain"], sort=False):
        for label in ("normal", "anomalous", "all"):
            part = group if label == "all" else group[group["label"] == label]
            n, k = int(part["n"].sum()), int(part.loc[part["correct"], "n"].sum())
            low, high = binomtest(k, n).proportion_ci(confidence, method="wilson") if n else (float("nan"), float("nan"))
            rows.append({"detector": detector, "scenario": scenario, "router_trained_on": model, "test_images": test, "label": label,
                         "n_images": n, "n_misrouted": n - k, "accuracy": k / n if n else float("nan"), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def routing_table(accuracy: pd.DataFrame, intervals: pd.DataFrame, comparisons: pd.DataFrame) -> pd.DataFrame:
    """Per run: routing accuracy [Wilson CI] for normal and anomalous test images, and macro image
    AUROC under predicted routing (global regime) against oracle routing (per_class) [CI], with the
    paired difference oracle − predicted (the cost of routing)."""
    if accuracy.empty:
        return pd.DataFrame()
    mean = intervals[(intervals["category"] == "mean") & (intervals["metric"] == "image_auroc")].set_index(["detector", "regime", "scenario"])
    pairs = comparisons[(comparisons["family"] == "regime") & (comparisons["category"] == "mean") & (comparisons["metric"] == "image_auroc")] \
        if not comparisons.empty else comparisons
    rows = []
    for (detector, scenario), group in accuracy.groupby(["detector", "scenario"], sort=False):
        by_label = group.set_index("label")
        row = {"detector": detector, "scenario": scenario, "router trained on": group["router_trained_on"].iloc[0],
               "test images": group["test_images"].iloc[0]}
        for label in ("normal", "anomalous"):
            r = by_label.loc[label]
            row[f"routing accuracy, {label}"] = f"{ci_cell(r['accuracy'], r['ci_low'], r['ci_high'])} ({int(r['n_misrouted'])}/{int(r['n_images'])} misrouted)"
        for regime, name in (("global", "AUROC predicted routing"), ("per_class", "AUROC oracle routing")):
            key = (detector, regime, scenario)
            row[name] = ci_cell(*mean.loc[key, ["estimate", "ci_low", "ci_high"]]) if key in mean.index else "–"
        pair = pairs[pairs["a"] == f"{detector}/per_class/{scenario}"] if not pairs.empty else pairs
        row["oracle − predicted [CI]"] = ci_cell(*pair.iloc[0][["difference", "ci_low", "ci_high"]]) if len(pair) else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def scale_label(scale: str) -> str:
    """The Detectors table's label of a trained detector's scale (every scale but the paper's)."""
    return "" if scale == "paper" else f"; {scale.upper()} SCALE ({SCALE_MEANING[scale]}): not comparable with the paper's numbers"


def training_frame(params: Params, root: Path = Path(".")) -> pd.DataFrame:
    """The training histories of the trained detectors' per-class clean models (reference seed),
    from each model's meta.json: one row per detector, category and logged step (EfficientAD) or
    epoch (Uninformed Students, the mean over its students), with the scale's and the paper's
    length of training."""
    from shiftad.io import read_json
    from shiftad.pipeline import TRAINED_DETECTORS, model_path

    rows = []
    for detector in (d for d in params.detectors if d in TRAINED_DETECTORS):
        p = getattr(params, detector)
        unit, planned, paper = (("step", p.train.steps, p.training["paper"].steps) if detector == "efficientad"
                                else ("epoch", p.train.epochs, p.training["paper"].epochs))
        for category in params.categories:
            meta_file = root / model_path(detector, "per_class", "clean", category, params.reference_seed) / "meta.json"
            history = read_json(meta_file)["training"]["history"]
            if detector == "efficientad":
                points = [(h["step"], h["loss"]) for h in history]
            else:  # {"p17_s0": [{"epoch": 1, "loss": ...}, ...], ...}: the mean over the students
                epochs = pd.DataFrame([h for student in history.values() for h in student]).groupby("epoch")["loss"].mean()
                points = list(epochs.items())
            rows += [{"detector": detector, "scale": p.scale, "category": category, "unit": unit, "progress": int(x), "loss": float(loss),
                      "planned": planned, "paper": paper} for x, loss in points]
    return pd.DataFrame(rows, columns=["detector", "scale", "category", "unit", "progress", "loss", "planned", "paper"])


def training_table(training: pd.DataFrame) -> pd.DataFrame:
    """Per trained detector: its length of training beside the paper's, and how much the loss
    still fell over the last quarter of it (macro mean over categories): a loss still falling
    means a detector stopped far from converged."""
    rows = []
    for detector, frame in training.groupby("detector", sort=False):
        first = frame.iloc[0]
        drops = []
        for _, curve in frame.groupby("category"):
            curve = curve.sort_values("progress")
            late = curve[curve["progress"] >= 0.75 * first["planned"]]
            if len(late) >= 2 and late["loss"].iloc[0] > 0:
                drops.append(1 - late["loss"].iloc[-1] / late["loss"].iloc[0])
        rows.append({"detector": detector, "scale": first["scale"], "trained": f"{first['planned']:,} {first['unit']}s",
                     "paper": f"{first['paper']:,} {first['unit']}s", "share of the paper's": f"{first['planned'] / first['paper']:.2%}",
                     "loss drop over the last quarter": f"{sum(drops) / len(drops):.1%}" if drops else "–"})
    return pd.DataFrame(rows)


def detectors_table(params: Params) -> pd.DataFrame:
    """One row per detector: the scale it ran at and what it was trained with, from params.
    Rows of trained detectors below the paper's scale are labelled with the scale's name: they
    are not comparable with the papers' numbers."""
    rows = []
    for name in params.detectors:
        row = {"detector": name, "scale": "full", "setting": "", "notes": ""}
        if name == "efficientad":
            p = params.efficientad
            arch, train, teacher = p.arch, p.train, p.teacher_training
            paper = p.architecture["paper"]
            row["scale"] = p.scale
            row["setting"] = (f"EfficientAD-{p.model_size[0].upper()}: PDN input {arch.image_size} px, width ×{arch.width:g}, "
                              f"C = {arch.channels}, {train.steps:,} steps (paper: {paper.image_size} px, width ×{paper.width:g}, "
                              f"C = {paper.channels}, {p.training['paper'].steps:,} steps)")
            source = (f"teacher distilled offline from {params.backbone.name} {' + '.join(p.teacher.layers)} "
                      f"({teacher.steps:,} steps × {teacher.batch_size})" if p.teacher.source == "distill"
                      else f"teacher weights from {p.teacher.source}")
            pool = ("penalty images: scikit-image photos + procedural images (fitted categories left out)"
                    if p.penalty_images == "default" else f"penalty images: folder {p.penalty_images}")
            row["notes"] = f"{source}; {pool}" + scale_label(p.scale)
        elif name == "uninformed_students":
            p = params.uninformed_students
            arch, train, teacher, paper = p.arch, p.train, p.teacher_training, p.architecture["paper"]
            row["scale"] = p.scale
            row["setting"] = (f"patch sizes {', '.join(map(str, arch.patch_sizes))}: input {arch.image_size} px, width ×{arch.width:g}, "
                              f"d = {arch.descriptor_dim}, {p.students} students × {train.epochs} epochs (paper: patch sizes "
                              f"{', '.join(map(str, paper.patch_sizes))}, {paper.image_size} px, width ×{paper.width:g}, d = {paper.descriptor_dim}, "
                              f"{p.training['paper'].epochs} epochs)")
            teacher_backbone = params.backbone.name if p.teacher.backbone == "default" else p.teacher.backbone
            row["notes"] = (f"teachers distilled from {teacher_backbone} {' + '.join(p.teacher.layers)} (pooled descriptor of the "
                            f"patch, {teacher.patches:,} patches × {teacher.epochs} epochs, compactness weight {p.teacher.compactness_weight:g}); "
                            "uncertainty maps (students' variance) in the gallery"
                            + scale_label(p.scale))
        elif name == "knn":
            row["setting"] = f"{params.knn.shots or 'all'} shots per category, k = {params.knn.k}, {params.knn.distance}"
        elif name == "routed_ae":
            row["setting"] = f"1×1 autoencoders {params.routed_ae.hidden}/{params.routed_ae.latent}, up to {params.routed_ae.epochs} epochs"
        elif name == "patchcore":
            row["setting"] = f"coreset {params.patchcore.coreset_ratio:g}, {' + '.join(params.patchcore.layers)}"
        elif name == "padim":
            row["setting"] = f"{params.padim.n_features} features, {' + '.join(params.padim.layers)}"
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- shift domains

MIN_LOSS = 0.02  # below this clean → no-adaptation loss a recovered share is noise


def domain_summary(params: Params, domain: str) -> str:
    """A shift domain in a few words: recipe and settings."""
    recipe = params.domains[domain]
    if recipe.recipe == "corruption":
        return f"{recipe.corruption}, severity {recipe.severity or 3}"
    severity = recipe.severity or params.shift.severity
    families = "+".join(recipe.families or params.shift.families)
    jitter = f", jitter {recipe.jitter:g}" if recipe.recipe == "camera_change" else ""
    return f"{recipe.recipe}, severity {severity}, {families}{jitter}"


def domains_table(params: Params) -> pd.DataFrame:
    return pd.DataFrame([{"domain": d, "recipe": params.domains[d].recipe, "settings": domain_summary(params, d),
                          "models fitted on it": fitted_detectors(params, d)} for d in params.domains])


def fitted_detectors(params: Params, domain: str) -> str:
    """Which detectors are fitted on `domain` (refit), in words."""
    fitted = [d for d in params.detectors if domain in params.fit_domains_of(d)]
    if not fitted:
        return "none (evaluated only)"
    return "every detector" if fitted == list(params.detectors) else ", ".join(fitted)


def domain_recovery_table(intervals: pd.DataFrame, params: Params, metric: str = "image_auroc", k: int = 8) -> pd.DataFrame:
    """Per shift domain, detector and regime: the macro `metric` [CI] at each recovery step (clean,
    no adaptation, threshold only, few-shot with K of the domain's normals, refit) and the share of
    the clean → no-adaptation loss each adaptation wins back. Tidy: one row per step."""
    from shiftad.evaluate.stage import effect_scenarios

    runs = params.scenario_runs()
    clean = next((n for n, r in runs.items() if (r.model, r.threshold, r.test, r.k) == ("clean", "clean", "clean", None)), None)
    mean = intervals[(intervals["category"] == "mean") & (intervals["metric"] == metric)].set_index(["detector", "regime", "scenario"])
    rows = []
    for domain, steps in effect_scenarios(params).items():
        adapted = {model: next((n for n, r in runs.items() if r.test == domain and r.k == k and r.model == model), None)
                   for model in ("feature_align", "adabn", "fewshot")}
        named = {"clean": clean, "no adaptation": steps.get("no_adaptation"), "threshold only": steps.get("threshold_only"),
                 f"feature_align K = {k} (label-free)": adapted["feature_align"], f"adabn K = {k} (label-free)": adapted["adabn"],
                 f"few-shot K = {k}": adapted["fewshot"], "refit": steps.get("refit")}
        for detector in params.detectors:
            for regime in ("per_class", "global"):
                cells = {label: mean.loc[(detector, regime, name)] for label, name in named.items()
                         if name is not None and (detector, regime, name) in mean.index}
                if "no adaptation" not in cells or "clean" not in cells:
                    continue
                loss = float(cells["clean"]["estimate"] - cells["no adaptation"]["estimate"])
                for label, cell in cells.items():
                    gain = float(cell["estimate"] - cells["no adaptation"]["estimate"])
                    recovered = gain / loss if label not in ("clean", "no adaptation") and loss >= MIN_LOSS else float("nan")
                    rows.append({"domain": domain, "detector": detector, "regime": regime, "step": label, "scenario": named[label],
                                 "metric": metric, "estimate": float(cell["estimate"]), "ci_low": float(cell["ci_low"]),
                                 "ci_high": float(cell["ci_high"]), "loss": loss, "recovered": recovered})
    return pd.DataFrame(rows)


def domain_recovery_display(recovery: pd.DataFrame) -> pd.DataFrame:
    """One row per domain, detector and regime; one column per step ([CI], and the recovered share)."""
    rows = []
    for (domain, detector, regime), group in recovery.groupby(["domain", "detector", "regime"], sort=False):
        row = {"domain": domain, "detector": detector, "regime": regime}
        for r in group.itertuples():
            cell = ci_cell(r.estimate, r.ci_low, r.ci_high)
            row[r.step] = cell if math.isnan(r.recovered) else f"{cell} ({r.recovered:.0%})"
        rows.append(row)
    display = pd.DataFrame(rows)
    columns = ["domain", "detector", "regime"] + [c for c in display.columns if c not in ("domain", "detector", "regime")]
    return display[columns].fillna("–")


def cross_shift_table(cross: pd.DataFrame, domains: list[str]) -> pd.DataFrame:
    """Macro image AUROC [CI] per detector, regime and model domain (rows) on each test domain
    (columns, in `domains` order); – where that pair is not scored."""
    mean = cross[cross["category"] == "mean"]
    rows = []
    for (detector, regime, model), group in mean.groupby(["detector", "regime", "model_domain"], sort=False):
        cells = group.set_index("test_domain")
        row = {"detector": detector, "regime": regime, "model and threshold from": model}
        for domain in domains:
            row[domain] = ci_cell(*cells.loc[domain, ["image_auroc", "ci_low", "ci_high"]]) if domain in cells.index else "–"
        rows.append(row)
    return pd.DataFrame(rows)


def coreset_table(coreset: pd.DataFrame, domains: list[str]) -> pd.DataFrame:
    """The memory-bank size trade-off: per detector and coreset ratio, the bank size and
    inference ms per image (means over categories) and the macro image AUROC on each domain's
    test images (clean and every shift domain)."""
    rows = []
    for (detector, ratio), group in coreset.groupby(["detector", "coreset_ratio"], sort=True):
        clean = group[group["test_domain"] == "clean"]
        row = {"detector": detector, "coreset ratio": f"{ratio:g}", "bank (patches)": f"{clean['memory_bank_size'].mean():,.0f}",
               "ms / image": f"{clean['ms_per_image'].mean():.1f}"}
        macro = group.groupby("test_domain")["image_auroc"].mean()
        for domain in domains:
            row[domain] = fmt(macro.get(domain, float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)
