"""EfficientAD (Batzner et al., WACV 2024): a PDN teacher, a student with 2C outputs and an
autoencoder, trained on normal images; local (teacher–student) and global (autoencoder–student)
maps.

As in the paper and its official code, with the pitfalls other implementations hit avoided:
- teacher outputs standardised per channel with statistics over the training images;
- losses: hard feature loss (the top 0.1% of squared teacher–student differences, by `topk`, so
  no input size limit), penalty loss (the student's squared outputs on a penalty image that is
  never an image of a fitted category), autoencoder loss and student–autoencoder loss; the
  autoencoder's input gets one of brightness / contrast / saturation jitter (±0.2);
  Adam (not AdamW), learning rate ×0.1 at `lr_decay_at` of the steps; ImageNet normalisation
  applied once (`normalise_input`);
- each map is normalised with its 0.9 and 0.995 quantiles over the **validation normal images**
  (never train or test), taken on the unpadded, not-resized maps; combined 0.5 / 0.5; the
  combined map is padded by 4 output pixels and resized bilinearly to the image size;
  image score = max of the (unpadded) combined map;
- the autoencoder fits any input size (`components.pdn.autoencoder`).

The teacher comes from the teacher folder the `distill-teacher` stage writes (distilled from
the offline backbone, or a user's weights file); the fitted model stores its own copy, so a
model folder is self-contained.
"""

from __future__ import annotations

import logging
import time
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from shiftad.backbones import resolve_device, to_tensor_batch
from shiftad.components.maps import to_map_frame
from shiftad.components.pdn import (MAP_PADDING, autoencoder, channel_statistics, hard_feature_loss, map_quantiles, normalise_input,
                                    normalise_map, pdn, pdn_output_size)
from shiftad.data.images import read_image
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, Scores, iter_image_batches
from shiftad.errors import ShiftadError
from shiftad.io import read_json
from shiftad.params import Params
from shiftad.paths import teacher_dir

log = logging.getLogger(__name__)
TEACHER_WEIGHTS = "teacher.safetensors"
TEACHER_FACTS = "teacher.json"
STATE_FILE = "efficientad.safetensors"


class TeacherError(ShiftadError):
    """The teacher folder is missing or was made for another architecture."""


