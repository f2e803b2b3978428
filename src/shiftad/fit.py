"""The fit stage: one model per (detector, regime, training domain, category), saved with meta.json."""

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


def run_fit_stage(params: Params, detector: str, regime: str, domain: str, category: str, progress: bool = True) -> Path:
    view = SplitView(MANIFEST, SPLITS)
    train = view.get(category, "train")
    model = build_detector(detector, params)
    model.progress = progress
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    target = model_dir(detector, regime, domain, category)
    with atomic_dir(target) as folder:
        model.save(folder)
        write_json(folder / "fit_log.json", {"fit_seconds": round(seconds, 3), "n_train_images": len(train)})
    log.info("fitted %s on %d images in %.1f s -> %s", detector, len(train), seconds, target)
    return target
