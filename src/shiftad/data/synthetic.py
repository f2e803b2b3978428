"""The embedded synthetic data set: MVTec AD layout, generated deterministically from a seed.

Layout under `root` (the same as MVTec AD, so the MVTec reader and split policy apply):

    <category>/train/good/000.png ...
    <category>/test/good/000.png ...
    <category>/test/<defect>/000.png ...
    <category>/ground_truth/<defect>/000_mask.png   (uint8, values 0 and 255)

Categories: `brick`, `gravel`, `grass` are textures cut from the photos scikit-image ships
and tinted per category; `widget` is a procedurally drawn metal washer on a plain background
with pose and lighting variation.

Every defect is a binary region blended with an opacity over the clean render, so the
ground-truth mask is exactly the set of pixels the defect changed (`_apply_defect`).

Determinism: every image has its own generator seeded from (seed, crc32(category),
crc32(folder), index). One seed gives byte-identical files; adding a category or changing a
count does not change the other images.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skdata
from skimage import draw, measure, transform

from shiftad.errors import DataError
from shiftad.io import atomic_dir
from shiftad.parallel import parallel_map
from shiftad.params import SyntheticParams

MIN_DEFECT_PIXELS = 20  # lowered to 0.5% of the image for tiny images (see `min_defect_pixels`)
SUBTLE_FRACTION = 0.35  # share of defects drawn faint and small (see `_difficulty`)
SENSOR_NOISE = 0.008  # std of per-pixel noise, in [0, 1] intensity units
MAX_ATTEMPTS = 50

Rng = np.random.Generator


@dataclass
class Scene:
    """A defect-free render, in float32 [0, 1] RGB, plus what defects need to know about it."""

    image: np.ndarray  # H x W x 3
    part: np.ndarray  # H x W coverage of the inspected surface (all ones for textures)
    background: np.ndarray | None = None  # H x W x 3 view with no part (widget only)


@dataclass(frozen=True)
class Defect:
    """What a defect does to a scene: the region, its appearance, and the blend opacity."""

    region: np.ndarray  # H x W bool
    target: np.ndarray  # H x W x 3 float appearance of the defect
    alpha: np.ndarray  # H x W float opacity in (0, 1], used inside `region` only


@dataclass(frozen=True)
class Sample:
    """One rendered image; `clean` is the same render without the defect."""

    image: np.ndarray  # H x W x 3 uint8
    clean: np.ndarray  # H x W x 3 uint8
    mask: np.ndarray | None  # H x W bool; None for good images


# ----------------------------------------------------------------------------- helpers


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _smooth_noise(rng: Rng, n: int, sigma: float) -> np.ndarray:
    """Smooth random field in [0, 1]; drawn at low resolution for speed, then upsampled."""
    step = max(1, int(sigma // 2))
    small = rng.normal(size=(n // step + 2, n // step + 2)).astype(np.float32)
    small = ndimage.gaussian_filter(small, sigma / step)
    field = ndimage.zoom(small, step, order=1)[:n, :n]
    low, high = field.min(), field.max()
    return (field - low) / max(high - low, 1e-6)


def _log_uniform(rng: Rng, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _difficulty(rng: Rng) -> tuple[bool, float]:
    """(subtle, opacity): about a third of defects are faint, the rest clearly visible."""
    subtle = bool(rng.random() < SUBTLE_FRACTION)
    opacity = rng.uniform(0.15, 0.35) if subtle else rng.uniform(0.45, 0.9)
    return subtle, float(opacity)


def _defect_area(rng: Rng, n: int, subtle: bool, obvious_max: float = 0.06) -> float:
    """Target area in pixels: 0.2-1% of the image when subtle, up to `obvious_max` otherwise."""
    fraction = _log_uniform(rng, 0.002, 0.01) if subtle else _log_uniform(rng, 0.008, obvious_max)
    return fraction * n * n


def _blob(rng: Rng, n: int, centre: tuple[float, float], area: float) -> np.ndarray:
    """An irregular blob of about `area` pixels: thresholded smooth noise plus a radial bias."""
    half = int(np.ceil(np.sqrt(area) * 0.9)) + 3
    side = 2 * half + 1
    noise = ndimage.gaussian_filter(rng.normal(size=(side, side)), half / 4)
    noise /= noise.std() + 1e-9
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    # The radial term keeps the blob centred and compact; the noise makes its outline ragged.
    field = noise * 0.8 + 2.5 * (1.0 - np.hypot(yy, xx) / half)
    count = int(np.clip(round(area), 1, side * side))
    threshold = np.partition(field.ravel(), -count)[-count]
    local = field >= threshold
    labels = measure.label(local)
    if labels.max() > 1:  # keep one piece: stains and chips are single blobs
        sizes = np.bincount(labels.ravel())[1:]
        local = labels == (np.argmax(sizes) + 1)
    return _place(local, n, centre)


def _place(local: np.ndarray, n: int, centre: tuple[float, float]) -> np.ndarray:
    """Paste a small boolean window centred at `centre` into an n x n mask, clipped at the borders."""
    out = np.zeros((n, n), dtype=bool)
    half = local.shape[0] // 2
    cy, cx = int(round(centre[0])), int(round(centre[1]))
    y0, x0 = cy - half, cx - half
    ys, xs = slice(max(y0, 0), min(y0 + local.shape[0], n)), slice(max(x0, 0), min(x0 + local.shape[1], n))
    out[ys, xs] = local[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    return out


def _polyline(n: int, points: np.ndarray, width: int) -> np.ndarray:
    """A polyline `width` pixels wide (1-px Bresenham segments, then dilated)."""
    mask = np.zeros((n, n), dtype=bool)
    pts = np.round(points).astype(int)
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        rr, cc = draw.line(y0, x0, y1, x1)
        keep = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
        mask[rr[keep], cc[keep]] = True
    if width > 1:
        mask = ndimage.binary_dilation(mask, structure=np.ones((width, width), dtype=bool))
    return mask


def _random_walk(rng: Rng, start: np.ndarray, angle: float, length: float, step: float, wiggle: float) -> np.ndarray:
    """Points of a jagged path: each step turns by a random angle around a slowly drifting heading."""
    steps = max(2, int(length / step))
    turns = rng.normal(0.0, wiggle, size=steps)
    drift = np.cumsum(rng.normal(0.0, wiggle / 4, size=steps))
    headings = angle + drift + turns
    moves = np.stack([np.sin(headings), np.cos(headings)], axis=1) * step
    return np.vstack([start, start + np.cumsum(moves, axis=0)])


def _line_width(rng: Rng, n: int, low: int, high: int) -> int:
    """A stroke width in [low, high] pixels at 256 px, scaled with the image size."""
    return max(1, int(round(rng.integers(low, high + 1) * n / 256)))


def _pick_pixel(rng: Rng, where: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(where)
    i = rng.integers(len(ys))
    return float(ys[i]), float(xs[i])


def _inner_pixels(scene: Scene, margin: float = 0.08) -> np.ndarray:
    """Pixels of the part away from the image border, where defects are placed."""
    n = scene.part.shape[0]
    m = int(margin * n)
    inner = np.zeros_like(scene.part, dtype=bool)
    inner[m : n - m, m : n - m] = True
    return inner & (scene.part > 0.9)


# ----------------------------------------------------------------------------- textures


@dataclass(frozen=True)
class Texture:
    photo: str  # name of the scikit-image sample photo
    dark: tuple[float, float, float]  # colour of the photo's black
    light: tuple[float, float, float]  # colour of the photo's white
    stains: tuple[tuple[float, float, float], ...]  # foreign colours for `stain`


OIL = (0.12, 0.09, 0.06)
RUST = (0.72, 0.36, 0.12)
PAINT = (0.18, 0.32, 0.78)
CHALK = (0.92, 0.92, 0.88)
MOSS = (0.32, 0.52, 0.12)

TEXTURES = {
    "brick": Texture("brick", (0.24, 0.08, 0.05), (0.95, 0.66, 0.52), (OIL, PAINT, CHALK, MOSS)),
    "gravel": Texture("gravel", (0.15, 0.14, 0.12), (0.92, 0.88, 0.80), (OIL, RUST, PAINT, MOSS)),
    "grass": Texture("grass", (0.05, 0.13, 0.04), (0.56, 0.76, 0.36), (OIL, RUST, PAINT, CHALK)),
}


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """The grayscale sample photo, contrast-stretched so every tint uses its full range."""
    photo = getattr(skdata, name)().astype(np.float32) / 255.0
    low, high = np.percentile(photo, [1, 99])
    photo = np.clip((photo - low) / (high - low), 0.0, 1.0)
    photo.setflags(write=False)
    return photo


def _texture_gray(rng: Rng, photo: np.ndarray, n: int, crop: tuple[float, float]) -> np.ndarray:
    side = int(round(rng.uniform(*crop) * photo.shape[0]))
    y0 = int(rng.integers(0, photo.shape[0] - side + 1))
    x0 = int(rng.integers(0, photo.shape[1] - side + 1))
    patch = photo[y0 : y0 + side, x0 : x0 + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1, :]
    gray = transform.resize(patch, (n, n), anti_aliasing=True).astype(np.float32)
    contrast, brightness = rng.uniform(0.95, 1.05, size=2)
    mean = gray.mean()
    return (gray - mean) * contrast + mean * brightness


def _tint(gray: np.ndarray, texture: Texture) -> np.ndarray:
    dark = np.asarray(texture.dark, dtype=np.float32)
    light = np.asarray(texture.light, dtype=np.float32)
    return dark + gray[..., None] * (light - dark)


def _render_texture(name: str, rng: Rng, n: int) -> Scene:
    texture = TEXTURES[name]
    gray = _texture_gray(rng, _photo(texture.photo), n, (0.45, 0.6))
    image = _tint(gray, texture) + rng.normal(0.0, SENSOR_NOISE, size=(n, n, 3)).astype(np.float32)
    return Scene(image=np.clip(image, 0.0, 1.0), part=np.ones((n, n), dtype=np.float32))


# ----------------------------------------------------------------------------- widget

METAL = np.array([0.62, 0.63, 0.66], dtype=np.float32)
TABLE = np.array([0.17, 0.19, 0.22], dtype=np.float32)


@dataclass(frozen=True)
class Washer:
    """The washer's coverage and the coordinates its shading is computed in."""

    part: np.ndarray  # anti-aliased coverage in [0, 1]
    r: np.ndarray  # distance from the centre
    phi: np.ndarray  # polar angle
    u: np.ndarray  # the part's own frame: u points at the notch ...
    v: np.ndarray  # ... and v across it
    outer: float
    inner: float


