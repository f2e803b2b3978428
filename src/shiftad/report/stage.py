"""The report stage, the DAG's last rule: tables, figures and `report/index.html`.

Reads only what earlier stages wrote: `results/metrics/{scenarios,routing}.csv`, `results/statistics/`,
the ROC/PR curve files, the predictions, heatmap overlays and (linked) executed notebooks.
Writes `report/tables/` (CSV, Markdown, LaTeX), `report/figures/` (PNG and PDF),
`report/gallery/` (thumbnails and mask layers), `report/index.html` and `report/index.md`.
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd
from tqdm.auto import tqdm

from shiftad.io import atomic_dir, write_text
from shiftad.parallel import process_pool
from shiftad.params import SCALE_MEANING, Params
from shiftad.paths import PREDICTIONS_DIR, REPORT_DIR
from shiftad.results import load_results
from shiftad.pipeline import REGIMES
from shiftad.report import figures as F
from shiftad.report import tables as T
from shiftad.report.gallery import build_tiles
from shiftad.report.html import Figure, Gallery, Section, Table, Text, Tile, check_links, write_page

log = logging.getLogger(__name__)
HEADLINE_METRICS = ["image_auroc", "f1", "pixel_auroc", "aupro"]
NOTEBOOKS_DIR = REPORT_DIR / "notebooks"


class FigureWriter:
    """Collects the report's figures as (figure function, arguments); `start` draws and saves them
    in worker processes (matplotlib's layout and PNG encoding are most of the stage) while this
    process goes on with the gallery, `finish` waits for them."""

    def __init__(self, folder: Path, pdf: bool, progress: bool = True):
        self.folder, self.pdf, self.progress, self.blocks = folder, pdf, progress, {}
        self.jobs: list[tuple] = []
        self._pending: list = []

    def add(self, section: str, name: str, make: Callable, args: tuple, caption: str, pdf: bool = True, **kwargs) -> None:
        pdf = pdf and self.pdf
        self.jobs.append((make.__name__, args, kwargs, str(self.folder / name), pdf))
        self.blocks.setdefault(section, []).append(Figure(f"figures/{name}.png", caption, pdf=f"figures/{name}.pdf" if pdf else None))

    def start(self, pool: Executor | None) -> None:
        if pool is None:  # one thread: draw here, in order
            for job in tqdm(self.jobs, desc="report figures", disable=not self.progress):
                draw_figure(job)
        else:
            self._pending = [pool.submit(draw_figure, job) for job in self.jobs]

    def finish(self) -> None:
        for future in tqdm(self._pending, desc="report figures", disable=not self.progress):
            future.result()  # re-raises a worker's error here
        self._pending = []


def draw_figure(job: tuple) -> None:
    """Draw one figure (a function of `shiftad.report.figures` by name) and save it."""
    name, args, kwargs, stem, pdf = job
    F.save_figure(getattr(F, name)(*args, **kwargs), Path(stem), pdf=pdf)


def _is_fewshot(run: str, runs: dict) -> bool:
    scenario = str(run).split("/")[-1]
    return scenario in runs and runs[scenario].k is not None


def few_shot_steps(params: Params, domain: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """A shift domain's recovery curve: its x axis as (label, scenario) — no adaptation, each K
    of its few-shot runs, the full refit — and its reference lines (label -> scenario)."""
    runs = params.scenario_runs()
    pick = lambda m, t, x: next((n for n, s in runs.items() if (s.model, s.threshold, s.test, s.k) == (m, t, x, None)), None)  # noqa: E731
    fewshot = [(f"{s.model} K = {s.k}" if s.model != "fewshot" else f"K = {s.k}", n) for n, s in runs.items()
               if s.k is not None and s.test == domain]
    if not fewshot:
        return [], {}
    steps = ([("no adaptation", pick("clean", "clean", domain))] if pick("clean", "clean", domain) else []) + fewshot
    steps += [("full refit", pick(domain, domain, domain))] if pick(domain, domain, domain) else []
    return steps, ({"clean": pick("clean", "clean", "clean")} if pick("clean", "clean", "clean") else {})


def adaptation_curves(params: Params, domain: str) -> dict[str, list[tuple[int, str]]]:
    """A shift domain's adaptation curves: per method (each adaptation, plus threshold only and
    refit as flat references), its (K, scenario) points."""
    runs = params.scenario_runs()
    curves: dict[str, list[tuple[int, str]]] = {}
    for name, run in runs.items():
        if run.test == domain and run.k is not None:
            curves.setdefault(run.model, []).append((run.k, name))
    ks = sorted({k for points in curves.values() for k, _ in points})
    for label, (model, threshold) in (("no adaptation", ("clean", "clean")), ("threshold only", ("clean", domain)), ("refit", (domain, domain))):
        name = next((n for n, r in runs.items() if (r.model, r.threshold, r.test, r.k) == (model, threshold, domain, None)), None)
        if name is not None and ks:
            curves[label] = [(k, name) for k in ks]
    return curves


def map_twins(params: Params) -> dict[str, str]:
    """Scenario -> the earlier scenario with the same model and test images (threshold only -> no
    adaptation): the same scores, maps and curves under another threshold. Figures of scores,
    curves and heatmaps show the first of each such group once."""
    first: dict[tuple[str, str], str] = {}
    twins = {}
    for name, run in params.scenario_runs().items():
        key = run.test_scores
        if key in first:
            twins[name] = first[key]
        else:
            first[key] = name
    return twins


def headline_scenarios(params: Params) -> list[str]:
    """The headline's columns: the clean scenario(s), then each shift domain's no-adaptation run
    (what the shift costs an unadapted model); the domains' other runs have their own section."""
    runs = params.scenario_runs()
    return ([n for n, s in runs.items() if s.test == "clean" and s.k is None]
            + [n for n, s in runs.items() if s.test != "clean" and (s.model, s.threshold, s.k) == ("clean", "clean", None)])


