"""Shift domains as data: params (domains, refit, scenario templates) and the recipes
(camera change: one shared change per category, a pose without padding; corruptions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from conftest import texture_records, with_defect
from shiftad.errors import ParamsError
from shiftad.params import Params, load_params
from shiftad.shift import (ShiftSettings, _pose, apply_shift, camera_change_drawer, corruption_drawer, covering_zoom, mvtec_shift_drawer,
                           shift_dataset)


def params(**overrides) -> Params:
    return Params.model_validate(overrides)


# ---------------------------------------------------------------------------- params


def test_default_domains_and_the_scenarios_they_expand_to():
    from conftest import REPO

    p = load_params([REPO / "params.yaml"])
    assert p.data_domains == ["clean", "mvtec_shift", "camera_change"] and p.fit_domains == ["clean", "camera_change"]
    # the trained detectors are fitted on clean only (refit.detectors: the 15-minute budget)
    assert p.fit_domains_of("padim") == ["clean", "camera_change"] and p.fit_domains_of("efficientad") == ["clean"]
    assert "camera_change_refit" not in p.scenario_runs("efficientad") and "camera_change_threshold_only" in p.scenario_runs("efficientad")
    assert p.scored_pairs("efficientad") == [("clean", "clean"), ("clean", "mvtec_shift"), ("clean", "camera_change")]
    assert ("camera_change", "clean") in p.scored_pairs("padim")  # the cross-shift matrix's camera_change row
    runs = p.scenario_runs("padim")  # PaDiM: the label-free adaptations, no bank to extend (no fewshot)
    assert list(runs) == ["clean", "mvtec_shift_no_adaptation", "mvtec_shift_threshold_only", "camera_change_no_adaptation",
                          "camera_change_threshold_only", "camera_change_refit",  # mvtec_shift is not fitted: no refit
                          *(f"camera_change_feature_align_k{k}" for k in (0, 2, 8))]  # its AdaBN is one entry away (params.yaml)
    run = runs["camera_change_threshold_only"]
    assert (run.model, run.threshold, run.test, run.domain, run.template) == ("clean", "camera_change", "camera_change", "camera_change",
                                                                              "threshold_only")
    patchcore, knn = p.scenario_runs("patchcore"), p.scenario_runs("knn")
    assert patchcore["camera_change_fewshot_k8"].model_key == "fewshot_k8" and patchcore["camera_change_fewshot_k8"].group == "camera_change_fewshot"
    assert "camera_change_feature_align_k8" in patchcore and "camera_change_adabn_k8" in patchcore
    assert "camera_change_feature_align_k8" not in knn and "camera_change_fewshot_k8" in knn  # label-free: PatchCore and PaDiM (params)
    assert p.scenario_runs("efficientad").keys() == {r for r in runs if "_k" not in r and r != "camera_change_refit"}  # no adaptation
    assert not any(r.domain == "mvtec_shift" and r.k is not None for r in patchcore.values())  # adaptations target camera_change


def test_the_corruption_config_adds_the_published_protocol():
    from conftest import REPO

    p = load_params([REPO / "params.yaml", REPO / "config/corruptions.yaml"])
    corruptions = {d: r.corruption for d, r in p.domains.items() if r.recipe == "corruption"}
    assert corruptions == {"brightness": "brightness", "contrast": "contrast", "defocus_blur": "defocus_blur", "gaussian_noise": "gaussian_noise"}
    assert all(p.domains[d].severity == 3 for d in corruptions) and not set(corruptions) & set(p.fit_domains)
    assert {"brightness_no_adaptation", "gaussian_noise_threshold_only"} <= set(p.scenario_runs("padim"))


def test_a_scenario_naming_its_domains_is_one_row():
    p = params(scenarios={"cross": {"model": "camera_change", "threshold": "camera_change", "test": "mvtec_shift"}})
    assert list(p.scenario_runs()) == ["cross"]
    assert ("camera_change", "mvtec_shift") in p.scored_pairs()


def test_targets_limit_a_template_and_null_drops_a_domain():
    p = load_params_dict({"domains": {"mvtec_shift": None}, "scenarios": {"fewshot": {"targets": None}, "adabn": None}})
    assert "mvtec_shift" not in p.domains and "adabn" not in p.scenarios
    assert {r.test for r in p.scenario_runs().values() if r.model == "fewshot"} == {"camera_change"}
    p = load_params_dict({"scenarios": {"fewshot": {"targets": ["mvtec_shift"]}}})
    assert {r.test for r in p.scenario_runs().values() if r.model == "fewshot"} == {"mvtec_shift"}


def load_params_dict(override: dict) -> Params:
    from shiftad.params import deep_merge
    import yaml
    from conftest import REPO

    return Params.model_validate(deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), override))


@pytest.mark.parametrize("override, message", [
    ({"refit": {"domains": ["nowhere"]}}, "refit.domains"),
    ({"refit": {"domains": ["clean"]}}, "refit.domains"),
    ({"refit": {"detectors": ["nobody"]}}, "refit.detectors"),
    ({"refit": {"domains": ["camera_change", "camera_change"]}}, "refit.domains"),
    ({"fit_domains": ["clean", "camera_change"]}, "fit_domains: replaced by `refit`"),
    ({"domains": {"clean": {"recipe": "mvtec_shift"}}}, "reserved"),
    ({"domains": {"adabn": {"recipe": "mvtec_shift"}}}, "reserved"),
    ({"scenarios": {"feature_align": {"detectors": ["nobody"]}}}, "scenarios.feature_align.detectors"),
    ({"domains": {"fog": {"recipe": "corruption"}}}, "needs `corruption`"),
    ({"robustness": {"corruptions": ["fog"]}}, "robustness.corruptions"),
    ({"robustness": {"corruption_severities": [6]}}, "robustness.corruption_severities"),
    ({"domains": {"blur": {"recipe": "camera_change", "corruption": "contrast"}}}, "is for recipe corruption"),
    ({"scenarios": {"x": {"model": "clean", "threshold": "clean", "test": "elsewhere"}}}, "scenarios.x.test"),
    ({"scenarios": {"x": {"model": "mvtec_shift", "threshold": "clean", "test": "clean"}}}, "needs its domain in refit.domains"),
    ({"scenarios": {"x": {"model": "fewshot", "threshold": "clean", "test": "target"}}}, "threshold and test must be 'target'"),
    ({"scenarios": {"x": {"model": "clean", "threshold": "clean", "test": "target", "targets": ["fog"]}}}, "scenarios.x.targets"),
])
def test_bad_domain_params_name_the_key(override, message):
    with pytest.raises(Exception, match=message):
        load_params_dict(override)


def test_the_cli_refuses_a_domain_it_does_not_fit():
    with pytest.raises(ParamsError, match="refit.domains"):
        Params().check_fit_domain("mvtec_shift")
    narrow = Params(refit={"detectors": ["patchcore"]})
    assert narrow.check_fit_domain("camera_change", "patchcore") == "camera_change"
    with pytest.raises(ParamsError, match="refit.detectors"):
        narrow.check_fit_domain("camera_change", "padim")


def test_params_yaml_holds_the_defaults():
    from conftest import REPO

    p = load_params([REPO / "params.yaml"])
    assert p.domains == Params().domains and p.fit_domains == Params().fit_domains
    assert p.refit.detectors == ["patchcore", "padim", "knn", "routed_ae"] and Params().refit.detectors == list(Params().detectors)
    assert list(p.scenarios) == list(Params().scenarios)  # the same templates; params.yaml limits the adaptations' domains and detectors
    assert {r.domain for r in p.scenario_runs().values() if r.k is not None} == {"camera_change"}


# ---------------------------------------------------------------------------- camera change


@pytest.mark.parametrize("rotation, translate", [(10.0, [5.0, -4.0]), (-16.7, [8.0, 8.0]), (3.0, [0.0, 0.0])])
def test_the_camera_pose_never_samples_outside_the_image(rotation, translate):
    size = (80, 96)
    flat = tv_tensors.Image(torch.full((3, *size), 0.8))
    pose = {"rotation_deg": rotation, "translate_px": translate, "zoom": covering_zoom(rotation, translate, size)}
    out = _pose(flat, pose, is_mask=False)
    assert torch.allclose(out, torch.full_like(out, 0.8), atol=1e-5)  # no fill, no mirrored band anywhere
    unzoomed = _pose(flat, {**pose, "zoom": 1.0}, is_mask=False)
    assert unzoomed.min() < 0.5  # the same pose without the zoom shows the fill: the check can fail


def _records(tmp_path, category: str, n: int = 6, seed: int = 0):
    normals = texture_records(tmp_path / category, n, size=64, seed=seed, category=category)
    anomalous = [with_defect(normals[0], tmp_path / category, (20, 20, 36, 36))]
    return {"train": normals[1:4], "val": normals[4:], "test": [normals[0], *anomalous]}


def test_a_camera_change_is_one_change_per_category_shared_by_every_split(tmp_path):
    settings = ShiftSettings(severity=3)
    records = {"a": _records(tmp_path, "a"), "b": _records(tmp_path, "b", seed=1)}
    camera = shift_dataset(records, camera_change_drawer(settings, 0.2, 0, "camera"), 0, tmp_path / "camera", progress=False,
                           image_seed=lambda i: [0, 7, i])
    mvtec = shift_dataset(records, settings, 0, tmp_path / "mvtec", progress=False)

    def rotations(content, category):
        return np.array([e["shift"]["geometric"]["rotation_deg"] for split in content["categories"][category].values() for e in split])

    for category in ("a", "b"):
        shared, independent = rotations(camera, category), rotations(mvtec, category)
        assert shared.std() < 0.3 * independent.std()  # jitter 0.2 of the same ranges
        assert all("zoom" in e["shift"]["geometric"] and "crop_box" not in e["shift"]["geometric"]
                   for split in camera["categories"][category].values() for e in split)
    assert abs(rotations(camera, "a").mean() - rotations(camera, "b").mean()) > 0.1  # each category its own change
    noise = [e["shift"]["photometric"]["noise_seed"] for e in camera["categories"]["a"]["train"]]
    assert len(set(noise)) == len(noise)  # the noise is each exposure's own
    again = shift_dataset(records, camera_change_drawer(settings, 0.2, 0, "camera"), 0, tmp_path / "again", progress=False,
                          image_seed=lambda i: [0, 7, i])
    draws = lambda content: [e["shift"] for parts in content["categories"].values() for v in parts.values() for e in v]  # noqa: E731
    assert draws(again) == draws(camera)  # one seed, the same draws


def test_jitter_zero_gives_every_image_of_a_category_the_same_change():
    draw = camera_change_drawer(ShiftSettings(severity=3), 0.0, 0, "camera")
    first = draw(np.random.default_rng(1), (64, 64), None, "a")
    second = draw(np.random.default_rng(2), (64, 64), None, "a")
    assert first["geometric"] == second["geometric"]
    assert {k: v for k, v in first["photometric"].items() if k != "noise_seed"} == \
           {k: v for k, v in second["photometric"].items() if k != "noise_seed"}


def test_the_camera_change_keeps_the_defect_under_its_mask(tmp_path):
    records = _records(tmp_path, "a")
    anomalous = records["test"][1]
    from shiftad.data.images import read_image, read_mask

    image, mask = read_image(anomalous.path), read_mask(anomalous.mask_path) > 0
    draw = camera_change_drawer(ShiftSettings(severity=3, families=("geometric",)), 0.2, 0, "camera")
    for seed in range(4):
        drawn = draw(np.random.default_rng(seed), image.shape[:2], mask, "a")
        shifted, shifted_mask = apply_shift(image, mask, drawn)
        magenta = (shifted[..., 0] > 180) & (shifted[..., 1] < 80) & (shifted[..., 2] > 180)
        assert shifted_mask.any()
        assert (magenta & shifted_mask).sum() / max(magenta.sum(), 1) > 0.9


def test_a_corruption_domain_keeps_masks_and_records_its_draw(tmp_path):
    records = {"a": _records(tmp_path, "a")}
    content = shift_dataset(records, corruption_drawer("gaussian_noise", 3), 0, tmp_path / "noise", progress=False)
    entry = content["categories"]["a"]["test"][1]
    assert entry["shift"]["corruption"]["name"] == "gaussian_noise" and entry["shift"]["corruption"]["severity"] == 3
    from shiftad.data.images import read_mask

    assert np.array_equal(read_mask(entry["mask_path"]) > 0, read_mask(records["a"]["test"][1].mask_path) > 0)


def test_mvtec_shift_drawer_is_draw_shift():
    from shiftad.shift import draw_shift

    settings = ShiftSettings()
    assert mvtec_shift_drawer(settings)(np.random.default_rng(3), (64, 64), None, "a") == draw_shift(np.random.default_rng(3), settings, (64, 64))
