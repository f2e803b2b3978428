"""The MVTec AD layout: scanning it, and downloading / extracting the MVTec AD archive.

Layout, one folder per category::

    <root>/<category>/train/good/*                      normal training images
    <root>/<category>/test/good/*                       normal test images
    <root>/<category>/test/<defect>/*                   anomalous test images
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png   pixel masks (optional)

The same layout serves the synthetic set, MVTec AD itself and user data already laid out
this way (e.g. KolektorSDD). A root that holds `train/good` itself is read as one category
named after the folder. While scanning, hidden files and files without an image extension
(`.DS_Store`, `notes.txt`) are skipped with a warning listing them, and so are mask files
that match no image. A mask `<stem>.png` is accepted where `<stem>_mask.png` is absent.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from shiftad.data.images import list_image_files, warn_ignored
from shiftad.data.records import NORMAL_DEFECT, ImageRecord, relative_to_cwd
from shiftad.errors import DataError
from shiftad.params import DatasetParams

log = logging.getLogger(__name__)

TIMEOUT_S = 60  # seconds without an answer before a connection counts as unreachable
CHUNK_BYTES = 1 << 20
MASK_NAMES = ("{stem}_mask.png", "{stem}.png")  # MVTec's name first


# --- scanning -------------------------------------------------------------------------


def category_folder(root: Path, category: str) -> Path | None:
    """The folder holding `category` (with train/good), or None where it is missing."""
    candidates = [root / category]
    if root.absolute().name == category:
        candidates.append(root)  # the root is the category itself, e.g. .../kolektorsdd
    return next((folder for folder in candidates if (folder / "train" / "good").is_dir()), None)


def subfolders(folder: Path, warn_files: bool = True) -> list[Path]:
    """Visible subfolders, sorted; loose files in a class folder's parent belong nowhere and are reported."""
    if not folder.is_dir():
        return []
    entries = sorted(folder.iterdir())
    if warn_files:
        loose = [p for p in entries if not p.is_dir() and not p.name.startswith(".")]
        warn_ignored(folder, loose, "files outside a class folder")
    return [p for p in entries if p.is_dir() and not p.name.startswith(".")]


def _available_categories(root: Path) -> list[str]:
    return [p.name for p in subfolders(root, warn_files=False) if (p / "train" / "good").is_dir()]


def _category_folders(root: Path, categories: list[str] | None) -> list[tuple[str, Path]]:
    if categories is None:
        found = [(name, root / name) for name in _available_categories(root)]
        if not found and (root / "train" / "good").is_dir():
            found = [(root.absolute().name, root)]
        if not found:
            raise DataError(
                f"{root}: no category folders found; expected the MVTec AD layout "
                f"{root}/<category>/train/good/*.png (dataset.root)"
            )
        return found
    folders = []
    for category in categories:
        folder = category_folder(root, category)
        if folder is None:
            raise DataError(
                f"category '{category}': folder {root / category / 'train' / 'good'} not found "
                f"(MVTec AD layout); categories present in {root}: {_available_categories(root) or 'none'}"
            )
        folders.append((category, folder))
    return folders


def find_mask(mask_dir: Path, stem: str) -> Path | None:
    for pattern in MASK_NAMES:
        candidate = mask_dir / pattern.format(stem=stem)
        if candidate.is_file():
            return candidate
    return None


def warn_unused_masks(mask_root: Path, used: set[Path | None]) -> None:
    """A mask that matches no image is usually a naming mistake: say so instead of dropping it quietly."""
    if mask_root.is_dir():
        unused = [p for p in sorted(mask_root.rglob("*")) if p.is_file() and p not in used]
        warn_ignored(mask_root, unused, "mask files that match no image")


def make_record(image: Path, category: str, defect: str, split: str | None, mask: Path | None) -> ImageRecord:
    return ImageRecord(
        path=relative_to_cwd(image),
        category=category,
        label=0 if defect == NORMAL_DEFECT else 1,
        defect_type=defect,
        mask_path=relative_to_cwd(mask) if mask is not None else None,
        source_split=split,
    )


def _scan_category(category: str, folder: Path) -> list[ImageRecord]:
    train = folder / "train"
    # MVTec trains on normal images only: other train/ subfolders are not used.
    warn_ignored(train, [p for p in subfolders(train) if p.name != NORMAL_DEFECT], "train folders other than good/")
    records = [make_record(p, category, NORMAL_DEFECT, "train", None) for p in list_image_files(train / NORMAL_DEFECT)]
    used_masks: set[Path | None] = set()
    for defect_dir in subfolders(folder / "test"):
        mask_dir = folder / "ground_truth" / defect_dir.name
        for image in list_image_files(defect_dir):
            mask = find_mask(mask_dir, image.stem)
            used_masks.add(mask)
            records.append(make_record(image, category, defect_dir.name, "test", mask))
    warn_unused_masks(folder / "ground_truth", used_masks)
    if not records:
        raise DataError(f"category '{category}': no images in {folder} (expected {train / NORMAL_DEFECT}/*.png)")
    return records


