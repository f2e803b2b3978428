"""The fit stage hands a detector its train images and, separately, the normal validation
images of the same categories and domain: never anomalous ones, never test images."""

import pytest
from pathlib import Path

from shiftad import fit as fit_stage
from shiftad.components.feature_store import NetworkClock
from shiftad.data.records import ImageRecord
from shiftad.errors import ParamsError
from shiftad.params import validate_params
from shiftad.split import SplitView


def record(category: str, split: str, i: int, label: int = 0) -> ImageRecord:
    return ImageRecord(f"{category}/{split}/{i}.png", category, label, "good" if label == 0 else "crack", None, split)


@pytest.fixture()
def view(monkeypatch):
    splits = {c: {"train": [record(c, "train", i) for i in range(3)],
                  "val": [record(c, "val", 0), record(c, "val", 1, label=1), record(c, "val", 2)],
                  "test": [record(c, "test", 0), record(c, "test", 1, label=1)]} for c in ("a", "b")}
    views = {"clean": SplitView(splits)}
    monkeypatch.setattr(fit_stage, "domain_view", lambda domain: views[domain])
    return splits


def test_validation_normals_are_the_models_categories_normal_val_images(view):
    params = validate_params({"categories": ["a", "b"]})
    per_class = fit_stage.validation_normals(params, "per_class", "clean", "a")
    assert [r.path for r in per_class] == ["a/val/0.png", "a/val/2.png"]
    pooled = fit_stage.validation_normals(params, "global", "clean", "all")
    assert [r.path for r in pooled] == ["a/val/0.png", "a/val/2.png", "b/val/0.png", "b/val/2.png"]
    assert not any(r.is_anomalous or r.source_split != "val" for r in pooled)


def test_the_fit_stage_passes_train_and_validation_normals_to_the_detector(view, monkeypatch, tmp_path):
    seen = {}

    class Spy:
        progress = False

        def fit(self, records, validation=()):
            seen["train"], seen["validation"] = [r.path for r in records], [r.path for r in validation]
            return self

        def save(self, folder):
            (folder / "meta.json").write_text("{}")

        def clock(self):
            return NetworkClock(None)

    def build(name, params):
        seen["seed"] = params.seed
        return Spy()

    monkeypatch.setattr(fit_stage, "build_detector", build)
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["a", "b"], "seed": 5, "seeds": [0, 11]})
    [target] = fit_stage.run_fit_stage(params, "routed_ae", "per_class", "clean", "b", 11, progress=False)
    assert seen == {"train": ["b/train/0.png", "b/train/1.png", "b/train/2.png"], "validation": ["b/val/0.png", "b/val/2.png"],
                    "seed": 11}  # the detector is built with the training seed, not the data seed
    assert target == Path("results/models/routed_ae/per_class/clean/seed11/b") and (target / "meta.json").is_file()
    with pytest.raises(ParamsError, match=r"seeds: 3 is not one of the training seeds \[0, 11\]"):
        fit_stage.run_fit_stage(params, "routed_ae", "per_class", "clean", "b", 3, progress=False)


def test_one_fit_job_fits_every_model_of_its_regime(view, monkeypatch, tmp_path):
    """fit_jobs: per_regime: without a category the job fits each category's model in turn (each
    on its own images) or the one global model on the pooled images; a wrong category is an error."""
    fitted = []

    class Spy:
        progress = False

        def fit(self, records, validation=()):
            fitted.append(sorted({r.category for r in records}))
            return self

        def save(self, folder):
            (folder / "meta.json").write_text("{}")

        def clock(self):
            return NetworkClock(None)

    monkeypatch.setattr(fit_stage, "build_detector", lambda name, params: Spy())
    monkeypatch.chdir(tmp_path)
    params = validate_params({"categories": ["a", "b"]})
    targets = fit_stage.run_fit_stage(params, "padim", "per_class", "clean", None, 0, progress=False)
    assert targets == [Path("results/models/padim/per_class/clean/seed0/a"), Path("results/models/padim/per_class/clean/seed0/b")]
    assert fitted == [["a"], ["b"]] and all((t / "meta.json").is_file() for t in targets)
    assert fit_stage.run_fit_stage(params, "padim", "global", "clean", None, 0, progress=False) == [Path("results/models/padim/global/clean/seed0/all")]
    assert fitted[-1] == ["a", "b"]
    with pytest.raises(ParamsError, match="category 'c' is not in params categories"):
        fit_stage.run_fit_stage(params, "padim", "per_class", "clean", "c", 0, progress=False)
