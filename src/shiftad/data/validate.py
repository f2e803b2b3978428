"""Checks every record against the input rules before any later stage sees it.

Every image and mask is decoded once (with a progress bar), through `images.read_image` /
`images.read_mask`, so their conversions (gray, RGBA, 16-bit, palette) are exercised here.
Rejected with a DataError naming the file(s):
- an unreadable or truncated image, or a non-image file with an image extension;
- a mask whose size differs from its image (both named), or that is not binary;
- a defect image without a mask in a category whose other defect images have masks
  (a category without any masks is fine: it is evaluated at image level only);
- a normal image whose mask has defect pixels;
- a category without normal images for training (MVTec layout: in train/good/).
Categories without any image are caught by the scanners, which know the folders.
A defect image whose mask is empty only gets a warning (it adds nothing to pixel metrics).
"""

from __future__ import annotations

import os
import warnings
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from shiftad.data.images import read_image, read_mask
from shiftad.data.records import ImageRecord
from shiftad.errors import DataError

SHOWN = 5  # files named in one message


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


def _check_files(record: ImageRecord) -> bool:
    """Decode the image and its mask; True where a defect image's mask is empty."""
    height, width = read_image(record.path).shape[:2]
    if not record.mask_path:
        return False
    mask = read_mask(record.mask_path, expected_size=(width, height), image_path=record.path)
    if record.label == 0 and mask.any():
        raise DataError(
            f"{record.mask_path}: the mask of normal image {record.path} has {int(mask.sum())} defect "
            "pixels; a normal image needs an empty mask or none: fix the mask, or move the image "
            "to its defect class"
        )
    return record.label == 1 and not mask.any()


def validate_records(records: list[ImageRecord], progress: bool = True) -> None:
    """Raise DataError on the first record that breaks an input rule."""
    if not records:
        raise DataError("no images found; check dataset.root and dataset.source")
    by_category: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_category[record.category].append(record)
    for category, members in sorted(by_category.items()):
        _check_normals(category, members)  # cheap checks first: no decoding needed
        _check_mask_coverage(category, members)
    empty = [r for r in tqdm(records, desc="checking images", unit=" images", disable=not progress) if _check_files(r)]
    if empty:
        warnings.warn(f"{_names(empty, 'mask_path')}: defect images with an empty mask (no defect pixels)", stacklevel=2)
