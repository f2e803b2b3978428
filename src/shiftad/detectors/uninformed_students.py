"""Uninformed Students (Bergmann et al., CVPR 2020): student–teacher anomaly detection with
discriminative latent embeddings.

The teachers (one patch network per patch size) come from the `distill-teacher` stage
(`results/teachers/uninformed_students/`). Fitting: each teacher's dense output is normalised
per dimension over the category's train images; M students per patch size, independently
initialised, regress it (MSE, every pixel, flips); then, on validation normal images, the mean
and standard deviation of the regression error e = ||mean_k S_k − T̂||² and of the predictive
variance v = (1/M) Σ_k ||S_k − mean_k S_k||² over all their pixels. Scoring: ẽ + ṽ (each
standardised with those), averaged over the patch sizes; image score = its maximum. The mean ṽ
is returned as the `uncertainty` map beside the anomaly map.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from shiftad.backbones import resolve_device, to_tensor_batch
from shiftad.components.maps import to_map_frame
from shiftad.components.patch_nets import PatchNet, student_scores
from shiftad.components.pdn import channel_statistics, normalise_input
from shiftad.data.records import ImageRecord
from shiftad.detectors.base import Detector, Scores, iter_image_batches
from shiftad.errors import ShiftadError
from shiftad.io import read_json
from shiftad.params import Params
from shiftad.paths import teacher_dir

STATE_FILE = "uninformed_students.safetensors"
TEACHER_WEIGHTS, TEACHER_FACTS = "teacher.safetensors", "teacher.json"
DETECTOR = "uninformed_students"


class TeacherError(ShiftadError):
    """The teacher folder is missing or made for other params."""


TEACHER_CACHE_BYTES = 1 << 30  # the frozen teacher's outputs kept for the next students (1 GB at most)


class _TeacherTargets:
    """The frozen teacher's output per (training images, flips), kept while it fits in
    `budget` bytes: the M students of a patch size train on the same images with the same four
    flips, so from the second student on the teacher need not run again (the same input gives
    the same output, so training is unchanged)."""

    def __init__(self, budget: int) -> None:
        self.budget, self.used, self.kept = budget, 0, {}

    def get(self, key: tuple, compute) -> torch.Tensor:
        target = self.kept.get(key)
        if target is None:
            target = compute()
            size = target.numel() * target.element_size()
            if self.used + size <= self.budget:
                self.kept[key], self.used = target, self.used + size
        return target


class UninformedStudents(Detector):
    name = DETECTOR

    def __init__(
        self,
        teacher: str = str(teacher_dir(DETECTOR)),
        scale: str = "smoke",
        patch_sizes: Sequence[int] = (17,),
        image_size: int = 64,
        output_size: int = 256,
        resize: str = "squash",
        width: float = 0.125,
        descriptor_dim: int = 64,
        students: int = 3,
        epochs: int = 3,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-5,
        train_batch: int = 1,
        device: str = "auto",
        batch_size: int = 8,
        seed: int = 0,
    ) -> None:
        if students < 2:
            raise ValueError("uninformed_students needs at least 2 students (their variance is part of the score)")
        self.teacher = teacher
        self.scale = scale
        self.patch_sizes = [int(p) for p in patch_sizes]
        self.image_size = image_size
        self.output_size = output_size
        self.resize = resize
        self.width = width
        self.descriptor_dim = descriptor_dim
        self.students = students
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.train_batch = train_batch
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.teachers_: dict[int, PatchNet] | None = None

    @classmethod
    def from_params(cls, params: Params) -> "UninformedStudents":
        p = params.uninformed_students
        return cls(teacher=str(teacher_dir(DETECTOR)), scale=p.scale, patch_sizes=p.arch.patch_sizes, image_size=p.arch.image_size,
                   output_size=params.image_size, resize=params.resize, width=p.arch.width, descriptor_dim=p.arch.descriptor_dim, students=p.students,
                   epochs=p.train.epochs, learning_rate=p.train.learning_rate, weight_decay=p.train.weight_decay,
                   train_batch=p.train.batch_size, device=p.device, batch_size=p.scoring_batch, seed=params.seed)

    # -- networks -----------------------------------------------------------------------------
    def _network(self, patch: int) -> PatchNet:
        return PatchNet(patch, self.descriptor_dim, self.width)

    def _load_teachers(self) -> tuple[dict[int, PatchNet], dict[str, Any]]:
        folder = Path(self.teacher)
        weights, facts_file = folder / TEACHER_WEIGHTS, folder / TEACHER_FACTS
        if not weights.is_file() or not facts_file.is_file():
            raise TeacherError(f"{folder}: no Uninformed Students teacher there; run `shiftad distill-teacher --detector {DETECTOR}` "
                               "(snakemake runs it before fitting)")
        facts = read_json(facts_file)
        wanted = {"descriptor_dim": self.descriptor_dim, "width": self.width, "image_size": self.image_size}
        made = {k: facts.get(k) for k in wanted}
        missing = [p for p in self.patch_sizes if p not in facts.get("patch_sizes", [])]
        if made != wanted or missing:
            raise TeacherError(f"{folder}: the teachers were made for {made}, patch sizes {facts.get('patch_sizes')}; these params want "
                               f"{wanted}, patch sizes {self.patch_sizes}; rerun `shiftad distill-teacher --detector {DETECTOR}`")
        state = load_file(str(weights))
        teachers = {}
        for patch in self.patch_sizes:
            net = self._network(patch)
            prefix = f"p{patch}."
            try:
                net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
            except RuntimeError as exc:
                raise TeacherError(f"{weights}: does not fit the {patch}-px patch network ({str(exc).splitlines()[0]})") from None
            teachers[patch] = net.eval().requires_grad_(False)
        return teachers, facts

    def _prepare(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        return normalise_input(to_tensor_batch(images, self.image_size, self.resize))

    def _read(self, records: Sequence[ImageRecord], desc: str) -> torch.Tensor:
        parts = [self._prepare(batch) for batch in tqdm(iter_image_batches(records, 32), desc=desc, disable=not self.progress, leave=False)]
        return torch.cat(parts) if parts else torch.zeros(0, 3, self.image_size, self.image_size)

    @torch.no_grad()
    def _teacher_out(self, patch: int, images: torch.Tensor) -> torch.Tensor:
        """The normalised teacher output T̂, (B, d, H, W)."""
        return (self.teachers_[patch].dense(images) - self.teacher_mean_[patch]) / self.teacher_std_[patch]

    @torch.no_grad()
    def raw_scores(self, patch: int, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Regression error e and predictive variance v of one patch size, (B, H, W) each, unstandardised."""
        outputs = torch.stack([student.dense(images) for student in self.students_[patch]])
        return student_scores(outputs, self._teacher_out(patch, images))

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, records: Sequence[ImageRecord], validation: Sequence[ImageRecord] = ()) -> "UninformedStudents":
        if any(r.is_anomalous for r in [*records, *validation]):
            raise ValueError("uninformed_students.fit takes normal train and validation images only, got anomalous ones")
        if not records:
            raise ValueError("uninformed_students.fit needs at least one normal training image")
        if not validation:
            raise ValueError("uninformed_students standardises e and v with their statistics over validation normal images, and got none; "
                             "give the split normal images in val (split.ratios.val, split.mvtec.train_fraction)")
        device = resolve_device(self.device, "uninformed_students.device")
        teachers, self.teacher_facts_ = self._load_teachers()
        self.teachers_ = {p: t.to(device) for p, t in teachers.items()}
        train = self._read(records, "images (train)").to(device)
        val = self._read(validation, "images (val)").to(device)
        self.teacher_mean_, self.teacher_std_ = {}, {}
        for patch, teacher in self.teachers_.items():
            with torch.no_grad():
                outputs = [teacher.dense(train[i : i + self.batch_size]) for i in range(0, len(train), self.batch_size)]
            self.teacher_mean_[patch], self.teacher_std_[patch] = channel_statistics(outputs)
        start, history = time.perf_counter(), {}
        self.students_ = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # the students' initial weights: independent draws, one after another
            generator = torch.Generator().manual_seed(self.seed)
            for patch in self.patch_sizes:
                ensemble, targets = [], _TeacherTargets(TEACHER_CACHE_BYTES)
                for k in range(self.students):
                    student = self._network(patch).to(device).train()
                    history[f"p{patch}_s{k}"] = self._train_student(patch, student, train, generator, targets)
                    ensemble.append(student.eval().requires_grad_(False))
                self.students_[patch] = ensemble
        self.standardisation_ = {}
        for patch in self.patch_sizes:
            parts = [self.raw_scores(patch, val[i : i + self.batch_size]) for i in range(0, len(val), self.batch_size)]
            e, v = torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts]).double()
            self.standardisation_[patch] = {"e_mean": e.mean().item(), "e_std": max(e.std().item(), 1e-12),
                                            "v_mean": v.mean().item(), "v_std": max(v.std().item(), 1e-12)}
        self.training_ = {"epochs": self.epochs, "seconds": round(time.perf_counter() - start, 3), "history": history,
                          "device": str(device), "n_train": len(records), "n_val_normals": len(validation)}
        self.n_fit_images_ = len(records)
        self._to(torch.device("cpu"))
        return self

    def _train_student(self, patch: int, student: PatchNet, train: torch.Tensor, generator: torch.Generator,
                       targets: "_TeacherTargets | None" = None) -> list[dict[str, float]]:
        optimiser = torch.optim.Adam(student.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        history = []
        for epoch in tqdm(range(1, self.epochs + 1), desc=f"student ({patch} px)", disable=not self.progress, leave=False):
            order, total, steps = torch.randperm(len(train), generator=generator), 0.0, 0
            for start in range(0, len(train), self.train_batch):
                members = order[start : start + self.train_batch]
                batch = train[members.to(train.device)]
                flips = torch.rand(2, generator=generator)
                if flips[0] < 0.5:
                    batch = batch.flip(3)
                if flips[1] < 0.5:
                    batch = batch.flip(2)
                key = (tuple(members.tolist()), bool(flips[0] < 0.5), bool(flips[1] < 0.5))
                target = targets.get(key, lambda: self._teacher_out(patch, batch)) if targets is not None else self._teacher_out(patch, batch)
                loss = F.mse_loss(student.dense(batch), target)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                total, steps = total + loss.item(), steps + 1
            history.append({"epoch": epoch, "loss": round(total / steps, 6)})
        return history

    def _to(self, device: torch.device) -> None:
        self.teachers_ = {p: t.to(device) for p, t in self.teachers_.items()}
        self.students_ = {p: [s.to(device) for s in ensemble] for p, ensemble in self.students_.items()}
        self.teacher_mean_ = {p: m.to(device) for p, m in self.teacher_mean_.items()}
        self.teacher_std_ = {p: s.to(device) for p, s in self.teacher_std_.items()}

    # -- scoring ------------------------------------------------------------------------------
    @torch.no_grad()
    def score_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly map (ẽ + ṽ) and uncertainty map (ṽ), each averaged over the patch sizes, (B, H, W)."""
        anomaly = torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
        uncertainty = torch.zeros_like(anomaly)
        for patch in self.patch_sizes:
            e, v = self.raw_scores(patch, images)
            s = self.standardisation_[patch]
            e_std, v_std = (e - s["e_mean"]) / s["e_std"], (v - s["v_mean"]) / s["v_std"]
            anomaly += e_std + v_std
            uncertainty += v_std
        return anomaly / len(self.patch_sizes), uncertainty / len(self.patch_sizes)

    @torch.no_grad()
    def score_images(self, images: Sequence[np.ndarray], category: str | None = None) -> Scores:
        if self.teachers_ is None:
            raise RuntimeError("uninformed_students.score called before fit/load")
        if not len(images):
            empty = np.zeros((0, self.output_size, self.output_size), dtype=np.float32)
            return Scores(np.zeros(0), empty, extra_maps={"uncertainty": empty})
        device = resolve_device(self.device, "uninformed_students.device")
        if self.teacher_mean_[self.patch_sizes[0]].device != device:
            self._to(device)
        anomaly, uncertainty = (m.cpu() for m in self.score_maps(self._prepare(images).to(device)))
        scores = anomaly.amax(dim=(1, 2)).double().numpy()
        size = (self.output_size, self.output_size)
        resized = F.interpolate(torch.stack([anomaly, uncertainty], dim=1), size=size, mode="bilinear", align_corners=False)
        shapes = [image.shape[:2] for image in images]
        maps, uncertainty_maps = (to_map_frame(resized[:, i].float().numpy(), shapes, self.resize) for i in (0, 1))
        return Scores(scores, maps, extra_maps={"uncertainty": uncertainty_maps})

    # -- persistence --------------------------------------------------------------------------
    def _save_state(self, folder: Path) -> dict[str, Any]:
        state: dict[str, torch.Tensor] = {}
        for patch in self.patch_sizes:
            state |= {f"teacher.p{patch}.{k}": v for k, v in self.teachers_[patch].state_dict().items()}
            for k, student in enumerate(self.students_[patch]):
                state |= {f"student{k}.p{patch}.{key}": v for key, v in student.state_dict().items()}
            state[f"teacher_mean.p{patch}"], state[f"teacher_std.p{patch}"] = self.teacher_mean_[patch], self.teacher_std_[patch]
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / STATE_FILE))
        return {"scale": self.scale, "standardisation": {str(p): s for p, s in self.standardisation_.items()},
                "training": self.training_, "teacher": self.teacher_facts_, "n_fit_images": self.n_fit_images_}

    def _load_state(self, folder: Path) -> None:
        meta = read_json(folder / "meta.json")
        state = load_file(str(folder / STATE_FILE))

        def module(prefix: str, patch: int) -> PatchNet:
            net = self._network(patch)
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
            return net.eval().requires_grad_(False)

        self.teachers_ = {p: module(f"teacher.p{p}.", p) for p in self.patch_sizes}
        self.students_ = {p: [module(f"student{k}.p{p}.", p) for k in range(self.students)] for p in self.patch_sizes}
        self.teacher_mean_ = {p: state[f"teacher_mean.p{p}"] for p in self.patch_sizes}
        self.teacher_std_ = {p: state[f"teacher_std.p{p}"] for p in self.patch_sizes}
        self.standardisation_ = {int(p): s for p, s in meta["standardisation"].items()}
        self.training_, self.teacher_facts_, self.n_fit_images_ = meta["training"], meta["teacher"], meta["n_fit_images"]
