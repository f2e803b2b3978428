"""Benchmark shiftad's EfficientAD: its CPU cost, and its accuracy beside anomalib's EfficientAd.

    python benchmarks/efficientad.py [FOLDER] [--quick] [--only timing|compare] [--steps 20]
        [--channels 128] [--lr 1e-3] [--teacher random|distill] [--distill-steps 20] [--distill-batch 8]
        [--train 30] [--val 8] [--test 16] [--timing-steps 12 4] [--threads 2] [--json out.json]

The default run takes about 8.5 minutes on 2 idle cores, --quick about 4; the time goes into
the 256-px full-width networks (4-6 s per training step, 0.7-2.6 s per image on 2 cores).

FOLDER is one category in MVTec AD layout (default: ../shared/data/kolektorsdd, which is read
in place, never copied).

1. Timing (ours only): EfficientAD-S and -M at the scales of params.yaml (smoke: 128 px,
   width 0.25, C = 64; cpu: 192 px, width 0.125, C = 64; paper: 256 px, width 1.0, C = 384), on CPU with --threads threads, each
   configuration in its own subprocess (its peak RSS is its own). Each gets a random-init PDN
   teacher (timing does not depend on the teacher's quality) and the default penalty pool, and
   fits for a few steps: s/step is the median interval between consecutive training steps (the
   setup before the first step is reported apart), ms/image the median over repeats of scoring
   an in-memory batch. The full training time is extrapolated from s/step to the params'
   default steps (smoke 150, cpu 300, paper 70,000).

2. Side by side with anomalib 2.7's EfficientAd (Engine on CPU), on the same images, with the
   same teacher weights, the same penalty image folder, the same steps, batch 1, the same Adam
   learning rate and weight decay: 256 px, width 1.0 (anomalib's PDN widths are fixed), PDN-S,
   C = --channels. The teacher is random-init (default) or distilled here with shiftad's
   `distill_teacher` on the train images (--teacher distill); it is written as
   teacher.safetensors + teacher.json for us and, with anomalib's key names, as
   `<anomalib cache>/pre_trained/efficientad_pretrained_weights/pretrained_teacher_small.pth`
   for anomalib (an existing file there is backed up and restored; the folder is removed
   again if this script made it), so anomalib never downloads. Our train/good images are split
   into train and validation normals; both fit on the same train images and normalise their
   maps with quantiles over the same validation normals (anomalib through a Folder datamodule
   whose val split is that folder, instead of its default of half the test set), and both are
   scored on the same test images. The parent computes both AUROCs with the same sklearn code
   (pixel AUROC at 256 x 256, masks resized nearest-neighbour). --ours-scale cpu fits ours at
   params.yaml's cpu architecture instead (anomalib's PDN has one input size and width), with a
   teacher of its own made the same way (random-init, or distilled with the same steps and batch).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchcore_vs_anomalib import (MALLOC_MMAP_THRESHOLD, busy_note, child_env, duration, load_masks,  # noqa: E402
                                   load_records, memory_mb, run_measured_child)
from serve import median_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kolektorsdd"
COMPARE_SIZE = 256  # anomalib's encoder needs 256 px; its PDN is full width
def scale_architectures() -> dict[str, dict]:
    """PDN input size, width and C of every scale, from the params schema's defaults."""
    from shiftad.params import SCALES, EfficientADParams

    return {scale: EfficientADParams().architecture[scale].model_dump() for scale in SCALES}
SIZES = {"small": "S", "medium": "M"}
TEACHER_KEYS = {"small": ["conv1", "conv2", "conv3", "conv4"], "medium": ["conv1", "conv2", "conv3", "conv4", "conv5", "conv6"]}


# ----------------------------------------------------------------------------- data


