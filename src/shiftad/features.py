"""The features stage: each frozen network of the study runs once over every image it will see.

PatchCore, PaDiM, the few-shot kNN and the routed autoencoders run a frozen pretrained network,
and so do the stages around them (fit, score, K-shot, few-shot, robustness): the same network
over the same images, job after job. This stage runs each distinct network (its spec:
implementation, backbone, weights, input size, resize policy, input scaling; by default all
four share one) once, keeping the union of the layers its detectors use, over the clean
and shifted train / val / test images of every category and the images of the robustness
sweep, and stores the outputs (`results/features/<spec id>/`, see
`shiftad.components.feature_store`). Every later job's detector looks its batches up there by
their exact input pixels; bundles, `shiftad predict` and `shiftad serve` always run the network.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from shiftad.components.feature_store import SPEC_FILE, input_key, write_shard
from shiftad.data.records import ImageRecord
from shiftad.detectors import build_detector
from shiftad.detectors.base import batched, iter_image_batches
from shiftad.errors import ShiftadError
from shiftad.io import atomic_dir, write_json
from shiftad.params import Params
from shiftad.pipeline import FEATURES_DIR, domain_feature_splits, feature_spec, feature_specs, store_spec
from shiftad.robustness import Draw, condition_drawer, shifted_test_images, sweep_conditions
from shiftad.split import domain_view

log = logging.getLogger(__name__)


FEATURE_SETS = ("study", "robustness")  # separate jobs: a robustness param reruns the sweep's features, not every fit


ImageBatches = Callable[[int], Iterator[list[np.ndarray]]]  # batch size -> the images, that many at a time


def image_sets(params: Params, feature_set: str) -> Iterator[tuple[str, int, ImageBatches]]:
    """(shard name, number of images, its images in batches). study: every split of every
    category in every domain that a stage reads (`domain_feature_splits`), read from disk; robustness: every condition of the severity sweep,
    its shifted test images made in memory (again for each network: a sweep may not fit in memory)."""
    if feature_set == "study":
        for domain, splits in domain_feature_splits(params).items():
            view = domain_view(domain)
            for category in params.categories:
                for split in splits:
                    records = view.get(category, split)
                    yield f"{domain}_{category}_{split}", len(records), partial(iter_image_batches, records)
        return
    clean = domain_view("clean")
    for category in params.categories:
        records = clean.get(category, "test")
        for family, severity in sweep_conditions(params):
            draw = condition_drawer(params, family, severity)
            yield f"{category}_{family}_{severity}", len(records), partial(_shifted_batches, records, draw, params.seed, category)


def _shifted_batches(records: list[ImageRecord], draw: Draw, seed: int, category: str, batch_size: int
                     ) -> Iterator[list[np.ndarray]]:
    return batched((image for image, _ in shifted_test_images(records, draw, seed, category)), batch_size)


def run_features_stage(params: Params, feature_set: str, spec: str | None = None, progress: bool = True) -> list[Path]:
    """Run every frozen network of the study (or the one of spec id `spec`) over the images of `feature_set`."""
    if feature_set not in FEATURE_SETS:
        raise ShiftadError(f"--set {feature_set}: one of {', '.join(FEATURE_SETS)}")
    specs = feature_specs(params)
    if spec is not None and spec not in specs:
        raise ShiftadError(f"--spec {spec}: not a frozen network of this study's detectors; its networks are {sorted(specs) or 'none'}")
    image_lists = list(image_sets(params, feature_set))
    return [store_network(params, name, specs[name], feature_set, image_lists, progress) for name in ([spec] if spec else specs)]


def store_network(params: Params, name: str, spec: dict, feature_set: str, image_lists: list[tuple[str, int, ImageBatches]],
                  progress: bool) -> Path:
    """One network's outputs for every image list, written to results/features/<set>/<spec id>/."""
    # an unfitted model of a detector this network serves, its layers set to the union the store
    # keeps (PaDiM's extractor is anomalib's layer set: a model of another detector where there is one)
    served = [d for d in params.detectors if store_spec(params, d) == spec]
    exact = [d for d in served if feature_spec(params, d) == spec]
    detector = exact[0] if exact else next(d for d in served if d != "padim")
    union = params.model_copy(update={detector: getattr(params, detector).model_copy(update={"layers": list(spec["layers"])})})
    model = build_detector(detector, union, stored_features=False)  # unfitted: only its frozen network runs
    if model.feature_spec() != spec:
        raise RuntimeError(f"{detector}: its feature_spec() {model.feature_spec()} differs from the params' {spec}")
    model.feature_network()  # built before the clock starts: its per-image time is what later jobs charge
    dtype = getattr(torch, params.features.dtype)
    target = Path(FEATURES_DIR) / feature_set / name
    shards: dict[str, int] = {}
    total_bytes = n_outputs = 0
    network_seconds = 0.0
    with atomic_dir(target) as folder:
        for shard, n_images, batches in tqdm(image_lists, desc=f"features {feature_set}/{name}", disable=not progress):
            if not n_images:
                continue
            keys, parts = [], []
            for images in batches(params.backbone.batch_size):
                batch = model.prepare_batch(images)
                keys += [input_key(row) for row in batch]
                start = time.perf_counter()
                parts.append(model.features(batch))
                network_seconds += time.perf_counter() - start
            outputs = [torch.cat(layer) for layer in zip(*parts)]
            n_outputs = len(outputs)
            total_bytes += write_shard(folder / f"{shard}.safetensors", keys, outputs, dtype)
            shards[shard] = n_images
        n_images = sum(shards.values())
        # what a later job's timings charge per served image (shiftad.components.feature_store.NetworkClock)
        write_json(folder / SPEC_FILE, {"spec": spec, "detector": detector, "dtype": params.features.dtype, "n_outputs": n_outputs,
                                        "shards": shards, "images": n_images, "bytes": total_bytes,
                                        "network_seconds_per_image": network_seconds / max(n_images, 1)})
    log.info("features %s/%s (%s): %d images in %d lists, %.1f MB (%s)", feature_set, name, spec["network"], n_images, len(shards),
             total_bytes / 1e6, params.features.dtype)
    return target
