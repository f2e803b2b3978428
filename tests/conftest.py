"""Shared fixtures: small images on disk and records pointing at them."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before numpy loads its BLAS, which sizes its pool then

import contextlib  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from shiftad.data.records import ImageRecord  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def torch_threads(threads: int):
    """torch's intra-op threads for a block. Bitwise checks of float products run on one: with
    several, MKL rounds the rows at the edge of a thread's share of rows differently, and its
    dynamic threading moves that edge with the machine's load (last-bit differences under load)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def _restore_thread_settings():
    """A test that calls `shiftad.cli.main` caps this process's thread pools (as a stage job
    should); put them back so later tests do not depend on which ran before."""
    env = {var: os.environ.get(var) for var in THREAD_ENV_VARS}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    yield
    for var, value in env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    torch = sys.modules.get("torch")
    if torch is not None:
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        faiss = sys.modules.get("faiss")
        if faiss is not None and threads is not None:
            faiss.omp_set_num_threads(threads)


def texture_records(folder: Path, n: int, size: int = 64, seed: int = 0, category: str = "tex") -> list[ImageRecord]:
    """Smooth random textures (normal images) written as PNGs."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        base = gaussian_filter(rng.normal(size=(size, size, 3)), sigma=(2, 2, 0))
        image = np.clip(128 + 12 * base / base.std(), 0, 255).astype(np.uint8)
        path = folder / f"{seed}_{i:03d}.png"
        Image.fromarray(image).save(path)
        records.append(ImageRecord(str(path), category, 0, "good", None, "train"))
    return records


def stripe_records(folder: Path, n: int, size: int = 128, seed: int = 0, category: str = "stripes") -> list[ImageRecord]:
    """Noisy diagonal stripes in a warm tint: visibly unlike the gray textures of `texture_records`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    records = []
    for i in range(n):
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin((xx + yy) / 4.0 + phase)[..., None] * np.array([60, 35, 10]) + np.array([150, 110, 70])
        image = np.clip(wave + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{seed}_{i:03d}.png"
        Image.fromarray(image).save(path)
        records.append(ImageRecord(str(path), category, 0, "good", None, "train"))
    return records


def with_defect(record: ImageRecord, folder: Path, box: tuple[int, int, int, int]) -> ImageRecord:
    """Copy of a normal image with a bright square defect and its mask."""
    image = np.array(Image.open(record.path))
    y0, x0, y1, x1 = box
    image[y0:y1, x0:x1] = [255, 0, 255]
    mask = np.zeros(image.shape[:2], dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    path = folder / f"defect_{Path(record.path).name}"
    mask_path = folder / f"defect_{Path(record.path).stem}_mask.png"
    Image.fromarray(image).save(path)
    Image.fromarray(mask).save(mask_path)
    return ImageRecord(str(path), record.category, 1, "square", str(mask_path), "test")


@pytest.fixture(scope="session")
def lite0_available() -> bool:
    from shiftad.backbones import offline_weights_file

    return offline_weights_file("tf_efficientnet_lite0") is not None
