"""Benchmark shiftad's Uninformed Students on CPU: teacher distillation, student training and inference.

    python benchmarks/uninformed_students.py [FOLDER] [--quick] [--train 40] [--all-patch-sizes]
        [--scales smoke paper] [--params params.yaml] [--threads 2] [--json out.json] [--progress]

The default run took 3.5 minutes on 2 idle cores (2026-12-01), --quick takes roughly half; the
time goes into the paper-scale dense passes (256 px, full width: 2-4 s per network forward,
~15 s per student training step on 2 cores).

FOLDER is one category in MVTec AD layout (default: ../shared/data/kolektorsdd); its
train/good images are read in place, never copied. Without it the scikit-image photos
(`shiftad.components.offline_images.skimage_photos`, in memory) stand in, and the header says so.

Timing only, ours only: anomalib 2.7 has no Uninformed Students implementation, so there is no
peer column (its closest student-teacher method, STFPM, is a different model: a pretrained
ResNet teacher and a same-architecture student on feature pyramids, not patch networks
distilled from a descriptor, with no student ensemble or predictive variance).

Both scales of `uninformed_students` in params.yaml (smoke and paper), on CPU with --threads
threads (torch, OMP, MKL), each configuration in its own subprocess (its peak RSS is its own:
VmHWM of the child, see `patchcore_vs_anomalib.memory_mb`), with the share of the CPUs other
processes used meanwhile. Networks are random-init (timing does not depend on the weights);
the images are real. Every figure runs shiftad's own code:

1. Teacher distillation, per patch size in use at the scale: `distill_patch_teachers` with the
   scale's architecture and teacher settings, cut down to a few steps (`patches` = steps x
   `batch_size`, one epoch). Cut: `augmented_patches` (rotated, flipped crops), per patch;
   describe: the backbone (`PatchDescriptor` at `backbone_input`) on one batch of patches,
   from its calls after the first; train s/step: the teacher's forward/backward with the
   decoder + compactness loss, the median interval between consecutive steps. s/step = describe
   + train. The full distillation is extrapolated as the code runs it: every patch is cut and
   described once per run, then steps = patches // batch_size x epochs training steps.
2. Student training: `UninformedStudents._train_student` (one train image per step at the
   scale's image_size, flips, the teacher's dense output normalised, one student's dense
   forward/backward, MSE, Adam) after one warm-up step on a 64-px image; s/step is the median
   step time. s/epoch = s/step x N train images per category (--train, default 40 = what the
   default DAG's categories have); full training = s/epoch x epochs x M students x the
   scale's patch sizes (the teacher's statistics pass and the validation scoring come on top).
3. Inference per patch size: `UninformedStudents.score_images` with that one patch size
   (resize, teacher + M students dense, e and v, standardised, image max, maps resized to
   params.image_size) on a batch of in-memory images, after a warm-up call (paper: at 64 px,
   since a full-size warm-up costs as much as a timed call); ms/image is the median call / batch.
   Paper: 17, 33 and 65 (the paper's multi-scale set); smoke: its patch sizes, plus 33 and 65 at
   the smoke width and size (marked *: not in the smoke params; 65 does not even fit the smoke
   teacher's rotated patches).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchcore_vs_anomalib import busy_note, child_env, duration, load_records, memory_mb, run_measured_child  # noqa: E402
from serve import median_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "kolektorsdd"
PAPER_PATCH_SIZES = (17, 33, 65)
WARM_UP_SIZE = 64  # paper-scale warm-ups run at this input size (shapes differ, the code path does not)
# per scale: (default, --quick)
TEACHER_STEPS = {"smoke": (12, 8), "paper": (8, 4)}  # distillation steps run (intervals timed = steps - 1; 4 steps = 256 patches = one describe call)
STUDENT_STEPS = {"smoke": (20, 8), "paper": (2, 1)}  # student steps timed after the warm-up step
INFER_BATCH = {"smoke": (8, 8), "paper": (1, 1)}  # images per score_images call (smoke: scoring_batch)
INFER_CALLS = {"smoke": (5, 3), "paper": (2, 1)}  # timed calls after the warm-up


# ----------------------------------------------------------------------------- children


def child_images(settings: dict, count: int) -> list[np.ndarray]:
    """`count` real images (cycled if there are fewer): train/good, or the scikit-image photos."""
    if settings["images"]:
        from shiftad.data.images import read_image

        paths = settings["images"]
        return [read_image(paths[i % len(paths)]) for i in range(count)]
    from shiftad.components.offline_images import skimage_photos

    photos = list(skimage_photos().values())
    return [photos[i % len(photos)] for i in range(count)]


def clock_calls(function: Callable, calls: list[tuple[int, float]], count: Callable[..., int]) -> Callable:
    """Wrap `function` so each call appends (count(*args), seconds) to `calls`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = function(*args, **kwargs)
        calls.append((count(*args, **kwargs), time.perf_counter() - start))
        return out

    return wrapper


