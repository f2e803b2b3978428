"""Benchmark shiftad's PatchCore against anomalib's Patchcore on the same images.

    python benchmarks/patchcore_vs_anomalib.py [CATEGORY_FOLDER] [--coreset-ratio 0.01]
        [--image-size 256] [--max-train N] [--only shiftad|anomalib] [--json out.json]

CATEGORY_FOLDER is one category in MVTec AD layout (train/good, test/good, test/<defect>,
ground_truth/<defect>/<stem>_mask.png). Without it, one category of shiftad's synthetic set
is generated into a temporary folder.

Both implementations use the same backbone (tf_efficientnet_lite0) with the same offline
ImageNet weights, the same layers, image size, coreset ratio, batch size and thread count,
and see the same pixels: every image is read with shiftad's `read_image` (grayscale -> RGB)
and resized to image_size x image_size with shiftad's `to_tensor_batch` (bilinear,
antialiased). Each then applies its own input normalisation: shiftad the backbone's timm
default (mean = std = 0.5 for tf_efficientnet_lite0), anomalib its PreProcessor's ImageNet
mean/std. That difference is anomalib's behaviour and is reported, not corrected.

Each implementation runs in its own subprocess, so the peak RSS is its own. The child writes
image scores and anomaly maps to a scratch folder; the parent computes both AUROCs with the
same code for both (pixel AUROC at the model input size, masks resized nearest-neighbour).
anomalib is driven without its Engine: its torch model collects embeddings in training mode,
`Patchcore.fit()` runs its coreset subsampling (what the Engine calls after the epoch), and
in eval mode the torch model returns pred_score and anomaly_map.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from shiftad.backbones import FeatureExtractor

BACKBONE = "tf_efficientnet_lite0"
LAYERS = ["blocks.2", "blocks.4"]
IMPLEMENTATIONS = ("shiftad", "anomalib")
# glibc otherwise serves anomalib's large per-iteration temporaries from a fragmenting heap,
# and its coreset can be OOM-killed; set for both children so the comparison stays fair.
MALLOC_MMAP_THRESHOLD = "1048576"


# ----------------------------------------------------------------------------- data


def generate_synthetic_category(folder: Path, category: str, seed: int) -> Path:
    """Generate one synthetic category (SyntheticParams' default sizes); return its folder."""
    from shiftad.data.synthetic import generate_synthetic
    from shiftad.params import SyntheticParams

    generate_synthetic(folder, SyntheticParams(), seed=seed, categories=[category], progress=False)
    return folder / category


def load_records(category_folder: Path, max_train: int | None) -> tuple[list[dict], list[dict]]:
    """(train, test) records of one category folder, as plain dicts with absolute paths."""
    from shiftad.data.mvtec import scan_mvtec_layout

    records = scan_mvtec_layout(category_folder)
    categories = {r.category for r in records}
    if len(categories) != 1:
        sys.exit(f"{category_folder}: holds several categories {sorted(categories)}; pass one category folder")
    rows = []
    for r in records:
        row = r.to_dict()
        row["path"] = str(Path(r.path).absolute())
        row["mask_path"] = str(Path(r.mask_path).absolute()) if r.mask_path else None
        rows.append(row)
    train = [r for r in rows if r["source_split"] == "train"]
    test = [r for r in rows if r["source_split"] == "test"]
    if max_train is not None:
        train = train[:max_train]
    if not train or not test:
        sys.exit(f"{category_folder}: needs images in train/good and test/")
    return train, test


def load_masks(test: list[dict], size: int) -> np.ndarray:
    """(N, size, size) bool ground truth at the model input size; all False for normal images."""
    from PIL import Image

    from shiftad.data.images import image_size, read_mask

    masks = np.zeros((len(test), size, size), dtype=bool)
    for i, record in enumerate(test):
        if record["mask_path"] is None:
            continue
        mask = read_mask(record["mask_path"], image_size(record["path"]), record["path"])
        resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.Resampling.NEAREST)
        masks[i] = np.asarray(resized) > 0
    return masks


def image_batches(paths: Sequence[str], batch_size: int) -> Iterator[list[np.ndarray]]:
    from shiftad.data.images import read_image

    for start in range(0, len(paths), batch_size):
        yield [read_image(p) for p in paths[start : start + batch_size]]


