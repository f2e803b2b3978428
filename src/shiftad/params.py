"""The params schema: one validated config for Snakemake, DVC and the CLI.

`load_params(paths)` deep-merges YAML files in order (later files override earlier ones,
as Snakemake's `--configfile` does) and validates the result. Every error names the file
and the dotted key, e.g. ``params.yaml: patchcore.coreset_ratio: must be <= 1``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from shiftad.errors import ParamsError

DEFAULT_PARAMS = Path("params.yaml")

MVTEC_URL = (
    "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/download/"
    "420938113-1629960298/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticParams(Section):
    image_size: int = Field(256, ge=32, le=1024)
    train_good: int = Field(50, ge=5)
    test_good: int = Field(20, ge=2)
    test_per_defect: int = Field(8, ge=1)


class MVTecParams(Section):
    url: str = MVTEC_URL
    sha256: str = Field(MVTEC_SHA256, pattern=r"^[0-9a-f]{64}$")
    archive: str = "data/raw/mvtec_anomaly_detection.tar.xz"


class CsvParams(Section):
    file: str = "labels.csv"  # relative to dataset.root


LAYOUT_SOURCES = ("mvtec3d", "mvtec_loco", "mvtec_ad2", "visa", "kolektorsdd2")  # read in place: data/layouts.py
USER_DATA_SOURCES = ("folder", "csv", *LAYOUT_SOURCES)  # the user's own folder, never written to


class DatasetParams(Section):
    source: Literal["synthetic", "mvtec", "folder", "csv", "mvtec3d", "mvtec_loco", "mvtec_ad2", "visa", "kolektorsdd2"] = "synthetic"
    # synthetic: where the set is generated; mvtec: where the archive is extracted (or MVTec-layout
    # data lies); folder / csv: the user's data folder (CSV paths are relative to it); the public
    # benchmarks' own layouts (data/layouts.py): their extracted folder.
    root: str = "data/raw/synthetic"
    synthetic: SyntheticParams = SyntheticParams()
    mvtec: MVTecParams = MVTecParams()
    csv: CsvParams = CsvParams()


class MVTecSplitParams(Section):
    train_fraction: float = Field(0.8, gt=0, lt=1)
    val_anomaly_fraction: float = Field(0.3, ge=0, lt=1)


class RatioSplitParams(Section):
    train: float = Field(70, gt=0)
    val: float = Field(15, ge=0)
    test: float = Field(15, gt=0)

    @model_validator(mode="after")
    def _sum_to_100(self) -> "RatioSplitParams":
        total = self.train + self.val + self.test
        if abs(total - 100) > 1e-6:
            raise ValueError(f"train + val + test must sum to 100, got {total:g}")
        return self


class SplitParams(Section):
    policy: Literal["mvtec", "ratios"] = "mvtec"
    mvtec: MVTecSplitParams = MVTecSplitParams()
    ratios: RatioSplitParams = RatioSplitParams()


class BackboneParams(Section):
    name: str = "tf_efficientnet_lite0"
    # auto: offline package weights where one exists for `name`, else timm's download;
    # none: random init (only when asked for); any other value: a local weights file.
    weights: str = "auto"
    batch_size: int = Field(16, ge=1)
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where the frozen backbone runs (PatchCore, PaDiM, kNN, routed AE); auto = CUDA when present")
    mixed_precision: bool = Field(False, description="on CUDA, the frozen backbone under float16 autocast (features back in float32); ignored on CPU")
    normalisation: Literal["model", "imagenet"] = Field("model", description="input mean/std of the frozen backbone: the model config's (Lite0: 0.5/0.5) or ImageNet's (anomalib's)")


class PatchCoreParams(Section):
    # kept on real images' validation halves, where PaDiM moved to blocks.2 + blocks.6 (benchmarks/tune_defaults.py)
    layers: list[str] = Field(default_factory=lambda: ["blocks.2", "blocks.4"], min_length=1)
    neighbourhood: int = Field(3, ge=1, description="local aggregation window (pixels of the feature map)")
    coreset_ratio: float = Field(0.1, gt=0, le=1)
    projection_dim: int = Field(128, ge=1, description="random projection for coreset distances")
    image_score: Literal["max", "reweighted"] = "max"
    reweight_neighbours: int = Field(9, ge=1)
    map_sigma: float = Field(4.0, ge=0)
    knn_batch: int = Field(8192, ge=1)


class PaDiMParams(Section):
    layers: list[str] = Field(default_factory=lambda: ["blocks.2", "blocks.6"], min_length=1, description="timm feature stages, shallow to deep")
    n_features: int = Field(100, ge=1, description="random channel subset kept (<= the layers' channels: 360 for Lite0 blocks.2+blocks.6)")
    map_sigma: float = Field(4.0, ge=0)


class KNNParams(Section):
    """Few-shot patch kNN (AnomalyDINO's memory-bank design)."""

    backbone: str = Field("default", description="default = backbone.name; or a DINOv2 timm name, e.g. vit_small_patch14_dinov2.lvd142m")
    weights: str = Field("auto", description="for a non-default backbone: auto (download) | none | path/to/weights.safetensors")
    layers: list[str] = Field(default_factory=lambda: ["blocks.2", "blocks.4"], min_length=1, description="CNN layers (ViTs use their patch tokens)")
    neighbourhood: int = Field(3, ge=1)
    distance: Literal["euclidean", "cosine"] = "euclidean"
    k: int = Field(1, ge=1, description="neighbours averaged per patch")
    image_score: Literal["max", "top1pct"] = "max"
    coreset: Literal["none", "random", "greedy"] = "none"
    coreset_ratio: float = Field(1.0, gt=0, le=1)
    shots: int = Field(8, ge=0, description="normal train images per category in the bank (seeded draw); 0 = all")
    foreground_mask: Literal["auto", "on", "off"] = Field("auto", description="PCA foreground mask: auto = on for ViT tokens, off for CNN features")
    foreground_threshold: float = 10.0
    map_sigma: float = Field(4.0, ge=0)
    knn_batch: int = Field(8192, ge=1)


class RoutedAEParams(Section):
    """Classifier-routed feature autoencoders: a category router in front of one 1×1-conv
    autoencoder per category (per_class regime = oracle routing, global = predicted routing)."""

    layers: list[str] = Field(default_factory=lambda: ["blocks.2", "blocks.4"], min_length=2, max_length=2,
                              description="two mid-level stages (layer2 + layer3 on a ResNet)")
    neighbourhood: int = Field(3, ge=1, description="average pooling window on the feature map")
    hidden: int = Field(128, ge=1, description="channels of the autoencoder's hidden 1×1 layers")
    latent: int = Field(100, ge=1, description="bottleneck channels")
    epochs: int = Field(6, ge=1, description="most epochs; early stopping on validation normals ends sooner")
    patience: int = Field(2, ge=1, description="epochs without a better validation loss before stopping")
    learning_rate: float = Field(2e-3, gt=0)
    train_batch: int = Field(512, ge=2, description="feature positions per training step (the 1×1 autoencoder's samples)")
    top_k: int = Field(10, ge=1, description="image score = mean of the top_k positions of the error map")
    std_multiplier: float = Field(3.0, gt=0, description="thresholds.json beside the model: mean + k std of validation normal scores per category")
    router_c: float = Field(1.0, gt=0, description="inverse L2 strength of the router's logistic regression")
    map_sigma: float = Field(4.0, ge=0)


Scale = Literal["smoke", "cpu", "paper"]
SCALES: tuple[str, ...] = get_args(Scale)
SCALE_MEANING = {
    "smoke": "a test-sized run that checks the plumbing, not the method",
    "cpu": "a measured CPU budget (benchmarks/learning_curves.py), far from the paper's training",
    "paper": "the paper's setting (a GPU job)",
}


def _merge_scales(model: type[BaseModel], raw: Any, keys: tuple[str, ...]) -> Any:
    """Deep-merge the given sections of `raw` over the model's defaults (partial overrides)."""
    if not isinstance(raw, dict):
        return raw
    merged = dict(raw)
    for key in keys:
        if isinstance(raw.get(key), dict):
            field = model.model_fields[key]
            default = field.default_factory() if field.default_factory else field.default
            dumped = {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in default.items()} if isinstance(default, dict) else default.model_dump()
            merged[key] = deep_merge(dumped, raw[key])
    return merged


class EfficientADArchitecture(Section):
    image_size: int = Field(..., ge=64, le=1024, description="PDN input size (maps are resized to image_size afterwards)")
    width: float = Field(..., gt=0, le=4, description="multiplies every hidden channel count of the PDNs and the autoencoder (1 = the paper's)")
    channels: int = Field(..., ge=8, description="teacher output channels C (the student has 2C); 384 in the paper")


class EfficientADTraining(Section):
    steps: int = Field(..., ge=1)
    learning_rate: float = Field(..., gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    lr_decay_at: float = Field(0.95, gt=0, le=1, description="learning rate x0.1 after this share of the steps")
    batch_size: int = Field(1, ge=1, description="train images per step (1 in the paper)")


class TeacherTraining(Section):
    steps: int = Field(..., ge=1)
    batch_size: int = Field(..., ge=1)
    learning_rate: float = Field(..., gt=0)
    weight_decay: float = Field(1e-5, ge=0)


class TeacherParams(Section):
    """The PDN teacher: distilled here from the backbone (offline), or a weights file."""

    source: str = Field("distill", description="distill (the distill-teacher stage) | path/to/teacher.{pth,safetensors} (e.g. the official weights)")
    layers: list[str] = Field(default_factory=lambda: ["blocks.2", "blocks.4"], min_length=1,
                              description="backbone stages the teacher regresses (locally aware, channel-pooled to C)")
    neighbourhood: int = Field(3, ge=1)
    smoke: TeacherTraining = TeacherTraining(steps=80, batch_size=8, learning_rate=1e-3)
    cpu: TeacherTraining = TeacherTraining(steps=40, batch_size=8, learning_rate=1e-3)
    paper: TeacherTraining = TeacherTraining(steps=60000, batch_size=16, learning_rate=1e-4)

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, raw: Any) -> Any:
        """A partial scale section (`smoke: {steps: 10}`) overrides the defaults key by key."""
        return _merge_scales(cls, raw, SCALES)


class ScaledDetectorParams(Section):
    """A detector trained at one of the SCALES (smoke, cpu, paper): `architecture` and `training`
    hold every scale, partial overrides merge over the defaults key by key."""

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, raw: Any) -> Any:
        return _merge_scales(cls, raw, ("architecture", "training"))

    @model_validator(mode="after")
    def _every_scale(self) -> "ScaledDetectorParams":
        for key in ("architecture", "training"):
            missing = set(SCALES) - set(getattr(self, key))
            if missing:
                raise ValueError(f"{key}: needs every scale ({', '.join(SCALES)}), missing {sorted(missing)}")
        return self


