"""The synthetic data set: layout, exact masks, determinism, atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad.data import synthetic
from shiftad.data.synthetic import available_categories, defect_types, generate_synthetic, render_sample
from shiftad.errors import DataError
from shiftad.params import SyntheticParams

SIZE = 64
SEED = 7
ALL = ["brick", "gravel", "grass", "widget"]
SMALL = SyntheticParams(image_size=SIZE, train_good=5, test_good=2, test_per_defect=2)


def _generate(root: Path, params: SyntheticParams = SMALL, seed: int = SEED, categories: list[str] = ALL) -> Path:
    generate_synthetic(root, params, seed=seed, categories=categories, progress=False)
    return root


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic") / "set")


def test_at_least_four_categories_with_three_defect_types_each() -> None:
    assert set(ALL) <= set(available_categories())
    for category in available_categories():
        types = defect_types(category)
        assert len(types) >= 3 and len(set(types)) == len(types)
        assert "good" not in types


def test_layout_is_exactly_mvtec(dataset: Path) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == sorted(ALL)
    for category in ALL:
        defects = defect_types(category)
        base = dataset / category
        assert sorted(p.name for p in base.iterdir()) == ["ground_truth", "test", "train"]
        assert [p.name for p in (base / "train").iterdir()] == ["good"]
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *defects])
        assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(defects)
        assert _names(base / "train" / "good") == [f"{i:03d}.png" for i in range(SMALL.train_good)]
        assert _names(base / "test" / "good") == [f"{i:03d}.png" for i in range(SMALL.test_good)]
        for defect in defects:
            assert _names(base / "test" / defect) == [f"{i:03d}.png" for i in range(SMALL.test_per_defect)]
            assert _names(base / "ground_truth" / defect) == [f"{i:03d}_mask.png" for i in range(SMALL.test_per_defect)]
    # Nothing else is left beside the set (the temporary folder was renamed into place).
    assert [p.name for p in dataset.parent.iterdir()] == [dataset.name]


def test_images_are_rgb_and_masks_binary_nonempty(dataset: Path) -> None:
    for image_path in dataset.rglob("*.png"):
        if "ground_truth" in image_path.parts:
            continue
        with Image.open(image_path) as image:
            assert image.mode == "RGB" and image.size == (SIZE, SIZE)
        kind = image_path.parent.name
        if kind == "good":
            continue
        mask_path = image_path.parents[2] / "ground_truth" / kind / f"{image_path.stem}_mask.png"
        with Image.open(mask_path) as mask_image:
            assert mask_image.mode == "L" and mask_image.size == (SIZE, SIZE)
            mask = np.asarray(mask_image)
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask == 255).sum() >= synthetic.MIN_DEFECT_PIXELS


def test_normal_images_are_not_copies(dataset: Path) -> None:
    for category in ALL:
        good = sorted((dataset / category).glob("*/good/*.png"))
        arrays = [_read(p).astype(np.int16) for p in good]
        assert len({a.tobytes() for a in arrays}) == len(arrays)
        # Not near-copies either: every pair differs on average by a few grey levels.
        for i in range(len(arrays)):
            for j in range(i + 1, len(arrays)):
                assert np.abs(arrays[i] - arrays[j]).mean() > 2.0


def test_mask_is_exactly_the_changed_pixels(dataset: Path) -> None:
    """Re-render the defect-free image: the defect changed every mask pixel and nothing else."""
    for category in ALL:
        for defect in defect_types(category):
            for index in range(SMALL.test_per_defect):
                sample = render_sample(category, SIZE, SEED, f"test/{defect}", index)
                on_disk = _read(dataset / category / "test" / defect / f"{index:03d}.png")
                mask = _read(dataset / category / "ground_truth" / defect / f"{index:03d}_mask.png") > 0
                np.testing.assert_array_equal(on_disk, sample.image)
                np.testing.assert_array_equal(mask, sample.mask)
                changed = (sample.image != sample.clean).any(axis=-1)
                np.testing.assert_array_equal(changed, mask)
                change = np.abs(sample.image.astype(np.int16) - sample.clean.astype(np.int16)).max(axis=-1)
                assert change[mask].mean() > 2.0, f"{category}/{defect}/{index}: defect too faint to exist"


@pytest.mark.parametrize("size", [32, 320])
def test_every_defect_renders_at_other_sizes(size: int) -> None:
    for category in ALL:
        for defect in defect_types(category):
            for index in range(3):
                sample = render_sample(category, size, SEED, f"test/{defect}", index)
                assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
                assert sample.mask.sum() >= synthetic.min_defect_pixels(size)


def test_good_samples_have_no_mask_and_match_disk(dataset: Path) -> None:
    sample = render_sample("brick", SIZE, SEED, "test/good", 1)
    assert sample.mask is None
    np.testing.assert_array_equal(sample.image, _read(dataset / "brick" / "test" / "good" / "001.png"))


def test_defects_vary_in_size_and_contrast() -> None:
    """Some defects are subtle and some obvious (areas and contrasts spread widely)."""
    for category in ALL:
        areas, contrasts = [], []
        for defect in defect_types(category):
            for index in range(6):
                sample = render_sample(category, 128, SEED, f"test/{defect}", index)
                change = np.abs(sample.image.astype(np.int16) - sample.clean.astype(np.int16)).max(axis=-1)
                areas.append(sample.mask.mean())
                contrasts.append(change[sample.mask].mean())
        assert min(areas) < 0.01 < max(areas), category
        assert max(areas) / min(areas) > 5, category
        assert max(contrasts) / min(contrasts) > 2.5, category


def test_same_seed_gives_identical_files(dataset: Path, tmp_path: Path) -> None:
    again = _generate(tmp_path / "again")
    assert _hashes(again) == _hashes(dataset)


def test_worker_processes_write_the_same_files(dataset: Path, tmp_path: Path) -> None:
    generate_synthetic(tmp_path / "two", SMALL, seed=SEED, categories=ALL, progress=False, workers=2)
    assert _hashes(tmp_path / "two") == _hashes(dataset)


def test_different_seed_gives_different_files(dataset: Path, tmp_path: Path) -> None:
    other = _hashes(_generate(tmp_path / "other", seed=SEED + 1))
    reference = _hashes(dataset)
    assert other.keys() == reference.keys()
    images = [key for key in reference if "ground_truth" not in key]
    assert all(other[key] != reference[key] for key in images)


def test_categories_and_counts_do_not_reshuffle_other_images(dataset: Path, tmp_path: Path) -> None:
    params = SyntheticParams(image_size=SIZE, train_good=6, test_good=2, test_per_defect=1)
    alone = _hashes(_generate(tmp_path / "alone", params, categories=["widget"]))
    reference = _hashes(dataset)
    shared = [key for key in alone if key in reference]
    assert len(shared) == len(alone) - 1  # all but the extra train/good/005.png
    assert all(alone[key] == reference[key] for key in shared)


def test_unknown_category_names_the_key_and_the_choices(tmp_path: Path) -> None:
    params = SyntheticParams(image_size=SIZE, train_good=5, test_good=2)
    with pytest.raises(DataError) as info:
        generate_synthetic(tmp_path / "set", params, seed=0, categories=["brick", "marble"], progress=False)
    message = str(info.value)
    assert "categories" in message and "marble" in message
    assert all(name in message for name in available_categories())
    assert not (tmp_path / "set").exists()


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = synthetic.render_sample

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


def test_rerun_replaces_an_existing_set(tmp_path: Path) -> None:
    root = tmp_path / "set"
    (root / "stale").mkdir(parents=True)
    params = SyntheticParams(image_size=SIZE, train_good=5, test_good=2, test_per_defect=1)
    _generate(root, params, categories=["gravel"])
    assert sorted(p.name for p in root.iterdir()) == ["gravel"]


def test_progress_bar_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = SyntheticParams(image_size=32, train_good=5, test_good=2, test_per_defect=1)
    generate_synthetic(tmp_path / "quiet", params, seed=0, categories=["widget"], progress=False)
    assert capsys.readouterr().err == ""
    generate_synthetic(tmp_path / "loud", params, seed=0, categories=["widget"], progress=True)
    assert "synthetic data" in capsys.readouterr().err
