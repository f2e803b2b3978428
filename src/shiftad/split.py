"""The split stage: seeded train / val / test splits that never put an anomalous image in train.

Policies (params `split.policy`):
- ``mvtec``: train = `train_fraction` of train/good; val = the rest of train/good plus
  `val_anomaly_fraction` of the test anomalies, stratified by defect type; test = test/good
  plus the remaining anomalies.
- ``ratios``: the train/val/test percentages apply to normal images; anomalous images go to
  val and test only, in the ratio val / (val + test), stratified by defect type.
Each category draws from its own generator seeded by (seed, crc32(category)), so adding a
category never reshuffles another. Output JSON is canonical, hence byte-identical per seed.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from shiftad.data.records import ImageRecord, read_manifest
from shiftad.errors import DataError
from shiftad.io import read_json, write_json
from shiftad.params import Params
from shiftad.paths import MANIFEST, SPLITS, domain_splits_file

SPLIT_NAMES = ("train", "val", "test")


def category_rng(seed: int, category: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(category.encode("utf-8"))])


def _shuffled(paths: Iterable[str], rng: np.random.Generator) -> list[str]:
    paths = sorted(paths)
    return [paths[i] for i in rng.permutation(len(paths))]


def _take(paths: list[str], fraction: float) -> tuple[list[str], list[str]]:
    cut = int(round(fraction * len(paths)))
    return paths[:cut], paths[cut:]


def _by_defect(records: list[ImageRecord]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for r in records:
        groups[r.defect_type].append(r.path)
    return dict(sorted(groups.items()))


def split_category(records: list[ImageRecord], params: Params) -> dict[str, list[str]]:
    category = records[0].category
    rng = category_rng(params.seed, category)
    normals = [r for r in records if not r.is_anomalous]
    anomalies = [r for r in records if r.is_anomalous]
    policy = params.split.policy
    if policy == "mvtec":
        if any(r.source_split is None for r in records):
            raise DataError(f"category '{category}': split.policy 'mvtec' needs MVTec train/test folders; use split.policy: ratios")
        train_good = _shuffled([r.path for r in normals if r.source_split == "train"], rng)
        train, val = _take(train_good, params.split.mvtec.train_fraction)
        test = sorted(r.path for r in normals if r.source_split == "test")
        anomaly_val_fraction = params.split.mvtec.val_anomaly_fraction
    else:
        ratios = params.split.ratios
        shuffled = _shuffled([r.path for r in normals], rng)
        n_train = int(round(ratios.train / 100 * len(shuffled)))
        n_val = int(round(ratios.val / 100 * len(shuffled)))
        train, val, test = shuffled[:n_train], shuffled[n_train : n_train + n_val], shuffled[n_train + n_val :]
        anomaly_val_fraction = ratios.val / (ratios.val + ratios.test)
    for _defect, paths in _by_defect(anomalies).items():
        to_val, to_test = _take(_shuffled(paths, rng), anomaly_val_fraction)
        val += to_val
        test += to_test
    if not train:
        raise DataError(f"category '{category}': no normal image left for training; add normal images or raise the train share")
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def make_splits(records: list[ImageRecord], params: Params) -> dict:
    by_category: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in records:
        by_category[r.category].append(r)
    return {
        "seed": params.seed,
        "policy": params.split.policy,
        "categories": {cat: split_category(recs, params) for cat, recs in sorted(by_category.items())},
    }


def run_split_stage(params: Params, manifest: Path, output: Path) -> dict:
    splits = make_splits(read_manifest(manifest), params)
    write_json(output, splits)
    return splits


class SplitView:
    """Records of one category and split, in the order the splits file lists them."""

    def __init__(self, splits: dict[str, dict[str, list[ImageRecord]]]) -> None:
        self.splits = splits

    @classmethod
    def clean(cls, manifest: Path = MANIFEST, splits: Path = SPLITS) -> "SplitView":
        records = {r.path: r for r in read_manifest(manifest)}
        lists = read_json(splits)["categories"]
        return cls({c: {s: [records[p] for p in paths] for s, paths in parts.items()} for c, parts in lists.items()})

    @classmethod
    def shifted(cls, shifted_splits: Path) -> "SplitView":
        content = read_json(shifted_splits)
        return cls({c: {s: shifted_records(content, c, s) for s in parts} for c, parts in content["categories"].items()})

    @property
    def categories(self) -> list[str]:
        return sorted(self.splits)

    def get(self, category: str, split: str) -> list[ImageRecord]:
        return list(self.splits[category][split])


def shifted_records(shifted_splits: dict[str, Any], category: str, split: str) -> list[ImageRecord]:
    """The ImageRecords of one category and split of a `shifted_splits.json` content."""
    fields = ImageRecord.__dataclass_fields__
    entries = shifted_splits["categories"][category][split]
    return [ImageRecord(**{k: v for k, v in e.items() if k in fields}) for e in entries]


def domain_view(domain: str) -> SplitView:
    """The images of a domain: `clean` (manifest + splits.json) or a shift domain (data/processed/domains/<domain>.json)."""
    if domain == "clean":
        return SplitView.clean()
    path = domain_splits_file(domain)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no images of domain '{domain}'; run `shiftad shift --domain {domain}` "
                                "(or the whole DAG), or drop the domain from params `domains`")
    return SplitView.shifted(path)