def colour_jitter(images: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """The autoencoder's input augmentation: per image one of brightness, contrast or
    saturation, with a factor in [1 − strength, 1 + strength] (the official transform_ae)."""
    from torchvision.transforms.v2 import functional as TF

    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    out = []
    for image in images:
        choice = int(torch.randint(3, (1,), generator=generator))
        factor = 1.0 + strength * (2 * float(torch.rand(1, generator=generator)) - 1)
        out.append(adjust[choice](image, factor))
    return torch.stack(out)


class PenaltyPool:
    """Penalty images: random crops of `size` from images resized to 2×size, grayscale with
    p = 0.3 (the official penalty transform, with a random instead of a centre crop)."""

    def __init__(self, images: Sequence[np.ndarray | Path], size: int, description: str) -> None:
        if not images:
            raise ValueError("the penalty pool is empty")
        self.size, self.description = size, description
        self.items = [item if isinstance(item, Path) else self._resized(item) for item in images]

    def _resized(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor_batch([image], 2 * self.size)[0]

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        out = []
        for _ in range(count):
            item = self.items[int(torch.randint(len(self.items), (1,), generator=generator))]
            image = self._resized(read_image(item)) if isinstance(item, Path) else item
            y, x = (int(v) for v in torch.randint(self.size + 1, (2,), generator=generator))
            crop = image[:, y : y + self.size, x : x + self.size]
            if float(torch.rand(1, generator=generator)) < 0.3:
                crop = crop.mean(dim=0, keepdim=True).expand(3, -1, -1)
            out.append(crop)
        return torch.stack(out)

    @classmethod
    def build(cls, source: str, exclude: Sequence[str], size: int, seed: int) -> "PenaltyPool":
        """`default`: the scikit-image photos except those named as a fitted category, plus 32
        procedural images; otherwise a folder of images (ImageNet, Imagenette)."""
        from shiftad.components.offline_images import folder_image_files, procedural_images, skimage_photos

        if source == "default":
            photos = skimage_photos(exclude=exclude)
            generated = procedural_images(32, 2 * size, seed)
            return cls([*photos.values(), *generated], size,
                       f"default: {len(photos)} scikit-image photos ({', '.join(sorted(photos))}) + {len(generated)} procedural images; "
                       f"left out as fitted categories: {', '.join(sorted(set(exclude)))}")
        files = folder_image_files(source, "efficientad.penalty_images")
        return cls(files, size, f"folder {source}: {len(files)} images")


class EfficientAD(Detector):
    name = "efficientad"

    def __init__(
        self,
        teacher: str = str(teacher_dir()),
        model_size: str = "small",
        scale: str = "smoke",
        image_size: int = 128,
        output_size: int = 256,
        resize: str = "squash",
        width: float = 0.25,
        channels: int = 64,
        steps: int = 250,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        lr_decay_at: float = 0.95,
        train_batch: int = 1,
        hard_quantile: float = 0.999,
        map_quantiles: Sequence[float] = (0.9, 0.995),
        penalty_images: str = "default",
        device: str = "auto",
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if pdn_output_size(image_size) < 1:
            raise ValueError(f"image_size {image_size} is too small for a PDN")
        self.teacher = teacher
        self.model_size = model_size
        self.scale = scale
        self.image_size = image_size
        self.output_size = output_size
        self.resize = resize
        self.width = width
        self.channels = channels
        self.steps = steps
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.lr_decay_at = lr_decay_at
        self.train_batch = train_batch
        self.hard_quantile = hard_quantile
        self.map_quantiles = list(map_quantiles)
        self.penalty_images = penalty_images
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.teacher_: nn.Module | None = None

    @classmethod
    def from_params(cls, params: Params) -> "EfficientAD":
        p = params.efficientad
        return cls(teacher=str(teacher_dir()), model_size=p.model_size, scale=p.scale, image_size=p.arch.image_size,
                   output_size=params.image_size, resize=params.resize, width=p.arch.width, channels=p.arch.channels, steps=p.train.steps,
                   learning_rate=p.train.learning_rate, weight_decay=p.train.weight_decay, lr_decay_at=p.train.lr_decay_at,
                   train_batch=p.train.batch_size, hard_quantile=p.hard_quantile, map_quantiles=p.map_quantiles,
                   penalty_images=p.penalty_images, device=p.device, batch_size=p.scoring_batch, seed=params.seed)

    # -- networks -----------------------------------------------------------------------------
    def _networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        teacher = pdn(self.model_size, self.channels, self.width)  # type: ignore[arg-type]
        student = pdn(self.model_size, 2 * self.channels, self.width)  # type: ignore[arg-type]
        ae = autoencoder(self.channels, self.image_size, pdn_output_size(self.image_size), self.width)
        return teacher, student, ae

    def _load_teacher(self, teacher: nn.Module) -> dict[str, Any]:
        folder = Path(self.teacher)
        weights, facts_file = folder / TEACHER_WEIGHTS, folder / TEACHER_FACTS
        if not weights.is_file() or not facts_file.is_file():
            raise TeacherError(f"{folder}: no EfficientAD teacher there; run `shiftad distill-teacher` (snakemake runs it before fitting)")
        facts = read_json(facts_file)
        wanted = {"model_size": self.model_size, "channels": self.channels, "width": self.width, "image_size": self.image_size}
        made = {k: facts.get(k) for k in wanted}
        if made != wanted:
            raise TeacherError(f"{folder}: the teacher was made for {made}, these params want {wanted}; rerun `shiftad distill-teacher`")
        try:
            teacher.load_state_dict(load_file(str(weights)), strict=True)
        except RuntimeError as exc:
            raise TeacherError(f"{weights}: does not fit PDN-{self.model_size[0].upper()} with {self.channels} channels ({exc})") from None
        return facts

    def _prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return to_tensor_batch(images, self.image_size, self.resize)

    def _read(self, records: Sequence[ImageRecord], desc: str) -> torch.Tensor:
        parts = [self._prepare(batch) for batch in tqdm(iter_image_batches(records, 32), desc=desc, disable=not self.progress, leave=False)]
        return torch.cat(parts) if parts else torch.zeros(0, 3, self.image_size, self.image_size)

    @torch.no_grad()
    def _teacher_out(self, images: torch.Tensor) -> torch.Tensor:
        return (self.teacher_(normalise_input(images)) - self.teacher_mean_) / self.teacher_std_

    @torch.no_grad()
    def _raw_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (teacher–student) and global (autoencoder–student) maps, (B, h, w), unnormalised."""
        x = normalise_input(images)
        teacher = (self.teacher_(x) - self.teacher_mean_) / self.teacher_std_
        student = self.student_(x)
        ae = self.ae_(x)
        c = self.channels
        return (teacher - student[:, :c]).pow(2).mean(dim=1), (ae - student[:, c:]).pow(2).mean(dim=1)

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "EfficientAD":
        if any(r.is_anomalous for r in [*records, *validation]):
            raise ValueError("efficientad.fit takes normal train and validation images only, got anomalous ones")
        if not records:
            raise ValueError("efficientad.fit needs at least one normal training image")
        if not validation:
            raise ValueError("efficientad normalises its maps with quantiles over validation normal images, and got none; "
                             "give the split normal images in val (split.ratios.val, split.mvtec.train_fraction)")
        device = resolve_device(self.device, "efficientad.device")
        teacher = self._networks()[0]
        self.teacher_facts_ = self._load_teacher(teacher)
        self.teacher_ = teacher.to(device).eval().requires_grad_(False)
        train = self._read(records, "images (train)").to(device)
        val = self._read(validation, "images (val)").to(device)
        with torch.no_grad():
            outputs = [self.teacher_(normalise_input(train[i : i + 16])) for i in range(0, len(train), 16)]
        self.teacher_mean_, self.teacher_std_ = channel_statistics(outputs)
        categories = sorted({r.category for r in records})
        pool = PenaltyPool.build(self.penalty_images, categories, self.image_size, self.seed)
        start, history, running = time.perf_counter(), [], {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the student's and autoencoder's initial weights, dropout, jitter
            generator = torch.Generator().manual_seed(self.seed)
            _, student, ae = self._networks()
            student, ae = student.to(device).train(), ae.to(device).train()
            optimiser = torch.optim.Adam(chain(student.parameters(), ae.parameters()), lr=self.learning_rate, weight_decay=self.weight_decay)
            decay = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, int(self.lr_decay_at * self.steps)), gamma=0.1)
            c = self.channels
            for step in tqdm(range(1, self.steps + 1), desc="efficientad training", disable=not self.progress, leave=False):
                batch = train[torch.randint(len(train), (self.train_batch,), generator=generator).to(device)]
                jittered = colour_jitter(batch.cpu(), generator).to(device)
                penalty = pool.sample(self.train_batch, generator).to(device)
                target, target_ae = self._teacher_out(batch), self._teacher_out(jittered)
                loss_hard = hard_feature_loss((target - student(normalise_input(batch))[:, :c]).pow(2), self.hard_quantile)
                loss_penalty = student(normalise_input(penalty))[:, :c].pow(2).mean()
                reconstruction = ae(normalise_input(jittered))
                loss_ae = (target_ae - reconstruction).pow(2).mean()
                loss_stae = (reconstruction - student(normalise_input(jittered))[:, c:]).pow(2).mean()
                loss = loss_hard + loss_penalty + loss_ae + loss_stae
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                decay.step()
                for name, value in (("loss", loss), ("hard", loss_hard), ("penalty", loss_penalty), ("ae", loss_ae), ("st_ae", loss_stae)):
                    running[name] = running.get(name, 0.0) + value.detach()  # no .item() per step: no device sync
                if step % max(1, self.steps // 20) == 0 or step == self.steps:
                    # the mean over the steps since the last entry: one batch-1 step's loss is too noisy to read convergence from
                    count = step - (history[-1]["step"] if history else 0)
                    history.append({"step": step, **{name: round(total.item() / count, 6) for name, total in running.items()}})
                    running = {}
        self.student_, self.ae_ = student.eval().requires_grad_(False), ae.eval().requires_grad_(False)
        local, global_ = self._maps_of(val)
        low, high = self.map_quantiles
        self.quantiles_ = {"local": map_quantiles(local, low, high), "global": map_quantiles(global_, low, high)}
        self.training_ = {"steps": self.steps, "seconds": round(time.perf_counter() - start, 3), "history": history,
                          "device": str(device), "n_train": len(records), "n_val_normals": len(validation)}
        self.penalty_pool_ = pool.description
        self.n_fit_images_ = len(records)
        self.to_cpu()
        return self

    def _maps_of(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self._raw_maps(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def to_cpu(self) -> None:
        for name in ("teacher_", "student_", "ae_"):
            setattr(self, name, getattr(self, name).cpu())
        self.teacher_mean_, self.teacher_std_ = self.teacher_mean_.cpu(), self.teacher_std_.cpu()

    # -- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def combined_maps(self, images: torch.Tensor) -> torch.Tensor:
        """0.5 × normalised local map + 0.5 × normalised global map, (B, h, w), unpadded."""
        local, global_ = self._raw_maps(images)
        return 0.5 * normalise_map(local, *self.quantiles_["local"]) + 0.5 * normalise_map(global_, *self.quantiles_["global"])

    @torch.no_grad()
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        if self.teacher_ is None:
            raise RuntimeError("efficientad.score called before fit/load")
        if not len(images):
            return Scores(np.zeros(0), np.zeros((0, self.output_size, self.output_size), dtype=np.float32))
        combined = self.combined_maps(self._prepare(images))
        scores = combined.amax(dim=(1, 2)).double().numpy()
        padded = F.pad(combined[:, None], (MAP_PADDING,) * 4)
        maps = F.interpolate(padded, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False)[:, 0]
        return Scores(scores, to_map_frame(maps.float().numpy(), [image.shape[:2] for image in images], self.resize))

    # -- persistence --------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> dict[str, Any]:
        state = {f"teacher.{k}": v for k, v in self.teacher_.state_dict().items()}
        state |= {f"student.{k}": v for k, v in self.student_.state_dict().items()}
        state |= {f"ae.{k}": v for k, v in self.ae_.state_dict().items()}
        state |= {"teacher_mean": self.teacher_mean_, "teacher_std": self.teacher_std_}
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / STATE_FILE))
        return {"scale": self.scale, "quantiles": self.quantiles_, "training": self.training_, "teacher": self.teacher_facts_,
                "penalty_pool": self.penalty_pool_, "n_fit_images": self.n_fit_images_}

    def _load_state(self, folder: Path) -> None:
        meta = read_json(folder / "meta.json")
        state = load_file(str(folder / STATE_FILE))
        teacher, student, ae = self._networks()
        for prefix, module in (("teacher.", teacher), ("student.", student), ("ae.", ae)):
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
        self.teacher_, self.student_, self.ae_ = (m.eval().requires_grad_(False) for m in (teacher, student, ae))
        self.teacher_mean_, self.teacher_std_ = state["teacher_mean"], state["teacher_std"]
        self.quantiles_ = {k: tuple(v) for k, v in meta["quantiles"].items()}
        self.training_, self.teacher_facts_, self.penalty_pool_ = meta["training"], meta["teacher"], meta["penalty_pool"]
        self.n_fit_images_ = meta["n_fit_images"]
