"""The features stage's store: a detector gets exactly the network's outputs for stored inputs,
runs the network for anything else, refuses another network's store, and its timings still
count the network's time."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from shiftad.components.feature_store import SPEC_FILE, FeatureStore, NetworkClock, input_key, write_shard
from shiftad.data.images import read_image
from shiftad.detectors import build_detector, detector_class, with_stored_features
from shiftad.detectors.patchcore import PatchCore
from shiftad.params import validate_params
from shiftad.pipeline import FEATURES_DIR, feature_spec, spec_id

from conftest import texture_records


def store_features(model, records, folder, dtype=torch.float32, seconds_per_image=0.25):
    """What the features stage writes for `records` (one shard)."""
    batch = model.prepare_batch([read_image(r.path) for r in records])
    outputs = model.features(batch)
    folder.mkdir(parents=True)
    write_shard(folder / "shard.safetensors", [input_key(row) for row in batch], outputs, dtype)
    (folder / SPEC_FILE).write_text(json.dumps({"spec": model.feature_spec(), "n_outputs": len(outputs), "shards": ["shard"],
                                                "network_seconds_per_image": seconds_per_image}))
    return outputs


def small_patchcore() -> PatchCore:
    return PatchCore(image_size=64, coreset_ratio=0.5, batch_size=4)


def test_stored_inputs_get_exactly_the_networks_outputs_and_others_run_the_network(tmp_path):
    stored, other = texture_records(tmp_path / "a", 4, size=64), texture_records(tmp_path / "b", 2, size=64, seed=1)
    reference = small_patchcore()
    expected = store_features(reference, stored, tmp_path / "features" / "study")
    model = small_patchcore()
    model.use_feature_store(FeatureStore(tmp_path / "features" / "study"))
    got = model.features(model.prepare_batch([read_image(r.path) for r in stored]))
    assert all(torch.equal(g, e) for g, e in zip(got, expected))  # float32: bit for bit
    assert model._extractor is None  # a full hit never builds the network
    fresh = reference.features(reference.prepare_batch([read_image(r.path) for r in other]))
    missed = model.features(model.prepare_batch([read_image(r.path) for r in other]))
    assert all(torch.equal(m, f) for m, f in zip(missed, fresh))
    assert (model._feature_store.hits, model._feature_store.misses) == (4, 2)
    # a whole fit + score through the store equals one without it
    plain, cached = small_patchcore().fit(stored), small_patchcore()
    cached.use_feature_store(FeatureStore(tmp_path / "features" / "study"))
    cached.fit(stored)
    np.testing.assert_array_equal(plain.memory_bank_, cached.memory_bank_)
    np.testing.assert_array_equal(plain.score(stored).image_scores, cached.score(stored).image_scores)


def test_float16_store_rounds_the_outputs_only(tmp_path):
    records = texture_records(tmp_path / "a", 2, size=64)
    expected = store_features(small_patchcore(), records, tmp_path / "features" / "study", dtype=torch.float16)
    model = small_patchcore()
    model.use_feature_store(FeatureStore(tmp_path / "features" / "study"))
    got = model.features(model.prepare_batch([read_image(r.path) for r in records]))
    for g, e in zip(got, expected):
        assert g.dtype == torch.float32 and not torch.equal(g, e)
        torch.testing.assert_close(g, e.half().float())


def test_one_store_of_the_union_of_layers_serves_each_detectors_own_layers(tmp_path, monkeypatch):
    """The default study runs one network: PaDiM's blocks.2+6 and PatchCore's, the kNN's and the
    routed AE's blocks.2+4 come out of one pass that keeps blocks.2, 4 and 6; a detector on
    other layers (PatchCore on blocks.3+4 here) joins the same pass."""
    from shiftad.pipeline import feature_specs, store_spec

    assert next(iter(feature_specs(validate_params({"image_size": 64})).values()))["layers"] == ["blocks.2", "blocks.4", "blocks.6"]
    params = validate_params({"image_size": 64, "categories": ["c"], "patchcore": {"layers": ["blocks.3", "blocks.4"]}})
    specs = feature_specs(params)
    assert len(specs) == 1 and next(iter(specs.values()))["layers"] == ["blocks.2", "blocks.3", "blocks.4", "blocks.6"]
    assert all(store_spec(params, d) == next(iter(specs.values())) for d in ("patchcore", "padim", "knn", "routed_ae"))
    other = validate_params({"image_size": 64, "categories": ["c"], "patchcore": {"layers": ["blocks.3", "blocks.4"]}, "resize": "pad"})
    assert set(feature_specs(other)).isdisjoint(specs)
    records = texture_records(tmp_path / "a", 3, size=64)
    union = PatchCore(image_size=64, layers=["blocks.2", "blocks.3", "blocks.4", "blocks.6"])
    monkeypatch.chdir(tmp_path)
    store_features(union, records, tmp_path / FEATURES_DIR / "study" / next(iter(specs)))
    for detector in ("patchcore", "padim", "knn", "routed_ae"):
        model = build_detector(detector, params)
        assert model._feature_store is not None, detector
        batch = model.prepare_batch([read_image(r.path) for r in records])
        got = model.features(batch)
        fresh = build_detector(detector, params, stored_features=False).features(batch)
        assert [g.shape for g in got] == [f.shape for f in fresh] and all(torch.equal(g, f) for g, f in zip(got, fresh)), detector
        assert model._feature_store.hits == 3 and model._feature_store.misses == 0


def test_a_store_of_another_network_is_refused(tmp_path):
    records = texture_records(tmp_path / "a", 2, size=64)
    store_features(small_patchcore(), records, tmp_path / "features" / "study")
    other = PatchCore(image_size=64, layers=["blocks.2", "blocks.3"])
    with pytest.raises(ValueError, match="features of .* but this patchcore model runs"):
        other.use_feature_store(FeatureStore(tmp_path / "features" / "study"))
    padded = PatchCore(image_size=64, coreset_ratio=0.5, batch_size=4, resize="pad")  # same layers, other inputs
    with pytest.raises(ValueError, match="features of .* but this patchcore model runs"):
        padded.use_feature_store(FeatureStore(tmp_path / "features" / "study"))


def test_the_stages_attach_the_store_of_the_models_own_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    same = {"layers": ["blocks.2", "blocks.4"]}  # PaDiM's own layers (its default is blocks.2+6)
    params = validate_params({"image_size": 64, "categories": ["c"], "patchcore": same, "padim": same})
    records = texture_records(tmp_path / "a", 2, size=64)
    model = build_detector("patchcore", params)
    assert model._feature_store is None  # no features folder yet
    store_features(model, records, tmp_path / FEATURES_DIR / "study" / spec_id(model.feature_spec()))
    assert build_detector("patchcore", params)._feature_store is not None
    assert build_detector("patchcore", params, stored_features=False)._feature_store is None
    assert with_stored_features(build_detector("padim", params))._feature_store is not None  # the same layers: shared
    other = validate_params({"image_size": 64, "categories": ["c"], "padim": {"layers": ["blocks.1", "blocks.3"]}})
    assert with_stored_features(build_detector("padim", other))._feature_store is None  # another network


@pytest.mark.parametrize("override", [{}, {"knn": {"layers": ["blocks.3"]}}, {"knn": {"backbone": "vit_small_patch14_dinov2.lvd142m", "weights": "none"}},
                                      {"backbone": {"name": "tf_efficientnet_lite1"}, "padim": {"layers": ["blocks.1", "blocks.3"]}},
                                      {"resize": "pad", "backbone": {"normalisation": "imagenet"}}])
def test_the_dags_spec_of_each_detector_is_the_models_own(override):
    """The Snakefile wires jobs to results/features/<spec id> from params; the models look up
    the folder of their own spec: both must name the same network."""
    params = validate_params({"image_size": 64, **override})
    for detector in ("patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"):
        model = detector_class(detector).from_params(params)
        assert feature_spec(params, detector) == model.feature_spec(), detector


def test_the_clock_counts_the_networks_time_for_served_images(tmp_path):
    records = texture_records(tmp_path / "a", 3, size=64)
    store_features(small_patchcore(), records, tmp_path / "features" / "study", seconds_per_image=2.0)
    store = FeatureStore(tmp_path / "features" / "study")
    batch = small_patchcore().prepare_batch([read_image(r.path) for r in records])
    with NetworkClock(store) as clock:
        store.lookup(batch)
        time.sleep(0.05)
    assert 6.04 < clock.seconds < 6.5  # 3 images x 2 s of network + the sleep, not the lookup
    with NetworkClock(None) as plain:
        time.sleep(0.05)
    assert 0.04 < plain.seconds < 0.5
