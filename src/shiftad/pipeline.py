"""The runs the DAG fans out over, derived from params (used by the Snakefile and its tests)."""

from __future__ import annotations

from itertools import product

from shiftad.paths import scores_file
from shiftad.params import Params

SCORED_SPLITS = ("val", "test")


def score_files(params: Params) -> list[str]:
    """Every model scores every data domain (shift_on_clean too: how an adapted model does on clean data)."""
    return [
        scores_file(d, r, m, x, split, c).as_posix()
        for d, r, m, x, split, c in product(params.detectors, params.regimes, params.domains, params.domains, SCORED_SPLITS, params.categories)
    ]
