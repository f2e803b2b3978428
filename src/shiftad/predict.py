"""`shiftad predict`: inspect images with a bundle.

Per image: the JSON record the pipeline writes (`filename`, `category`,
`prediction.is_anomalous`, `anomaly_score`, `threshold`, `heatmap_path`; `routed_category`
where a routed bundle chose the category itself), a heatmap overlay
PNG, and a summary line at the end. Files, globs and folders are accepted; images are scored
`batch_size` at a time, with a progress bar. Images are read as the pipeline reads them (gray
repeated to RGB, alpha dropped, 16-bit scaled to 8). A file that cannot be read gets a
per-file error record and the others are still processed; the exit code says whether any
failed.
"""

from __future__ import annotations

import glob
import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from shiftad.bundle import Bundle, BundleError
from shiftad.data.images import read_image
from shiftad.errors import ShiftadError
from shiftad.evaluate.stage import overlay
from shiftad.io import atomic_path, write_json

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files as given, globs expanded, folders searched recursively for image files; sorted, unique."""
    paths: list[Path] = []
    for item in inputs:
        matches = [Path(m) for m in sorted(glob.glob(item, recursive=True))] or [Path(item)]
        for path in matches:
            if path.is_dir():
                paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            else:
                paths.append(path)
    return list(dict.fromkeys(paths))


def resolve_category(bundle: Bundle, category: str | None) -> str:
    if category is None:
        if len(bundle.categories) != 1:
            raise BundleError(f"this bundle holds {bundle.categories}; name one with --category")
        return bundle.categories[0]
    if category not in bundle.categories:
        raise BundleError(f"unknown category '{category}'; this bundle knows {bundle.categories}")
    return category


def output_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """A unique output name per input: its stem, with _2, _3… where stems repeat across folders."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}_{n}"
        used.add(stem)
        stems[path] = stem
    return stems


def _write_outputs(path: Path, stem: str, image: np.ndarray, score: float, heat: np.ndarray, category: str, bundle: Bundle,
                   out: Path, routed: bool = False, resize: str = "squash") -> dict:
    threshold, floor = bundle.threshold(category), bundle.map_floor(category)
    vmin = floor if math.isfinite(floor) else float(np.min(heat))
    heatmap = out / f"{stem}_heatmap.png"
    with atomic_path(heatmap) as tmp:
        Image.fromarray(overlay(image, heat, vmin, max(threshold, vmin + 1e-6), resize)).save(tmp, format="PNG")
    record = {"filename": str(path), "category": category, **({"routed_category": category} if routed else {}),
              "prediction": {"is_anomalous": bool(score >= threshold), "anomaly_score": score, "threshold": threshold,
                             "heatmap_path": heatmap.as_posix()}}
    write_json(out / f"{stem}.json", record)
    return record


def predict(bundle: Bundle, inputs: Sequence[str], category: str | None, out: Path, progress: bool = True,
            batch_size: int | None = None) -> list[dict]:
    """Score every image in `inputs` with the bundle's model for `category`; returns the records
    (errors included) in input order and writes them to `out`. Without `category`, a bundle with
    a router routes each image and uses the routed category's threshold."""
    routed = category is None and bundle.routes
    if not routed:
        category = resolve_category(bundle, category)
    model = bundle.routing_model() if routed else bundle.model(category)
    batch_size = batch_size or model.batch_size
    paths = expand_inputs(inputs)
    stems = output_stems(paths)
    records: dict[Path, dict] = {}
    bar = tqdm(total=len(paths), desc="predict", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        batch: list[tuple[Path, np.ndarray]] = []
        for path in paths[start : start + batch_size]:
            try:
                if not path.is_file():
                    raise ShiftadError(f"{path}: no such file")
                batch.append((path, read_image(path)))
            except (ShiftadError, OSError, ValueError) as exc:
                records[path] = {"filename": str(path), "category": category, "error": str(exc)}  # None: not yet routed
                log.error("%s", exc)
        if batch:
            scores = model.score_images([image for _, image in batch], category=category)
            names = scores.categories if routed else [category] * len(batch)
            for (path, image), score, heat, name in zip(batch, scores.image_scores, scores.maps, names):
                records[path] = _write_outputs(path, stems[path], image, float(score), heat, str(name), bundle, out, routed,
                                               model.resize)
        bar.update(len(paths[start : start + batch_size]))
    bar.close()
    ordered = [records[p] for p in paths]
    write_json(out / "predictions.json", ordered)
    return ordered


def summary_line(records: list[dict]) -> str:
    failed = sum("error" in r for r in records)
    anomalous = sum(r.get("prediction", {}).get("is_anomalous", False) for r in records)
    return f"{len(records)} images: {anomalous} anomalous, {len(records) - failed - anomalous} normal, {failed} failed"
