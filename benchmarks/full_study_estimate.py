"""GPU-hours of the full study (config/mvtec_full.yaml), derived from per-network FLOPs.

No GPU is needed: every network the study runs is built at its paper-scale size with random
weights and one forward pass is counted with torch's FlopCounterMode (2 FLOPs per
multiply-add; convolutions, matrix products, attention). A training step counts 3x its forward
pass (forward + backward). Those counts are multiplied by the work the DAG does — MVTec AD's
published image counts, the split (params), every detector x regime x training domain x seed
fit, every scoring pass, the teachers' distillation, the coreset and nearest-neighbour
searches — and divided by an assumed sustained GPU throughput. Per-job fixed costs (container
start, imports, CUDA init, reading images) are added per job of the dry run.

    python benchmarks/full_study_estimate.py                         # the defaults below
    python benchmarks/full_study_estimate.py --tflops 40 --job-overhead-s 90

The estimate is an order of magnitude, not a measurement: the throughput is an assumption
(printed), and memory-bound steps (kNN search, greedy coreset) rarely reach it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from shiftad.params import load_params  # noqa: E402

# MVTec AD's published image counts (Bergmann et al., CVPR 2019, Table 1): train (all normal), test.
MVTEC_IMAGES = {
    "bottle": (209, 83), "cable": (224, 150), "capsule": (219, 132), "carpet": (280, 117), "grid": (264, 78),
    "hazelnut": (391, 110), "leather": (245, 124), "metal_nut": (220, 115), "pill": (267, 167), "screw": (320, 160),
    "tile": (230, 117), "toothbrush": (60, 42), "transistor": (213, 100), "wood": (247, 79), "zipper": (240, 151),
}
TRAIN_STEP = 3.0  # forward + backward ≈ 3 forward passes


def forward_flops(module: torch.nn.Module, *inputs: torch.Tensor) -> float:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*inputs)
    return float(counter.get_total_flops())


def backbone_flops(name: str, layers: list[str], size: int) -> tuple[float, int, int]:
    """(FLOPs per image, feature channels, patches per image) of the frozen backbone cut at `layers`."""
    from shiftad.backbones import FeatureExtractor, PatchTokenExtractor, is_vision_transformer

    if is_vision_transformer(name):
        net = PatchTokenExtractor(name, "none")
        side = net.input_size(size)
        image = torch.rand(1, 3, side, side)
        out = net(image)[0]
        return forward_flops(net, image), out.shape[1], out.shape[-1] * out.shape[-2]
    net = FeatureExtractor(name, layers, "none")
    image = torch.rand(1, 3, size, size)
    outs = net(image)
    return forward_flops(net, image), sum(o.shape[1] for o in outs), max(o.shape[-1] * o.shape[-2] for o in outs)


@dataclass
class Work:
    flops: float = 0.0

    def add(self, flops: float) -> None:
        self.flops += flops


def estimate(params) -> dict[str, float]:
    from shiftad.components.patch_nets import PatchNet
    from shiftad.components.pdn import autoencoder, pdn, pdn_output_size

    categories = params.categories
    frac = params.split.mvtec.train_fraction
    train = {c: int(MVTEC_IMAGES[c][0] * frac) for c in categories}
    val = {c: MVTEC_IMAGES[c][0] - train[c] for c in categories}
    test = {c: MVTEC_IMAGES[c][1] for c in categories}
    n_seeds, size = len(params.seeds), params.image_size
    scored = sum(val.values()) + sum(test.values())  # per data domain, per model
    work: dict[str, Work] = {}

    def stage(name: str) -> Work:
        return work.setdefault(name, Work())

    # Each detector: per seed, every domain it is fitted on (clean + refit.domains for refit.detectors),
    # per-class (one model per category) + global (all pooled). A model scores val + test of the data
    # domains of its pairs (Params.scored_pairs): per class its own category, global every category.
    for detector in params.detectors:
        n_fit, n_pairs = len(params.fit_domains_of(detector)), len(params.scored_pairs(detector))
        fits_per_image = n_fit * n_seeds * 2  # domains x seeds x (per-class + global: each train image is fitted twice)
        scores_per_image = n_pairs * n_seeds * 2  # (model, data) domain pairs x seeds x regimes
        if detector in ("patchcore", "padim", "routed_ae", "knn"):
            section = getattr(params, detector)
            name = params.backbone.name if detector != "knn" or section.backbone == "default" else section.backbone
            f, channels, patches = backbone_flops(name, section.layers, size)
            stage(f"{detector}: features").add(f * (sum(train.values()) * fits_per_image + scored * scores_per_image))
            if detector == "patchcore":  # greedy coreset: M picks, each a distance pass over N projected patches
                for n in [t * patches for t in train.values()] + [sum(train.values()) * patches]:
                    m = n * section.coreset_ratio
                    stage("patchcore: coreset").add(2 * n * m * section.projection_dim * 2 * n_seeds)
                bank = {c: train[c] * patches * section.coreset_ratio for c in categories}
                total_bank = sum(bank.values())
                search = sum((val[c] + test[c]) * patches * (bank[c] + total_bank) for c in categories)
                stage("patchcore: kNN search").add(2 * channels * search * n_pairs * n_seeds)
            if detector == "knn":
                bank = {c: (train[c] if section.shots == 0 else min(section.shots, train[c])) * patches for c in categories}
                total_bank = sum(bank.values())
                search = sum((val[c] + test[c]) * patches * (bank[c] + total_bank) for c in categories)
                stage("knn: kNN search").add(2 * channels * search * n_pairs * n_seeds)
            if detector == "padim":  # per position: covariance (fit) and Mahalanobis (score), d = n_features
                d = section.n_features
                stage("padim: Gaussians").add(patches * d * d * 2 * (sum(train.values()) * fits_per_image + scored * scores_per_image))
        elif detector == "efficientad":
            p = params.efficientad
            arch, steps = p.arch, p.train.steps
            teacher = pdn(p.model_size, arch.channels, arch.width)
            student = pdn(p.model_size, 2 * arch.channels, arch.width)
            ae = autoencoder(arch.channels, arch.image_size, pdn_output_size(arch.image_size), arch.width)
            image = torch.rand(1, 3, arch.image_size, arch.image_size)
            t, s, a = (forward_flops(m, image) for m in (teacher, student, ae))
            # a step: teacher forward, student + autoencoder trained on the image, student on a penalty image
            per_step = t + TRAIN_STEP * (s + a) + TRAIN_STEP * s
            models = (len(categories) + 1) * n_fit * n_seeds
            stage("efficientad: training").add(per_step * steps * p.train.batch_size * models)
            stage("efficientad: scoring").add((t + s + a) * scored * scores_per_image)
            tt = p.teacher_training
            f, _, _ = backbone_flops(params.backbone.name, p.teacher.layers, arch.image_size)
            stage("efficientad: teacher distillation").add((f + TRAIN_STEP * t) * tt.steps * tt.batch_size)
        elif detector == "uninformed_students":
            p = params.uninformed_students
            arch = p.architecture[p.scale]
            image = torch.rand(1, 3, arch.image_size, arch.image_size)
            for patch in arch.patch_sizes:
                net = PatchNet(patch, arch.descriptor_dim, arch.width)
                dense = forward_flops(lambda x: net.dense(x), image)
                single = forward_flops(net, torch.rand(1, 3, patch, patch))
                train_images = sum(train.values()) * n_fit * n_seeds * 2  # per-class + global models see every image
                stage("uninformed_students: students").add(
                    (dense + TRAIN_STEP * p.students * dense) * train_images * p.training[p.scale].epochs)
                stage("uninformed_students: scoring").add((1 + p.students) * dense * scored * scores_per_image)
                tt = p.teacher.paper if p.scale == "paper" else p.teacher.smoke
                name = params.backbone.name if p.teacher.backbone == "default" else p.teacher.backbone
                f, _, _ = backbone_flops(name, p.teacher.layers, tt.backbone_input)
                stage("uninformed_students: teacher distillation").add((f + TRAIN_STEP * single) * tt.patches * tt.epochs)
    # Robustness sweep: every detector's clean per-class model scores each family x severity.
    sweeps = sum(test.values()) * len(params.robustness.severities) * len(params.shift.families)
    stage("robustness: scoring (≈ one scoring pass each)").add(
        sum(w.flops for k, w in work.items() if k.endswith(("features", "scoring"))) / (scored * scores_per_image) * sweeps
        if scored else 0.0)
    return {k: w.flops for k, w in work.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "config/mvtec_full.yaml"))
    parser.add_argument("--tflops", type=float, default=40.0,
                        help="assumed sustained TFLOP/s of one GPU (default 40: about a quarter of an A100's dense TF32 peak)")
    parser.add_argument("--jobs", type=int, default=657, help="jobs of the dry run (README)")
    parser.add_argument("--job-overhead-s", type=float, default=60.0,
                        help="fixed GPU-held seconds per job: container start, imports, CUDA init, image reading")
    args = parser.parse_args()
    torch.set_num_threads(2)
    params = load_params([ROOT / "params.yaml", args.config])
    flops = estimate(params)
    rate = args.tflops * 1e12
    print(f"{'part':52s} {'PFLOP':>10s} {'GPU-h':>8s}")
    for name, f in sorted(flops.items(), key=lambda kv: -kv[1]):
        print(f"{name:52s} {f / 1e15:10.1f} {f / rate / 3600:8.1f}")
    compute = sum(flops.values()) / rate / 3600
    overhead = args.jobs * args.job_overhead_s / 3600
    print(f"{'compute at ' + str(args.tflops) + ' TFLOP/s':52s} {sum(flops.values()) / 1e15:10.1f} {compute:8.1f}")
    print(f"{'fixed cost: ' + str(args.jobs) + ' jobs x ' + str(args.job_overhead_s) + ' s':52s} {'':10s} {overhead:8.1f}")
    print(f"{'total GPU-hours':52s} {'':10s} {compute + overhead:8.1f}")


if __name__ == "__main__":
    main()
