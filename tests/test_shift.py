"""MVTec-Shift synthesis: alignment, ranges, families, determinism, illumination, layout."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from conftest import texture_records, with_defect
from shiftad import shift
from shiftad.shift import ShiftSettings, apply_shift, draw_shift, illumination_gain, sample_shift, shift_dataset
from shiftad.split import shifted_records

SIZE = 96


def texture(size: int = SIZE, seed: int = 0, low: float = 60, high: float = 200) -> np.ndarray:
    """A smooth colour texture with values well inside (low, high): no pixel is 0 or 255."""
    noise = gaussian_filter(np.random.default_rng(seed).normal(size=(size, size, 3)), sigma=(2, 2, 0))
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    return (low + (high - low) * noise).round().astype(np.uint8)


def square_defect(size: int = SIZE, box: tuple[int, int, int, int] = (30, 40, 50, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth mid-grey image with a white square and its mask."""
    ys, xs = np.mgrid[0:size, 0:size]
    grey = 100 + 30 * (xs + ys) / (2 * size)
    image = np.repeat(grey[:, :, None], 3, axis=2).round().astype(np.uint8)
    mask = np.zeros((size, size), dtype=bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    image[mask] = 255
    return image, mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def only(family: str, severity: int = 3, **kwargs) -> ShiftSettings:
    return ShiftSettings(severity=severity, families=(family,), **kwargs)


# ---------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("severity", [3, 5])
def test_defect_moves_with_its_mask(severity):
    image, mask = square_defect()
    rotations = []
    for seed in range(6):
        drawn = draw_shift(np.random.default_rng(seed), only("geometric", severity), (SIZE, SIZE), mask)
        shifted, shifted_mask = apply_shift(image, mask, drawn)
        bright = shifted.mean(axis=2) > (255 + 115) / 2
        assert iou(bright, shifted_mask) > 0.8, drawn
        assert not np.array_equal(shifted_mask, mask)  # it did move
        rotations.append(abs(drawn["geometric"]["rotation_deg"]))
    assert max(rotations) > 3


def test_rotation_and_translation_keep_alignment_at_the_limits():
    image, mask = square_defect()
    drawn = {"size": [SIZE, SIZE], "photometric": None, "illumination": None,
             "geometric": {"rotation_deg": -16.0, "translate_px": [8.0, -8.0], "crop_scale": 0.85, "crop_box": [4, 3, 89, 89]}}
    shifted, shifted_mask = apply_shift(image, mask, drawn)
    assert iou(shifted.mean(axis=2) > 185, shifted_mask) > 0.85


def test_masks_stay_binary_and_image_sized():
    image, mask = square_defect()
    for seed in range(5):
        drawn = draw_shift(np.random.default_rng(seed), ShiftSettings(severity=5), (SIZE, SIZE), mask)
        shifted, shifted_mask = apply_shift(image, mask, drawn)
        assert shifted.shape == image.shape and shifted.dtype == np.uint8
        assert shifted_mask.shape == mask.shape and shifted_mask.dtype == bool


def test_no_constant_corners_after_rotation():
    image = texture()
    drawn = {"size": [SIZE, SIZE], "photometric": None, "illumination": None,
             "geometric": {"rotation_deg": 10.0, "translate_px": [4.8, -4.8], "crop_scale": 1.0, "crop_box": [0, 0, SIZE, SIZE]}}
    draws = [drawn] + [sample_shift(np.random.default_rng(s), only("geometric", 5), (SIZE, SIZE)) for s in range(5)]
    for d in draws:
        shifted, _ = apply_shift(image, None, d)
        for corner in (shifted[:6, :6], shifted[:6, -6:], shifted[-6:, :6], shifted[-6:, -6:]):
            assert corner.min() > 0  # no black fill
            assert np.ptp(corner.reshape(-1, 3), axis=0).max() > 0  # not one constant colour


def test_an_anomaly_pushed_out_of_frame_is_redrawn():
    mask = np.zeros((64, 64), dtype=bool)
    mask[0:3, 0:3] = True  # a corner defect, easily cropped or rotated away
    settings = only("geometric", 5)
    image = texture(64)
    lost_first = 0
    for seed in range(12):
        first = sample_shift(np.random.default_rng(seed), settings, (64, 64))
        lost_first += not apply_shift(image, mask, first)[1].any()
        drawn = draw_shift(np.random.default_rng(seed), settings, (64, 64), mask)
        assert apply_shift(image, mask, drawn)[1].any()
    assert lost_first > 0  # the redraw was exercised


def test_redraw_gives_up_on_the_pose_only(monkeypatch):
    monkeypatch.setattr(shift, "MAX_ATTEMPTS", 1)
    mask = np.zeros((64, 64), dtype=bool)
    mask[0:3, 0:3] = True
    def loses_defect(seed: int) -> bool:
        drawn = sample_shift(np.random.default_rng(seed), only("geometric", 5), (64, 64))
        return not apply_shift(texture(64), mask, drawn)[1].any()

    seed = next(s for s in range(50) if loses_defect(s))
    drawn = draw_shift(np.random.default_rng(seed), ShiftSettings(severity=5), (64, 64), mask)
    assert drawn["geometric"] is None and drawn["photometric"] is not None
    assert np.array_equal(apply_shift(texture(64), mask, drawn)[1], mask)


# ---------------------------------------------------------------------------- ranges


# Documented table (module docstring): base ranges at severity 3 scaled by k = severity / 3;
# illumination strength scales in stops.
STRENGTH = {1: (0.1566, 0.3306), 3: (0.4, 0.7), 5: (0.5732, 0.8656)}
KERNELS = {1: {3}, 3: {3, 5}, 5: {5, 7}}


def draws_at(severity: int, n: int = 300, size: tuple[int, int] = (256, 256)) -> list[dict]:
    settings = ShiftSettings(severity=severity, illumination_probability=1.0)
    return [sample_shift(np.random.default_rng(seed), settings, size) for seed in range(n)]


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_sampled_parameters_stay_in_their_ranges(severity):
    k = severity / 3
    draws = draws_at(severity)
    geometric = [d["geometric"] for d in draws]
    photometric = [d["photometric"] for d in draws]
    light = [d["illumination"] for d in draws]
    rotation = np.array([g["rotation_deg"] for g in geometric])
    translate = np.array([g["translate_px"] for g in geometric]) / 256
    crop = np.array([g["crop_scale"] for g in geometric])
    assert np.abs(rotation).max() <= 10 * k + 1e-3 and np.abs(rotation).max() > 0.9 * 10 * k
    assert np.abs(translate).max() <= 0.05 * k + 1e-4 and np.abs(translate).max() > 0.9 * 0.05 * k
    assert crop.min() >= 1 - 0.1 * k - 1e-4 and crop.max() <= 1 and crop.min() < 1 - 0.09 * k
    for g in geometric:
        top, left, height, width = g["crop_box"]
        assert height == width and 0 <= top <= 256 - height and 0 <= left <= 256 - width
        assert abs(height * width / 256**2 - g["crop_scale"]) < 0.01
    for key in ("brightness", "contrast", "saturation"):
        factors = np.array([p[key] for p in photometric])
        assert np.abs(factors - 1).max() <= 0.3 * k + 1e-4 and np.abs(factors - 1).max() > 0.27 * k
    assert {p["blur_kernel"] for p in photometric} == KERNELS[severity]
    assert all(p["blur_kernel_px"] == p["blur_kernel"] for p in photometric)  # 256 px is the reference
    noise = np.array([p["noise_sigma"] for p in photometric])
    assert noise.min() >= 0.01 * k - 1e-5 and noise.max() <= 0.05 * k + 1e-5
    strength = np.array([i["strength"] for i in light])
    low, high = STRENGTH[severity]
    assert strength.min() >= low - 1e-3 and strength.max() <= high + 1e-3 and strength.max() > high - 0.02
    assert {i["kind"] for i in light} == {"gradient", "spotlight"}
    assert {i["lit_side"] for i in light if i["kind"] == "gradient"} == {"left", "right", "top", "bottom"}


def test_ranges_grow_with_severity():
    spread = {}
    for severity in (1, 3, 5):
        draws = draws_at(severity, n=100)
        spread[severity] = [
            max(abs(d["geometric"]["rotation_deg"]) for d in draws),
            max(abs(t) for d in draws for t in d["geometric"]["translate_px"]),
            max(1 - d["geometric"]["crop_scale"] for d in draws),
            max(abs(d["photometric"]["contrast"] - 1) for d in draws),
            max(d["photometric"]["noise_sigma"] for d in draws),
            max(d["illumination"]["strength"] for d in draws),
        ]
    assert all(a < b < c for a, b, c in zip(spread[1], spread[3], spread[5]))
    # The same seed gives the same direction at every severity, only scaled.
    mild, strong = draws_at(1, n=1)[0], draws_at(5, n=1)[0]
    assert strong["geometric"]["rotation_deg"] == pytest.approx(5 * mild["geometric"]["rotation_deg"], abs=1e-3)


def test_switching_a_family_off_keeps_the_draws_of_the_others():
    every = sample_shift(np.random.default_rng(4), ShiftSettings(), (64, 64))
    assert sample_shift(np.random.default_rng(4), only("geometric"), (64, 64))["geometric"] == every["geometric"]
    assert sample_shift(np.random.default_rng(4), only("photometric"), (64, 64))["photometric"] == every["photometric"]


def test_pixel_scales_follow_the_image_size():
    settings = ShiftSettings(illumination_probability=1.0)
    at = {n: sample_shift(np.random.default_rng(0), settings, (n, n)) for n in (128, 256, 1024)}
    assert [at[n]["illumination"]["sigma_px"] for n in (128, 256, 1024)] == [40.0, 80.0, 320.0]
    narrow = ShiftSettings(illumination_probability=1.0, illumination_sigma_px=40)
    assert sample_shift(np.random.default_rng(0), narrow, (256, 256))["illumination"]["sigma_px"] == 40.0
    blur = at[1024]["photometric"]
    assert blur["blur_sigma_px"] == pytest.approx(4 * at[256]["photometric"]["blur_sigma_px"], abs=1e-3)
    assert blur["blur_kernel_px"] == 4 * (blur["blur_kernel"] - 1) + 1


# ---------------------------------------------------------------------------- families


def test_photometric_alone_keeps_mask_and_geometry():
    image, mask = texture(), np.zeros((SIZE, SIZE), dtype=bool)
    mask[30:50, 40:64] = True
    for seed in range(5):
        drawn = sample_shift(np.random.default_rng(seed), only("photometric", 5), (SIZE, SIZE))
        assert drawn["geometric"] is None and drawn["illumination"] is None
        shifted, shifted_mask = apply_shift(image, mask, drawn)
        assert np.array_equal(shifted_mask, mask)
        # Same geometry: the smoothed images (noise averaged out) still match pixel for pixel.
        for channel in range(3):
            a, b = (gaussian_filter(x[:, :, channel].astype(float), 1.5).ravel() for x in (image, shifted))
            assert np.corrcoef(a, b)[0, 1] > 0.92  # a severity-1 pose change scores about 0.75-0.87
        assert np.abs(shifted.astype(int) - image).mean() > 1  # it did change the colours


def test_illumination_alone_is_a_gain_on_the_same_geometry():
    image, mask = texture(), np.zeros((SIZE, SIZE), dtype=bool)
    mask[30:50, 40:64] = True
    for seed in range(5):
        drawn = sample_shift(np.random.default_rng(seed), only("illumination", illumination_probability=1.0), (SIZE, SIZE))
        shifted, shifted_mask = apply_shift(image, mask, drawn)
        assert np.array_equal(shifted_mask, mask)
        expected = image * illumination_gain(drawn["illumination"], (SIZE, SIZE))[:, :, None]
        assert np.abs(shifted - expected).max() <= 0.5 + 1e-3


def test_geometric_alone_keeps_the_mean_colour():
    image = texture()
    for seed in range(5):
        drawn = sample_shift(np.random.default_rng(seed), only("geometric", 5), (SIZE, SIZE))
        shifted, _ = apply_shift(image, None, drawn)
        assert np.abs(shifted.reshape(-1, 3).mean(axis=0) - image.reshape(-1, 3).mean(axis=0)).max() < 4


def test_apply_is_pure_and_reproduces_a_recorded_draw():
    image, mask = square_defect()
    before = image.copy(), mask.copy()
    drawn = draw_shift(np.random.default_rng(7), ShiftSettings(illumination_probability=1.0), (SIZE, SIZE), mask)
    first = apply_shift(image, mask, drawn)
    second = apply_shift(image, mask, json.loads(json.dumps(drawn)))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert np.array_equal(image, before[0]) and np.array_equal(mask, before[1])
    with pytest.raises(ValueError, match="size"):
        apply_shift(image[:64], None, drawn)


def test_settings_are_validated():
    for bad in ({"severity": 0}, {"severity": 6}, {"severity": 3.5}, {"families": ()}, {"families": ("blur",)},
                {"families": ("geometric", "geometric")}, {"illumination_probability": 1.5}, {"illumination_sigma_px": 0}):
        with pytest.raises(ValueError):
            ShiftSettings(**bad)
    assert ShiftSettings(families=["photometric"]).families == ("photometric",)


# ---------------------------------------------------------------------------- illumination


def test_illumination_share_follows_its_probability():
    def share(p: float) -> float:
        settings = only("illumination", illumination_probability=p)
        draws = [sample_shift(np.random.default_rng(s), settings, (64, 64)) for s in range(200)]
        return np.mean([d["illumination"] is not None for d in draws])

    assert 0.35 <= share(0.5) <= 0.65
    assert share(0.0) == 0 and share(1.0) == 1


def test_illumination_is_smooth():
    flat = np.full((SIZE, SIZE, 3), 128, dtype=np.uint8)
    settings = only("illumination", severity=5, illumination_probability=1.0)
    for seed in range(10):
        drawn = sample_shift(np.random.default_rng(seed), settings, (SIZE, SIZE))
        light = drawn["illumination"]
        shifted = apply_shift(flat, None, drawn)[0].astype(int)
        steepest = 128 * light["strength"] / (light["sigma_px"] * math.sqrt(2 * math.pi))  # levels per pixel
        step = max(np.abs(np.diff(shifted, axis=0)).max(), np.abs(np.diff(shifted, axis=1)).max())
        assert step <= steepest + 1  # + 1: rounding to 8 bits


@pytest.mark.parametrize("sigma", [20.0, 40.0])
def test_illumination_sigma_is_the_transition_width(sigma):
    flat = np.full((4, 256, 3), 200, dtype=np.uint8)
    light = {"kind": "gradient", "strength": 0.5, "sigma_px": sigma, "lit_side": "left", "edge_px": 128.0}
    shifted = apply_shift(flat, None, {"size": [4, 256], "geometric": None, "photometric": None, "illumination": light})[0]
    shadow = (1 - shifted[0, :, 0] / 200) / 0.5  # 0 lit .. 1 in shadow, rising left to right
    x = np.arange(256) + 0.5
    width = np.interp(0.9, shadow, x) - np.interp(0.1, shadow, x)  # shadow rises monotonically
    assert width / 2.5631 == pytest.approx(sigma, rel=0.05)  # 10-90 % of a Gaussian edge: 2.563 sigma
    assert shadow[:10].max() < 0.05 and shadow[-10:].min() > 0.9  # lit on the left


# ---------------------------------------------------------------------------- the data set


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("source")
    normals = texture_records(folder / "good", 6, size=64, seed=3, category="tex")
    (folder / "square").mkdir()
    anomalous = [with_defect(normals[4], folder / "square", (10, 12, 24, 30)),
                 with_defect(normals[5], folder / "square", (40, 40, 56, 52))]
    return {"tex": {"train": normals[:3], "val": [normals[3], anomalous[0]], "test": [normals[4], anomalous[1]]}}


def file_hashes(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def run_in(folder: Path, monkeypatch, records: dict, seed: int) -> tuple[dict, dict]:
    folder.mkdir()
    monkeypatch.chdir(folder)
    content = shift_dataset(records, ShiftSettings(illumination_probability=1.0), seed, Path("shifted"), progress=False)
    return content, file_hashes(folder / "shifted")


def test_one_seed_gives_identical_files_and_json(tmp_path, monkeypatch, records):
    first, first_files = run_in(tmp_path / "a", monkeypatch, records, seed=0)
    second, second_files = run_in(tmp_path / "b", monkeypatch, records, seed=0)
    other, other_files = run_in(tmp_path / "c", monkeypatch, records, seed=1)
    assert first_files == second_files and json.dumps(first) == json.dumps(second)
    assert len(first_files) == 7 + 2  # seven images, two masks
    assert other_files.keys() == first_files.keys()
    assert all(other_files[name] != first_files[name] for name in first_files if "/images/" in name)


def test_layout_records_and_masks_on_disk(tmp_path, monkeypatch, records):
    content, files = run_in(tmp_path / "run", monkeypatch, records, seed=0)
    assert content["seed"] == 0 and content["severity"] == 3
    assert content["families"] == ["geometric", "illumination", "photometric"]
    test = content["categories"]["tex"]["test"]
    normal, anomaly = test
    assert normal["path"] == "shifted/tex/test/images/good_3_004_shifted.png" and normal["mask_path"] is None
    assert anomaly["path"] == "shifted/tex/test/images/square_defect_3_005_shifted.png"
    assert anomaly["mask_path"] == "shifted/tex/test/masks/square_defect_3_005_shifted_mask.png"
    assert anomaly["source_path"] == records["tex"]["test"][1].path and anomaly["label"] == 1
    assert anomaly["defect_type"] == "square" and anomaly["source_split"] == "test"
    assert set(anomaly["shift"]) == {"size", "geometric", "photometric", "illumination"}
    assert [r.path for r in shifted_records(content, "tex", "test")] == [normal["path"], anomaly["path"]]
    assert [len(content["categories"]["tex"][s]) for s in ("train", "val", "test")] == [3, 2, 2]
    for split in content["categories"]["tex"].values():
        for entry in split:
            if entry["mask_path"] is None:
                continue
            image = np.asarray(Image.open(entry["path"]))
            mask = np.asarray(Image.open(entry["mask_path"]))
            assert mask.shape == image.shape[:2] and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}


def test_repeated_names_in_a_split_are_told_apart(tmp_path, records):
    twin_folder = tmp_path / "twin"
    twin = texture_records(twin_folder, 1, size=64, seed=3, category="tex")[0]  # same stem as normals[0]
    same_name = {"tex": {"train": [records["tex"]["train"][0], twin]}}
    content = shift_dataset(same_name, only("photometric"), 0, tmp_path / "out", progress=False)
    paths = [e["path"] for e in content["categories"]["tex"]["train"]]
    assert len(set(paths)) == 2 and all(Path(p).is_file() for p in paths)
    with pytest.raises(ValueError, match="unknown splits"):
        shift_dataset({"tex": {"training": [twin]}}, only("photometric"), 0, tmp_path / "bad", progress=False)