def _washer_shape(rng: Rng, n: int, yy: np.ndarray, xx: np.ndarray) -> Washer:
    """Pose and geometry of the washer, with anti-aliased edges from signed distances."""
    cy, cx = n / 2 + rng.uniform(-0.04, 0.04, size=2) * n
    scale = rng.uniform(0.94, 1.06)
    outer, inner = 0.36 * n * scale, 0.15 * n * scale
    theta = rng.uniform(0.0, 2 * np.pi)  # orientation of the notch
    y, x = yy - cy, xx - cx
    r = np.hypot(y, x)
    ring = np.clip(outer - r + 0.5, 0, 1) * np.clip(r - inner + 0.5, 0, 1)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    notch = np.clip(np.minimum(u - 0.82 * outer, 0.06 * outer - np.abs(v)) + 0.5, 0, 1)
    return Washer(ring * (1 - notch), r, np.arctan2(y, x), u, v, outer, inner)


def _washer_shading(rng: Rng, shape: Washer, light: float) -> np.ndarray:
    """Brushed-metal brightness: anisotropic sheen, concentric grain, lit and shaded bevels."""
    r, phi, outer, inner = shape.r, shape.phi, shape.outer, shape.inner
    sheen = 1.0 + 0.10 * np.cos(2 * (phi - light))
    profile = ndimage.gaussian_filter1d(rng.normal(size=int(outer) + 3), 1.2)
    grain = 1.0 + 0.035 * np.interp(r, np.arange(len(profile)), profile / (profile.std() + 1e-9))
    to_outer, to_inner = outer - r, r - inner
    bevel = np.clip(np.minimum(to_outer, to_inner) / (0.07 * outer), 0, 1)
    # The outer bevel faces away from the centre, the inner one towards it.
    facing = np.where(to_outer < to_inner, 1.0, -1.0) * np.cos(phi - light)
    shade = sheen * grain + (1 - bevel) * (0.25 * facing - 0.08)
    # An engraved ring opposite the notch: an orientation mark like a stamped part number.
    dist = np.hypot(shape.u + 0.5 * (outer + inner), shape.v)
    engraved = np.clip(1.0 - np.abs(dist - 0.06 * outer), 0, 1)
    return (shade * (1 - 0.35 * engraved)).astype(np.float32)


