"""backbone.device / backbone.mixed_precision: where the frozen feature network runs."""

import numpy as np
import pytest
import torch

from conftest import texture_records
from shiftad.data.images import read_image
from shiftad.detectors import build_detector
from shiftad.errors import ParamsError
from shiftad.params import validate_params

SMALL = {"image_size": 64, "backbone": {"batch_size": 4}}


def test_build_detector_sets_the_backbone_device_and_keeps_a_detectors_own_device():
    params = validate_params({**SMALL, "backbone": {"device": "cpu", "mixed_precision": True}, "efficientad": {"device": "auto"}})
    patchcore = build_detector("patchcore", params)
    assert (patchcore.feature_device, patchcore.feature_mixed_precision) == ("cpu", True)
    efficientad = build_detector("efficientad", params)
    assert efficientad.device == "auto" and efficientad.feature_device == "cpu"  # its own networks follow efficientad.device


def test_features_are_float32_on_the_cpu_and_mixed_precision_changes_nothing_there(tmp_path):
    params = validate_params({**SMALL, "backbone": {"device": "cpu"}})
    model = build_detector("patchcore", params)
    batch = model.prepare_batch([read_image(r.path) for r in texture_records(tmp_path, 2, size=64)])
    exact = model.features(batch)
    assert all(f.dtype == torch.float32 and f.device.type == "cpu" for f in exact)
    model.use_device("cpu", mixed_precision=True)  # autocast is for CUDA only: the CPU run stays float32
    for a, b in zip(exact, model.features(batch)):
        assert torch.equal(a, b)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_an_error_naming_the_key(tmp_path):
    model = build_detector("patchcore", validate_params({**SMALL, "backbone": {"device": "cuda"}}))
    batch = model.prepare_batch([read_image(r.path) for r in texture_records(tmp_path, 1, size=64)])
    with pytest.raises(ParamsError, match="backbone.device: cuda asked for, but torch sees no CUDA device"):
        model.features(batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_features_match_the_cpu_within_the_documented_tolerance(tmp_path):
    images = [read_image(r.path) for r in texture_records(tmp_path, 4, size=64)]
    cpu = build_detector("patchcore", validate_params({**SMALL, "backbone": {"device": "cpu"}}))
    batch = cpu.prepare_batch(images)
    reference = cpu.features(batch)
    for mixed, tolerance in ((False, 1e-2), (True, 5e-2)):  # README "Devices": relative to each output's scale (TF32 convolutions; float16)
        gpu = build_detector("patchcore", validate_params({**SMALL, "backbone": {"device": "cuda", "mixed_precision": mixed}}))
        for a, b in zip(reference, gpu.features(batch)):
            assert b.dtype == torch.float32 and float((a - b).abs().max() / a.abs().max()) < tolerance
