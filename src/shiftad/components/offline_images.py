"""Images that exist offline, for networks that need images beyond a category's own: the real
photos scikit-image ships and seeded procedural images.

Uses: the EfficientAD teacher's distillation set (with the train images) and its default
penalty pool (ImageNet in the paper; a folder of it, or of Imagenette, where a user has one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from shiftad.errors import ParamsError

# real photographs (micrographs, astronomy, scans included); drawings and binary shapes left out
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "hubble_deep_field",
                  "immunohistochemistry", "moon", "page", "retina", "rocket", "text", "clock", "cell", "microaneurysms")


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float64) / max(float(array.max()), 1e-12) * 255, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def skimage_photos(exclude: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The scikit-image photos as RGB uint8, minus `exclude` (e.g. the categories being fitted:
    the generated brick / gravel / grass categories are cut from the photos of those names)."""
    from skimage import data

    return {name: _rgb(getattr(data, name)()) for name in SKIMAGE_PHOTOS if name not in set(exclude)}


def procedural_images(count: int, size: int, seed: int) -> list[np.ndarray]:
    """Seeded RGB uint8 images: smooth colour fields, oriented gratings and random shapes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    images = []
    for index in range(count):
        kind = index % 3
        if kind == 0:  # smooth colour noise at a random scale
            sigma = rng.uniform(0.01, 0.12) * size
            field = np.stack([ndimage.gaussian_filter(rng.normal(size=(size, size)), sigma) for _ in range(3)], axis=2)
            field = (field - field.min()) / max(np.ptp(field), 1e-12)
        elif kind == 1:  # a grating: two colours along a random direction and frequency
            angle, frequency = rng.uniform(0, np.pi), rng.uniform(2, 24)
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * frequency * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
            a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            field = wave[..., None] * a + (1 - wave[..., None]) * b
        else:  # random rectangles and discs on a flat background
            field = np.ones((size, size, 3)) * rng.uniform(0, 1, 3)
            for _ in range(int(rng.integers(4, 16))):
                cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.25)
                shape = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2 if rng.random() < 0.5 else (abs(yy - cy) < r) & (abs(xx - cx) < r * rng.uniform(0.3, 2))
                field[shape] = rng.uniform(0, 1, 3)
        noise = rng.normal(0, 0.02, field.shape)
        images.append((np.clip(field + noise, 0, 1) * 255).astype(np.uint8))
    return images


def folder_image_files(folder: str | Path, param_key: str) -> list[Path]:
    """Every image file under `folder` (recursively: ImageNet / Imagenette class folders); read on demand."""
    from shiftad.data.images import is_image_name

    root = Path(folder)
    if not root.is_dir():
        raise ParamsError(f"{param_key}: '{folder}' is not a folder; point it at a folder of images (ImageNet, Imagenette) or use 'default'")
    files = sorted(p for p in root.rglob("*") if p.is_file() and is_image_name(p))
    if not files:
        raise ParamsError(f"{param_key}: '{folder}' holds no images (.png, .jpg, ...); point it at a folder of images or use 'default'")
    return files