# ----------------------------------------------------------------------------- children


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MB.

    VmHWM (peak resident set) belongs to the address space, so it starts from zero at exec.
    ru_maxrss does not: Linux carries the pre-exec (vfork'ed parent's) high-water mark into
    the child, so it could report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def timed(function: Callable, store: dict[str, float], key: str) -> Callable:
    """Wrap `function` so the seconds it takes add up in store[key] (to split fit time)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            store[key] = store.get(key, 0.0) + time.perf_counter() - start

    return wrapper


def run_shiftad(settings: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    import torch

    import shiftad.detectors.patchcore as patchcore_module
    from shiftad.data.records import ImageRecord
    from shiftad.detectors.patchcore import PatchCore

    size = settings["image_size"]
    train = [ImageRecord(**r) for r in settings["train"]]
    test = [ImageRecord(**r) for r in settings["test"]]
    model = PatchCore(
        backbone=BACKBONE, weights="auto", layers=LAYERS, image_size=size,
        coreset_ratio=settings["coreset_ratio"], batch_size=settings["batch_size"], seed=settings["seed"],
    )  # fmt: skip
    model.progress = settings["progress"]
    # Build the backbone (weights loaded) and run one warm-up batch before the clock starts,
    # as for anomalib below: fit seconds are features + coreset, not model construction.
    model.embed([np.zeros((size, size, 3), dtype=np.uint8)])
    parts: dict[str, float] = {}
    rss_before_fit = memory_mb("VmRSS")  # imports + model: the floor under the peak
    patchcore_module.greedy_coreset_indices = timed(patchcore_module.greedy_coreset_indices, parts, "coreset")

    start = time.perf_counter()
    model.fit(train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = model.score(test)
    predict_s = time.perf_counter() - start

    facts = {
        "fit_s": fit_s,
        "coreset_s": parts["coreset"],
        "predict_s": predict_s,
        "peak_rss_mb": memory_mb("VmHWM"),
        "rss_before_fit_mb": rss_before_fit,
        "train_patches": model.n_train_patches_,
        "memory_bank": int(model.memory_bank_.shape[0]),
        "feature_grid": list(model.feature_grid_),
        "embedding_dim": int(model.memory_bank_.shape[1]),
        "normalisation": {"mean": model.extractor.mean.flatten().tolist(), "std": model.extractor.std.flatten().tolist()},
        "image_score": model.image_score,
        "torch_threads": torch.get_num_threads(),
    }
    return facts, scores.image_scores, scores.maps


def load_offline_weights(timm_features_model: torch.nn.Module, source: torch.nn.Module) -> None:
    """Copy the classifier's tensors into anomalib's features_only model by name.

    features_only drops the head (conv_head, bn2, classifier); every tensor it keeps has the
    same name and shape in the classifier. Fail unless every one of them is filled.
    """
    source_state = source.state_dict()
    target_state = timm_features_model.state_dict()
    missing = [k for k in target_state if k not in source_state or source_state[k].shape != target_state[k].shape]
    if missing:
        raise RuntimeError(f"anomalib's extractor has tensors the offline weights lack: {missing[:10]}")
    timm_features_model.load_state_dict({k: source_state[k] for k in target_state}, strict=True)
    print(f"[anomalib] offline weights: filled {len(target_state)}/{len(target_state)} tensors of its extractor "
          f"({len(source_state) - len(target_state)} head tensors of the classifier unused)")  # fmt: skip


def run_anomalib(settings: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    import torch
    from anomalib.models import Patchcore
    from torchvision.transforms.v2 import Normalize

    from shiftad.backbones import FeatureExtractor, create_backbone, to_tensor_batch

    # anomalib's coreset start and projection signs come from torch's global generator, the
    # projection's column choice from sklearn with NumPy's global one: seed both.
    torch.manual_seed(settings["seed"])
    np.random.seed(settings["seed"])
    size, batch_size = settings["image_size"], settings["batch_size"]
    model = Patchcore(
        backbone=BACKBONE, layers=LAYERS, pre_trained=False,
        coreset_sampling_ratio=settings["coreset_ratio"], num_neighbors=9,
        pre_processor=Patchcore.configure_pre_processor(image_size=(size, size)),
        post_processor=False, evaluator=False, visualizer=False,  # unused without the Engine
    )  # fmt: skip
    extractor = model.model.feature_extractor
    # anomalib drops a misspelled layer with only a warning: make sure both are there.
    assert list(extractor.layers) == LAYERS and len(extractor.idx) == len(LAYERS), (extractor.layers, extractor.idx)

    # the full classifier with the offline ImageNet weights, as shiftad loads it
    load_offline_weights(extractor.feature_extractor, create_backbone(BACKBONE, "auto")[0])
    ours = FeatureExtractor(BACKBONE, LAYERS, "auto")
    check_features(ours, extractor)
    del ours

    transform = model.pre_processor.transform  # Resize to (size, size): a no-op here; ImageNet Normalize
    normalize = next(t for t in transform.transforms if isinstance(t, Normalize))
    check_preprocessing(transform, normalize, size)
    torch_model = model.model

    def prepare(images: list[np.ndarray]) -> torch.Tensor:
        return transform(to_tensor_batch(images, size))

    with torch.no_grad():  # warm-up, outside the clock (as for shiftad)
        extractor(prepare([np.zeros((size, size, 3), dtype=np.uint8)]))
    rss_before_fit = memory_mb("VmRSS")  # imports + model: the floor under the peak

    start = time.perf_counter()
    torch_model.train()  # training mode: forward appends embeddings to embedding_store
    with torch.no_grad():
        for images in image_batches([r["path"] for r in settings["train"]], batch_size):
            torch_model(prepare(images))
    train_patches = sum(int(e.shape[0]) for e in torch_model.embedding_store)
    coreset_start = time.perf_counter()
    model.fit()  # Patchcore.fit -> PatchcoreModel.subsample_embedding (KCenterGreedy)
    fit_end = time.perf_counter()
    fit_s, coreset_s = fit_end - start, fit_end - coreset_start

    torch_model.eval()
    image_scores, maps = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for images in image_batches([r["path"] for r in settings["test"]], batch_size):
            output = torch_model(prepare(images))
            image_scores.append(output.pred_score.numpy())
            maps.append(output.anomaly_map[:, 0].numpy())
    predict_s = time.perf_counter() - start
    image_scores, maps = np.concatenate(image_scores), np.concatenate(maps)

    facts = {
        "fit_s": fit_s,
        "coreset_s": coreset_s,
        "predict_s": predict_s,
        "peak_rss_mb": memory_mb("VmHWM"),
        "rss_before_fit_mb": rss_before_fit,
        "train_patches": train_patches,
        "memory_bank": int(torch_model.memory_bank.shape[0]),
        "embedding_dim": int(torch_model.memory_bank.shape[1]),
        "normalisation": {"mean": list(normalize.mean), "std": list(normalize.std)},
        "image_score": "reweighted (num_neighbors=9)",
        "torch_threads": torch.get_num_threads(),
    }
    return facts, image_scores, maps


def check_features(ours: FeatureExtractor, extractor: torch.nn.Module) -> None:
    """The same network input must give the same features of both layers in both backbones."""
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 128, 128, generator=generator)
    with torch.no_grad():
        our_features = ours(images)  # ours normalises inside with its own mean/std
        their_features = extractor((images - ours.mean) / ours.std)
    for layer, mine in zip(LAYERS, our_features):
        theirs = their_features[layer]
        diff = float((mine - theirs).abs().max())
        scale = float(mine.abs().max())
        print(f"[anomalib] check: {layer} features for the same network input, max |diff| = {diff:.2e} "
              f"(max |feature| = {scale:.2f}), shape {tuple(theirs.shape)}")  # fmt: skip
        if mine.shape != theirs.shape or diff > 1e-4 * max(scale, 1.0):
            raise RuntimeError(f"anomalib's backbone does not reproduce shiftad's {layer} features: weights not copied right")


def check_preprocessing(transform: Callable, normalize: Callable, size: int) -> None:
    """On images already size x size, anomalib's PreProcessor must only normalise (its Resize is a no-op)."""
    import torch

    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    diff = float((transform(images) - normalize(images)).abs().max())
    print(f"[anomalib] check: PreProcessor on {size}x{size} input = Normalize alone, max |diff| = {diff:.2e}")
    if diff > 1e-6:
        raise RuntimeError("anomalib's PreProcessor changes already-resized images beyond normalising them")


