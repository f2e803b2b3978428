"""The fit stage: one model per (detector, regime, training domain, category), saved with meta.json.

Regime `per_class` fits on one category's training images; `global` fits one model on the
pooled training images of every category (its folder is `all`). One job fits every model of
a (detector, regime, domain, seed) — the per-class models one after the other — so the DAG
pays a job's fixed cost (imports, the backbone's weights) once, not once per category.
"""

from __future__ import annotations

import logging
from pathlib import Path

from shiftad.detectors import build_detector, log_feature_use
from shiftad.io import atomic_dir, write_json
from shiftad.params import Params
from shiftad.paths import model_dir
from shiftad.pipeline import GLOBAL_CATEGORY, model_categories
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def training_images(params: Params, regime: str, domain: str, category: str) -> list:
    view = domain_view(domain)
    if regime == "global":
        if category != GLOBAL_CATEGORY:
            raise ValueError(f"the global model is fitted once, as category '{GLOBAL_CATEGORY}', not '{category}'")
        return [r for c in params.categories for r in view.get(c, "train")]
    if category not in params.categories:
        raise ValueError(f"category '{category}' is not in params categories {params.categories}")
    return view.get(category, "train")


def validation_normals(params: Params, regime: str, domain: str, category: str) -> list:
    """The normal validation images of the model's categories (anomalous ones never reach fit)."""
    view = domain_view(domain)
    names = params.categories if regime == "global" else [category]
    return [r for c in names for r in view.get(c, "val") if not r.is_anomalous]


def run_fit_stage(params: Params, detector: str, regime: str, domain: str, category: str | None, seed: int,
                  progress: bool = True) -> list[Path]:
    """Fit the regime's models (or the one of `category`) with training seed `seed` (one of params `seeds`)."""
    return [fit_model(params, detector, regime, domain, name, seed, progress) for name in model_categories(params, regime, category)]


def fit_model(params: Params, detector: str, regime: str, domain: str, category: str, seed: int, progress: bool = True) -> Path:
    """Fit one model and save it under its model folder."""
    train = training_images(params, regime, domain, category)
    validation = validation_normals(params, regime, domain, category)
    model = build_detector(detector, params.for_training(seed))
    model.progress = progress
    with model.clock() as clock:
        model.fit(train, validation)
    seconds = clock.seconds
    log_feature_use(model)
    target = model_dir(detector, regime, domain, category, seed)
    with atomic_dir(target) as folder:
        model.save(folder)
        used = getattr(model, "n_fit_images_", len(train))  # the few-shot kNN banks `knn.shots` of them
        write_json(folder / "fit_log.json", {"fit_seconds": round(seconds, 3), "n_train_images": len(train), "n_fit_images": used,
                                             "n_validation_normals": len(validation), "training_seed": seed})
    log.info("fitted %s (seed %d) on %d of %d train images in %.1f s -> %s", detector, seed, used, len(train), seconds, target)
    return target
