"""The fit stage: one model per category (regime per_class), saved with its meta.json."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from shiftad.detectors import build_detector
from shiftad.io import atomic_dir, write_json
from shiftad.params import Params
from shiftad.paths import MANIFEST, SPLITS, model_dir
from shiftad.split import SplitView

log = logging.getLogger(__name__)


def run_fit_stage(params: Params, detector: str, regime: str, domain: str, progress: bool = True) -> Path:
    view = SplitView(MANIFEST, SPLITS)
    target = model_dir(detector, regime, domain)
    fit_log = {}
    with atomic_dir(target) as folder:
        for category in view.categories:
            train = view.get(category, "train")
            model = build_detector(detector, params)
            model.progress = progress
            start = time.perf_counter()
            model.fit(train)
            seconds = time.perf_counter() - start
            model.save(folder / category)
            fit_log[category] = {"fit_seconds": round(seconds, 3), "n_train_images": len(train)}
            log.info("fitted %s/%s/%s/%s on %d images in %.1f s", detector, regime, domain, category, len(train), seconds)
        write_json(folder / "fit_log.json", fit_log)
    return target
