import numpy as np
import pytest
import torch
from skimage import data
from torchvision.transforms import v2 as T

from shiftad.backbones import BackboneWeightsError, FeatureExtractor, create_backbone, load_state_dict_strict
from shiftad.errors import ParamsError


def classify(model: torch.nn.Module, image: np.ndarray, mean, std) -> int:
    transform = T.Compose([T.ToImage(), T.Resize(224), T.CenterCrop(224), T.ToDtype(torch.float32, scale=True), T.Normalize(mean, std)])
    with torch.no_grad():
        return int(model(transform(image)[None]).argmax())


def test_offline_lite0_weights_are_real_imagenet_weights():
    model, mean, std = create_backbone("tf_efficientnet_lite0", "auto")
    assert classify(model, data.chelsea(), mean, std) == 285  # Egyptian cat
    assert classify(model, data.coffee(), mean, std) == 967  # espresso


def test_random_weights_only_when_asked_and_differ_from_pretrained():
    random_model, _, _ = create_backbone("tf_efficientnet_lite0", "none")
    pretrained, _, _ = create_backbone("tf_efficientnet_lite0", "auto")
    assert not torch.equal(random_model.conv_stem.weight, pretrained.conv_stem.weight)


def test_missing_download_is_an_error_not_random_weights(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("no network")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(BackboneWeightsError, match="backbone.weights"):
        create_backbone("resnet18", "auto")


def test_local_weights_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    model, _, _ = create_backbone("resnet18", "none")
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded, _, _ = create_backbone("resnet18", str(path))
    assert torch.equal(loaded.conv1.weight, model.conv1.weight)
    with pytest.raises(BackboneWeightsError, match="not found"):
        create_backbone("resnet18", str(tmp_path / "missing.pth"))


def test_wrong_architecture_weights_are_rejected():
    lite, _, _ = create_backbone("tf_efficientnet_lite0", "none")
    resnet, _, _ = create_backbone("resnet18", "none")
    with pytest.raises(BackboneWeightsError):
        load_state_dict_strict(resnet, lite.state_dict(), "lite0")


def test_unknown_layer_is_an_error_listing_valid_names():
    with pytest.raises(ParamsError, match="blocks.2"):
        FeatureExtractor("tf_efficientnet_lite0", ["blocks.2", "block.4"], weights="none")


def test_unknown_model_name_names_the_key():
    with pytest.raises(ParamsError, match="backbone.name"):
        create_backbone("no_such_net_xyz", "none")


def test_features_match_a_full_forward_and_stop_early():
    extractor = FeatureExtractor("tf_efficientnet_lite0", ["blocks.2", "blocks.4"], weights="none")
    x = torch.rand(2, 3, 64, 64)
    f2, f4 = extractor(x)
    assert f2.shape == (2, 40, 8, 8) and f4.shape == (2, 112, 4, 4)
    # the traced module is cut after blocks.4: no later block, no head
    assert not any(name.startswith(("blocks.5", "blocks.6", "conv_head")) for name, _ in extractor.body.named_modules())
    # reference: a full timm model with the same weights, run block by block
    model = create_backbone("tf_efficientnet_lite0", "none")[0]
    loaded = model.load_state_dict(extractor.body.state_dict(), strict=False)
    assert not loaded.unexpected_keys and all(k.startswith(("blocks.5", "blocks.6", "conv_head", "bn2", "classifier")) for k in loaded.missing_keys)
    h = model.bn1(model.conv_stem((x - extractor.mean) / extractor.std))
    outputs = []
    for block in model.blocks:
        h = block(h)
        outputs.append(h)
    # ours runs channels-last: other kernels, the same numbers up to float rounding
    torch.testing.assert_close(f2, outputs[2], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(f4, outputs[4], rtol=1e-4, atol=1e-4)


def test_models_in_one_process_share_one_frozen_extractor_without_touching_the_rng():
    """Every model a stage loads (each category's, each regime's in export) runs the same frozen
    network: built once per process, outside the caller's RNG stream, and moved to a device by
    whichever model runs it (the device follows the module, not a per-model flag)."""
    from shiftad.detectors.knn import FewShotKNN
    from shiftad.detectors.padim import PaDiM

    first, second, padim = FewShotKNN(image_size=64), FewShotKNN(image_size=64), PaDiM(image_size=64, n_features=20)
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    assert first.extractor is second.extractor is padim.extractor
    assert torch.equal(torch.random.get_rng_state(), state)
    other_layers = FewShotKNN(image_size=64, layers=["blocks.1", "blocks.2"])
    assert other_layers.extractor is not first.extractor
    batch = torch.rand(1, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(first.features(batch), second.features(batch)))
    random = [FewShotKNN(image_size=64, weights="none").extractor for _ in range(2)]
    assert random[0] is not random[1]  # random weights are asked for per model, never shared
