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
    rows = model.patch_rows(normal[:1]).rows[0]
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


def test_shots_are_a_seeded_draw_per_category_from_the_given_images(tmp_path):
    from shiftad.detectors.knn import few_shot_draw

    a = texture_records(tmp_path / "a", 6, size=32, category="a")
    b = texture_records(tmp_path / "b", 3, size=32, category="b")
    records = a + b
    draw = few_shot_draw(records, 2, seed=0)
    assert [r.category for r in draw] == ["a", "a", "b", "b"]
    assert set(r.path for r in draw) <= set(r.path for r in records)
    assert draw == few_shot_draw(records, 2, seed=0)  # a function of the seed
    assert few_shot_draw(records, 0, seed=0) == records and len(few_shot_draw(records, 5, seed=0)) == 8  # b keeps all 3
    assert any(few_shot_draw(records, 2, seed=s) != draw for s in range(1, 6))


def test_fit_banks_shots_images_per_category(setup):
    train, *_ = setup
    model = FewShotKNN(image_size=128, shots=2).fit(train)
    assert model.n_fit_images_ == 2 and model.memory_bank_.shape[0] == 2 * 16 * 16


def test_extending_the_bank_by_merging_searches_equals_searching_the_extended_bank(setup):
    from shiftad.components.knn import NearestNeighbours, merge_neighbours

    train, extra, normal, defects = setup
    for model in (FewShotKNN(image_size=128, k=5, distance="cosine", image_score="top1pct"),
                  __import__("shiftad.detectors.patchcore", fromlist=["PatchCore"]).PatchCore(image_size=128, coreset_ratio=0.2)):
        model.fit(train)
        queries = model.patch_rows(normal + defects)
        flat = queries.rows.reshape(-1, queries.rows.shape[-1])
        found = model.neighbours(flat)
        block = model.patch_rows(extra)
        offset = model.memory_bank_.shape[0]
        model.add_rows(block)
        d, i = NearestNeighbours(block.bank_rows()).query(flat, model.n_neighbours)
        merged = model.scores_from_neighbours(queries, *merge_neighbours(*found, d, i + offset, model.n_neighbours))
        direct = model.score_rows(queries)
        np.testing.assert_allclose(merged.image_scores, direct.image_scores, rtol=1e-5)
        np.testing.assert_allclose(merged.maps, direct.maps, rtol=1e-4, atol=1e-5)


def test_dinov2_patch_tokens_and_foreground_mask_on_random_weights(setup, tmp_path):
    """The ViT path offline: DINOv2 ViT-S/14 architecture with random weights (weights: none),
    tokens on a 14-px grid, the PCA foreground mask shrinking the bank; and a local weights
    file is loaded strictly (the same state dict round-trips to the same tokens)."""
    from safetensors.torch import save_file

    train, _, normal, _ = setup
    model = FewShotKNN(backbone="vit_small_patch14_dinov2.lvd142m", weights="none", image_size=112, foreground_threshold=0.0)
    assert model.uses_foreground_mask
    rows = model.patch_rows(train[:2])
    assert rows.grid == (8, 8) and rows.rows.shape == (2, 64, 384) and rows.foreground is not None
    model.fit_rows(rows)
    assert model.memory_bank_.shape[0] == rows.foreground.sum() < 2 * 64
    scores = model.score_rows(model.patch_rows(normal[:1]))
    assert scores.maps.shape == (1, 112, 112)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.extractor.model.state_dict().items()}, str(weights))
    again = FewShotKNN(backbone="vit_small_patch14_dinov2.lvd142m", weights=str(weights), image_size=112, foreground_mask="off")
    np.testing.assert_allclose(again.patch_rows(train[:1]).rows, rows.rows[:1], rtol=1e-4, atol=1e-4)


def test_a_missing_dinov2_weights_file_is_an_error_naming_the_param(tmp_path):
    from shiftad.backbones import BackboneWeightsError

    model = FewShotKNN(backbone="vit_small_patch14_dinov2.lvd142m", weights=str(tmp_path / "dinov2_vits14.safetensors"))
    with pytest.raises(BackboneWeightsError, match=r"dinov2_vits14\.safetensors.*knn\.weights"):
        model.extractor
    with pytest.raises(Exception, match="knn.foreground_mask"):
        FewShotKNN(foreground_mask="on")  # CNN features: no PCA foreground


def test_an_official_dinov2_checkpoint_loads_by_its_torch_hub_name(setup, tmp_path):
    """The torch hub layout (mask_token, hub name dinov2_vits14) goes through timm's converter and loads strictly."""
    import torch
    from safetensors.torch import save_file

    train, *_ = setup
    reference = FewShotKNN(backbone="vit_small_patch14_dinov2.lvd142m", weights="none", image_size=56, foreground_mask="off")
    state = {k: v.contiguous() for k, v in reference.extractor.model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, 384)  # present in the official checkpoints, not in timm's model
    save_file(state, str(tmp_path / "dinov2_vits14_pretrain.safetensors"))
    hub = FewShotKNN(backbone="dinov2_vits14", weights=str(tmp_path / "dinov2_vits14_pretrain.safetensors"), image_size=56, foreground_mask="off")
    np.testing.assert_allclose(hub.patch_rows(train[:1]).rows, reference.patch_rows(train[:1]).rows, rtol=1e-4, atol=1e-4)
    assert hub.uses_foreground_mask is False and FewShotKNN(backbone="dinov2_vits14").uses_foreground_mask
