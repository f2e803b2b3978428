import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from shiftad.backbones import FeatureExtractor, create_backbone
from shiftad.components.maps import upsample_and_smooth
from shiftad.data.images import read_image
from shiftad.detectors.padim import PaDiM, anomalib_map_sigma
from shiftad.errors import ParamsError

from conftest import texture_records, with_defect

LAYERS = ["blocks.2", "blocks.4"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("padim")
    train = texture_records(folder / "train", 8, size=128)
    test_normal = texture_records(folder / "test", 3, size=128, seed=1)
    defects = [with_defect(r, folder, (40, 40, 68, 68)) for r in texture_records(folder / "bad", 3, size=128, seed=2)]
    model = PaDiM(image_size=128, weights="auto").fit(train)
    return model, train, test_normal, defects


@pytest.fixture(scope="module")
def small_train(tmp_path_factory):
    return texture_records(tmp_path_factory.mktemp("padim_small") / "train", 4, size=64, seed=3)


def test_defects_score_higher_and_maps_localise(fitted):
    model, _, normal, defects = fitted
    scores = model.score(normal + defects)
    assert scores.maps.shape == (6, 128, 128) and scores.maps.dtype == np.float32
    assert scores.image_scores.dtype == np.float64
    assert scores.image_scores[3:].min() > scores.image_scores[:3].max()
    for m in scores.maps[3:]:
        y, x = np.unravel_index(m.argmax(), m.shape)
        assert 32 <= y <= 76 and 32 <= x <= 76


def test_gaussian_shapes(fitted):
    model, *_ = fitted
    assert model.feature_grid_ == (16, 16)  # blocks.2 has stride 8: 128 px -> 16×16 positions
    assert model.channel_idx_.shape == (100,) and int(model.channel_idx_.max()) < 40 + 112
    assert model.gaussian_mean_.shape == (100, 256)
    assert model.inv_covariance_.shape == (256, 100, 100)


def test_offline_weights_are_in_anomalibs_extractor(fitted):
    """anomalib's own extractor holds the offline weights, and the shared extractor PaDiM's features
    come from (the one the features stage runs for PatchCore too) computes the same layers."""
    model, *_ = fitted
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    reference = FeatureExtractor("tf_efficientnet_lite0", LAYERS, "auto")(x)  # normalises internally
    _, mean, std = create_backbone("tf_efficientnet_lite0", "none")  # the backbone's own normalisation, not anomalib's ImageNet default
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        anomalibs = model.model.feature_extractor(normalised)
    ours = model.features(x)
    for layer, expected, used in zip(LAYERS, reference, ours):
        torch.testing.assert_close(anomalibs[layer], expected, rtol=1e-4, atol=1e-4)  # layouts differ (channels-last ours): float rounding only
        torch.testing.assert_close(used, expected, rtol=0, atol=0)
    assert model.feature_spec() == {"network": "timm_layers", "backbone": "tf_efficientnet_lite0", "weights": "auto",
                                    "layers": LAYERS, "image_size": model.image_size, "resize": "squash", "normalisation": "model"}


@pytest.mark.parametrize(
    ("layers", "named"),
    [(["blocks.2", "blokcs.4"], "blokcs.4"), (["blokcs.2", "blocks.4"], "blokcs.2")],
)
def test_misspelled_layer_is_a_clear_error(small_train, layers, named):
    with pytest.raises(ParamsError, match=rf"padim\.layers: \['{named}'\] not found.*blocks\.4"):
        PaDiM(layers=layers, image_size=64).fit(small_train)


def test_layers_out_of_order_are_refused(small_train):
    # anomalib would pair blocks.2's features with the name blocks.4 and vice versa
    with pytest.raises(ParamsError, match="shallow to deep"):
        PaDiM(layers=["blocks.4", "blocks.2"], image_size=64).fit(small_train)


def test_too_many_features_is_a_clear_error(small_train):
    with pytest.raises(ParamsError, match="padim.n_features: 153 exceeds the 152 channels"):
        PaDiM(n_features=153, image_size=64).fit(small_train)


@pytest.mark.usefixtures("one_torch_thread")  # bitwise: one thread (conftest.torch_threads)
def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    model, _, normal, defects = fitted
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["meta.json", "padim.safetensors"]
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["detector"] == "padim" and meta["feature_grid"] == [16, 16] and meta["n_train_images"] == 8
    loaded = PaDiM.load(tmp_path / "m")
    assert loaded.get_params() == model.get_params()
    assert torch.equal(loaded.channel_idx_, model.channel_idx_)
    assert torch.equal(loaded.gaussian_mean_, model.gaussian_mean_)
    assert torch.equal(loaded.inv_covariance_, model.inv_covariance_)
    expected, got = model.score(normal + defects), loaded.score(normal + defects)
    np.testing.assert_array_equal(got.image_scores, expected.image_scores)
    np.testing.assert_array_equal(got.maps, expected.maps)


def test_loaded_channel_subset_comes_from_the_file(fitted, tmp_path):
    model, *_ = fitted
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    meta["params"]["seed"] = 12345  # a rebuilt model would draw another subset
    (tmp_path / "m" / "meta.json").write_text(json.dumps(meta))
    assert torch.equal(PaDiM.load(tmp_path / "m").channel_idx_, model.channel_idx_)


@pytest.mark.usefixtures("one_torch_thread")  # bitwise: one thread (conftest.torch_threads)
def test_same_seed_same_channels_and_scores(small_train):
    rng_before = torch.get_rng_state()
    a = PaDiM(image_size=64, n_features=50, seed=7).fit(small_train)
    b = PaDiM(image_size=64, n_features=50, seed=7).fit(small_train)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding does not disturb the caller's RNG
    assert torch.equal(a.channel_idx_, b.channel_idx_)
    np.testing.assert_array_equal(a.score(small_train).image_scores, b.score(small_train).image_scores)
    other = PaDiM(image_size=64, n_features=50, seed=8).channel_idx_  # built, not fitted
    assert not torch.equal(other, a.channel_idx_)


def test_fit_refuses_anomalous_images(fitted):
    *_, defects = fitted
    with pytest.raises(ValueError, match="normal images only"):
        PaDiM(image_size=64).fit(defects)


def _mahalanobis_by_hand(model: PaDiM, train, test) -> np.ndarray:
    """(N, h, w) Mahalanobis distances with PaDiM's Gaussian (cov + 0.01·I) fitted in float64 numpy."""
    train_emb = model.embed([read_image(r.path) for r in train]).double().numpy()
    test_emb = model.embed([read_image(r.path) for r in test]).double().numpy()
    n, c, h, w = train_emb.shape
    x = train_emb.reshape(n, c, h * w)
    mean = x.mean(axis=0)  # (c, P)
    distances = np.empty((len(test), h * w))
    for p in range(h * w):
        cov = np.cov(x[:, :, p], rowvar=False) + (0.01 + 1e-5) * np.eye(c)
        delta = test_emb.reshape(len(test), c, h * w)[:, :, p] - mean[:, p]
        distances[:, p] = np.sqrt(np.einsum("bi,ij,bj->b", delta, np.linalg.inv(cov), delta))
    return distances.reshape(len(test), h, w)


def test_scores_are_raw_mahalanobis_values(fitted):
    model, train, normal, defects = fitted
    assert model.map_sigma == anomalib_map_sigma() == 4.0  # anomalib's default blur
    scores = model.score(normal + defects)
    # no normalisation to [0, 1], no threshold: raw distances (sqrt of ~100-d Mahalanobis)
    assert scores.image_scores.min() > 1.0
    np.testing.assert_allclose(scores.image_scores, scores.maps.reshape(6, -1).max(axis=1), rtol=1e-6)
    by_hand = _mahalanobis_by_hand(model, train, normal + defects)
    expected = upsample_and_smooth(torch.from_numpy(by_hand), 128, 4.0)
    np.testing.assert_allclose(scores.maps, expected, rtol=2e-3)


def test_maps_match_anomalibs_map_generator(fitted):
    """Our separable blur reproduces anomalib's own eval forward (2-D kernel) from the embedding on."""
    model, _, normal, defects = fitted
    images = [read_image(r.path) for r in normal + defects]
    scores = model.score(normal + defects)
    torch_model = model.model.eval()
    with torch.no_grad():
        heat = torch_model.anomaly_map_generator(embedding=model.embed(images), mean=torch_model.gaussian.mean,
                                                 inv_covariance=torch_model.gaussian.inv_covariance, image_size=(128, 128))
    np.testing.assert_allclose(scores.maps, heat[:, 0].numpy(), rtol=1e-5, atol=1e-5 * float(heat.abs().max()))
    np.testing.assert_allclose(scores.image_scores, torch.amax(heat, dim=(-2, -1)).reshape(-1).double().numpy(), rtol=1e-5)


@pytest.mark.usefixtures("one_torch_thread")  # bitwise: one thread (conftest.torch_threads)
def test_embedding_and_distances_are_anomalibs_bit_for_bit(fitted, tmp_path):
    """The scoring path (no anomalib) computes what anomalib's generate_embedding and
    compute_distance do, bit for bit; a loaded model builds no anomalib model to score."""
    from shiftad.detectors.padim import mahalanobis_grid, padim_embedding

    model, _, normal, defects = fitted
    images = [read_image(r.path) for r in normal + defects]
    features = model.features(model.prepare_batch(images))
    torch_model = model.model
    expected = torch_model.generate_embedding(dict(zip(LAYERS, features)))
    embedding = padim_embedding(features, model.channel_idx_)
    assert torch.equal(embedding, expected)
    mean, inv_covariance = torch_model.gaussian.mean, torch_model.gaussian.inv_covariance
    assert torch.equal(mahalanobis_grid(embedding, mean, inv_covariance),
                       torch_model.anomaly_map_generator.compute_distance(embedding, [mean, inv_covariance]))
    model.save(tmp_path / "m")
    loaded = PaDiM.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.score(defects).maps, model.score(defects).maps)
    assert loaded._model is None  # scored without building anomalib's model
    assert torch.equal(loaded.model.gaussian.inv_covariance, inv_covariance)  # built on request, with the loaded state


