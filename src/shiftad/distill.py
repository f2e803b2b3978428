"""The distill-teacher stage: a detector's teacher network(s), shared by every category and regime.

EfficientAD: the paper's teacher is distilled from WideResNet-101 on ImageNet and usually downloaded; here
neither exists offline. With `efficientad.teacher.source: distill` the PDN (with padding, as
the reference pretraining) learns to regress the offline backbone's standardised, locally
aware mid-level features (`teacher.layers`, PatchCore's aggregation, channel-pooled to C as
the reference pools WideResNet's 1536 channels to 384), with the backbone at twice the PDN's
input size so both grids agree. Images: the clean train images of every category (never val or
test) plus the photos scikit-image ships, with random crops, flips, 90° rotations and random
grayscale. With a file path instead, the user's (or the official) weights are checked against
the architecture and copied in; a missing or mismatched file is an error, never a fallback.

Writes `results/teachers/efficientad/`: teacher.safetensors (the PDN's state dict, the
official key layout) + teacher.json (what made it).

Uninformed Students (`--detector uninformed_students`): one patch network per patch size,
regressing — through a linear decoder used only here — the backbone's descriptor of the same
patch (each of `teacher.layers` average-pooled and concatenated, standardised per dimension),
plus the compactness loss on its own d-dimensional output. Patches: cut once per run from the
same images (resized to the networks' input size), rotated uniformly in ±180°, flipped; each
epoch visits them all in a new order. Writes `results/teachers/uninformed_students/`:
teacher.safetensors (`p<size>.<key>`) + teacher.json.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from shiftad.backbones import BackboneWeightsError, FeatureExtractor, load_state_dict_strict, read_state_dict, resolve_device, to_tensor_batch
from shiftad.components.aggregation import aggregate_patches
from shiftad.components.patch_nets import PatchNet, compactness_loss
from shiftad.components.pdn import channel_statistics, normalise_input, pdn
from shiftad.errors import ParamsError
from shiftad.io import atomic_dir, write_json
from shiftad.params import Params
from shiftad.paths import teacher_dir
from shiftad.pipeline import TEACHER_DETECTORS

log = logging.getLogger(__name__)
CROP_MARGIN = 1.25  # source images are kept at 1.25 × the crop size, so crops move


class DistillTarget(torch.nn.Module):
    """Backbone features the teacher regresses: aggregated, pooled over channels to C, standardised."""

    def __init__(self, backbone: str, weights: str, layers: Sequence[str], neighbourhood: int, channels: int,
                 normalisation: str = "model") -> None:
        super().__init__()
        self.extractor = FeatureExtractor(backbone, layers, weights, param_key="backbone", normalisation=normalisation)
        self.neighbourhood, self.channels = neighbourhood, channels
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))

    @torch.no_grad()
    def raw(self, images: torch.Tensor, grid: int) -> torch.Tensor:
        features = aggregate_patches(self.extractor(images), self.neighbourhood)
        b, c, h, w = features.shape
        if c < self.channels:
            raise ParamsError(f"efficientad.architecture.<scale>.channels: {self.channels} exceeds the {c} channels of the backbone's "
                              f"efficientad.teacher.layers; lower it or pick layers with more channels (WideResNet: layer2 + layer3)")
        if c > self.channels:  # the reference: adaptive average pooling over channels
            features = F.adaptive_avg_pool1d(features.permute(0, 2, 3, 1).reshape(-1, 1, c), self.channels).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        if (h, w) != (grid, grid):
            features = F.interpolate(features, size=(grid, grid), mode="bilinear", align_corners=False)
        return features.contiguous()

    def forward(self, images: torch.Tensor, grid: int) -> torch.Tensor:
        return (self.raw(images, grid) - self.mean) / self.std


class AugmentedImages:
    """Random square crops (flips, 90° rotations, grayscale p = 0.1) of images kept in memory."""

    def __init__(self, images: Sequence[np.ndarray], crop: int) -> None:
        self.crop, self.side = crop, int(round(crop * CROP_MARGIN))
        self.images = [self._square(image) for image in images]

    def _square(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        return to_tensor_batch([image[top : top + side, left : left + side]], self.side)[0]

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        out = []
        for _ in range(count):
            image = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            y, x = (int(v) for v in torch.randint(self.side - self.crop + 1, (2,), generator=generator))
            crop = image[:, y : y + self.crop, x : x + self.crop]
            flips, rotation, gray = torch.rand(2, generator=generator), int(torch.randint(4, (1,), generator=generator)), float(torch.rand(1, generator=generator))
            if flips[0] < 0.5:
                crop = crop.flip(2)
            if flips[1] < 0.5:
                crop = crop.flip(1)
            crop = torch.rot90(crop, rotation, dims=(1, 2))
            if gray < 0.1:
                crop = crop.mean(dim=0, keepdim=True).expand(3, -1, -1)
            out.append(crop)
        return torch.stack(out).contiguous()


def distill_teacher(images: Sequence[np.ndarray], params: Params, progress: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the PDN teacher on `images`; returns its state dict and what made it."""
    p = params.efficientad
    arch, training = p.arch, p.teacher_training
    device = resolve_device(p.device, "efficientad.device")
    size = arch.image_size
    target = DistillTarget(params.backbone.name, params.backbone.weights, p.teacher.layers, p.teacher.neighbourhood, arch.channels,
                            params.backbone.normalisation).to(device)
    pool = AugmentedImages(images, 2 * size)  # the backbone sees twice the PDN's input size
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        generator = torch.Generator().manual_seed(params.seed)
        teacher = pdn(p.model_size, arch.channels, arch.width, padding=True).to(device)
        grid = teacher(torch.zeros(1, 3, size, size, device=device)).shape[-1]
        # target statistics over a sample of augmented images (the reference: over ImageNet images)
        sample = [target.raw(pool.sample(8, generator).to(device), grid) for _ in range(max(1, 64 // 8))]
        target.mean, target.std = channel_statistics(sample)
        optimiser = torch.optim.Adam(teacher.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay)
        start, history = time.perf_counter(), []
        for step in tqdm(range(1, training.steps + 1), desc="distilling the teacher", disable=not progress):
            big = pool.sample(training.batch_size, generator).to(device)
            small = F.interpolate(big, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            loss = F.mse_loss(teacher(normalise_input(small)), target(big, grid))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % max(1, training.steps // 20) == 0 or step == training.steps:
                history.append({"step": step, "loss": round(loss.item(), 6)})
    facts = {"source": "distilled", "model_size": p.model_size, "channels": arch.channels, "width": arch.width, "image_size": size,
             "scale": p.scale, "backbone": params.backbone.name, "layers": list(p.teacher.layers), "backbone_input": 2 * size,
             "steps": training.steps, "batch_size": training.batch_size, "learning_rate": training.learning_rate,
             "final_loss": history[-1]["loss"], "history": history, "seconds": round(time.perf_counter() - start, 3), "device": str(device)}
    return {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}, facts


def teacher_from_file(path: str | Path, params: Params) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A user's teacher weights (the official teacher_small.pth, or their own), checked strictly."""
    p = params.efficientad
    path = Path(path)
    try:
        state = read_state_dict(path, "efficientad.teacher.source")
    except BackboneWeightsError as exc:
        raise ParamsError(f"efficientad.teacher.source: {exc}") from None
    teacher = pdn(p.model_size, p.arch.channels, p.arch.width)
    try:  # by key (the official Sequential layout), or in order where the names differ (anomalib's conv1, conv2, ...)
        load_state_dict_strict(teacher, state, str(path))
    except (RuntimeError, BackboneWeightsError) as exc:
        raise ParamsError(f"efficientad.teacher.source: {path} does not fit PDN-{p.model_size[0].upper()} with "
                          f"{p.arch.channels} output channels at width {p.arch.width} (efficientad.model_size, "
                          f"efficientad.architecture.{p.scale}): {str(exc).splitlines()[0]}") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    facts = {"source": "file", "file": str(path), "sha256": digest, "model_size": p.model_size, "channels": p.arch.channels,
             "width": p.arch.width, "image_size": p.arch.image_size, "scale": p.scale}
    return {k: v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}, facts


def distillation_images(params: Params) -> tuple[list[np.ndarray], dict[str, int]]:
    """The clean train images of every category (never val or test) + the scikit-image photos."""
    from shiftad.components.offline_images import skimage_photos
    from shiftad.data.images import read_image
    from shiftad.split import domain_view

    view = domain_view("clean")
    train = [read_image(r.path) for c in params.categories for r in view.get(c, "train")]
    photos = list(skimage_photos().values())
    return train + photos, {"train_images": len(train), "skimage_photos": len(photos)}


class PatchDescriptor(torch.nn.Module):
    """The backbone's descriptor of a patch: each layer's map average-pooled, concatenated."""

    def __init__(self, backbone: str, weights: str, layers: Sequence[str], input_size: int, param_key: str = "backbone",
                 normalisation: str = "model") -> None:
        super().__init__()
        self.extractor = FeatureExtractor(backbone, layers, weights, param_key=param_key, normalisation=normalisation)
        self.input_size = input_size

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        resized = F.interpolate(patches, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return torch.cat([m.mean(dim=(2, 3)) for m in self.extractor(resized)], dim=1)


def rotated_patch_size(patch: int) -> int:
    """Side of the square a patch is cut from so that any rotation of it stays inside."""
    return math.ceil(patch * math.sqrt(2)) + 1


def augmented_patches(images: Sequence[torch.Tensor], count: int, patch: int, generator: torch.Generator) -> torch.Tensor:
    """`count` random patch × patch crops of (3, S, S) images in [0, 1]: a uniform rotation in
    ±180° about the patch centre, then horizontal and vertical flips with p = 0.5 each."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    side = rotated_patch_size(patch)
    margin = (side - patch) // 2
    out = torch.empty(count, 3, patch, patch)
    for i in range(count):
        image = images[int(torch.randint(len(images), (1,), generator=generator))]
        limit = image.shape[-1] - side + 1
        y, x = (int(v) for v in torch.randint(limit, (2,), generator=generator))
        angle = float(torch.rand(1, generator=generator)) * 360.0 - 180.0
        region = TF.rotate(image[:, y : y + side, x : x + side], angle, interpolation=InterpolationMode.BILINEAR)
        crop = region[:, margin : margin + patch, margin : margin + patch]
        flips = torch.rand(2, generator=generator)
        if flips[0] < 0.5:
            crop = crop.flip(2)
        if flips[1] < 0.5:
            crop = crop.flip(1)
        out[i] = crop
    return out


def distill_patch_teachers(images: Sequence[np.ndarray], params: Params, progress: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Uninformed Students' teachers, one per patch size; returns their state dicts (`p<size>.` keys) and what made them."""
    p = params.uninformed_students
    arch, training = p.arch, p.teacher_training
    device = resolve_device(p.device, "uninformed_students.device")
    own_backbone = p.teacher.backbone != "default"  # otherwise the pipeline's backbone and its weights
    backbone = p.teacher.backbone if own_backbone else params.backbone.name
    weights = p.teacher.weights if own_backbone else params.backbone.weights
    target = PatchDescriptor(backbone, weights, p.teacher.layers, training.backbone_input,
                             "uninformed_students.teacher" if own_backbone else "backbone", params.backbone.normalisation).to(device)
    resized = list(to_tensor_batch(images, arch.image_size, params.resize))
    state: dict[str, torch.Tensor] = {}
    per_size: dict[str, Any] = {}
    start = time.perf_counter()
    for patch in arch.patch_sizes:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed + patch)
            generator = torch.Generator().manual_seed(params.seed + patch)
            patches = augmented_patches(resized, training.patches, patch, generator)
            described = torch.cat([target(patches[i : i + 256].to(device)) for i in
                                   tqdm(range(0, len(patches), 256), desc=f"describing {patch}-px patches", disable=not progress, leave=False)])
            described = (described - described.mean(dim=0)) / described.std(dim=0).clamp_min(1e-6)
            teacher = PatchNet(patch, arch.descriptor_dim, arch.width).to(device)
            decoder = torch.nn.Linear(arch.descriptor_dim, described.shape[1]).to(device)
            optimiser = torch.optim.Adam([*teacher.parameters(), *decoder.parameters()], lr=training.learning_rate, weight_decay=training.weight_decay)
            steps_per_epoch = len(patches) // training.batch_size
            history = []
            for epoch in tqdm(range(1, training.epochs + 1), desc=f"distilling the {patch}-px teacher", disable=not progress):
                order = torch.randperm(len(patches), generator=generator)
                totals = torch.zeros(2)
                for step in range(steps_per_epoch):
                    index = order[step * training.batch_size : (step + 1) * training.batch_size]
                    descriptors = teacher(normalise_input(patches[index].to(device)))
                    # the paper's ||D(T̂(p)) − P(p)||²: summed over the descriptor, averaged over the batch
                    loss_mse = (decoder(descriptors) - described[index]).pow(2).sum(dim=1).mean()
                    loss_compact = compactness_loss(descriptors)
                    loss = loss_mse + p.teacher.compactness_weight * loss_compact
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    totals += torch.tensor([loss_mse.item(), loss_compact.item()])
                mse, compact = (totals / steps_per_epoch).tolist()
                history.append({"epoch": epoch, "distillation": round(mse, 6), "compactness": round(compact, 6)})
        state |= {f"p{patch}.{k}": v.detach().cpu().contiguous() for k, v in teacher.state_dict().items()}
        per_size[str(patch)] = {"target_dim": int(described.shape[1]), "steps": steps_per_epoch * training.epochs, "history": history}
    facts = {"source": "distilled", "scale": p.scale, "patch_sizes": list(arch.patch_sizes), "descriptor_dim": arch.descriptor_dim,
             "width": arch.width, "image_size": arch.image_size, "backbone": backbone, "layers": list(p.teacher.layers),
             "backbone_input": training.backbone_input, "patches": training.patches, "epochs": training.epochs,
             "batch_size": training.batch_size, "learning_rate": training.learning_rate, "compactness_weight": p.teacher.compactness_weight,
             "per_patch_size": per_size, "seconds": round(time.perf_counter() - start, 3), "device": str(device)}
    return state, facts


def run_distill_stage(params: Params, detector: str = "efficientad", progress: bool = True) -> Path:
    if detector not in TEACHER_DETECTORS:
        raise ValueError(f"{detector} has no teacher to distill; those that do: {', '.join(TEACHER_DETECTORS)}")
    if detector == "uninformed_students":
        images, counts = distillation_images(params)
        state, facts = distill_patch_teachers(images, params, progress)
        facts["images"] = counts
    elif params.efficientad.teacher.source == "distill":
        images, counts = distillation_images(params)
        state, facts = distill_teacher(images, params, progress)
        facts["images"] = counts
    else:
        state, facts = teacher_from_file(params.efficientad.teacher.source, params)
    target = teacher_dir(detector)
    with atomic_dir(target) as folder:
        save_file(state, str(folder / "teacher.safetensors"))
        write_json(folder / "teacher.json", facts)
    log.info("%s teacher (%s) -> %s", detector, facts["source"], target)
    return target