def split_records(train: list[dict], test: list[dict], n_train: int | None, n_val: int, n_test: int | None,
                  seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """train/good -> (train, validation normals), disjoint, by a seeded permutation; the test
    set cut to n_test images per label (normal / anomalous), evenly spaced in sorted order."""
    order = np.random.default_rng(seed).permutation(len(train))
    if n_val >= len(train):
        sys.exit(f"--val {n_val}: train/good has only {len(train)} images")
    val = [train[i] for i in order[:n_val]]
    rest = [train[i] for i in order[n_val:]]
    fit = rest if n_train is None else rest[:n_train]
    picked = []
    for label in (0, 1):
        group = [r for r in test if r["label"] == label]
        if n_test is not None and n_test < len(group):
            group = [group[int(i)] for i in np.linspace(0, len(group) - 1, n_test).round()]
        picked += group
    return sorted(fit, key=lambda r: r["path"]), sorted(val, key=lambda r: r["path"]), picked


def write_penalty_folder(root: Path, size: int, seed: int) -> int:
    """Our default penalty pool (scikit-image photos + 32 procedural images at 2 x size) as PNGs
    in root/pool/ (torchvision's ImageFolder, which anomalib uses, needs a class folder)."""
    from PIL import Image

    from shiftad.components.offline_images import procedural_images, skimage_photos

    folder = root / "pool"
    folder.mkdir(parents=True)
    photos = skimage_photos()
    for name, image in photos.items():
        Image.fromarray(image).save(folder / f"photo_{name}.png")
    generated = procedural_images(32, 2 * size, seed)
    for i, image in enumerate(generated):
        Image.fromarray(image).save(folder / f"procedural_{i:02d}.png")
    return len(photos) + len(generated)


def link_dataset(root: Path, train: list[dict], val: list[dict], test: list[dict]) -> None:
    """Symlinks (never copies) to the chosen images, in the folders anomalib's Folder reads."""
    for sub, records in (("train/good", train), ("val/good", val), ("test/good", [r for r in test if r["label"] == 0]),
                         ("test/anomalous", [r for r in test if r["label"] == 1])):
        folder = root / sub
        folder.mkdir(parents=True)
        for record in records:
            source = Path(record["path"])
            (folder / f"{source.parent.name}__{source.name}").symlink_to(source)


# ----------------------------------------------------------------------------- teachers


def pdn_facts(model_size: str, image_size: int, width: float, channels: int) -> dict[str, Any]:
    return {"model_size": model_size, "channels": channels, "width": width, "image_size": image_size}


def write_teacher(folder: Path, state: dict, facts: dict) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "teacher.safetensors"))
    (folder / "teacher.json").write_text(json.dumps(facts, indent=2))


def random_teacher(folder: Path, facts: dict, seed: int) -> None:
    import torch

    from shiftad.components.pdn import pdn

    torch.manual_seed(seed)
    net = pdn(facts["model_size"], facts["channels"], facts["width"])
    write_teacher(folder, net.state_dict(), {"source": "random-init", "seed": seed, **facts})


def anomalib_teacher_state(state: dict, model_size: str) -> dict:
    """Our nn.Sequential keys ('0.weight', '0.bias', '3.weight', ...) -> anomalib's conv1..convN,
    in the layers' order (a safetensors file lists its keys sorted as strings, so sort by layer)."""
    names = [f"{conv}.{kind}" for conv in TEACHER_KEYS[model_size] for kind in ("weight", "bias")]
    ours = sorted(state, key=lambda key: (int(key.split(".")[0]), key.split(".")[1] != "weight"))
    if len(ours) != len(names):
        raise RuntimeError(f"teacher has {len(ours)} tensors, anomalib's PDN {len(names)}")
    return {name: state[key] for name, key in zip(names, ours)}


# ----------------------------------------------------------------------------- children


def step_clock(module: Any, name: str) -> list[float]:
    """Wrap module.name (called once per training step) to record when each step starts."""
    stamps: list[float] = []
    original = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamps.append(time.perf_counter())
        return original(*args, **kwargs)

    setattr(module, name, wrapper)
    return stamps


def step_facts(stamps: list[float], start: float) -> dict[str, Any]:
    intervals = np.diff(stamps)
    return {"s_per_step": float(np.median(intervals)) if len(intervals) else math.nan, "steps_timed": len(intervals),
            "setup_s": stamps[0] - start if stamps else math.nan, "step_intervals": [round(float(v), 3) for v in intervals]}


def our_model(settings: dict, teacher: Path, model_size: str, scale: str, arch: dict, steps: int, learning_rate: float,
              penalty: str) -> Any:
    from shiftad.detectors.efficientad import EfficientAD

    model = EfficientAD(teacher=str(teacher), model_size=model_size, scale=scale, image_size=arch["image_size"], output_size=COMPARE_SIZE,
                        width=arch["width"], channels=arch["channels"], steps=steps, learning_rate=learning_rate,
                        weight_decay=settings["weight_decay"], penalty_images=penalty, device="cpu", batch_size=8, seed=settings["seed"])
    model.progress = settings["progress"]
    return model


