"""Foreground masks from the first principal component of an image's patch tokens (AnomalyDINO).

DINOv2 patch tokens of object and background separate along their first principal component;
thresholding it keeps the object's patches. The sign of a principal component is arbitrary,
so, as AnomalyDINO does, the side that covers the image centre is taken as foreground; the
mask is then dilated and closed once to fill small holes. Meant for ViT features: on CNN
features the first component is not a foreground cue.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def first_principal_component(tokens: np.ndarray) -> np.ndarray:
    """(P, C) tokens -> (P,) projections onto their first principal component (sign: largest |loading| positive)."""
    centred = tokens.astype(np.float64) - tokens.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    direction = vt[0]
    direction *= np.sign(direction[np.argmax(np.abs(direction))])  # deterministic sign
    return centred @ direction


def foreground_mask(tokens: np.ndarray, grid: tuple[int, int], threshold: float = 10.0, centre_share: float = 0.35) -> np.ndarray:
    """(P, C) patch tokens of one image on a `grid` (h, w) -> (P,) bool foreground mask.

    Foreground = first-PC projection above `threshold`; when that keeps at most `centre_share`
    of the central crop (35%-65% of each side), the opposite side is taken instead.
    """
    h, w = grid
    if tokens.shape[0] != h * w:
        raise ValueError(f"{tokens.shape[0]} tokens do not fill a {h}×{w} grid")
    pc = first_principal_component(tokens)
    mask = (pc > threshold).reshape(h, w)
    centre = mask[int(h * 0.35) : int(h * 0.65), int(w * 0.35) : int(w * 0.65)]
    if centre.sum() <= centre.size * centre_share:
        mask = (-pc > threshold).reshape(h, w)
    mask = ndimage.binary_dilation(mask, iterations=1)
    mask = ndimage.binary_closing(mask, iterations=1)
    return mask.reshape(-1)
