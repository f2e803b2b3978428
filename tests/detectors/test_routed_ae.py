"""Classifier-routed feature autoencoders: the 1×1 autoencoder, the score, the μ + 3σ threshold
from validation normals, the router, and mis-routing."""

import numpy as np
import pytest
import torch

from shiftad.data.images import read_image
from shiftad.detectors import DETECTORS, build_detector
from shiftad.detectors.routed_ae import RoutedAutoencoder, conv_autoencoder, error_map, top_k_mean
from shiftad.params import DETECTOR_NAMES, validate_params

from conftest import stripe_records, texture_records, with_defect


def small_model(**overrides) -> RoutedAutoencoder:
    return RoutedAutoencoder(**{"image_size": 128, "hidden": 32, "latent": 16, "epochs": 15, "patience": 4, **overrides})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("routed")
    return {
        "train": texture_records(folder / "tex_train", 10, size=128) + stripe_records(folder / "str_train", 10),
        "val": texture_records(folder / "tex_val", 5, size=128, seed=1) + stripe_records(folder / "str_val", 5, seed=1),
        "test_tex": texture_records(folder / "tex_test", 4, size=128, seed=2),
        "test_str": stripe_records(folder / "str_test", 4, seed=2),
        "defects": [with_defect(r, folder, (40, 40, 72, 72)) for r in texture_records(folder / "tex_bad", 4, size=128, seed=3)],
    }


@pytest.fixture(scope="module")
def routed(data):
    return small_model().fit(data["train"], data["val"])


def test_registered_and_built_from_params():
    assert set(DETECTORS) == set(DETECTOR_NAMES)
    params = validate_params({"routed_ae": {"latent": 50, "top_k": 5, "std_multiplier": 2.5}})
    model = build_detector("routed_ae", params)
    assert (model.latent, model.top_k, model.std_multiplier) == (50, 5, 2.5)
    assert params.threshold_rule("routed_ae") == "mean_std"


def test_autoencoder_is_1x1_only_and_keeps_the_spatial_size():
    model = conv_autoencoder(152, 64, 20).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (1, 1) for c in convs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    for shape in [(2, 152, 32, 32), (3, 152, 17, 9)]:
        assert model(torch.randn(shape)).shape == shape
    # 1×1 only: each position's reconstruction depends on that position alone
    x = torch.randn(1, 152, 8, 8)
    y = x.clone()
    y[..., 3, 4] += 5.0
    changed = (model(x) - model(y)).abs().sum(dim=1)[0] > 0
    assert changed.sum() == 1 and changed[3, 4]


def test_error_map_and_top_k_mean_on_hand_made_tensors():
    features = torch.zeros(1, 2, 4, 4)
    reconstruction = torch.zeros(1, 2, 4, 4)
    reconstruction[0, 0] = torch.arange(16.0).reshape(4, 4)  # channel 0 off by 0..15, channel 1 exact
    error = error_map(features, reconstruction)
    np.testing.assert_allclose(error[0].numpy(), (np.arange(16.0) ** 2 / 2).reshape(4, 4))
    values = np.random.default_rng(0).random((3, 7, 5))
    expected = np.sort(values.reshape(3, -1), axis=1)[:, -10:].mean(axis=1)
    np.testing.assert_allclose(top_k_mean(torch.from_numpy(values), 10).numpy(), expected)
    assert float(top_k_mean(torch.ones(1, 2, 2) * 3, 10)) == 3.0  # fewer positions than k: all of them


