"""Uninformed Students: patch networks (dense = patch-wise), compactness loss, e and v, teacher
distillation and files, multi-scale averaging, determinism, and a fit that finds an obvious defect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from conftest import texture_records, with_defect
from shiftad.components.patch_nets import ARCHITECTURES, PatchNet, compactness_loss, dilated_max_pool2, student_scores
from shiftad.data.images import read_image
from shiftad.detectors.uninformed_students import TeacherError, UninformedStudents
from shiftad.errors import ParamsError
from shiftad.io import write_json
from shiftad.params import validate_params

TINY = {"patch_sizes": [17, 33], "image_size": 64, "width": 0.125, "descriptor_dim": 16}


def tiny_params(**teacher):
    return validate_params({"uninformed_students": {"scale": "smoke", "architecture": {"smoke": TINY},
                                                    "teacher": {"smoke": {"patches": 128, "epochs": 2, "batch_size": 32, "backbone_input": 32, **teacher}}}})


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninformed_students")
    train = texture_records(root / "train", 10, size=96, seed=0)
    val = texture_records(root / "val", 4, size=96, seed=1)
    test = texture_records(root / "test", 6, size=96, seed=2)
    (root / "bad").mkdir()
    defects = [with_defect(r, root / "bad", (30, 30, 60, 60)) for r in test[:3]]
    return {"root": root, "train": train, "val": val, "test": test, "defects": defects}


@pytest.fixture(scope="module")
def teacher(images, lite0_available):
    """Briefly distilled tiny teachers (the stage's own function), written as the stage writes them."""
    if not lite0_available:
        pytest.skip("offline Lite0 weights not installed")
    from shiftad.distill import distill_patch_teachers

    state, facts = distill_patch_teachers([read_image(r.path) for r in images["train"]], tiny_params(), progress=False)
    folder = images["root"] / "teacher"
    folder.mkdir()
    save_file(state, str(folder / "teacher.safetensors"))
    write_json(folder / "teacher.json", facts)
    return folder


def tiny_detector(teacher_folder, **overrides) -> UninformedStudents:
    settings = {"patch_sizes": [17], "image_size": 64, "output_size": 96, "width": 0.125, "descriptor_dim": 16, "epochs": 2,
                "learning_rate": 1e-3, "device": "cpu"}
    return UninformedStudents(teacher=str(teacher_folder), **{**settings, **overrides})


@pytest.fixture(scope="module")
def fitted(images, teacher):
    return tiny_detector(teacher).fit(images["train"], images["val"])


# -- networks and formulas ----------------------------------------------------------------------
@pytest.mark.parametrize("patch", [17, 33, 65])
def test_a_patch_maps_to_one_descriptor(patch):
    net = PatchNet(patch, 128)
    assert net(torch.zeros(2, 3, patch, patch)).shape == (2, 128)
    assert net.layers[0].weight.shape[0] == 128  # the paper's first layer at width 1
    with pytest.raises(ValueError, match=f"{patch}x{patch}"):
        net(torch.zeros(1, 3, patch + 2, patch + 2))


@pytest.mark.parametrize("patch", sorted(ARCHITECTURES))
def test_dense_output_equals_the_network_on_the_patch_centred_at_each_position(patch):
    torch.manual_seed(patch)
    net = PatchNet(patch, 8, width=0.125).eval()
    image = torch.randn(1, 3, 70, 75)
    with torch.no_grad():
        dense = net.dense(image)
        padded = F.pad(image, (patch // 2, patch // 2) * 2, mode="reflect")
        assert dense.shape == (1, 8, 70, 75)
        for y, x in [(0, 0), (0, 74), (69, 0), (69, 74), (35, 40), (12, 61), (51, 7)]:
            patchwise = net(padded[..., y : y + patch, x : x + patch])[0]  # centred at (y, x) of the image
            torch.testing.assert_close(dense[0, :, y, x], patchwise, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_dilated_max_pool_equals_torch_max_pool(dilation):
    x = torch.randn(2, 3, 30, 27, generator=torch.Generator().manual_seed(dilation))
    torch.testing.assert_close(dilated_max_pool2(x, dilation), F.max_pool2d(x, 2, stride=1, dilation=dilation), rtol=0, atol=0)


def test_compactness_is_the_sum_of_absolute_off_diagonal_correlations_of_dimensions():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=generator)
    descriptors = torch.randn(40, 6, generator=generator) @ mixing  # correlated dimensions, 40 samples
    correlation = np.corrcoef(descriptors.double().numpy(), rowvar=False)  # 6 x 6: dimensions over the batch
    brute = sum(abs(correlation[i, j]) for i in range(6) for j in range(6) if i != j)
    assert compactness_loss(descriptors).item() == pytest.approx(brute, rel=1e-5)
    samples = np.corrcoef(descriptors.double().numpy())  # the wrong one: 40 x 40 correlations of samples
    assert compactness_loss(descriptors).item() != pytest.approx(sum(abs(samples[i, j]) for i in range(40) for j in range(40) if i != j), rel=0.1)
    assert compactness_loss(torch.randn(4000, 3, generator=generator)).item() < 0.2  # independent dimensions: near 0
    with pytest.raises(ValueError, match="batch >= 2"):
        compactness_loss(torch.randn(1, 6))


def test_error_and_variance_follow_the_paper_formulas():
    # M = 2 students, d = 2, one image, 1 x 2 positions
    students = torch.tensor([[[[[1.0, 0.0]], [[2.0, 0.0]]]],
                             [[[[3.0, 0.0]], [[2.0, 2.0]]]]])  # (M, B, d, H, W) = (2, 1, 2, 1, 2)
    teacher = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])  # (B, d, H, W)
    error, variance = student_scores(students, teacher)
    # position 0: mean (2, 2), teacher (0, 0): e = 8; deviations (-1, 0), (1, 0): v = (1 + 1) / 2 = 1
    # position 1: mean (0, 1), teacher (1, 0): e = 2; deviations (0, -1), (0, 1): v = 1
    torch.testing.assert_close(error, torch.tensor([[[8.0, 2.0]]]))
    torch.testing.assert_close(variance, torch.tensor([[[1.0, 1.0]]]))


# -- teacher distillation and files -------------------------------------------------------------
def test_augmented_patches_are_seeded_and_rotated(images):
    from shiftad.backbones import to_tensor_batch
    from shiftad.distill import augmented_patches

    pool = list(to_tensor_batch([read_image(r.path) for r in images["train"][:3]], 64))
    a = augmented_patches(pool, 16, 17, torch.Generator().manual_seed(3))
    b = augmented_patches(pool, 16, 17, torch.Generator().manual_seed(3))
    assert a.shape == (16, 3, 17, 17) and torch.equal(a, b)
    assert not torch.equal(a, augmented_patches(pool, 16, 17, torch.Generator().manual_seed(4)))


def test_distillation_writes_one_teacher_per_patch_size(teacher):
    from safetensors.torch import load_file

    from shiftad.io import read_json

    facts = read_json(teacher / "teacher.json")
    assert facts["patch_sizes"] == [17, 33] and facts["layers"] == ["blocks.5", "blocks.6"]
    assert facts["per_patch_size"]["17"]["target_dim"] == 192 + 320  # Lite0 blocks.5 + blocks.6, pooled
    assert all(set(h) == {"epoch", "distillation", "compactness"} for h in facts["per_patch_size"]["33"]["history"])
    state = load_file(str(teacher / "teacher.safetensors"))
    for patch in (17, 33):
        net = PatchNet(patch, 16, 0.125)
        net.load_state_dict({k[len(f"p{patch}."):]: v for k, v in state.items() if k.startswith(f"p{patch}.")}, strict=True)


def test_distillation_lowers_the_distillation_loss(images, lite0_available):
    if not lite0_available:
        pytest.skip("offline Lite0 weights not installed")
    from shiftad.components.offline_images import skimage_photos
    from shiftad.distill import distill_patch_teachers

    params = validate_params({"uninformed_students": {"scale": "smoke", "architecture": {"smoke": {"image_size": 64, "descriptor_dim": 16}},
                                                      "teacher": {"compactness_weight": 0.0, "smoke": {"patches": 512, "epochs": 4, "batch_size": 32,
                                                                                                       "backbone_input": 32}}}})
    _, facts = distill_patch_teachers(list(skimage_photos().values())[:6], params)
    history = facts["per_patch_size"]["17"]["history"]
    assert history[-1]["distillation"] < 0.95 * history[0]["distillation"]


def test_a_missing_or_mismatched_teacher_is_an_error(images, teacher, tmp_path):
    with pytest.raises(TeacherError, match="distill-teacher --detector uninformed_students"):
        tiny_detector(tmp_path / "nowhere").fit(images["train"], images["val"])
    with pytest.raises(TeacherError, match="rerun"):
        tiny_detector(teacher, descriptor_dim=32).fit(images["train"], images["val"])
    with pytest.raises(TeacherError, match="patch sizes"):
        tiny_detector(teacher, patch_sizes=[65], image_size=96).fit(images["train"], images["val"])


# -- fitting and scoring ------------------------------------------------------------------------
def test_fit_needs_validation_normals_and_normal_images_only(images, teacher):
    with pytest.raises(ValueError, match="validation normal"):
        tiny_detector(teacher).fit(images["train"])
    with pytest.raises(ValueError, match="normal train and validation images only"):
        tiny_detector(teacher).fit(images["train"] + images["defects"][:1], images["val"])
    with pytest.raises(ValueError, match="at least 2 students"):
        tiny_detector(teacher, students=1)


def test_an_obvious_defect_ranks_above_normal_images_with_its_uncertainty_map(images, fitted):
    normals, defects = images["test"][3:], images["defects"]
    scores = fitted.score(normals + defects)
    assert roc_auc_score([0] * len(normals) + [1] * len(defects), scores.image_scores) == 1.0
    assert scores.maps.shape == (6, 96, 96) and scores.extra_maps["uncertainty"].shape == (6, 96, 96)
    # the map is brighter inside the defect square (rows/cols 30..60 of the 96-px image) than outside
    anomalous = scores.maps[3:]
    assert anomalous[:, 35:55, 35:55].mean() > anomalous[:, :20, :20].mean()


def test_scores_are_standardised_with_validation_normals(images, fitted):
    val = fitted._read(images["val"], "val")
    anomaly, uncertainty = fitted.score_maps(val)
    # e~ and v~ each have mean 0 and std 1 over validation normals' pixels, so their sum has mean 0
    assert abs(anomaly.double().mean().item()) < 1e-4 and abs(uncertainty.double().mean().item()) < 1e-4
    assert uncertainty.double().std().item() == pytest.approx(1.0, rel=1e-3)


def test_scores_average_the_patch_sizes(images, teacher):
    detector = tiny_detector(teacher, patch_sizes=[17, 33], epochs=1).fit(images["train"], images["val"])
    batch = detector._read(images["defects"], "test")
    anomaly, uncertainty = detector.score_maps(batch)
    expected_anomaly, expected_uncertainty = torch.zeros_like(anomaly), torch.zeros_like(anomaly)
    for patch in (17, 33):
        e, v = detector.raw_scores(patch, batch)
        s = detector.standardisation_[patch]
        expected_anomaly += ((e - s["e_mean"]) / s["e_std"] + (v - s["v_mean"]) / s["v_std"]) / 2
        expected_uncertainty += (v - s["v_mean"]) / s["v_std"] / 2
    torch.testing.assert_close(anomaly, expected_anomaly)
    torch.testing.assert_close(uncertainty, expected_uncertainty)
    assert len(detector.students_[33]) == 3 and detector.standardisation_[17] != detector.standardisation_[33]


def test_one_seed_twice_gives_identical_weights_and_students_differ(images, teacher, fitted):
    again = tiny_detector(teacher).fit(images["train"], images["val"])
    for a, b in zip(fitted.students_[17], again.students_[17]):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name
    first, second = (s.state_dict()["layers.0.weight"] for s in fitted.students_[17][:2])
    assert not torch.equal(first, second)  # independently initialised
    assert fitted.standardisation_ == again.standardisation_


def test_reusing_the_teachers_outputs_leaves_training_unchanged(images, teacher, monkeypatch):
    """The later students reuse the frozen teacher's outputs (far fewer teacher runs); with no
    room to keep any, every target is computed afresh and the students come out bit for bit the same."""
    import shiftad.detectors.uninformed_students as module

    calls = []
    original = UninformedStudents._teacher_out
    monkeypatch.setattr(UninformedStudents, "_teacher_out", lambda self, *a: calls.append(1) or original(self, *a))
    kept = tiny_detector(teacher).fit(images["train"], images["val"])
    with_cache, calls[:] = len(calls), []
    monkeypatch.setattr(module, "TEACHER_CACHE_BYTES", 0)
    fresh = tiny_detector(teacher).fit(images["train"], images["val"])
    assert len(calls) >= 3 * 2 * len(images["train"]) > with_cache  # students x epochs x images (batch 1): every step ran it
    for a, b in zip(kept.students_[17], fresh.students_[17]):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), name