class EfficientADParams(ScaledDetectorParams):
    """EfficientAD (S or M) at one of the SCALES: `cpu` (the default DAG's), `smoke` (tests) or
    `paper` (a GPU job)."""

    scale: Scale = "cpu"
    model_size: Literal["small", "medium"] = Field("small", description="PDN-S (EfficientAD-S) | PDN-M (EfficientAD-M)")
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="cpu (the default: the same numbers on every machine) | cuda | auto = CUDA when present")
    penalty_images: str = Field("default", description="default (scikit-image photos + procedural images, never the fitted categories) | path/to/folder (ImageNet, Imagenette)")
    hard_quantile: float = Field(0.999, gt=0, lt=1, description="hard feature loss: mean of the differences at or above this quantile")
    map_quantiles: list[float] = Field(default_factory=lambda: [0.9, 0.995], min_length=2, max_length=2,
                                       description="validation-map quantiles mapped to 0 and 0.1")
    architecture: dict[Scale, EfficientADArchitecture] = Field(default_factory=lambda: {
        "smoke": EfficientADArchitecture(image_size=128, width=0.25, channels=64),
        "cpu": EfficientADArchitecture(image_size=192, width=0.125, channels=64),
        "paper": EfficientADArchitecture(image_size=256, width=1.0, channels=384)})
    training: dict[Scale, EfficientADTraining] = Field(default_factory=lambda: {
        "smoke": EfficientADTraining(steps=150, learning_rate=1e-3),
        "cpu": EfficientADTraining(steps=200, learning_rate=1e-3),
        "paper": EfficientADTraining(steps=70000, learning_rate=1e-4)})
    teacher: TeacherParams = TeacherParams()
    scoring_batch: int = Field(8, ge=1, description="images per forward pass when scoring")


    @field_validator("map_quantiles")
    @classmethod
    def _ordered(cls, values: list[float]) -> list[float]:
        if not 0 < values[0] < values[1] < 1:
            raise ValueError(f"need 0 < low < high < 1, got {values}")
        return values

    @property
    def arch(self) -> EfficientADArchitecture:
        return self.architecture[self.scale]

    @property
    def train(self) -> EfficientADTraining:
        return self.training[self.scale]

    @property
    def teacher_training(self) -> TeacherTraining:
        return getattr(self.teacher, self.scale)


