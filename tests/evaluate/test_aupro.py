"""AU-PRO against an independent brute force (own 8-connected flood fill, loops per threshold)."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from shiftad.evaluate.aupro import au_pro, pro_curve, trapezoid

# --- independent brute force -------------------------------------------------------------


def flood_fill_regions(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a 2-D bool mask, each as a bool mask (BFS, no scipy)."""
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    h, w = mask.shape
    for i in range(h):
        for j in range(w):
            if not mask[i, j] or seen[i, j]:
                continue
            region = np.zeros_like(mask, dtype=bool)
            queue = deque([(i, j)])
            seen[i, j] = True
            while queue:
                y, x = queue.popleft()
                region[y, x] = True
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            regions.append(region)
    return regions


def brute_force_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[list[float], list[float]]:
    regions = []  # (image index, region mask)
    for n, mask in enumerate(masks):
        regions += [(n, r) for r in flood_fill_regions(mask)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        above = maps >= t
        fprs.append((above & normal).sum() / normal.sum())
        pros.append(sum((above[n] & r).sum() / r.sum() for n, r in regions) / len(regions))
    return fprs + [1.0], pros + [1.0]


def brute_force_au_pro(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    fprs, pros = brute_force_curve(maps, masks)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(fprs, pros), zip(fprs[1:], pros[1:])):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        else:  # segment crosses the limit: cut it there
            y_at = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_at) * (limit - x0)
            break
    return area / limit


