"""The study's fixed axes and the files the DAG fans out over (used by the Snakefile and the stages)."""

from __future__ import annotations

from itertools import product

from shiftad.errors import ParamsError
from shiftad.params import Params
from shiftad.paths import MANIFEST, bundle_dir, domain_splits_file, model_dir, scores_file, teacher_dir

REGIMES = ("per_class", "global")  # one model per category / one model on all categories pooled
GLOBAL_CATEGORY = "all"  # the global model's folder name (params refuse a category called so)
SCORED_SPLITS = ("val", "test")
RUNTIMES = ("torch", "onnx")  # what runs a bundle's feature network in predict / serve


def source_files(*paths: str) -> list[str]:
    """The Python files of `paths` (files or packages), for Snakemake code inputs: Snakemake
    compares modification times, and editing a file does not touch its folder's time, so a
    folder as input would miss an edit (DVC hashes folder contents and lists folders)."""
    from pathlib import Path

    files: list[str] = []
    for path in paths:
        p = Path(path)
        files += sorted(f.as_posix() for f in p.rglob("*.py")) if p.is_dir() else [p.as_posix()]
    return files


def model_category(regime: str, category: str) -> str:
    """The model that scores `category`: its own (per_class) or the pooled one (global)."""
    return GLOBAL_CATEGORY if regime == "global" else category


def model_categories(params: Params, regime: str, category: str | None = None) -> list[str]:
    """The model folders a fit or score job covers: `category` alone, or (None) every model of
    the regime: each category (per_class), or the one global model (`all`)."""
    if regime == "global":
        if category not in (None, GLOBAL_CATEGORY):
            raise ParamsError(f"--category: the global model is fitted once, as category '{GLOBAL_CATEGORY}', not '{category}'")
        return [GLOBAL_CATEGORY]
    if category is None:
        return list(params.categories)
    if category not in params.categories:
        raise ParamsError(f"--category: category '{category}' is not in params categories {params.categories}")
    return [category]


def model_path(detector: str, regime: str, domain: str, category: str, seed: int | str) -> str:
    return model_dir(detector, regime, domain, model_category(regime, category), int(seed)).as_posix()


MODELS_PATTERN = "results/models/{detector}/{regime}/{domain}/seed{seed}"  # the models of one fit job with fit_jobs: per_regime


def fit_output(params: Params) -> str:
    """What one fit job writes: every model of a (detector, regime, domain, seed) — their common
    folder — or, with fit_jobs: per_model, one model's folder."""
    return MODELS_PATTERN if params.fit_jobs == "per_regime" else MODELS_PATTERN + "/{category}"


def fit_job_name(params: Params) -> str:
    """A fit job's log and benchmark file name (the wildcards of its output)."""
    return "{detector}_{regime}_{domain}_seed{seed}" + ("" if params.fit_jobs == "per_regime" else "_{category}")


def category_flag(wildcards) -> str:
    """`--category C` for a job of one model (a `category` wildcard), nothing for a job of every model."""
    category = getattr(wildcards, "category", None)
    return f"--category {category}" if category else ""


def model_inputs(params: Params, detector: str, regime: str, domain: str, seed: int | str, categories: list[str] | None = None) -> list[str]:
    """The fit outputs that hold the models scoring `categories` (default: every category)."""
    names = sorted({model_category(regime, c) for c in (params.categories if categories is None else categories)})
    if params.fit_jobs == "per_regime":
        return [MODELS_PATTERN.format(detector=detector, regime=regime, domain=domain, seed=int(seed))]
    return [model_path(detector, regime, domain, name, seed) for name in names]


def splits_input(domain: str) -> list[str]:
    """The files a domain's split view reads: clean = the manifest + splits.json (records and
    their split), a shift domain its data/processed/domains/<domain>.json (it holds its records)."""
    files = [domain_splits_file(domain).as_posix()]
    return [MANIFEST.as_posix(), *files] if domain == "clean" else files


