"""EfficientAD: PDN shapes, hard feature loss, map normalisation, teacher distillation and
files, determinism, and a fit that finds an obvious defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import texture_records, with_defect
from shiftad.components.pdn import (autoencoder, channel_statistics, hard_feature_loss, map_quantiles, normalise_map, pdn,
                                    pdn_output_size)
from shiftad.data.images import read_image
from shiftad.detectors.efficientad import EfficientAD, PenaltyPool, TeacherError
from shiftad.errors import ParamsError
from shiftad.io import write_json
from shiftad.params import validate_params

TINY = {"image_size": 64, "width": 0.125, "channels": 16}


def tiny_params(**teacher):
    return validate_params({"efficientad": {"scale": "smoke", "architecture": {"smoke": TINY}, "training": {"smoke": {"steps": 20}},
                                            "teacher": {"smoke": {"steps": 6, "batch_size": 4, **teacher}}}})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("efficientad")
    train = texture_records(root / "train", 10, size=96, seed=0)
    val = texture_records(root / "val", 4, size=96, seed=1)
    test = texture_records(root / "test", 6, size=96, seed=2)
    (root / "bad").mkdir()
    defects = [with_defect(r, root / "bad", (30, 30, 60, 60)) for r in test[:3]]
    return {"root": root, "train": train, "val": val, "test": test, "defects": defects}


@pytest.fixture(scope="module")
def teacher(images, lite0_available):
    """A briefly distilled tiny teacher (the stage's own function), written as the stage writes it."""
    if not lite0_available:
        pytest.skip("offline Lite0 weights not installed")
    from shiftad.distill import distill_teacher

    state, facts = distill_teacher([read_image(r.path) for r in images["train"]], tiny_params(), progress=False)
    folder = images["root"] / "teacher"
    folder.mkdir()
    save_file(state, str(folder / "teacher.safetensors"))
    write_json(folder / "teacher.json", facts)
    return folder


def tiny_detector(teacher_folder, **overrides) -> EfficientAD:
    settings = {"image_size": 64, "output_size": 96, "width": 0.125, "channels": 16, "steps": 20, "learning_rate": 1e-3, "device": "cpu"}
    return EfficientAD(teacher=str(teacher_folder), **{**settings, **overrides})


# -- networks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize("image_size", [128, 160, 256])
def test_pdn_and_autoencoder_shapes(size, image_size):
    side = pdn_output_size(image_size)
    x = torch.zeros(1, 3, image_size, image_size)
    assert pdn(size, 384)(x).shape == (1, 384, side, side)
    assert pdn(size, 2 * 384)(x).shape == (1, 768, side, side)  # the student: 2C channels
    assert autoencoder(384, image_size, side)(x).shape == (1, 384, side, side)
    padded = pdn(size, 64, width=0.25, padding=True)(x)
    assert padded.shape[-1] == pdn_output_size(image_size, padding=True) == image_size // 4
    if image_size == 256:
        assert side == 56  # the paper's map size


def test_pdn_keys_follow_the_official_layout():
    """Official teacher weights (teacher_small.pth / teacher_medium.pth) load by key."""
    assert list(pdn("small", 384).state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias", "8.weight", "8.bias"]
    assert [k for k in pdn("medium", 384).state_dict() if k.endswith("weight")] == \
        ["0.weight", "3.weight", "6.weight", "8.weight", "10.weight", "12.weight"]
    assert pdn("small", 384).state_dict()["0.weight"].shape == (128, 3, 4, 4)
    assert pdn("medium", 384).state_dict()["6.weight"].shape == (512, 512, 1, 1)


def test_hard_feature_loss_keeps_exactly_the_top_tenth_of_a_percent():
    distance = torch.randperm(100_000).float().reshape(1, 10, 100, 100)
    assert hard_feature_loss(distance, 0.999).item() == pytest.approx(np.arange(99_900, 100_000).mean())
    odd = torch.randperm(1500).float()  # 1.5 elements -> the top 2
    assert hard_feature_loss(odd, 0.999).item() == pytest.approx(1498.5)
    assert hard_feature_loss(torch.tensor([3.0, 1.0]), 0.999).item() == 3.0


def test_hard_feature_loss_takes_inputs_beyond_torch_quantile_limit():
    big = torch.zeros(2**24 + 10)
    big[:17] = 5.0  # older torch.quantile refused inputs over 2^24 elements; topk has no such limit
    assert hard_feature_loss(big, 0.999).item() == pytest.approx(5.0 * 17 / 16778)  # ceil(0.001 n) = 16778 largest


def test_map_normalisation_maps_the_two_quantiles_to_0_and_0_1():
    maps = torch.rand(6, 24, 24) ** 3
    low, high = map_quantiles(maps, 0.9, 0.995)
    assert (low, high) == pytest.approx(tuple(np.quantile(maps.numpy().astype(np.float64), [0.9, 0.995])))
    assert normalise_map(torch.tensor([low, high]), low, high).tolist() == pytest.approx([0.0, 0.1])


def test_channel_statistics_match_numpy():
    outputs = [torch.randn(3, 4, 5, 5) * 2 + 1, torch.randn(2, 4, 5, 5)]
    mean, std = channel_statistics(outputs)
    flat = torch.cat(outputs).permute(1, 0, 2, 3).reshape(4, -1).double().numpy()
    np.testing.assert_allclose(mean.flatten().numpy(), flat.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std.flatten().numpy(), flat.std(axis=1), rtol=1e-5)


# -- penalty images ------------------------------------------------------------------------------
def test_default_penalty_pool_leaves_out_the_fitted_categories():
    pool = PenaltyPool.build("default", ["brick", "gravel"], 32, seed=0)
    photos = pool.description.split("photos (")[1].split(")")[0].split(", ")
    assert "brick" not in photos and "gravel" not in photos and "grass" in photos and "astronaut" in photos
    batch = pool.sample(4, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 3, 32, 32) and 0 <= batch.min() and batch.max() <= 1


def test_penalty_folder_errors_name_the_key(tmp_path):
    with pytest.raises(ParamsError, match="efficientad.penalty_images"):
        PenaltyPool.build(str(tmp_path / "missing"), [], 32, seed=0)
    with pytest.raises(ParamsError, match="holds no images"):
        PenaltyPool.build(str(tmp_path), [], 32, seed=0)


# -- teacher -------------------------------------------------------------------------------------
def test_distilled_teacher_regresses_pooled_backbone_features(teacher):
    import json

    facts = json.loads((teacher / "teacher.json").read_text())
    assert facts["source"] == "distilled" and facts["backbone_input"] == 2 * TINY["image_size"]
    state = load_file(str(teacher / "teacher.safetensors"))
    model = pdn("small", 16, 0.125)
    model.load_state_dict(state, strict=True)
    assert facts["history"][-1]["loss"] < 1.5  # standardised targets: 1 = predicting the mean


def test_distill_target_channels_must_not_exceed_the_backbone(lite0_available):
    if not lite0_available:
        pytest.skip("offline Lite0 weights not installed")
    from shiftad.distill import DistillTarget

    target = DistillTarget("tf_efficientnet_lite0", "auto", ["blocks.2", "blocks.4"], 3, 16)
    assert target.raw(torch.rand(1, 3, 128, 128), 16).shape == (1, 16, 16, 16)  # 152 channels pooled to 16
    with pytest.raises(ParamsError, match="channels"):
        DistillTarget("tf_efficientnet_lite0", "auto", ["blocks.2", "blocks.4"], 3, 384).raw(torch.rand(1, 3, 128, 128), 16)


def test_teacher_file_loads_strictly_and_a_mismatch_is_an_error(tmp_path):
    from shiftad.distill import teacher_from_file

    params = tiny_params()
    good = pdn("small", 16, 0.125).state_dict()
    torch.save(good, tmp_path / "teacher_small.pth")  # the official files are state dicts
    state, facts = teacher_from_file(tmp_path / "teacher_small.pth", params)
    assert facts["source"] == "file" and all(torch.equal(state[k], good[k]) for k in good)
    renamed = dict(zip(("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias", "conv4.weight", "conv4.bias"),
                       good.values()))  # anomalib's names for the same tensors
    torch.save(renamed, tmp_path / "anomalib_teacher.pth")
    state, _ = teacher_from_file(tmp_path / "anomalib_teacher.pth", params)
    assert all(torch.equal(state[k], good[k]) for k in good)
    torch.save(pdn("small", 32, 0.125).state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ParamsError, match="efficientad.teacher.source.*does not fit PDN-S with 16"):
        teacher_from_file(tmp_path / "wrong.pth", params)
    with pytest.raises(ParamsError, match="efficientad.teacher.source.*not found"):
        teacher_from_file(tmp_path / "missing.pth", params)


def test_fit_without_a_matching_teacher_is_an_error(images, tmp_path):
    with pytest.raises(TeacherError, match="distill-teacher"):
        tiny_detector(tmp_path).fit(images["train"], images["val"])
    save_file(pdn("small", 16, 0.125).state_dict(), str(tmp_path / "teacher.safetensors"))
    write_json(tmp_path / "teacher.json", {"model_size": "small", "channels": 32, "width": 0.125, "image_size": 64})
    with pytest.raises(TeacherError, match="made for"):
        tiny_detector(tmp_path).fit(images["train"], images["val"])


# -- fitting and scoring -------------------------------------------------------------------------
def test_fit_needs_validation_normals(images, teacher):
    with pytest.raises(ValueError, match="validation normal"):
        tiny_detector(teacher).fit(images["train"], [])
    with pytest.raises(ValueError, match="anomalous"):
        tiny_detector(teacher).fit(images["train"], images["defects"])


@pytest.fixture(scope="module")
def fitted(images, teacher):
    return tiny_detector(teacher, steps=50).fit(images["train"], images["val"])


def test_fit_ranks_an_obvious_defect_above_normal_images(images, fitted):
    from sklearn.metrics import roc_auc_score

    scores = fitted.score([*images["test"][3:], *images["defects"]])
    labels = [0] * 3 + [1] * 3
    assert roc_auc_score(labels, scores.image_scores) == 1.0
    assert scores.maps.shape == (6, 96, 96)
    # the defect's pixels outscore the rest of its image
    mask = np.zeros((96, 96), bool)
    mask[30:60, 30:60] = True
    assert scores.maps[3][mask].mean() > scores.maps[3][~mask].mean()


def test_the_training_history_holds_interval_means_up_to_the_last_step(fitted):
    history = fitted.training_["history"]
    steps = [h["step"] for h in history]
    every = max(1, fitted.steps // 20)
    assert every > 1 and steps == sorted(set(range(every, fitted.steps + 1, every)) | {fitted.steps})
    for entry in history:  # each entry is the mean over its interval's steps: the total is still the sum of its parts
        assert entry["loss"] == pytest.approx(entry["hard"] + entry["penalty"] + entry["ae"] + entry["st_ae"], abs=1e-5)


def test_quantiles_come_from_validation_maps_and_score_is_the_unpadded_max(images, fitted):
    val = fitted._read(images["val"], "val")
    local, global_ = fitted._maps_of(val)
    assert fitted.quantiles_["local"] == map_quantiles(local, 0.9, 0.995)
    assert fitted.quantiles_["global"] == map_quantiles(global_, 0.9, 0.995)
    batch = [read_image(r.path) for r in images["test"][:2]]
    combined = fitted.combined_maps(fitted._prepare(batch))
    assert combined.shape[-1] == pdn_output_size(64)
    np.testing.assert_allclose(fitted.score_images(batch).image_scores, combined.amax(dim=(1, 2)).double().numpy())


def test_one_seed_twice_gives_identical_weights(images, teacher):
    first, again, other = (tiny_detector(teacher, steps=8, seed=seed).fit(images["train"], images["val"]) for seed in (0, 0, 1))
    for mine, theirs in ((first.student_, again.student_), (first.ae_, again.ae_)):
        for (key, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(a, b), key
    assert first.quantiles_ == again.quantiles_
    assert not torch.equal(other.student_.state_dict()["0.weight"], first.student_.state_dict()["0.weight"])


def test_save_load_keeps_scores(images, fitted, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = EfficientAD.load(tmp_path / "model")
    batch = [read_image(r.path) for r in images["defects"]]
    np.testing.assert_array_equal(loaded.score_images(batch).image_scores, fitted.score_images(batch).image_scores)
    assert loaded.get_params() == fitted.get_params() and loaded.feature_network() is None
