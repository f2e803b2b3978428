"""`Scores`: auxiliary per-pixel maps (`extra_maps`) are validated against `maps` and travel through `concat`."""

import numpy as np
import pytest

from shiftad.detectors.base import Scores


def scores(n: int, extra: tuple[str, ...] = (), size: int = 4, offset: float = 0.0) -> Scores:
    maps = np.full((n, size, size), offset, np.float32)
    return Scores(np.arange(n, dtype=np.float64) + offset, maps, extra_maps={name: maps + 1 for name in extra})


def test_extra_maps_default_to_empty_and_must_match_the_maps():
    assert scores(2).extra_maps == {}
    assert scores(2).extra_map_arrays() == {}
    with pytest.raises(ValueError, match="extra map 'uncertainty' has shape"):
        Scores(np.zeros(2), np.zeros((2, 4, 4), np.float32), extra_maps={"uncertainty": np.zeros((3, 4, 4), np.float32)})
    with pytest.raises(ValueError, match="extra map 'uncertainty' has shape"):
        Scores(np.zeros(2), np.zeros((2, 4, 4), np.float32), extra_maps={"uncertainty": np.zeros((2, 4, 5), np.float32)})
    with pytest.raises(ValueError, match="extra map name"):
        Scores(np.zeros(2), np.zeros((2, 4, 4), np.float32), extra_maps={"../x": np.zeros((2, 4, 4), np.float32)})


def test_concat_joins_every_extra_map_in_order():
    joined = Scores.concat([scores(2, ("uncertainty",)), scores(3, ("uncertainty",), offset=10.0)])
    assert set(joined.extra_maps) == {"uncertainty"}
    assert joined.extra_maps["uncertainty"].shape == joined.maps.shape == (5, 4, 4)
    np.testing.assert_array_equal(joined.extra_maps["uncertainty"][:, 0, 0], [1, 1, 11, 11, 11])
    arrays = joined.extra_map_arrays()
    assert list(arrays) == ["extra_map_uncertainty"] and arrays["extra_map_uncertainty"].dtype == np.float32


def test_concat_refuses_parts_with_different_extra_maps():
    with pytest.raises(ValueError, match="different extra maps"):
        Scores.concat([scores(2, ("uncertainty",)), scores(2)])
    with pytest.raises(ValueError, match="different extra maps"):
        Scores.concat([scores(2, ("uncertainty",)), scores(2, ("uncertainty", "variance"))])


def test_empty_batches_work_with_and_without_extra_maps():
    empty = scores(0, ("uncertainty",))
    assert empty.extra_maps["uncertainty"].shape == (0, 4, 4)
    assert Scores.concat([empty, scores(2, ("uncertainty",))]).extra_maps["uncertainty"].shape == (2, 4, 4)
    assert Scores.concat([scores(0), scores(0)]).extra_maps == {}
