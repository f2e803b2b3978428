"""The score stage saves a detector's auxiliary maps (`Scores.extra_maps`) as `extra_map_<name>`."""

from pathlib import Path

import numpy as np

from conftest import texture_records
from shiftad import score as score_stage
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, Scores
from shiftad.io import load_npz
from shiftad.params import validate_params
from shiftad.paths import scores_file
from shiftad.split import SplitView


class UncertainDetector(Detector):
    """Scores every image by its mean intensity; its map is the image itself, its uncertainty map the map's square."""

    name = "uncertain"
    batch_size = 2  # three images: two batches, so Scores.concat joins the extra maps

    @classmethod
    def from_params(cls, params):
        return cls()

    @classmethod
    def load(cls, folder):
        return cls()

    def fit(self, records, validation=()):
        return self

    def score_images(self, images, category=None):
        maps = np.stack([image.mean(axis=2) / 255.0 for image in images]).astype(np.float32) if images else np.zeros((0, 16, 16), np.float32)
        return Scores(maps.mean(axis=(1, 2)).astype(np.float64), maps, extra_maps={"uncertainty": maps**2})

    def _save_state(self, folder):
        return {}

    def _load_state(self, folder):
        pass


ONE_DOMAIN = {"domains": {"shift": {"recipe": "mvtec_shift"}}, "refit": {"domains": ["shift"]}}


def test_the_score_stage_scores_the_pairs_the_scenarios_and_fitted_domains_name(tmp_path, monkeypatch):
    records = texture_records(tmp_path / "images", 2, size=16, category="c")
    split = {"train": [], "val": [ImageRecord(r.path, "c", 0, "good", None, "val") for r in records],
             "test": [ImageRecord(r.path, "c", 0, "good", None, "test") for r in records]}
    monkeypatch.setattr(score_stage, "domain_view", lambda domain: SplitView({"c": split}))
    monkeypatch.setattr(score_stage, "load_detector", lambda name, folder, params: UncertainDetector())
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["c"], "domains": {"a": {"recipe": "mvtec_shift"}, "b": {"recipe": "corruption", "corruption": "contrast"}},
                              "refit": {"domains": ["a"]}})
    assert params.scored_pairs() == [("clean", "clean"), ("clean", "a"), ("clean", "b"), ("a", "clean"), ("a", "a")]
    score_stage.run_score_stage(params, "padim", "per_class", None, "c", 0, progress=False)
    written = sorted(p.parent.parent.name for p in Path("results/scores").rglob("test/c.npz"))
    assert written == ["a_on_a", "a_on_clean", "clean_on_a", "clean_on_b", "clean_on_clean"]  # no model fitted on b, no a-on-b
    # a detector outside refit.detectors has clean models only: the clean row of the matrix
    narrow = validate_params({**params.model_dump(), "refit": {"domains": ["a"], "detectors": ["knn"]}})
    assert narrow.scored_pairs("padim") == [("clean", "clean"), ("clean", "a"), ("clean", "b")]
    score_stage.run_score_stage(narrow, "padim", "global", None, None, 0, progress=False)
    written = sorted(p.parent.parent.name for p in Path("results/scores/padim/global").rglob("test/c.npz"))
    assert written == ["clean_on_a", "clean_on_b", "clean_on_clean"]


def test_the_score_stage_writes_each_extra_map(tmp_path, monkeypatch):
    records = texture_records(tmp_path / "images", 3, size=16, category="c")
    split = {"train": [], "val": [ImageRecord(r.path, "c", 0, "good", None, "val") for r in records],
             "test": [ImageRecord(r.path, "c", 0, "good", None, "test") for r in records]}
    monkeypatch.setattr(score_stage, "domain_view", lambda domain: SplitView({"c": split}))
    monkeypatch.setattr(score_stage, "load_detector", lambda name, folder, params: UncertainDetector())
    monkeypatch.chdir(tmp_path)
    score_stage.run_score_stage(validate_params({"categories": ["c"], **ONE_DOMAIN}), "uncertain", "per_class", "clean", "c", 0, progress=False)
    saved = load_npz(scores_file("uncertain", "per_class", "clean", "shift", "test", "c", 0))
    assert {"maps", "extra_map_uncertainty"} <= set(saved)
    assert saved["extra_map_uncertainty"].dtype == np.float32 and saved["extra_map_uncertainty"].shape == saved["maps"].shape == (3, 16, 16)
    np.testing.assert_allclose(saved["extra_map_uncertainty"], saved["maps"] ** 2, rtol=1e-6)
    assert list(saved["paths"]) == [r.path for r in records]
    assert Path(scores_file("uncertain", "per_class", "clean", "clean", "val", "c", 0)).is_file()


def test_one_score_job_uses_each_per_class_model_on_its_own_category_and_the_global_model_on_all(tmp_path, monkeypatch):
    records = texture_records(tmp_path / "images", 2, size=16, category="c")
    split = {"train": [], "val": [ImageRecord(r.path, "c", 0, "good", None, "val") for r in records],
             "test": [ImageRecord(r.path, "c", 0, "good", None, "test") for r in records]}
    monkeypatch.setattr(score_stage, "domain_view", lambda domain: SplitView({"c": split, "d": split}))
    loaded = []
    monkeypatch.setattr(score_stage, "load_detector", lambda name, folder, params: loaded.append(Path(folder).name) or UncertainDetector())
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["c", "d"], **ONE_DOMAIN})
    score_stage.run_score_stage(params, "padim", "per_class", "clean", None, 0, progress=False)
    assert loaded == ["c", "d"]  # each category's own model, once
    score_stage.run_score_stage(params, "padim", "global", "shift", None, 0, progress=False)
    assert loaded[2:] == ["all"]  # the global model, loaded once for every category
    for regime, model in (("per_class", "clean"), ("global", "shift")):
        for category in ("c", "d"):
            for data in ("clean", "shift"):
                assert Path(scores_file("padim", regime, model, data, "test", category, 0)).is_file()