PatchSize = Literal[17, 33, 65]


class USArchitecture(Section):
    patch_sizes: list[PatchSize] = Field(..., min_length=1, description="one teacher + M students per patch size; scores averaged over them")
    image_size: int = Field(..., ge=32, le=1024, description="the networks' input size (maps are resized to image_size afterwards)")
    width: float = Field(..., gt=0, le=4, description="multiplies the hidden channel counts (1 = the paper's 128/256)")
    descriptor_dim: int = Field(..., ge=2, description="d: the patch descriptor (128 in the paper)")

    @field_validator("patch_sizes")
    @classmethod
    def _unique(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values):
            raise ValueError(f"patch sizes repeat in {values}")
        return sorted(values)

    @model_validator(mode="after")
    def _patches_fit(self) -> "USArchitecture":
        # the teacher's rotated patches are cut from a square of ceil(p·√2) + 1 pixels
        largest = max(self.patch_sizes)
        if math.ceil(largest * math.sqrt(2)) + 1 > self.image_size:
            raise ValueError(f"patch size {largest} needs image_size >= {math.ceil(largest * math.sqrt(2)) + 1} (rotated patches)")
        return self


class USStudentTraining(Section):
    epochs: int = Field(..., ge=1, description="passes over the category's normal train images, one image per step")
    learning_rate: float = Field(..., gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(1, ge=1, description="train images per step (1 in the paper)")


class USTeacherTraining(Section):
    patches: int = Field(..., ge=64, description="augmented patches cut once from the distillation images (the teacher's epoch)")
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(64, ge=2, description="patches per step (the compactness loss correlates dimensions over the batch)")
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    backbone_input: int = Field(..., ge=32, description="each patch is resized to this before the backbone describes it")


class USTeacherParams(Section):
    """The teachers, distilled from the backbone's pooled descriptor of the same patch."""

    backbone: str = Field("default", description="default = backbone.name; or any timm / torchvision/<name> model, e.g. resnet18 (the paper's)")
    weights: str = Field("auto", description="for a non-default backbone: auto (download) | path/to/weights.{safetensors,pth}")
    layers: list[str] = Field(default_factory=lambda: ["blocks.5", "blocks.6"], min_length=1,
                              description="backbone stages, each average-pooled and concatenated: the descriptor decoded to (512 for Lite0 blocks.5 + blocks.6, ResNet-18 layer4)")
    compactness_weight: float = Field(1.0, ge=0, description="loss = distillation MSE + this x compactness")
    smoke: USTeacherTraining = USTeacherTraining(patches=4096, epochs=8, learning_rate=3e-3, backbone_input=64)
    cpu: USTeacherTraining = USTeacherTraining(patches=4096, epochs=8, learning_rate=3e-3, backbone_input=64)
    paper: USTeacherTraining = USTeacherTraining(patches=20000, epochs=200, learning_rate=2e-4, backbone_input=224)

    @model_validator(mode="before")
    @classmethod
    def _over_defaults(cls, raw: Any) -> Any:
        return _merge_scales(cls, raw, SCALES)


class UninformedStudentsParams(ScaledDetectorParams):
    """Uninformed Students (Bergmann et al., CVPR 2020) at one of the SCALES: `cpu` (the default
    DAG's), `smoke` (tests) or `paper` (a GPU job)."""

    scale: Scale = "cpu"
    device: Literal["auto", "cpu", "cuda"] = Field("cpu", description="cpu (the default: the same numbers on every machine) | cuda | auto = CUDA when present")
    students: int = Field(3, ge=2, description="M: students per patch size (their spread is the uncertainty)")
    architecture: dict[Scale, USArchitecture] = Field(default_factory=lambda: {
        "smoke": USArchitecture(patch_sizes=[17], image_size=64, width=0.125, descriptor_dim=64),
        "cpu": USArchitecture(patch_sizes=[17], image_size=64, width=0.125, descriptor_dim=64),
        "paper": USArchitecture(patch_sizes=[33], image_size=256, width=1.0, descriptor_dim=128)})
    training: dict[Scale, USStudentTraining] = Field(default_factory=lambda: {
        "smoke": USStudentTraining(epochs=3, learning_rate=1e-3),
        "cpu": USStudentTraining(epochs=3, learning_rate=1e-3),
        "paper": USStudentTraining(epochs=25, learning_rate=1e-4)})
    teacher: USTeacherParams = USTeacherParams()
    scoring_batch: int = Field(8, ge=1, description="images per forward pass when scoring")


    @property
    def arch(self) -> USArchitecture:
        return self.architecture[self.scale]

    @property
    def train(self) -> USStudentTraining:
        return self.training[self.scale]

    @property
    def teacher_training(self) -> USTeacherTraining:
        return getattr(self.teacher, self.scale)


PositiveK = Annotated[int, Field(ge=1)]
AdaptationK = Annotated[int, Field(ge=0)]


MEMORY_BANK_DETECTORS = ("patchcore", "knn")  # the detectors whose bank K-shot fits and few-shot adaptation extend
# the detectors the adaptation stage serves: the label-free adaptations (feature_align, adabn)
# need a frozen network's per-position features, which PaDiM's Gaussians read too
ADAPTABLE_DETECTORS = (*MEMORY_BANK_DETECTORS, "padim")


class FewShotParams(Section):
    """K-shot learning curves (clean) and the few-shot adaptation scenario (model: fewshot),
    for the memory-bank detectors."""

    detectors: list[Literal["patchcore", "knn"]] | None = Field(None, description="default: every memory-bank detector in `detectors`")
    adaptation_detectors: list[Literal["patchcore", "knn", "padim"]] | None = Field(
        None, description="the adaptation stage's detectors: fewshot for the memory-bank ones, feature_align and adabn for "
                          "PaDiM too (default: every one of them in `detectors`)")
    kshot: list[PositiveK] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1, description="training images per K-shot fit")
    kshot_seeds: int = Field(3, ge=1, description="draws of the K images per K (seeds 0..n-1 offset by the global seed)")
    coreset_ratios: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25], min_length=1,
                                                                       description="the memory-bank size trade-off (kshot stage, PatchCore)")
    adaptation_k: list[AdaptationK] = Field(default_factory=lambda: [0, 1, 2, 4, 8, 16], min_length=1,
                                            description="shifted normal train images added to the clean bank")

    @field_validator("kshot", "adaptation_k", "coreset_ratios", "detectors", "adaptation_detectors")
    @classmethod
    def _sorted_unique(cls, values: list | None) -> list | None:
        if values is None:
            return None
        if len(set(values)) != len(values):
            raise ValueError(f"values repeat in {values}")
        return sorted(values) if values and isinstance(values[0], (int, float)) else values


