"""Model bundles: the format, and loading it back (`export.py` writes them).

Layout of a bundle folder:

    bundle.json                 format, versions, detector, regime, domain, categories,
                                thresholds per category, preprocessing and backbone spec,
                                params subset, ONNX facts, sha256 of every file
    models/<category>/          the fitted model folder(s) as the fit stage wrote them
                                (per_class: one per category; global: `all`)
    feature_network.onnx        optional: the frozen feature network (dynamic batch)

Loading never executes code: JSON, safetensors, npz (allow_pickle=False) and an ONNX graph
only. A bundle written by another format version, or whose files do not match their recorded
hashes, is an error saying so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from shiftad.detectors import Detector, detector_class
from shiftad.errors import ShiftadError
from shiftad.io import read_json
from shiftad.pipeline import GLOBAL_CATEGORY, RUNTIMES

BUNDLE_FORMAT = "shiftad-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
ONNX_FILE = "feature_network.onnx"


class BundleError(ShiftadError):
    """A bundle that cannot be used as it is."""


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file the loader may read; hidden files (Snakemake's `.snakemake_timestamp`
    in a directory output) are never read and not hashed."""
    hashes = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != BUNDLE_FILE and not p.name.startswith(".")):
        hashes[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


class OnnxFeatureRunner:
    """An exported feature network run by ONNX Runtime: (B, 3, S, S) tensor -> list of feature tensors."""

    def __init__(self, path: str | Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (all cores)
        options.log_severity_level = 3
        # no busy-waiting between runs: the threads would spin on cores the kNN search and maps need next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)})
        return [torch.from_numpy(o) for o in outputs]


@dataclass
class Bundle:
    folder: Path
    meta: dict
    runtime: str = "torch"
    onnx_threads: int = 0  # ONNX Runtime's intra-op threads (0 = its default, every core)
    _models: dict[str, Detector] = field(default_factory=dict, repr=False)
    _runner: OnnxFeatureRunner | None = field(default=None, repr=False)

    @property
    def categories(self) -> list[str]:
        return list(self.meta["categories"])

    def threshold(self, category: str) -> float:
        return float(self.meta["thresholds"][category]["value"])

    def map_floor(self, category: str) -> float:
        return float(self.meta["thresholds"][category].get("map_floor", float("nan")))

    @property
    def routes(self) -> bool:
        """True when the bundle's model picks each image's category itself (a router, global regime)."""
        return self.meta["regime"] == "global" and detector_class(self.meta["detector"]).can_route

    def routing_model(self) -> Detector:
        """The model with the router: `score_images(images)` routes, `Scores.categories` says where."""
        if not self.routes:
            raise BundleError(f"this {self.meta['detector']} ({self.meta['regime']}) bundle has no router; name a category of {self.categories}")
        return self._load(GLOBAL_CATEGORY)

    def model(self, category: str) -> Detector:
        """The fitted model that scores `category` (loaded once; the global model is shared)."""
        if category not in self.meta["thresholds"]:
            raise BundleError(f"unknown category '{category}'; this bundle knows {self.categories}")
        return self._load(GLOBAL_CATEGORY if self.meta["regime"] == "global" else category)

    def _load(self, name: str) -> Detector:
        if name not in self._models:
            model = detector_class(self.meta["detector"]).load(self.folder / "models" / name)
            if self.runtime == "onnx":
                if self._runner is None:
                    self._runner = OnnxFeatureRunner(self.folder / self.meta["onnx"]["file"], self.onnx_threads)
                model.use_feature_runner(self._runner)
            self._models[name] = model
        return self._models[name]


def load_bundle(folder: str | Path, runtime: str = "torch") -> Bundle:
    """Read and verify a bundle; `runtime` onnx runs its feature network with ONNX Runtime."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if runtime not in RUNTIMES:
        raise BundleError(f"runtime '{runtime}': choose one of {RUNTIMES}")
    if not path.is_file():
        raise BundleError(f"{folder}: not a bundle ({BUNDLE_FILE} missing); export one with `shiftad export`")
    meta = read_json(path)
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise BundleError(f"{path}: format {meta.get('format')} v{meta.get('format_version')}; this shiftad reads "
                          f"{BUNDLE_FORMAT} v{BUNDLE_FORMAT_VERSION} (re-export it with this version)")
    actual, recorded = file_hashes(folder), meta.get("files", {})
    if actual != recorded:
        changed = sorted(set(actual) ^ set(recorded) | {k for k in actual if recorded.get(k) != actual[k]})
        raise BundleError(f"{folder}: files do not match their recorded hashes ({changed[:5]}); the bundle was altered or is incomplete")
    if runtime == "onnx" and not meta.get("onnx"):
        raise BundleError(f"{folder}: exported without an ONNX feature network (export.onnx: false, or a detector with no frozen feature network, as EfficientAD); use --runtime torch")
    return Bundle(folder, meta, runtime)
