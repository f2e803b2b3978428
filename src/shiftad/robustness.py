"""The robustness stage: a severity sweep, one shift family at a time.

The main study shifts with all families at one severity. Here every test image of a category
is shifted by ONE family (`robustness.families`) at each severity in `robustness.severities`
and scored by the clean per-class model (no adaptation), which gives robustness curves
(metric against severity, one line per family) and the per-family breakdown.

Draws: image ``i`` of the category's test list draws from
``default_rng([seed, crc32(category), i])`` for every condition, so an image keeps its shift
"direction" across severities (see `shiftad.shift`) and one seed gives identical results.
Illumination is applied to every image here (probability 1): a sweep of that family would
otherwise leave half the images untouched and flatten its curve.

Shifted images live in a temporary folder only as long as the model needs their files.
Output: ``results/robustness/<detector>/<category>.npz`` with ``families``, ``severities``
(one entry per condition), ``labels``, ``defect_types``, ``image_scores`` (conditions × images),
``pixel_auroc`` and ``aupro`` (per condition; NaN without masks).
"""

from __future__ import annotations

import logging
import tempfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.detectors import load_detector, log_feature_use
from shiftad.evaluate.metrics import pixel_metrics
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import robustness_file
from shiftad.pipeline import model_path
from shiftad.shift import ShiftSettings, apply_shift, draw_shift
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def sweep_conditions(params: Params) -> list[tuple[str, int]]:
    return [(family, severity) for family in params.robustness.families for severity in sorted(params.robustness.severities)]


def shift_test_images(records: list[ImageRecord], settings: ShiftSettings, seed: int, category: str,
                      folder: Path) -> tuple[list[ImageRecord], list[np.ndarray | None]]:
    """Shifted copies of `records` written under `folder`; returns their records and masks."""
    shifted, masks = [], []
    for i, record in enumerate(records):
        image = read_image(record.path)
        size = image.shape[:2]
        mask = read_mask(record.mask_path, expected_size=(size[1], size[0]), image_path=record.path) if record.mask_path else None
        rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8")), i])
        drawn = draw_shift(rng, settings, size, mask if record.is_anomalous else None)
        image_out, mask_out = apply_shift(image, mask, drawn)
        path = folder / f"{i:05d}.png"
        Image.fromarray(image_out).save(path, compress_level=0)  # a temporary file: lossless, no time spent compressing
        shifted.append(ImageRecord(path.as_posix(), record.category, record.label, record.defect_type, None, record.source_split))
        masks.append(mask_out)
    return shifted, masks


def _masks_at(masks: list[np.ndarray | None], records: list[ImageRecord], size: tuple[int, int]) -> np.ndarray | None:
    out = np.zeros((len(masks), *size), dtype=bool)
    for i, (mask, record) in enumerate(zip(masks, records)):
        if record.is_anomalous:
            if mask is None:
                return None
            out[i] = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)) > 0
    return out


def sweep_images(params: Params, category: str, records: list[ImageRecord], folder: Path
                 ) -> Iterator[tuple[str, int, list[ImageRecord], list[np.ndarray | None]]]:
    """Every condition of the sweep: (family, severity, the shifted copies of `records` written
    under `folder`, their masks). The features stage runs the frozen networks on the same images."""
    for family, severity in sweep_conditions(params):
        settings = ShiftSettings(severity=severity, families=(family,), illumination_probability=1.0,
                                 illumination_sigma_px=params.shift.illumination_sigma_px)
        condition = folder / f"{family}_{severity}"
        condition.mkdir(parents=True)
        shifted, masks = shift_test_images(records, settings, params.seed, category, condition)
        yield family, severity, shifted, masks


def run_robustness_stage(params: Params, detector: str, category: str, progress: bool = True) -> Path:
    records = domain_view("clean").get(category, "test")
    model = load_detector(detector, model_path(detector, "per_class", "clean", category, params.reference_seed), params)
    model.progress = False
    conditions = sweep_conditions(params)
    scores = np.zeros((len(conditions), len(records)), dtype=np.float64)
    pixel_auroc = np.full(len(conditions), np.nan)
    aupro = np.full(len(conditions), np.nan)
    with tempfile.TemporaryDirectory(prefix="shiftad-robustness-") as tmp:
        sweep = sweep_images(params, category, records, Path(tmp))
        for c, (family, severity, shifted, masks) in enumerate(tqdm(sweep, total=len(conditions), desc=f"robustness {detector}/{category}",
                                                                    disable=not progress)):
            result = model.score(shifted)
            scores[c] = result.image_scores
            pixel = pixel_metrics(result.maps, _masks_at(masks, records, result.maps.shape[1:]), params.evaluation.aupro_fpr_limit)
            pixel_auroc[c], aupro[c] = pixel["pixel_auroc"], pixel["aupro"]
            log.info("%s/%s %s severity %d: scored %d images", detector, category, family, severity, len(records))
    log_feature_use(model)
    out = robustness_file(detector, category)
    save_npz(
        out,
        families=np.array([f for f, _ in conditions]),
        severities=np.array([s for _, s in conditions], dtype=np.int64),
        labels=np.array([r.label for r in records], dtype=np.int64),
        defect_types=np.array([r.defect_type for r in records]),
        paths=np.array([r.path for r in records]),
        image_scores=scores,
        pixel_auroc=pixel_auroc,
        aupro=aupro,
    )
    return out
