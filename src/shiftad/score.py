"""The score stage: a model scores the val and test images of the domains its pairs name, once.

`results/scores/<detector>/<regime>/<model>_on_<data>/<split>/<cat>.npz` holds `paths`,
`labels`, `image_scores`, `maps` (float32 at the model input size), `seconds_per_image`,
for a routing detector `routed_categories` (where its router sent each image; the true
category is the file's), and one `extra_map_<name>` (float32, shaped like `maps`) per auxiliary
map the detector returns (`Scores.extra_maps`, e.g. `extra_map_uncertainty`).
Evaluation only reads these files, so no scenario ever triggers inference again.
"""

from __future__ import annotations

import logging

import numpy as np

from shiftad.detectors import load_detector, log_feature_use
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import model_dir, scores_file
from shiftad.pipeline import GLOBAL_CATEGORY, SCORED_SPLITS, model_categories
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def run_score_stage(params: Params, detector: str, regime: str, model_domain: str | None, category: str | None, seed: int,
                    progress: bool = True) -> None:
    """Score with every model of the regime fitted on `model_domain` (None: every domain of
    `Params.fit_domains_of`), or the one of `category`, on the data domains of its pairs (`Params.scored_pairs`):
    a per-class model its own category, the global model (loaded once) every category."""
    seed = params.check_training_seed(seed)
    pairs = params.scored_pairs(detector)
    views = {data_domain: domain_view(data_domain) for data_domain in dict.fromkeys(x for _, x in pairs)}
    for model_domain, model_name in [(d, m) for d in ([model_domain] if model_domain else params.fit_domains_of(detector))
                                     for m in model_categories(params, regime, category)]:
        model = load_detector(detector, model_dir(detector, regime, model_domain, model_name, seed), params)
        model.progress = progress
        scored = list(params.categories) if model_name == GLOBAL_CATEGORY else [model_name]
        for data_domain in [x for m, x in pairs if m == model_domain]:
            view = views[data_domain]
            for name in scored:
                for split in SCORED_SPLITS:
                    records = view.get(name, split)
                    with model.clock() as clock:
                        scores = model.score(records)
                    seconds = clock.seconds
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
        log_feature_use(model)  # per model: a job scores every fitted domain's models
