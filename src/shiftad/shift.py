"""MVTec-Shift: a shifted copy of every image of every category and split.

Each image gets its own random acquisition change, drawn once (`sample_shift`, a
JSON-serialisable dict) and applied by a pure function (`apply_shift`), so a recorded draw
reproduces its image exactly. Three families, switched on in any non-empty combination:

- **geometric** (image and mask together; a change of pose): rotation about the centre,
  translation, then a random resized crop (aspect ratio kept, resized back to the input
  size). The image is resampled bilinearly, the mask by nearest neighbour so it stays
  binary. Before the rotation/translation both are reflect-padded and afterwards cropped
  back, so no constant-filled corner appears (on a texture a filled corner reads as a
  defect). The price is a mirrored band, at most as wide as the translation plus the
  rotated corner's reach, along the edges the content moved away from (on a plain
  background it is invisible). The mask is reflected too, so a defect mirrored into view
  stays labelled. If a
  draw pushes every defect pixel of an anomalous image out of the frame, the whole shift is
  redrawn (`draw_shift`, at most `MAX_ATTEMPTS` times; after that the pose is left
  unchanged), so an anomalous image always keeps a non-empty mask.
- **illumination** (image only; uneven lighting), on a share `illumination_probability` of
  the images: a multiplicative gain field going from ``1 - strength`` (in shadow) to 1
  (fully lit). The lit/shadow boundary is a hard edge blurred by a Gaussian of
  ``illumination_sigma_px``: the gain is ``1 - strength * Phi(-d / sigma)`` with ``d`` the
  signed distance to the boundary (positive on the lit side) and ``Phi`` the normal CDF,
  which is exactly a Gaussian-blurred step. Two kinds, equally likely: a *gradient* (a
  straight boundary 30-70 % of the way across, lit from the left, right, top or bottom;
  with sigma = 80 px at 256 px it reads as a gradient over the whole image) and a
  *spotlight* (a disc of radius 25-50 % of the shorter side around a random centre, the
  same profile taken along the radius). The field only darkens, so nothing clips.
- **photometric** (image only; camera and exposure): brightness, contrast and saturation
  factors, then a Gaussian blur, then additive Gaussian noise on [0, 1] intensities
  (independent per pixel and channel, from a recorded seed).

Order: geometric, illumination, photometric: the pose and the lighting belong to the scene,
the colour response, blur and noise to the camera that records it.

Pixel scales are defined at a 256 px reference and scaled with the image's shorter side
(`REFERENCE_SIZE`): "sigma = 80 px" and "blur kernel 3 or 5" hold at 256 px, and a 1024 px
MVTec original gets 4x that, so the shift survives the resize to the model input. The
draw stores what is applied at the image's own size (``sigma_px``, ``blur_kernel_px``).
Noise is per pixel at the image's own resolution (a resize to a smaller model input
averages part of it away).

Severity 1-5 scales every range with k = severity / 3 (level 3 = the base ranges):

=================  ===============  ==============  ==============  ==============  ==============
parameter          1                2               3 (base)        4               5
=================  ===============  ==============  ==============  ==============  ==============
rotation           +-3.33 deg       +-6.67 deg      +-10 deg        +-13.3 deg      +-16.7 deg
translation        +-1.67 %         +-3.33 %        +-5 %           +-6.67 %        +-8.33 %
crop scale (area)  [0.967, 1]       [0.933, 1]      [0.9, 1]        [0.867, 1]      [0.833, 1]
colour factors     [0.9, 1.1]       [0.8, 1.2]      [0.7, 1.3]      [0.6, 1.4]      [0.5, 1.5]
blur kernel        3                3               3 or 5          5 or 7          5 or 7
noise sigma        [0.0033, 0.017]  [0.0067, 0.033] [0.01, 0.05]    [0.013, 0.067]  [0.017, 0.083]
illum. strength    [0.157, 0.331]   [0.289, 0.552]  [0.4, 0.7]      [0.494, 0.799]  [0.573, 0.866]
=================  ===============  ==============  ==============  ==============  ==============

Translation is a fraction of the image size per axis; colour factors apply to brightness,
contrast and saturation each. Blur kernels are at the 256 px reference; sigma follows the
kernel (OpenCV's rule, ``0.3 * ((kernel - 1) / 2 - 1) + 0.8``: 0.8, 1.1, 1.4 px at 256 px;
at 64 px a kernel 3 shrinks to no blur). Illumination strength scales in
exposure stops rather than linearly (a linear x5/3 would give a negative gain): the darkest
gain is ``(1 - strength_3) ** k``. The illumination probability and sigma do not change
with severity.

Every draw takes uniform variables in a fixed order from one generator per family (spawned
from the image's generator) and maps them onto the ranges above: an image gets the same
shift "direction" at every severity (only scaled; the blur kernel choice and redraws
aside), and switching a family off leaves the
draws of the others unchanged.

Output (`shift_dataset`): ``out_root/<cat>/<split>/images/<defect>_<stem>_shifted.png`` and
``out_root/<cat>/<split>/masks/<defect>_<stem>_shifted_mask.png`` (uint8 0/255), written into
a temporary folder that replaces `out_root` at the end. Image ``i`` of the whole set
(categories sorted, splits in train/val/test order, records in the given order) draws from
``np.random.default_rng(seed + i)``: one seed gives byte-identical files.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from scipy.special import ndtr
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from shiftad.corruptions import corrupt
from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.io import atomic_dir
from shiftad.errors import ParamsError
from shiftad.params import Params

FAMILIES = ("geometric", "photometric", "illumination")
SPLITS = ("train", "val", "test")
SEVERITIES = (1, 2, 3, 4, 5)
REFERENCE_SIZE = 256  # pixel scales (illumination sigma, blur) are defined at this size

# Base ranges (severity 3); see the table in the module docstring for the other levels.
MAX_ROTATION_DEG = 10.0
MAX_TRANSLATION = 0.05  # of the image size, per axis
MAX_CROP_LOSS = 0.1  # crop area scale drawn in [1 - 0.1, 1]
MAX_COLOUR_CHANGE = 0.3  # brightness / contrast / saturation factors in [0.7, 1.3]
NOISE_SIGMA = (0.01, 0.05)  # on [0, 1] intensities
ILLUMINATION_STRENGTH = (0.4, 0.7)
BLUR_KERNELS = {1: (3,), 2: (3,), 3: (3, 5), 4: (5, 7), 5: (5, 7)}  # at the reference size

# Where the illumination boundary lies (fixed shapes, not scaled by severity).
GRADIENT_EDGE = (0.3, 0.7)  # boundary position, fraction of the axis from the left / top
SPOT_CENTRE = (0.2, 0.8)  # spotlight centre, fraction of width and height
SPOT_RADIUS = (0.25, 0.5)  # spotlight radius, fraction of the shorter side
LIT_SIDES = ("left", "right", "top", "bottom")

MAX_ATTEMPTS = 20  # redraws when a pose would push the whole defect out of the frame


@dataclass(frozen=True)
class ShiftSettings:
    severity: int = 3
    families: tuple[str, ...] = FAMILIES
    illumination_probability: float = 0.5
    illumination_sigma_px: float = 80.0  # at REFERENCE_SIZE; scaled with the shorter side

    def __post_init__(self) -> None:
        if not isinstance(self.severity, int) or isinstance(self.severity, bool) or self.severity not in SEVERITIES:
            raise ValueError(f"shift severity must be one of {SEVERITIES}, got {self.severity}")
        families = tuple(self.families)
        unknown = sorted(set(families) - set(FAMILIES))
        if not families or unknown or len(set(families)) != len(families):
            raise ValueError(f"shift families must be a non-empty subset of {FAMILIES} without repeats, got {families}")
        object.__setattr__(self, "families", families)  # a list from YAML becomes a tuple
        if not 0.0 <= self.illumination_probability <= 1.0:
            raise ValueError(f"illumination probability must be in [0, 1], got {self.illumination_probability}")
        if self.illumination_sigma_px <= 0:
            raise ValueError(f"illumination sigma must be > 0 px, got {self.illumination_sigma_px}")


# ---------------------------------------------------------------------------- drawing


def _r(value: float, digits: int = 4) -> float:
    """Short, JSON-friendly numbers; the rounded value is the one applied."""
    return round(float(value), digits)


def _size_scale(size: tuple[int, int]) -> float:
    return min(size) / REFERENCE_SIZE


def _sample_geometric(rng: np.random.Generator, k: float, size: tuple[int, int]) -> dict[str, Any]:
    height, width = size
    angle = rng.uniform(-1, 1) * MAX_ROTATION_DEG * k
    shift_x, shift_y = rng.uniform(-1, 1, size=2) * MAX_TRANSLATION * k
    crop_scale = _r(1 - rng.uniform(0, 1) * MAX_CROP_LOSS * k)
    crop_height = round(height * math.sqrt(crop_scale))  # same side fraction: aspect ratio kept
    crop_width = round(width * math.sqrt(crop_scale))
    at_y, at_x = rng.uniform(0, 1, size=2)
    return {
        "rotation_deg": _r(angle),
        "translate_px": [_r(shift_x * width, 2), _r(shift_y * height, 2)],
        "crop_scale": crop_scale,
        "crop_box": [round(at_y * (height - crop_height)), round(at_x * (width - crop_width)), crop_height, crop_width],
    }


def _blur_at_size(kernel: int, size: tuple[int, int]) -> tuple[int, float]:
    """Kernel and sigma at this image size for a kernel defined at the reference size."""
    sigma = 0.3 * ((kernel - 1) / 2 - 1) + 0.8  # OpenCV's rule, as torchvision's default
    scale = _size_scale(size)
    return 2 * int((kernel - 1) / 2 * scale + 0.5) + 1, sigma * scale


def _sample_photometric(rng: np.random.Generator, severity: int, size: tuple[int, int]) -> dict[str, Any]:
    k = severity / 3
    brightness, contrast, saturation = 1 + rng.uniform(-1, 1, size=3) * MAX_COLOUR_CHANGE * k
    kernels = BLUR_KERNELS[severity]
    kernel = kernels[min(int(rng.uniform(0, 1) * len(kernels)), len(kernels) - 1)]
    kernel_px, sigma_px = _blur_at_size(kernel, size)
    noise = (NOISE_SIGMA[0] + rng.uniform(0, 1) * (NOISE_SIGMA[1] - NOISE_SIGMA[0])) * k
    return {
        "brightness": _r(brightness),
        "contrast": _r(contrast),
        "saturation": _r(saturation),
        "blur_kernel": kernel,
        "blur_kernel_px": kernel_px,
        "blur_sigma_px": _r(sigma_px),
        "noise_sigma": _r(noise, 5),
        "noise_seed": int(rng.integers(2**31)),
    }


def _sample_illumination(rng: np.random.Generator, settings: ShiftSettings, size: tuple[int, int]) -> dict[str, Any] | None:
    height, width = size
    # Every variable is drawn whether used or not, so the stream never depends on the outcome.
    applied = rng.uniform(0, 1) < settings.illumination_probability
    spotlight = rng.uniform(0, 1) < 0.5
    base = ILLUMINATION_STRENGTH[0] + rng.uniform(0, 1) * (ILLUMINATION_STRENGTH[1] - ILLUMINATION_STRENGTH[0])
    strength = 1 - (1 - base) ** (settings.severity / 3)  # scales in stops: gain stays > 0
    side = LIT_SIDES[min(int(rng.uniform(0, 1) * 4), 3)]
    edge = rng.uniform(*GRADIENT_EDGE)
    centre_x, centre_y = rng.uniform(*SPOT_CENTRE, size=2)
    radius = rng.uniform(*SPOT_RADIUS)
    if not applied:
        return None
    common = {"strength": _r(strength), "sigma_px": _r(settings.illumination_sigma_px * _size_scale(size), 3)}
    if spotlight:
        return {"kind": "spotlight", **common, "centre_px": [_r(centre_x * width, 2), _r(centre_y * height, 2)],
                "radius_px": _r(radius * min(size), 2)}
    axis_length = width if side in ("left", "right") else height
    return {"kind": "gradient", **common, "lit_side": side, "edge_px": _r(edge * axis_length, 2)}


def sample_shift(rng: np.random.Generator, settings: ShiftSettings, size: tuple[int, int]) -> dict[str, Any]:
    """Draw one image's shift for an image of `size` (height, width).

    Returns {"size": [h, w], "geometric": {...}, "photometric": {...}, "illumination": {...}};
    a family that is switched off, or illumination not drawn for this image, is None.
    """
    height, width = (int(v) for v in size)
    size = (height, width)
    geometric_rng, photometric_rng, illumination_rng = rng.spawn(3)  # one stream per family
    families = settings.families
    return {
        "size": [height, width],
        "geometric": _sample_geometric(geometric_rng, settings.severity / 3, size) if "geometric" in families else None,
        "photometric": _sample_photometric(photometric_rng, settings.severity, size) if "photometric" in families else None,
        "illumination": _sample_illumination(illumination_rng, settings, size) if "illumination" in families else None,
    }


def draw_shift(rng: np.random.Generator, settings: ShiftSettings, size: tuple[int, int],
               mask: np.ndarray | None = None) -> dict[str, Any]:
    """`sample_shift`, redrawn while the pose would push every defect pixel of `mask` out of view."""
    for _ in range(MAX_ATTEMPTS):
        drawn = sample_shift(rng, settings, size)
        if _keeps_defect(mask, drawn):
            return drawn
    drawn["geometric"] = None  # last resort: keep the pose, so the defect stays in view
    return drawn


def _keeps_defect(mask: np.ndarray | None, drawn: dict[str, Any]) -> bool:
    if mask is None or not mask.any() or drawn["geometric"] is None:
        return True
    return bool(_warp(_mask_tensor(mask), drawn["geometric"]).any())


# ---------------------------------------------------------------------------- applying


def _image_tensor(image: np.ndarray) -> tv_tensors.Image:
    return tv_tensors.Image(torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).permute(2, 0, 1))


def _mask_tensor(mask: np.ndarray) -> tv_tensors.Mask:
    return tv_tensors.Mask(torch.from_numpy(np.array(mask, dtype=np.uint8))[None])


def _reflect_margin(geometric: dict[str, Any], height: int, width: int) -> int:
    """Padding that keeps every source pixel of the cropped output inside the padded image."""
    angle = math.radians(geometric["rotation_deg"])
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    reach_x = width / 2 + abs(geometric["translate_px"][0])
    reach_y = height / 2 + abs(geometric["translate_px"][1])
    need_x = reach_x * cos + reach_y * sin - width / 2
    need_y = reach_x * sin + reach_y * cos - height / 2
    margin = math.ceil(max(need_x, need_y, 0)) + 2  # + 2: the bilinear footprint and rounding
    return min(margin, min(height, width) - 1)  # reflect padding must stay below the size


def covering_zoom(rotation_deg: float, translate_px: list[float], size: tuple[int, int]) -> float:
    """The least zoom at which a rotated and translated frame samples only pixels inside the
    image (one pixel kept clear for the bilinear footprint): no padding, no mirrored band."""
    height, width = size
    angle = math.radians(rotation_deg)
    cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
    reach_x, reach_y = width / 2 + abs(translate_px[0]), height / 2 + abs(translate_px[1])
    return max((reach_x * cos + reach_y * sin) / (width / 2 - 1), (reach_x * sin + reach_y * cos) / (height / 2 - 1), 1.0)


def _pose(x: torch.Tensor, geometric: dict[str, Any], is_mask: bool) -> torch.Tensor:
    """The camera-change pose: rotate, translate and zoom about the centre, the zoom large
    enough that every output pixel comes from inside the image (`covering_zoom`)."""
    return F.affine(x, angle=geometric["rotation_deg"], translate=list(geometric["translate_px"]), scale=geometric["zoom"],
                    shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST if is_mask else InterpolationMode.BILINEAR)


def _warp(x: torch.Tensor, geometric: dict[str, Any]) -> torch.Tensor:
    """Rotate, translate, crop and resize back; an Image is resampled bilinearly, a Mask by nearest."""
    is_mask = isinstance(x, tv_tensors.Mask)
    if "zoom" in geometric:
        return _pose(x, geometric, is_mask)
    height, width = x.shape[-2:]
    margin = _reflect_margin(geometric, height, width)
    x = F.pad(x, [margin], padding_mode="reflect")
    # Padding is symmetric, so the default centre (the padded image's) is the original centre.
    x = F.affine(x, angle=geometric["rotation_deg"], translate=list(geometric["translate_px"]), scale=1.0,
                 shear=[0.0, 0.0], interpolation=InterpolationMode.NEAREST if is_mask else InterpolationMode.BILINEAR)
    top, left, crop_height, crop_width = geometric["crop_box"]
    x = F.crop(x, top + margin, left + margin, crop_height, crop_width)
    # NEAREST_EXACT samples pixel centres as bilinear does; plain NEAREST would shift the mask
    # by up to a pixel against the image.
    resample = InterpolationMode.NEAREST_EXACT if is_mask else InterpolationMode.BILINEAR
    return F.resize(x, [height, width], interpolation=resample, antialias=True)


def illumination_gain(illumination: dict[str, Any], size: tuple[int, int]) -> np.ndarray:
    """The H×W gain field: 1 - strength * Phi(-d / sigma), d = signed distance to the lit region."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5  # pixel centres
    if illumination["kind"] == "spotlight":
        centre_x, centre_y = illumination["centre_px"]
        distance = illumination["radius_px"] - np.hypot(xs - centre_x, ys - centre_y)
    else:
        edge, side = illumination["edge_px"], illumination["lit_side"]
        coordinate = xs if side in ("left", "right") else ys
        distance = edge - coordinate if side in ("left", "top") else coordinate - edge
    shadow = ndtr(-distance / illumination["sigma_px"])  # a step blurred by a Gaussian of sigma
    return (1.0 - illumination["strength"] * shadow).astype(np.float32)