def _render_widget(rng: Rng, n: int) -> Scene:
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    shape = _washer_shape(rng, n, yy, xx)
    part = shape.part.astype(np.float32)
    light = rng.uniform(0.0, 2 * np.pi)
    metal = METAL * rng.uniform(0.96, 1.04)
    surface = metal * _washer_shading(rng, shape, light)[..., None]

    table = TABLE * rng.uniform(0.95, 1.05) * (0.97 + 0.06 * _smooth_noise(rng, n, n / 8))[..., None]
    # Soft drop shadow, cast away from the light.
    shadow = ndimage.gaussian_filter(part, 0.02 * n)
    offset = np.round(-0.025 * n * np.array([np.sin(light), np.cos(light)])).astype(int)
    shadow = np.roll(shadow, tuple(offset), axis=(0, 1))
    table = table * (1 - 0.3 * shadow)[..., None]

    # Uneven illumination: a linear brightness ramp in a random direction.
    ramp_angle, ramp = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.0, 0.35)
    gradient = 1 + ramp * ((xx - n / 2) * np.cos(ramp_angle) + (yy - n / 2) * np.sin(ramp_angle)) / n
    noise = rng.normal(0.0, SENSOR_NOISE, size=(n, n, 3)).astype(np.float32)
    background = np.clip(table * gradient[..., None] + noise, 0, 1)
    lit_surface = surface * gradient[..., None] + noise
    image = background * (1 - part[..., None]) + lit_surface * part[..., None]
    return Scene(image=np.clip(image, 0, 1), part=part, background=background)


