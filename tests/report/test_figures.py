"""Figure functions of the report: structure of the drawn figures on small synthetic tidy frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from PIL import Image

from shiftad.report import figures as F

DET, REG = "patchcore", "per_class"
SCENARIOS = ["clean", "shift_no_adaptation", "shift_adapted"]  # order of appearance differs from sorted order
CATEGORIES = ["bottle", "cable"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]


def whisker_spans(ax, horizontal: bool = False) -> list[tuple[float, float, float]]:
    """(position, low, high) of every errorbar segment on `ax`."""
    spans = []
    for container in ax.containers:
        if isinstance(container, ErrorbarContainer):
            for collection in container.lines[2]:
                for seg in collection.get_segments():
                    (x0, y0), (x1, y1) = seg
                    spans.append((y0, min(x0, x1), max(x0, x1)) if horizontal else (x0, min(y0, y1), max(y0, y1)))
    return sorted(spans)


def same_intervals(spans: list[tuple[float, float, float]], rows: pd.DataFrame) -> bool:
    """The whiskers span exactly the rows' [ci_low, ci_high] intervals (as multisets)."""
    drawn = np.array(sorted((round(lo, 9), round(hi, 9)) for _, lo, hi in spans))
    expected = np.array(sorted((round(lo, 9), round(hi, 9)) for lo, hi in zip(rows["ci_low"], rows["ci_high"])))
    return drawn.shape == expected.shape and np.allclose(drawn, expected)


def bar_patches(ax) -> list:
    return [p for c in ax.containers if isinstance(c, BarContainer) for p in c.patches]


# --------------------------------------------------------------------------------------------- frames

def curve_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    roc, pr, intervals = [], [], []
    for detector in (DET, "padim"):
        for scenario in SCENARIOS:
            for i, category in enumerate(CATEGORIES):
                fpr = np.linspace(0, 1, 6)
                for x, y in zip(fpr, np.sqrt(fpr)):
                    roc.append({"detector": detector, "regime": REG, "scenario": scenario, "category": category, "fpr": x, "tpr": y})
                for r, p in zip(np.linspace(0, 1, 5), np.linspace(1, 0.4, 5)):
                    pr.append({"detector": detector, "regime": REG, "scenario": scenario, "category": category, "recall": r, "precision": p})
                for metric, value in (("image_auroc", 0.9 - 0.1 * i), ("image_auprc", 0.8 - 0.1 * i), ("pixel_auroc", np.nan)):
                    intervals.append({"detector": detector, "regime": REG, "scenario": scenario, "category": category, "metric": metric,
                                      "estimate": value, "ci_low": value - 0.05, "ci_high": value + 0.05, "n_resamples": 100, "confidence": 0.95})
            intervals.append({"detector": detector, "regime": REG, "scenario": scenario, "category": "mean", "metric": "image_auroc",
                              "estimate": 0.85, "ci_low": 0.8, "ci_high": 0.9, "n_resamples": 100, "confidence": 0.95})
    roc = pd.DataFrame(roc)
    roc.loc[3, "tpr"] = np.nan  # a NaN point is dropped, not fatal
    return roc, pd.DataFrame(pr), pd.DataFrame(intervals)


def predictions_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for s, scenario in enumerate(SCENARIOS[:2]):
        for c, category in enumerate(CATEGORIES):
            threshold = 0.5 + 0.1 * s + 0.05 * c
            for k in range(40):
                anomalous = k % 3 == 0
                rows.append({"detector": DET, "regime": REG, "scenario": scenario, "category": category,
                             "score": float(rng.normal(1.0 if anomalous else 0.0, 0.3)), "is_anomalous": anomalous, "threshold": threshold})
    return pd.DataFrame(rows)