def _photometric(x: torch.Tensor, photometric: dict[str, Any]) -> torch.Tensor:
    x = F.adjust_brightness(x, photometric["brightness"])
    x = F.adjust_contrast(x, photometric["contrast"])
    x = F.adjust_saturation(x, photometric["saturation"])
    kernel = photometric["blur_kernel_px"]
    if kernel > 1:  # a small image may need no blur at all at its scale
        x = F.gaussian_blur(x, [kernel, kernel], [photometric["blur_sigma_px"]] * 2)
    noise = np.random.default_rng(photometric["noise_seed"]).normal(0.0, photometric["noise_sigma"], size=tuple(x.shape))
    return (x + torch.from_numpy(noise.astype(np.float32))).clamp(0.0, 1.0)


def apply_shift(image: np.ndarray, mask: np.ndarray | None, drawn: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply a drawn shift to an H×W×3 uint8 image and its H×W mask; a pure function of its inputs."""
    size = tuple(drawn["size"])
    if image.shape != (*size, 3) or (mask is not None and mask.shape != size):
        shape = "" if mask is None else f" / mask {mask.shape}"
        raise ValueError(f"shift drawn for size {size}, got image {image.shape}{shape}")
    if drawn.get("corruption"):
        c = drawn["corruption"]
        return corrupt(image, c["name"], c["severity"], c["noise_seed"]), None if mask is None else mask > 0
    x = _image_tensor(image)
    m = None if mask is None else _mask_tensor(mask)
    if drawn["geometric"]:
        x = _warp(x, drawn["geometric"])
        m = None if m is None else _warp(m, drawn["geometric"])
    if drawn["illumination"]:
        x = x * torch.from_numpy(illumination_gain(drawn["illumination"], size))
    if drawn["photometric"]:
        x = _photometric(x, drawn["photometric"])
    shifted = (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(shifted), None if m is None else m[0].numpy() > 0


# ---------------------------------------------------------------------------- the data set


def _output_stems(records: list[ImageRecord]) -> list[str]:
    """`<defect>_<stem>` per record; names that repeat in a split get a hash of their source path."""
    stems = [f"{r.defect_type}_{Path(r.path).stem}" for r in records]
    counts = Counter(stems)
    paths = Counter(r.path for r in records)
    repeated = [p for p, n in paths.items() if n > 1]
    if repeated:
        raise ValueError(f"images listed twice in one split: {repeated[:3]}")
    return [s if counts[s] == 1 else f"{s}_{zlib.crc32(r.path.encode('utf-8')):08x}" for s, r in zip(stems, records)]


def _jobs(records_by_split: dict[str, dict[str, list[ImageRecord]]]) -> list[tuple[str, str, ImageRecord, str]]:
    """(category, split, record, output stem) in the fixed order that numbers the images."""
    jobs = []
    for category in sorted(records_by_split):
        splits = records_by_split[category]
        unknown = sorted(set(splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"category '{category}': unknown splits {unknown}; expected some of {SPLITS}")
        for split in (s for s in SPLITS if s in splits):
            records = list(splits[split])
            jobs += [(category, split, r, stem) for r, stem in zip(records, _output_stems(records))]
    return jobs


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


# A domain recipe's per-image draw: (record's generator, image size, defect mask or None,
# category, image index) -> the drawn dict `apply_shift` applies.
Drawer = Callable[[np.random.Generator, tuple[int, int], "np.ndarray | None", str], dict[str, Any]]


def mvtec_shift_drawer(settings: ShiftSettings) -> Drawer:
    """MVTec-Shift: an independent change per image (`draw_shift`)."""
    return lambda rng, size, mask, category: draw_shift(rng, settings, size, mask)


def _blend(shared: Any, own: Any, jitter: float) -> Any:
    """`shared` moved `jitter` of the way toward `own`, for the continuous settings (floats and
    lists of them) the two draws share; integers, names and seeds stay shared."""
    if isinstance(shared, dict) and isinstance(own, dict) and shared.get("kind") == own.get("kind"):
        return {k: _blend(v, own.get(k), jitter) if k in own else v for k, v in shared.items()}
    if isinstance(shared, float) and isinstance(own, float):
        return _r((1 - jitter) * shared + jitter * own, 5)
    if isinstance(shared, list) and isinstance(own, list) and len(shared) == len(own) and all(isinstance(v, float) for v in shared):
        return [_blend(a, b, jitter) for a, b in zip(shared, own)]
    return shared


def _camera_pose(geometric: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """A drawn pose as the camera-change recipe applies it: no crop box; the covering zoom times
    the crop's zoom (1 / sqrt(crop area scale))."""
    zoom = covering_zoom(geometric["rotation_deg"], geometric["translate_px"], size) / math.sqrt(geometric["crop_scale"])
    return {"rotation_deg": geometric["rotation_deg"], "translate_px": geometric["translate_px"], "zoom": _r(zoom, 5)}


def camera_change_drawer(settings: ShiftSettings, jitter: float, seed: int, domain: str) -> Drawer:
    """Camera change: one draw per category, shared by every image of every split (the same
    uniform variables at each image's size), every continuous setting moved `jitter` of the way
    toward the image's own draw; its noise seed is the image's. The pose zooms instead of
    padding (`_camera_pose`). A pose that would hide every defect pixel gets new per-image draws,
    at most MAX_ATTEMPTS, then keeps the category's change without the pose."""

    def draw(rng: np.random.Generator, size: tuple[int, int], mask: np.ndarray | None, category: str) -> dict[str, Any]:
        shared = sample_shift(np.random.default_rng([seed, zlib.crc32(domain.encode()), zlib.crc32(category.encode())]), settings, size)
        for _ in range(MAX_ATTEMPTS):
            own = sample_shift(rng, settings, size)
            drawn = _blend(shared, own, jitter)
            if drawn["photometric"]:  # the blur is the camera's (shared); the noise each exposure's own
                drawn["photometric"]["blur_sigma_px"] = shared["photometric"]["blur_sigma_px"]
                drawn["photometric"]["noise_seed"] = own["photometric"]["noise_seed"]
            if drawn["geometric"]:
                drawn["geometric"] = _camera_pose(drawn["geometric"], size)
            if _keeps_defect(mask, drawn):
                return drawn
        drawn["geometric"] = None
        return drawn

    return draw


def corruption_drawer(name: str, severity: int) -> Drawer:
    """A published common corruption at one severity (shiftad.corruptions); masks unchanged."""
    return lambda rng, size, mask, category: {"size": [int(size[0]), int(size[1])], "geometric": None, "photometric": None,
                                              "illumination": None,
                                              "corruption": {"name": name, "severity": severity, "noise_seed": int(rng.integers(2**31))}}


def _shift_one(record: ImageRecord, stem: str, rng: np.random.Generator, drawer: Drawer,
               write_to: Path, named_as: Path) -> dict[str, Any]:
    """Shift one image (and mask), write it under `write_to`, return its record named under `named_as`."""
    image = read_image(record.path)
    size = image.shape[:2]
    mask = None
    if record.mask_path is not None:
        mask = read_mask(record.mask_path, expected_size=(size[1], size[0]), image_path=record.path)
    drawn = drawer(rng, size, mask if record.is_anomalous else None, record.category)
    shifted, shifted_mask = apply_shift(image, mask, drawn)
    _save_png(write_to / "images" / f"{stem}_shifted.png", shifted)
    mask_path = None
    if shifted_mask is not None:
        _save_png(write_to / "masks" / f"{stem}_shifted_mask.png", shifted_mask.astype(np.uint8) * 255)
        mask_path = (named_as / "masks" / f"{stem}_shifted_mask.png").as_posix()
    shifted_record = ImageRecord((named_as / "images" / f"{stem}_shifted.png").as_posix(), record.category,
                                 record.label, record.defect_type, mask_path, record.source_split)
    return {**shifted_record.to_dict(), "source_path": record.path, "shift": drawn}


def shift_dataset(records_by_split: dict[str, dict[str, list[ImageRecord]]], settings: ShiftSettings | Drawer, seed: int,
                  out_root: Path, progress: bool = True, image_seed: Callable[[int], Any] | None = None,
                  desc: str = "shift") -> dict[str, Any]:
    """Write the shifted copy of {category: {split: [records]}} under `out_root` (replacing it).

    `settings`: MVTec-Shift's settings, or any recipe's `Drawer`. Image i draws from
    ``np.random.default_rng(image_seed(i))`` (default: ``seed + i``). Returns the content of
    the domain's JSON: per category and split, the shifted records (image path, mask path or
    None, the record's other fields, the source image path and the drawn shift) in the order given.
    """
    out_root = Path(out_root)
    drawer = mvtec_shift_drawer(settings) if isinstance(settings, ShiftSettings) else settings
    image_seed = image_seed or (lambda index: seed + index)
    jobs = _jobs(records_by_split)
    categories: dict[str, dict[str, list]] = {
        c: {s: [] for s in SPLITS if s in records_by_split[c]} for c in sorted(records_by_split)
    }
    with atomic_dir(out_root) as tmp:
        for index, (category, split, record, stem) in enumerate(tqdm(jobs, desc=desc, unit="img", disable=not progress)):
            rng = np.random.default_rng(image_seed(index))
            entry = _shift_one(record, stem, rng, drawer, tmp / category / split, out_root / category / split)
            categories[category][split].append(entry)
    content: dict[str, Any] = {"seed": seed}
    if isinstance(settings, ShiftSettings):
        content.update({"severity": settings.severity, "families": sorted(settings.families),
                        "illumination_probability": settings.illumination_probability,
                        "illumination_sigma_px": settings.illumination_sigma_px})
    return {**content, "categories": categories}


def domain_settings(params: Params, domain: str) -> ShiftSettings:
    """The shift ranges of an mvtec_shift or camera_change domain: params `shift`, with the
    domain's own severity and families where it sets them."""
    recipe = params.domains[domain]
    settings = params.shift.model_dump()
    if recipe.severity is not None:
        settings["severity"] = recipe.severity
    if recipe.families is not None:
        settings["families"] = recipe.families
    return ShiftSettings(**settings)


def run_shift_stage(params: Params, domain: str, progress: bool = True) -> dict[str, Any]:
    """The shift stage for one shift domain: its copy of every split under data/domains/<domain>/,
    listed in data/processed/domains/<domain>.json."""
    from shiftad.io import write_json
    from shiftad.paths import domain_images_dir, domain_splits_file
    from shiftad.split import SPLIT_NAMES, SplitView

    if domain not in params.domains:
        raise ParamsError(f"--domain: '{domain}' is not a shift domain of params `domains` ({', '.join(params.domains)})")
    recipe = params.domains[domain]
    view = SplitView.clean()
    records_by_split = {c: {s: view.get(c, s) for s in SPLIT_NAMES} for c in view.categories}
    description: dict[str, Any] = {"domain": domain, "recipe": recipe.recipe}
    if recipe.recipe == "mvtec_shift":  # seed + i per image: the same images as before domains were named
        settings = domain_settings(params, domain)
        drawer, image_seed = mvtec_shift_drawer(settings), None
    else:
        salt = zlib.crc32(domain.encode())
        image_seed = lambda index: [params.seed, salt, index]  # noqa: E731  (each domain its own streams)
        if recipe.recipe == "camera_change":
            settings = domain_settings(params, domain)
            drawer = camera_change_drawer(settings, recipe.jitter, params.seed, domain)
            description["jitter"] = recipe.jitter
        else:
            settings = None
            drawer = corruption_drawer(recipe.corruption, recipe.severity or 3)
            description.update({"corruption": recipe.corruption, "severity": recipe.severity or 3})
    content = shift_dataset(records_by_split, settings if recipe.recipe == "mvtec_shift" else drawer, params.seed,
                            domain_images_dir(domain), progress=progress, image_seed=image_seed, desc=f"shift {domain}")
    if settings is not None:
        description.update({"severity": settings.severity, "families": sorted(settings.families),
                            "illumination_probability": settings.illumination_probability,
                            "illumination_sigma_px": settings.illumination_sigma_px})
    content = {**content, **description}
    write_json(domain_splits_file(domain), content)
    return content
