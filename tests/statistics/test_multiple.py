"""Holm step-down adjustment."""

from __future__ import annotations

import numpy as np
import pytest

from shiftad.statistics.multiple import holm


def test_holm_hand_computed_example() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> monotone 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_order() -> None:
    p = np.array([0.5, 0.2, 0.9, 0.001, 0.3])
    adjusted = holm(p)
    assert (adjusted <= 1).all() and (adjusted >= p).all()
    order = np.argsort(p)
    assert (np.diff(adjusted[order]) >= 0).all()
    assert adjusted[3] == pytest.approx(0.005)
    assert adjusted[0] == 1.0 and adjusted[2] == 1.0


def test_holm_passes_nan_through_without_counting_it() -> None:
    adjusted = holm([0.01, np.nan, 0.04, 0.03, np.nan, 0.005])
    assert np.isnan(adjusted[[1, 4]]).all()
    np.testing.assert_allclose(adjusted[[0, 2, 3, 5]], [0.03, 0.06, 0.06, 0.02])
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([]).shape == (0,)


def test_holm_rejects_invalid_p_values() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([0.1, 1.5])