def run_report_stage(params: Params, progress: bool = True) -> Path:
    all_runs = params.scenario_runs()
    # Few-shot runs have their own section (table, recovery figures); tables by scenario and galleries show the rest.
    scenario_order = [n for n, s in all_runs.items() if s.k is None]
    shown = set(scenario_order)
    twins = map_twins(params)
    drawn = [n for n in scenario_order if n not in twins]  # one panel or gallery per model and test set
    results = load_results()
    scenarios, intervals, comparisons = results.scenarios, results.intervals, results.comparisons
    breakdowns, robustness, errors, roc, pr = results.breakdowns, results.robustness, results.errors, results.roc, results.pr
    thresholds = scenarios.set_index(["detector", "regime", "scenario", "category"])["threshold"]
    thresholds = thresholds[[key[2] in shown for key in thresholds.index]]
    predictions = results.predictions()
    predictions = predictions[predictions["scenario"].isin(shown)]
    runs = [(d, r) for d in params.detectors for r in REGIMES]
    shift_scenarios = [s for s in scenario_order if all_runs[s].test != "clean"]
    headline = [s for s in headline_scenarios(params) if s in shown]
    kshot = results.kshot
    domain_steps = {d: few_shot_steps(params, d) for d in params.domains}
    domain_steps = {d: v for d, v in domain_steps.items() if v[0]}
    tables: dict[str, list] = {}

    with (atomic_dir(REPORT_DIR / "tables") as tables_dir, atomic_dir(REPORT_DIR / "figures") as figures_dir,
          atomic_dir(REPORT_DIR / "gallery") as gallery_dir, process_pool(params.threads) as pool):

        def table(section: str, name: str, display: pd.DataFrame, caption: str, tidy: pd.DataFrame | None = None) -> None:
            files = T.write_table(tables_dir, name, display, tidy, caption)
            tables.setdefault(section, []).append(
                Table(caption.split(".")[0], display, caption, [(fmt, f"tables/{f}") for fmt, f in files.items()]))

        level = f"{params.statistics.confidence:.0%}"
        boot = f"stratified bootstrap over test images, {params.statistics.n_resamples} resamples"
        main = intervals[intervals["scenario"].isin(scenario_order)]  # few-shot runs: their own section
        top = intervals[intervals["scenario"].isin(headline)]
        detectors = T.detectors_table(params)
        scales = dict(zip(detectors["detector"], detectors["scale"]))
        meanings = {s: SCALE_MEANING.get(s, "the method as published, on the offline backbone") for s in dict.fromkeys(scales.values())}
        scale_note = (" Scale per detector: " + ", ".join(f"{d} {s}" for d, s in scales.items()) + " ("
                      + "; ".join(f"{s}: {m}" for s, m in meanings.items()) + ").")
        seeds = params.seeds
        seed_note = (f" [CI] is the test-set uncertainty of the reference run (training seed {seeds[0]}); ± is the sd of the macro "
                     f"mean over {len(seeds)} training seeds ({', '.join(map(str, seeds))}): the training-seed uncertainty."
                     if len(seeds) > 1 else f" One training seed ({seeds[0]}): no across-seed spread (set seeds: [0, 1, 2]).")
        table("Headline", "headline", T.headline_table(top, headline, HEADLINE_METRICS),
              f"Macro mean over categories [{level} CI; {boot}], clean and on each shift domain without adaptation (clean model "
              f"and threshold; the Domains section has every adaptation).{seed_note} Thresholds were chosen on validation images "
              f"only.{scale_note}", top[top["category"] == "mean"])
        cross = results.cross_shift
        if not cross.empty:
            table("Domains", "cross_shift", T.cross_shift_table(cross, params.data_domains),
                  f"Cross-shift generalisation: macro image AUROC [{level} CI; {boot}] of the models fitted on each domain (rows; "
                  "model and threshold from it) on each domain's test images (columns); – where the pair is not scored.", cross)
        corruptions = T.corruption_table(robustness, params.robustness.corruptions) if not robustness.empty else pd.DataFrame()
        if not corruptions.empty:
            table("Domains", "corruptions", corruptions,
                  f"The published corruption protocol (ADShift, Cao et al. ICCV 2023; MVTec-C): macro image AUROC [{level} CI; "
                  f"{boot}] of the clean per-class models on the test images under each common corruption (imagecorruptions' "
                  "values), no adaptation, and the macro pixel AUROC; the robustness sweep's conditions. As a shift domain "
                  "(params `domains`, config/corruptions.yaml) a corruption also gets the global models, threshold only and the "
                  "cross-shift matrix.", robustness[robustness["family"].isin(params.robustness.corruptions)])
        recovery = T.domain_recovery_table(intervals, params)
        if not recovery.empty:
            table("Domains", "domains", T.domains_table(params), "The shift domains: recipe, settings, and whether models are fitted on them.")
            table("Domains", "domain_recovery", T.domain_recovery_display(recovery),
                  f"Macro image AUROC [{level} CI] per shift domain: clean, on the domain without adaptation, with the "
                  "threshold from the domain's validation images, with its patch features aligned to the clean statistics "
                  "from K = 8 of its unlabelled normals (feature_align) or those normals added to the clean bank (memory-bank "
                  "detectors), and refitted on it (fitted domains); recovered = share of the clean → no-adaptation loss an "
                  "adaptation wins back (shown where the loss is at least 0.02).", recovery)
        data = T.data_table(scenarios, scenario_order)
        excluded = int(data.iloc[:, -1].sum()) if data.columns[-1].startswith("anomalous, empty") else 0
        table("Data", "data", data,
              "Test images per category and scenario test set. Masks are read as the MVTec evaluation reads them: every "
              f"non-zero pixel is defect. Images become the {params.image_size} x {params.image_size} model input by "
              f"resize: {params.resize} (masks and maps follow it; README: Non-square and large images). " + (f"{excluded} anomalous test image(s) have an empty mask (annotated at image level "
              "only): they count in image metrics and are left out of pixel metrics, not treated as normal pixels."
              if excluded else "Every anomalous test image with a mask has defect pixels."))
        table("Detectors", "detectors", detectors,
              "The detectors as run: scale and setting (rows of trained detectors below the paper's scale carry the scale's "
              "name and are not comparable with the papers' numbers), teachers and penalty images where a method uses them.")
        training = T.training_frame(params)
        if not training.empty:
            table("Training", "training", T.training_table(training),
                  "The trained detectors' length of training beside the paper's, and the macro-mean share by which the "
                  "training loss still fell over its last quarter (per-class clean models, reference seed).", training)
        for metric in HEADLINE_METRICS:
            table("Per category", f"category_{metric}", T.category_table(top, headline, metric),
                  f"{T.METRIC_NAMES[metric]} per category [{level} CI], clean and each shift domain without adaptation "
                  "(every scenario: metrics.csv).", main[main["metric"] == metric])
        full = T.with_macro_mean(scenarios)[[c for c in scenarios.columns if not c.endswith("_domain") and c not in ("threshold_f1_max", "threshold_percentile", "threshold_mean_std")]]
        table("Per category", "metrics", full, "All point metrics per run and category (threshold rule, counts, timing).")
        table("Comparisons", "comparisons", T.comparisons_table(comparisons, HEADLINE_METRICS),
              "Paired comparisons of macro means on the same test images: difference A − B [CI], bootstrap p, Holm-adjusted p "
              "within each family (per-category rows and DeLong tests in the CSV).", comparisons)
        for domain, (steps, _) in domain_steps.items():
            table("Few-shot adaptation", f"fewshot_recovery_{domain}", T.recovery_table(intervals, comparisons, steps),
                  f"{domain}: recovery by adding K of the domain's normal training images to the clean memory bank: macro mean "
                  f"[{level} CI] per adaptation step (threshold from the domain's validation images from K = 0 on), and the paired "
                  "difference to no adaptation [CI].", intervals[intervals["scenario"].isin([s for _, s in steps])])
            table("Few-shot adaptation", f"fewshot_recovery_categories_{domain}",
                  T.recovery_table(intervals, comparisons, steps, metrics=("image_auroc", "aupro"), per_category=True),
                  f"{domain}: the recovery per category (then the macro mean): image AUROC and AU-PRO [{level} CI], paired "
                  "difference to no adaptation [CI].")
        if not results.coreset.empty:
            table("K-shot curves", "coreset", T.coreset_table(results.coreset, params.data_domains),
                  "Memory-bank size trade-off: the model fitted on every train image of a category at each coreset ratio; bank "
                  "size and inference ms per image (network + search + maps), means over categories; macro image AUROC on each "
                  "domain's test images.", results.coreset)
            figures_coreset = True
        else:
            figures_coreset = False
        if not kshot.empty:
            table("K-shot curves", "kshot", T.kshot_table(kshot),
                  "K-shot learning curves: macro mean over categories per seeded draw of the K clean training images, then "
                  "mean ± sd over draws; threshold from validation images (the detector's rule); bank size in patches; fit time "
                  "= feature extraction of the K images + bank building; inference = extraction + search + map.", kshot)
            table("K-shot curves", "kshot_categories", T.kshot_category_table(kshot),
                  "Image AUROC per category and K (mean ± sd over draws).")
        if not robustness.empty:
            table("Robustness", "robustness", T.robustness_table(robustness),
                  "Macro image AUROC [CI] under one shift family or published corruption at increasing severity (clean per-class models, no adaptation).",
                  robustness)
        for kind, title in (("defect_type", "per defect type"), ("defect_size", "per defect size (macro)")):
            table("Breakdowns", f"breakdown_{kind}", T.breakdown_table(breakdowns, kind),
                  f"Image AUROC {title}: normal test images vs the group's anomalous ones [CI; none for groups under 5 images]; the group's detection rate and the normal images' false-positive rate at the validation threshold.",
                  breakdowns[breakdowns["breakdown"] == kind])
        routing_accuracy = T.routing_accuracy(results.routing, params.statistics.confidence)
        if not routing_accuracy.empty:
            table("Routing", "routing", T.routing_table(routing_accuracy, intervals, comparisons),
                  f"Classifier routing: how often the router sent a test image to the wrong category's model (accuracy "
                  f"[{level} Wilson CI], misrouted / images), and macro image AUROC under predicted routing (global regime) "
                  f"against oracle routing (per-class regime: the true category's model) [{level} CI], with the paired "
                  "difference oracle − predicted [CI] = what routing costs. Scenarios that share a model and test set (threshold only "
                  "and no adaptation) route identically; the first is shown.", routing_accuracy)
        table("Error analysis", "confusion", T.confusion_table(scenarios), "Confusion counts at the validation threshold, summed over categories.")
        table("Error analysis", "errors", errors.drop(columns=["heatmap_path"]),
              f"Top {params.statistics.top_errors} false positives (highest-scored normal images) and false negatives "
              "(lowest-scored anomalous images) per run and category.")

        figures = FigureWriter(figures_dir, params.report.pdf, progress)
        roc_drawn, pr_drawn = roc[roc["scenario"].isin(drawn)], pr[pr["scenario"].isin(drawn)]
        predictions_drawn = predictions[predictions["scenario"].isin(drawn)]
        for detector, regime in runs:
            stem = f"{detector}_{regime}"
            figures.add("Curves", f"curves_{stem}", F.curves_figure, (roc_drawn, pr_drawn, intervals, detector, regime),
                        f"{detector} ({regime}): {F.CAPTIONS['curves_figure']}")
            figures.add("Score distributions", f"scores_{stem}", F.score_distributions_figure, (predictions_drawn, detector, regime),
                        f"{detector} ({regime}): {F.CAPTIONS['score_distributions_figure']}")
            figures.add("Breakdowns", f"defect_types_{stem}", F.defect_type_figure, (breakdowns, detector, regime, scenario_order),
                        f"{detector} ({regime}): {F.CAPTIONS['defect_type_figure']}")
            figures.add("Error analysis", f"confusion_{stem}", F.confusion_figure, (scenarios, detector, regime),
                        f"{detector} ({regime}): {F.CAPTIONS['confusion_figure']}")
        for regime in REGIMES:
            figures.add("Breakdowns", f"defect_sizes_{regime}", F.defect_size_figure, (breakdowns, regime, scenario_order),
                        f"{regime}: {F.CAPTIONS['defect_size_figure']}")
        for detector in sorted(set(results.routing["detector"])) if not results.routing.empty else []:
            figures.add("Routing", f"routing_{detector}", F.routing_figure, (results.routing, detector),
                        f"{detector}: {F.CAPTIONS['routing_figure']}")
        if not cross.empty:
            for regime in REGIMES:
                figures.add("Domains", f"cross_shift_{regime}", F.cross_shift_figure, (cross, params.data_domains, regime),
                            f"{regime}: {F.CAPTIONS['cross_shift_figure']}")
        for domain, (steps, reference) in domain_steps.items():
            methods = adaptation_curves(params, domain)
            for metric in ("image_auroc", "aupro"):
                figures.add("Few-shot adaptation", f"fewshot_recovery_{domain}_{metric}", F.recovery_figure,
                            (intervals, [s for s in steps if not s[0].startswith(("feature_align", "adabn"))], reference, metric, domain),
                            f"{domain}, {T.METRIC_NAMES[metric]}: {F.CAPTIONS['recovery_figure']}")
                figures.add("Few-shot adaptation", f"adaptation_{domain}_{metric}", F.adaptation_figure,
                            (intervals, methods, metric, domain), f"{domain}, {T.METRIC_NAMES[metric]}: {F.CAPTIONS['adaptation_figure']}")
        if not kshot.empty:
            figures.add("K-shot curves", "kshot_image_auroc", F.kshot_figure, (kshot,), F.CAPTIONS["kshot_figure"])
        if figures_coreset:
            figures.add("K-shot curves", "coreset_tradeoff", F.coreset_figure, (results.coreset, params.data_domains), F.CAPTIONS["coreset_figure"])
        if not training.empty:
            figures.add("Training", "training_loss", F.training_figure, (training,), F.CAPTIONS["training_figure"])
        if shift_scenarios:
            main_comparisons = comparisons[[not _is_fewshot(a, all_runs) for a in comparisons["a"]]] if not comparisons.empty else comparisons
            for metric in HEADLINE_METRICS:
                figures.add("Shift effects", f"shift_effects_{metric}", F.shift_effects_figure, (main_comparisons,),
                            f"{T.METRIC_NAMES[metric]}: {F.CAPTIONS['shift_effects_figure']}", metric=metric)
        if not robustness.empty:
            for metric in ("image_auroc", "pixel_auroc"):
                figures.add("Robustness", f"robustness_{metric}", F.robustness_figure, (robustness,),
                            f"{T.METRIC_NAMES[metric]}: {F.CAPTIONS['robustness_figure']}", metric=metric)
        for (detector, regime, scenario), group in predictions_drawn.groupby(["detector", "regime", "scenario"], sort=False):
            if regime != REGIMES[0]:  # figure galleries of the per-class models; the page shows every run's images
                continue
            picked = []
            for category, rows in group.groupby("category", sort=True):
                rows = rows.sort_values("score", ascending=False)
                k = params.report.gallery_images
                picked += rows[rows["is_anomalous"]].head((k + 1) // 2).to_dict("records") + rows[~rows["is_anomalous"]].head(k // 2).to_dict("records")
            records = [{"image": r["heatmap_path"], "mask": r["mask_path"] if isinstance(r["mask_path"], str) else None, "correct": r["correct"],
                        "caption": f"{r['category']}: {r['defect_type']}\nscore {r['score']:.2f} ({'ok' if r['correct'] else 'WRONG'})"}
                       for r in picked if isinstance(r["heatmap_path"], str)]
            if records:
                figures.add("Heatmap galleries", f"gallery_{detector}_{regime}_{scenario}",
                            F.gallery_figure, (records, f"{detector}/{regime}/{scenario}: highest-scored images", params.report.gallery_images,
                                                params.resize),
                            f"{detector}/{regime}/{scenario}: {F.CAPTIONS['gallery_figure']}", pdf=False)  # photos: PNG only

        figures.start(pool)  # drawn by the workers while this process builds the gallery tiles
        galleries, error_tiles, masks_done = [], [], set()
        tile_index: dict[tuple[str, str], Tile] = {}
        for (detector, regime, scenario, category), threshold in tqdm(list(thresholds.items()), desc="report gallery", disable=not progress):
            if not params.evaluation.heatmaps:
                break
            run_dir = f"{detector}/{regime}/{scenario}"
            pairs = build_tiles(PREDICTIONS_DIR / run_dir / f"{category}.json", float(threshold), gallery_dir,
                                run_dir, category, masks_done, params.resize)
            tiles = [tile for _, tile in pairs]
            for filename, tile in pairs:
                tile_index[(run_dir, filename)] = tile
            if galleries and galleries[-1].title == run_dir:
                galleries[-1].tiles.extend(tiles)
            else:
                galleries.append(Gallery(run_dir, "", tiles, open=not galleries))
        for gallery in galleries:
            n_wrong = sum(not t.correct for t in gallery.tiles)
            gallery.note = (f"{len(gallery.tiles)} test images, {n_wrong} wrong decisions. Heat blue → red (red = at or above the "
                            "threshold); red overlay = ground-truth defect; border green = right, red = wrong."
                            + (" Some detectors show a second map (e.g. uncertainty) beside the heatmap, blue → red from the median "
                               "to the top of normal validation images." if any(t.extra for t in gallery.tiles) else ""))
        for row in errors.itertuples():
            tile = tile_index.get((f"{row.detector}/{row.regime}/{row.scenario}", row.filename))
            if tile is not None:
                error_tiles.append(Tile(**{**tile.__dict__, "extra": list(tile.extra), "caption": f"{row.kind.replace('_', ' ')} #{row.rank} · {row.detector}/{row.regime}/{row.scenario} · {tile.caption}"}))
        figures.finish()

    # the page
    counts = scenarios.groupby("category")[["n_test", "n_test_anomalous"]].first()
    intro = (f"Study of {len(params.detectors)} detectors ({', '.join(params.detectors)}) in {len(REGIMES)} regimes (one model per "
             f"category / one global model) under {len(params.scenarios)} scenarios ({', '.join(scenario_order)}), on "
             f"{len(params.categories)} categories ({', '.join(f'{c}: {int(n)} test images, {int(a)} anomalous' for c, (n, a) in counts.iterrows())}). "
             f"Data source: {params.dataset.source}; backbone {params.backbone.name} ({params.backbone.normalisation} input scaling); "
             f"{params.image_size} px input ({params.resize}); shift domains: "
             + "; ".join(f"{d} ({T.domain_summary(params, d)})" for d in params.domains) + ".\n\n"
             f"Every threshold was chosen on validation images only (rule: {params.evaluation.threshold.rule}). Intervals are "
             f"{level} percentile intervals of a {boot} (normal and anomalous counts kept); the macro mean resamples each category "
             "independently. F1 intervals hold the validation threshold fixed (it is not re-chosen inside the bootstrap). "
             "Paired comparisons reuse the same resamples for both sides; p-values (from the bootstrap standard error) are "
             "Holm-adjusted within each family.")
    order = ["Data", "Headline", "Domains", "Detectors", "Training", "Per category", "Comparisons", "Shift effects", "Few-shot adaptation", "K-shot curves", "Routing", "Robustness", "Curves", "Score distributions",
             "Breakdowns", "Error analysis", "Heatmap galleries"]
    sections = [Section("Overview", [Text(intro)])]
    for name in order:
        blocks = tables.get(name, []) + figures.blocks.get(name, [])
        if name == "Error analysis" and error_tiles:
            blocks.append(Gallery("Top false positives and false negatives", "The images the detectors got most wrong, per run and category.", error_tiles))
        if blocks:
            sections.append(Section(name, blocks))
    if galleries:
        sections.append(Section("Test image gallery", [Text("Every test image of every run: heatmap overlay, anomaly score badge "
                                                            "(green → red around the threshold), ground truth and decision; some "
                                                            "detectors show a second map (e.g. uncertainty) beside the heatmap.")] + galleries))
    notebooks = sorted(NOTEBOOKS_DIR.glob("*.html")) if NOTEBOOKS_DIR.exists() else []
    if notebooks:
        sections.append(Section("Notebooks", [Text("Executed notebooks (papermill), for reading:\n\n" + "\n".join(f"{n.stem}" for n in notebooks)),
                                              Table("Notebooks", pd.DataFrame({"notebook": [n.stem for n in notebooks]}), "",
                                                    [(n.stem, f"notebooks/{n.name}") for n in notebooks])]))
    page = write_page(REPORT_DIR / "index.html", "shiftad report", sections,
                      generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    missing = check_links(page)
    if missing:
        raise RuntimeError(f"{page}: links to missing files: {missing[:5]}")
    md = ["# shiftad report", "", intro, ""]
    for name in order:
        for block in tables.get(name, []):
            md += [f"## {block.title}", "", block.caption, "", T.markdown_table(block.frame)]
    write_text(REPORT_DIR / "index.md", "\n".join(md) + "\n")
    return page