def run_timing(settings: dict, name: str, work: Path) -> dict:
    import shiftad.detectors.efficientad as efficientad_module
    from shiftad.data.images import read_image
    from shiftad.data.records import ImageRecord

    config = settings["timing"][name]
    arch = scale_architectures()[config["scale"]]
    teacher = work / f"teacher_{name}"
    random_teacher(teacher, pdn_facts(config["model_size"], **arch), settings["seed"])
    model = our_model(settings, teacher, config["model_size"], config["scale"], arch, config["steps"], config["learning_rate"], "default")
    train = [ImageRecord(**r) for r in settings["timing_train"]]
    val = [ImageRecord(**r) for r in settings["timing_val"]]
    stamps = step_clock(efficientad_module, "colour_jitter")
    start = time.perf_counter()
    model.fit(train, val)
    fit_s = time.perf_counter() - start
    facts = {**config, **arch, "fit_s": fit_s, **step_facts(stamps, start), "after_steps_s": time.perf_counter() - stamps[-1]}
    images = [read_image(r["path"]) for r in settings["timing_test"][: config["infer_batch"]]]
    facts["ms_per_image"] = median_ms(lambda: model.score_images(images), config["repeats"]) / len(images)
    facts["infer_batch"], facts["peak_rss_mb"] = len(images), memory_mb("VmHWM")
    return facts


def run_teacher(settings: dict, work: Path, ours_only: bool = False) -> dict:
    """The side-by-side teacher: random-init, or distilled with shiftad's distill_teacher. With
    `ours_only`, the teacher of our own architecture (--ours-scale cpu), made the same way."""
    import torch

    from shiftad.components.pdn import normalise_input, pdn

    arch = settings["ours_arch"] if ours_only else {"image_size": COMPARE_SIZE, "width": 1.0, "channels": settings["channels"]}
    facts = pdn_facts("small", **arch)
    folder = work / ("teacher_ours" if ours_only else "teacher")
    if settings["teacher"] == "random":
        random_teacher(folder, facts, settings["seed"])
    else:
        from shiftad.data.images import read_image
        from shiftad.distill import distill_teacher
        from shiftad.params import validate_params

        params = validate_params({"seed": settings["seed"], "efficientad": {
            "scale": "smoke", "device": "cpu", "architecture": {"smoke": arch},
            "teacher": {"smoke": {"steps": settings["distill_steps"], "batch_size": settings["distill_batch"]}}}})
        images = [read_image(r["path"]) for r in settings["train"]]
        state, made = distill_teacher(images, params, progress=settings["progress"])
        made.pop("history", None)
        write_teacher(folder, state, made)
        facts = made
    if ours_only:
        return facts
    from safetensors.torch import load_file

    state = load_file(str(folder / "teacher.safetensors"))
    theirs = anomalib_teacher_state(state, "small")
    torch.save(theirs, work / "teacher_anomalib.pth")
    # the same weights must give the same features in anomalib's PDN (it normalises inside)
    from anomalib.models.image.efficient_ad.torch_model import SmallPatchDescriptionNetwork

    net = SmallPatchDescriptionNetwork(out_channels=settings["channels"]).eval()
    net.load_state_dict(theirs, strict=True)
    ours = pdn("small", settings["channels"], 1.0).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((net(x) - ours(normalise_input(x))).abs().max())
    if diff > 1e-4:
        raise RuntimeError(f"anomalib's PDN does not reproduce ours with the mapped teacher weights (max |diff| {diff:.2e})")
    return {**facts, "anomalib_check_max_diff": diff}


