"""Exact k-NN search for the memory-bank detectors: faiss (CPU, flat L2; what shiftad uses)
against a batched torch search (cdist per bank chunk, running top-k), bank sizes 1k to 1M
patches of 152-d features (Lite0 blocks.2 + blocks.4).

Each (method, bank size) runs in its own subprocess so its peak RSS is its own. Both methods
must return the same neighbours; the script checks that on every run.

    python benchmarks/knn.py                       # 1k, 10k, 100k, 1M bank rows, 8192 queries, k = 1
    python benchmarks/knn.py --sizes 1000 20000 --k 5 --queries 4096 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

DIM = 152


def data(bank_size: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((64, DIM), dtype=np.float32) * 3  # clustered, like patch features
    bank = centres[rng.integers(0, 64, bank_size)]
    bank += rng.standard_normal(bank.shape, dtype=np.float32)
    query = centres[rng.integers(0, 64, queries)]
    query += rng.standard_normal(query.shape, dtype=np.float32)
    return bank, query


def search_faiss(bank: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    from shiftad.components.knn import NearestNeighbours

    return NearestNeighbours(bank).query(query, k)


def search_torch(bank: np.ndarray, query: np.ndarray, k: int, query_batch: int = 1024, bank_chunk: int = 65536):
    import torch

    b, q = torch.from_numpy(bank), torch.from_numpy(query)
    distances, indices = [], []
    for start in range(0, len(q), query_batch):
        part = q[start : start + query_batch]
        best_d = torch.full((len(part), k), float("inf"))
        best_i = torch.zeros((len(part), k), dtype=torch.long)
        for offset in range(0, len(b), bank_chunk):
            d = torch.cdist(part, b[offset : offset + bank_chunk])
            d, i = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            merged_d, order = torch.topk(torch.cat([best_d, d], 1), k, dim=1, largest=False)
            best_i = torch.gather(torch.cat([best_i, i + offset], 1), 1, order)
            best_d = merged_d
        distances.append(best_d)
        indices.append(best_i)
    return torch.cat(distances).numpy(), torch.cat(indices).numpy()


def child(method: str, bank_size: int, queries: int, k: int, threads: int) -> dict:
    import faiss
    import torch

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    bank, query = data(bank_size, queries)
    data_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # libraries + the arrays themselves
    search = search_faiss if method == "faiss" else search_torch
    search(bank, query[:64], k)  # warm-up
    start = time.perf_counter()
    distances, indices = search(bank, query, k)
    seconds = time.perf_counter() - start
    np.save(f"/tmp/knn_bench_{method}.npy", indices[:, 0])
    return {"method": method, "bank": bank_size, "queries_per_s": queries / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "data_rss_mb": data_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=8192)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.queries, args.k, args.threads)))
        return
    print(f"exact k-NN, k = {args.k}, {args.queries} queries, {DIM}-d, {args.threads} threads")
    print("peak RSS = the process's peak (libraries + bank + queries + search); +search = peak minus the peak before searching")
    print(f"{'bank rows':>10} | {'faiss q/s':>10} {'RSS MB':>7} {'+search':>8} | {'torch q/s':>10} {'RSS MB':>7} {'+search':>8} | faiss/torch | same neighbours")
    for size in args.sizes:
        rows = {}
        for method in ("faiss", "torch"):
            out = subprocess.run([sys.executable, __file__, "--child", method, str(size), "--queries", str(args.queries),
                                  "--k", str(args.k), "--threads", str(args.threads)], capture_output=True, text=True, check=True)
            rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
        same = float(np.mean(np.load("/tmp/knn_bench_faiss.npy") == np.load("/tmp/knn_bench_torch.npy")))
        f, t = rows["faiss"], rows["torch"]
        print(f"{size:>10} | {f['queries_per_s']:>10.0f} {f['peak_rss_mb']:>7.0f} {f['peak_rss_mb'] - f['data_rss_mb']:>8.0f} | "
              f"{t['queries_per_s']:>10.0f} {t['peak_rss_mb']:>7.0f} {t['peak_rss_mb'] - t['data_rss_mb']:>8.0f} | "
              f"{f['queries_per_s'] / t['queries_per_s']:>10.1f}× | {same:.4f}")


if __name__ == "__main__":
    main()