def comparisons_frame() -> pd.DataFrame:
    rows = []
    holm = iter([0.01, 0.2, 0.03, 0.5, 0.001, 0.9, 0.04, 0.3, 0.02, 0.6])
    for detector in (DET, "padim"):
        run = f"{detector}/{REG}"
        pairs = [("scenario", f"{run}/{s}", f"{run}/clean") for s in ("shift_no_adaptation", "shift_threshold_only", "shift_adapted")]
        pairs += [("adaptation", f"{run}/{s}", f"{run}/shift_no_adaptation") for s in ("shift_threshold_only", "shift_adapted")]
        for family, a, b in pairs:
            diff = -0.2 if family == "scenario" else 0.1
            p = next(holm)
            for category, metric in (("mean", "image_auroc"), ("bottle", "image_auroc"), ("mean", "f1")):
                rows.append({"family": family, "a": a, "b": b, "category": category, "metric": metric, "estimate_a": 0.7,
                             "estimate_b": 0.7 - diff, "difference": diff, "ci_low": diff - 0.07, "ci_high": diff + 0.04,
                             "p_bootstrap": p / 2, "p_delong": np.nan, "p_bootstrap_holm": p, "p_delong_holm": np.nan})
    rows.append({"family": "detector", "a": f"{DET}/{REG}/clean", "b": f"padim/{REG}/clean", "category": "mean", "metric": "image_auroc",
                 "estimate_a": 0.9, "estimate_b": 0.8, "difference": 0.1, "ci_low": 0.0, "ci_high": 0.2, "p_bootstrap": 0.1,
                 "p_delong": 0.1, "p_bootstrap_holm": 0.1, "p_delong_holm": 0.1})
    return pd.DataFrame(rows)


def robustness_frame() -> pd.DataFrame:
    rows = []
    for detector in (DET, "padim"):
        for f, family in enumerate(("geometric", "photometric", "illumination")):
            for severity in (0, 1, 3, 5):
                for category in ("mean", "bottle"):
                    value = 0.95 - 0.05 * severity * (f + 1) / 3
                    rows.append({"detector": detector, "family": family, "severity": severity, "category": category,
                                 "image_auroc": value, "ci_low": value - 0.03, "ci_high": value + 0.02, "f1": value - 0.1,
                                 "pixel_auroc": np.nan if severity == 3 else value, "aupro": np.nan})
    return pd.DataFrame(rows)


def breakdowns_frame() -> pd.DataFrame:
    rows = []
    types = {"bottle": ["broken_large", "contamination"], "cable": ["bent_wire", "cut", "missing"]}
    for detector in (DET, "padim"):
        for s, scenario in enumerate(SCENARIOS):
            for category, groups in types.items():
                for g, group in enumerate(groups):
                    value = 0.9 - 0.1 * s - 0.02 * g
                    rows.append({"detector": detector, "regime": REG, "scenario": scenario, "category": category, "breakdown": "defect_type",
                                 "group": group, "n_normal": 20, "n_anomalous": 5, "image_auroc": value, "ci_low": value - 0.1,
                                 "ci_high": min(1.0, value + 0.05), "detection_rate": 0.8})
            for g, group in enumerate(("large", "small", "medium")):  # drawn small, medium, large
                value = 0.7 + 0.1 * g - 0.05 * s
                rows.append({"detector": detector, "regime": REG, "scenario": scenario, "category": "mean", "breakdown": "defect_size",
                             "group": group, "n_normal": 40, "n_anomalous": 10, "image_auroc": value, "ci_low": value - 0.08,
                             "ci_high": value + 0.06, "detection_rate": 0.5 + 0.1 * g})
    return pd.DataFrame(rows)


def scenarios_table() -> pd.DataFrame:
    rows = []
    for s, scenario in enumerate(SCENARIOS):
        for c, category in enumerate(CATEGORIES):
            rows.append({"detector": DET, "regime": REG, "scenario": scenario, "category": category,
                         "tn": 10 + s, "fp": 2 + c, "fn": 3, "tp": 20 + s + c, "image_auroc": 0.9})
    rows.append({"detector": "padim", "regime": REG, "scenario": "clean", "category": "bottle", "tn": 99, "fp": 99, "fn": 99, "tp": 99})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- tests

def test_palette_is_keyed_by_sorted_names() -> None:
    a = F.palette(["shift_adapted", "clean", "shift_no_adaptation"])
    b = F.palette(["shift_no_adaptation", "shift_adapted", "clean", "clean"])
    assert a == b and list(a) == ["clean", "shift_adapted", "shift_no_adaptation"]
    assert len(set(a.values())) == 3
    assert F.palette(["x", "y"], colors={"x": "black"})["x"] == "#000000"