def run_ours(settings: dict, work: Path) -> dict:
    import shiftad.detectors.efficientad as efficientad_module
    from shiftad.data.records import ImageRecord

    arch = settings["ours_arch"]
    teacher = work / ("teacher_ours" if settings["ours_scale"] != "anomalib" else "teacher")
    model = our_model(settings, teacher, "small", settings["ours_scale"], arch, settings["steps"], settings["learning_rate"],
                      str(work / "penalty"))
    train = [ImageRecord(**r) for r in settings["train"]]
    val = [ImageRecord(**r) for r in settings["val"]]
    test = [ImageRecord(**r) for r in settings["test"]]
    stamps = step_clock(efficientad_module, "colour_jitter")
    start = time.perf_counter()
    model.fit(train, val)
    fit_s = time.perf_counter() - start
    facts = {"fit_s": fit_s, **step_facts(stamps, start), "penalty_pool": model.penalty_pool_, "quantiles": model.quantiles_}
    start = time.perf_counter()
    scores = model.score(test)
    facts["predict_s"] = time.perf_counter() - start
    facts["peak_rss_mb"] = memory_mb("VmHWM")
    np.save(work / "ours_image_scores.npy", scores.image_scores.astype(np.float64))
    np.save(work / "ours_maps.npy", scores.maps.astype(np.float32))
    return facts


def install_anomalib_teacher(work: Path) -> tuple[Path, dict]:
    """Put our teacher where anomalib loads it, backing up what is there; returns the record to undo it."""
    from anomalib.utils.path import get_pretrained_weights_dir

    folder = get_pretrained_weights_dir() / "efficientad_pretrained_weights"
    target = folder / "pretrained_teacher_small.pth"
    record = {"target": str(target), "created_dir": not folder.exists(), "backup": None}
    if target.exists():
        record["backup"] = str(work / "pretrained_teacher_small.pth.backup")
        shutil.copy2(target, record["backup"])
    (work / "anomalib_weights.json").write_text(json.dumps(record))  # the parent undoes it should this child die
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(work / "teacher_anomalib.pth", target)
    return target, record


def undo_anomalib_teacher(work: Path) -> str | None:
    path = work / "anomalib_weights.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    target = Path(record["target"])
    if record["backup"]:
        shutil.copyfile(record["backup"], target)
        message = f"restored the existing {target}"
    else:
        target.unlink(missing_ok=True)
        message = f"removed {target} (written for this run)"
        if record["created_dir"] and target.parent.is_dir() and not any(target.parent.iterdir()):
            target.parent.rmdir()
    path.unlink()
    return message


def run_anomalib(settings: dict, work: Path) -> dict:
    from anomalib.data import Folder
    from anomalib.data.datasets.image.folder import FolderDataset
    from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
    from anomalib.engine import Engine
    from anomalib.models import EfficientAd
    from lightning.pytorch import Callback, seed_everything

    class SameValidationFolder(Folder):
        """Folder whose validation set is a folder of normal images (ours), not a split of test."""

        def _setup(self, _stage: str | None = None) -> None:
            super()._setup(_stage)
            self.val_data = FolderDataset(name=self.name, split=Split.TRAIN, root=self.root, normal_dir="val/good")

    class StepClock(Callback):
        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_train_batch_start(self, *args: Any) -> None:
            self.stamps.append(time.perf_counter())

    seed_everything(settings["seed"], verbose=False)
    steps = settings["steps"]
    datamodule = SameValidationFolder(
        name="data", root=work / "data", normal_dir="train/good", abnormal_dir="test/anomalous", normal_test_dir="test/good",
        train_batch_size=1, eval_batch_size=8, num_workers=0, test_split_mode=TestSplitMode.FROM_DIR,
        val_split_mode=ValSplitMode.FROM_DIR, seed=settings["seed"],
    )  # fmt: skip
    model = EfficientAd(imagenet_dir=work / "penalty", teacher_out_channels=settings["channels"], model_size="small",
                        lr=settings["learning_rate"], weight_decay=settings["weight_decay"],
                        post_processor=False, evaluator=False, visualizer=False)  # fmt: skip
    clock = StepClock()
    # validation (where anomalib computes its map quantiles, in on_validation_start) runs after
    # exactly `steps` steps; Lightning otherwise validates only at epoch ends, so a max_steps
    # run that stops mid-epoch keeps the quantiles of the last full epoch (or none at all).
    engine = Engine(default_root_dir=work / "anomalib_results", max_steps=steps, accelerator="cpu", devices=1, logger=False,
                    val_check_interval=steps, check_val_every_n_epoch=None, limit_val_batches=1,
                    enable_progress_bar=settings["progress"], enable_model_summary=False, callbacks=[clock])  # fmt: skip
    _, record = install_anomalib_teacher(work)
    try:
        start = time.perf_counter()
        engine.fit(model, datamodule=datamodule)
        fit_s = time.perf_counter() - start
    finally:
        restored = undo_anomalib_teacher(work)
    quantiles = {k: float(v) for k, v in model.model.quantiles.items()}
    if not any(quantiles.values()):
        raise RuntimeError("anomalib's map quantiles were never computed (no validation ran)")
    facts = {"fit_s": fit_s, **step_facts(clock.stamps, start), "teacher_file": record["target"], "teacher_file_after": restored,
             "quantiles": quantiles, "n_val": len(datamodule.val_data), "n_train": len(datamodule.train_data),
             "lr_scheduler_interval": engine.trainer.lr_scheduler_configs[0].interval}
    start = time.perf_counter()
    predictions = engine.predict(model, datamodule=datamodule)
    facts["predict_s"] = time.perf_counter() - start
    facts["peak_rss_mb"] = memory_mb("VmHWM")
    by_path = {}
    for batch in predictions:
        for path, score, anomaly_map in zip(batch.image_path, batch.pred_score, batch.anomaly_map):
            by_path[str(Path(path).resolve())] = (float(score), anomaly_map.squeeze().numpy())
    order = [str(Path(r["path"]).resolve()) for r in settings["test"]]
    missing = [p for p in order if p not in by_path]
    if missing:
        raise RuntimeError(f"anomalib predicted no score for {len(missing)} test images, e.g. {missing[0]}")
    np.save(work / "anomalib_image_scores.npy", np.array([by_path[p][0] for p in order], dtype=np.float64))
    np.save(work / "anomalib_maps.npy", np.stack([by_path[p][1] for p in order]).astype(np.float32))
    return facts