def small_case(seed: int, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """3 images 12x12: two regions in image 0 (one joined only diagonally), one in image 1, none in image 2."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 12, 12), dtype=bool)
    masks[0, 1:4, 1:4] = True  # square
    masks[0, 4, 4] = True  # diagonal neighbour of (3, 3): same region
    masks[0, 5, 5] = True  # and again: the square + diagonal tail is ONE region
    masks[0, 8:11, 7] = True  # second region of image 0
    masks[1, 2, 8:12] = True
    masks[1, 3, 7] = True  # diagonal to (2, 8)
    maps = rng.random(masks.shape)
    maps[masks] += 0.4 * rng.random(masks.sum())  # defects score higher on average
    if levels is not None:  # quantise to create many ties, within and across classes
        maps = np.round(maps * levels) / levels
    return maps, masks


# --- tests ----------------------------------------------------------------------------------


def test_flood_fill_joins_diagonals() -> None:
    _, masks = small_case(0, None)
    assert [len(flood_fill_regions(m)) for m in masks] == [2, 1, 0]


@pytest.mark.parametrize("levels", [None, 5, 20])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_au_pro_matches_brute_force(seed: int, levels: int | None, limit: float) -> None:
    maps, masks = small_case(seed, levels)
    assert au_pro(maps, masks, fpr_limit=limit) == pytest.approx(brute_force_au_pro(maps, masks, limit), abs=1e-9)


@pytest.mark.parametrize("levels", [None, 7])
def test_pro_curve_matches_brute_force(levels: int | None) -> None:
    maps, masks = small_case(3, levels)
    fprs, pros = pro_curve(maps, masks)
    bf_fprs, bf_pros = brute_force_curve(maps, masks)
    np.testing.assert_allclose(fprs, bf_fprs, atol=1e-12)
    np.testing.assert_allclose(pros, bf_pros, atol=1e-12)
    assert (fprs[0], pros[0], fprs[-1], pros[-1]) == (0, 0, 1, 1)


def test_float32_maps_match_brute_force() -> None:
    maps, masks = small_case(4, None)
    maps = maps.astype(np.float32)
    assert au_pro(maps, masks) == pytest.approx(brute_force_au_pro(maps, masks, 0.3), abs=1e-9)


def test_perfect_map_gives_one() -> None:
    _, masks = small_case(0, None)
    assert au_pro(masks.astype(float), masks) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("limit", [0.3, 0.1, 1.0])
def test_constant_map(limit: float) -> None:
    # One threshold: the curve jumps straight from (0, 0) to (1, 1): the diagonal, area limit²/2.
    _, masks = small_case(0, None)
    maps = np.full(masks.shape, 0.7)
    fprs, pros = pro_curve(maps, masks)
    np.testing.assert_allclose(fprs, [0, 1, 1], atol=1e-12)
    np.testing.assert_allclose(pros, [0, 1, 1], atol=1e-12)  # cumsum of 1/|region| rounds
    assert au_pro(maps, masks, fpr_limit=limit) == pytest.approx(limit / 2, abs=1e-12)


def test_diagonal_pixels_form_one_region() -> None:
    # A and B touch only at a corner: one region {A, B}; C is a second region.
    masks = np.zeros((1, 6, 6), dtype=bool)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # A, B
    masks[0, 5, 5] = True  # C
    maps = np.zeros(masks.shape)
    maps[0, 1, 1] = 1.0  # only A is found at the top threshold
    fprs, pros = pro_curve(maps, masks)
    # 8-connected: mean(1/2, 0) = 0.25; 4-connected would give mean(1, 0, 0) = 1/3.
    assert (fprs[1], pros[1]) == (0.0, pytest.approx(0.25))


def test_regions_do_not_connect_across_images() -> None:
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[:, 1, 1] = True  # same pixel in both images: two regions, not one
    maps = np.zeros(masks.shape)
    maps[0, 1, 1] = 1.0
    _, pros = pro_curve(maps, masks)
    assert pros[1] == pytest.approx(0.5)


def test_no_region_gives_nan() -> None:
    maps = np.random.default_rng(0).random((2, 8, 8))
    assert np.isnan(au_pro(maps, np.zeros(maps.shape, dtype=bool)))
    with pytest.raises(ValueError, match="undefined"):
        pro_curve(maps, np.zeros(maps.shape, dtype=bool))


def test_uint8_masks_accepted() -> None:
    maps, masks = small_case(5, None)
    assert au_pro(maps, masks.astype(np.uint8) * 255) == au_pro(maps, masks)


def test_bad_inputs() -> None:
    maps, masks = small_case(0, None)
    with pytest.raises(ValueError, match="shape"):
        au_pro(maps, masks[:2])
    with pytest.raises(ValueError, match="fpr_limit"):
        au_pro(maps, masks, fpr_limit=0)
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        au_pro(maps, masks)


def test_trapezoid_interpolates_at_limit() -> None:
    x, y = np.array([0.0, 0.2, 0.4, 1.0]), np.array([0.0, 0.5, 0.7, 1.0])
    # up to 0.3: 0.5·0.5·0.2 + 0.5·(0.5 + 0.6)·0.1
    assert trapezoid(x, y, x_max=0.3) == pytest.approx(0.05 + 0.055)
    assert trapezoid(x, y, x_max=0.4) == pytest.approx(0.05 + 0.12)
    assert trapezoid(x, y) == pytest.approx(np.trapezoid(y, x))


def reference_curve(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Condensed transliteration of MVTec's compute_pro (argsort of per-pixel increments)."""
    from scipy.ndimage import label

    fp_changes = np.zeros(maps.shape)
    pro_changes = np.zeros(maps.shape)
    n_regions = 0
    for n, gt in enumerate(masks):
        labeled, k = label(gt, np.ones((3, 3), dtype=int))
        n_regions += k
        fp_changes[n][labeled == 0] = 1
        for r in range(1, k + 1):
            pro_changes[n][labeled == r] = 1.0 / np.sum(labeled == r)
    order = np.argsort(maps.ravel())[::-1]
    scores = maps.ravel()[order]
    fprs = np.cumsum(fp_changes.ravel()[order]) / fp_changes.sum()
    pros = np.cumsum(pro_changes.ravel()[order]) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    fprs, pros = np.clip(fprs[keep], None, 1), np.clip(pros[keep], None, 1)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


@pytest.mark.parametrize("levels", [None, 50])
def test_matches_reference_algorithm_on_larger_random_data(levels: int | None) -> None:
    rng = np.random.default_rng(7)
    masks = np.zeros((6, 48, 48), dtype=bool)
    for n in range(4):  # random blobs, some touching diagonally or overlapping
        for _ in range(3):
            y, x, h, w = rng.integers(0, 40), rng.integers(0, 40), rng.integers(1, 8), rng.integers(1, 8)
            masks[n, y : y + h, x : x + w] = True
    maps = rng.random(masks.shape) + 0.3 * masks
    if levels is not None:
        maps = np.round(maps * levels) / levels
    fprs, pros = pro_curve(maps, masks)
    ref_fprs, ref_pros = reference_curve(maps, masks)
    np.testing.assert_allclose(fprs, ref_fprs, atol=1e-12)
    np.testing.assert_allclose(pros, ref_pros, atol=1e-12)
