"""Few-shot patch kNN: distances equal brute force, top-1% aggregation, bank growth, round trip."""

import math

import numpy as np
import pytest

from shiftad.components.knn import NearestNeighbours
from shiftad.detectors.knn import FewShotKNN, image_scores_from_patches

from conftest import texture_records, with_defect


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("knn")
    train = texture_records(folder / "train", 4, size=128)
    extra = texture_records(folder / "extra", 2, size=128, seed=3)
    normal = texture_records(folder / "test", 3, size=128, seed=1)
    defects = [with_defect(r, folder, (40, 40, 68, 68)) for r in texture_records(folder / "bad", 3, size=128, seed=2)]
    return train, extra, normal, defects


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("k", [1, 5])
def test_patch_distances_equal_brute_force(setup, distance, k):
    train, _, normal, _ = setup
    model = FewShotKNN(image_size=128, distance=distance, k=k).fit(train)
    rows = model._rows(model.embed([__import__("shiftad.data.images", fromlist=["read_image"]).read_image(normal[0].path)]))
    got = model.patch_distances(rows)
    bank = model.memory_bank_.astype(np.float64)
    if distance == "cosine":
        brute = 1.0 - rows.astype(np.float64) @ bank.T
    else:
        brute = np.sqrt(((rows[:, None, :].astype(np.float64) - bank[None]) ** 2).sum(-1))
    expected = np.sort(brute, axis=1)[:, :k]
    np.testing.assert_allclose(got, expected, atol=2e-3, rtol=1e-3)


def test_top_one_percent_is_the_mean_of_the_highest_patches():
    patches = np.arange(1, 301, dtype=float)[None]  # 300 patches: top 1% = 3 patches
    assert image_scores_from_patches(patches, "top1pct")[0] == pytest.approx((300 + 299 + 298) / 3)
    assert image_scores_from_patches(patches[:, :50], "top1pct")[0] == 50  # at least one patch
    assert image_scores_from_patches(patches, "max")[0] == 300


def test_defects_score_higher(setup):
    train, _, normal, defects = setup
    scores = FewShotKNN(image_size=128, k=1).fit(train).score(normal + defects)
    assert scores.maps.shape == (6, 128, 128)
    assert scores.image_scores[3:].min() > scores.image_scores[:3].max()


def test_adding_normals_grows_the_bank_by_their_patch_count(setup):
    train, extra, _, _ = setup
    model = FewShotKNN(image_size=128).fit(train)
    before = model.memory_bank_.shape[0]
    assert before == 4 * 16 * 16
    added = model.add_normals(extra)
    assert added == 2 * 16 * 16 and model.memory_bank_.shape[0] == before + added
    with pytest.raises(ValueError, match="normal images only"):
        model.add_normals([__import__("dataclasses").replace(extra[0], label=1, defect_type="dent")])


@pytest.mark.parametrize("coreset", ["random", "greedy"])
def test_coresets_thin_the_bank(setup, coreset):
    train, *_ = setup
    model = FewShotKNN(image_size=128, coreset=coreset, coreset_ratio=0.1).fit(train)
    assert model.memory_bank_.shape[0] == math.ceil(0.1 * 4 * 16 * 16)


def test_save_load_round_trip(setup, tmp_path):
    train, _, _, defects = setup
    model = FewShotKNN(image_size=128, distance="cosine", k=3, image_score="top1pct").fit(train)
    model.save(tmp_path / "m")
    loaded = FewShotKNN.load(tmp_path / "m")
    assert loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.score(defects).image_scores, model.score(defects).image_scores, rtol=1e-5)


def test_bad_options_are_errors():
    with pytest.raises(ValueError, match="distance"):
        FewShotKNN(distance="manhattan")
    with pytest.raises(ValueError, match="k must"):
        FewShotKNN(k=0)