def run_child(kind: str, work: Path, name: str | None) -> None:
    import torch

    settings = json.loads((work / "settings.json").read_text())
    torch.set_num_threads(settings["threads"])
    if kind == "timing":
        facts = run_timing(settings, name, work)
    else:
        facts = {"teacher": run_teacher, "teacher_ours": lambda *a: run_teacher(*a, ours_only=True), "ours": run_ours,
                 "anomalib": run_anomalib}[kind](settings, work)
    facts["torch_threads"] = torch.get_num_threads()
    (work / f"{name or kind}.json").write_text(json.dumps(facts, indent=2))


def start_child(kind: str, work: Path, settings: dict, name: str | None = None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work)] + (["--name", name] if name else [])
    return run_measured_child(command, child_env(settings["threads"], settings["progress"]), work, name or kind, work / f"{name or kind}.json")


# ----------------------------------------------------------------------------- report


def frame_width(size: int) -> int:
    """Pixels of the band both pad around the maps (4 output pixels) once resized to `size`."""
    from shiftad.components.pdn import MAP_PADDING, pdn_output_size

    return round(size * MAP_PADDING / (pdn_output_size(size) + 2 * MAP_PADDING))


def aurocs(image_scores: np.ndarray, maps: np.ndarray, labels: np.ndarray, masks: np.ndarray) -> tuple[float, float, float]:
    """Image AUROC, pixel AUROC, and pixel AUROC inside the padded frame (the frame's pixels left out)."""
    from sklearn.metrics import roc_auc_score

    image = float(roc_auc_score(labels, image_scores)) if 0 < labels.sum() < len(labels) else math.nan
    pixel = float(roc_auc_score(masks.ravel(), maps.ravel())) if masks.any() else math.nan
    band = frame_width(masks.shape[-1])
    inner = (slice(None), slice(band, masks.shape[-2] - band), slice(band, masks.shape[-1] - band))
    inside = float(roc_auc_score(masks[inner].ravel(), maps[inner].ravel())) if masks[inner].any() else math.nan
    return image, pixel, inside


