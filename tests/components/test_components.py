import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors as SkNN

from conftest import torch_threads
from shiftad.components.aggregation import aggregate_patches, to_patch_rows
from shiftad.components.coreset import greedy_coreset_indices
from shiftad.components.knn import NearestNeighbours
from shiftad.components.maps import gaussian_blur, gaussian_kernel_size, upsample_and_smooth


def test_knn_matches_brute_force():
    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(500, 16)), rng.normal(size=(70, 16))
    dist, idx = NearestNeighbours(bank, batch_size=32).query(queries, k=3)
    ref_dist, ref_idx = SkNN(n_neighbors=3).fit(bank).kneighbors(queries)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4)


def brute_force_k_center(points: np.ndarray, k: int, start: int) -> list[int]:
    chosen = [start]
    while len(chosen) < k:
        d = np.min(((points[:, None, :] - points[chosen][None]) ** 2).sum(-1), axis=1)
        chosen.append(int(np.argmax(d)))
    return chosen


def test_coreset_is_greedy_k_center_without_projection():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 8)).astype(np.float32)
    selected = greedy_coreset_indices(torch.from_numpy(points), ratio=0.05, projection_dim=8, seed=3, progress=False)
    assert len(selected) == 15 and len(set(selected.tolist())) == 15
    assert selected.tolist() == brute_force_k_center(points.astype(np.float64), 15, int(selected[0]))


def test_coreset_covers_the_data_better_than_random():
    rng = np.random.default_rng(2)
    clusters = rng.normal(size=(20, 32)) * 10
    points = (clusters[rng.integers(0, 20, 4000)] + rng.normal(size=(4000, 32))).astype(np.float32)
    selected = greedy_coreset_indices(torch.from_numpy(points), ratio=0.01, projection_dim=16, seed=0, progress=False)
    random = rng.choice(4000, len(selected), replace=False)

    def coverage_radius(idx):
        return NearestNeighbours(points[idx]).query(points, 1)[0].max()

    assert coverage_radius(selected.numpy()) < coverage_radius(random)


def plain_greedy_loop(x: torch.Tensor, k: int, first: int) -> list[int]:
    """The coreset loop before pruning: every row meets every center, one pass per pick (one thread)."""
    with torch_threads(1):  # the reference runs on one thread (tests/conftest.py: torch_threads)
        return _plain_greedy_loop(x, k, first)


def _plain_greedy_loop(x: torch.Tensor, k: int, first: int) -> list[int]:
    sq_norms = (x * x).sum(dim=1)
    min_dist = torch.full((len(x),), float("inf"))
    chosen, current = [], first
    for _ in range(k):
        chosen.append(current)
        torch.minimum(min_dist, sq_norms - 2.0 * (x @ x[current]) + sq_norms[current], out=min_dist)
        current = int(torch.argmax(min_dist))
    return chosen


