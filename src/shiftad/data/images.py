"""Reading images and masks under the documented input rules.

Rules (README "Input rules"):
- grayscale images are repeated to three channels; RGBA / LA images drop the alpha channel;
  16-bit images are scaled to 8 bits (value / 257); palette images are converted to RGB.
- masks: any single-channel, 16-bit, palette or RGB(A) image, of the same size as its image;
  every non-zero pixel is defect, as the MVTec evaluation reads them (MVTec 3D-AD exports 253,
  254 and 255; 16-bit masks count any value > 0; RGB and palette masks any colour but black).
  A folder of masks (MVTec LOCO's one PNG per region) is their union. An anomalous image whose
  mask has no defect pixel is kept for image metrics and left out of pixel metrics.
- unreadable, truncated or non-image files are rejected with the file's path.
- when a folder is scanned, hidden files (`.DS_Store`, `._x.png`) and files without an image
  extension (`notes.txt`) are skipped with a warning listing them (`list_image_files`).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from shiftad.errors import DataError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def is_image_name(path: Path) -> bool:
    """An image extension (any case) and not a hidden file such as macOS's `._x.png`."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def warn_ignored(folder: str | Path, ignored: list[Path], why: str) -> None:
    if not ignored:
        return
    shown = [p.relative_to(folder).as_posix() if p.is_relative_to(folder) else str(p) for p in ignored[:8]]
    names = ", ".join(shown) + (f" and {len(ignored) - 8} more" if len(ignored) > 8 else "")
    warnings.warn(f"{folder}: ignored {len(ignored)} {why}: {names}", stacklevel=3)


def list_image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder`, sorted; everything else is skipped with a warning."""
    entries = sorted(Path(folder).iterdir())
    images = [p for p in entries if p.is_file() and is_image_name(p)]
    kept = set(images)
    warn_ignored(folder, [p for p in entries if p not in kept], "entries that are not image files")
    return images


def _open(path: str | Path, what: str) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        image = Image.open(path)
        image.load()  # forces a full decode: truncated files fail here, not later
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read this {what} ({exc.__class__.__name__}: {exc}); "
            "replace it with a valid PNG/JPEG or remove it from the data set"
        ) from None
    return image


def _to_uint8_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        scale = 257.0 if array.max(initial=0) <= 65535 else array.max() / 255.0
        return np.clip(np.round(array / scale), 0, 255).astype(np.uint8)
    if image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return np.clip(np.round(array * (255.0 if array.max(initial=0) <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    return np.asarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Return an H×W×3 uint8 RGB array, applying the documented conversions."""
    return to_rgb_array(_open(path, "image"))


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """A decoded image as H×W×3 uint8 RGB under the documented rules (gray repeated, alpha
    dropped, 16-bit scaled)."""
    if image.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "1", "L", "RGB"):
        rgb = image.convert("RGB")
        return np.asarray(rgb)
    gray = _to_uint8_array(image)
    if gray.ndim == 2:
        return np.repeat(gray[:, :, None], 3, axis=2)
    return gray[:, :, :3]


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after a full decode (so a truncated file is caught)."""
    return _open(path, "image").size


def read_mask(path: str | Path, expected_size: tuple[int, int] | None = None, image_path: str | Path | None = None) -> np.ndarray:
    """Return an H×W bool array (True = defect: any non-zero pixel); `expected_size` is (width, height)."""
    return read_mask_values(path, expected_size, image_path) != 0


def read_mask_values(path: str | Path, expected_size: tuple[int, int] | None = None, image_path: str | Path | None = None) -> np.ndarray:
    """The mask's raw H×W values (0 = background): 16-bit values as stored, a colour mask's
    largest channel, a palette mask's colour (not its index). A folder of masks (MVTec LOCO:
    one PNG per defect region) reads as one mask, their pixel-wise maximum."""
    if Path(path).is_dir():
        regions = list_image_files(path)
        if not regions:
            raise DataError(f"{path}: a mask folder without any mask image; add the region masks or remove the folder")
        merged = read_mask_values(regions[0], expected_size, image_path)
        for region in regions[1:]:
            values = read_mask_values(region, expected_size or merged.shape[::-1], image_path or regions[0])
            merged = np.maximum(merged, values.astype(np.promote_types(merged.dtype, values.dtype)))
        return merged
    image = _open(path, "mask")
    if expected_size is not None and image.size != tuple(expected_size):
        raise DataError(
            f"{path}: mask size {image.size[0]}x{image.size[1]} differs from its image "
            f"{image_path or ''} ({expected_size[0]}x{expected_size[1]}); resize the mask with "
            "nearest-neighbour interpolation to the image size"
        )
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" else "RGB")
    if image.mode in ("LA", "RGBA"):
        image = image.convert("L" if image.mode == "LA" else "RGB")  # alpha is not a defect
    array = np.asarray(image)
    if image.mode == "1":
        array = array.astype(np.uint8)
    return array.max(axis=2) if array.ndim == 3 else array