def format_timing(results: dict[str, dict], threads: int) -> str:
    lines = [f"1. shiftad EfficientAD on CPU ({threads} threads; random-init teacher, default penalty pool; timing only)",
             f"{'config':<10}{'px':>5}{'width':>7}{'C':>5}{'s/step':>9}{'steps':>7}{'setup s':>9}{'ms/image':>10}"
             f"{'peak RSS MiB':>14}{'full training':>15}{'':>3}{'other CPU':>10}"]
    notes = []
    full_steps = ", ".join(sorted({f"{f['scale']} {f['full_steps']:,}" for f in results.values()}, reverse=True))
    scoring = "; ".join(sorted({f"{f['scale']}: batch {f['infer_batch']}, {f['repeats']} call{'s' if f['repeats'] > 1 else ''}"
                                for f in results.values()}, reverse=True))
    for name, f in results.items():
        full = f["s_per_step"] * f["full_steps"]
        lines.append(f"{name:<10}{f['image_size']:>5}{f['width']:>7.2f}{f['channels']:>5}{f['s_per_step']:>9.3f}{f['steps_timed']:>7}"
                     f"{f['setup_s']:>9.1f}{f['ms_per_image']:>10.1f}{f['peak_rss_mb']:>14.0f}{duration(full):>15}"
                     f"{'':>3}{f['other_cpu_share']:>10.0%}")  # fmt: skip
        notes.append(busy_note(name, f))
    lines.append("s/step: median interval between consecutive training steps (steps = intervals timed); setup: fit() up to "
                 "the first step (reading images, teacher statistics, penalty pool); ms/image: score_images on a batch of "
                 f"in-memory images after a warm-up call, median over calls ({scoring}); full training: s/step x the "
                 f"params' default steps ({full_steps}).")
    return "\n".join(lines + [n for n in notes if n])


ROWS = [
    ("image AUROC", "image_auroc", "{:.4f}", False),
    ("pixel AUROC", "pixel_auroc", "{:.4f}", False),
    ("  inside the padded frame", "pixel_auroc_inside", "{:.4f}", False),
    ("train s (fit, total)", "fit_s", "{:.1f}", True),
    ("  setup before step 1 s", "setup_s", "{:.1f}", True),
    ("  s/step (median)", "s_per_step", "{:.2f}", True),
    ("predict ms/image", "predict_ms_per_image", "{:.0f}", True),
    ("peak RSS MiB", "peak_rss_mb", "{:.0f}", True),
    ("other processes' CPU", "other_cpu_share", "{:.0%}", False),
]


def format_compare(settings: dict, teacher: dict, results: dict[str, dict], labels: np.ndarray) -> str:
    n_bad = int(labels.sum())
    made = (f"distilled with shiftad's distill_teacher on the {len(settings['train'])} train images: {teacher['steps']} steps, "
            f"batch {teacher['batch_size']}, {teacher['backbone']} {teacher['layers']}, final loss {teacher['final_loss']:.4f}, "
            f"{teacher['seconds']:.0f} s" if settings["teacher"] == "distill" else f"random-init PDN-S (seed {settings['seed']})")
    ours, theirs = results["shiftad"], results["anomalib"]
    lines = [
        "2. Side by side with anomalib's EfficientAd (same teacher weights, penalty folder, steps, images)",
        f"data              {settings['data']}: train {len(settings['train'])} normal, validation {len(settings['val'])} normal "
        f"(from train/good), test {len(labels)} ({n_bad} anomalous, {len(labels) - n_bad} normal)",
        f"model             EfficientAD-S, {COMPARE_SIZE} px, width 1.0, C = {settings['channels']} (student 2C)"
        + ("" if settings["ours_scale"] == "anomalib" else
           f"; ours at its {settings['ours_scale']} scale: {settings['ours_arch']['image_size']} px, width {settings['ours_arch']['width']:g}, "
           f"C = {settings['ours_arch']['channels']} (anomalib's PDN has one input size and width)"),
        f"teacher           {made}; same tensors in anomalib's PDN (max |output diff| {teacher['anomalib_check_max_diff']:.1e})"
        + ("" if settings["ours_scale"] == "anomalib" else "; ours: its own architecture's teacher, made the same way"
           + (f" (final loss {teacher['ours']['final_loss']:.4f})" if "final_loss" in teacher["ours"] else "")),
        f"training          {settings['steps']} steps, batch 1, Adam lr {settings['learning_rate']:g}, weight decay "
        f"{settings['weight_decay']:g}, lr x0.1 at 95% of the steps (anomalib's StepLR is stepped once per "
        f"{theirs['lr_scheduler_interval']} with step_size int(0.95 x steps), so its lr never decays here)",
        f"penalty images    one folder for both: {ours['penalty_pool']} (anomalib: ImageFolder over its class folder)",
        f"map quantiles     0.9 / 0.995 over the {len(settings['val'])} validation normals in both: ours on the unpadded "
        f"{pdn_output_size_of(settings['ours_arch']['image_size'])}x{pdn_output_size_of(settings['ours_arch']['image_size'])} maps, anomalib in on_validation_start over its "
        f"val dataloader ({theirs['n_val']} images here; its Folder default val split is half the test set) on the padded, "
        f"resized 256x256 maps",
        f"threads           torch {settings['threads']} (OMP/MKL too), MALLOC_MMAP_THRESHOLD_={MALLOC_MMAP_THRESHOLD}, each in its own subprocess",
        "",
        "".ljust(26) + "shiftad".rjust(11) + "anomalib".rjust(11) + "ratio".rjust(9),
    ]
    for label, key, fmt, with_ratio in ROWS:
        ratio = f"{ours[key] / theirs[key]:.2f}" if with_ratio and theirs[key] else ""
        lines.append(label.ljust(26) + fmt.format(ours[key]).rjust(11) + fmt.format(theirs[key]).rjust(11) + ratio.rjust(9))
    lines.append(f"(inside the padded frame: pixels of the {frame_width(COMPARE_SIZE)}-px band both pad around the maps left "
                 "out; ours pads the normalised map with 0, the 0.9-quantile level of normal pixels, anomalib pads the raw "
                 "maps before normalising, so its band lies below every other pixel)")
    lines.append("(ratio = shiftad / anomalib; train s: fit() / engine.fit(), including reading the train images, teacher "
                 "statistics and validation quantiles for both, and for anomalib the Lightning Trainer, one validation batch "
                 "and a checkpoint; s/step: median interval between step starts; predict: score() / engine.predict() over "
                 "the test images, reading them from disk included)")
    lines += [n for n in (busy_note("shiftad", ours), busy_note("anomalib", theirs)) if n]
    return "\n".join(lines)


