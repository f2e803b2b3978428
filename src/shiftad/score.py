"""The score stage: a model scores the val and test images of every domain once.

`results/scores/<detector>/<regime>/<model>_on_<data>/<split>/<cat>.npz` holds `paths`,
`labels`, `image_scores`, `maps` (float32 at the model input size), `seconds_per_image`,
for a routing detector `routed_categories` (where its router sent each image; the true
category is the file's), and one `extra_map_<name>` (float32, shaped like `maps`) per auxiliary
map the detector returns (`Scores.extra_maps`, e.g. `extra_map_uncertainty`).
Evaluation only reads these files, so no scenario ever triggers inference again.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from shiftad.detectors import load_detector
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.pipeline import DOMAINS, GLOBAL_CATEGORY, SCORED_SPLITS, model_path
from shiftad.paths import scores_file
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def run_score_stage(params: Params, detector: str, regime: str, model_domain: str, category: str, seed: int, progress: bool = True) -> None:
    """`category`: one category (its per-class model, or the global model on that category), or
    `all` with the global regime: the global model, loaded once, scores every category."""
    if category == GLOBAL_CATEGORY and regime != "global":
        raise ValueError(f"category '{GLOBAL_CATEGORY}' names the global model; per-class models score one category at a time")
    categories = list(params.categories) if category == GLOBAL_CATEGORY else [category]
    model = load_detector(detector, model_path(detector, regime, model_domain, categories[0], params.check_training_seed(seed)), params)
    model.progress = progress
    for data_domain in DOMAINS:
        view = domain_view(data_domain)
        for name in categories:
            for split in SCORED_SPLITS:
                records = view.get(name, split)
                start = time.perf_counter()
                scores = model.score(records)
                seconds = time.perf_counter() - start
                routed = {} if scores.categories is None else {"routed_categories": scores.categories.astype(str)}
                save_npz(
                    scores_file(detector, regime, model_domain, data_domain, split, name, seed),
                    paths=np.array([r.path for r in records]),
                    labels=np.array([r.label for r in records], dtype=np.int64),
                    image_scores=scores.image_scores,
                    maps=scores.maps.astype(np.float32),
                    seconds_per_image=np.array(seconds / max(len(records), 1)),
                    **routed,
                    **scores.extra_map_arrays(),
                )
                log.info("%s/%s %s model scored %s %s %s: %d images, %.1f ms/image", detector, regime, model_domain,
                         data_domain, name, split, len(records), 1000 * seconds / max(len(records), 1))