def all_splits_inputs(params: Params) -> list[str]:
    """The split views of every domain (clean and each shift domain)."""
    return [f for d in params.data_domains for f in splits_input(d)]


def domain_feature_splits(params: Params) -> dict[str, list[str]]:
    """The splits of each domain some stage runs a model on: val and test of every domain
    (scoring), train of the fitted domains (fits) and of the few-shot domains (their K normals)."""
    training = set(params.fit_domains) | set(fewshot_domains(params))
    return {d: (["train"] if d in training else []) + list(SCORED_SPLITS) for d in params.data_domains}


def score_dir(detector: str, regime: str, seed: int | str) -> str:
    """What one score job writes, as a folder (wildcards may be Snakemake patterns such as "{detector}"):
    its files (the regime's models on each pair of `Params.scored_pairs(detector)`) differ by
    detector (refit.detectors), which a rule's output pattern cannot say."""
    return f"results/scores/{detector}/{regime}/seed{seed}"


def score_files(params: Params, seeds: list[int] | None = None) -> list[str]:
    """Every score file of the study: the fitted models on their domain pairs
    (`Params.scored_pairs`), plus the few-shot adapted banks' scores. Of every training seed, or
    of `seeds` (statistics reads the reference seed's only)."""
    seeds = params.seeds if seeds is None else seeds
    return [score_dir(d, r, s) for d, r, s in product(params.detectors, REGIMES, seeds)] + fewshot_outputs(params, seeds)


def fewshot_outputs(params: Params, seeds: list[int]) -> list[str]:
    """The adaptation stage's output folders (one per adapted detector, regime and seed; a
    detector's adaptations are the scenarios that run for it, so their files differ by detector)."""
    adapted = [d for d in params.few_shot.adaptation_detectors or [] if fewshot_score_files(params, d, "per_class", 0)]
    return [f"{FEWSHOT_DIR_NAME}/{d}/{r}/seed{s}" for d, r, s in product(adapted, REGIMES, seeds)]


def adaptations(params: Params, detector: str | None = None) -> dict[str, dict[str, list[int]]]:
    """Per shift domain (params order), the adaptations (fewshot, feature_align, adabn) its
    scenarios run and each one's K values above 0 (for `detector`; None: for any detector). K = 0
    is the clean model itself, whose scores the score stage writes (`ScenarioRun.model_key`)."""
    from shiftad.params import ADAPTATIONS

    runs = params.scenario_runs(detector).values()
    found = {d: {a: sorted({r.k for r in runs if r.model == a and r.domain == d and r.k}) for a in ADAPTATIONS} for d in params.domains}
    return {d: {a: ks for a, ks in methods.items() if ks} for d, methods in found.items() if any(methods.values())}


def fewshot_domains(params: Params) -> list[str]:
    """The shift domains some adaptation scenario adapts to, in params order (their train images are read)."""
    return list(adaptations(params))


def fewshot_score_files(params: Params, detector: str, regime: str, seed: int | str) -> list[str]:
    """Score files of one few-shot job: the clean model adapted to K normals of each domain by each
    of its adaptations (the scenarios that run for `detector`), on that domain."""
    if detector not in (params.few_shot.adaptation_detectors or []):
        return []
    return [scores_file(detector, regime, f"{method}_k{k}", x, split, c, seed).as_posix()
            for x, methods in adaptations(params, detector).items() for method, ks in methods.items()
            for k, split, c in product(ks, SCORED_SPLITS, params.categories)]


FEWSHOT_DIR_NAME = "results/fewshot"
TRAINED_DETECTORS = ("efficientad", "uninformed_students")  # trained at a scale (params: <detector>.scale)


def training_inputs(params: Params) -> list[str]:
    """The reference seed's per-class clean models of the trained detectors: the report reads
    their training histories (how far from converged each ran)."""
    return [path for d in params.detectors if d in TRAINED_DETECTORS
            for path in model_inputs(params, d, "per_class", "clean", params.reference_seed)]