def test_captions_cover_every_figure_function() -> None:
    names = {n for n in dir(F) if n.endswith("_figure") and n != "save_figure"}
    assert set(F.CAPTIONS) == names
    assert all(caption.strip().endswith(".") and caption.count(". ") == 0 for caption in F.CAPTIONS.values())


def test_curves_figure_grid_lines_and_legend_values() -> None:
    roc, pr, intervals = curve_frames()
    fig = F.curves_figure(roc, pr, intervals, DET, REG, anomalous_share={"clean": 0.25})
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes).reshape(2, len(SCENARIOS))
    for c, scenario in enumerate(SCENARIOS):
        assert axes[0, c].get_title().startswith(f"ROC: {scenario}")
        assert axes[1, c].get_title().startswith(f"PR: {scenario}")
    colors = F.palette(CATEGORIES)
    for ax in axes.ravel():
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None
        lines = [line for line in ax.get_lines() if line.get_label().split(" ")[0] in CATEGORIES]
        assert len(lines) == len(CATEGORIES)
        for line in lines:
            assert to_hex(line.get_color()) == colors[line.get_label().split(" ")[0]]
    roc_labels = [line.get_label() for line in axes[0, 0].get_lines()]
    assert "bottle (AUROC 0.900)" in roc_labels and "cable (AUROC 0.800)" in roc_labels and "chance" in roc_labels
    assert "macro AUROC 0.850" in axes[0, 0].get_title()
    assert "bottle (AUPRC 0.800)" in [line.get_label() for line in axes[1, 0].get_lines()]
    assert len(axes[0, 0].get_lines()[0].get_xdata()) == 5  # the NaN point was dropped
    baseline = [line for line in axes[1, 0].get_lines() if line.get_label().startswith("anomalous share")]
    assert len(baseline) == 1 and baseline[0].get_ydata()[0] == pytest.approx(0.25)
    assert not [line for line in axes[1, 1].get_lines() if line.get_label().startswith("anomalous share")]
    assert fig.get_suptitle()