def stamp_calls(owner: Any, name: str) -> list[float]:
    """Wrap owner.name (called once per training step) to record when each call starts."""
    stamps: list[float] = []
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stamps.append(time.perf_counter())
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)
    return stamps


def scale_params(settings: dict, scale: str, patch: int, teacher: dict | None = None) -> Any:
    from shiftad.params import validate_params

    raw = json.loads(json.dumps(settings["params"]))
    us = raw["uninformed_students"]
    us["scale"], us["device"] = scale, "cpu"
    us["architecture"][scale]["patch_sizes"] = [patch]
    us["teacher"][scale].update(teacher or {})
    return validate_params(raw)


def run_teacher(settings: dict, config: dict) -> dict:
    import torchvision.transforms.v2.functional  # noqa: F401  (imported inside augmented_patches: not timed)

    import shiftad.distill as distill

    scale, patch, steps = config["scale"], config["patch"], config["steps"]
    full = settings["scales"][scale]["teacher"]
    batch = full["batch_size"]
    params = scale_params(settings, scale, patch, {"patches": steps * batch, "epochs": 1})
    images = child_images(settings, config["images"])
    cut: list[tuple[int, float]] = []
    described: list[tuple[int, float]] = []
    distill.augmented_patches = clock_calls(distill.augmented_patches, cut, lambda images, count, *_, **__: count)
    distill.PatchDescriptor.forward = clock_calls(distill.PatchDescriptor.forward, described, lambda _self, patches: len(patches))
    stamps = stamp_calls(distill, "compactness_loss")  # once per step, after the teacher's and decoder's forward
    start = time.perf_counter()
    _, facts = distill.distill_patch_teachers(images, params, progress=settings["progress"])
    total = time.perf_counter() - start
    intervals = np.diff(stamps)
    later = described[1:] or described  # the first call pays one-off costs
    describe_per_patch = sum(s for _, s in later) / sum(n for n, _ in later)
    cut_per_patch = sum(s for _, s in cut) / sum(n for n, _ in cut)
    train_s = float(np.median(intervals))
    full_steps = full["patches"] // batch * full["epochs"]
    return {
        **config, "batch": batch, "backbone_input": full["backbone_input"], "target_dim": facts["per_patch_size"][str(patch)]["target_dim"],
        "cut_s_per_batch": cut_per_patch * batch, "describe_s_per_batch": describe_per_patch * batch, "train_s_per_step": train_s,
        "s_per_step": describe_per_patch * batch + train_s, "steps_timed": len(intervals), "step_intervals": [round(float(v), 4) for v in intervals],
        "describe_calls": [[n, round(s, 4)] for n, s in described], "run_s": total,
        "full_patches": full["patches"], "full_epochs": full["epochs"], "full_steps": full_steps,
        "full_s": full["patches"] * (cut_per_patch + describe_per_patch) + full_steps * train_s,
        "full_s_describing_every_step": full_steps * (describe_per_patch * batch + train_s) + full["patches"] * cut_per_patch,
    }  # fmt: skip