def run_child(implementation: str, work: Path) -> None:
    """Child process entry: fit + predict one implementation, write facts and outputs to `work`."""
    import torch

    settings = json.loads((work / "settings.json").read_text())
    torch.set_num_threads(settings["threads"])
    run = run_shiftad if implementation == "shiftad" else run_anomalib
    facts, image_scores, maps = run(settings)
    np.save(work / f"{implementation}_image_scores.npy", image_scores.astype(np.float64))
    np.save(work / f"{implementation}_maps.npy", maps.astype(np.float32))
    (work / f"{implementation}.json").write_text(json.dumps(facts, indent=2))


def start_child(implementation: str, work: Path, threads: int, progress: bool) -> dict:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = MALLOC_MMAP_THRESHOLD
    if not progress:
        env["TQDM_DISABLE"] = "1"  # anomalib's coreset bar has no other switch
    # torch.set_num_threads covers torch; these cover faiss (OpenMP) and MKL/OpenBLAS too.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", implementation, "--work", str(work)]
    print(f"--- {implementation}: running in a subprocess", flush=True)
    busy_before, child_before, start = machine_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, env=env)
    if result.returncode != 0:
        sys.exit(f"{implementation} failed (exit status {result.returncode})")
    wall = time.perf_counter() - start
    others = (machine_busy_seconds() - busy_before) - (children_cpu_seconds() - child_before)
    facts = json.loads((work / f"{implementation}.json").read_text())
    # Other processes distort timings badly on 2 cores (see README): record their CPU share.
    facts["other_cpu_share"] = max(0.0, others) / (wall * (os.cpu_count() or 1))
    return facts


