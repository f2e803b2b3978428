"""The robustness stage: a severity sweep, one shift family or corruption at a time.

The main study shifts with all families at one severity. Here every test image of a category
is shifted by ONE family (`robustness.families`) at each severity in `robustness.severities`
and scored by the clean per-class model (no adaptation), which gives robustness curves
(metric against severity, one line per family) and the per-family breakdown. The published
corruption protocol (ADShift, MVTec-C: `robustness.corruptions` at
`robustness.corruption_severities`, imagecorruptions' values) runs here too, the same way: the
clean per-class models on the corrupted test images, with the shift stage's corruption code.
A corruption as a shift domain (params `domains`) also gives it the global models, threshold-only
and the cross-shift matrix, at the cost of a domain.

Draws: image ``i`` of the category's test list draws from
``default_rng([seed, crc32(category), i])`` for every condition, so an image keeps its shift
"direction" across severities (see `shiftad.shift`) and one seed gives identical results.
Illumination is applied to every image here (probability 1): a sweep of that family would
otherwise leave half the images untouched and flatten its curve.

The shifted images are made in memory, a batch at a time, here and in the features stage
(which runs the frozen networks on the same pixels): nothing is written or read back.
Output: ``results/robustness/<detector>/<category>.npz`` with ``families``, ``severities``
(one entry per condition), ``labels``, ``defect_types``, ``image_scores`` (conditions × images),
``pixel_auroc`` and ``aupro`` (per condition; NaN without masks).
"""

from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.detectors import load_detector, log_feature_use
from shiftad.detectors.base import batched
from shiftad.evaluate.metrics import pixel_metrics
from shiftad.geometry import frame_mask
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import robustness_file
from shiftad.pipeline import model_path
from shiftad.corruptions import CORRUPTIONS
from shiftad.shift import ShiftSettings, apply_shift, corruption_drawer, draw_shift
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def sweep_conditions(params: Params) -> list[tuple[str, int]]:
    """(shift family or corruption, severity) of every condition: the families' sweep, then the corruptions'."""
    settings = params.robustness
    return ([(family, severity) for family in settings.families for severity in sorted(settings.severities)]
            + [(name, severity) for name in settings.corruptions for severity in sorted(settings.corruption_severities)])


Draw = Callable[[np.random.Generator, tuple[int, int], "np.ndarray | None"], dict]  # (rng, (h, w), defect mask) -> drawn shift


def shifted_test_images(records: list[ImageRecord], draw: Draw, seed: int, category: str
                        ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """(shifted RGB uint8 image, its shifted mask or None) of each record, in order, made one at a time."""
    for i, record in enumerate(records):
        image = read_image(record.path)
        size = image.shape[:2]
        mask = read_mask(record.mask_path, expected_size=(size[1], size[0]), image_path=record.path) if record.mask_path else None
        rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8")), i])
        yield apply_shift(image, mask, draw(rng, size, mask if record.is_anomalous else None))


def _masks_at(masks: list[np.ndarray | None], records: list[ImageRecord], size: tuple[int, int], resize: str = "squash"
              ) -> tuple[np.ndarray | None, np.ndarray]:
    """The shifted masks in the map frame (params `resize`) at the map size and the images that count in pixel metrics (as
    `evaluate.stage.ground_truth_masks`: not an anomalous image whose mask is empty)."""
    out = np.zeros((len(masks), *size), dtype=bool)
    pixel_images = np.ones(len(masks), dtype=bool)
    for i, (mask, record) in enumerate(zip(masks, records)):
        if record.is_anomalous:
            if mask is None:
                return None, pixel_images
            pixel_images[i] = bool(mask.any())
            out[i] = frame_mask(mask, size, resize)
    return out, pixel_images


def _noting_masks(pairs: Iterable[tuple[np.ndarray, np.ndarray | None]], masks: list[np.ndarray | None]) -> Iterator[np.ndarray]:
    """The images of (image, mask) pairs; each mask is appended to `masks` as its image passes."""
    for image, mask in pairs:
        masks.append(mask)
        yield image


def condition_drawer(params: Params, condition: str, severity: int) -> Draw:
    """One condition of the sweep: a corruption (the shift stage's corruption recipe), or one shift
    family at one severity with illumination on every image."""
    if condition in CORRUPTIONS:
        corruption = corruption_drawer(condition, severity)
        return lambda rng, size, mask: corruption(rng, size, mask, None)
    settings = ShiftSettings(severity=severity, families=(condition,), illumination_probability=1.0,
                             illumination_sigma_px=params.shift.illumination_sigma_px)
    return lambda rng, size, mask: draw_shift(rng, settings, size, mask)


def sweep_images(params: Params, category: str, records: list[ImageRecord]
                 ) -> Iterator[tuple[str, int, Iterator[tuple[np.ndarray, np.ndarray | None]]]]:
    """Every condition of the sweep: (family, severity, its shifted copies of `records` with
    their masks, made as they are read). The features stage runs the frozen networks on the same images."""
    for family, severity in sweep_conditions(params):
        yield family, severity, shifted_test_images(records, condition_drawer(params, family, severity), params.seed, category)


def run_robustness_stage(params: Params, detector: str, category: str, progress: bool = True) -> Path:
    records = domain_view("clean").get(category, "test")
    model = load_detector(detector, model_path(detector, "per_class", "clean", category, params.reference_seed), params)
    model.progress = False
    conditions = sweep_conditions(params)
    scores = np.zeros((len(conditions), len(records)), dtype=np.float64)
    pixel_auroc = np.full(len(conditions), np.nan)
    aupro = np.full(len(conditions), np.nan)
    sweep = sweep_images(params, category, records)
    for c, (family, severity, shifted) in enumerate(tqdm(sweep, total=len(conditions), desc=f"robustness {detector}/{category}",
                                                        disable=not progress)):
        masks: list[np.ndarray | None] = []
        result = model.score_batches(batched(_noting_masks(shifted, masks), model.batch_size))
        scores[c] = result.image_scores
        truth, pixel_images = _masks_at(masks, records, result.maps.shape[1:], params.resize)
        pixel = pixel_metrics(result.maps, truth, params.evaluation.aupro_fpr_limit, pixel_images)
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