def detector(settings: dict, scale: str, patch: int) -> Any:
    """An UninformedStudents of the scale's settings with one patch size (nothing fitted yet)."""
    from shiftad.detectors.uninformed_students import UninformedStudents

    s = settings["scales"][scale]
    arch, training = s["architecture"], s["training"]
    model = UninformedStudents(teacher="(random-init)", scale=scale, patch_sizes=[patch], image_size=arch["image_size"],
                               output_size=settings["output_size"], width=arch["width"], descriptor_dim=arch["descriptor_dim"],
                               students=s["students"], epochs=1, learning_rate=training["learning_rate"],
                               weight_decay=training["weight_decay"], train_batch=training["batch_size"], device="cpu",
                               batch_size=s["scoring_batch"], seed=settings["seed"])  # fmt: skip
    model.progress = settings["progress"]
    return model


def random_teacher(model: Any, patch: int) -> None:
    """A random-init teacher with identity normalisation (timing does not depend on either)."""
    import torch

    teacher = model._network(patch).eval().requires_grad_(False)
    model.teachers_ = {patch: teacher}
    model.teacher_mean_ = {patch: torch.zeros(1, model.descriptor_dim, 1, 1)}
    model.teacher_std_ = {patch: torch.ones(1, model.descriptor_dim, 1, 1)}


def run_student(settings: dict, config: dict) -> dict:
    import torch
    import torch.nn.functional as F

    scale, patch, steps = config["scale"], config["patch"], config["steps"]
    model = detector(settings, scale, patch)
    torch.manual_seed(settings["seed"])
    random_teacher(model, patch)
    train = model._prepare(child_images(settings, steps))
    student = model._network(patch).train()
    generator = torch.Generator().manual_seed(settings["seed"])
    warm = F.interpolate(train[:1], size=(WARM_UP_SIZE, WARM_UP_SIZE), mode="bilinear", align_corners=False)
    model._train_student(patch, student, warm, generator)  # one warm-up step (threads, allocator, Adam)
    stamps = stamp_calls(student, "dense")  # the student's dense forward: once per step
    model._train_student(patch, student, train, generator)
    stamps.append(time.perf_counter())
    times = np.diff(stamps)
    s = settings["scales"][scale]
    s_per_epoch = float(np.median(times)) * settings["n_train"]
    return {**config, "s_per_step": float(np.median(times)), "steps_timed": len(times), "step_times": [round(float(v), 4) for v in times],
            "s_per_epoch": s_per_epoch, "epochs": s["training"]["epochs"], "students": s["students"],
            "full_s": s_per_epoch * s["training"]["epochs"] * s["students"]}  # fmt: skip


def run_inference(settings: dict, config: dict) -> dict:
    import torch

    scale, patch = config["scale"], config["patch"]
    model = detector(settings, scale, patch)
    torch.manual_seed(settings["seed"])
    random_teacher(model, patch)
    model.students_ = {patch: [model._network(patch).eval().requires_grad_(False) for _ in range(model.students)]}
    model.standardisation_ = {patch: {"e_mean": 0.0, "e_std": 1.0, "v_mean": 0.0, "v_std": 1.0}}
    images = child_images(settings, config["batch"])
    call = lambda: model.score_images(images)  # noqa: E731
    if config["full_warm_up"]:
        ms = median_ms(call, config["calls"])
    else:
        size, model.image_size = model.image_size, WARM_UP_SIZE
        model.score_images(images[:1])
        model.image_size = size
        times = []
        for _ in range(config["calls"]):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        ms = 1000 * float(np.median(times))
    return {**config, "ms_per_image": ms / len(images), "students": model.students}


