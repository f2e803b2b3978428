from pathlib import Path

import pytest
import yaml

from shiftad.errors import ParamsError
from shiftad.params import Params, load_params, validate_params

from conftest import REPO


def test_repository_params_are_valid_and_match_schema_defaults_where_set():
    params = load_params([REPO / "params.yaml"])
    assert params.dataset.source == "synthetic"
    assert params.detectors == ["patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"]
    assert list(params.scenarios) == ["clean", "no_adaptation", "threshold_only", "refit", "fewshot", "feature_align", "adabn"]
    assert params.few_shot.detectors == ["patchcore", "knn"] and params.threshold_rule("knn") == "percentile"
    assert params.scenarios["refit"].model == "target" and params.scenarios["threshold_only"].threshold == "target"
    assert params.fit_domains == ["clean", "camera_change"]


def test_error_names_the_nested_key():
    with pytest.raises(ParamsError, match=r"patchcore\.coreset_ratio"):
        validate_params({"patchcore": {"coreset_ratio": 1.5}})


def test_unknown_key_is_rejected_by_name():
    with pytest.raises(ParamsError, match=r"patchcore\.coreset_ration: unknown key"):
        validate_params({"patchcore": {"coreset_ration": 0.1}})


def test_ratios_must_sum_to_100():
    with pytest.raises(ParamsError, match=r"split\.ratios"):
        validate_params({"split": {"policy": "ratios", "ratios": {"train": 70, "val": 20, "test": 20}}})


def test_folder_source_needs_ratios_policy():
    with pytest.raises(ParamsError, match=r"split\.policy"):
        validate_params({"categories": ["a"], "dataset": {"source": "folder"}})


def test_override_files_merge_key_by_key(tmp_path: Path):
    override = tmp_path / "my.yaml"
    override.write_text(yaml.safe_dump({"patchcore": {"coreset_ratio": 0.01}, "dataset": {"synthetic": {"train_good": 9}}}))
    params = load_params([REPO / "params.yaml", override])
    assert params.patchcore.coreset_ratio == 0.01
    assert params.patchcore.layers == ["blocks.2", "blocks.4"]  # untouched keys keep params.yaml's value
    assert params.dataset.synthetic.train_good == 9
    assert params.dataset.synthetic.image_size == 256
    assert params.categories == ["brick", "gravel", "widget"]


