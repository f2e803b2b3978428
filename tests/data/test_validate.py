"""validate_records: every input rule, on tiny images written in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.data.validate import validate_records
from shiftad.errors import DataError


def write(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path)
    return path


def rgb(height: int = 16, width: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)


def square_mask(size: tuple[int, int] = (16, 16), value: int = 255) -> np.ndarray:
    array = np.zeros(size, dtype=np.uint8)
    array[4:8, 4:8] = value
    return array


def normal(path: Path, mask: Path | None = None, split: str | None = None) -> ImageRecord:
    return ImageRecord(str(path), "cat", 0, "good", str(mask) if mask else None, split)


def defect(path: Path, mask: Path | None = None, split: str | None = None) -> ImageRecord:
    return ImageRecord(str(path), "cat", 1, "crack", str(mask) if mask else None, split)


@pytest.fixture()
def base(tmp_path) -> list[ImageRecord]:
    """Two normal images and one defect image with its mask: a valid set."""
    return [
        normal(write(tmp_path / "good" / "a.png", rgb())),
        normal(write(tmp_path / "good" / "b.png", rgb())),
        defect(write(tmp_path / "crack" / "c.png", rgb()), write(tmp_path / "masks" / "c.png", square_mask())),
    ]


def test_valid_set_passes(base):
    validate_records(base, progress=False)


def test_gray_rgba_palette_and_16bit_images_are_converted(tmp_path, base):
    gray16 = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    paths = {
        "gray": write(tmp_path / "gray.png", rgb()[:, :, 0]),
        "rgba": write(tmp_path / "rgba.png", np.dstack([rgb(), np.full((16, 16), 7, np.uint8)])),
        "palette": write(tmp_path / "palette.png", rgb(), mode="P"),
        "gray16": write(tmp_path / "gray16.png", gray16),
        "tiff16": write(tmp_path / "gray16.tif", gray16),
        "la": write(tmp_path / "la.png", rgb(), mode="LA"),
        "jpeg": write(tmp_path / "photo.jpg", rgb()),
        "nonsquare": write(tmp_path / "tall.png", rgb(40, 12)[:, :, 0]),
    }
    validate_records(base + [normal(p) for p in paths.values()], progress=False)
    for name, path in paths.items():
        array = read_image(path)
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3, name
    assert read_image(paths["nonsquare"]).shape == (40, 12, 3)
    gray = read_image(paths["gray"])
    assert (gray[:, :, 0] == gray[:, :, 2]).all() and (gray[:, :, 0] == rgb()[:, :, 0]).all()
    assert (read_image(paths["rgba"]) == rgb()).all()  # alpha dropped, colours kept
    assert (read_image(paths["gray16"])[:, :, 0] == np.arange(256).reshape(16, 16)).all()  # value / 257


def test_masks_with_other_binary_values_and_formats_are_accepted(tmp_path, base):
    records = list(base)
    for i, (array, mode) in enumerate([(square_mask(value=1), None), (square_mask(value=254), None), (square_mask(), "RGB")]):
        mask = write(tmp_path / "masks" / f"m{i}.png", array, mode)
        records.append(defect(write(tmp_path / "crack" / f"m{i}.png", rgb()), mask))
        assert read_mask(mask).sum() == 16
    validate_records(records, progress=False)


def test_truncated_image(tmp_path, base):
    full = write(tmp_path / "full.png", rgb(64, 64)).read_bytes()
    truncated = tmp_path / "good" / "truncated.png"
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"truncated.png: cannot read this image"):
        validate_records(base + [normal(truncated)], progress=False)


def test_non_image_file_with_an_image_extension(tmp_path, base):
    fake = tmp_path / "good" / "notes.png"
    fake.write_text("just some text")
    with pytest.raises(DataError, match=r"notes.png: cannot read this image"):
        validate_records(base + [normal(fake)], progress=False)


def test_missing_image_file(tmp_path, base):
    with pytest.raises(DataError, match=r"gone.png: image file not found"):
        validate_records(base + [normal(tmp_path / "gone.png")], progress=False)


def test_mask_size_differs_from_its_image(tmp_path, base):
    image = write(tmp_path / "crack" / "big.png", rgb(20, 16))
    mask = write(tmp_path / "masks" / "big.png", square_mask())
    with pytest.raises(DataError, match=r"masks/big.png: mask size 16x16 differs from its image .*crack/big.png \(16x20\)"):
        validate_records(base + [defect(image, mask)], progress=False)


def test_every_non_zero_mask_pixel_is_defect_and_the_values_are_reported(tmp_path, base, caplog):
    """MVTec 3D-AD exports 253/254/255; soft or anti-aliased masks hold many values; 16-bit masks
    may use 1; palette masks are read by colour; a dark-blue RGB pixel is not background."""
    three_values = square_mask()
    three_values[4:6, 4:8] = 253
    three_values[6, 4:8] = 254
    soft = square_mask(value=128)
    soft[4, 4] = 3
    sixteen = square_mask().astype(np.uint16)
    sixteen[sixteen > 0] = 1  # 1 / 257 rounds to 0 in 8 bits: must still be defect
    palette = Image.fromarray((square_mask() > 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[4:8, 4:8, 2] = 1  # luminance 0.114 rounds to 0: read by its largest channel instead
    records = list(base)
    for name, array in [("three", three_values), ("soft", soft), ("sixteen", sixteen), ("blue", blue)]:
        mask = write(tmp_path / "masks" / f"{name}.png", array)
        records.append(defect(write(tmp_path / "crack" / f"{name}.png", rgb()), mask))
    palette.save(tmp_path / "masks" / "palette.png")
    records.append(defect(write(tmp_path / "crack" / "palette.png", rgb()), tmp_path / "masks" / "palette.png"))
    for record in records[3:]:
        assert read_mask(record.mask_path).sum() == 16, record.mask_path
    with caplog.at_level("INFO", logger="shiftad.data.validate"):
        summary = validate_records(records, progress=False)["cat"]
    assert summary.masks == 6 and {0, 1, 3, 128, 200, 253, 254, 255} <= summary.values
    assert "category 'cat': 6 masks, values {0, 1, 3, 128, 200, 253, 254, 255}" in caplog.text


def test_unreadable_mask(tmp_path, base):
    mask = tmp_path / "masks" / "bad.png"
    mask.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"bad.png: cannot read this mask"):
        validate_records(base + [defect(write(tmp_path / "crack" / "bad.png", rgb()), mask)], progress=False)


def test_defect_image_without_a_mask_where_others_have_one(tmp_path, base):
    lonely = defect(write(tmp_path / "crack" / "lonely.png", rgb()))
    with pytest.raises(DataError, match=r"crack/lonely.png: a defect image without a mask.*category 'cat'"):
        validate_records(base + [lonely], progress=False)


def test_a_category_without_any_mask_is_image_level(tmp_path, base):
    unmasked = [r for r in base if r.label == 0] + [defect(Path(base[2].path))]
    validate_records(unmasked, progress=False)


def test_normal_image_whose_mask_has_defect_pixels(tmp_path, base):
    image = write(tmp_path / "good" / "spotted.png", rgb())
    mask = write(tmp_path / "masks" / "spotted.png", square_mask())
    with pytest.raises(DataError, match=r"masks/spotted.png: the mask of normal image .*good/spotted.png has 16 defect pixels"):
        validate_records(base + [normal(image, mask)], progress=False)


def test_normal_image_with_an_empty_mask_is_fine(tmp_path, base):
    image = write(tmp_path / "good" / "clean.png", rgb())
    mask = write(tmp_path / "masks" / "clean.png", np.zeros((16, 16), np.uint8))
    validate_records(base + [normal(image, mask)], progress=False)


def test_defect_image_with_an_empty_mask_is_kept_and_counted(tmp_path, base, caplog):
    image = write(tmp_path / "crack" / "faint.png", rgb())
    mask = write(tmp_path / "masks" / "faint.png", np.zeros((16, 16), np.uint8))
    with caplog.at_level("WARNING", logger="shiftad.data.validate"):
        summary = validate_records(base + [defect(image, mask)], progress=False)["cat"]
    assert summary.empty_defect_masks == [str(mask)]
    assert summary.to_dict() == {"masks": 2, "values": [0, 255], "defect_images_with_empty_mask": 1}
    assert "1 defect image(s) with an empty mask" in caplog.text and "left out of pixel metrics" in caplog.text


def test_category_without_normal_images(tmp_path, base):
    only_defects = [r for r in base if r.label == 1]
    with pytest.raises(DataError, match=rf"category 'cat' in {tmp_path}/crack: no normal images for training"):
        validate_records(only_defects, progress=False)


def test_mvtec_layout_needs_normal_training_images(tmp_path):
    test_good = normal(write(tmp_path / "cat" / "test" / "good" / "a.png", rgb()), split="test")
    test_defect = defect(write(tmp_path / "cat" / "test" / "crack" / "b.png", rgb()), split="test")
    with pytest.raises(DataError, match=r"category 'cat' in .*cat/test: no normal images for training.*train/good/"):
        validate_records([test_good, test_defect], progress=False)


def test_no_records():
    with pytest.raises(DataError, match="no images found"):
        validate_records([], progress=False)
