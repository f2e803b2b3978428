import numpy as np
import pytest

from shiftad.detectors import DETECTORS, build_detector
from shiftad.detectors.patchcore import PatchCore
from shiftad.params import validate_params

from conftest import texture_records, with_defect


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pc")
    train = texture_records(folder / "train", 8, size=128)
    test_normal = texture_records(folder / "test", 3, size=128, seed=1)
    defects = [with_defect(r, folder, (40, 40, 68, 68)) for r in texture_records(folder / "bad", 3, size=128, seed=2)]
    model = PatchCore(image_size=128, coreset_ratio=0.25, weights="auto").fit(train)
    return model, test_normal, defects, folder


def test_defects_score_higher_and_maps_localise(fitted):
    model, normal, defects, _ = fitted
    scores = model.score(normal + defects)
    assert scores.maps.shape == (6, 128, 128)
    assert scores.image_scores[3:].min() > scores.image_scores[:3].max()
    for m in scores.maps[3:]:
        y, x = np.unravel_index(m.argmax(), m.shape)
        assert 32 <= y <= 76 and 32 <= x <= 76


def test_memory_bank_is_the_coreset(fitted):
    model, *_ = fitted
    assert model.n_train_patches_ == 8 * 16 * 16  # 8 images × 16×16 grid at 128 px (stride 8)
    assert model.memory_bank_.shape == (512, 40 + 112)


def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    model, normal, defects, _ = fitted
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["memory_bank.safetensors", "meta.json"]
    loaded = PatchCore.load(tmp_path / "m")
    assert loaded.get_params() == model.get_params()
    np.testing.assert_allclose(loaded.score(defects).image_scores, model.score(defects).image_scores, rtol=1e-5)


def test_reweighted_score_is_at_most_max_score(fitted):
    model, normal, defects, _ = fitted
    plain = model.score(defects).image_scores
    model.image_score = "reweighted"
    try:
        reweighted = model.score(defects).image_scores
    finally:
        model.image_score = "max"
    assert np.all(reweighted <= plain + 1e-6) and np.all(reweighted > 0)


def test_fit_refuses_anomalous_images(fitted):
    model, _, defects, _ = fitted
    with pytest.raises(ValueError, match="normal images only"):
        PatchCore(image_size=64).fit(defects)


def test_registry_builds_from_params():
    params = validate_params({"image_size": 64, "patchcore": {"coreset_ratio": 0.05}})
    detector = build_detector("patchcore", params)
    assert isinstance(detector, PatchCore) and detector.coreset_ratio == 0.05 and detector.image_size == 64
    assert set(DETECTORS) == {"patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"}


@pytest.mark.parametrize("policy", ["squash", "pad", "center_crop"])
def test_non_square_images_under_each_resize_policy(tmp_path, policy):
    """Wide images (64 x 160): maps come back square in the map frame, and the defect's map peak
    lies on its mask brought into that frame (`ground_truth_masks`, the evaluation's masks)."""
    from PIL import Image

    from shiftad.evaluate.stage import ground_truth_masks

    def widen(records):
        for r in records:
            Image.open(r.path).resize((160, 64)).save(r.path)
        return records

    train = widen(texture_records(tmp_path / "train", 6, size=64))
    defects = [with_defect(r, tmp_path, (20, 70, 40, 90)) for r in widen(texture_records(tmp_path / "bad", 2, size=64, seed=2))]
    model = PatchCore(image_size=64, coreset_ratio=0.5, resize=policy).fit(train)
    scores = model.score(defects)
    assert scores.maps.shape == (2, 64, 64)
    masks, _ = ground_truth_masks(defects, (64, 64), policy)
    for heat, mask in zip(scores.maps, masks):
        y, x = np.unravel_index(heat.argmax(), heat.shape)
        ys, xs = np.nonzero(mask)
        assert ys.min() - 6 <= y <= ys.max() + 6 and xs.min() - 6 <= x <= xs.max() + 6, (policy, (y, x), (ys.min(), ys.max(), xs.min(), xs.max()))
    model.save(tmp_path / "model")  # a bundle's model: the policy travels in meta.json
    loaded = PatchCore.load(tmp_path / "model")
    assert loaded.resize == policy
    np.testing.assert_allclose(loaded.score(defects).maps, scores.maps, rtol=1e-5, atol=1e-6)
