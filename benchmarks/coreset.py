"""Greedy k-center coreset: picks per second of ours beside anomalib 2.7's `KCenterGreedy`, on
real PatchCore patch features (issue 22 asks for >= 1,000 picks/s on 163k x 128 with 2 threads).

Features: PatchCore's locally aware patch rows (tf_efficientnet_lite0 blocks.2 + blocks.4,
3x3 neighbourhood, 256 px) of a category's train images — KolektorSDD's when
`../shared/data/kolektorsdd` exists (the real case: ~160 images x 1,024 patches ≈ 163k rows),
else a generated category. Ours runs the whole coreset; anomalib costs the same every step, so
it is timed over `--picks` steps.

    python benchmarks/coreset.py                        # KolektorSDD if present, 10%, 2 threads
    python benchmarks/coreset.py --data path/to/category --ratio 0.01 --threads 2
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
KOLEKTOR = REPO.parent / "shared" / "data" / "kolektorsdd"


def patch_features(category: Path, max_images: int, image_size: int) -> np.ndarray:
    """(N, C) PatchCore patch rows of up to `max_images` train images of one MVTec-layout category."""
    from shiftad.data.mvtec import scan_mvtec_layout
    from shiftad.detectors.patchcore import PatchCore

    records = [r for r in scan_mvtec_layout(category) if r.source_split == "train"][:max_images]
    model = PatchCore(layers=["blocks.2", "blocks.4"], image_size=image_size)
    model.progress = False
    rows = model.patch_rows(records, desc=None).bank_rows()
    print(f"features: {len(records)} train images of {category} -> {rows.shape[0]} x {rows.shape[1]}", flush=True)
    return rows


def timed_steps(step, picks: int) -> float:
    start = time.perf_counter()
    for _ in range(picks):
        step()
    return picks / (time.perf_counter() - start)


def plain_loop_seconds(features, selected, projection_dim: int, seed: int) -> float:
    """Seconds of the plain exact loop (one pass over every row per pick); raises unless it
    picks exactly `selected`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference: one thread, as ours (several round the rows at a thread's edge differently)
    x = features.float()
    if projection_dim < x.shape[1]:
        x = x @ (torch.randn(x.shape[1], projection_dim, generator=generator) / math.sqrt(projection_dim))
    x = x.contiguous()
    start = time.perf_counter()
    sq_norms = (x * x).sum(dim=1)
    min_dist = torch.full((len(x),), float("inf"))
    current = int(selected[0])
    for i in range(len(selected)):
        if current != int(selected[i]):
            raise SystemExit(f"the plain loop picks row {current} at step {i}, ours {int(selected[i])}")
        torch.minimum(min_dist, sq_norms - 2.0 * (x @ x[current]) + sq_norms[current], out=min_dist)
        current = int(torch.argmax(min_dist))
    seconds = time.perf_counter() - start
    torch.set_num_threads(threads)
    return seconds


def anomalib_rate(features, picks: int) -> float:
    """Picks/s of anomalib's KCenterGreedy (its own sparse random projection, then its loop)."""
    from anomalib.models.components.sampling import KCenterGreedy

    sampler = KCenterGreedy(features, sampling_ratio=picks / features.shape[0])
    start = time.perf_counter()
    sampler.select_coreset_idxs()
    return picks / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=KOLEKTOR if KOLEKTOR.is_dir() else None,
                        help="an MVTec-layout category folder (default: KolektorSDD if present, else a generated category)")
    parser.add_argument("--max-images", type=int, default=160)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--projection-dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--picks", type=int, default=300, help="steps timed for anomalib")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-plain", action="store_true",
                        help="also run the plain loop (every row meets every center) and require the same indices")
    args = parser.parse_args(argv)

    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # anomalib's per-pick bar
    import torch

    from shiftad.components.coreset import greedy_coreset_indices

    torch.set_num_threads(args.threads)
    data = args.data
    if data is None:
        sys.path.insert(0, str(REPO / "benchmarks"))
        import tempfile

        from patchcore_vs_anomalib import generate_synthetic_category

        data = generate_synthetic_category(Path(tempfile.mkdtemp(prefix="shiftad-coreset-")), "brick", args.seed)
    features = torch.from_numpy(patch_features(data, args.max_images, args.image_size))
    k = math.ceil(args.ratio * features.shape[0])

    start = time.perf_counter()
    selected = greedy_coreset_indices(features, args.ratio, args.projection_dim, args.seed, progress=False)
    ours_s = time.perf_counter() - start
    anomalib = anomalib_rate(features, min(args.picks, k))
    plain_s = plain_loop_seconds(features, selected, args.projection_dim, args.seed) if args.check_plain else None

    print(f"\n{features.shape[0]} x {features.shape[1]} features, projection {args.projection_dim}, ratio {args.ratio} "
          f"-> {k} picks, {args.threads} threads")
    print(f"{'':28}{'picks/s':>10}{'coreset s':>11}")
    print(f"{'shiftad':28}{k / ours_s:>10.0f}{ours_s:>11.1f}")
    if plain_s is not None:
        print(f"{'plain loop (same indices)':28}{k / plain_s:>10.0f}{plain_s:>11.1f}")
    print(f"{'anomalib KCenterGreedy':28}{anomalib:>10.0f}{k / anomalib:>11.1f}  (timed over {min(args.picks, k)} picks)")


if __name__ == "__main__":
    main()
