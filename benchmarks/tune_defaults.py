"""Tune the frozen-backbone defaults on real images, choosing on validation images only.

    python benchmarks/tune_defaults.py [--kolektorsdd ../shared/data/kolektorsdd] [--elpv]
        [--anomalib] [--json out.json] [--seed 0]

Real sets (never copied into the repository, never used by the tests):
- KolektorSDD (MVTec layout: train/good, test/good, test/crack + masks): all of train/good
  trains; test/ is split per label, seeded, into validation and test halves.
- elpv (PyPI `elpv-dataset`, CC BY-NC-SA, image level only): the monocrystalline cells;
  defect probability 0 = normal, >= 2/3 = defective, 1/3 (unsure) left out; 240 normals train,
  100 normals + 60 defective validate, the rest test.

Stage 1 moves one factor at a time away from the current defaults (params.yaml) for PatchCore
and PaDiM: `backbone.normalisation` (model | imagenet), the layers, `image_size`, PatchCore's
`image_score` (max | reweighted), the backbone (Lite0 | Lite2) and `resize` (squash | pad |
center_crop; KolektorSDD only, elpv cells are square). Stage 2 combines, per factor, the option
that gains at least MIN_GAIN validation image AUROC over the default on every set it applies to
(shared factors: averaged over both detectors; a default serves every data set) and scores that
combination. The test halves are only reported, never used to choose.

`--anomalib`: anomalib 2.7's Patchcore and Padim on the same images, backbone and layers (its
own ImageNet scaling and image score), at the coreset ratio of `--coreset-ratio` for both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

BACKBONES = {"lite0": "tf_efficientnet_lite0", "lite2": "tf_efficientnet_lite2"}
DEFAULT = {"backbone": "lite0", "normalisation": "model", "image_size": 256, "resize": "squash",
           "patchcore_layers": ("blocks.2", "blocks.4"), "padim_layers": ("blocks.2", "blocks.4"), "image_score": "max"}
# stage 1: one factor at a time
FACTORS: dict[str, list[Any]] = {
    "normalisation": ["imagenet"],
    # (blocks.1 has stride 4: 4x the patches, and a 10 % greedy coreset of them costs 16x; PaDiM only)
    "patchcore_layers": [("blocks.2", "blocks.3"), ("blocks.3", "blocks.4")],
    # (anomalib's PaDiM extractor offers Lite0's feature stages only: blocks.0, 1, 2, 4, 6)
    "padim_layers": [("blocks.1", "blocks.2", "blocks.4"), ("blocks.1", "blocks.4"), ("blocks.2", "blocks.6")],
    "image_size": [320],
    "image_score": ["reweighted"],
    "backbone": ["lite2"],
    "resize": ["pad", "center_crop"],
}
MIN_GAIN = 0.005  # mean validation image AUROC a factor must gain to leave the default (the sets are small)
SHARED = ("normalisation", "image_size", "backbone", "resize")  # one params key for both detectors
OWN = {"patchcore": ("patchcore_layers", "image_score"), "padim": ("padim_layers",)}


@dataclass
class DataSet:
    name: str
    train: list
    val: list
    test: list
    square: bool
    has_masks: bool
    notes: dict = field(default_factory=dict)


def stratified_halves(records: list, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    val, test = [], []
    for label in (0, 1):
        group = [r for r in records if r.label == label]
        order = rng.permutation(len(group))
        half = len(group) // 2
        val += [group[i] for i in order[:half]]
        test += [group[i] for i in order[half:]]
    return val, test


def kolektorsdd(folder: Path, seed: int) -> DataSet:
    from shiftad.data.mvtec import scan_mvtec_layout

    records = scan_mvtec_layout(folder)
    train = [r for r in records if r.source_split == "train"]
    val, test = stratified_halves([r for r in records if r.source_split == "test"], seed)
    return DataSet("kolektorsdd", train, val, test, square=False, has_masks=True)


def elpv(seed: int) -> DataSet:
    import elpv_dataset

    from shiftad.data.records import ImageRecord

    root = Path(elpv_dataset.__file__).parent / "data"
    normal, defective = [], []
    for line in (root / "labels.csv").read_text().splitlines():
        path, probability, kind = line.split()
        if kind != "mono":
            continue
        p = float(probability)
        if p == 0:
            normal.append(ImageRecord(str(root / path), "mono", 0, "good", None, "test"))
        elif p >= 0.6:
            defective.append(ImageRecord(str(root / path), "mono", 1, "defect", None, "test"))
    rng = np.random.default_rng(seed)
    normal = [normal[i] for i in rng.permutation(len(normal))]
    defective = [defective[i] for i in rng.permutation(len(defective))]
    train, val = normal[:240], normal[240:340] + defective[:60]
    test = normal[340:] + defective[60:]
    return DataSet("elpv_mono", train, val, test, square=True, has_masks=False)


def build(detector: str, config: dict, coreset_ratio: float, seed: int):
    from shiftad.detectors.padim import PaDiM
    from shiftad.detectors.patchcore import PatchCore

    common = dict(backbone=BACKBONES[config["backbone"]], weights="auto", image_size=config["image_size"], resize=config["resize"],
                  normalisation=config["normalisation"], batch_size=16, seed=seed)
    if detector == "patchcore":
        return PatchCore(layers=list(config["patchcore_layers"]), coreset_ratio=coreset_ratio, image_score=config["image_score"], **common)
    return PaDiM(layers=list(config["padim_layers"]), **common)


def evaluate(data: DataSet, detector: str, config: dict, coreset_ratio: float, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from shiftad.evaluate.stage import ground_truth_masks

    model = build(detector, config, coreset_ratio, seed)
    start = time.perf_counter()
    model.fit(data.train)
    fit_s = time.perf_counter() - start
    out = {"fit_s": round(fit_s, 1)}
    for part, records in (("val", data.val), ("test", data.test)):
        scores = model.score(records)
        labels = np.array([r.label for r in records])
        out[f"{part}_image_auroc"] = float(roc_auc_score(labels, scores.image_scores))
        if data.has_masks:
            masks, pixel_images = ground_truth_masks(records, scores.maps.shape[1:], config["resize"])
            keep = masks[pixel_images].reshape(-1)
            out[f"{part}_pixel_auroc"] = float(roc_auc_score(keep, scores.maps[pixel_images].reshape(-1)))
    return out


def config_name(config: dict) -> str:
    changed = [f"{k}={'+'.join(v) if isinstance(v, tuple) else v}" for k, v in config.items() if DEFAULT[k] != v]
    return ", ".join(changed) or "defaults"


def stage_one() -> list[dict]:
    configs = [dict(DEFAULT)]
    for factor, options in FACTORS.items():
        for option in options:
            configs.append({**DEFAULT, factor: option})
    return configs


def relevant(config: dict, detector: str, data: DataSet) -> bool:
    """Skip configs that change nothing for this detector or set."""
    other = [k for k in ("patchcore_layers", "padim_layers", "image_score") if k not in OWN[detector]]
    if any(config[k] != DEFAULT[k] for k in other):
        return False
    if data.square and config["resize"] != DEFAULT["resize"]:
        return False  # square images: every policy is the same
    return True


def val_auroc(results: list[dict], detector: str, config: dict, data_set: str) -> float | None:
    values = [r["val_image_auroc"] for r in results
              if r["detector"] == detector and r["config"] == config_name(config) and r["set"] == data_set]
    return values[0] if values else None


def combined(results: list[dict], sets: Sequence[DataSet]) -> dict:
    """Per factor, the option with the largest smallest gain in validation image AUROC over the
    default across the sets it applies to (shared factors: averaged over both detectors),
    taken where that gain is at least MIN_GAIN on *every* set (a default serves every data set:
    no per-set tuning); the default otherwise."""
    chosen = dict(DEFAULT)
    for factor, options in FACTORS.items():
        detectors = ["patchcore", "padim"] if factor in SHARED else [d for d, own in OWN.items() if factor in own]

        def per_set(option: Any) -> dict[str, float]:
            config, out = {**DEFAULT, factor: option}, {}
            for data in sets:
                values = [val_auroc(results, d, config, data.name) for d in detectors]
                if all(v is not None for v in values):
                    out[data.name] = float(np.mean(values))
            return out

        default = per_set(DEFAULT[factor])

        def gain(option: Any) -> float:
            scores = per_set(option)
            return min((scores[name] - default[name] for name in scores if name in default), default=-1.0)

        best = max(options, key=gain)
        if gain(best) >= MIN_GAIN:
            chosen[factor] = best
    return chosen


def run_anomalib_padim(data: DataSet, config: dict, seed: int) -> dict:
    """anomalib's Padim (its extractor, its ImageNet scaling, its n_features subset) on the same pixels."""
    import torch
    from anomalib.models import Padim
    from sklearn.metrics import roc_auc_score

    from patchcore_vs_anomalib import image_batches, load_offline_weights
    from shiftad.backbones import create_backbone, to_tensor_batch

    size, backbone, layers = config["image_size"], BACKBONES[config["backbone"]], list(config["padim_layers"])
    torch.manual_seed(seed)
    model = Padim(backbone=backbone, layers=layers, pre_trained=False, n_features=100,
                  pre_processor=Padim.configure_pre_processor(image_size=(size, size)),
                  post_processor=False, evaluator=False, visualizer=False)
    load_offline_weights(model.model.feature_extractor.feature_extractor, create_backbone(backbone, "auto")[0])
    transform, torch_model = model.pre_processor.transform, model.model
    start = time.perf_counter()
    torch_model.train()
    with torch.no_grad():
        for images in image_batches([r.path for r in data.train], 16):
            torch_model(transform(to_tensor_batch(images, size)))
    torch_model.fit()
    out: dict[str, Any] = {"fit_s": round(time.perf_counter() - start, 1)}
    torch_model.eval()
    for part, records in (("val", data.val), ("test", data.test)):
        scores = []
        with torch.no_grad():
            for images in image_batches([r.path for r in records], 16):
                scores.append(torch_model(transform(to_tensor_batch(images, size))).pred_score.numpy())
        out[f"{part}_image_auroc"] = float(roc_auc_score([r.label for r in records], np.concatenate(scores)))
    return out