def test_curves_figure_per_category_shares_and_missing_intervals() -> None:
    roc, pr, _ = curve_frames()
    shares = F.anomalous_shares(scenarios_table(), DET, REG)
    assert shares[("clean", "bottle")] == pytest.approx(23 / 35)
    fig = F.curves_figure(roc, pr, None, DET, REG, anomalous_share=shares)
    pr_ax = fig.axes[len(SCENARIOS)]
    dashed = [line for line in pr_ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == len(CATEGORIES)
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == ["bottle", "cable", "chance"]


def test_score_distributions_threshold_and_shared_bins() -> None:
    predictions = predictions_frame()
    fig = F.score_distributions_figure(predictions, DET, REG, bins=12)
    assert len(fig.axes) == 2 * 2
    for ax in fig.axes:
        category, scenario = ax.get_title().split(": ")
        panel = predictions[(predictions["category"] == category) & (predictions["scenario"] == scenario)]
        threshold = panel["threshold"].iloc[0]
        vlines = [line for line in ax.get_lines() if line.get_label().startswith("threshold")]
        assert len(vlines) == 1 and vlines[0].get_xdata()[0] == pytest.approx(threshold)
        assert f"{threshold:.3g}" in vlines[0].get_label()
        hists = ax.patches
        assert len(hists) == 2  # one step outline per class
        spans = {(round(p.get_xy()[:, 0].min(), 9), round(p.get_xy()[:, 0].max(), 9)) for p in hists}
        assert len(spans) == 1  # same bins for normal and anomalous
        assert {t.get_text().split(" ")[0] for t in ax.get_legend().get_texts()} == {"normal", "anomalous", "threshold"}
        assert ax.get_xlabel() == "anomaly score" and ax.get_ylabel()
    # columns follow the frame's scenario order, rows the sorted categories
    assert [ax.get_title() for ax in fig.axes[:2]] == ["bottle: clean", "bottle: shift_no_adaptation"]


def test_score_distributions_nan_scores_and_string_labels() -> None:
    predictions = predictions_frame()
    predictions.loc[predictions["category"] == "cable", "score"] = np.nan
    predictions.loc[predictions["category"] == "bottle", "threshold"] = np.nan
    predictions["is_anomalous"] = predictions["is_anomalous"].map({True: "True", False: "False"})
    fig = F.score_distributions_figure(predictions, DET, REG)
    assert len(fig.axes) == 4
    bottle = fig.axes[0]
    assert not [line for line in bottle.get_lines() if line.get_label().startswith("threshold")]
    labels = [t.get_text() for t in bottle.get_legend().get_texts()]
    assert "normal (n=26)" in labels and "anomalous (n=14)" in labels
    assert F.NO_DATA in [t.get_text() for t in fig.axes[2].texts]


def test_shift_effects_bars_whiskers_and_stars() -> None:
    comparisons = comparisons_frame()
    comparisons.loc[(comparisons["a"] == f"padim/{REG}/shift_adapted") & (comparisons["family"] == "scenario"), "difference"] = np.nan
    fig = F.shift_effects_figure(comparisons)
    assert len(fig.axes) == 2
    shift_ax, adapt_ax = fig.axes
    assert "clean" in shift_ax.get_title() and "shift_no_adaptation" in adapt_ax.get_title()
    assert [t.get_text() for t in shift_ax.get_xticklabels()] == [f"{DET}/{REG}", f"padim/{REG}"]
    assert len(bar_patches(shift_ax)) == 3 * 2 - 1 and len(bar_patches(adapt_ax)) == 2 * 2
    for ax, diff in ((shift_ax, -0.2), (adapt_ax, 0.1)):
        spans = whisker_spans(ax)
        assert len(spans) == len(bar_patches(ax))
        for _, low, high in spans:
            assert low == pytest.approx(diff - 0.07) and high == pytest.approx(diff + 0.04)
        assert [line for line in ax.get_lines() if list(line.get_ydata()) == [0, 0]]  # zero line
        assert ax.get_ylabel() == "Δ image AUROC" and ax.get_xlabel()
        assert ax.get_legend() is not None
    macro = comparisons[(comparisons["category"] == "mean") & (comparisons["metric"] == "image_auroc")]
    for ax, family in ((shift_ax, "scenario"), (adapt_ax, "adaptation")):
        part = macro[(macro["family"] == family) & macro["difference"].notna()]
        expected = int((part["p_bootstrap_holm"] < 0.05).sum())
        assert sum(t.get_text() == "*" for t in ax.texts) == expected > 0
    colors = F.palette({"clean", "shift_no_adaptation", "shift_threshold_only", "shift_adapted"})
    for container in shift_ax.containers:
        if isinstance(container, BarContainer):
            assert to_hex(container.patches[0].get_facecolor()) == colors[container.get_label()]


def test_shift_effects_other_metric_without_ci_and_holm() -> None:
    comparisons = comparisons_frame().drop(columns=["p_bootstrap_holm"])
    comparisons.loc[comparisons["metric"] == "f1", "ci_low"] = np.nan
    fig = F.shift_effects_figure(comparisons, metric="f1")
    assert all(not whisker_spans(ax) for ax in fig.axes)
    assert all(not ax.texts for ax in fig.axes)
    assert F.NO_DATA in texts(F.shift_effects_figure(comparisons, metric="aupro"))


def test_robustness_lines_and_bands() -> None:
    robustness = robustness_frame()
    fig = F.robustness_figure(robustness)
    assert len(fig.axes) == 2
    colors = F.palette(["geometric", "photometric", "illumination"])
    for ax, detector in zip(fig.axes, (DET, "padim")):
        assert ax.get_title() == detector and ax.get_xlabel() and ax.get_ylabel() == "image AUROC"
        lines = ax.get_lines()
        assert sorted(line.get_label() for line in lines) == ["geometric", "illumination", "photometric"]
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert len(bands) == 3
        for line in lines:
            expected = robustness[(robustness["detector"] == detector) & (robustness["family"] == line.get_label())
                                  & (robustness["category"] == "mean")].sort_values("severity")
            assert list(line.get_xdata()) == [0, 1, 3, 5]
            assert np.allclose(line.get_ydata(), expected["image_auroc"])
            assert to_hex(line.get_color()) == colors[line.get_label()]
        for band in bands:
            ys = band.get_paths()[0].vertices[:, 1]
            assert ys.min() == pytest.approx(0.95 - 0.05 * 5 - 0.03) or ys.min() > 0.5
        assert ax.get_legend() is not None


def test_robustness_other_metrics_have_no_band_and_nan_is_skipped() -> None:
    robustness = robustness_frame()
    fig = F.robustness_figure(robustness, metric="pixel_auroc")
    for ax in fig.axes:
        assert len(ax.get_lines()) == 3
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert list(ax.get_lines()[0].get_xdata()) == [0, 1, 5]  # severity 3 is NaN
    fig = F.robustness_figure(robustness, metric="aupro")  # all NaN
    assert all(not ax.get_lines() for ax in fig.axes) and F.NO_DATA in texts(fig)
    assert F.NO_DATA in texts(F.robustness_figure(pd.DataFrame()))  # what the stage writes with no sweep


def test_defect_type_bars_and_horizontal_whiskers() -> None:
    breakdowns = breakdowns_frame()
    scenarios = ["clean", "shift_no_adaptation"]
    fig = F.defect_type_figure(breakdowns, DET, REG, scenarios)
    assert [ax.get_title() for ax in fig.axes] == CATEGORIES
    colors = F.palette(SCENARIOS)
    for ax, n_types in zip(fig.axes, (2, 3)):
        bars = bar_patches(ax)
        assert len(bars) == n_types * len(scenarios)
        assert {to_hex(b.get_facecolor()) for b in bars} == {colors[s] for s in scenarios}
        spans = whisker_spans(ax, horizontal=True)
        assert len(spans) == len(bars)
        rows = breakdowns[(breakdowns["detector"] == DET) & (breakdowns["category"] == ax.get_title())
                          & breakdowns["scenario"].isin(scenarios) & (breakdowns["breakdown"] == "defect_type")]
        assert same_intervals(spans, rows)
        assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(rows["image_auroc"]))
        assert ax.get_xlabel() == "image AUROC" and ax.get_ylabel() == "defect type"
    assert [t.get_text() for t in fig.legends[0].get_texts()] == scenarios


