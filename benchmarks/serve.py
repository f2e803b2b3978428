"""Inspection speed of a bundle: torch against ONNX Runtime (and anomalib's PatchCore forward
for a PatchCore bundle), printed side by side.

    python benchmarks/serve.py                                   # results/bundles/patchcore/per_class/clean
    python benchmarks/serve.py --bundle results/bundles/knn/per_class/clean --category brick \\
        --clients 4 --requests 64 --threads 2

1. Single-image latency, broken down: preprocess (decode + resize to the model input),
   backbone (the feature network), scoring (everything else the detector does: patch
   aggregation, nearest neighbours or Mahalanobis distances, the upsampled, smoothed map),
   heatmap (overlay + PNG encode, as predict / the API return it). Median of --repeats.
2. Batch throughput: images per second through `score_images` at several batch sizes.
3. HTTP: `shiftad serve` in a subprocess on loopback, --clients concurrent clients sending
   --requests multipart uploads in all; latency p50 / p95 and requests per second.

Images: the bundle category's validation and test images from the pipeline's splits (run the
DAG first), or a folder given with --images.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def median_ms(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def load_images(args: argparse.Namespace, category: str) -> list[Path]:
    if args.images:
        from shiftad.data.images import list_image_files

        return list_image_files(args.images)
    from shiftad.split import domain_view

    view = domain_view("clean")
    return [Path(r.path) for split in ("val", "test") for r in view.get(category, split)]


def latency_breakdown(bundle, category: str, path: Path, repeats: int) -> dict[str, float]:
    from shiftad.data.images import read_image
    from shiftad.evaluate.stage import overlay
    from shiftad.serve import png_base64

    model = bundle.model(category)
    image = read_image(path)
    batch = model.prepare_batch([image])
    scores = model.score_images([image])
    facts = {
        "preprocess": median_ms(lambda: model.prepare_batch([read_image(path)]), repeats),
        "backbone": median_ms(lambda: model.features(batch), repeats),
    }
    total = median_ms(lambda: model.score_images([image]), repeats)  # prepare + backbone + scoring, image in memory
    facts["scoring"] = max(total - facts["backbone"] - median_ms(lambda: model.prepare_batch([image]), repeats), 0.0)
    threshold = bundle.threshold(category)
    facts["heatmap"] = median_ms(lambda: png_base64(overlay(image, scores.maps[0], float(scores.maps[0].min()), threshold)), repeats)
    facts["total"] = facts["preprocess"] + facts["backbone"] + facts["scoring"] + facts["heatmap"]
    return facts


def anomalib_latency(bundle, category: str, path: Path, repeats: int) -> float | None:
    """anomalib's PatchcoreModel eval forward (features, kNN, map) on the same image, with this
    bundle's memory bank copied in: the peer's single-image latency at equal bank size."""
    if bundle.meta["detector"] != "patchcore":
        return None
    import torch
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    from shiftad.backbones import create_backbone
    from shiftad.data.images import read_image
    from shiftad.detectors.padim import load_backbone_weights

    ours = bundle.model(category)
    peer = PatchcoreModel(backbone=ours.backbone, layers=list(ours.layers), pre_trained=False, num_neighbors=9)
    load_backbone_weights(peer.feature_extractor.feature_extractor, create_backbone(ours.backbone, ours.weights)[0], "offline weights")
    peer.memory_bank = torch.from_numpy(ours.memory_bank_)
    peer.eval()
    image = read_image(path)

    def forward() -> None:
        with torch.no_grad():
            peer(ours.prepare_batch([image]))

    return median_ms(forward, repeats)


def throughput(bundle, category: str, paths: Sequence[Path], batch_sizes: Sequence[int]) -> dict[int, float]:
    from shiftad.data.images import read_image

    model = bundle.model(category)
    images = [read_image(p) for p in paths]
    out = {}
    for size in batch_sizes:
        model.score_images(images[:size])  # warm-up: oneDNN builds its kernels per input shape on first use
        start = time.perf_counter()
        for i in range(0, len(images), size):
            model.score_images(images[i : i + size])
        out[size] = len(images) / (time.perf_counter() - start)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_latency(bundle_dir: Path, runtime: str, category: str, paths: Sequence[Path], clients: int, requests: int,
                 threads: int) -> dict[str, float]:
    import httpx

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    server = subprocess.Popen([str(Path(sys.executable).parent / "shiftad"), "serve", "--bundle", str(bundle_dir), "--port", str(port),
                               "--runtime", runtime], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("shiftad serve did not come up")
            time.sleep(0.2)
        payloads = [p.read_bytes() for p in paths]

        def one(i: int) -> float:
            start = time.perf_counter()
            r = httpx.post(f"{url}/predict", files={"file": (paths[i % len(paths)].name, payloads[i % len(paths)], "image/png")},
                           data={"category": category}, timeout=120)
            r.raise_for_status()
            return time.perf_counter() - start

        one(0)  # warm-up: loads the model
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = sorted(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {"p50_ms": 1000 * float(np.percentile(latencies, 50)), "p95_ms": 1000 * float(np.percentile(latencies, 95)),
            "requests_per_s": requests / wall}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="results/bundles/patchcore/per_class/clean")
    parser.add_argument("--category", help="default: the bundle's first category")
    parser.add_argument("--images", help="a folder of images (default: the category's val + test images)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime threads")
    args = parser.parse_args(argv)

    import torch

    from shiftad.bundle import load_bundle

    torch.set_num_threads(args.threads)
    bundle_dir = Path(args.bundle)
    bundles = {"torch": load_bundle(bundle_dir), "onnx": load_bundle(bundle_dir, runtime="onnx")}
    bundles["onnx"].onnx_threads = args.threads
    category = args.category or bundles["torch"].categories[0]
    paths = load_images(args, category)
    if not paths:
        raise SystemExit(f"no images for category {category}")
    meta = bundles["torch"].meta
    print(f"bundle {bundle_dir}: {meta['detector']} ({meta['regime']}, {meta['domain']}), category {category}, "
          f"image size {meta['image_size']}, {len(paths)} images, {args.threads} threads, {os.cpu_count()} CPUs")

    print(f"\n1. single-image latency (ms, median of {args.repeats})")
    rows = {runtime: latency_breakdown(b, category, paths[0], args.repeats) for runtime, b in bundles.items()}
    peer = anomalib_latency(bundles["torch"], category, paths[0], args.repeats)
    print(f"{'stage':<12}" + "".join(f"{r:>12}" for r in rows) + (f"{'anomalib':>12}" if peer is not None else ""))
    for stage in ("preprocess", "backbone", "scoring", "heatmap", "total"):
        line = f"{stage:<12}" + "".join(f"{rows[r][stage]:>12.1f}" for r in rows)
        if peer is not None:
            line += f"{peer:>12.1f}" if stage == "total" else f"{'':>12}"
        print(line)
    if peer is not None:
        print("(anomalib: PatchcoreModel eval forward on the prepared image, bank copied from this bundle; no PNG heatmap)")

    print("\n2. batch throughput (images/s through score_images)")
    print(f"{'batch':<12}" + "".join(f"{r:>12}" for r in bundles))
    results = {r: throughput(b, category, paths, args.batch_sizes) for r, b in bundles.items()}
    for size in args.batch_sizes:
        print(f"{size:<12}" + "".join(f"{results[r][size]:>12.1f}" for r in bundles))

    print(f"\n3. HTTP POST /predict on loopback: {args.clients} concurrent clients, {args.requests} requests")
    http = {r: http_latency(bundle_dir, r, category, paths, args.clients, args.requests, args.threads) for r in bundles}
    print(f"{'':<16}" + "".join(f"{r:>12}" for r in http))
    for key, label in (("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("requests_per_s", "requests/s")):
        print(f"{label:<16}" + "".join(f"{http[r][key]:>12.1f}" for r in http))


if __name__ == "__main__":
    main()
