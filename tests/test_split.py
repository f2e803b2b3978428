import pytest

from shiftad.data.records import ImageRecord, write_manifest
from shiftad.errors import DataError
from shiftad.params import validate_params
from shiftad.split import make_splits, run_split_stage


def mvtec_records(category="c", train_good=50, test_good=20, defects=("a", "b", "c"), per_defect=10):
    records = [ImageRecord(f"{category}/train/good/{i}.png", category, 0, "good", None, "train") for i in range(train_good)]
    records += [ImageRecord(f"{category}/test/good/{i}.png", category, 0, "good", None, "test") for i in range(test_good)]
    for d in defects:
        records += [ImageRecord(f"{category}/test/{d}/{i}.png", category, 1, d, f"{category}/gt/{d}/{i}_mask.png", "test") for i in range(per_defect)]
    return records


def check_invariants(records, splits):
    by_path = {r.path: r for r in records}
    placed = []
    for category, parts in splits["categories"].items():
        assert not any(by_path[p].is_anomalous for p in parts["train"]), "anomalous image in train"
        for name in ("train", "val", "test"):
            placed += parts[name]
    assert len(placed) == len(set(placed)), "an image is in two splits"
    assert sorted(placed) == sorted(by_path), "not every image is placed"


def test_mvtec_policy_fractions_and_stratification():
    records = mvtec_records() + mvtec_records("d", per_defect=7)
    splits = make_splits(records, validate_params({}))
    check_invariants(records, splits)
    c = splits["categories"]["c"]
    assert len(c["train"]) == 40
    val_anomalies = [p for p in c["val"] if "/test/" in p]
    assert len([p for p in c["val"] if "/train/good/" in p]) == 10
    for defect in ("a", "b", "c"):  # 30% of each defect type
        assert sum(f"/test/{defect}/" in p for p in val_anomalies) == 3
    assert all("/train/" not in p for p in c["test"])
    assert sum("/test/good/" in p for p in c["test"]) == 20


@pytest.mark.parametrize("ratios,expected_val_share", [((70, 15, 15), 0.5), ((70, 20, 10), 2 / 3), ((60, 30, 10), 0.75)])
def test_ratios_policy_sends_anomalies_to_val_and_test_only(ratios, expected_val_share):
    records = [ImageRecord(f"n/{i}.png", "x", 0, "good") for i in range(100)]
    records += [ImageRecord(f"a/{i}.png", "x", 1, "defect") for i in range(60)]
    params = validate_params({"split": {"policy": "ratios", "ratios": dict(zip(("train", "val", "test"), ratios))}})
    splits = make_splits(records, params)
    check_invariants(records, splits)
    parts = splits["categories"]["x"]
    assert len(parts["train"]) == ratios[0]
    anomalies_val = sum(p.startswith("a/") for p in parts["val"])
    anomalies_test = sum(p.startswith("a/") for p in parts["test"])
    assert anomalies_val + anomalies_test == 60
    assert anomalies_val == round(60 * expected_val_share)


def test_same_seed_gives_byte_identical_json_and_other_seed_differs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_manifest("manifest.json", mvtec_records(), source="test")
    run_split_stage(validate_params({"seed": 7}), tmp_path / "manifest.json", tmp_path / "a.json")
    run_split_stage(validate_params({"seed": 7}), tmp_path / "manifest.json", tmp_path / "b.json")
    run_split_stage(validate_params({"seed": 8}), tmp_path / "manifest.json", tmp_path / "c.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.json").read_bytes() != (tmp_path / "c.json").read_bytes()


def test_adding_a_category_does_not_reshuffle_another():
    alone = make_splits(mvtec_records("c"), validate_params({}))
    together = make_splits(mvtec_records("c") + mvtec_records("z"), validate_params({}))
    assert alone["categories"]["c"] == together["categories"]["c"]


def test_mvtec_policy_on_data_without_source_split_is_an_error():
    records = [ImageRecord(f"n/{i}.png", "x", 0, "good") for i in range(10)]
    with pytest.raises(DataError, match="split.policy"):
        make_splits(records, validate_params({}))
