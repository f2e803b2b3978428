"""K-shot curves and few-shot adaptation: seeded draws from train only, exact fast paths,
thresholds from validation images only, bank growth by the added patch count."""

import dataclasses

import numpy as np
import pytest

from shiftad import fewshot, kshot
from shiftad.detectors.knn import FewShotKNN
from shiftad.params import validate_params

from conftest import texture_records, with_defect


class FakeView:
    def __init__(self, parts: dict):
        self.parts = parts

    def get(self, category: str, split: str):
        return self.parts[(category, split)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ks")
    train = texture_records(folder / "train", 6, size=64)
    val = texture_records(folder / "val", 3, size=64, seed=1) + [with_defect(r, folder, (20, 20, 40, 40)) for r in texture_records(folder / "vb", 2, size=64, seed=2)]
    test = texture_records(folder / "test", 3, size=64, seed=3) + [with_defect(r, folder, (10, 10, 30, 30)) for r in texture_records(folder / "tb", 3, size=64, seed=4)]
    return train, val, test


def test_kshot_draws_are_seeded_distinct_and_index_the_train_list():
    a = kshot.kshot_images(40, 8, seed=0, draw=1, category="brick")
    assert np.array_equal(a, kshot.kshot_images(40, 8, seed=0, draw=1, category="brick"))
    assert len(set(a.tolist())) == 8 and a.min() >= 0 and a.max() < 40
    assert not np.array_equal(a, kshot.kshot_images(40, 8, seed=0, draw=2, category="brick"))
    assert not np.array_equal(a, kshot.kshot_images(40, 8, seed=1, draw=1, category="brick"))


@pytest.mark.parametrize("k", [1, 5])
def test_per_image_neighbour_tables_equal_fitting_the_subset(data, k):
    train, val, test = data
    model = FewShotKNN(image_size=64, k=k, image_score="top1pct")
    rows, queries = model.patch_rows(train), model.patch_rows(test)
    tables = kshot.PerImageNeighbours(model, rows, [queries])
    chosen = np.array([1, 4, 5])
    model.fit_rows(rows.take(chosen))
    fast = model.scores_from_neighbours(queries, *tables.neighbours(0, chosen), maps=False).image_scores
    np.testing.assert_allclose(fast, model.score_rows(queries).image_scores, rtol=1e-5)


def run_kshot(monkeypatch, out, train, val, test, detector="knn"):
    params = validate_params({"detectors": ["patchcore", "knn"], "image_size": 64, "categories": ["tex"],
                              "patchcore": {"coreset_ratio": 0.2},
                              "few_shot": {"kshot": [1, 2, 4], "kshot_seeds": 2}})
    monkeypatch.setattr(kshot, "domain_view", lambda domain: FakeView({("tex", "train"): train, ("tex", "val"): val, ("tex", "test"): test}))
    monkeypatch.setattr(kshot, "KSHOT_DIR", out)
    return kshot.run_kshot_stage(params, detector, progress=False)


@pytest.mark.parametrize("detector", ["knn", "patchcore"])
def test_kshot_thresholds_come_from_validation_images_only(monkeypatch, tmp_path, data, detector):
    train, val, test = data
    table = run_kshot(monkeypatch, tmp_path, train, val, test, detector)
    assert list(table["k"]) == [1, 1, 2, 2, 4, 4] and (tmp_path / detector / "tex.csv").is_file()
    assert table["memory_bank_size"].iloc[-1] == (4 * 8 * 8 if detector == "knn" else int(np.ceil(0.2 * 4 * 64)))
    assert set(table["threshold_rule"]) == {"percentile" if detector == "knn" else "f1_max"}
    flipped = [dataclasses.replace(r, label=1 - r.label, defect_type="good" if r.label else "x") for r in test]
    again = run_kshot(monkeypatch, tmp_path, train, val, flipped, detector)
    np.testing.assert_allclose(again["threshold"], table["threshold"])  # test labels never reach the threshold
    np.testing.assert_allclose(again["image_auroc"], 1 - table["image_auroc"], atol=1e-9)


def test_adaptation_images_are_nested_and_seeded(data):
    train, *_ = data
    four = fewshot.adaptation_images(train, 4, seed=0, category="tex")
    assert fewshot.adaptation_images(train, 2, seed=0, category="tex") == four[:2]
    assert set(r.path for r in four) <= set(r.path for r in train)
    with pytest.raises(Exception, match="few_shot.adaptation_k"):
        fewshot.adaptation_images(train, 7, seed=0, category="tex")