def kshot_files(params: Params) -> list[str]:
    return [f"results/kshot/{d}/{prefix}{c}.csv" for d in params.few_shot.detectors for prefix in ("", "coreset_") for c in params.categories]


def bundle_dirs(params: Params) -> list[str]:
    """One bundle per fitted model of the reference seed (detector × regime × domain it is fitted on)."""
    return [bundle_dir(d, r, m).as_posix() for d in params.detectors for r in REGIMES for m in params.fit_domains_of(d)]


def export_outputs(params: Params) -> list[str]:
    """The export jobs' folders, one per detector: its bundles (`bundle_dirs`) differ by detector."""
    return [f"results/bundles/{d}" for d in params.detectors]


def export_inputs(params: Params, detector: str, regime: str, domain: str) -> list[str]:
    """What a bundle is made of: the reference seed's model folder(s) and the validation scores
    behind its thresholds (in its score job's folder)."""
    seed = params.reference_seed
    return model_inputs(params, detector, regime, domain, seed) + [score_dir(detector, regime, seed)]


TEACHER_DETECTORS = ("efficientad", "uninformed_students")  # detectors whose fits share a teacher from the distill-teacher stage


def teacher_inputs(detector: str) -> list[str]:
    """The teacher folder a detector's fit reads (none for the others)."""
    return [teacher_dir(detector).as_posix()] if detector in TEACHER_DETECTORS else []


def teacher_source_inputs(params: Params, detector: str) -> list[str]:
    """A user's teacher weights file (efficientad.teacher.source), so a new file reruns the stage."""
    if detector != "efficientad":
        return []
    source = params.efficientad.teacher.source
    return [] if source == "distill" else [source]


TEACHER_PARAM_KEYS = {"efficientad": ("scale", "model_size", "architecture", "teacher"),
                      "uninformed_students": ("scale", "architecture", "teacher")}


def teacher_params(params: Params, detector: str) -> dict:
    """The detector's params a teacher depends on (not its students' training), for Snakemake's rerun check."""
    section = getattr(params, detector).model_dump()
    return {k: v for k, v in section.items() if k in TEACHER_PARAM_KEYS[detector]}


GENERATED_SOURCES = ("synthetic", "mvtec")  # data sources whose images the data stage writes (under dataset.root)


def image_inputs(params: Params, domains: list[str] | None = None) -> list[str]:
    """The image folders a rule reads: the data set's (written by the data stage for synthetic
    and MVTec data; the user's own folder, a local input, for folder / CSV data) and each shift
    domain's data/domains/<domain> (`domains`: default every domain). Declared, so a job that
    shares no filesystem gets them."""
    from snakemake.io import local

    from shiftad.paths import domain_images_dir

    root = params.dataset.root if params.dataset.source in GENERATED_SOURCES else local(params.dataset.root)
    domains = params.data_domains if domains is None else domains
    return [root] + [domain_images_dir(d).as_posix() for d in domains if d != "clean"]


def user_image_inputs(params: Params) -> list[str]:
    """The data stage's input folder for folder / CSV data (local: the user's own files)."""
    from snakemake.io import local

    return [] if params.dataset.source in GENERATED_SOURCES else [local(params.dataset.root)]


def data_outputs(params: Params) -> dict[str, str]:
    """The data stage's image folder, when it writes one (synthetic generation, MVTec extraction).
    MVTec's is updated in place: Snakemake would otherwise delete it before the job, with the
    categories a user extracted by hand and the ones a previous run extracted."""
    from snakemake.io import directory
    from snakemake.ioflags import update

    if params.dataset.source == "mvtec":
        return {"images": update(directory(params.dataset.root))}
    return {"images": directory(params.dataset.root)} if params.dataset.source in GENERATED_SOURCES else {}


