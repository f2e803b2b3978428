"""The few-shot adaptation stage: a clean memory bank plus K shifted normal images.

For each memory-bank detector in `few_shot.detectors` and regime (one job), the patch features of the first K images of a seeded order of the shifted
**normal train** images are appended to the clean bank (K in `few_shot.adaptation_k`; for the
global model K of every category), and the extended model scores the category's shifted val
and test images.
Features are extracted once per image and reused across K. K = 0 is the clean bank itself
(= threshold only); the full refit on shifted data is the `shift_adapted` scenario.

Output: the score files of model `fewshot_k<K>` on the shifted data
(`results/fewshot/<det>/<regime>/fewshot_k<K>_on_shift/{val,test}/<cat>.npz`), which the
evaluate stage reads as scenario `shift_fewshot` with a K column. They hold the score stage's
keys (`paths`, `labels`, `image_scores`, `maps`, `seconds_per_image`, any `extra_map_<name>`)
plus `added_patches` and `memory_bank_size`.
"""

from __future__ import annotations

import copy
import logging
import time
import zlib

import numpy as np

from shiftad.components.knn import NearestNeighbours, merge_neighbours
from shiftad.data.records import ImageRecord
from shiftad.detectors import load_detector
from shiftad.detectors.memory_bank import PatchBankDetector
from shiftad.errors import ParamsError
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import model_dir, scores_file
from shiftad.pipeline import GLOBAL_CATEGORY, SCORED_SPLITS
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def adaptation_images(records: list[ImageRecord], k: int, seed: int, category: str) -> list[ImageRecord]:
    """The first `k` of a seeded order of `records` (nested: K = 2 holds K = 1's image)."""
    if k > len(records):
        raise ParamsError(f"few_shot.adaptation_k: K = {k} but '{category}' has only {len(records)} shifted normal train images")
    order = np.random.default_rng([seed, zlib.crc32(category.encode())]).permutation(len(records))
    return [records[i] for i in order[:k]]


def run_fewshot_stage(params: Params, detector: str, regime: str, seed: int, progress: bool = True) -> None:
    """Every category's shifted val/test images, scored by the clean model that covers it (its
    own, or the global one) extended by K shifted normals of every category that model covers."""
    if detector not in params.few_shot.detectors:
        raise ParamsError(f"few_shot.detectors: '{detector}' is not listed (listed: {params.few_shot.detectors})")
    groups = [(GLOBAL_CATEGORY, list(params.categories))] if regime == "global" else [(c, [c]) for c in params.categories]
    for model_category, covered in groups:
        model = load_detector(detector, model_dir(detector, regime, "clean", model_category, params.check_training_seed(seed)), params)
        if not isinstance(model, PatchBankDetector):
            raise ParamsError(f"few_shot.detectors: '{detector}' has no memory bank to extend; list memory-bank detectors only")
        model.progress = progress
        adapt_and_score(params, model, detector, regime, covered, seed)


def adapt_and_score(params: Params, model: PatchBankDetector, detector: str, regime: str, covered: list[str], seed: int) -> None:
    """`seed`: the clean model's training seed (the K shifted normals are drawn with the data seed)."""
    view = domain_view("shift")
    ks = params.few_shot.adaptation_k
    # One feature pass per image: the largest K's images hold every smaller K's (nested draws).
    with model.clock() as clock:  # the network's time, whether it ran here or in the features stage
        added = {c: model.patch_rows(adaptation_images(view.get(c, "train"), max(ks), params.seed, c), f"features (shifted normals, {c})")
                 for c in covered}
        scored = {(c, split): view.get(c, split) for c in covered for split in SCORED_SPLITS}
        rows = {key: model.patch_rows(records, f"features ({key[0]} shift {key[1]})") for key, records in scored.items()}
    seconds_per_extraction = clock.seconds / max(1, sum(map(len, scored.values())) + sum(map(len, added.values())))
    # The bank only grows, so each K searches just the patches added since the previous K and
    # merges them with the neighbours found so far: exact k-NN of the extended bank.
    adapted = copy.copy(model)  # shares the clean bank array; add_rows builds a new one
    found = {key: adapted.neighbours(r.rows.reshape(-1, r.rows.shape[-1])) for key, r in rows.items()}
    previous, patches = 0, 0
    for k in ks:
        for c in covered:
            block = added[c].take(range(previous, k))
            if len(block):
                offset = adapted.memory_bank_.shape[0]
                patches += adapted.add_rows(block)
                part = NearestNeighbours(block.bank_rows())
                for key, r in rows.items():
                    d, i = part.query(r.rows.reshape(-1, r.rows.shape[-1]), adapted.n_neighbours)
                    found[key] = merge_neighbours(*found[key], d, i + offset, adapted.n_neighbours)
        previous = k
        for (c, split), records in scored.items():
            begin = time.perf_counter()
            scores = adapted.scores_from_neighbours(rows[(c, split)], *found[(c, split)])
            seconds = (time.perf_counter() - begin) / max(len(records), 1) + seconds_per_extraction
            save_npz(
                scores_file(detector, regime, f"fewshot_k{k}", "shift", split, c, seed),
                paths=np.array([r.path for r in records]),
                labels=np.array([r.label for r in records], dtype=np.int64),
                image_scores=scores.image_scores,
                maps=scores.maps.astype(np.float32),
                seconds_per_image=np.array(seconds),
                added_patches=np.array(patches),
                memory_bank_size=np.array(adapted.memory_bank_.shape[0]),
                **scores.extra_map_arrays(),
            )
        log.info("%s/%s %s + %d shifted normals per category: bank %d (+%d patches)", detector, regime, "+".join(covered), k,
                 adapted.memory_bank_.shape[0], patches)
