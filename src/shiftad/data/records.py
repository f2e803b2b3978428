"""One record per image: the unit every stage passes around."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from shiftad.io import read_json, write_json

NORMAL_DEFECT = "good"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ImageRecord:
    path: str  # image file, relative to the project root where it lies inside it
    category: str
    label: int  # 0 normal, 1 anomalous
    defect_type: str  # "good" for normal images
    mask_path: str | None = None  # None: normal image, or a source without pixel masks
    source_split: str | None = None  # "train" / "test" in MVTec layout, else None

    @property
    def is_anomalous(self) -> bool:
        return self.label == 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sort_records(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    return sorted(records, key=lambda r: (r.category, r.source_split or "", r.defect_type, r.path))


def write_manifest(path: str | Path, records: Iterable[ImageRecord], source: str) -> None:
    records = sort_records(records)
    write_json(path, {"version": MANIFEST_VERSION, "source": source, "records": [r.to_dict() for r in records]})


def read_manifest(path: str | Path) -> list[ImageRecord]:
    content = read_json(path)
    if content.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: manifest version {content.get('version')} is not {MANIFEST_VERSION}; rerun `shiftad data`")
    return [ImageRecord(**record) for record in content["records"]]


def relative_to_cwd(path: str | Path) -> str:
    """Paths inside the project are stored relative to it, so the project can move."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()
