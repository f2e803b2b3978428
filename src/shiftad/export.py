"""The export stage: a fitted model taken out of the pipeline as a self-contained bundle.

`shiftad export --detector D` (rule `export`, one job per detector: a bundle per regime and
domain → `results/bundles/<detector>/<regime>/<domain>/`; `--regime R --domain M --out DIR` writes
one) copies the model folder(s),
records the thresholds that validation chooses per category (the evaluate stage's rule on the
same validation scores), the preprocessing and backbone
spec, the params subset that produced the model, package versions and a sha256 per file
(`bundle.py` reads it back). With `export.onnx`, the detector's frozen feature network goes
out as ONNX too (dynamic batch) and is checked against torch on validation images before the
bundle is written; `--runtime onnx` in predict/serve then runs it with ONNX Runtime.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from shiftad import __version__
from shiftad.bundle import (BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION, ONNX_FILE, BundleError, OnnxFeatureRunner,
                            file_hashes)
from shiftad.data.images import read_image
from shiftad.data.records import ImageRecord
from shiftad.detectors import Detector, detector_class
from shiftad.evaluate.thresholds import compute_thresholds
from shiftad.io import atomic_dir, load_npz, write_json
from shiftad.params import Params
from shiftad.paths import model_dir, scores_file
from shiftad.pipeline import GLOBAL_CATEGORY
from shiftad.split import domain_view

log = logging.getLogger(__name__)
VERSIONED_PACKAGES = ("torch", "torchvision", "timm", "numpy", "faiss-cpu", "safetensors", "anomalib", "onnx", "onnxruntime")
BACKBONE_KEYS = ("backbone", "weights", "layers", "neighbourhood", "image_size", "resize", "normalisation")  # of a detector's get_params()


def _versions() -> dict[str, str]:
    versions = {"shiftad": __version__}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def validation_thresholds(params: Params, detector: str, regime: str, domain: str, seed: int) -> dict[str, dict]:
    """Per category, the threshold validation chooses for this model in its own domain (clean
    model: clean validation images; shift model: shifted ones), by the evaluate stage's rule and
    function on the same validation scores (so bundle and scenarios.csv agree, and a bundle
    needs no evaluation run), and the heatmap's floor: the median of the normal validation maps
    (training seed `seed`), as the report draws it."""
    settings = params.evaluation.threshold
    thresholds = {}
    for category in params.categories:
        val_file = scores_file(detector, regime, domain, domain, "val", category, seed)
        if not val_file.is_file():
            raise BundleError(f"{val_file}: validation scores not found; run the score stage (snakemake) before exporting")
        val = load_npz(val_file)
        chosen = compute_thresholds(val["image_scores"], val["labels"], params.threshold_rule(detector), settings.percentile,
                                    settings.std_multiplier, context=f"{detector}/{regime}/{domain}/{category}")
        normal = val["maps"][val["labels"] == 0]
        thresholds[category] = {"value": float(chosen.value), "rule": chosen.used_rule,
                                "f1_max": float("nan") if chosen.f1_max is None else float(chosen.f1_max),
                                "percentile": float(chosen.percentile), "mean_std": float(chosen.mean_std),
                                "map_floor": float(np.median(normal)) if len(normal) else float("nan")}
    return thresholds


def _network_digest(model: Detector) -> str:
    network = model.feature_network()
    digest = hashlib.sha256(str(network.input_size).encode())
    for key, tensor in network.module.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_onnx(model: Detector, path: Path, opset: int) -> dict:
    """Write `model`'s feature network to `path` (input `images` (B, 3, S, S), dynamic batch)."""
    network = model.feature_network()
    if network is None:
        raise BundleError(f"{model.name} has no frozen feature network to export; set export.onnx: false")
    example = torch.rand(2, 3, network.input_size, network.input_size)
    with torch.no_grad():
        n_outputs = len(network.module(example))
    names = [f"features_{i}" for i in range(n_outputs)]
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated in favour of dynamo, which needs onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(network.module.eval(), (example,), str(path), input_names=["images"], output_names=names,
                          dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}}, opset_version=opset,
                          dynamo=False)
    return {"file": path.name, "input": "images", "input_size": network.input_size, "outputs": names, "opset": opset}


def onnx_parity(model: Detector, onnx_path: Path, images: list[np.ndarray]) -> dict[str, float]:
    """|ONNX Runtime − torch| over every feature value of `images` (one batch): the largest
    absolute difference, and the largest relative to each output's scale (max |torch|).
    The two runtimes sum convolutions in different orders: on Lite0's features (values up to
    ~60) the absolute difference is ~2e-4, the relative one ~4e-6."""
    network = model.feature_network()
    batch = model.prepare_batch(images)
    with torch.no_grad():
        reference = [t.numpy() for t in network.module(batch)]
    runner = OnnxFeatureRunner(onnx_path)
    differences = [(float(np.max(np.abs(a.numpy() - b))), float(np.max(np.abs(b)))) for a, b in zip(runner(batch), reference)]
    return {"max_abs_diff": max(d for d, _ in differences), "max_rel_diff": max(d / max(scale, 1e-12) for d, scale in differences)}