# ----------------------------------------------------------------------------- defects


def _scratch(scene: Scene, rng: Rng, n: int) -> Defect:
    """A thin bright or dark polyline of 1-4 straight segments."""
    subtle, opacity = _difficulty(rng)
    length = max(rng.uniform(0.12, 0.25) if subtle else rng.uniform(0.2, 0.5), 24 / n) * n
    segments = int(rng.integers(1, 5))
    angle = rng.uniform(0.0, 2 * np.pi)
    start = np.array(_pick_pixel(rng, _inner_pixels(scene)))
    points = _random_walk(rng, start, angle, length, length / segments, 0.25)
    region = _polyline(n, points, _line_width(rng, n, 1, 2 if subtle else 3)) & (scene.part > 0.5)
    shade = 0.97 if rng.random() < 0.6 else 0.05
    target = np.full_like(scene.image, shade)
    # Real scratches fade in and out along their length.
    alpha = opacity * (0.6 + 0.4 * _smooth_noise(rng, n, n / 16))
    return Defect(region, target, alpha)


def _crack(scene: Scene, rng: Rng, n: int) -> Defect:
    """A dark jagged random-walk line, sometimes with a branch."""
    subtle, opacity = _difficulty(rng)
    length = max(rng.uniform(0.15, 0.3) if subtle else rng.uniform(0.25, 0.6), 24 / n) * n
    start = np.array(_pick_pixel(rng, _inner_pixels(scene)))
    angle = rng.uniform(0.0, 2 * np.pi)
    points = _random_walk(rng, start, angle, length, max(2.0, n / 100), 0.45)
    width = _line_width(rng, n, 1, 1 if subtle else 3)
    region = _polyline(n, points, width)
    if rng.random() < 0.5:
        fork = points[rng.integers(len(points) // 4, len(points))]
        side = angle + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        branch = _random_walk(rng, fork, side, length * rng.uniform(0.2, 0.5), max(2.0, n / 100), 0.45)
        region |= _polyline(n, branch, max(1, width - 1))
    target = scene.image * 0.15
    alpha = np.full((n, n), opacity, dtype=np.float32)
    return Defect(region & (scene.part > 0.5), target, alpha)


def _stain_colours(name: str) -> tuple[tuple[float, float, float], ...]:
    return TEXTURES[name].stains if name in TEXTURES else (OIL, RUST, PAINT)


def _stain(name: str) -> Callable[[Scene, Rng, int], Defect]:
    def stain(scene: Scene, rng: Rng, n: int) -> Defect:
        """A blob of a foreign colour that keeps some of the surface texture under it."""
        subtle, opacity = _difficulty(rng)
        area = _defect_area(rng, n, subtle)
        centre = _pick_pixel(rng, _inner_pixels(scene))
        region = _blob(rng, n, centre, area) & (scene.part > 0.5)
        colours = _stain_colours(name)
        colour = np.asarray(colours[rng.integers(len(colours))], dtype=np.float32)
        target = colour + 0.5 * (scene.image - scene.image.mean(axis=(0, 1)))
        # Stains are thicker in places: opacity varies smoothly but never reaches zero.
        alpha = opacity * (0.65 + 0.35 * _smooth_noise(rng, n, max(2.0, np.sqrt(area) / 3)))
        return Defect(region, target, alpha)

    return stain


def _cut_paste(name: str) -> Callable[[Scene, Rng, int], Defect]:
    def cut_paste(scene: Scene, rng: Rng, n: int) -> Defect:
        """A patch of a different structure (another photo, or this one rotated and rescaled),
        tinted and level-matched to the surface so that only the structure gives it away."""
        subtle, opacity = _difficulty(rng)
        area = _defect_area(rng, n, subtle, obvious_max=0.07)
        centre = _pick_pixel(rng, _inner_pixels(scene))
        region = _blob(rng, n, centre, area)
        texture = TEXTURES[name]
        others = [t.photo for key, t in TEXTURES.items() if key != name]
        if rng.random() < 0.5:
            gray = _texture_gray(rng, _photo(others[rng.integers(len(others))]), n, (0.3, 0.7))
        else:
            gray = np.rot90(_texture_gray(rng, _photo(texture.photo), n, (0.2, 0.3)))
        source = _tint(gray, texture)
        inside, patch = scene.image[region], source[region]
        # A patch landing on a flat spot still gets the surface's usual contrast, else it is invisible.
        spread = np.maximum(inside.std(axis=0), 0.5 * scene.image.std(axis=(0, 1)))
        target = (source - patch.mean(axis=0)) / (patch.std(axis=0) + 1e-6) * spread + inside.mean(axis=0)
        alpha = np.full((n, n), min(1.0, opacity + 0.15), dtype=np.float32)
        return Defect(region, target.astype(np.float32), alpha)

    return cut_paste


def _missing_piece(scene: Scene, rng: Rng, n: int) -> Defect:
    """A chip broken off the rim of the part: the table shows through."""
    subtle = bool(rng.random() < SUBTLE_FRACTION)
    area = _defect_area(rng, n, subtle, obvious_max=0.04)
    solid = scene.part > 0.5
    rim = solid & ~ndimage.binary_erosion(solid)
    centre = _pick_pixel(rng, rim)
    # The blob is centred on the rim, so about half of it falls outside the part: double it.
    region = _blob(rng, n, centre, 2 * area) & (scene.part > 0.0)
    assert scene.background is not None
    return Defect(region, scene.background, np.ones((n, n), dtype=np.float32))


Renderer = Callable[[Rng, int], Scene]
DefectMaker = Callable[[Scene, Rng, int], Defect]


@dataclass(frozen=True)
class Category:
    render: Renderer
    defects: dict[str, DefectMaker]


def _texture_category(name: str) -> Category:
    return Category(
        render=lambda rng, n: _render_texture(name, rng, n),
        defects={"scratch": _scratch, "stain": _stain(name), "crack": _crack, "cut_paste": _cut_paste(name)},
    )


CATEGORIES: dict[str, Category] = {
    "brick": _texture_category("brick"),
    "gravel": _texture_category("gravel"),
    "grass": _texture_category("grass"),
    "widget": Category(
        render=_render_widget,
        defects={"scratch": _scratch, "stain": _stain("widget"), "missing_piece": _missing_piece},
    ),
}


def min_defect_pixels(size: int) -> int:
    """Smallest mask accepted: 20 pixels, or 0.5% of the image below 64 x 64."""
    return min(MIN_DEFECT_PIXELS, size * size // 200)


def available_categories() -> list[str]:
    return sorted(CATEGORIES)


def defect_types(category: str) -> list[str]:
    """The defect folder names of one category, in generation order."""
    return list(_category(category).defects)


def _category(name: str) -> Category:
    if name not in CATEGORIES:
        raise DataError(
            f"categories: unknown synthetic category '{name}'; "
            f"available: {', '.join(available_categories())}"
        )
    return CATEGORIES[name]


# ----------------------------------------------------------------------------- rendering


def _apply_defect(clean: np.ndarray, defect: Defect) -> tuple[np.ndarray, np.ndarray]:
    """Blend the defect into the quantised clean image; return (image, exact mask).

    Pixels outside the region are copied unchanged. Inside it, a pixel that the defect means
    to change but that rounding left equal is moved by one grey level towards the defect, so
    the mask is exactly the set of changed pixels and has no rounding holes.
    """
    base = clean.astype(np.float32) / 255.0
    alpha = np.where(defect.region, defect.alpha, 0.0).astype(np.float32)[..., None]
    difference = defect.target - base
    image = _to_uint8(base + alpha * difference)
    meant = defect.region & (np.abs(difference).max(axis=-1) > 1 / 255)
    stuck = meant & ~(image != clean).any(axis=-1)
    ys, xs = np.nonzero(stuck)
    if len(ys):
        channel = np.abs(difference[ys, xs]).argmax(axis=-1)
        step = np.sign(difference[ys, xs, channel]).astype(np.int16)
        image[ys, xs, channel] = np.clip(clean[ys, xs, channel].astype(np.int16) + step, 0, 255)
    mask = (image != clean).any(axis=-1)
    return image, mask


def _seed_sequence(seed: int, category: str, folder: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(category.encode()), zlib.crc32(folder.encode()), index])


def render_sample(category: str, size: int, seed: int, folder: str, index: int) -> Sample:
    """Render one image of the set: `folder` is "train/good", "test/good" or "test/<defect>".

    The clean scene and the defect draw from separate child generators, so `clean` is the
    exact render the defect was applied to.
    """
    spec = _category(category)
    scene_seq, defect_seq = _seed_sequence(seed, category, folder, index).spawn(2)
    scene = spec.render(np.random.default_rng(scene_seq), size)
    clean = _to_uint8(scene.image)
    split, kind = folder.split("/")
    if kind == "good":
        return Sample(image=clean, clean=clean, mask=None)
    if split != "test" or kind not in spec.defects:
        raise DataError(f"{category}: no synthetic folder '{folder}'; defects: {', '.join(spec.defects)}")
    rng = np.random.default_rng(defect_seq)
    for _ in range(MAX_ATTEMPTS):  # redraw the rare defect that lands almost nowhere
        image, mask = _apply_defect(clean, spec.defects[kind](scene, rng, size))
        if mask.sum() >= min_defect_pixels(size):
            return Sample(image=image, clean=clean, mask=mask)
    raise RuntimeError(f"{category}/{folder}/{index}: no defect of {min_defect_pixels(size)}+ pixels in {MAX_ATTEMPTS} tries")


def _jobs(categories: list[str], params: SyntheticParams) -> list[tuple[str, str, int]]:
    jobs = []
    for category in categories:
        folders = [("train/good", params.train_good), ("test/good", params.test_good)]
        folders += [(f"test/{defect}", params.test_per_defect) for defect in CATEGORIES[category].defects]
        jobs += [(category, folder, index) for folder, count in folders for index in range(count)]
    return jobs


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def generate_synthetic(root: Path, params: SyntheticParams, seed: int, categories: list[str], progress: bool = True,
                       workers: int = 1) -> None:
    """Generate the synthetic set under `root` (replacing it) in MVTec AD layout.

    Files are written into a temporary folder beside `root` and renamed into place at the
    end, so an interrupted run never leaves a half-written set that looks complete. `workers`
    processes render the images side by side (byte-identical files for any count).
    """
    categories = list(dict.fromkeys(categories))
    for category in categories:
        _category(category)  # fail on an unknown name before writing anything
    jobs = _jobs(categories, params)
    with atomic_dir(root) as tmp:
        # every image draws from its own seed sequence: the same files whatever the worker count
        tasks = [(category, params.image_size, seed, folder, index, str(tmp)) for category, folder, index in jobs]
        parallel_map(_write_sample, tasks, workers, "synthetic data", progress)


def _write_sample(task: tuple[str, int, int, str, int, str]) -> None:
    """Render one image (and its mask) into the set's folder `tmp`."""
    category, size, seed, folder, index, tmp = task
    sample = render_sample(category, size, seed, folder, index)
    _save_png(Path(tmp) / category / folder / f"{index:03d}.png", sample.image)
    if sample.mask is not None:
        defect = folder.split("/")[1]
        _save_png(Path(tmp) / category / "ground_truth" / defect / f"{index:03d}_mask.png", sample.mask.astype(np.uint8) * 255)
