"""The score stage: every model scores val and test once; evaluation only reads these files.

`results/scores/<detector>/<regime>/<model>_on_<data>/<split>/<cat>.npz` holds `paths`,
`labels`, `image_scores`, `maps` (float32 at the model input size) and `seconds_per_image`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from shiftad.detectors import detector_class
from shiftad.io import atomic_dir, save_npz
from shiftad.params import Params
from shiftad.paths import MANIFEST, SPLITS, model_dir, scores_dir
from shiftad.split import SplitView

log = logging.getLogger(__name__)
SCORED_SPLITS = ("val", "test")


def run_score_stage(params: Params, detector: str, regime: str, model_domain: str, data_domain: str, progress: bool = True) -> Path:
    view = SplitView(MANIFEST, SPLITS)
    source = model_dir(detector, regime, model_domain)
    target = scores_dir(detector, regime, model_domain, data_domain)
    with atomic_dir(target) as folder:
        for category in view.categories:
            model = detector_class(detector).load(source / category)
            model.progress = progress
            for split in SCORED_SPLITS:
                records = view.get(category, split)
                start = time.perf_counter()
                scores = model.score(records)
                seconds = time.perf_counter() - start
                save_npz(
                    folder / split / f"{category}.npz",
                    paths=np.array([r.path for r in records]),
                    labels=np.array([r.label for r in records], dtype=np.int64),
                    image_scores=scores.image_scores,
                    maps=scores.maps.astype(np.float32),
                    seconds_per_image=np.array(seconds / max(len(records), 1)),
                )
                log.info("scored %s %s/%s: %d images, %.1f ms/image", category, split, data_domain, len(records), 1000 * seconds / max(len(records), 1))
    return target
