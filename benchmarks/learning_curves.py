"""Learning curves of the trained detectors (EfficientAD, Uninformed Students) on a CPU.

Each point is the params of the default config plus some overrides (dotted keys, YAML values),
fitted per class on the clean train images of a data set and scored on its test images:
image AUROC (sklearn) and pixel AUROC (shiftad's pixel metrics, masks in the map frame) per
category and their macro mean, with the wall time of the teacher's distillation, of every fit
and of the scoring. A teacher is distilled once per teacher setting and reused by every point
that shares it (as the DAG does); `teacher=random` gives a random-init teacher (the floor).

    # a sweep: one point per value, the rest from --set (and params.yaml)
    python benchmarks/learning_curves.py --detector efficientad \\
        --sweep efficientad.training.smoke.steps=150,300,600,1200 --jobs 2
    python benchmarks/learning_curves.py --detector efficientad --set teacher=random \\
        --sweep efficientad.training.smoke.steps=150,600
    python benchmarks/learning_curves.py --detector uninformed_students --data ../shared/data/kolektorsdd \\
        --sweep uninformed_students.architecture.smoke.image_size=64,128
    python benchmarks/learning_curves.py --table results/benchmarks/learning_curves.jsonl --figure curves.png

--data default: the project's own clean domain (run `snakemake` or `shiftad data`, `split`
first; it reads data/processed from the repository root). --data FOLDER: one category folder
in MVTec AD layout (read in place; its train/good images are split 80/20 into train and
validation normals with a seeded draw; test is its test folder).

Points run in child processes with one thread each (a DAG job's setting), --jobs side by side
(2 on 2 cores: the DAG's own load, so the times are what a DAG job sees). Results append to
--out as JSON lines (one per point); --resume skips points already there.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchcore_vs_anomalib import child_env  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "results" / "benchmarks" / "learning_curves.jsonl"
TEACHER_CACHE = REPO / "results" / "benchmarks" / "learning_curve_teachers"
DETECTORS = ("efficientad", "uninformed_students")
TEACHER_KEYS = ("teacher", "architecture", "backbone", "resize", "seed", "model_size", "scale")  # keys that change the teacher


# -- points ------------------------------------------------------------------------------------
def parse_assignment(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise SystemExit(f"{text!r}: expected key=value (e.g. efficientad.training.smoke.steps=600)")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def nested(assignments: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in assignments.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def with_scale(detector: str, assignments: dict[str, Any]) -> dict[str, Any]:
    """Overrides of one scale's section (`efficientad.training.smoke.steps`) run at that scale:
    `<detector>.scale` is set to it unless given, so a point never silently runs params.yaml's
    default scale with its overrides ignored."""
    from shiftad.params import SCALES

    named = {part for key in assignments if key.startswith(f"{detector}.") for part in key.split(".")[2:3] if part in SCALES}
    explicit = assignments.get(f"{detector}.scale")
    if len(named) > 1 or (explicit and named and named != {explicit}):
        raise SystemExit(f"overrides name several scales ({', '.join(sorted(named | {explicit} - {None}))}); set one {detector}.scale")
    return {f"{detector}.scale": named.pop(), **assignments} if named and not explicit else dict(assignments)


def sweep_points(fixed: dict[str, Any], sweeps: list[str]) -> list[dict[str, Any]]:
    """One point per value of each --sweep (the others at their --set / params value); no
    --sweep: the one point --set gives."""
    points = []
    for sweep in sweeps:
        key, values = sweep.split("=", 1)
        for value in values.split(","):
            points.append({**fixed, **dict([parse_assignment(f"{key}={value}")])})
    return points or [dict(fixed)]


def point_id(detector: str, data: str, assignments: dict[str, Any]) -> str:
    blob = json.dumps({"detector": detector, "data": data, "set": assignments}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# -- one point (child process) -----------------------------------------------------------------
def load_data(data: str, categories: list[str], seed: int):
    """{category: (train, val, test)} ImageRecord lists."""
    import numpy as np

    if data == "default":
        from shiftad.split import domain_view

        view = domain_view("clean")
        return {c: (view.get(c, "train"), view.get(c, "val"), view.get(c, "test")) for c in categories}
    from shiftad.data.mvtec import scan_mvtec_layout

    records = scan_mvtec_layout(Path(data))
    out = {}
    for category in sorted({r.category for r in records}):
        mine = [r for r in records if r.category == category]
        good = [r for r in mine if r.source_split == "train"]
        order = np.random.default_rng(seed).permutation(len(good))
        cut = int(round(0.8 * len(good)))
        out[category] = ([good[i] for i in sorted(order[:cut])], [good[i] for i in sorted(order[cut:])],
                         [r for r in mine if r.source_split == "test"])
    return out


def teacher_settings(params, detector: str, random: bool) -> dict[str, Any]:
    """What the teacher depends on (the cache key)."""
    p = getattr(params, detector)
    return {"detector": detector, "random": random, "backbone": params.backbone.name, "normalisation": params.backbone.normalisation,
            "resize": params.resize, "architecture": p.arch.model_dump(), "teacher": p.teacher.model_dump(),
            "teacher_training": None if random else p.teacher_training.model_dump(), "seed": params.seed,
            "model_size": getattr(p, "model_size", None)}


def make_teacher(params, detector: str, random: bool, images, folder: Path) -> float:
    """Distil (or randomly initialise) the teacher into `folder`; returns the seconds it took."""
    import torch
    from safetensors.torch import save_file

    from shiftad.io import atomic_dir, write_json

    start = time.perf_counter()
    p = getattr(params, detector)
    if detector == "efficientad":
        if random:
            from shiftad.components.pdn import pdn

            torch.manual_seed(params.seed)
            state = pdn(p.model_size, p.arch.channels, p.arch.width).state_dict()
            facts = {"source": "random", "model_size": p.model_size, "channels": p.arch.channels, "width": p.arch.width,
                     "image_size": p.arch.image_size}
        else:
            from shiftad.distill import distill_teacher

            state, facts = distill_teacher(images, params)
    else:
        if random:
            from shiftad.components.patch_nets import PatchNet

            torch.manual_seed(params.seed)
            state = {f"p{patch}.{k}": v for patch in p.arch.patch_sizes
                     for k, v in PatchNet(patch, p.arch.descriptor_dim, p.arch.width).state_dict().items()}
            facts = {"source": "random", "patch_sizes": list(p.arch.patch_sizes), "descriptor_dim": p.arch.descriptor_dim,
                     "width": p.arch.width, "image_size": p.arch.image_size}
        else:
            from shiftad.distill import distill_patch_teachers

            state, facts = distill_patch_teachers(images, params)
    with atomic_dir(folder) as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "teacher.safetensors"))
        write_json(tmp / "teacher.json", facts)
    return time.perf_counter() - start


def run_point(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score

    from shiftad.components.offline_images import skimage_photos
    from shiftad.data.images import read_image
    from shiftad.detectors import build_detector
    from shiftad.evaluate.metrics import pixel_metrics
    from shiftad.evaluate.stage import ground_truth_masks
    from shiftad.params import deep_merge, load_params, validate_params

    torch.set_num_threads(spec["threads"])
    detector, assignments = spec["detector"], dict(spec["set"])
    random_teacher = assignments.pop("teacher", "distill") == "random"
    base = load_params([REPO / "params.yaml"]).model_dump()
    params = validate_params(deep_merge(base, nested(with_scale(detector, assignments))), "learning_curves")
    data = load_data(spec["data"], list(params.categories), params.seed)

    settings = teacher_settings(params, detector, random_teacher)
    key = hashlib.sha256(json.dumps({"data": spec["data"], **settings}, sort_keys=True, default=str).encode()).hexdigest()[:12]
    folder = TEACHER_CACHE / f"{detector}-{key}"
    distill_seconds = None
    if not (folder / "teacher.json").is_file():
        images = [read_image(r.path) for train, _, _ in data.values() for r in train] + list(skimage_photos().values())
        distill_seconds = make_teacher(params, detector, random_teacher, images, folder)
    teacher_facts = json.loads((folder / "teacher.json").read_text())

    per_category = {}
    for category, (train, val, test) in data.items():
        model = build_detector(detector, params, stored_features=False)
        model.teacher, model.progress = str(folder), False
        start = time.perf_counter()
        model.fit(train, [r for r in val if not r.is_anomalous])  # validation normals only, as the fit stage gives
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = model.score(test)
        score_seconds = time.perf_counter() - start
        labels = np.array([r.label for r in test])
        masks, pixel_images = ground_truth_masks(test, scores.maps.shape[1:], params.resize)
        pixel = pixel_metrics(scores.maps, masks, pixel_images=pixel_images)
        per_category[category] = {"image_auroc": float(roc_auc_score(labels, scores.image_scores)),
                                  "pixel_auroc": float(pixel["pixel_auroc"]), "fit_s": round(fit_seconds, 2),
                                  "score_ms_per_image": round(1000 * score_seconds / max(len(test), 1), 1),
                                  "n_train": len(train), "n_val_normals": sum(not r.is_anomalous for r in val), "n_test": len(test)}
    macro = {m: float(np.nanmean([v[m] for v in per_category.values()])) for m in ("image_auroc", "pixel_auroc")}
    return {"id": spec["id"], "detector": detector, "data": spec["data"], "set": spec["set"], "threads": spec["threads"],
            **macro, "fit_s_total": round(sum(v["fit_s"] for v in per_category.values()), 2),
            # the teacher's own time (facts of a distilled one; also when another point made it)
            "distill_s": round(teacher_facts.get("seconds", distill_seconds or 0.0), 1), "teacher": key,
            "teacher_loss": teacher_facts.get("final_loss"), "per_category": per_category,
            "measured": time.strftime("%Y-%m-%d %H:%M")}


# -- parent -----------------------------------------------------------------------------------
def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    env = child_env(spec["threads"], progress=False)  # the other benchmarks' child setting
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"point {spec['set']} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return result


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def short_key(key: str) -> str:
    """efficientad.training.smoke.steps -> steps; efficientad.teacher.smoke.steps -> teacher steps."""
    parts = key.split(".")
    if key == "teacher":
        return "teacher"
    return f"teacher {parts[-1]}" if "teacher" in parts else parts[-1]


def label(result: dict[str, Any]) -> str:
    return ", ".join(f"{short_key(k)}={v}" for k, v in result["set"].items()) or "params.yaml"


def print_table(results: list[dict[str, Any]]) -> None:
    print("| detector | data | point | image AUROC | pixel AUROC | distill s | fit s (all classes) | score ms/image |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        ms = sum(v["score_ms_per_image"] for v in r["per_category"].values()) / max(len(r["per_category"]), 1)
        data = "default" if r["data"] == "default" else Path(r["data"]).name
        distill = f"{r['distill_s']:.0f}" if r.get("teacher_loss") is not None or r["distill_s"] else "random"
        print(f"| {r['detector']} | {data} | {label(r)} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {distill} | "
              f"{r['fit_s_total']:.0f} | {ms:.0f} |")


def draw_figure(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    ringed = False
    for (detector, data), marker in zip(sorted({(r["detector"], r["data"]) for r in results}), "osD^v<>"):
        rows = [r for r in results if (r["detector"], r["data"]) == (detector, data)]
        name = f"{detector} / {'default' if data == 'default' else Path(data).name}"
        for ax, metric in zip(axes, ("image_auroc", "pixel_auroc")):
            ax.scatter([r["fit_s_total"] for r in rows], [r[metric] for r in rows], marker=marker, label=name)
            chosen = [r for r in rows if r["set"] == {f"{detector}.scale": "cpu"}]  # the default DAG's scale
            ax.scatter([r["fit_s_total"] for r in chosen], [r[metric] for r in chosen], s=160, facecolors="none",
                       edgecolors="black", linewidths=1.2, label=None if ringed or not chosen else "the cpu scale")
            ringed = ringed or bool(chosen)
            for r in rows:
                ax.annotate(label(r), (r["fit_s_total"], r[metric]), fontsize=6, alpha=0.8)
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    for ax, metric in zip(axes, ("image AUROC (macro)", "pixel AUROC (macro)")):
        ax.set_xscale("log")
        ax.set_xticks([15, 30, 60, 120, 240, 480, 960, 1920])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("fit seconds, every class (1 thread)")
        ax.set_ylabel(metric)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    # issue 24's goals: image AUROC 0.80, pixel AUROC 0.90 (on the default data)
    for ax, goal in zip(axes, (0.80, 0.90)):
        ax.axhline(goal, color="tab:red", lw=0.8, ls="--")
        ax.annotate(f"goal {goal:.2f}", (ax.get_xlim()[0], goal), fontsize=7, color="tab:red", va="bottom")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncol=5)
    fig.savefig(path, dpi=110)
    print(f"figure -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", choices=DETECTORS)
    parser.add_argument("--data", default="default", help="default (the project's clean domain) or a category folder in MVTec layout")
    parser.add_argument("--set", action="append", default=[], help="key=value for every point (dotted params key, or teacher=random)")
    parser.add_argument("--sweep", action="append", default=[], help="key=v1,v2,...: one point per value")
    parser.add_argument("--jobs", type=int, default=2, help="points side by side (each one thread)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--resume", action="store_true", help="skip points already in --out")
    parser.add_argument("--table", type=Path, help="print the table of a results file and exit")
    parser.add_argument("--figure", type=Path, help="with --table: also draw the curves")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_point(json.loads(args.child))))
        return
    if args.table:
        results = read_results(args.table)
        print_table(results)
        if args.figure:
            draw_figure(results, args.figure)
        return
    if not args.detector:
        parser.error("--detector is required (or --table)")
    data = args.data if args.data == "default" else str(Path(args.data).resolve())
    fixed = dict(parse_assignment(a) for a in args.set)
    specs = []
    for assignments in sweep_points(fixed, args.sweep):
        specs.append({"id": point_id(args.detector, data, assignments), "detector": args.detector, "data": data,
                      "set": assignments, "threads": args.threads})
    done = {r["id"] for r in read_results(args.out)} if args.resume else set()
    todo = [s for s in specs if s["id"] not in done]
    print(f"{len(specs)} points, {len(specs) - len(todo)} already in {args.out}", flush=True)
    # points sharing a teacher: the first of them distils it before the others start
    teachers_first: dict[str, list[dict[str, Any]]] = {}
    for spec in todo:
        shaping = {k: v for k, v in spec["set"].items() if any(word in k for word in TEACHER_KEYS)}
        teachers_first.setdefault(json.dumps(shaping, sort_keys=True), []).append(spec)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []

    def record(result: dict[str, Any]) -> None:
        results.append(result)
        with args.out.open("a") as fh:
            fh.write(json.dumps(result) + "\n")
        print(f"  {label(result)}: image AUROC {result['image_auroc']:.3f}, pixel {result['pixel_auroc']:.3f}, "
              f"fit {result['fit_s_total']:.0f} s, wall {result['wall_s']:.0f} s", flush=True)

    groups = list(teachers_first.values())
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        firsts = [pool.submit(run_child, group[0]) for group in groups]
        rest = []
        for group, first in zip(groups, firsts):
            record(first.result())
            rest += [pool.submit(run_child, spec) for spec in group[1:]]
        for future in rest:
            record(future.result())
    print_table(results)


if __name__ == "__main__":
    main()
