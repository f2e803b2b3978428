"""The across-training-seed spread next to the bootstrap CI (params `seeds`)."""

import numpy as np
import pandas as pd
import pytest

from shiftad.report.tables import headline_table
from shiftad.statistics.bootstrap import METRICS
from shiftad.statistics.stage import add_seed_spread, headline, seed_spread


def replicates(seeds: list[int]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"detector": "patchcore", "regime": "per_class", "scenario": "clean", "category": c, "seed": s,
             **{m: float(rng.uniform(0.5, 1.0)) for m in METRICS}} for s in seeds for c in ("a", "b")]
    return pd.DataFrame(rows)


def intervals(seeds_table: pd.DataFrame, reference: int) -> pd.DataFrame:
    rows = []
    ref = seeds_table[seeds_table["seed"] == reference]
    for category in ("a", "b", "mean"):
        for m in METRICS:
            value = ref[m].mean() if category == "mean" else float(ref.loc[ref["category"] == category, m].iloc[0])
            rows.append({"detector": "patchcore", "regime": "per_class", "scenario": "clean", "category": category, "metric": m,
                         "estimate": value, "ci_low": value - 0.05, "ci_high": value + 0.05})
    return pd.DataFrame(rows)


def test_spread_per_category_and_of_the_macro_mean_over_seeds():
    table = replicates([0, 1, 2])
    spread = seed_spread(table).set_index(["category", "metric"])
    for m in METRICS:
        for c in ("a", "b"):
            values = table.loc[table["category"] == c, m].to_numpy()
            row = spread.loc[(c, m)]
            assert row["n_seeds"] == 3 and row["seed_sd"] == pytest.approx(np.std(values, ddof=1))
            assert (row["seed_min"], row["seed_max"]) == (values.min(), values.max())
        macro = table.groupby("seed")[m].mean().to_numpy()  # the macro mean per seed first, then its spread
        assert spread.loc[("mean", m), "seed_sd"] == pytest.approx(np.std(macro, ddof=1))
        assert spread.loc[("mean", m), "seed_mean"] == pytest.approx(macro.mean())


def test_headline_json_and_table_say_which_uncertainty_is_which():
    table = replicates([0, 1, 2])
    merged = add_seed_spread(intervals(table, 0), table)
    value = headline(merged)["patchcore"]["per_class"]["clean"]["image_auroc"]
    macro = table.groupby("seed")["image_auroc"].mean()
    assert value["value"] == round(macro[0], 4) and value["n_seeds"] == 3  # the reference run's estimate, its CI
    assert value["seed_sd"] == round(float(np.std(macro, ddof=1)), 4)
    cell = headline_table(merged, ["clean"], ["image_auroc"])["clean"].iloc[0]
    assert cell == f"{macro[0]:.3f} [{macro[0] - 0.05:.3f}, {macro[0] + 0.05:.3f}] ± {np.std(macro, ddof=1):.3f}"


def test_one_seed_has_no_spread_in_the_headline():
    table = replicates([4])
    merged = add_seed_spread(intervals(table, 4), table)
    assert (merged["n_seeds"] == 1).all() and merged["seed_sd"].isna().all()
    assert "seed_sd" not in headline(merged)["patchcore"]["per_class"]["clean"]["image_auroc"]
    assert "±" not in headline_table(merged, ["clean"], ["image_auroc"])["clean"].iloc[0]


def test_a_run_missing_from_seeds_csv_is_an_error():
    table = replicates([0, 1])
    with pytest.raises(RuntimeError, match="seeds.csv: no rows for .*rerun the evaluate stage"):
        add_seed_spread(intervals(table, 0), table[table["category"] == "a"])
