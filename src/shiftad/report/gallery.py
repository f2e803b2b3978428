"""Gallery assets for the HTML report: heatmap thumbnails and ground-truth mask layers.

Every file lands under `report/gallery/`, so the page links relatively and the report folder
travels alone: `<run>/<category>/<index>.jpg` (the evaluate stage's heatmap overlay, as a
JPEG thumbnail), `<run>/<category>/<index>_<name>.jpg` (the overlay of a detector's auxiliary
map `<name>`, e.g. uncertainty, shown beside the heatmap) and `masks/<digest>.png` (the mask
as semi-transparent red on transparent, one file per mask, shared by every run that shows the
same test image).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
from PIL import Image

from shiftad.data.images import read_mask
from shiftad.geometry import frame_mask
from shiftad.io import atomic_path, read_json
from shiftad.report.html import Tile

THUMBNAIL_PX = 192  # twice the CSS tile size would be sharper, but 2000+ tiles must stay light
MASK_RGBA = (230, 20, 20, 110)  # red at ~43 % opacity
OUTLINE_RGBA = (255, 255, 255, 255)  # a white edge: a small defect stays visible on a red heatmap


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        image.save(tmp, **options)


def thumbnail(source: str | Path, target: Path) -> None:
    image = Image.open(source).convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.BILINEAR)
    _save(image, target, format="JPEG", quality=85)


def mask_layer(mask_path: str, target: Path, size: tuple[int, int], resize: str = "squash") -> None:
    """The ground-truth mask in the map frame (params `resize`) as an RGBA PNG of `size` (w, h): semi-transparent red where
    defective, a one-pixel white edge around it, transparent elsewhere."""
    mask = read_mask(mask_path)
    mask = frame_mask(mask, (size[1], size[0]), resize)
    from scipy.ndimage import binary_dilation

    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = MASK_RGBA
    rgba[binary_dilation(mask) & ~mask] = OUTLINE_RGBA
    _save(Image.fromarray(rgba, "RGBA"), target, format="PNG", optimize=True)


def score_range(scores: list[float], threshold: float) -> tuple[float, float]:
    """Symmetric around the threshold, so the badge turns amber exactly at the decision boundary."""
    finite = [s for s in scores if math.isfinite(s)]
    reach = max((abs(s - threshold) for s in finite), default=1.0) or 1.0
    return threshold - reach, threshold + reach


def build_tiles(predictions_file: Path, threshold: float, gallery_dir: Path, run_dir: str, category: str,
                masks_done: set[str], resize: str = "squash") -> list[tuple[str, Tile]]:
    """(test image filename, tile) of one run and category, writing the thumbnails and mask layers they point at into
    `gallery_dir` (which becomes `report/gallery/`; tiles link as `gallery/...`)."""
    records = read_json(predictions_file)
    scores = [r["prediction"]["anomaly_score"] for r in records]
    lo_hi = score_range(scores, threshold)
    tiles = []
    for i, record in enumerate(records):
        heatmap = record["prediction"].get("heatmap_path")
        if not heatmap:
            continue
        image_rel = f"{run_dir}/{category}/{i:04d}.jpg"
        thumbnail(heatmap, gallery_dir / image_rel)
        mask_rel = None
        mask_path = record["ground_truth"].get("mask_path")
        if record["ground_truth"]["is_anomalous"] and mask_path:
            mask_rel = f"masks/{hashlib.sha1(mask_path.encode('utf-8')).hexdigest()[:16]}.png"
            if mask_rel not in masks_done:
                size = Image.open(gallery_dir / image_rel).size
                mask_layer(mask_path, gallery_dir / mask_rel, size, resize)
                masks_done.add(mask_rel)
        extra = []
        for name, path in record["prediction"].get("extra_heatmaps", {}).items():
            extra_rel = f"{run_dir}/{category}/{i:04d}_{name}.jpg"
            thumbnail(path, gallery_dir / extra_rel)
            extra.append((name, f"gallery/{extra_rel}"))
        truth = record["ground_truth"]
        tiles.append((record["filename"], Tile(
            image=f"gallery/{image_rel}", mask=f"gallery/{mask_rel}" if mask_rel else None, score=float(record["prediction"]["anomaly_score"]), threshold=threshold,
            score_range=lo_hi, is_anomalous=bool(truth["is_anomalous"]), predicted_anomalous=bool(record["prediction"]["is_anomalous"]),
            caption=f"{category} · {truth.get('defect_type', '')} · {Path(record['filename']).name}", extra=extra,
        )))
    return tiles
