"""The data stage: read the configured source, check it, write the manifest.

Outputs: the manifest (`data/processed/manifest.json`) and `data/raw/source.json`, which
records the source, its root and the images per category. The DVC stage declares `data/raw`
as an output, so that file is written for every source, also where the data lie elsewhere.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from shiftad.data.csv_source import read_csv_source
from shiftad.data.folder import scan_folder
from shiftad.data.layouts import LAYOUT_SOURCES, scan_layout
from shiftad.data.mvtec import download_mvtec, scan_mvtec_layout
from shiftad.data.records import ImageRecord, relative_to_cwd, sort_records, write_manifest
from shiftad.data.validate import MaskSummary, validate_records
from shiftad.errors import DataError
from shiftad.io import write_json
from shiftad.params import Params

log = logging.getLogger(__name__)

SOURCE_INFO = Path("data/raw/source.json")


def _existing_root(root: Path) -> Path:
    if not root.is_dir():
        raise DataError(f"dataset.root: folder {root} not found ({root.absolute()}); point dataset.root at your data folder")
    return root


def _csv_path(root: Path, csv_file: str) -> Path:
    path = Path(csv_file)
    return path if path.is_absolute() else root / path


def collect_records(params: Params, progress: bool = True) -> list[ImageRecord]:
    """The records of the configured source, before validation."""
    dataset = params.dataset
    root = Path(dataset.root)
    if dataset.source == "synthetic":
        from shiftad.data.synthetic import generate_synthetic  # imported here: the generator is optional for other sources

        generate_synthetic(root, dataset.synthetic, params.seed, params.categories, progress=progress, workers=params.threads)
        return scan_mvtec_layout(root, params.categories)
    if dataset.source == "mvtec":
        download_mvtec(dataset, params.categories, progress=progress)
        return scan_mvtec_layout(root, params.categories)
    if dataset.source == "folder":
        return scan_folder(_existing_root(root), params.categories[0])
    if dataset.source in LAYOUT_SOURCES:
        return scan_layout(dataset.source, _existing_root(root), params.categories)
    if dataset.source == "csv":
        root = _existing_root(root)
        default = params.categories[0] if len(params.categories) == 1 else None
        return read_csv_source(root, _csv_path(root, dataset.csv.file), default)
    raise DataError(f"dataset.source: unknown source '{dataset.source}'")


def check_categories(records: list[ImageRecord], categories: list[str]) -> None:
    """The DAG fans out over params `categories`: the data must hold exactly those."""
    found = sorted({r.category for r in records})
    if found != sorted(categories):
        raise DataError(
            f"categories: params list {sorted(categories)} but the data holds {found}; "
            "set the params key `categories` to the categories of your data"
        )


def run_data_stage(
    params: Params,
    manifest_path: Path = Path("data/processed/manifest.json"),
    progress: bool = True,
    source_info_path: Path = SOURCE_INFO,
) -> list[ImageRecord]:
    """Collect, validate and record the data set; return its records, sorted."""
    records = sort_records(collect_records(params, progress))
    check_categories(records, params.categories)
    masks = validate_records(records, progress=progress)
    write_manifest(manifest_path, records, source=params.dataset.source)
    per_category = Counter(r.category for r in records)
    write_json(
        source_info_path,
        {
            "source": params.dataset.source,
            "root": relative_to_cwd(params.dataset.root),
            "images_per_category": dict(sorted(per_category.items())),
            "images": len(records),
            "masks_per_category": {category: summary.to_dict() for category, summary in masks.items()},
        },
    )
    log.info("%d images in %d categories -> %s\n%s", len(records), len(per_category), manifest_path, describe(records, masks))
    non_square = sorted(c for c, summary in masks.items() if any(w != h for w, h in summary.sizes))
    if non_square:
        log.info("non-square images in %s: each becomes the %d x %d model input by resize: %s (params.yaml; README: "
                 "Non-square and large images)", ", ".join(non_square), params.image_size, params.image_size, params.resize)
    return records


def describe(records: list[ImageRecord], summaries: dict[str, MaskSummary]) -> str:
    """What the data stage found, per category: images per split and defect type (with masks),
    image sizes and mask values."""
    lines = []
    for category, summary in summaries.items():
        members = [r for r in records if r.category == category]
        counts = Counter((r.source_split or "-", r.defect_type, r.mask_path is not None) for r in members)
        parts = [f"{split}/{defect}: {n}" + (" (masks)" if masked else "") for (split, defect, masked), n in sorted(counts.items())]
        sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in summary.sizes.most_common(4)) + (
            f", {len(summary.sizes) - 4} more sizes" if len(summary.sizes) > 4 else "")
        values = ", ".join(str(v) for v in sorted(summary.values)[:8]) + (", ..." if len(summary.values) > 8 else "")
        lines.append(f"  {category}: {len(members)} images: {'; '.join(parts)}\n    sizes (w x h): {sizes}"
                     + (f"\n    masks: {summary.masks}, values {{{values}}}" if summary.masks else "")
                     + (f", {len(summary.empty_defect_masks)} defect image(s) with an empty mask" if summary.empty_defect_masks else ""))
    return "\n".join(lines)
