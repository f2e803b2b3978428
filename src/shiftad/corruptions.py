"""The published common corruptions (Hendrycks & Dietterich, ICLR 2019), as the
`imagecorruptions` package (1.1.2) computes them: the protocol of ADShift (Cao et al., ICCV
2023) and MVTec-C, which corrupt the MVTec AD test sets at severity 3.

The package itself does not import with this stack (it needs `pkg_resources` and
`scipy.ndimage.interpolation`, both gone), so the corruptions the study uses are written
here with the package's constants and operations; tests/test_corruptions.py runs the
package's own functions (with those two imports stood in for) and checks these against
them pixel for pixel. One difference, on purpose: gaussian_noise draws from a generator
seeded per image (recorded in the domain's JSON), not from numpy's global state, so one seed
gives byte-identical images. Images come as H×W×3 uint8 (the study's loader makes grayscale
images three-channel, as the package's `corrupt` does).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
from skimage import color

SEVERITIES = (1, 2, 3, 4, 5)


def _disk(radius: int, alias_blur: float) -> np.ndarray:
    """The package's anti-aliased disk kernel (normalised, then Gaussian-smoothed)."""
    span = np.arange(-8, 8 + 1) if radius <= 8 else np.arange(-radius, radius + 1)
    ksize = (3, 3) if radius <= 8 else (5, 5)
    xs, ys = np.meshgrid(span, span)
    disk = np.array((xs**2 + ys**2) <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return cv2.GaussianBlur(disk, ksize=ksize, sigmaX=alias_blur)


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.Generator | np.random.RandomState) -> np.ndarray:
    scale = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    x = np.array(x) / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=scale), 0, 1) * 255


def defocus_blur(x: np.ndarray, severity: int, rng=None) -> np.ndarray:
    radius, alias_blur = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    x = np.array(x) / 255.0
    kernel = _disk(radius, alias_blur)
    channels = np.stack([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)], axis=-1)
    return np.clip(channels, 0, 1) * 255


def contrast(x: np.ndarray, severity: int, rng=None) -> np.ndarray:
    factor = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = np.array(x) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * factor + means, 0, 1) * 255


def brightness(x: np.ndarray, severity: int, rng=None) -> np.ndarray:
    shift = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    x = color.rgb2hsv(np.array(x) / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + shift, 0, 1)
    return np.clip(color.hsv2rgb(x), 0, 1) * 255


CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {
    "brightness": brightness,
    "contrast": contrast,
    "defocus_blur": defocus_blur,
    "gaussian_noise": gaussian_noise,
}


def corrupt(image: np.ndarray, name: str, severity: int, noise_seed: int = 0) -> np.ndarray:
    """`name` at `severity` applied to an H×W×3 uint8 image; uint8 back, truncated as the package does."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption '{name}'; one of {sorted(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be one of {SEVERITIES}, got {severity}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"corrupt expects an H×W×3 uint8 image, got {image.dtype} {image.shape}")
    return np.uint8(CORRUPTIONS[name](image, severity, np.random.default_rng(noise_seed)))