def export_bundle(params: Params, detector: str, regime: str, domain: str, target: str | Path,
                  parity_records: Sequence[ImageRecord] | None = None, onnx_files: dict[str, tuple[dict, bytes]] | None = None) -> Path:
    """Write the bundle of one fitted model (all its categories) to `target`, atomically.
    The ONNX parity check runs on `parity_records` (default: the first `export.parity_images`
    validation images of each category in the model's domain). `onnx_files`: ONNX exports by
    feature-network digest, shared by the bundles of one call (a detector's regimes and domains
    run the same frozen network: exported once, checked in every bundle)."""
    seed = params.reference_seed  # the reference run's models and thresholds (those scenarios.csv reports)
    thresholds = validation_thresholds(params, detector, regime, domain, seed)
    sources = [GLOBAL_CATEGORY] if regime == "global" else list(params.categories)
    for name in sources:
        if not model_dir(detector, regime, domain, name, seed).is_dir():
            raise BundleError(f"{model_dir(detector, regime, domain, name, seed)}: model not found; fit it first (snakemake)")
    models = {name: detector_class(detector).load(model_dir(detector, regime, domain, name, seed)) for name in sources}
    first = models[sources[0]]
    target = Path(target)
    with atomic_dir(target) as folder:
        for name in sources:
            shutil.copytree(model_dir(detector, regime, domain, name, seed), folder / "models" / name, ignore=shutil.ignore_patterns(".*"))
        onnx = None
        if params.export.onnx and first.feature_network() is None:
            # EfficientAD trains every network it runs: there is no frozen feature network to export
            log.info("%s: %s has no frozen feature network; bundle without ONNX (predict/serve run torch)", target, detector)
        elif params.export.onnx:
            digests = {name: _network_digest(model) for name, model in models.items()}
            if len(set(digests.values())) != 1:
                raise BundleError(f"{detector}/{regime}/{domain}: the categories' feature networks differ; one ONNX file "
                                  "cannot serve them (set export.onnx: false)")
            digest = next(iter(digests.values()))
            if onnx_files is not None and digest in onnx_files:
                meta, content = onnx_files[digest]
                (folder / ONNX_FILE).write_bytes(content)
                onnx = dict(meta)
            else:
                onnx = export_onnx(first, folder / ONNX_FILE, params.export.onnx_opset)
                if onnx_files is not None:
                    onnx_files[digest] = (dict(onnx), (folder / ONNX_FILE).read_bytes())
            val = list(parity_records) if parity_records is not None else [
                r for c in params.categories for r in domain_view(domain).get(c, "val")[: params.export.parity_images]]
            parity = onnx_parity(first, folder / ONNX_FILE, [read_image(r.path) for r in val])
            if not parity["max_rel_diff"] <= params.export.onnx_tolerance:
                raise BundleError(f"{detector}/{regime}/{domain}: ONNX Runtime differs from torch by {parity['max_rel_diff']:.2e} "
                                  f"of the feature scale on validation images (export.onnx_tolerance {params.export.onnx_tolerance:g})")
            onnx.update({f"parity_{k}": v for k, v in parity.items()}, parity_images=len(val))
            log.info("%s: ONNX feature network, max |onnx - torch| = %.2e (%.2e of the feature scale) on %d validation images",
                     target, parity["max_abs_diff"], parity["max_rel_diff"], len(val))
        spec = {k: v for k, v in first.get_params().items() if k in BACKBONE_KEYS}
        subset = {key: params.model_dump()[key] for key in ("seed", "image_size", "resize", "backbone", detector, "evaluation", "export")}
        write_json(folder / BUNDLE_FILE, {
            "format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION, "detector": detector, "regime": regime,
            "domain": domain, "training_seed": seed, "categories": list(params.categories), "thresholds": thresholds,
            "image_size": params.image_size,
            "preprocessing": {"input": "RGB uint8 (gray repeated, alpha dropped, 16-bit scaled as the pipeline reads images)",
                              "resize": f"{params.resize} to {params.image_size}x{params.image_size}, bilinear, antialiased "
                                        f"(shiftad.geometry; maps cover {'the centred square' if params.resize == 'center_crop' else 'the whole image'})",
                              "scale": f"[0, 1]; the network normalises with the {params.backbone.normalisation} mean/std"},
            "backbone": spec, "onnx": onnx, "params": subset, "versions": _versions(), "files": file_hashes(folder),
        })
    return target
