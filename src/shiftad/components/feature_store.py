"""A frozen network's outputs, stored once and looked up by the exact input they came from.

The features stage writes one folder per image set and network spec
(`results/features/<set>/<spec id>/`, set = study | robustness): `spec.json` (the spec, the
stored dtype, the shards) and one safetensors shard per group of images holding `keys` (N, 16) uint8 — a BLAKE2b digest of each image's prepared input tensor (the
float32 pixels the network takes) — and `layer0`, `layer1`, … (N, C, h, w), one per output.
A detector with a store looks every batch up by those digests: a batch whose images are all
stored gets the stored outputs (what the network computed for exactly those pixels), any
other batch runs the network. Nothing here can return features of other pixels or of another
network: the digest is of the input itself, and a store is only attached to a detector whose
own spec it was computed with.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

SPEC_FILE = "spec.json"
KEY_BYTES = 16


def serves(store_spec: dict, spec: dict) -> bool:
    """True when a store of `store_spec` holds what a network of `spec` computes: the same
    network, backbone, weights, input size, resize policy and scaling, and (at least) its layers
    (the features stage stores the union of the layers its detectors use)."""
    base = [k for k in (*store_spec, *spec) if k != "layers"]
    return all(store_spec.get(k) == spec.get(k) for k in base) and set(spec.get("layers", [])) <= set(store_spec.get("layers", []))


def input_key(row: torch.Tensor) -> bytes:
    """The digest of one prepared input (C, H, W): the same pixels, the same key."""
    return hashlib.blake2b(row.detach().cpu().contiguous().numpy().tobytes(), digest_size=KEY_BYTES).digest()


def write_shard(path: Path, keys: Sequence[bytes], outputs: Sequence[torch.Tensor], dtype: torch.dtype) -> int:
    """One image set's outputs (each (N, C, h, w)) under their input keys; returns the bytes written."""
    tensors = {"keys": torch.from_numpy(np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), KEY_BYTES).copy())}
    for i, output in enumerate(outputs):
        tensors[f"layer{i}"] = output.to(dtype).contiguous()
    save_file(tensors, str(path))
    return path.stat().st_size


class FeatureStore:
    """Read side of one network's features folders (one per image set): `lookup(batch)` -> the
    stored outputs, or None."""

    def __init__(self, folders: str | Path | list[Path]) -> None:
        sets = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
        missing = [f for f in sets if not (f / SPEC_FILE).is_file()]
        if not sets or missing:
            raise FileNotFoundError(f"{missing or 'no folder'}: no features there (run the features stage: shiftad features)")
        self.folder = sets[0].parent if len(sets) > 1 else sets[0]
        metas = {folder: json.loads((folder / SPEC_FILE).read_text()) for folder in sets}
        specs = {json.dumps(m["spec"], sort_keys=True) for m in metas.values()}
        if len(specs) != 1:
            raise ValueError(f"{[str(s) for s in sets]}: features of different networks {sorted(specs)}")
        first = next(iter(metas.values()))
        self.spec: dict[str, Any] = first["spec"]
        self.n_outputs: int = first["n_outputs"]
        self._handles: dict[Path, Any] = {}
        self._where: dict[bytes, tuple[Path, int]] = {}
        self._network_seconds: dict[Path, float] = {}
        for folder, meta in metas.items():
            for shard in meta["shards"]:
                path = folder / f"{shard}.safetensors"
                self._network_seconds[path] = meta["network_seconds_per_image"]
                keys = self._handle(path).get_tensor("keys").numpy()
                for row, key in enumerate(keys):
                    self._where.setdefault(key.tobytes(), (path, row))
        self.hits = 0  # images served from the store
        self.misses = 0  # images whose batch ran the network
        self.lookup_seconds = 0.0  # time spent looking up and reading
        self.charged_seconds = 0.0  # what the network took for the served images when the features stage ran it

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        return self._handles[path]

    def __len__(self) -> int:
        return len(self._where)

    def lookup(self, batch: torch.Tensor, layers: Sequence[str] | None = None) -> list[torch.Tensor] | None:
        """The stored outputs (float32) of a prepared batch (B, C, H, W) when every image is stored:
        those of `layers`, in that order (None or empty: every stored output)."""
        start = time.perf_counter()
        places = [self._where.get(input_key(row)) for row in batch]
        if any(p is None for p in places):
            self.misses += len(places)
            self.lookup_seconds += time.perf_counter() - start
            return None
        self.hits += len(places)
        outputs = []
        stored_layers = list(self.spec.get("layers") or [])
        indices = [stored_layers.index(name) for name in layers] if layers else range(self.n_outputs)
        for layer in indices:
            rows = [self._handle(path).get_slice(f"layer{layer}")[row : row + 1] for path, row in places]
            outputs.append(torch.cat(rows).float())
        self.charged_seconds += sum(self._network_seconds[path] for path, _ in places)
        self.lookup_seconds += time.perf_counter() - start
        return outputs


class NetworkClock:
    """Wall time of a block as if the frozen network had run in it: the time the store spent
    serving outputs is replaced by what the network took for those images in the features stage
    (same params, threads and device). Timings in score files, fit logs and K-shot curves keep
    their meaning — the method's cost on this machine — with the store or without it."""

    def __init__(self, store: "FeatureStore | None") -> None:
        self.store = store
        self.seconds = 0.0

    def __enter__(self) -> "NetworkClock":
        self._start = time.perf_counter()
        self._lookup = self.store.lookup_seconds if self.store else 0.0
        self._charged = self.store.charged_seconds if self.store else 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start
        if self.store is not None:
            self.seconds += (self.store.charged_seconds - self._charged) - (self.store.lookup_seconds - self._lookup)