def clustered_points(rows: int, dims: int, seed: int, offset: float = 0.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    clusters = rng.normal(size=(12, dims)) * 6
    points = clusters[rng.integers(0, 12, rows)] + rng.normal(size=(rows, dims)) * rng.uniform(0.2, 2.0, size=(1, dims))
    points[rows // 2 : rows // 2 + 100] = points[100:200]  # exact duplicates: ties go to the first index, as argmax
    return torch.from_numpy((points + offset).astype(np.float32))


@pytest.mark.parametrize("rows, dims, offset", [
    (3000, 48, 0.0),  # a multiple of the BLAS row group
    (3013, 48, 0.0),  # 5 rows past it: their bits come from a product of their own
    (3007, 24, 0.0),  # fewer dimensions than the bound keeps: the bound is the distance
    (2048, 64, 300.0),  # far from the origin: float32 cancellation, the margin must cover it
])
def test_pruned_coreset_picks_what_the_plain_loop_picks(rows, dims, offset):
    x = clustered_points(rows, dims, seed=rows, offset=offset)
    selected = greedy_coreset_indices(x, ratio=0.08, projection_dim=dims, seed=1, progress=False)
    assert selected.tolist() == plain_greedy_loop(x, len(selected), int(selected[0]))


def test_pruned_coreset_distances_have_the_full_products_bits():
    """Candidates are a gather of rows; BLAS rounds a row by where it sits in its group of rows,
    so the gather is padded to keep every row's bits (unpadded, rows past the last full group differ)."""
    from shiftad.components.coreset import _PrunedGreedy

    x = clustered_points(4109, 128, seed=7)
    greedy = _PrunedGreedy(x)
    rng = np.random.default_rng(0)
    with torch_threads(1):  # as greedy_coreset_indices runs them
        for center in (5, 4107):
            full = (greedy.sq_norms - 2.0 * (x @ x[center]) + greedy.sq_norms[center]).numpy()
            for size in (1, 3, 37, 250, 4109):
                rows = np.sort(rng.choice(len(x), size, replace=False))
                exact = greedy._exact(rows, x[center], greedy.sq_norms.numpy()[center], x.numpy())
                np.testing.assert_array_equal(exact, full[rows])


def test_coreset_leaves_the_thread_settings_as_it_found_them():
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]
    greedy_coreset_indices(torch.randn(500, 40), 0.1, 40, progress=False)
    assert (torch.get_num_threads(), [pool["num_threads"] for pool in threadpool_info()]) == before


def test_coreset_is_seeded():
    x = torch.randn(1000, 64)
    a = greedy_coreset_indices(x, 0.1, 16, seed=5, progress=False)
    b = greedy_coreset_indices(x, 0.1, 16, seed=5, progress=False)
    assert torch.equal(a, b)


def test_aggregation_pools_neighbourhood_and_upsamples():
    fine = torch.zeros(1, 1, 8, 8)
    fine[0, 0, 4, 4] = 9.0
    coarse = torch.ones(1, 2, 4, 4)
    out = aggregate_patches([fine, coarse], neighbourhood=3)
    assert out.shape == (1, 3, 8, 8)
    assert out[0, 0, 3:6, 3:6].eq(1.0).all()  # 9 spread over its 3×3 neighbourhood
    assert out[0, 0, 0, 0] == 0
    # zero padding counts in the average: a corner of the constant coarse map sees 4 of 9 values
    coarse_pooled = torch.nn.functional.interpolate(
        torch.nn.functional.avg_pool2d(coarse, 3, 1, 1, count_include_pad=True), size=(8, 8), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(out[:, 1:], coarse_pooled)
    assert out[0, 1, 4, 4] == 1.0 and out[0, 1, 0, 0] < 1.0
    rows = to_patch_rows(out)
    assert rows.shape == (64, 3) and rows[4 * 8 + 4, 0] == 1.0


def test_maps_upsample_and_smooth():
    patch = torch.zeros(1, 8, 8)
    patch[0, 2, 6] = 1.0
    m = upsample_and_smooth(patch, 64, sigma=4)
    assert m.shape == (1, 64, 64) and m.dtype == np.float32
    y, x = np.unravel_index(m[0].argmax(), m[0].shape)
    assert abs(y - 2.5 * 8) <= 2 and abs(x - 6.5 * 8) <= 2
    assert gaussian_kernel_size(4) == 33
    raw = upsample_and_smooth(patch, 64, sigma=0)
    assert raw.max() > m.max()  # smoothing spreads the peak


@pytest.mark.parametrize("sigma", [0.5, 2.0, 4.0])
def test_gaussian_blur_is_torchvisions_up_to_rounding(sigma):
    from torchvision.transforms.v2 import functional as TF

    maps = torch.from_numpy(np.random.default_rng(3).gamma(2.0, size=(3, 1, 40, 56)).astype(np.float32))
    size = gaussian_kernel_size(sigma)
    ours, theirs = gaussian_blur(maps, size, sigma), TF.gaussian_blur(maps, kernel_size=[size, size], sigma=[sigma, sigma])
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours, maps, rtol=1e-2)  # it did blur


@pytest.mark.parametrize("shape, size, sigma", [((32, 32), 256, 4.0), ((17, 23), (50, 70), 2.0), ((8, 8), 64, 0.0), ((4, 4), 9, 4.0)])
def test_upsample_and_smooth_is_interpolate_then_torchvision_blur(shape, size, sigma):
    """The one-matrix-per-axis maps equal PyTorch's bilinear upsampling followed by torchvision's
    blur (reflect padding, also where the kernel is wider than the map) up to float rounding."""
    import torch.nn.functional as F
    from torchvision.transforms.v2 import functional as TF

    patch = torch.from_numpy(np.random.default_rng(5).gamma(2.0, size=(3, *shape)).astype(np.float32))
    out_size = (size, size) if isinstance(size, int) else size
    expected = F.interpolate(patch[:, None], size=out_size, mode="bilinear", align_corners=False)
    if sigma > 0:
        k = gaussian_kernel_size(sigma)
        padded = expected
        if k // 2 >= min(out_size):  # torchvision's reflect pad needs pad < size: reflect twice by hand
            padded = torch.cat([expected.flip(-2)[..., :-1, :], expected, expected.flip(-2)[..., 1:, :]], dim=-2)
            padded = torch.cat([padded.flip(-1)[..., :-1], padded, padded.flip(-1)[..., 1:]], dim=-1)
            blurred = TF.gaussian_blur(padded, kernel_size=[k, k], sigma=[sigma, sigma])
            expected = blurred[..., out_size[0] - 1: 2 * out_size[0] - 1, out_size[1] - 1: 2 * out_size[1] - 1]
        else:
            expected = TF.gaussian_blur(expected, kernel_size=[k, k], sigma=[sigma, sigma])
    ours = upsample_and_smooth(patch, size, sigma)
    assert ours.shape == (3, *out_size) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_merged_neighbour_lists_equal_a_search_of_the_union():
    from shiftad.components.knn import merge_neighbours

    rng = np.random.default_rng(4)
    a, b, queries = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)), rng.normal(size=(50, 8))
    for k in (1, 5):
        da, ia = NearestNeighbours(a).query(queries, k)
        db, ib = NearestNeighbours(b).query(queries, k)
        d, i = merge_neighbours(da, ia, db, ib + len(a), k)
        ref_d, ref_i = SkNN(n_neighbors=k).fit(np.concatenate([a, b])).kneighbors(queries)
        np.testing.assert_array_equal(i, ref_i)
        np.testing.assert_allclose(d, ref_d, rtol=1e-4)


def test_foreground_mask_keeps_the_side_of_the_first_component_that_covers_the_centre():
    from shiftad.components.foreground import foreground_mask

    rng = np.random.default_rng(5)
    h = w = 12
    centre = np.zeros((h, w), dtype=bool)
    centre[3:9, 3:9] = True
    direction = rng.normal(size=32)
    direction /= np.linalg.norm(direction)
    for sign in (1.0, -1.0):  # the component's sign is arbitrary: the centre decides
        tokens = rng.normal(size=(h * w, 32)) * 0.5 + np.where(centre.reshape(-1, 1), 30.0, -30.0) * sign * direction
        mask = foreground_mask(tokens, (h, w), threshold=10.0).reshape(h, w)
        assert mask[centre].all()
        assert not mask[0, 0] and not mask[-1, -1]  # far background stays out (dilation adds one ring only)
        assert mask.sum() <= (8 * 8)  # the 6×6 centre plus at most one dilated ring
    with pytest.raises(ValueError, match="grid"):
        foreground_mask(np.zeros((10, 4)), (3, 3))