ShiftFamily = Literal["geometric", "photometric", "illumination"]


class ShiftParams(Section):
    severity: int = Field(3, ge=1, le=5, description="1..5 scales every range; 3 = the base ranges")
    families: list[ShiftFamily] = Field(default_factory=lambda: ["geometric", "photometric", "illumination"], min_length=1)
    illumination_probability: float = Field(0.5, ge=0, le=1)
    illumination_sigma_px: float = Field(80.0, gt=0, description="lighting transition width at 256 px (scaled with image size)")

    @field_validator("families")
    @classmethod
    def _no_repeats(cls, families: list[str]) -> list[str]:
        if len(set(families)) != len(families):
            raise ValueError(f"names repeat in {families}")
        return families


ThresholdRule = Literal["f1_max", "percentile", "mean_std"]
DetectorName = Literal["patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"]
DETECTOR_NAMES: tuple[str, ...] = get_args(DetectorName)


class ThresholdParams(Section):
    rule: ThresholdRule = "f1_max"
    # The few-shot kNN's own default (AnomalyDINO): the 95th percentile of validation normals;
    # the routed autoencoders': mean + 3 std of validation normals.
    detector_rules: dict[str, ThresholdRule] = Field(default_factory=lambda: {"knn": "percentile", "routed_ae": "mean_std"},
                                                     description="per-detector rule overriding `rule`")
    percentile: float = Field(95, gt=0, lt=100)
    std_multiplier: float = Field(3, gt=0)


CorruptionName = Literal["brightness", "contrast", "defocus_blur", "gaussian_noise"]
DomainRecipe = Literal["mvtec_shift", "camera_change", "corruption"]
DOMAIN_RECIPES: tuple[str, ...] = get_args(DomainRecipe)
CLEAN = "clean"  # the data set itself: always a domain, never in `domains`
# Adaptations of the clean memory-bank model to K normal train images of a shift domain, one
# run per K in few_shot.adaptation_k: fewshot = the K images' patches added to the bank;
# feature_align = the domain's patch features re-standardised per channel (mean, sd of the K
# images' patches) onto the clean train images' statistics; adabn = the frozen network's
# batch-norm statistics re-estimated on the K images (AdaBN). The last two are label-free: the
# normals need no labels and the bank is unchanged.
ADAPTATIONS = ("fewshot", "feature_align", "adabn")
TARGET = "target"  # a scenario template's placeholder: each shift domain in turn


class DomainParams(Section):
    """A shift domain: how its copy of every split is made from the clean images (shiftad.shift)."""

    # mvtec_shift: an independent random change per image (the `shift:` section's ranges);
    # camera_change: one change per category, shared by every image of every split, plus
    # per-image jitter; corruption: a published common corruption (imagecorruptions' values)
    recipe: DomainRecipe
    severity: int | None = Field(None, ge=1, le=5, description="1..5; default: shift.severity (mvtec_shift, camera_change), 3 (corruption)")
    families: list[ShiftFamily] | None = Field(None, min_length=1, description="default: shift.families (mvtec_shift, camera_change)")
    jitter: float = Field(0.2, ge=0, le=1, description="camera_change: every continuous setting moves this fraction of the way "
                                                       "toward an independent per-image draw")
    corruption: CorruptionName | None = Field(None, description="corruption: its name")

    @model_validator(mode="after")
    def _recipe_fields(self) -> "DomainParams":
        if self.recipe == "corruption" and self.corruption is None:
            raise ValueError("recipe corruption needs `corruption` (one of brightness, contrast, defocus_blur, gaussian_noise)")
        if self.recipe != "corruption" and self.corruption is not None:
            raise ValueError(f"`corruption` is for recipe corruption, not {self.recipe}")
        if self.recipe == "corruption" and self.families is not None:
            raise ValueError("`families` is for recipes mvtec_shift and camera_change, not corruption")
        return self


DomainName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class RefitParams(Section):
    """The shift domains models are fitted on besides clean, and the detectors that are."""

    domains: list[str] = Field(default_factory=lambda: ["camera_change"],
                               description="shift domains whose train images the detectors are fitted on too (the refit scenario, the "
                                           "cross-shift matrix's rows); the other domains are evaluated only")
    detectors: list[DetectorName] | None = Field(None, description="the detectors fitted on them (default: every one in `detectors`)")

    @field_validator("domains", "detectors")
    @classmethod
    def _once_each(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"names repeat in {values}")
        return values


def default_domains() -> dict[str, "DomainParams"]:
    return {"mvtec_shift": DomainParams(recipe="mvtec_shift"), "camera_change": DomainParams(recipe="camera_change")}


class ScenarioParams(Section):
    # A domain name (clean or a key of `domains`), or `target`: the template becomes one
    # scenario per shift domain (<domain>_<name>; with model: target, per domain in
    # refit.domains). model fewshot / feature_align: the clean model adapted to K normal train
    # images of the target domain (ADAPTATIONS), one run per K in few_shot.adaptation_k
    # (memory-bank detectors only).
    model: str = CLEAN
    threshold: str = CLEAN
    test: str = CLEAN
    targets: list[str] | None = Field(None, min_length=1, description="the shift domains `target` stands for (default: every one)")
    k: list[AdaptationK] | None = Field(None, min_length=1, description="an adaptation's K values (default: few_shot.adaptation_k)")
    detectors: list[DetectorName] | None = Field(None, min_length=1, description="the detectors it runs for, of those it applies to "
                                                                                 "(default: every one; adaptations: those `Params.adapts`)")


