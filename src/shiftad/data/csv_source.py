"""A CSV listing the images, with paths relative to the data root (dataset.root).

Columns (a header row is required; names are case-insensitive, other columns are ignored
with a warning)::

    filename       image path relative to the root (an absolute path only if inside the root)
    is_anomalous   0 or 1 (true / false also accepted)
    mask_path      optional pixel mask, same path rules; an empty cell means no mask
    category       optional; an empty cell or no column means the one name in params `categories`
    defect_type    optional; default "good" for normal rows and "defect" for anomalous ones

Each error names the CSV file and the line (the header is line 1): a missing required
column, a path outside the root (`../x.png`, an absolute path elsewhere, a symbolic link
resolving outside), a label other than 0/1/true/false, a missing file, an image listed twice,
a defect_type that contradicts is_anomalous. The CSV has no train/test split
(source_split None): split.policy "ratios" makes one.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from shiftad.data.records import NORMAL_DEFECT, ImageRecord, relative_to_cwd
from shiftad.errors import DataError

REQUIRED = ("filename", "is_anomalous")
OPTIONAL = ("mask_path", "category", "defect_type")
LABELS = {"0": 0, "1": 1, "false": 0, "true": 1}
DEFAULT_DEFECT = "defect"

Row = dict[str, str]


def _read_rows(csv_file: Path) -> list[tuple[int, Row]]:
    """(line number, {column: stripped value}) per non-blank data row."""
    if not csv_file.is_file():
        raise DataError(f"{csv_file}: CSV file not found (dataset.csv.file, relative to dataset.root)")
    try:
        with open(csv_file, newline="", encoding="utf-8-sig") as handle:  # -sig: Excel's BOM
            reader = csv.reader(handle)
            columns = _check_header(csv_file, next(reader, None))
            rows = []
            for values in reader:
                if not any(value.strip() for value in values):
                    continue  # blank lines carry nothing
                if len(values) != len(columns):
                    raise DataError(f"{csv_file}, line {reader.line_num}: {len(values)} values for {len(columns)} columns {columns}")
                rows.append((reader.line_num, {c: v.strip() for c, v in zip(columns, values)}))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_file}: cannot read it as a UTF-8 CSV ({exc}); save it as CSV UTF-8") from None
    if not rows:
        raise DataError(f"{csv_file}: no rows below the header; list one image per row")
    return rows


def _check_header(csv_file: Path, header: list[str] | None) -> list[str]:
    columns = [name.strip().lower() for name in header or []]
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise DataError(
            f"{csv_file}, line 1: missing required column(s) {missing} (header: {header}); "
            f"expected filename,is_anomalous and optionally {','.join(OPTIONAL)}"
        )
    unknown = [name for name in columns if name not in REQUIRED + OPTIONAL]
    if unknown:
        warnings.warn(f"{csv_file}: ignored unknown columns {unknown} (known: {list(REQUIRED + OPTIONAL)})", stacklevel=3)
    return columns


def _label(value: str, where: str) -> int:
    label = LABELS.get(value.lower())
    if label is None:
        raise DataError(f"{where}: is_anomalous is '{value}'; use 0 (normal) or 1 (anomalous)")
    return label


def _inside_root(root: Path, value: str, column: str, where: str) -> Path:
    """The file a CSV cell names; it must lie inside `root`, also after following links."""
    if not value:
        raise DataError(f"{where}: {column} is empty")
    root_abs = Path(os.path.normpath(root.absolute()))
    path = Path(os.path.normpath(root_abs / value))  # an absolute value replaces root_abs
    outside = f"{where}: {column} '{value}' is outside the data root {root} (dataset.root)"
    if not path.is_relative_to(root_abs):
        raise DataError(f"{outside}; list files inside it, with paths relative to it")
    if not path.is_file():
        raise DataError(f"{where}: {column} '{value}': file {path} not found")
    if not path.resolve().is_relative_to(root.resolve()):
        raise DataError(f"{outside}: it is a symbolic link to {path.resolve()}; copy the file into the root instead")
    return path


def _plain_name(value: str, column: str, where: str) -> str:
    # categories and defect types become folder and file names in later stages
    if value in (".", "..") or "/" in value or "\\" in value:
        raise DataError(f"{where}: {column} '{value}' must be a plain name (no '/', '\\', '.' or '..')")
    return value


def _record(row: Row, root: Path, default_category: str | None, where: str) -> ImageRecord:
    label = _label(row["is_anomalous"], where)
    image = _inside_root(root, row["filename"], "filename", where)
    mask = _inside_root(root, row["mask_path"], "mask_path", where) if row.get("mask_path") else None
    defect = _plain_name(row.get("defect_type") or (NORMAL_DEFECT if label == 0 else DEFAULT_DEFECT), "defect_type", where)
    if (defect == NORMAL_DEFECT) != (label == 0):
        raise DataError(f"{where}: defect_type '{defect}' contradicts is_anomalous {label}; '{NORMAL_DEFECT}' is for normal images only")
    category = row.get("category") or default_category
    if category is None:
        raise DataError(f"{where}: no category; fill the `category` column, or list exactly one name in params `categories`")
    return ImageRecord(
        path=relative_to_cwd(image),
        category=_plain_name(category, "category", where),
        label=label,
        defect_type=defect,
        mask_path=relative_to_cwd(mask) if mask is not None else None,
    )


def read_csv_source(root: Path, csv_file: Path, default_category: str | None) -> list[ImageRecord]:
    """Records for every row of `csv_file`; paths in it are relative to `root`."""
    root, csv_file = Path(root), Path(csv_file)
    records = []
    first_line: dict[Path, int] = {}  # resolved image -> line, to catch an image listed twice
    for line, row in _read_rows(csv_file):
        where = f"{csv_file}, line {line}"
        record = _record(row, root, default_category, where)
        image = Path(record.path).resolve()
        if image in first_line:
            raise DataError(f"{where}: filename '{row['filename']}' is listed twice (first on line {first_line[image]}); keep one row per image")
        first_line[image] = line
        records.append(record)
    return records
