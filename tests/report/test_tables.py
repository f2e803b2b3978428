"""Report tables: CI cells, headline layout, booktabs LaTeX, Markdown, the three files."""

import numpy as np
import pandas as pd

from shiftad.report import tables as T


def intervals():
    rows = []
    for scenario, base in (("clean", 0.9), ("shift_no_adaptation", 0.7)):
        for category, offset in (("a", 0.0), ("b", 0.02), ("mean", 0.01)):
            for metric in ("image_auroc", "aupro"):
                est = base + offset
                rows.append({"detector": "patchcore", "regime": "per_class", "scenario": scenario, "category": category,
                             "metric": metric, "estimate": est, "ci_low": est - 0.05, "ci_high": est + 0.04})
    return pd.DataFrame(rows)


def test_ci_cells_and_missing_values():
    assert T.ci_cell(0.8234, 0.79, 0.851) == "0.823 [0.790, 0.851]"
    assert T.ci_cell(float("nan"), 0.1, 0.2) == "–"
    assert T.ci_cell(0.5, float("nan"), float("nan")) == "0.500"
    assert T.p_cell(0.0004) == "<0.001" and T.p_cell(0.0312) == "0.031" and T.p_cell(float("nan")) == "–"


def test_headline_table_is_detector_by_scenario_with_macro_cis():
    table = T.headline_table(intervals(), ["clean", "shift_no_adaptation"], ["image_auroc", "aupro"])
    assert list(table.columns) == ["detector", "regime", "metric", "clean", "shift_no_adaptation"]
    assert table.iloc[0]["clean"] == "0.910 [0.860, 0.950]"  # the "mean" rows, not a category's
    assert table.iloc[0]["metric"] == "image AUROC" and table.iloc[1]["metric"] == "AU-PRO"


def test_category_table_lists_categories_then_the_mean():
    table = T.category_table(intervals(), ["clean", "shift_no_adaptation"], "image_auroc")
    assert list(table["category"]) == ["a", "b", "mean"]


def test_latex_is_booktabs_and_escaped():
    frame = pd.DataFrame({"run": ["patchcore/per_class"], "value_x": [0.12345], "gap": [np.nan]})
    latex = T.latex_table(frame, "A caption_with underscore", "tab:x")
    assert "\\toprule" in latex and "\\midrule" in latex and "\\bottomrule" in latex
    assert "per\\_class" in latex and "value\\_x" in latex and "0.123" in latex and "–" in latex
    assert "\\caption{A caption\\_with underscore}" in latex and "\\label{tab:x}" in latex


def test_write_table_writes_three_formats(tmp_path):
    display = pd.DataFrame({"a": ["x"], "b": [0.5]})
    tidy = pd.DataFrame({"a": ["x"], "b": [0.5], "ci_low": [0.4]})
    files = T.write_table(tmp_path, "t", display, tidy, "Caption.")
    assert files == {"CSV": "t.csv", "Markdown": "t.md", "LaTeX": "t.tex"}
    assert "ci_low" in (tmp_path / "t.csv").read_text()  # the tidy numbers
    assert "| x | 0.500 |" in (tmp_path / "t.md").read_text()
    assert "\\toprule" in (tmp_path / "t.tex").read_text()


def test_robustness_table_orders_severities():
    rows = [{"detector": "d", "family": "photometric", "severity": s, "category": "mean", "image_auroc": v, "ci_low": v - 0.1, "ci_high": v + 0.1}
            for s, v in ((3, 0.6), (0, 0.9), (1, 0.8))]
    table = T.robustness_table(pd.DataFrame(rows))
    assert list(table.columns) == ["detector", "family", "clean", "severity 1", "severity 3"]


def test_kshot_table_takes_the_macro_mean_per_draw_then_the_spread_over_draws():
    from shiftad.report.tables import kshot_table

    rows = [{"detector": "knn", "category": c, "k": 2, "draw": d, "image_auroc": a, "f1": 0.5, "threshold": 1.0,
             "memory_bank_size": 2048, "fit_seconds": 0.1, "ms_per_image": 60.0}
            for c, d, a in (("a", 0, 0.6), ("b", 0, 0.8), ("a", 1, 0.9), ("b", 1, 0.9))]
    table = kshot_table(pd.DataFrame(rows))
    # draw means 0.7 and 0.9: mean 0.8, sd (ddof 1) 0.1414
    assert table.loc[0, "image AUROC"] == "0.800 ± 0.141" and table.loc[0, "K"] == 2 and table.loc[0, "bank size"] == 2048


def test_recovery_table_walks_the_steps_and_reads_the_paired_difference():
    from shiftad.report.tables import recovery_table

    steps = [("no adaptation", "na"), ("K = 0", "f_k0"), ("K = 4", "f_k4"), ("full refit", "ad")]
    intervals = pd.DataFrame([{"detector": "knn", "regime": "per_class", "scenario": s, "category": c, "metric": m,
                               "estimate": e, "ci_low": e - 0.1, "ci_high": e + 0.1}
                              for s, e in (("na", 0.6), ("f_k0", 0.6), ("f_k4", 0.7), ("ad", 0.75)) for c in ("x", "mean")
                              for m in ("image_auroc", "f1", "aupro")])
    comparisons = pd.DataFrame([{"family": "adaptation", "a": "knn/per_class/f_k4", "b": "knn/per_class/na", "category": "mean",
                                 "metric": "image_auroc", "difference": 0.1, "ci_low": 0.02, "ci_high": 0.2}])
    table = recovery_table(intervals, comparisons, steps)
    assert list(table["step"]) == ["no adaptation", "K = 0", "K = 4", "full refit"]
    assert table.loc[2, "image AUROC"] == "0.700 [0.600, 0.800]"
    assert table.loc[2, "Δ image AUROC vs no adaptation"] == "0.100 [0.020, 0.200]" and table.loc[1, "Δ image AUROC vs no adaptation"] == "–"
    assert len(recovery_table(intervals, comparisons, steps, per_category=True)) == 8  # category x, then the mean


def test_data_table_counts_each_test_set_once_and_the_images_left_out_of_pixel_metrics():
    from shiftad.report.tables import data_table

    rows = [{"detector": d, "regime": r, "scenario": s, "category": c, "n_test": 10, "n_test_anomalous": 4,
             "n_test_pixel_excluded": int(c == "b" and s == "shift")}
            for d in ("p", "q") for r in ("per_class", "global") for s in ("shift", "clean", "fewshot_x") for c in ("a", "b")]
    table = data_table(pd.DataFrame(rows), ["clean", "shift"])
    assert table[["category", "scenario"]].values.tolist() == [["a", "clean"], ["a", "shift"], ["b", "clean"], ["b", "shift"]]
    assert table["anomalous, empty mask (not in pixel metrics)"].tolist() == [0, 0, 0, 1]
    assert table["test images"].tolist() == [10] * 4