def test_threshold_is_mean_plus_3_std_of_validation_normals(routed, data):
    for category in ("tex", "stripes"):
        val = [r for r in data["val"] if r.category == category]
        scores = routed.score_images([read_image(r.path) for r in val], category=category).image_scores
        entry = routed.thresholds_[category]
        assert entry["n_val_normals"] == len(val)
        assert entry["value"] == pytest.approx(scores.mean() + 3 * scores.std(), rel=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch(routed, data):
    for category, log in routed.training_.items():
        assert 1 <= log["best_epoch"] <= log["epochs_run"] <= 15
        assert log["best_val_loss"] == pytest.approx(min(log["val_loss"]))
        assert log["epochs_run"] == 15 or log["epochs_run"] - log["best_epoch"] == 4  # stopped by patience
        val = [r for r in data["val"] if r.category == category]
        features = routed.embed([read_image(r.path) for r in val])
        mean, std = routed.feature_stats_[category]
        z = (features - mean) / std
        with torch.no_grad():
            loss = float(error_map(z, routed.autoencoders_[category](z)).mean())
        assert loss == pytest.approx(log["best_val_loss"], abs=1e-5)  # the weights kept are the best epoch's


def test_fit_needs_validation_normals_and_refuses_anomalies(data):
    with pytest.raises(ValueError, match="no validation normal images"):
        small_model().fit(data["train"], [r for r in data["val"] if r.category == "tex"])
    with pytest.raises(ValueError, match="normal train and validation images only"):
        small_model().fit(data["train"], data["val"] + data["defects"][:1])


def test_router_routes_held_out_images_of_two_categories(routed, data):
    scores = routed.score(data["test_tex"] + data["test_str"])
    assert scores.categories.tolist() == ["tex"] * 4 + ["stripes"] * 4


def test_a_misrouted_image_is_scored_by_the_predicted_category(routed, data):
    images = [read_image(r.path) for r in data["test_tex"]]
    intercept = routed.router_.intercept.copy()
    routed.router_.intercept = intercept + np.where(np.array(routed.router_.classes) == "stripes", 1e6, 0.0)
    try:
        misrouted = routed.score_images(images)
    finally:
        routed.router_.intercept = intercept
    assert misrouted.categories.tolist() == ["stripes"] * 4
    by_stripes = routed.score_images(images, category="stripes")
    by_own = routed.score_images(images, category="tex")
    np.testing.assert_allclose(misrouted.image_scores, by_stripes.image_scores)
    assert not np.allclose(misrouted.image_scores, by_own.image_scores)


def test_defects_rank_above_normals_and_maps_localise(routed, data):
    scores = routed.score(data["test_tex"] + data["defects"])
    assert scores.maps.shape == (8, 128, 128)
    assert scores.image_scores[4:].min() > scores.image_scores[:4].max()
    for m in scores.maps[4:]:
        y, x = np.unravel_index(m.argmax(), m.shape)
        assert 32 <= y <= 80 and 32 <= x <= 80


def test_one_category_needs_no_router_and_matches_the_pooled_fit(routed, data):
    tex_train = [r for r in data["train"] if r.category == "tex"]
    tex_val = [r for r in data["val"] if r.category == "tex"]
    alone = small_model().fit(tex_train, tex_val)
    assert alone.router_ is None and alone.categories_ == ["tex"]
    images = [read_image(r.path) for r in data["defects"]]
    # per-class = oracle routing: the same autoencoder as inside the routed model
    np.testing.assert_allclose(alone.score_images(images).image_scores, routed.score_images(images, category="tex").image_scores, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown category 'stripes'"):
        alone.score_images(images, category="stripes")


def test_save_load_round_trip_without_pickle(routed, data, tmp_path):
    routed.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json", "routed_ae.safetensors", "thresholds.json"]
    loaded = RoutedAutoencoder.load(tmp_path / "m")
    assert loaded.get_params() == routed.get_params()
    assert loaded.thresholds_ == routed.thresholds_
    records = data["test_tex"] + data["test_str"] + data["defects"]
    a, b = routed.score(records), loaded.score(records)
    np.testing.assert_array_equal(a.categories, b.categories)
    np.testing.assert_allclose(a.image_scores, b.image_scores, rtol=1e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6)


def test_same_seed_same_weights(data):
    train = [r for r in data["train"] if r.category == "stripes"]
    val = [r for r in data["val"] if r.category == "stripes"]
    a, b = small_model(epochs=3).fit(train, val), small_model(epochs=3).fit(train, val)
    for (ka, va), (kb, vb) in zip(a.autoencoders_["stripes"].state_dict().items(), b.autoencoders_["stripes"].state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
