"""Multiple-comparison correction.

Why: comparing models over many categories and metrics produces many p-values; Holm's
step-down procedure controls the family-wise error rate under any dependence between them
and is uniformly more powerful than Bonferroni.
"""

from __future__ import annotations

import numpy as np


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values, same shape as the input.

    Sorted ascending, ``p_(k)`` becomes ``max_{j<=k} min(1, (m − j + 1)·p_(j))`` (1-based), so
    the adjusted values are monotone in the raw ones and capped at 1; reject where
    adjusted <= alpha. NaN entries (e.g. an undefined metric) are passed through as NaN and do
    not count in the family size m.
    """
    p = np.asarray(p_values, dtype=np.float64)
    flat = p.ravel()
    present = ~np.isnan(flat)
    values = flat[present]
    if ((values < 0) | (values > 1)).any():
        raise ValueError("p-values must lie in [0, 1] (or be NaN)")
    m = values.size
    order = np.argsort(values, kind="stable")
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * values[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    out = np.full(flat.shape, np.nan)
    out[present] = adjusted
    return out.reshape(p.shape)