@dataclass(frozen=True)
class ScenarioRun:
    """One concrete scenario: a params scenario for one target domain, or one K of a fewshot one."""

    name: str  # <domain>_<template> (or the template name when it names its domains), + _k<K> for a fewshot run
    group: str  # the run without its K: the fewshot runs of one domain share it
    model: str  # a domain name or an adaptation (fewshot, feature_align)
    threshold: str
    test: str
    k: int | None = None  # target-domain normals the clean model adapts to (adaptations only)
    template: str = ""  # the params scenario name
    domain: str | None = None  # the shift domain the template was expanded for (None: no target)

    @property
    def model_key(self) -> str:
        """The score files' model name: a domain, or <adaptation>_k<K>. K = 0 is the clean model
        itself (adapting to no image is no adaptation): the score stage's files, not recomputed."""
        if self.model not in ADAPTATIONS:
            return self.model
        return CLEAN if self.k == 0 else f"{self.model}_k{self.k}"

    @property
    def test_scores(self) -> tuple[str, str]:
        """(model, test domain): what its test scores and maps depend on. Runs that share it (threshold
        only, no adaptation, K = 0) differ only in their threshold."""
        return self.model_key, self.test


# The study's scenarios, templates over the shift domains: which model, which threshold, which test set
# (params.yaml limits the adaptations to some domains and detectors, for the DAG's time budget).
DEFAULT_SCENARIOS = {
    "clean": ScenarioParams(model=CLEAN, threshold=CLEAN, test=CLEAN),
    "no_adaptation": ScenarioParams(model=CLEAN, threshold=CLEAN, test=TARGET),
    "threshold_only": ScenarioParams(model=CLEAN, threshold=TARGET, test=TARGET),
    "refit": ScenarioParams(model=TARGET, threshold=TARGET, test=TARGET),
    "fewshot": ScenarioParams(model="fewshot", threshold=TARGET, test=TARGET),
    "feature_align": ScenarioParams(model="feature_align", threshold=TARGET, test=TARGET),
    "adabn": ScenarioParams(model="adabn", threshold=TARGET, test=TARGET),
}


class EvaluationParams(Section):
    threshold: ThresholdParams = ThresholdParams()
    aupro_fpr_limit: float = Field(0.3, gt=0, le=1)
    heatmaps: bool = True


class RobustnessParams(Section):
    """The severity sweep: test images shifted by one family (or one published corruption) at a
    time, scored by the clean per-class models (no adaptation), for robustness curves against
    severity and the corruption protocol's numbers."""

    detectors: list[DetectorName] | None = Field(None, description="the detectors swept (default: every one in `detectors`)")
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [3, 5])
    families: list[ShiftFamily] = Field(default_factory=lambda: ["geometric", "photometric", "illumination"])
    # the published corruption protocol (ADShift, MVTec-C): each corruption at each of its severities
    corruptions: list[CorruptionName] = Field(default_factory=lambda: ["brightness", "contrast", "defocus_blur", "gaussian_noise"])
    corruption_severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [3])

    @field_validator("detectors", "severities", "families", "corruptions", "corruption_severities")
    @classmethod
    def _no_repeats(cls, values: list | None) -> list | None:
        if values is not None and len(set(values)) != len(values):
            raise ValueError(f"values repeat in {values}")
        return values


class StatisticsParams(Section):
    n_resamples: int = Field(1000, ge=100, description="bootstrap resamples of the test images (stratified)")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    size_edges: list[float] = Field(
        default_factory=lambda: [0.005, 0.02], min_length=2, max_length=2,
        description="defect area as a fraction of the image: small < edge 1 <= medium < edge 2 <= large",
    )
    top_errors: int = Field(5, ge=1, description="false positives and false negatives listed per run and category")

    @field_validator("size_edges")
    @classmethod
    def _increasing(cls, edges: list[float]) -> list[float]:
        if not 0 < edges[0] < edges[1] < 1:
            raise ValueError(f"need 0 < small edge < large edge < 1, got {edges}")
        return edges


class ReportParams(Section):
    gallery_images: int = Field(6, ge=1, description="test images per category in the figure galleries (the HTML page shows all)")
    pdf: bool = Field(True, description="save every figure as PDF beside the PNG")


class FeaturesParams(Section):
    """The features stage: each frozen network's outputs for every image, computed once."""

    dtype: Literal["float32", "float16"] = Field("float32", description="stored precision: float32 = exactly what the network computed; float16 = half the disk, outputs rounded")


class ExportParams(Section):
    """Model bundles (`shiftad export`): one per fitted model, for `shiftad predict` and `shiftad serve`."""

    onnx: bool = Field(True, description="also export the frozen feature network to ONNX (dynamic batch), checked against torch")
    onnx_opset: int = Field(17, ge=13, le=23)
    onnx_tolerance: float = Field(1e-4, gt=0, description="largest |ONNX Runtime - torch| feature difference, relative to the feature scale (max |torch|), accepted at export")
    parity_images: int = Field(4, ge=1, description="validation images per bundle the ONNX parity check runs on")


# The DAG's rules (one per stage), for per-rule resources.
RULE_NAMES: tuple[str, ...] = ("data", "split", "shift", "features", "distill_teacher", "fit", "score", "fewshot",
                              "kshot", "evaluate", "robustness", "statistics", "notebooks", "report", "export")
GPU_RULES: tuple[str, ...] = ("features", "distill_teacher", "fit", "score", "fewshot", "kshot", "robustness")  # train or extract features


class RuleResources(Section):
    """One rule's overrides of the defaults in `resources` (and of `threads`)."""

    threads: int | None = Field(None, ge=1)
    mem_mb: int | None = Field(None, ge=1)
    runtime: int | None = Field(None, ge=1, description="minutes")
    gpu: int | None = Field(None, ge=0)


