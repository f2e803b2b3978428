"""The K-shot stage: learning curves of the memory-bank detectors against the number of
clean training images.

For each detector in `few_shot.detectors` and category, K ∈ `few_shot.kshot` training images
are drawn `few_shot.kshot_seeds` times (seeded, from the train split only: never val or test),
a model is fitted on their patch features, its threshold is set on the validation images
(the detector's threshold rule), and image AUROC and F1 are measured on the test images. The
backbone runs once per image: every fit reuses the extracted train features and every score
the extracted val/test features.

Output (one job per detector): `results/kshot/<detector>/<category>.csv`, one row per (K, seed): image AUROC, AUPRC,
F1, threshold, memory-bank size, fit seconds (feature extraction of the K images + bank
building) and inference ms per image (feature extraction + search + maps, timed on up to 16 test
images once per K: the bank size does not depend on the draw).
"""

from __future__ import annotations

import logging
import time
import zlib

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shiftad.data.records import ImageRecord
from shiftad.detectors import build_detector
from shiftad.components.knn import NearestNeighbours, nearest_of
from shiftad.detectors.memory_bank import PatchBankDetector, PatchRows
from shiftad.errors import ParamsError
from shiftad.evaluate.metrics import image_metrics
from shiftad.evaluate.thresholds import compute_thresholds
from shiftad.io import atomic_path
from shiftad.params import Params
from shiftad.paths import KSHOT_DIR
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def kshot_file(detector: str, category: str):
    return KSHOT_DIR / detector / f"{category}.csv"


def coreset_file(detector: str, category: str):
    return KSHOT_DIR / detector / f"coreset_{category}.csv"


def kshot_images(n_train: int, k: int, seed: int, draw: int, category: str) -> np.ndarray:
    """Indices into the category's train list: K distinct images, a function of (seed, draw, K, category)."""
    rng = np.random.default_rng([seed, draw, k, zlib.crc32(category.encode())])
    return np.sort(rng.choice(n_train, size=k, replace=False))