def test_missing_file_and_bad_yaml_name_the_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="nope.yaml"):
        load_params([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ParamsError, match="bad.yaml"):
        load_params([bad])


def test_scenario_domain_must_be_clean_a_shift_domain_or_target():
    with pytest.raises(ParamsError, match=r"scenarios\.x\.test"):
        validate_params({"scenarios": {"x": {"model": "clean", "threshold": "clean", "test": "night"}}})


def test_shift_params_are_checked_by_key():
    with pytest.raises(ParamsError, match=r"shift\.severity"):
        validate_params({"shift": {"severity": 6}})
    with pytest.raises(ParamsError, match=r"shift\.families"):
        validate_params({"shift": {"families": ["geometric", "geometric"]}})
    with pytest.raises(ParamsError, match=r"shift\.families\.0"):
        validate_params({"shift": {"families": ["weather"]}})


def test_defaults_are_complete():
    assert Params().evaluation.threshold.rule == "f1_max"


@pytest.mark.parametrize("categories,match", [(["a", "a"], "repeat"), (["all"], "reserved"), (["../x"], "categories.0"), ([], "categories")])
def test_category_names_are_checked(categories, match):
    with pytest.raises(ParamsError, match=match):
        validate_params({"categories": categories})


def test_folder_source_has_exactly_one_category():
    with pytest.raises(ParamsError, match="exactly one"):
        validate_params({"categories": ["a", "b"], "dataset": {"source": "folder"}, "split": {"policy": "ratios"}})
    assert validate_params({"categories": ["a"], "dataset": {"source": "folder"}, "split": {"policy": "ratios"}}).categories == ["a"]


def test_few_shot_detectors_default_to_the_memory_bank_detectors_listed():
    assert validate_params({"detectors": ["padim", "knn"]}).few_shot.detectors == ["knn"]
    assert validate_params({"detectors": ["padim"]}).few_shot.detectors == []
    with pytest.raises(ParamsError, match=r"few_shot\.detectors: \['knn'\] not in detectors"):
        validate_params({"detectors": ["patchcore"], "few_shot": {"detectors": ["knn"]}})
    assert validate_params({"detectors": ["padim", "knn"]}).few_shot.adaptation_detectors == ["padim", "knn"]


def test_narrowing_detectors_names_every_stage_list_to_narrow_at_once():
    import yaml

    from conftest import REPO
    from shiftad.params import load_params

    override = REPO / "params.yaml"
    with pytest.raises(ParamsError) as error:
        validate_params({**yaml.safe_load(override.read_text()), "detectors": ["patchcore"]})
    message = str(error.value)
    for key in ("few_shot.detectors: ['knn']", "few_shot.adaptation_detectors: ['knn', 'padim']", "refit.detectors: ['padim', 'knn', 'routed_ae']",
                "robustness.detectors: ['padim', 'knn', 'routed_ae']"):
        assert key in message, message
    assert load_params([override]).detectors == ["patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"]


def test_fewshot_scenario_expands_to_one_run_per_k_for_memory_bank_detectors_only():
    params = validate_params({"scenarios": {"clean": {}, "few": {"model": "fewshot", "threshold": "target", "test": "target"}},
                              "domains": {"shift": {"recipe": "mvtec_shift"}}, "refit": {"domains": []}, "few_shot": {"adaptation_k": [4, 0, 2]}})
    runs = params.scenario_runs("knn")
    assert list(runs) == ["clean", "shift_few_k0", "shift_few_k2", "shift_few_k4"]
    assert runs["shift_few_k2"].k == 2 and runs["shift_few_k2"].model_key == "fewshot_k2" and runs["shift_few_k2"].group == "shift_few"
    assert list(params.scenario_runs("padim")) == ["clean"]
    with pytest.raises(ParamsError, match=r"scenarios\.bad: model fewshot"):
        validate_params({"scenarios": {"bad": {"model": "fewshot", "threshold": "clean", "test": "target"}}})


def test_routed_autoencoders_need_validation_normals():
    ratios = {"dataset": {"source": "csv"}, "split": {"policy": "ratios", "ratios": {"train": 85, "val": 0, "test": 15}}}
    with pytest.raises(ParamsError, match="split.ratios.val: routed_ae stops early"):
        validate_params(ratios)
    assert validate_params({**ratios, "detectors": ["patchcore"]}).split.ratios.val == 0  # the others need no val


def test_efficientad_scale_sections_override_key_by_key_and_errors_name_the_key():
    from shiftad.params import EfficientADParams

    from shiftad.params import UninformedStudentsParams

    assert load_params([REPO / "params.yaml"]).efficientad == EfficientADParams()  # params.yaml states the schema defaults
    assert load_params([REPO / "params.yaml"]).uninformed_students == UninformedStudentsParams()
    params = validate_params({"efficientad": {"training": {"cpu": {"steps": 10}}, "teacher": {"paper": {"batch_size": 4}}}})
    assert params.efficientad.scale == "cpu" and params.efficientad.train.steps == 10 and params.efficientad.train.learning_rate == 1e-3
    smoke = validate_params({"efficientad": {"scale": "smoke"}, "uninformed_students": {"scale": "smoke"}})
    assert smoke.efficientad.train.steps == 150 and smoke.uninformed_students.train.epochs == 3  # the tests' scale is kept as it was
    assert params.efficientad.teacher.paper.batch_size == 4 and params.efficientad.teacher.paper.steps == 60000
    paper = validate_params({"efficientad": {"scale": "paper"}}).efficientad
    assert (paper.arch.image_size, paper.arch.channels, paper.train.steps, paper.train.learning_rate) == (256, 384, 70000, 1e-4)
    with pytest.raises(ParamsError, match=r"efficientad\.architecture\.smoke\.image_size"):
        validate_params({"efficientad": {"architecture": {"smoke": {"image_size": 16}}}})
    with pytest.raises(ParamsError, match=r"split\.ratios\.val: efficientad"):
        validate_params({"categories": ["a"], "detectors": ["efficientad"], "dataset": {"source": "folder"},
                         "split": {"policy": "ratios", "ratios": {"train": 80, "val": 0, "test": 20}}})
