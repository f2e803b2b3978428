"""The score stage: a model scores val and test once; evaluation only reads these files.

`results/scores/<detector>/<regime>/<model>_on_<data>/<split>/<cat>.npz` holds `paths`,
`labels`, `image_scores`, `maps` (float32 at the model input size) and `seconds_per_image`.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from shiftad.detectors import detector_class
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import MANIFEST, SPLITS, model_dir, scores_file
from shiftad.split import SplitView

log = logging.getLogger(__name__)
from shiftad.pipeline import SCORED_SPLITS


def run_score_stage(params: Params, detector: str, regime: str, model_domain: str, data_domain: str, category: str, progress: bool = True) -> None:
    view = SplitView(MANIFEST, SPLITS)
    model = detector_class(detector).load(model_dir(detector, regime, model_domain, category))
    model.progress = progress
    for split in SCORED_SPLITS:
        records = view.get(category, split)
        start = time.perf_counter()
        scores = model.score(records)
        seconds = time.perf_counter() - start
        save_npz(
            scores_file(detector, regime, model_domain, data_domain, split, category),
            paths=np.array([r.path for r in records]),
            labels=np.array([r.label for r in records], dtype=np.int64),
            image_scores=scores.image_scores,
            maps=scores.maps.astype(np.float32),
            seconds_per_image=np.array(seconds / max(len(records), 1)),
        )
        log.info("scored %s %s (%s data): %d images, %.1f ms/image", category, split, data_domain, len(records), 1000 * seconds / max(len(records), 1))