def test_save_and_load_score_identically(images, fitted, tmp_path):
    fitted.save(tmp_path / "model")
    loaded = UninformedStudents.load(tmp_path / "model")
    a, b = fitted.score(images["defects"]), loaded.score(images["defects"])
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    np.testing.assert_array_equal(a.extra_maps["uncertainty"], b.extra_maps["uncertainty"])
    assert not list((tmp_path / "model").glob("*.pt*")) and (tmp_path / "model" / "uninformed_students.safetensors").is_file()


# -- params -------------------------------------------------------------------------------------
def test_params_check_patch_sizes_students_and_validation():
    with pytest.raises(ParamsError, match="uninformed_students.architecture.smoke: patch size 65 needs image_size >= 93"):
        validate_params({"uninformed_students": {"architecture": {"smoke": {"patch_sizes": [65]}}}})
    with pytest.raises(ParamsError, match="uninformed_students.architecture.smoke.patch_sizes"):
        validate_params({"uninformed_students": {"architecture": {"smoke": {"patch_sizes": [21]}}}})
    with pytest.raises(ParamsError, match="uninformed_students.students"):
        validate_params({"uninformed_students": {"students": 1}})
    with pytest.raises(ParamsError, match="split.ratios.val: uninformed_students"):
        validate_params({"detectors": ["uninformed_students"], "split": {"policy": "ratios", "ratios": {"train": 80, "val": 0, "test": 20}},
                         "dataset": {"source": "csv", "root": "x"}, "categories": ["a"]})
    params = validate_params({"uninformed_students": {"scale": "paper", "training": {"paper": {"epochs": 2}}}})
    assert params.uninformed_students.train.epochs == 2 and params.uninformed_students.train.learning_rate == 1e-4
    assert params.uninformed_students.arch.patch_sizes == [33] and params.uninformed_students.teacher_training.learning_rate == 2e-4


def test_the_teacher_can_distil_from_its_own_backbone_and_a_missing_weights_file_names_the_key(tmp_path):
    from shiftad.backbones import BackboneWeightsError
    from shiftad.distill import distill_patch_teachers

    photo = [np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)]
    own = {"backbone": "resnet18", "layers": ["layer4"], "smoke": {"patches": 64, "epochs": 1, "batch_size": 32}}
    _, facts = distill_patch_teachers(photo, validate_params({"uninformed_students": {"scale": "smoke", "teacher": {**own, "weights": "none"}}}))
    assert facts["backbone"] == "resnet18" and facts["per_patch_size"]["17"]["target_dim"] == 512  # ResNet-18's descriptor, as the paper's
    missing = tmp_path / "resnet18.safetensors"
    with pytest.raises((BackboneWeightsError, ParamsError), match=rf"{missing.name}: backbone weights file not found \(params key uninformed_students\.teacher\.weights\)"):
        distill_patch_teachers(photo, validate_params({"uninformed_students": {"scale": "smoke", "teacher": {**own, "weights": str(missing)}}}))