def machine_busy_seconds() -> float:
    """CPU seconds all processes have used since boot (all CPUs, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- metrics and report


def add_metrics(facts: dict, image_scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> None:
    from sklearn.metrics import roc_auc_score

    from shiftad.evaluate.metrics import exact_auroc

    facts["image_auroc"] = float(roc_auc_score(labels, image_scores)) if 0 < labels.sum() < len(labels) else math.nan
    facts["pixel_auroc"] = exact_auroc(maps, masks) if masks.any() else math.nan
    facts["predict_images_per_s"] = len(labels) / facts["predict_s"]


# (label, key, format, show the shiftad/anomalib ratio)
ROWS = [
    ("fit seconds", "fit_s", "{:.1f}", True),
    ("  of which coreset", "coreset_s", "{:.1f}", True),
    ("predict images/s", "predict_images_per_s", "{:.2f}", True),
    ("peak RSS MB", "peak_rss_mb", "{:.0f}", True),
    ("  RSS before fit MB", "rss_before_fit_mb", "{:.0f}", True),
    ("image AUROC", "image_auroc", "{:.4f}", True),
    ("pixel AUROC", "pixel_auroc", "{:.4f}", True),
    ("memory bank patches", "memory_bank", "{:d}", False),
    ("other processes' CPU", "other_cpu_share", "{:.0%}", False),
]
BUSY_WARNING = 0.05  # share of the CPUs other processes may use before timings are flagged


def child_env(threads: int, progress: bool) -> dict[str, str]:
    """A benchmark child's environment: the glibc setting both sides run with, `threads` for
    OpenMP / MKL / OpenBLAS, progress bars off unless asked for."""
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = MALLOC_MMAP_THRESHOLD
    if not progress:
        env["TQDM_DISABLE"] = "1"
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    return env


def run_measured_child(command: list[str], env: dict[str, str], work: Path, label: str, facts_file: Path) -> dict:
    """Run one benchmark child in `work`; its facts (JSON it wrote) + wall time and the share of
    the CPUs other processes used meanwhile."""
    print(f"--- {label}: running in a subprocess", flush=True)
    busy_before, child_before, start = machine_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    result = subprocess.run(command, env=env, cwd=work)  # cwd: nothing a child writes lands in the repo
    if result.returncode != 0:
        raise SystemExit(f"{label} failed (exit status {result.returncode})")
    wall = time.perf_counter() - start
    others = (machine_busy_seconds() - busy_before) - (children_cpu_seconds() - child_before)
    facts = json.loads(facts_file.read_text())
    facts["wall_s"] = wall
    facts["other_cpu_share"] = max(0.0, others) / (wall * (os.cpu_count() or 1))
    return facts


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def busy_note(name: str, facts: dict) -> str | None:
    if facts["other_cpu_share"] > BUSY_WARNING:
        return f"  note: other processes used {facts['other_cpu_share']:.0%} of the CPUs during {name}; its times are pessimistic"
    return None


def format_table(results: dict[str, dict]) -> str:
    names = [name for name in IMPLEMENTATIONS if name in results]
    both = len(names) == 2
    lines = ["".ljust(22) + "".join(n.rjust(11) for n in names) + ("ratio".rjust(11) if both else "")]
    for label, key, fmt, with_ratio in ROWS:
        cells = [fmt.format(results[n][key]).rjust(11) for n in names]
        ratio = ""
        if both and with_ratio and results["anomalib"][key]:
            ratio = f"{results['shiftad'][key] / results['anomalib'][key]:.2f}".rjust(11)
        lines.append(label.ljust(22) + "".join(cells) + ratio)
    if both:
        lines.append("(ratio = shiftad / anomalib)")
    for name in names:
        if results[name]["other_cpu_share"] > BUSY_WARNING:
            lines.append(f"WARNING: other processes used {results[name]['other_cpu_share']:.0%} of the CPUs during "
                         f"the {name} run; its timings are not trustworthy (rerun on an idle machine)")  # fmt: skip
    return "\n".join(lines)


def format_settings(settings: dict, results: dict[str, dict], labels: np.ndarray) -> str:
    first = next(iter(results.values()))
    lines = [
        f"data              {settings['data']}",
        f"images            train {len(settings['train'])} normal; test {len(labels)} "
        f"({int(labels.sum())} anomalous, {len(labels) - int(labels.sum())} normal)",
        f"image size        {settings['image_size']}x{settings['image_size']} (same resized pixels for both)",
        f"backbone          {BACKBONE}, layers {LAYERS}, offline ImageNet weights in both",
        f"coreset ratio     {settings['coreset_ratio']}; train patches {first['train_patches']} "
        f"(dim {first['embedding_dim']})",
        f"threads           torch {settings['threads']} (OMP/MKL too), batch size {settings['batch_size']}, "
        f"MALLOC_MMAP_THRESHOLD_={MALLOC_MMAP_THRESHOLD}",
    ]
    for name, facts in results.items():
        norm = facts["normalisation"]
        mean = ", ".join(f"{v:.3f}" for v in norm["mean"])
        std = ", ".join(f"{v:.3f}" for v in norm["std"])
        lines.append(f"{name:<17} memory bank {facts['memory_bank']}; input mean ({mean}) std ({std}); "
                     f"image score {facts['image_score']}")  # fmt: skip
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="one category in MVTec AD layout (default: generate a synthetic one)")
    parser.add_argument("--coreset-ratio", type=float, default=0.01)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--max-train", type=int, default=None, help="use only the first N train/good images")
    parser.add_argument("--only", choices=IMPLEMENTATIONS, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write settings and numbers here")
    parser.add_argument("--synthetic-category", default="brick", help="synthetic category to generate without FOLDER (default: brick)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.work)
        return
    work = Path(tempfile.mkdtemp(prefix="patchcore_bench_"))
    try:
        if args.folder is None:
            folder = generate_synthetic_category(work / "synthetic", args.synthetic_category, args.seed)
            data = f"synthetic category '{folder.name}' (generated, seed {args.seed})"
        else:
            folder, data = args.folder, str(args.folder)
        train, test = load_records(folder, args.max_train)
        settings = {
            "data": data, "image_size": args.image_size, "coreset_ratio": args.coreset_ratio,
            "threads": args.threads, "batch_size": args.batch_size, "seed": args.seed,
            "progress": not args.no_progress, "max_train": args.max_train, "train": train, "test": test,
        }  # fmt: skip
        (work / "settings.json").write_text(json.dumps(settings))

        labels = np.array([r["label"] for r in test])
        masks = load_masks(test, args.image_size)
        results = {}
        for name in IMPLEMENTATIONS if args.only is None else (args.only,):
            facts = start_child(name, work, args.threads, not args.no_progress)
            image_scores = np.load(work / f"{name}_image_scores.npy")
            maps = np.load(work / f"{name}_maps.npy")
            add_metrics(facts, image_scores, maps, labels, masks)
            results[name] = facts
            del maps

        print()
        print(format_settings(settings, results, labels))
        print()
        print(format_table(results))
        if args.json:
            summary = {k: v for k, v in settings.items() if k not in ("train", "test", "progress")}
            summary.update(backbone=BACKBONE, layers=LAYERS, n_train=len(train), n_test=len(test),
                           n_test_anomalous=int(labels.sum()), malloc_mmap_threshold=MALLOC_MMAP_THRESHOLD)  # fmt: skip
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"settings": summary, "results": results}, indent=2) + "\n")
            print(f"\nwrote {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
