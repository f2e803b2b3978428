"""A plain folder of images sorted by class, one category (the one name in params `categories`)::

    <root>/images/good/*                          normal images
    <root>/images/<defect>/*                      anomalous images, one folder per defect type
    <root>/masks/<defect>/<stem>.png              optional pixel masks (or <stem>_mask.png)

The layout has no train/test split (source_split None): split.policy "ratios" makes one.
While scanning, hidden files and files without an image extension (`.DS_Store`, `notes.txt`)
are skipped with a warning listing them, and so are loose files directly in images/ and mask
files that match no image.
"""

from __future__ import annotations

from pathlib import Path

from shiftad.data.images import list_image_files
from shiftad.data.mvtec import find_mask, make_record, subfolders, warn_unused_masks
from shiftad.data.records import NORMAL_DEFECT, ImageRecord
from shiftad.errors import DataError


def _layout_hint(root: Path) -> str:
    return f"normal images go in {root}/images/good/ and anomalous ones in {root}/images/<defect>/"


def scan_folder(root: Path, category: str) -> list[ImageRecord]:
    """Records for every image under `root/images/<class>/`, with masks from `root/masks/<class>/`."""
    root = Path(root)
    images_dir = root / "images"
    if not (images_dir / NORMAL_DEFECT).is_dir():
        raise DataError(f"category '{category}': folder {images_dir / NORMAL_DEFECT} not found; {_layout_hint(root)}")
    records = []
    used_masks: set[Path | None] = set()
    for class_dir in subfolders(images_dir):
        mask_dir = root / "masks" / class_dir.name
        for image in list_image_files(class_dir):
            mask = find_mask(mask_dir, image.stem)
            used_masks.add(mask)
            records.append(make_record(image, category, class_dir.name, None, mask))
    warn_unused_masks(root / "masks", used_masks)
    if not records:
        raise DataError(f"category '{category}': no images in {images_dir}; {_layout_hint(root)}")
    return records