class PerImageNeighbours:
    """For query sets (val, test): each query patch's n nearest patches within each train
    image, so the neighbours in the bank of any subset of images is a merge of lists."""

    def __init__(self, model: PatchBankDetector, train: PatchRows, queries: list[PatchRows]) -> None:
        self.n = model.n_neighbours
        self.offsets = np.cumsum([0] + [len(train.take([i]).bank_rows()) for i in range(len(train))])
        self.found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in queries]
        for i in range(len(train)):
            index = NearestNeighbours(train.take([i]).bank_rows())
            for j, q in enumerate(queries):
                d, idx = index.query(q.rows.reshape(-1, q.rows.shape[-1]), self.n)
                self.found[j].append((d, idx))

    def neighbours(self, query: int, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact (M, n) neighbours of query set `query` in the bank made of the `chosen` train
        images in that order (indices into that bank)."""
        sizes = np.diff(self.offsets)[chosen]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return nearest_of([(self.found[query][i][0], self.found[query][i][1] + start) for i, start in zip(chosen, starts)], self.n)


def run_kshot_stage(params: Params, detector: str, progress: bool = True) -> pd.DataFrame:
    """Every category's K-shot curve (one job: the backbone is loaded once)."""
    if detector not in params.few_shot.detectors:
        raise ParamsError(f"few_shot.detectors: '{detector}' is not listed (listed: {params.few_shot.detectors})")
    model = build_detector(detector, params)
    if not isinstance(model, PatchBankDetector):
        raise ParamsError(f"few_shot.detectors: '{detector}' is not a memory-bank detector")
    model.progress = progress
    tables = [kshot_category(params, model, detector, category) for category in params.categories]
    for category in params.categories:
        coreset_curve(params, model, detector, category)
    return pd.concat(tables, ignore_index=True)


def coreset_curve(params: Params, model: PatchBankDetector, detector: str, category: str) -> pd.DataFrame:
    """The memory-bank size trade-off: the model fitted on every train image of the category at
    each ratio of `few_shot.coreset_ratios` (PatchCore's greedy coreset), image AUROC on the test
    images of every domain (no threshold needed) and inference ms per image (search + maps,
    timed on up to 16 clean test images, plus the network's time per image). Written to
    results/kshot/<detector>/coreset_<category>.csv; a detector that keeps every patch (the kNN
    without a coreset) has no trade-off and writes the columns only."""
    columns = ["detector", "category", "coreset_ratio", "test_domain", "image_auroc", "memory_bank_size", "fit_seconds", "ms_per_image"]
    thins = hasattr(model, "coreset_ratio") and not model.keeps_every_patch
    if not thins:
        table = pd.DataFrame(columns=columns)
        with atomic_path(coreset_file(detector, category)) as tmp:
            table.to_csv(tmp, index=False)
        return table
    ratios = list(params.few_shot.coreset_ratios)
    views = {d: domain_view(d) for d in params.data_domains}
    with model.clock() as clock:
        train_rows = model.patch_rows(views["clean"].get(category, "train"), None)
        tests = {d: (v.get(category, "test"), model.patch_rows(v.get(category, "test"), None)) for d, v in views.items()}
    per_image_seconds = clock.seconds / max(1, len(train_rows) + sum(len(r) for _, r in tests.values()))
    original = getattr(model, "coreset_ratio", None)
    rows = []
    try:
        for ratio in ratios:
            model.coreset_ratio = ratio
            begin = time.perf_counter()
            model.fit_rows(train_rows)
            fit_seconds = time.perf_counter() - begin
            timed = tests["clean"][1].take(range(min(16, len(tests["clean"][1]))))
            begin = time.perf_counter()
            model.score_rows(timed)
            ms_per_image = 1000 * ((time.perf_counter() - begin) / max(len(timed), 1) + per_image_seconds)
            for domain, (records, rows_of) in tests.items():
                labels = np.array([r.label for r in records])
                scores = model.score_rows(rows_of, maps=False).image_scores
                auroc = image_metrics(scores, labels, float("inf"))["image_auroc"]
                rows.append({"detector": detector, "category": category, "coreset_ratio": ratio, "test_domain": domain,
                             "image_auroc": auroc, "memory_bank_size": int(model.memory_bank_.shape[0]),
                             "fit_seconds": fit_seconds, "ms_per_image": ms_per_image})
            log.info("coreset %s/%s ratio %g: bank %d, clean AUROC %.3f, %.1f ms/image", detector, category, ratio,
                     model.memory_bank_.shape[0], rows[-len(tests)]["image_auroc"], ms_per_image)
    finally:
        model.coreset_ratio = original
    table = pd.DataFrame(rows, columns=columns)
    with atomic_path(coreset_file(detector, category)) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def kshot_category(params: Params, model: PatchBankDetector, detector: str, category: str) -> pd.DataFrame:
    progress = model.progress
    view = domain_view("clean")
    train: list[ImageRecord] = view.get(category, "train")
    ks = [k for k in params.few_shot.kshot if k <= len(train)]
    if len(ks) < len(params.few_shot.kshot):
        log.warning("%s: only %d train images; K = %s left out of the K-shot curve", category, len(train),
                    [k for k in params.few_shot.kshot if k > len(train)])
    if not ks:
        raise ParamsError(f"few_shot.kshot: every K exceeds the {len(train)} train images of '{category}'")
    with model.clock() as clock:  # the network's time per image, whether it ran here or in the features stage
        train_rows = model.patch_rows(train, "features (train)")
    per_image_seconds = clock.seconds / len(train)
    val, test = view.get(category, "val"), view.get(category, "test")
    val_rows, test_rows = model.patch_rows(val, "features (val)"), model.patch_rows(test, "features (test)")
    val_labels, test_labels = np.array([r.label for r in val]), np.array([r.label for r in test])
    settings = params.evaluation.threshold
    # Without a coreset, the bank of K images is the union of their patches: search each train
    # image's patches once and merge the chosen images' neighbour lists (exact, and the cost no
    # longer grows with the sum of all K over all draws).
    tables = PerImageNeighbours(model, train_rows, [val_rows, test_rows]) if model.keeps_every_patch else None
    rows = []
    runs = [(k, draw) for k in ks for draw in range(params.few_shot.kshot_seeds)]
    for k, draw in tqdm(runs, desc=f"K-shot {detector}/{category}", disable=not progress):
        chosen = kshot_images(len(train), k, params.seed, draw, category)
        begin = time.perf_counter()
        model.fit_rows(train_rows.take(chosen))
        fit_seconds = time.perf_counter() - begin + k * per_image_seconds
        if draw == 0:  # inference as deployed (search the bank, build maps), timed once per K on up to 16 test images
            timed = test_rows.take(range(min(16, len(test))))
            begin = time.perf_counter()
            model.score_rows(timed)
            ms_per_image = 1000 * ((time.perf_counter() - begin) / max(len(timed), 1) + per_image_seconds)
        if tables is not None:
            val_scores, test_scores = (model.scores_from_neighbours(r, *tables.neighbours(j, chosen), maps=False).image_scores
                                       for j, r in enumerate((val_rows, test_rows)))
        else:
            val_scores, test_scores = (model.score_rows(r, maps=False).image_scores for r in (val_rows, test_rows))
        context = f"K-shot {detector}/{category} K={k} draw {draw}"
        threshold = compute_thresholds(val_scores, val_labels, params.threshold_rule(detector), settings.percentile,
                                       settings.std_multiplier, context=context)
        metrics = image_metrics(test_scores, test_labels, threshold.value)
        rows.append({"detector": detector, "category": category, "k": k, "draw": draw,
                     "train_images": " ".join(str(i) for i in chosen),
                     "image_auroc": metrics["image_auroc"], "image_auprc": metrics["image_auprc"], "f1": metrics["f1"],
                     "threshold": threshold.value, "threshold_rule": threshold.used_rule,
                     "memory_bank_size": int(model.memory_bank_.shape[0]), "fit_seconds": fit_seconds, "ms_per_image": ms_per_image})
        log.info("%s: AUROC %.3f, F1 %.3f, bank %d", context, metrics["image_auroc"], metrics["f1"], model.memory_bank_.shape[0])
    table = pd.DataFrame(rows)
    with atomic_path(kshot_file(detector, category)) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table
