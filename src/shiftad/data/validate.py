"""Checks every record against the input rules before any later stage sees it.

Every image and mask is decoded once (with a progress bar), through `images.read_image` /
`images.read_mask`, so their conversions (gray, RGBA, 16-bit, palette) are exercised here.
Rejected with a DataError naming the file(s):
- an unreadable or truncated image, or a non-image file with an image extension;
- a mask whose size differs from its image (both named);
- a defect image without a mask in a category whose other defect images have masks
  (a category without any masks is fine: it is evaluated at image level only);
- a normal image whose mask has defect pixels;
- a category without normal images for training (MVTec layout: in train/good/).
Categories without any image are caught by the scanners, which know the folders.
Masks are read as the field reads them: every non-zero pixel is defect, whatever the values
(the values found are logged once per category). A defect image whose mask is empty is kept:
it counts in image metrics and is left out of pixel metrics (`evaluate`), never treated as
normal; the data stage logs and records how many there are.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tqdm import tqdm

from shiftad.data.images import read_image, read_mask_values
from shiftad.data.records import ImageRecord
from shiftad.errors import DataError

SHOWN = 5  # files named in one message
log = logging.getLogger(__name__)


def _names(records: list[ImageRecord], attribute: str = "path") -> str:
    names = [getattr(r, attribute) for r in records[:SHOWN]]
    return ", ".join(names) + (f" and {len(records) - SHOWN} more" if len(records) > SHOWN else "")


def _folder_of(records: list[ImageRecord]) -> str:
    return os.path.commonpath([str(Path(r.path).parent) for r in records])


def _check_normals(category: str, records: list[ImageRecord]) -> None:
    mvtec_layout = any(r.source_split is not None for r in records)
    training = [r for r in records if r.label == 0 and (r.source_split == "train" or not mvtec_layout)]
    if not training:
        where = "train/good/" if mvtec_layout else "good/ (or CSV rows with is_anomalous 0)"
        raise DataError(
            f"category '{category}' in {_folder_of(records)}: no normal images for training; "
            f"the detector learns from normal images: add defect-free images in {where}"
        )


def _check_mask_coverage(category: str, records: list[ImageRecord]) -> None:
    defects = [r for r in records if r.label == 1]
    with_mask = [r for r in defects if r.mask_path]
    without = [r for r in defects if not r.mask_path]
    if with_mask and without:
        raise DataError(
            f"{_names(without)}: a defect image without a mask, while {len(with_mask)} other defect "
            f"images of category '{category}' have masks (e.g. {with_mask[0].mask_path}); add the "
            "missing masks, or remove all masks of the category to evaluate it at image level only"
        )


@dataclass
class MaskSummary:
    """What one category holds beyond its file names: image sizes (w, h), the mask values found
    and the defect images without a defect pixel."""

    values: set[int] = field(default_factory=set)
    masks: int = 0
    empty_defect_masks: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"masks": self.masks, "values": sorted(self.values), "defect_images_with_empty_mask": len(self.empty_defect_masks)}


def _check_files(record: ImageRecord, summary: MaskSummary) -> None:
    """Decode the image and its mask; note the mask's values and a defect image's empty mask."""
    height, width = read_image(record.path).shape[:2]
    summary.sizes[(width, height)] += 1
    if not record.mask_path:
        return
    values = read_mask_values(record.mask_path, expected_size=(width, height), image_path=record.path)
    defect_pixels = int(np.count_nonzero(values))
    if record.label == 0 and defect_pixels:
        raise DataError(
            f"{record.mask_path}: the mask of normal image {record.path} has {defect_pixels} defect "
            "pixels; a normal image needs an empty mask or none: fix the mask, or move the image "
            "to its defect class"
        )
    summary.masks += 1
    summary.values.update(int(v) for v in np.unique(values))
    if record.label == 1 and not defect_pixels:
        summary.empty_defect_masks.append(record.mask_path)


def validate_records(records: list[ImageRecord], progress: bool = True) -> dict[str, MaskSummary]:
    """Raise DataError on the first record that breaks an input rule; return each category's mask summary."""
    if not records:
        raise DataError("no images found; check dataset.root and dataset.source")
    by_category: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    for category, members in sorted(by_category.items()):
        _check_normals(category, members)  # cheap checks first: no decoding needed
        _check_mask_coverage(category, members)
    summaries = {category: MaskSummary() for category in sorted(by_category)}
    for record in tqdm(records, desc="checking images", unit=" images", disable=not progress):
        _check_files(record, summaries[record.category])
    for category, summary in summaries.items():
        if summary.masks:
            shown = ", ".join(str(v) for v in sorted(summary.values)[:8]) + (", ..." if len(summary.values) > 8 else "")
            log.info("category '%s': %d masks, values {%s}: every non-zero pixel is defect", category, summary.masks, shown)
        if summary.empty_defect_masks:
            empty = summary.empty_defect_masks
            log.warning("category '%s': %d defect image(s) with an empty mask (%s): kept for image metrics, left out of "
                        "pixel metrics", category, len(empty), ", ".join(empty[:SHOWN]) + (f" and {len(empty) - SHOWN} more" if len(empty) > SHOWN else ""))
    return summaries