def test_defect_type_nan_auroc_is_skipped() -> None:
    breakdowns = breakdowns_frame()
    breakdowns.loc[breakdowns["group"] == "cut", ["image_auroc", "ci_low", "ci_high"]] = np.nan
    fig = F.defect_type_figure(breakdowns, DET, REG, ["clean"])
    assert len(bar_patches(fig.axes[1])) == 2
    assert F.NO_DATA in texts(F.defect_type_figure(breakdowns, DET, REG, ["no_such_scenario"]))


def test_defect_size_grouped_bars_whiskers_and_rates() -> None:
    breakdowns = breakdowns_frame()
    scenarios = ["clean", "shift_adapted"]
    fig = F.defect_size_figure(breakdowns, REG, scenarios)
    assert len(fig.axes) == 4  # 2 rows (AUROC, detection rate) x 2 detectors
    auroc_ax, rate_ax = fig.axes[0], fig.axes[2]
    assert [t.get_text() for t in auroc_ax.get_xticklabels()] == ["small", "medium", "large"]
    assert len(bar_patches(auroc_ax)) == 3 * len(scenarios) == len(bar_patches(rate_ax))
    rows = breakdowns[(breakdowns["detector"] == DET) & (breakdowns["breakdown"] == "defect_size") & breakdowns["scenario"].isin(scenarios)]
    spans = whisker_spans(auroc_ax)
    assert same_intervals(spans, rows)
    assert not whisker_spans(rate_ax)
    assert sorted(b.get_height() for b in bar_patches(rate_ax)) == pytest.approx(sorted(rows["detection_rate"]))
    assert "60%" in [t.get_text() for t in rate_ax.texts]
    assert "image AUROC" in auroc_ax.get_title() and "detection rate" in rate_ax.get_title()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == scenarios