def pdn_output_size_of(size: int) -> int:
    from shiftad.components.pdn import pdn_output_size

    return pdn_output_size(size)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DATA, help="one category in MVTec AD layout (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="a few-minute smoke: fewer steps and images")
    parser.add_argument("--only", choices=("timing", "compare"), default=None)
    parser.add_argument("--steps", type=int, default=None, help="side-by-side training steps (default 20; --quick 4)")
    parser.add_argument("--channels", type=int, default=128, help="side-by-side teacher channels C (<= 152 to distill from Lite0)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of both in the side-by-side")
    parser.add_argument("--teacher", choices=("random", "distill"), default="random", help="side-by-side teacher")
    parser.add_argument("--distill-steps", type=int, default=20)
    parser.add_argument("--distill-batch", type=int, default=8)
    parser.add_argument("--train", type=int, default=None, help="side-by-side train images (default 30; --quick 6; 0 = all)")
    parser.add_argument("--val", type=int, default=None, help="validation normals held out of train/good (default 8; --quick 2)")
    parser.add_argument("--test", type=int, default=None, help="test images per label (default 16; --quick 3; 0 = all)")
    parser.add_argument("--timing-steps", type=int, nargs=2, metavar=("SMOKE", "PAPER"), default=None,
                        help="steps fitted per timing configuration (default 12 4; --quick 6 2)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write settings and numbers here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--ours-scale", choices=("anomalib", "cpu", "smoke"), default="anomalib",
                        help="side-by-side architecture of ours: anomalib's (256 px, width 1, C = --channels; the default) or a "
                             "scale of params.yaml (its PDN input, width and C, with its own teacher made the same way)")
    parser.add_argument("--child", choices=("timing", "teacher", "teacher_ours", "ours", "anomalib"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def pick(value: int | None, default: int, quick: int, is_quick: bool) -> int | None:
    value = (quick if is_quick else default) if value is None else value
    return None if value == 0 else value


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.work, args.name)
        return
    wall_start = time.perf_counter()
    from shiftad.params import EfficientADParams

    defaults = EfficientADParams()
    folder = args.folder.resolve()
    train_all, test_all = load_records(folder, None)
    q = args.quick
    train, val, test = split_records(train_all, test_all, pick(args.train, 30, 6, q), pick(args.val, 8, 2, q) or 1,
                                     pick(args.test, 16, 3, q), args.seed)
    smoke_steps, paper_steps = args.timing_steps or ((6, 2) if q else (12, 4))
    timing = {}
    for scale, steps in (("smoke", smoke_steps), ("cpu", smoke_steps), ("paper", paper_steps)):
        for size, letter in SIZES.items():
            timing[f"{letter} {scale}"] = {
                "model_size": size, "scale": scale, "steps": steps, "learning_rate": defaults.training[scale].learning_rate,
                "full_steps": defaults.training[scale].steps, "infer_batch": 8 if scale != "paper" else (1 if q else 2),
                "repeats": 3 if scale != "paper" else (1 if q else 2),
            }  # fmt: skip
    settings = {
        "data": os.path.relpath(folder), "threads": args.threads, "seed": args.seed, "progress": args.progress,
        "steps": args.steps or (4 if q else 20), "channels": args.channels, "learning_rate": args.lr,
        "weight_decay": defaults.training["smoke"].weight_decay, "teacher": args.teacher,
        "distill_steps": args.distill_steps, "distill_batch": args.distill_batch,
        "ours_scale": args.ours_scale,
        "ours_arch": ({"image_size": COMPARE_SIZE, "width": 1.0, "channels": args.channels} if args.ours_scale == "anomalib"
                      else defaults.architecture[args.ours_scale].model_dump()),
        "train": train, "val": val, "test": test, "timing": timing,
        "timing_train": train[:4], "timing_val": val[: 1 if q else 2], "timing_test": test,
    }  # fmt: skip
    if args.teacher == "distill" and args.channels > 152:
        sys.exit("--channels: distilling from tf_efficientnet_lite0 blocks.2 + blocks.4 allows at most 152 channels")
    header = [f"EfficientAD benchmark: shiftad vs anomalib ({package_versions()}), CPU, {args.threads} threads"
              + (" [--quick]" if q else "")]
    work = Path(tempfile.mkdtemp(prefix="efficientad_bench_"))
    sections, summary = [], {"timing": {}, "compare": {}}
    try:
        (work / "settings.json").write_text(json.dumps(settings))
        if args.only in (None, "timing"):
            results = {name: start_child("timing", work, settings, name) for name in timing}
            summary["timing"] = results
            sections.append(format_timing(results, args.threads))
        if args.only in (None, "compare"):
            n_pool = write_penalty_folder(work / "penalty", COMPARE_SIZE, args.seed)
            link_dataset(work / "data", train, val, test)
            teacher = start_child("teacher", work, settings)
            if args.ours_scale != "anomalib":
                teacher["ours"] = start_child("teacher_ours", work, settings)
            results = {"shiftad": start_child("ours", work, settings), "anomalib": start_child("anomalib", work, settings)}
            labels = np.array([r["label"] for r in test])
            masks = load_masks(test, COMPARE_SIZE)
            for name, prefix in (("shiftad", "ours"), ("anomalib", "anomalib")):
                facts = results[name]
                facts["image_auroc"], facts["pixel_auroc"], facts["pixel_auroc_inside"] = aurocs(np.load(work / f"{prefix}_image_scores.npy"),
                                                                     np.load(work / f"{prefix}_maps.npy"), labels, masks)
                facts["predict_ms_per_image"] = 1000 * facts["predict_s"] / len(test)
            summary["compare"] = {"teacher": teacher, "penalty_images": n_pool, **results}
            sections.append(format_compare(settings, teacher, results, labels))
    finally:
        leftover = undo_anomalib_teacher(work)
        if leftover:
            print(f"cleanup: {leftover}")
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("\n\n".join(header + sections))
    total = time.perf_counter() - wall_start
    print(f"\ntotal wall time {total:.0f} s ({total / 60:.1f} min)")
    if args.json:
        kept = {k: v for k, v in settings.items() if k not in ("train", "val", "test", "timing_train", "timing_val", "timing_test")}
        kept.update(n_train=len(train), n_val=len(val), n_test=len(test), total_wall_s=total)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": kept, "results": summary}, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


def package_versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("shiftad", "anomalib", "torch", "lightning"))


if __name__ == "__main__":
    main()