class ResourcesParams(Section):
    """What each job asks a scheduler for (Snakemake `resources`; used by profiles/slurm and
    profiles/kubernetes, and by `--resources` limits on one machine)."""

    mem_mb: int = Field(4096, ge=1, description="memory per job (MB)")
    runtime: int = Field(60, ge=1, description="wall time per job (minutes)")
    gpu: int = Field(0, ge=0, description="GPUs per job of the rules that train or extract features (GPU_RULES)")
    gpu_model: str | None = Field(None, description="SLURM: the GPU model to ask for (e.g. a100); null = any")
    gpu_manufacturer: Literal["nvidia", "amd"] | None = Field(None, description="Kubernetes: nvidia or amd, required there with gpu > 0 (SLURM ignores it)")
    rules: dict[str, RuleResources] = Field(default_factory=dict, description="per-rule overrides")

    @model_validator(mode="after")
    def _known_rules(self) -> "ResourcesParams":
        for name, rule in self.rules.items():
            if name not in RULE_NAMES:
                raise ValueError(f"rules.{name}: no such rule; the rules are {', '.join(RULE_NAMES)}")
            if rule.gpu and name not in GPU_RULES:
                raise ValueError(f"rules.{name}.gpu: {name} runs no model; GPUs go to {', '.join(GPU_RULES)}")
        return self


CategoryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]