def run_child(kind: str, work: Path, name: str) -> None:
    import torch

    settings = json.loads((work / "settings.json").read_text())
    torch.set_num_threads(settings["threads"])
    config = settings["configs"][name]
    facts = {"teacher": run_teacher, "student": run_student, "inference": run_inference}[kind](settings, config)
    facts["peak_rss_mb"] = memory_mb("VmHWM")
    facts["ru_maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    facts["torch_threads"] = torch.get_num_threads()
    (work / f"{safe(name)}.json").write_text(json.dumps(facts, indent=2))


def safe(name: str) -> str:
    return name.replace(" ", "_")


def start_child(work: Path, settings: dict, name: str) -> dict:
    kind = settings["configs"][name]["kind"]
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--work", str(work), "--name", name]
    return run_measured_child(command, child_env(settings["threads"], settings["progress"]), work, name, work / f"{safe(name)}.json")


# ----------------------------------------------------------------------------- report


def arch_cells(settings: dict, scale: str, patch: int, extra: bool = False) -> str:
    a = settings["scales"][scale]["architecture"]
    mark = "*" if extra else ""
    return f"{scale:<7}{str(patch) + mark:>6}{a['image_size']:>5}{a['width']:>7.3g}{a['descriptor_dim']:>5}"


ARCH_HEAD = f"{'scale':<7}{'patch':>6}{'px':>5}{'width':>7}{'d':>5}"


def format_teacher(settings: dict, results: dict[str, dict]) -> str:
    lines = ["1. Teacher distillation (distill_patch_teachers, a few steps; one step = a batch of teacher.<scale>.batch_size patches)",
             ARCH_HEAD + f"{'batch':>6}{'bb px':>6}{'cut s':>8}{'describe s':>11}{'train s':>9}{'s/step':>8}{'desc %':>7}"
             f"{'timed':>6}{'full steps':>11}{'full distillation':>18}{'peak RSS MiB':>13}{'other CPU':>10}"]
    notes = []
    for name, f in results.items():
        lines.append(arch_cells(settings, f["scale"], f["patch"]) +
                     f"{f['batch']:>6}{f['backbone_input']:>6}{f['cut_s_per_batch']:>8.3f}{f['describe_s_per_batch']:>11.3f}"
                     f"{f['train_s_per_step']:>9.3f}{f['s_per_step']:>8.3f}{f['describe_s_per_batch'] / f['s_per_step']:>7.0%}"
                     f"{f['steps_timed']:>6}{f['full_steps']:>11,}{duration(f['full_s']):>18}{f['peak_rss_mb']:>13.0f}"
                     f"{f['other_cpu_share']:>10.0%}")  # fmt: skip
        notes.append(busy_note(name, f))
    full = "; ".join(f"{s}: {t['patches']:,} patches, {t['epochs']} epochs" for s, t in
                     ((s, settings["scales"][s]["teacher"]) for s in settings["scales"]))
    lines.append(f"cut / describe s: augmented_patches / the backbone ({settings['backbone']} {settings['teacher_layers']}, "
                 "PatchDescriptor at 'bb px') per batch of patches; train s: median interval between consecutive steps "
                 "(teacher + decoder forward/backward, compactness loss, Adam; timed = intervals); s/step = describe + train, "
                 "desc % the describe share; full distillation per patch size = patches x (cut + describe) once + full steps x "
                 f"train s, as the code runs it ({full}; full steps = patches // batch x epochs)")
    return "\n".join(lines + [n for n in notes if n])


def format_student(settings: dict, results: dict[str, dict]) -> str:
    n = settings["n_train"]
    lines = [f"2. Student training (_train_student: one train image per step; N = {n} train images per category)",
             ARCH_HEAD + f"{'s/step':>8}{'timed':>6}{'s/epoch':>9}{'epochs':>7}{'M':>3}{'full training':>15}"
             f"{'peak RSS MiB':>13}{'other CPU':>10}"]
    notes = []
    per_scale: dict[str, float] = {}
    for name, f in results.items():
        in_use = f["patch"] in settings["scales"][f["scale"]]["architecture"]["patch_sizes"]
        if in_use:
            per_scale[f["scale"]] = per_scale.get(f["scale"], 0.0) + f["full_s"]
        lines.append(arch_cells(settings, f["scale"], f["patch"], not in_use) +
                     f"{f['s_per_step']:>8.3f}{f['steps_timed']:>6}{f['s_per_epoch']:>9.1f}{f['epochs']:>7}{f['students']:>3}"
                     f"{duration(f['full_s']):>15}{f['peak_rss_mb']:>13.0f}{f['other_cpu_share']:>10.0%}")  # fmt: skip
        notes.append(busy_note(name, f))
    totals = "; ".join(f"{s} ({'+'.join(str(p) for p in settings['scales'][s]['architecture']['patch_sizes'])} px) {duration(t)}"
                       for s, t in per_scale.items())
    lines.append("s/step: median step time after a warm-up step (teacher dense forward, normalised, + one student's dense "
                 f"forward/backward, MSE, Adam); s/epoch = s/step x N; full training = s/epoch x epochs x M students "
                 f"(per patch size; per category and fit, the scale's patch sizes together: {totals}; the teacher "
                 "statistics pass and the validation scoring come on top)")
    return "\n".join(lines + [n for n in notes if n])


def format_inference(settings: dict, results: dict[str, dict]) -> str:
    lines = ["3. Inference per patch size (score_images with that patch size: teacher + M students dense, e and v)",
             ARCH_HEAD + f"{'M':>3}{'batch':>6}{'calls':>6}{'ms/image':>10}{'peak RSS MiB':>13}{'other CPU':>10}"]
    notes, sums = [], {}
    for name, f in results.items():
        in_use = f["patch"] in settings["scales"][f["scale"]]["architecture"]["patch_sizes"]
        lines.append(arch_cells(settings, f["scale"], f["patch"], not in_use) +
                     f"{f['students']:>3}{f['batch']:>6}{f['calls']:>6}{f['ms_per_image']:>10.1f}{f['peak_rss_mb']:>13.0f}"
                     f"{f['other_cpu_share']:>10.0%}")  # fmt: skip
        notes.append(busy_note(name, f))
        sums.setdefault(f["scale"], {})[f["patch"]] = f["ms_per_image"]
    lines.append("ms/image: median call / batch, after a warm-up call (smoke: at full size; paper: at 64 px); a call resizes "
                 "the in-memory images, runs the teacher and M students densely, computes e and v, standardises them, takes "
                 f"the image maximum and resizes the maps to {settings['output_size']} px; * = not among the scale's patch sizes")
    multi = [f"{s} {'+'.join(map(str, sorted(m)))}: {sum(m.values()):.0f} ms/image" for s, m in sums.items() if set(PAPER_PATCH_SIZES) <= set(m)]
    if multi:
        lines.append("the paper's multi-scale model (17 + 33 + 65) costs the sum: " + "; ".join(multi))
    return "\n".join(lines + [n for n in notes if n])


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DATA, help="one category in MVTec AD layout (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="fewer steps and calls (about half the time)")
    parser.add_argument("--train", type=int, default=40, help="train images per category for the per-epoch figures (default %(default)s)")
    parser.add_argument("--all-patch-sizes", action="store_true",
                        help="also time the teacher and students of the paper's other patch sizes (17, 65) at paper scale (+~3 min)")
    parser.add_argument("--scales", nargs="+", choices=("smoke", "paper"), default=["smoke", "paper"], help="default: both")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml", help="params file (default: the repo's params.yaml)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write settings and numbers here")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--child", choices=("teacher", "student", "inference"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(scales: dict[str, dict], quick: bool, all_patch_sizes: bool) -> dict[str, dict]:
    q = int(quick)
    configs: dict[str, dict] = {}
    for scale, s in scales.items():
        in_use = s["architecture"]["patch_sizes"]
        trained = sorted(set(in_use) | (set(PAPER_PATCH_SIZES) if all_patch_sizes and scale == "paper" else set()))
        for patch in trained:
            configs[f"teacher {scale} {patch}"] = {"kind": "teacher", "scale": scale, "patch": patch, "steps": TEACHER_STEPS[scale][q], "images": 8}
        for patch in trained:
            configs[f"student {scale} {patch}"] = {"kind": "student", "scale": scale, "patch": patch, "steps": STUDENT_STEPS[scale][q]}
        for patch in sorted(set(in_use) | set(PAPER_PATCH_SIZES)):
            configs[f"inference {scale} {patch}"] = {"kind": "inference", "scale": scale, "patch": patch, "batch": INFER_BATCH[scale][q],
                                                     "calls": INFER_CALLS[scale][q], "full_warm_up": scale == "smoke"}
    return configs


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, args.work, args.name)
        return
    wall_start = time.perf_counter()
    from shiftad.params import load_params

    params = load_params([args.params])
    us = params.uninformed_students
    scales = {scale: {"architecture": us.architecture[scale].model_dump(), "training": us.training[scale].model_dump(),
                      "teacher": getattr(us.teacher, scale).model_dump(), "students": us.students, "scoring_batch": us.scoring_batch}
              for scale in args.scales}  # fmt: skip
    folder = args.folder.resolve()
    if (folder / "train" / "good").is_dir():
        train, _ = load_records(folder, None)
        images = [r["path"] for r in sorted(train, key=lambda r: r["path"])]
        data = f"{os.path.relpath(folder)} train/good ({len(images)} images, read in place)"
    else:
        print(f"note: {folder} has no train/good folder (MVTec layout); timing on the scikit-image photos instead", flush=True)
        from shiftad.components.offline_images import skimage_photos

        images = []
        data = f"the {len(skimage_photos())} scikit-image photos (no {os.path.relpath(folder)}/train/good)"
    configs = plan(scales, args.quick, args.all_patch_sizes)
    settings = {
        "params": params.model_dump(mode="json"), "params_file": str(args.params), "scales": scales, "images": images, "data": data,
        "threads": args.threads, "seed": params.seed, "progress": args.progress, "n_train": args.train, "output_size": params.image_size,
        "backbone": params.backbone.name, "teacher_layers": list(us.teacher.layers), "configs": configs,
    }  # fmt: skip
    header = [f"Uninformed Students benchmark: {package_versions()}, CPU, {args.threads} threads (torch, OMP, MKL)"
              + (" [--quick]" if args.quick else ""),
              f"data: {data}; random-init networks (timing only); each configuration in its own subprocess; no peer column: "
              "anomalib 2.7 has no Uninformed Students (its STFPM is a different student-teacher model)",
              "definitions: scale = uninformed_students.<architecture|training|teacher>.<scale> of params.yaml; patch = the "
              "patch network's receptive field (px); px = the networks' input size; width = hidden channels x (1 = the paper's "
              "128/256); d = descriptor size; M = students per patch size; peak RSS = the child's VmHWM; other CPU = share of "
              "all CPUs other processes used meanwhile"]
    work = Path(tempfile.mkdtemp(prefix="uninformed_students_bench_"))
    results: dict[str, dict] = {}
    try:
        (work / "settings.json").write_text(json.dumps(settings))
        for name in configs:
            results[name] = start_child(work, settings, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by_kind = {kind: {n: f for n, f in results.items() if f["kind"] == kind} for kind in ("teacher", "student", "inference")}
    sections = [format_teacher(settings, by_kind["teacher"]), format_student(settings, by_kind["student"]),
                format_inference(settings, by_kind["inference"])]
    print()
    print("\n".join(header) + "\n\n" + "\n\n".join(sections))
    total = time.perf_counter() - wall_start
    print(f"\ntotal wall time {total:.0f} s ({total / 60:.1f} min)")
    if args.json:
        kept = {k: v for k, v in settings.items() if k not in ("params", "images")}
        kept.update(n_images=len(images), total_wall_s=total, quick=args.quick)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": kept, "results": results}, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")


def package_versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("shiftad", "torch"))


if __name__ == "__main__":
    main()