def test_other_map_sigma_smooths_the_raw_grid(fitted):
    model, train, normal, defects = fitted
    by_hand = torch.from_numpy(_mahalanobis_by_hand(model, train, defects))
    model.map_sigma = 0.0  # no blur: bilinear upsampling of the raw Mahalanobis grid only
    try:
        scores = model.score(defects)
    finally:
        model.map_sigma = 4.0
    np.testing.assert_allclose(scores.maps, upsample_and_smooth(by_hand, 128, 0.0), rtol=2e-3)
    np.testing.assert_allclose(scores.image_scores, scores.maps.reshape(3, -1).max(axis=1), rtol=1e-6)


def test_from_params_reads_the_padim_section():
    params = SimpleNamespace(
        seed=3,
        image_size=64,
        resize="pad",
        backbone=SimpleNamespace(name="tf_efficientnet_lite0", weights="auto", batch_size=4, normalisation="imagenet"),
        padim=SimpleNamespace(layers=["blocks.1", "blocks.2"], n_features=32, map_sigma=2.0),
    )
    detector = PaDiM.from_params(params)
    assert detector.get_params() == {
        "backbone": "tf_efficientnet_lite0", "weights": "auto", "layers": ["blocks.1", "blocks.2"], "image_size": 64,
        "resize": "pad", "normalisation": "imagenet", "n_features": 32, "map_sigma": 2.0, "batch_size": 4, "seed": 3,
    }  # fmt: skip