def scan_mvtec_layout(root: Path, categories: list[str] | None = None) -> list[ImageRecord]:
    """Records for `categories` (None: every subfolder with train/good) under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (dataset.root)")
    records: list[ImageRecord] = []
    for category, folder in _category_folders(root, categories):
        records += _scan_category(category, folder)
    return records


# --- download -------------------------------------------------------------------------


def _by_hand(archive: Path, root: Path, categories: list[str]) -> str:
    example = root / categories[0] / "train" / "good"
    return (
        "To place the data by hand, either download the archive yourself and put it at "
        f"{archive}, or extract the categories {categories} into {root}/<category>/ in the "
        f"MVTec AD layout (e.g. {example}/000.png); then rerun."
    )


def sha256_of(path: Path) -> str:
    log.info("checking the SHA-256 of %s", path)
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: SHA-256 is {actual}, expected {expected} (dataset.mvtec.sha256). The file is "
            f"damaged or a different release: delete {path} and rerun to download it again, or, if "
            f"you trust this file, set dataset.mvtec.sha256: {actual}"
        )


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _save(response: http.client.HTTPResponse, part: Path, offset: int, progress: bool) -> None:
    """Stream the body into `part`, appending after `offset` bytes (0: start over)."""
    length = response.headers.get("Content-Length")
    expected = int(length) if length else None
    written = 0
    bar = tqdm(total=None if expected is None else offset + expected, initial=offset, unit="B",
               unit_scale=True, unit_divisor=1024, desc=f"downloading {part.name}", disable=not progress)
    with bar, open(part, "ab" if offset else "wb") as out:
        try:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            raise DataError(
                f"the download stopped after {offset + written} bytes ({exc.__class__.__name__}: {exc}); "
                f"rerun to resume it from {part}"
            ) from None
    if expected is not None and written < expected:
        raise DataError(f"the download stopped after {offset + written} of {offset + expected} bytes; rerun to resume it from {part}")


def download(url: str, target: Path, progress: bool = True, hint: str = "") -> None:
    """Download `url` to `target` through `<target>.part`, resuming a `.part` left by an earlier run."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "shiftad"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
        log.info("resuming %s after %d bytes", part, offset)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            if offset and response.status != 206:
                log.info("the server ignored the Range request: downloading from the start")
                offset = 0
            elif offset and _range_start(response) != offset:
                raise DataError(
                    f"{url}: asked to resume at byte {offset}, the server sent "
                    f"'{response.headers.get('Content-Range')}'; delete {part} and rerun"
                )
            _save(response, part, offset, progress)
    except urllib.error.HTTPError as exc:
        exc.close()
        if not (exc.code == 416 and offset):  # 416 on a resume: the .part is already whole
            raise DataError(f"{url}: the server answered HTTP {exc.code} {exc.reason} (dataset.mvtec.url). {hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url} could not be reached ({reason}) (dataset.mvtec.url). {hint}") from None
    os.replace(part, target)


def _extract_selected(archive: Path, destination: Path, wanted: set[str], progress: bool) -> set[str]:
    """One streaming pass (the archive is several GB of xz): extract members under `<cat>/`
    for the wanted categories; return the archive's top-level folders."""
    present: set[str] = set()
    member_name = ""
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files", disable=not progress):
                member_name = member.name
                parts = PurePosixPath(member.name).parts
                if not parts:
                    continue
                if len(parts) > 1 or member.isdir():  # a loose top-level file (license.txt) is no category
                    present.add(parts[0])
                if parts[0] in wanted:
                    tar.extract(member, destination, filter="data")  # "data": no paths outside, no devices
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(
            f"{archive}: cannot extract it (at '{member_name}': {exc.__class__.__name__}: {exc}); "
            "if the archive is damaged, delete it and rerun"
        ) from None
    return present


def extract_categories(archive: Path, root: Path, categories: list[str], progress: bool = True) -> None:
    """Extract only `categories` into `root`; each appears there whole or not at all."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=root))
    try:
        present = _extract_selected(archive, staging, set(categories), progress)
        unknown = [c for c in categories if c not in present]
        if unknown:
            raise DataError(
                f"{archive}: no category {unknown} in this archive (params key: categories); "
                f"it holds: {sorted(present)}"
            )
        for category in categories:
            target = root / category
            if target.is_dir() and not any(target.iterdir()):
                target.rmdir()  # an empty placeholder folder is fine to replace
            os.replace(staging / category, target)  # a rename: a half extraction never shows up
            log.info("extracted %s", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_partial(root: Path, categories: list[str]) -> None:
    """A category folder without train/good is not ours to overwrite."""
    for category in categories:
        folder = root / category
        if folder.exists() and not (folder.is_dir() and not any(folder.iterdir())):
            raise DataError(
                f"{folder} exists but holds no train/good folder, so category '{category}' is "
                f"incomplete; remove or rename {folder} and rerun to extract it again"
            )


def download_mvtec(params: DatasetParams, categories: list[str], progress: bool = True) -> None:
    """Make sure `params.root` holds every selected MVTec AD category, downloading the
    archive (resumable, checksummed) and extracting only the missing categories."""
    root = Path(params.root)
    missing = [c for c in categories if category_folder(root, c) is None]
    if not missing:
        log.info("%s already holds %s: nothing to download", root, list(categories))
        return
    _refuse_partial(root, missing)
    archive = Path(params.mvtec.archive)
    if archive.is_file():
        log.info("using the archive already at %s", archive)
    else:
        download(params.mvtec.url, archive, progress, hint=_by_hand(archive, root, missing))
    verify_sha256(archive, params.mvtec.sha256)
    extract_categories(archive, root, missing, progress)
