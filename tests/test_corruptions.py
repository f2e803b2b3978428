"""shiftad.corruptions against the `imagecorruptions` package (the ADShift / MVTec-C reference).

The package (1.1.2) cannot be imported as it is with this stack: it imports `pkg_resources`
(gone from setuptools) and `scipy.ndimage.interpolation` (gone from scipy). The Makefile
installs it without its dependencies (`pip install --no-deps`: its opencv-python would clash with
the headless OpenCV already here); this test stands in for those two imports and runs the
package's own corruption functions.
"""

from __future__ import annotations

import importlib
import sys
import types

import numpy as np
import pytest

from shiftad.corruptions import CORRUPTIONS, corrupt


@pytest.fixture(scope="module")
def reference():
    import scipy.ndimage

    stand_ins = {"pkg_resources": types.ModuleType("pkg_resources"), "scipy.ndimage.interpolation": scipy.ndimage}
    stand_ins["pkg_resources"].resource_filename = lambda package, name: name  # used by frost only
    saved = {name: sys.modules.get(name) for name in stand_ins}
    sys.modules.update(stand_ins)
    try:
        module = importlib.import_module("imagecorruptions.corruptions")
    except ModuleNotFoundError as exc:
        pytest.fail(f"{exc}: the reference package is missing; `make install` installs it (pip install --no-deps imagecorruptions==1.1.2)")
    finally:
        for name, module_before in saved.items():
            if module_before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module_before
    return module


def _image(seed: int = 0, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(*size, 3)).astype(np.float64)
    # smooth structure plus texture, so blur and contrast have something to act on
    ys, xs = np.mgrid[0 : size[0], 0 : size[1]]
    base = 0.5 * base + 0.5 * 255 * (0.5 + 0.5 * np.sin(xs / 5.0)[..., None] * np.cos(ys / 7.0)[..., None])
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["brightness", "contrast", "defocus_blur"])
@pytest.mark.parametrize("severity", [1, 3, 5])
def test_deterministic_corruptions_match_the_package_pixel_for_pixel(reference, name, severity):
    from PIL import Image

    image = _image(severity)
    expected = np.uint8(getattr(reference, name)(Image.fromarray(image), severity))  # as imagecorruptions.corrupt does
    assert np.array_equal(corrupt(image, name, severity), expected)


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_gaussian_noise_matches_the_package_given_the_same_draws(reference, severity):
    from PIL import Image

    image = _image(10 + severity)
    np.random.seed(123)  # the package draws from numpy's global state
    expected = np.uint8(reference.gaussian_noise(Image.fromarray(image), severity))
    ours = np.uint8(CORRUPTIONS["gaussian_noise"](image, severity, np.random.RandomState(123)))
    assert np.array_equal(ours, expected)


def test_gaussian_noise_is_seeded_per_image():
    image = _image()
    assert np.array_equal(corrupt(image, "gaussian_noise", 3, noise_seed=7), corrupt(image, "gaussian_noise", 3, noise_seed=7))
    assert not np.array_equal(corrupt(image, "gaussian_noise", 3, noise_seed=7), corrupt(image, "gaussian_noise", 3, noise_seed=8))


def test_severity_orders_the_damage():
    image = _image()
    change = [np.abs(corrupt(image, "contrast", s).astype(int) - image).mean() for s in (1, 3, 5)]
    assert change[0] < change[1] < change[2]


@pytest.mark.parametrize("bad, message", [(("fog", 3), "unknown corruption"), (("contrast", 6), "severity")])
def test_bad_names_and_severities_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        corrupt(_image(), *bad)


def test_a_non_rgb_image_is_refused():
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        corrupt(_image()[..., 0], "contrast", 3)
