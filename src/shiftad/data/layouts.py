"""The public benchmarks' own layouts, read as they are published (nothing is copied or moved).

Each scanner returns the same records as the MVTec AD one (`source_split` "train" for normal
images a detector may learn from, "test" for the labelled test set), so one manifest, one
split policy and one evaluation serve every source. Masks are read later, by the validation
and evaluation rules (every non-zero pixel is defect). anomalib's datamodules are the
reference for what each layout holds.

MVTec 3D-AD (`dataset.source: mvtec3d`; the RGB images only, `xyz/` point clouds ignored)::

    <root>/<category>/train/good/rgb/*.png            normal, training
    <root>/<category>/validation/good/rgb/*.png       normal, training (our split draws val from these)
    <root>/<category>/test/<defect|good>/rgb/*.png    test
    <root>/<category>/test/<defect|good>/gt/*.png     masks, same name as the image

MVTec LOCO AD (`mvtec_loco`): a folder of masks per image, one PNG per defect region; the record's
mask is that folder, read as the union of its PNGs (`images.read_mask`)::

    <root>/<category>/{train,validation}/good/*.png
    <root>/<category>/test/{good,logical_anomalies,structural_anomalies}/*.png
    <root>/<category>/ground_truth/<defect>/<image stem>/*.png

MVTec AD 2 (`mvtec_ad2`; the private test sets carry no labels and are left out)::

    <root>/<category>/{train,validation}/good/*.png
    <root>/<category>/test_public/{good,bad}/*.png
    <root>/<category>/test_public/ground_truth/bad/<stem>_mask.png

VisA (`visa`), as downloaded: its split file decides train and test::

    <root>/split_csv/1cls.csv                  object,split,label,image,mask (label: normal | anomaly)
    <root>/<category>/Data/Images/{Normal,Anomaly}/*.JPG, <root>/<category>/Data/Masks/Anomaly/*.png

KolektorSDD2 (`kolektorsdd2`; one category, named by `categories`)::

    <root>/{train,test}/<id>.png with the mask <id>_GT.png beside it; an image is defective
    when its mask has a defect pixel. Defective train images are not used (the detectors learn
    from normal images; the published test set stays as it is).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

from shiftad.data.images import list_image_files, read_mask, warn_ignored
from shiftad.data.mvtec import find_mask, make_record, subfolders, warn_unused_masks
from shiftad.data.records import NORMAL_DEFECT, ImageRecord
from shiftad.errors import DataError
from shiftad.params import LAYOUT_SOURCES

log = logging.getLogger(__name__)


def _category_folder(root: Path, category: str, marker: str, layout: str) -> Path:
    """`root/category` holding `marker`, or `root` itself when it is that category."""
    if (root / category / marker).is_dir():
        return root / category
    if root.absolute().name == category and (root / marker).is_dir():
        return root
    present = sorted(p.name for p in subfolders(root, warn_files=False) if (p / marker).is_dir())
    raise DataError(f"category '{category}': folder {root / category / marker} not found ({layout} layout, dataset.root); "
                    f"categories present in {root}: {present or 'none'}")


def _images(folder: Path) -> list[Path]:
    return list_image_files(folder) if folder.is_dir() else []


def _normals(folder: Path, category: str, parts: tuple[str, ...], suffix: tuple[str, ...] = ()) -> list[ImageRecord]:
    """Normal training images of `parts` (e.g. train/good, validation/good), each + `suffix`."""
    return [make_record(p, category, NORMAL_DEFECT, "train", None)
            for part in parts for p in _images(folder.joinpath(part, *suffix))]


def scan_mvtec3d(root: Path, category: str) -> list[ImageRecord]:
    folder = _category_folder(root, category, "train/good/rgb", "MVTec 3D-AD")
    records = _normals(folder, category, ("train/good", "validation/good"), ("rgb",))
    used: set[Path | None] = set()
    for defect_dir in subfolders(folder / "test"):
        for image in _images(defect_dir / "rgb"):
            mask = defect_dir / "gt" / image.name
            mask = mask if mask.is_file() else find_mask(defect_dir / "gt", image.stem)
            used.add(mask)
            records.append(make_record(image, category, defect_dir.name, "test", mask if defect_dir.name != NORMAL_DEFECT else None))
    for defect_dir in subfolders(folder / "test"):
        if defect_dir.name != NORMAL_DEFECT:
            warn_unused_masks(defect_dir / "gt", used)
    return records


def scan_mvtec_loco(root: Path, category: str) -> list[ImageRecord]:
    folder = _category_folder(root, category, "train/good", "MVTec LOCO AD")
    records = _normals(folder, category, ("train/good", "validation/good"))
    for defect_dir in subfolders(folder / "test"):
        for image in _images(defect_dir):
            mask = None
            if defect_dir.name != NORMAL_DEFECT:
                regions = folder / "ground_truth" / defect_dir.name / image.stem
                mask = regions if regions.is_dir() else None  # a folder of region masks: read as their union
            records.append(make_record(image, category, defect_dir.name, "test", mask))
    return records


def scan_mvtec_ad2(root: Path, category: str) -> list[ImageRecord]:
    folder = _category_folder(root, category, "train/good", "MVTec AD 2")
    records = _normals(folder, category, ("train/good", "validation/good"))
    public = folder / "test_public"
    if not public.is_dir():
        raise DataError(f"{public}: not found; MVTec AD 2 is evaluated on its labelled test set, test_public/ (dataset.root)")
    private = [p.name for p in subfolders(folder, warn_files=False) if p.name.startswith("test_private")]
    if private:
        log.info("%s: %s carry no labels: not used", folder, ", ".join(private))
    used: set[Path | None] = set()
    for defect_dir in subfolders(public):
        if defect_dir.name == "ground_truth":
            continue
        for image in _images(defect_dir):
            mask = find_mask(public / "ground_truth" / defect_dir.name, image.stem) if defect_dir.name != NORMAL_DEFECT else None
            used.add(mask)
            records.append(make_record(image, category, defect_dir.name, "test", mask))
    warn_unused_masks(public / "ground_truth", used)
    return records


VISA_SPLIT = Path("split_csv") / "1cls.csv"
VISA_COLUMNS = ["object", "split", "label", "image", "mask"]


def scan_visa(root: Path, category: str) -> list[ImageRecord]:
    split_file = root / VISA_SPLIT
    if not split_file.is_file():
        raise DataError(f"{split_file}: VisA's split file not found; dataset.root must be the extracted VisA folder "
                        "(it holds split_csv/ and one folder per category)")
    records = []
    with open(split_file, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or [c.strip() for c in reader.fieldnames[:5]] != VISA_COLUMNS:
            raise DataError(f"{split_file}: columns {reader.fieldnames}, expected {','.join(VISA_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            if row["object"] != category:
                continue
            if row["split"] not in ("train", "test") or row["label"] not in ("normal", "anomaly"):
                raise DataError(f"{split_file}, line {line}: split '{row['split']}' / label '{row['label']}'; "
                                "expected train|test and normal|anomaly")
            image = root / row["image"]
            if not image.is_file():
                raise DataError(f"{split_file}, line {line}: image {image} not found")
            anomalous = row["label"] == "anomaly"
            if anomalous and row["split"] == "train":
                raise DataError(f"{split_file}, line {line}: an anomalous training image ({image}); the detectors learn from normal images")
            mask = root / row["mask"] if anomalous and row["mask"] else None
            if mask is not None and not mask.is_file():
                raise DataError(f"{split_file}, line {line}: mask {mask} not found")
            records.append(make_record(image, category, "anomaly" if anomalous else NORMAL_DEFECT, row["split"], mask))
    if not records:
        objects = sorted({row["object"] for row in csv.DictReader(open(split_file, newline="", encoding="utf-8"))})
        raise DataError(f"category '{category}': no row in {split_file}; its objects: {objects}")
    return records


def scan_kolektorsdd2(root: Path, category: str) -> list[ImageRecord]:
    records, skipped = [], 0
    for split in ("train", "test"):
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"{folder}: not found; dataset.root must be the KolektorSDD2 folder with train/ and test/")
        files = _images(folder)
        masks = {p for p in files if p.stem.endswith("_GT")}
        for image in files:
            if image in masks:
                continue
            mask = folder / f"{image.stem}_GT{image.suffix}"
            if mask not in masks:
                raise DataError(f"{image}: its mask {mask.name} is missing (KolektorSDD2 keeps <id>_GT.png beside <id>.png)")
            defective = bool(read_mask(mask).any())
            if split == "train" and defective:
                skipped += 1
                continue
            records.append(make_record(image, category, "defect" if defective else NORMAL_DEFECT, split, mask if defective else None))
        unmatched = sorted(m for m in masks if m.with_name(m.name.replace("_GT", "")) not in files)
        warn_ignored(folder, unmatched, "mask files that match no image")
    if skipped:
        log.info("KolektorSDD2: %d defective train images are not used (the detectors learn from normal images)", skipped)
    return records


SCANNERS: dict[str, Callable[[Path, str], list[ImageRecord]]] = {
    "mvtec3d": scan_mvtec3d,
    "mvtec_loco": scan_mvtec_loco,
    "mvtec_ad2": scan_mvtec_ad2,
    "visa": scan_visa,
    "kolektorsdd2": scan_kolektorsdd2,
}
assert tuple(SCANNERS) == LAYOUT_SOURCES, "params.LAYOUT_SOURCES names the same layouts"


def scan_layout(source: str, root: Path, categories: list[str]) -> list[ImageRecord]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset.root: folder {root} not found ({root.absolute()}); point it at the extracted {source} data")
    if source == "kolektorsdd2" and len(categories) != 1:
        raise DataError(f"categories: KolektorSDD2 is one category; list exactly one name, got {categories}")
    return [record for category in categories for record in SCANNERS[source](root, category)]