def run_anomalib_patchcore(data: DataSet, config: dict, coreset_ratio: float, seed: int) -> dict:
    from sklearn.metrics import roc_auc_score

    import patchcore_vs_anomalib as peer

    if tuple(config["patchcore_layers"]) != tuple(peer.LAYERS) or config["backbone"] != "lite0":
        raise SystemExit("the anomalib PatchCore runner is wired to Lite0 blocks.2+blocks.4")
    settings = {"image_size": config["image_size"], "batch_size": 16, "coreset_ratio": coreset_ratio, "seed": seed, "progress": False,
                "train": [{"path": r.path} for r in data.train], "test": [{"path": r.path} for r in data.val + data.test]}
    facts, scores, _ = peer.run_anomalib(settings)
    n_val = len(data.val)
    return {"fit_s": round(facts["fit_s"], 1),
            "val_image_auroc": float(roc_auc_score([r.label for r in data.val], scores[:n_val])),
            "test_image_auroc": float(roc_auc_score([r.label for r in data.test], scores[n_val:]))}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kolektorsdd", type=Path, default=Path("../shared/data/kolektorsdd"))
    parser.add_argument("--no-elpv", action="store_true")
    parser.add_argument("--coreset-ratio", type=float, default=0.1, help="ours, in the tuning (the params default)")
    parser.add_argument("--anomalib", action="store_true", help="also anomalib's Patchcore and Padim (PatchCore at --peer-coreset-ratio)")
    parser.add_argument("--peer-coreset-ratio", type=float, default=0.01)
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --json and run only the missing ones")
    parser.add_argument("--only-within-budget", action="store_true", help="stage 2: the within-budget combination only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("tune_defaults.json"))
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
    sets = []
    if args.kolektorsdd and args.kolektorsdd.is_dir():
        sets.append(kolektorsdd(args.kolektorsdd, args.seed))
    if not args.no_elpv:
        sets.append(elpv(args.seed))
    for data in sets:
        print(f"{data.name}: train {len(data.train)}, val {len(data.val)} ({sum(r.label for r in data.val)} defective), "
              f"test {len(data.test)} ({sum(r.label for r in data.test)} defective)", flush=True)

    results: list[dict] = json.loads(args.json.read_text())["results"] if args.resume and args.json.is_file() else []

    def run(stage: str, config: dict, detector: str, data: DataSet, implementation: str = "shiftad", ratio: float | None = None) -> None:
        ratio = args.coreset_ratio if ratio is None else ratio
        key = (stage, implementation, data.name, detector, config_name(config), ratio if detector == "patchcore" else None)
        if any((r["stage"], r["implementation"], r["set"], r["detector"], r["config"], r["coreset_ratio"]) == key for r in results):
            return
        if implementation == "shiftad":
            metrics = evaluate(data, detector, config, ratio, args.seed)
        elif detector == "patchcore":
            metrics = run_anomalib_patchcore(data, config, ratio, args.seed)
        else:
            metrics = run_anomalib_padim(data, config, args.seed)
        row = {"stage": stage, "implementation": implementation, "set": data.name, "detector": detector, "config": config_name(config),
               "coreset_ratio": ratio if detector == "patchcore" else None, **metrics}
        results.append(row)
        print(json.dumps(row), flush=True)
        args.json.write_text(json.dumps({"results": results}, indent=1))

    for config in stage_one():
        for detector in ("patchcore", "padim"):
            for data in sets:
                if relevant(config, detector, data):
                    run("1", config, detector, data)
    tuned = combined([r for r in results if r["stage"] == "1"], sets)
    print("stage 2, chosen on validation:", config_name(tuned), flush=True)
    # Within the DAG's budget and safe for any data: the detectors' own factors only (Lite2 costs
    # 2.6x per image, 320 px 1.56x every map and patch; center_crop never sees what lies off-centre)
    within_budget = {**DEFAULT, **{k: tuned[k] for own in OWN.values() for k in own}}
    candidates = [within_budget] if args.only_within_budget else [tuned, within_budget]
    for candidate in candidates:
        if config_name(candidate) != "defaults":
            for detector in ("patchcore", "padim"):
                for data in sets:
                    run("2", candidate, detector, data)
    if args.anomalib:
        for data in sets:
            run("peer", DEFAULT, "patchcore", data, "anomalib", args.peer_coreset_ratio)
            run("peer", DEFAULT, "padim", data, "anomalib")
            for config in {config_name(c): c for c in (DEFAULT, *candidates)}.values():
                run("peer-ratio", config, "patchcore", data, "shiftad", args.peer_coreset_ratio)
    print_table(results)


def print_table(results: list[dict]) -> None:
    print("\n| stage | impl. | set | detector | config | val image AUROC | test image AUROC | test pixel AUROC | fit s |")
    print("|---|---|---|---|---|---:|---:|---:|---:|")
    for r in results:
        pixel = r.get("test_pixel_auroc")
        ratio = f" (coreset {r['coreset_ratio']:g})" if r.get("coreset_ratio") else ""
        print(f"| {r['stage']} | {r['implementation']} | {r['set']} | {r['detector']}{ratio} | {r['config']} | {r['val_image_auroc']:.3f} | "
              f"{r['test_image_auroc']:.3f} | {'' if pixel is None else f'{pixel:.3f}'} | {r['fit_s']} |")


if __name__ == "__main__":
    main()