class Params(Section):
    seed: int = Field(0, ge=0, description="data: generation, splits, shift, K-shot and few-shot draws, bootstrap")
    # Training seeds: every fit, and the scores and metrics that follow from it, runs once per
    # seed (a DAG wildcard). The first is the reference run: its scores give the bootstrap CIs,
    # predictions, heatmaps, robustness sweep and bundles; the others give the across-seed spread.
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    # The categories the DAG fans out over. synthetic: the ones generated; mvtec: the ones
    # extracted; folder: exactly one (its name); csv: the values of its `category` column
    # (or one name when it has none). The data stage checks the data holds exactly these.
    categories: list[CategoryName] = Field(default_factory=lambda: ["brick", "gravel", "widget"], min_length=1)
    image_size: int = Field(256, ge=32, le=1024, description="model input size (square)")
    # How a non-square image becomes the square input (shiftad.geometry): squash (stretch the
    # whole image), pad (letterbox, aspect kept; maps cut back to the content) or center_crop
    # (the centred square only). Masks, maps and overlays follow the same transform.
    resize: Literal["squash", "pad", "center_crop"] = "squash"
    dataset: DatasetParams = DatasetParams()
    split: SplitParams = SplitParams()
    backbone: BackboneParams = BackboneParams()
    detectors: list[DetectorName] = Field(default_factory=lambda: ["patchcore", "padim", "knn", "routed_ae", "efficientad", "uninformed_students"], min_length=1)
    patchcore: PatchCoreParams = PatchCoreParams()
    padim: PaDiMParams = PaDiMParams()
    knn: KNNParams = KNNParams()
    routed_ae: RoutedAEParams = RoutedAEParams()
    efficientad: EfficientADParams = EfficientADParams()
    uninformed_students: UninformedStudentsParams = UninformedStudentsParams()
    few_shot: FewShotParams = FewShotParams()
    shift: ShiftParams = ShiftParams()
    # The shift domains by name (clean, the data set itself, is always there): each a recipe
    # for a copy of every split (data/domains/<name>/). Models are fitted on clean and on the
    # domains of refit.domains (the detectors of refit.detectors); every model scores the val
    # and test images of every domain a scenario or the cross-shift matrix names.
    domains: dict[DomainName, DomainParams] = Field(default_factory=default_domains, min_length=1)
    refit: RefitParams = RefitParams()
    scenarios: dict[str, ScenarioParams] = Field(default_factory=lambda: dict(DEFAULT_SCENARIOS), min_length=1)
    evaluation: EvaluationParams = EvaluationParams()
    robustness: RobustnessParams = RobustnessParams()
    statistics: StatisticsParams = StatisticsParams()
    report: ReportParams = ReportParams()
    export: ExportParams = ExportParams()
    features: FeaturesParams = FeaturesParams()
    threads: int = Field(2, ge=1, description="CPU threads per job (resources.rules.<rule>.threads overrides it per rule)")
    # per_regime: one fit job per detector, regime, domain and seed fits every category's model in
    # turn (each job pays its fixed cost, ~8 s of imports, once); per_model: one job per model, so
    # a cluster fits the categories side by side. The models and their folders are the same.
    fit_jobs: Literal["per_regime", "per_model"] = "per_regime"
    resources: ResourcesParams = ResourcesParams()

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, raw: Any) -> Any:
        """`domains: {brightness: null}` (or a scenario set to null) drops that entry: an override
        file merges into params.yaml key by key, so null is how it removes one."""
        if isinstance(raw, dict):
            for key in ("domains", "scenarios"):
                if isinstance(raw.get(key), dict):
                    raw = {**raw, key: {k: v for k, v in raw[key].items() if v is not None}}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _few_shot_defaults(cls, raw: Any) -> Any:
        """few_shot.detectors defaults to the memory-bank detectors among `detectors`,
        few_shot.adaptation_detectors to the adaptable ones, refit.detectors and
        robustness.detectors to every detector."""
        if isinstance(raw, dict):
            if "fit_domains" in raw:
                raise ValueError("fit_domains: replaced by `refit` (refit.domains: the shift domains models are fitted on "
                                 "besides clean, which is always fitted; refit.detectors: the detectors that are); "
                                 f"e.g. fit_domains {raw['fit_domains']} -> refit: {{domains: "
                                 f"{[d for d in raw['fit_domains'] or [] if d != CLEAN]}}}")
            detectors = raw.get("detectors", cls.model_fields["detectors"].default_factory())
            if isinstance(detectors, list):
                # (section, key): the detectors among `detectors` that a missing per-stage list defaults to
                for (section, key), kinds in {("few_shot", "detectors"): MEMORY_BANK_DETECTORS,
                                              ("few_shot", "adaptation_detectors"): ADAPTABLE_DETECTORS,
                                              ("refit", "detectors"): DETECTOR_NAMES,
                                              ("robustness", "detectors"): DETECTOR_NAMES}.items():
                    values = dict(raw.get(section) or {})
                    if values.get(key) is None:
                        raw = {**raw, section: {**values, key: [d for d in detectors if d in kinds]}}
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> "Params":
        if len(set(self.categories)) != len(self.categories):
            raise ValueError(f"categories: names repeat in {self.categories}")
        if "all" in self.categories:
            raise ValueError("categories: 'all' is reserved for the global model; rename that category")
        if self.dataset.source in ("folder", "kolektorsdd2") and len(self.categories) != 1:
            raise ValueError(f"categories: a {self.dataset.source} source holds one category; list exactly one name, got {self.categories}")
        if self.dataset.source in ("folder", "csv") and self.split.policy == "mvtec":
            raise ValueError(
                "split.policy: 'mvtec' needs the MVTec train/test layout; "
                f"use 'ratios' with dataset.source: {self.dataset.source}"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: seeds repeat in {self.seeds}")
        if len(set(self.detectors)) != len(self.detectors):
            raise ValueError(f"detectors: names repeat in {self.detectors}")
        unknown = set(self.evaluation.threshold.detector_rules) - set(DETECTOR_NAMES)
        if unknown:
            raise ValueError(f"evaluation.threshold.detector_rules: unknown detectors {sorted(unknown)}")
        # every per-stage detector list at once: an override that narrows `detectors` narrows them too
        lists = {"few_shot.detectors": self.few_shot.detectors, "few_shot.adaptation_detectors": self.few_shot.adaptation_detectors,
                 "refit.detectors": self.refit.detectors, "robustness.detectors": self.robustness.detectors}
        stray = {key: [d for d in listed or [] if d not in self.detectors] for key, listed in lists.items()}
        stray = {key: names for key, names in stray.items() if names}
        if stray:
            raise ValueError("; ".join(f"{key}: {names}" for key, names in stray.items())
                             + f" not in detectors {self.detectors}; add them there or drop them from "
                             + ("that list" if len(stray) == 1 else "those lists (each stage's detectors are some of `detectors`)"))
        for name, why in (("routed_ae", "stops early and sets its thresholds"), ("efficientad", "normalises its maps"),
                          ("uninformed_students", "standardises its scores")):
            if name in self.detectors and self.split.policy == "ratios" and self.split.ratios.val == 0:
                raise ValueError(f"split.ratios.val: {name} {why} on validation normal images; give val a share > 0")
        reserved = {CLEAN, TARGET, *ADAPTATIONS} & set(self.domains)
        if reserved:
            raise ValueError(f"domains: {sorted(reserved)} are reserved names ({CLEAN}, {TARGET}, {', '.join(ADAPTATIONS)}); rename that domain")
        known = [CLEAN, *self.domains]
        unknown = [d for d in self.refit.domains if d not in self.domains]
        if unknown:
            raise ValueError(f"refit.domains: {unknown} are not shift domains ({', '.join(self.domains)}); "
                             f"'{CLEAN}' is always fitted and is not listed")
        for name, scenario in self.scenarios.items():
            for field, allowed in (("model", [*self.fit_domains, TARGET, *ADAPTATIONS]), ("threshold", [*known, TARGET]), ("test", [*known, TARGET])):
                value = getattr(scenario, field)
                if value not in allowed:
                    raise ValueError(f"scenarios.{name}.{field}: '{value}' is none of {allowed}"
                                     + (" (a model needs its domain in refit.domains)" if field == "model" and value in known else ""))
            unknown = [d for d in scenario.targets or [] if d not in self.domains]
            if unknown:
                raise ValueError(f"scenarios.{name}.targets: {unknown} are not shift domains ({', '.join(self.domains)})")
            if scenario.targets is not None and TARGET not in (scenario.model, scenario.threshold, scenario.test):
                raise ValueError(f"scenarios.{name}.targets: the scenario names no '{TARGET}' for them to stand for")
            if scenario.k is not None and (scenario.model not in ADAPTATIONS or len(set(scenario.k)) != len(scenario.k)):
                raise ValueError(f"scenarios.{name}.k: K values (once each) are for adaptations ({', '.join(ADAPTATIONS)}), not model {scenario.model}")
            if scenario.model in ADAPTATIONS and (scenario.threshold, scenario.test) != (TARGET, TARGET):
                raise ValueError(f"scenarios.{name}: model {scenario.model} adapts to each shift domain, so threshold and test must be '{TARGET}'")
        return self

    @property
    def data_domains(self) -> list[str]:
        """Every domain: clean, then the shift domains in params order."""
        return [CLEAN, *self.domains]

    @property
    def fit_domains(self) -> list[str]:
        """The domains some detector's models are fitted on: clean, then refit.domains."""
        return [CLEAN, *self.refit.domains]

    def fit_domains_of(self, detector: str) -> list[str]:
        """The domains `detector`'s models are fitted on: clean, and refit.domains when it is in refit.detectors."""
        return self.fit_domains if detector in (self.refit.detectors or []) else [CLEAN]

    def scenario_runs(self, detector: str | None = None) -> dict[str, "ScenarioRun"]:
        """The concrete scenarios, by name. A template with `target` becomes one run per shift
        domain, `<domain>_<template>` (model: target only for the domains the detector is fitted on, `fit_domains_of`); a
        fewshot / feature_align template one run per domain and K (`<domain>_<template>_k<K>`), for the
        detectors the stage adapts (`adapts`; all of them when `detector` is None)."""
        fixed: dict[str, ScenarioRun] = {}
        by_domain: dict[str, dict[str, ScenarioRun]] = {d: {} for d in self.domains}  # runs grouped by domain, templates in order
        for name, s in self.scenarios.items():
            if detector is not None and s.detectors is not None and detector not in s.detectors:
                continue
            fields = (s.model, s.threshold, s.test)
            if TARGET not in fields:
                fixed[name] = ScenarioRun(name, name, *fields, template=name)
                continue
            fitted = self.fit_domains if detector is None else self.fit_domains_of(detector)
            if s.model not in (TARGET, *ADAPTATIONS) and s.model not in fitted:
                continue  # a model this detector is not fitted on (refit.detectors)
            for domain in s.targets or self.domains:
                if s.model == TARGET and domain not in fitted:
                    continue
                model, threshold, test = (domain if f == TARGET else f for f in fields)
                group, runs = f"{domain}_{name}", by_domain[domain]
                if model not in ADAPTATIONS:
                    runs[group] = ScenarioRun(group, group, model, threshold, test, template=name, domain=domain)
                elif detector is None or self.adapts(detector, model):
                    for k in s.k or self.few_shot.adaptation_k:
                        runs[f"{group}_k{k}"] = ScenarioRun(f"{group}_k{k}", group, model, threshold, test, k, template=name, domain=domain)
        runs = dict(fixed)
        for domain_runs in by_domain.values():
            runs.update(domain_runs)
        return runs

    def adapts(self, detector: str, adaptation: str) -> bool:
        """Whether the adaptation stage runs `adaptation` for `detector`: fewshot extends a memory
        bank (few_shot.detectors), the label-free ones serve few_shot.adaptation_detectors."""
        if detector not in (self.few_shot.adaptation_detectors or []):
            return False
        return adaptation != "fewshot" or detector in self.few_shot.detectors

    def scored_pairs(self, detector: str | None = None) -> list[tuple[str, str]]:
        """(model domain, data domain) pairs the score stage runs for `detector` (None: for any),
        on val and test images: those the scenarios name (model on its threshold's and its test's
        domain) and every fitted domain's models on every fitted domain (the cross-shift matrix's
        rows and columns: the fitted domains of any detector)."""
        fitted = self.fit_domains if detector is None else self.fit_domains_of(detector)
        pairs = [(m, d) for m in fitted for d in self.fit_domains]
        for run in self.scenario_runs(detector).values():
            if run.model_key in self.data_domains:  # not an adapted model (those are the few-shot stage's)
                pairs += [(run.model_key, run.threshold), (run.model_key, run.test)]
        order = {d: i for i, d in enumerate(self.data_domains)}
        return sorted(set(pairs), key=lambda pair: (order[pair[0]], order[pair[1]]))

    def check_fit_domain(self, domain: str, detector: str | None = None) -> str:
        fitted = self.fit_domains if detector is None else self.fit_domains_of(detector)
        if domain not in fitted:
            where = "refit.domains" if domain not in self.fit_domains else "refit.detectors"
            raise ParamsError(f"{where}: {detector or 'the'} models are fitted on {fitted}, not '{domain}'; add "
                              f"{'it' if where == 'refit.domains' else detector} there (domains: {', '.join(self.data_domains)})")
        return domain

    @property
    def reference_seed(self) -> int:
        """The training seed of the reference run (seeds[0])."""
        return self.seeds[0]

    def check_training_seed(self, seed: int) -> int:
        if seed not in self.seeds:
            raise ParamsError(f"seeds: {seed} is not one of the training seeds {self.seeds}; add it there or pass one of them")
        return seed

    def for_training(self, seed: int) -> "Params":
        """These params with `seed` = training seed `seed`, for building a detector (its
        initial weights, sampling, draws); the data stages keep the data seed."""
        return self.model_copy(update={"seed": self.check_training_seed(seed)})

    def rule_threads(self, rule: str) -> int:
        """The threads a rule's jobs declare (Snakemake `threads`, passed on to the CLI's --threads)."""
        override = self.resources.rules.get(rule)
        return override.threads if override and override.threads else self.threads

    def rule_resources(self, rule: str) -> dict[str, int | str]:
        """A rule's Snakemake `resources`: mem_mb, runtime (minutes) and, for a rule that runs
        a model and has GPUs asked for, gpu (+ gpu_model / gpu_manufacturer when set)."""
        if rule not in RULE_NAMES:
            raise ParamsError(f"resources: no rule called {rule}; the rules are {', '.join(RULE_NAMES)}")
        r, override = self.resources, self.resources.rules.get(rule) or RuleResources()
        resources: dict[str, int | str] = {
            "mem_mb": override.mem_mb or r.mem_mb,
            "runtime": override.runtime or r.runtime,
        }
        gpu = (override.gpu if override.gpu is not None else r.gpu) if rule in GPU_RULES else 0
        if gpu:
            resources["gpu"] = gpu
            if r.gpu_model:
                resources["gpu_model"] = r.gpu_model
            if r.gpu_manufacturer:
                resources["gpu_manufacturer"] = r.gpu_manufacturer
        return resources

    def anchored(self, project: Path) -> "Params":
        """These params with the user's own files and folders given relative to the project made
        absolute against `project` (a stage that runs inside another root, `shiftad --root`,
        still finds them): dataset.root of folder / csv data, weights files, a teacher weights
        file, a penalty-image folder. The data stage's own outputs stay relative."""
        def absolute(value: str, keep: tuple[str, ...]) -> str:
            return value if value in keep or Path(value).is_absolute() else str((project / value).resolve())

        dataset = self.dataset
        if dataset.source in USER_DATA_SOURCES:
            dataset = dataset.model_copy(update={"root": absolute(dataset.root, ())})
        efficientad, students = self.efficientad, self.uninformed_students
        teacher = efficientad.teacher.model_copy(update={"source": absolute(efficientad.teacher.source, ("distill",))})
        efficientad = efficientad.model_copy(update={"teacher": teacher,
                                                     "penalty_images": absolute(efficientad.penalty_images, ("default",))})
        students = students.model_copy(update={"teacher": students.teacher.model_copy(
            update={"weights": absolute(students.teacher.weights, ("auto", "none"))})})
        return self.model_copy(update={
            "dataset": dataset, "efficientad": efficientad, "uninformed_students": students,
            "backbone": self.backbone.model_copy(update={"weights": absolute(self.backbone.weights, ("auto", "none"))}),
            "knn": self.knn.model_copy(update={"weights": absolute(self.knn.weights, ("auto", "none"))}),
        })

    def threshold_rule(self, detector: str) -> str:
        return self.evaluation.threshold.detector_rules.get(detector, self.evaluation.threshold.rule)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (pass an existing file with --params)")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(content, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys, got {type(content).__name__}")
    return content


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against params.yaml)"
        nested = re.match(r"^([A-Za-z_][\w.]*): (.+)$", message, re.S)
        if error["loc"] and nested:  # a section's own check that names a key inside it: join the two
            key, message = f"{key}.{nested.group(1)}", nested.group(2)
        lines.append(f"{source}: {key}: {message}")
    return "\n".join(lines)


def validate_params(raw: dict[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, source)) from None


def load_params(paths: list[str | Path] | None = None) -> Params:
    """Merge the given YAML files in order and validate them (default: ./params.yaml)."""
    paths = [Path(p) for p in (paths or [DEFAULT_PARAMS])]
    merged: dict[str, Any] = {}
    for path in paths:
        merged = deep_merge(merged, _read_yaml(path))
    return validate_params(merged, source=" + ".join(str(p) for p in paths))