def test_confusion_sums_over_categories() -> None:
    fig = F.confusion_figure(scenarios_table(), DET, REG)
    assert [ax.get_title() for ax in fig.axes] == SCENARIOS
    ax = fig.axes[1]  # shift_no_adaptation: s = 1
    counts = [int(t.get_text().split("\n")[0]) for t in ax.texts]
    assert counts == [22, 5, 6, 43]  # tn, fp / fn, tp (row-major)
    assert "(81%)" in ax.texts[0].get_text()
    assert ax.get_xlabel() == "predicted" and ax.get_ylabel() == "truth"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["normal", "anomalous"]
    assert len(ax.images) == 1


def test_gallery_borders_contours_and_missing_image(tmp_path) -> None:
    image = np.zeros((32, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    mask = np.zeros((16, 20), dtype=np.uint8)  # half size: resized to the image
    mask[4:10, 5:12] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    records = [
        {"image": tmp_path / "a.png", "mask": tmp_path / "a_mask.png", "caption": "bottle: broken, score 3.2", "correct": True},
        {"image": str(tmp_path / "a.png"), "mask": None, "caption": "bottle: good, score 2.9", "correct": False},
        {"image": tmp_path / "missing.png", "caption": "missing", "correct": True},
    ]
    fig = F.gallery_figure(records, "Top-scored test images", per_row=2)
    assert len(fig.axes) == 3 and fig.get_suptitle() == "Top-scored test images"
    first, second, third = fig.axes
    assert to_hex(first.spines["top"].get_edgecolor()) == F.BORDER_COLORS[True]
    assert to_hex(second.spines["left"].get_edgecolor()) == F.BORDER_COLORS[False]
    assert len(first.images) == 1 and len(first.collections) == 1  # the mask contour
    assert not second.collections
    assert "image missing" in [t.get_text() for t in third.texts]
    assert first.get_title() == "bottle: broken, score 3.2"


@pytest.mark.parametrize("call", [
    lambda e: F.curves_figure(e, e, e, DET, REG),
    lambda e: F.score_distributions_figure(e, DET, REG),
    lambda e: F.shift_effects_figure(e),
    lambda e: F.robustness_figure(e),
    lambda e: F.defect_type_figure(e, DET, REG, ["clean"]),
    lambda e: F.defect_size_figure(e, REG, ["clean"]),
    lambda e: F.confusion_figure(e, DET, REG),
    lambda e: F.gallery_figure([], "empty", 3),
])
def test_empty_input_gives_no_data_figure(call) -> None:
    for empty in (pd.DataFrame(), pd.DataFrame(columns=["detector", "regime", "scenario", "category"])):
        fig = call(empty)
        assert isinstance(fig, Figure) and len(fig.axes) == 1
        assert F.NO_DATA in [t.get_text() for t in fig.axes[0].texts]
        assert fig.get_suptitle()


def test_unknown_detector_gives_no_data_figure() -> None:
    roc, pr, intervals = curve_frames()
    assert F.NO_DATA in texts(F.curves_figure(roc, pr, intervals, "nope", REG))
    assert F.NO_DATA in texts(F.confusion_figure(scenarios_table(), "nope", REG))


def test_save_figure_writes_png_and_pdf_atomically(tmp_path) -> None:
    fig = F.robustness_figure(robustness_frame())
    number = fig.number
    stem = tmp_path / "figures" / "robustness.image_auroc"
    written = F.save_figure(fig, stem)
    assert written == [tmp_path / "figures" / "robustness.image_auroc.png", tmp_path / "figures" / "robustness.image_auroc.pdf"]
    png, pdf = (p.read_bytes() for p in written)
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert pdf.startswith(b"%PDF")
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(p.name for p in written)  # no temp files
    assert not plt.fignum_exists(number)
    with Image.open(written[0]) as image:
        assert min(image.size) > 200


def test_save_figure_png_only_and_pdf_is_reproducible(tmp_path) -> None:
    assert F.save_figure(F.confusion_figure(scenarios_table(), DET, REG), tmp_path / "c", pdf=False) == [tmp_path / "c.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]
    first = F.save_figure(F.confusion_figure(scenarios_table(), DET, REG), tmp_path / "d")[1].read_bytes()
    second = F.save_figure(F.confusion_figure(scenarios_table(), DET, REG), tmp_path / "d")[1].read_bytes()
    assert first == second