def storage_root(workflow) -> str:
    """The folder a job finds the DAG's relative paths under (`shiftad --root`): '.' on a shared
    filesystem; with a default storage provider (Kubernetes: no shared filesystem), Snakemake's
    local copy of the storage prefix, where it retrieves inputs and collects outputs."""
    settings = workflow.storage_settings
    if not settings.default_storage_provider:
        return "."
    probe = "results/.root"
    query = f"{(settings.default_storage_prefix or '').rstrip('/')}/{probe}"
    local_path = str(workflow.storage_registry.default_storage_provider.object(query).local_path())
    if not local_path.endswith(probe):
        raise ValueError(f"{local_path}: the storage provider's local copy of {query} does not end with {probe}")
    return local_path[: -len(probe)].rstrip("/") or "."


def untracked(value: str):
    """A rule param for how a job calls the CLI (its --params files, --root), not what it
    computes. Snakemake leaves params that are functions of a job's output out of its params
    rerun check, so adding a resources-only --configfile, or running through a storage, reruns
    nothing; the values a stage computes from are tracked by the rule's section params."""

    def param(wildcards, output) -> str:
        return value

    return param


FEATURES_DIR = "results/features"
FEATURE_NETWORKS = {"patchcore": "timm_layers", "routed_ae": "timm_layers", "padim": "timm_layers", "knn": "timm_layers"}


def feature_spec(params: Params, detector: str) -> dict | None:
    """The frozen network a detector built from `params` runs (its `feature_spec()`, said from
    params without building it), or None for a detector with trained networks only."""
    from shiftad.backbone_names import is_vision_transformer

    if detector not in FEATURE_NETWORKS:
        return None
    backbone, weights, layers = params.backbone.name, params.backbone.weights, list(getattr(params, detector).layers)
    if detector == "knn" and params.knn.backbone != "default":
        backbone, weights = params.knn.backbone, params.knn.weights
    if detector == "knn" and is_vision_transformer(backbone):
        layers = []
    network = "vit_patch_tokens" if detector == "knn" and is_vision_transformer(backbone) else FEATURE_NETWORKS[detector]
    return {"network": network, "backbone": backbone, "weights": weights, "layers": layers, "image_size": params.image_size,
            "resize": params.resize, "normalisation": params.backbone.normalisation}


def _layer_order(name: str) -> tuple:
    """Natural order of layer names (blocks.2 < blocks.10; layer2 < layer3)."""
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def store_spec(params: Params, detector: str) -> dict | None:
    """The network the features stage runs for a detector: its own spec with the union of the
    layers of every study detector that runs the same network otherwise (same backbone, weights,
    input size, resize and scaling). One backbone pass then serves PatchCore's, PaDiM's, the
    kNN's and the routed autoencoders' layers, whichever each uses; None without a frozen network."""
    own = feature_spec(params, detector)
    if own is None:
        return None
    base = {k: v for k, v in own.items() if k != "layers"}
    layers = {layer for other in params.detectors for spec in [feature_spec(params, other)]
              if spec is not None and {k: v for k, v in spec.items() if k != "layers"} == base for layer in spec["layers"]}
    return {**own, "layers": sorted(layers, key=_layer_order)}


def spec_id(spec: dict) -> str:
    """A short stable name for a network spec (its features folder)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def feature_specs(params: Params) -> dict[str, dict]:
    """The distinct frozen networks the features stage runs (`store_spec`), by spec id (the features folders)."""
    specs = (store_spec(params, d) for d in params.detectors)
    return {spec_id(s): s for s in specs if s is not None}


def feature_inputs(params: Params, detector: str, feature_set: str = "study") -> list[str]:
    """The features a detector's jobs read (none for a detector without a frozen network):
    `study` for fit, score, K-shot and few-shot; `robustness` for the severity sweep."""
    spec = store_spec(params, detector)
    return [] if spec is None else [f"{FEATURES_DIR}/{feature_set}/{spec_id(spec)}"]
