"""The runs the DAG fans out over, derived from params (used by the Snakefile and its tests)."""

from __future__ import annotations

from itertools import product

from shiftad.params import Params


def fit_runs(params: Params) -> list[dict[str, str]]:
    return [{"detector": d, "regime": r, "domain": m} for d, r, m in product(params.detectors, params.regimes, params.domains)]


def score_runs(params: Params) -> list[dict[str, str]]:
    """Every model scores every data domain (shift_on_clean too: how an adapted model does on clean data)."""
    return [
        {"detector": d, "regime": r, "model": m, "data": x}
        for d, r, m, x in product(params.detectors, params.regimes, params.domains, params.domains)
    ]
