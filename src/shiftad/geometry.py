"""How an image of any size becomes the square model input, and how masks and maps follow it.

Params `resize` (one policy for every detector, mask, map and overlay of a run):

- ``squash``: the whole image resized to ``image_size`` × ``image_size`` (aspect not kept). Every
  pixel is seen; a non-square image is stretched.
- ``pad``: the whole image resized so its long side is ``image_size`` (aspect kept) and centred
  on a black square (letterbox). The detector sees undistorted content at a lower resolution
  along the long side; its anomaly map is cut back to the content and resized to the square,
  so maps and masks are compared on the image's own pixels, never on the padding.
- ``center_crop``: the centred square of side min(height, width), resized to the square. No
  distortion, full resolution, but what lies outside the crop is never seen: a defect there is
  missed (its image still counts in image metrics; its pixels outside the crop are not scored).

The *map frame* is what every anomaly map covers, at ``image_size`` × ``image_size``: the
whole image for squash and pad, the centred crop for center_crop. `frame_mask` and
`frame_image` bring ground-truth masks and images into it (evaluation, overlays, figures).
Torch-free: the result stages import it without torch.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
from PIL import Image

ResizePolicy = Literal["squash", "pad", "center_crop"]
RESIZE_POLICIES: tuple[str, ...] = get_args(ResizePolicy)

Box = tuple[int, int, int, int]  # top, left, height, width


def check_policy(policy: str) -> None:
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize: '{policy}' is not one of {', '.join(RESIZE_POLICIES)}")


def source_box(height: int, width: int, policy: str) -> Box:
    """The part of an image (height × width) the model sees: all of it, or the centred square."""
    check_policy(policy)
    if policy == "center_crop":
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side
    return 0, 0, height, width


def content_box(height: int, width: int, size: int, policy: str) -> Box:
    """Where the seen part of an image (height × width) lies in the size × size model input:
    the whole square, or (pad) the centred letterbox with the aspect kept."""
    check_policy(policy)
    if policy != "pad" or height == width:
        return 0, 0, size, size
    scale = size / max(height, width)
    h, w = max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale)))
    return (size - h) // 2, (size - w) // 2, h, w


def _crop(array: np.ndarray, policy: str) -> np.ndarray:
    top, left, h, w = source_box(array.shape[0], array.shape[1], policy)
    return array[top : top + h, left : left + w]


def frame_mask(mask: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """A full-resolution bool mask in the map frame at `size` (height, width), nearest-neighbour."""
    seen = _crop(np.asarray(mask), policy)
    if seen.shape == tuple(size):
        return seen.astype(bool, copy=True)
    return np.asarray(Image.fromarray(seen.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 0


def frame_image(image: np.ndarray, size: tuple[int, int], policy: str) -> np.ndarray:
    """An H×W×3 uint8 image in the map frame at `size` (height, width), bilinear (overlays)."""
    seen = np.ascontiguousarray(_crop(np.asarray(image), policy))
    if seen.shape[:2] == tuple(size):
        return seen
    return np.asarray(Image.fromarray(seen).resize((size[1], size[0]), Image.BILINEAR))
