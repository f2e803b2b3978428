"""The adaptation stage: a clean memory-bank model (or PaDiM) adapted to K normal images of a shift domain.

Three adaptations (params ADAPTATIONS; a scenario names one as its model): `fewshot` appends
the K images' patches to the bank; two label-free ones search the clean bank unchanged:
`feature_align` re-standardises the domain's patch features per channel, from the K images'
patch statistics onto those of the clean train images; `adabn` re-estimates the frozen
network's batch-norm statistics on the K images (AdaBN, Li et al. 2016) and runs it on the
domain's images (the feature store holds the unadapted network's outputs, so it runs here).
PaDiM (in `few_shot.adaptation_detectors`) gets the two label-free ones on its per-position
embeddings: aligned embeddings against the clean Gaussians, and AdaBN against Gaussians refitted
on the clean train images run on their own statistics (`adapt_gaussians`).

For each memory-bank detector in `few_shot.detectors` and regime (one job), and each shift
domain a fewshot scenario adapts to, the patch features of the first K images of a seeded order
of the domain's **normal train** images are appended to the clean bank (K in
`few_shot.adaptation_k`; for the global model K of every category), and the extended model
scores the category's val and test images of that domain.
Features are extracted once per image and reused across K. K = 0 is the clean model itself
(= threshold only): its scenarios read the score stage's files of the clean model on the domain,
so this stage runs K > 0 only; the full refit on the domain is the `<domain>_refit` scenario.

Output: the score files of model `fewshot_k<K>` on each domain
(`results/fewshot/<det>/<regime>/seed<S>/fewshot_k<K>_on_<domain>/{val,test}/<cat>.npz`), which the
evaluate stage reads as scenario `<domain>_fewshot` with a K column. They hold the score stage's
keys (`paths`, `labels`, `image_scores`, `maps`, `seconds_per_image`, any `extra_map_<name>`)
plus, for a memory bank, `added_patches` and `memory_bank_size`.
"""

from __future__ import annotations

import copy
import logging
import time
import zlib

import numpy as np

from shiftad.components.knn import NearestNeighbours, merge_neighbours
from shiftad.data.images import read_image
from shiftad.data.records import ImageRecord
from shiftad.detectors import load_detector
from shiftad.detectors.memory_bank import PatchBankDetector, PatchRows
from shiftad.detectors.padim import PaDiM
from shiftad.errors import ParamsError
from shiftad.io import save_npz
from shiftad.params import Params
from shiftad.paths import model_dir, scores_file
from shiftad.pipeline import GLOBAL_CATEGORY, SCORED_SPLITS
from shiftad.split import domain_view

log = logging.getLogger(__name__)


def adaptation_images(records: list[ImageRecord], k: int, seed: int, category: str) -> list[ImageRecord]:
    """The first `k` of a seeded order of `records` (nested: K = 2 holds K = 1's image)."""
    if k > len(records):
        raise ParamsError(f"few_shot.adaptation_k: K = {k} but '{category}' has only {len(records)} normal train images")
    order = np.random.default_rng([seed, zlib.crc32(category.encode())]).permutation(len(records))
    return [records[i] for i in order[:k]]


def run_fewshot_stage(params: Params, detector: str, regime: str, seed: int, progress: bool = True) -> None:
    """Every category's val/test images of each adapted domain, scored by the clean model that
    covers it (its own, or the global one) adapted to K of that domain's normals of every
    category that model covers, by each adaptation the domain's scenarios name."""
    from shiftad.pipeline import adaptations

    if detector not in (params.few_shot.adaptation_detectors or []):
        raise ParamsError(f"few_shot.adaptation_detectors: '{detector}' is not listed (listed: {params.few_shot.adaptation_detectors})")
    if not adaptations(params, detector):
        raise ParamsError(f"few_shot.adaptation_detectors: no adaptation scenario runs for '{detector}' (scenarios.<name>.detectors, "
                          "targets); drop it there")
    groups = [(GLOBAL_CATEGORY, list(params.categories))] if regime == "global" else [(c, [c]) for c in params.categories]
    for model_category, covered in groups:
        model = load_detector(detector, model_dir(detector, regime, "clean", model_category, params.check_training_seed(seed)), params)
        model.progress = progress
        if isinstance(model, PaDiM):  # Gaussians per position: the label-free adaptations only (params refuse fewshot)
            for domain, methods in adaptations(params, detector).items():
                adapt_gaussians(params, model, detector, regime, covered, seed, domain, methods)
            continue
        if not isinstance(model, PatchBankDetector):
            raise ParamsError(f"few_shot.adaptation_detectors: '{detector}' has neither a memory bank nor PaDiM's Gaussians to adapt")
        source = None  # adabn: the clean model on the clean images' own batch-norm statistics, made once per model
        for domain, methods in adaptations(params, detector).items():
            if "adabn" in methods and source is None:
                source = adabn_source_model(params, model, covered)
            adapt_and_score(params, model, detector, regime, covered, seed, domain, methods, source)


def channel_statistics(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of patch rows (..., C), in float64."""
    flat = rows.reshape(-1, rows.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.std(axis=0)


def align_rows(rows: PatchRows, target: tuple[np.ndarray, np.ndarray], source: tuple[np.ndarray, np.ndarray],
               eps: float = 1e-6) -> PatchRows:
    """Feature-statistics alignment: each channel of `rows` re-standardised from the target
    domain's statistics onto the source's, (x - mean_t) / sd_t * sd_s + mean_s."""
    (mean_t, sd_t), (mean_s, sd_s) = target, source
    aligned = ((rows.rows - mean_t) / np.maximum(sd_t, eps) * sd_s + mean_s).astype(np.float32)
    return PatchRows(aligned, rows.grid, rows.foreground, rows.categories, rows.shapes)


def adabn_source_model(params: Params, model: PatchBankDetector, covered: list[str]) -> PatchBankDetector:
    """AdaBN's source side: the pretrained network's batch-norm statistics are ImageNet's, not
    the clean domain's, so the clean bank is rebuilt (same method, same thinning) from the clean
    train images run through the network on their own statistics; a target domain's images
    then run on theirs, and both sides are normalised alike."""
    clean = domain_view("clean")
    records = [r for c in covered for r in clean.get(c, "train")]
    source = copy.copy(model)
    source.use_feature_store(None)  # the store holds the ImageNet-statistics outputs
    source.use_feature_runner(adabn_network(model, [read_image(r.path) for r in records]))
    try:
        source.fit_rows(source.patch_rows(records, None))
    finally:
        source.use_feature_runner(None)
    return source


def adabn_network(model: PatchBankDetector, images: list[np.ndarray], batch_size: int = 16):
    """A copy of the model's frozen network with the statistics of every batch-norm layer
    re-estimated on `images` (batch statistics over images and positions, averaged over batches
    of `batch_size`), in eval mode: AdaBN. Refused for a network without batch norm (a ViT uses
    layer norm)."""
    import torch

    network = copy.deepcopy(model.extractor)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ParamsError(f"scenarios: adabn re-estimates batch-norm statistics, and {model.name}'s network "
                          f"({getattr(model, 'backbone', '?')}) has no batch-norm layer; drop the adabn scenario for it")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one pass gives the images' own statistics
        norm.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            network(model.prepare_batch(images[start : start + batch_size]))
    return network.eval()


def _save(params: Params, detector: str, regime: str, model_key: str, domain: str, split: str, category: str, seed: int,
          records: list[ImageRecord], scores, seconds: float, **extra) -> None:
    save_npz(
        scores_file(detector, regime, model_key, domain, split, category, seed),
        paths=np.array([r.path for r in records]),
        labels=np.array([r.label for r in records], dtype=np.int64),
        image_scores=scores.image_scores,
        maps=scores.maps.astype(np.float32),
        seconds_per_image=np.array(seconds),
        **{k: np.array(v) for k, v in extra.items()},
        **scores.extra_map_arrays(),
    )


def adapt_and_score(params: Params, model: PatchBankDetector, detector: str, regime: str, covered: list[str], seed: int,
                    domain: str, methods: dict[str, list[int]] | None = None, adabn_source: "PatchBankDetector | None" = None) -> None:
    """`methods`: the adaptations to run and each one's K values (default: few-shot at every
    few_shot.adaptation_k). `seed`: the clean model's training seed (the K normals of `domain`
    are drawn with the data seed)."""
    view = domain_view(domain)
    methods = methods or {"fewshot": list(params.few_shot.adaptation_k)}
    ks = sorted({k for method_ks in methods.values() for k in method_ks})
    # One feature pass per image: the largest K's images hold every smaller K's (nested draws).
    with model.clock() as clock:  # the network's time, whether it ran here or in the features stage
        added = {c: model.patch_rows(adaptation_images(view.get(c, "train"), max(ks), params.seed, c), f"features ({domain} normals, {c})")
                 for c in covered}
        scored = {(c, split): view.get(c, split) for c in covered for split in SCORED_SPLITS}
        rows = {key: model.patch_rows(records, f"features ({key[0]} {domain} {key[1]})") for key, records in scored.items()}
    seconds_per_extraction = clock.seconds / max(1, sum(map(len, scored.values())) + sum(map(len, added.values())))
    if "fewshot" in methods:
        extend_bank(params, model, detector, regime, covered, seed, domain, added, scored, rows, seconds_per_extraction, methods["fewshot"])
    if "adabn" in methods:
        source = adabn_source or adabn_source_model(params, model, covered)
        images = {c: [read_image(r.path) for r in adaptation_images(view.get(c, "train"), max(ks), params.seed, c)] for c in covered}
        for k in methods["adabn"]:
            # K = 0: the unadapted model (= threshold only); else the domain's images through the
            # network on their K normals' statistics, searched in the bank made on the clean statistics
            scorer = source if k else model
            scorer.use_feature_runner(adabn_network(model, [image for c in covered for image in images[c][:k]]) if k else None)
            try:
                with model.clock() as timer:
                    adapted_rows = {key: scorer.patch_rows(records, None) if k else rows[key] for key, records in scored.items()}
                extraction = timer.seconds / max(1, sum(map(len, scored.values()))) if k else seconds_per_extraction
                for (c, split), records in scored.items():
                    begin = time.perf_counter()
                    scores = scorer.score_rows(adapted_rows[(c, split)])
                    seconds = (time.perf_counter() - begin) / max(len(records), 1) + extraction
                    _save(params, detector, regime, f"adabn_k{k}", domain, split, c, seed, records, scores, seconds,
                          memory_bank_size=scorer.memory_bank_.shape[0])
            finally:
                scorer.use_feature_runner(None)
            log.info("%s/%s %s: batch-norm statistics from %d %s normals per category", detector, regime, "+".join(covered), k, domain)
    if "feature_align" in methods:
        # the source statistics: the clean train images' patches of the categories the model covers
        clean = domain_view("clean")
        source = channel_statistics(PatchRows.concat([model.patch_rows(clean.get(c, "train"), None) for c in covered]).rows)
        for k in methods["feature_align"]:
            target = channel_statistics(PatchRows.concat([added[c].take(range(k)) for c in covered]).rows) if k else source
            for (c, split), records in scored.items():
                begin = time.perf_counter()
                scores = model.score_rows(align_rows(rows[(c, split)], target, source) if k else rows[(c, split)])
                seconds = (time.perf_counter() - begin) / max(len(records), 1) + seconds_per_extraction
                _save(params, detector, regime, f"feature_align_k{k}", domain, split, c, seed, records, scores, seconds,
                      memory_bank_size=model.memory_bank_.shape[0])
            log.info("%s/%s %s aligned to %d %s normals per category", detector, regime, "+".join(covered), k, domain)


def adapt_gaussians(params: Params, model: PaDiM, detector: str, regime: str, covered: list[str], seed: int, domain: str,
                    methods: dict[str, list[int]]) -> None:
    """PaDiM's label-free adaptations (K > 0; K = 0 is the clean model's own scores): feature_align
    re-standardises each channel of the domain's embeddings from the K normals' statistics (over
    images and positions) onto the clean train images', then scores them against the clean
    Gaussians; adabn runs the domain's images through the network on the K normals' batch-norm
    statistics, against Gaussians refitted on the clean train images run on their own."""
    import torch

    view, clean = domain_view(domain), domain_view("clean")
    ks = sorted({k for method_ks in methods.values() for k in method_ks})
    scored = {(c, split): view.get(c, split) for c in covered for split in SCORED_SPLITS}
    normals = {c: adaptation_images(view.get(c, "train"), max(ks), params.seed, c) for c in covered}
    clean_train = [r for c in covered for r in clean.get(c, "train")]

    def save(method: str, k: int, key: tuple[str, str], scores, seconds: float) -> None:
        _save(params, detector, regime, f"{method}_k{k}", domain, key[1], key[0], seed, scored[key], scores, seconds)

    if "feature_align" in methods:
        with model.clock() as clock:
            embeddings = {key: model.embedding_of(records, f"features ({key[0]} {domain} {key[1]})") for key, records in scored.items()}
            added = {c: model.embedding_of(normals[c], f"features ({domain} normals, {c})")[0] for c in covered}
            source = embedding_statistics(model.embedding_of(clean_train, "features (clean train)")[0])
        n_images = sum(map(len, scored.values())) + sum(map(len, normals.values())) + len(clean_train)
        extraction = clock.seconds / max(1, n_images)
        for k in methods["feature_align"]:
            target = embedding_statistics(torch.cat([added[c][:k] for c in covered]))
            for key, (embedding, shapes) in embeddings.items():
                begin = time.perf_counter()
                scores = model.score_embedding(align_embedding(embedding, target, source), shapes)
                save("feature_align", k, key, scores, (time.perf_counter() - begin) / max(len(shapes), 1) + extraction)
            log.info("%s/%s %s aligned to %d %s normals per category", detector, regime, "+".join(covered), k, domain)
    if "adabn" in methods:
        reference = copy.copy(model)  # the Gaussians refitted on the clean images run on their own statistics
        reference.use_feature_store(None)
        reference.use_feature_runner(adabn_network(model, [read_image(r.path) for r in clean_train]))
        try:
            reference.fit_embeddings(reference.embedding_of(clean_train, "features (clean train, own statistics)")[0])
        finally:
            reference.use_feature_runner(None)
        images = {c: [read_image(r.path) for r in normals[c]] for c in covered}
        for k in methods["adabn"]:
            reference.use_feature_runner(adabn_network(model, [image for c in covered for image in images[c][:k]]))
            try:
                for key, records in scored.items():
                    begin = time.perf_counter()
                    scores = reference.score(records)
                    save("adabn", k, key, scores, (time.perf_counter() - begin) / max(len(records), 1))
            finally:
                reference.use_feature_runner(None)
            log.info("%s/%s %s: batch-norm statistics from %d %s normals per category", detector, regime, "+".join(covered), k, domain)


def embedding_statistics(embedding) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of embeddings (N, C, h, w) over images and positions."""
    return channel_statistics(embedding.permute(0, 2, 3, 1).numpy())


def align_embedding(embedding, target: tuple[np.ndarray, np.ndarray], source: tuple[np.ndarray, np.ndarray], eps: float = 1e-6):
    """`align_rows` for embeddings (N, C, h, w): each channel from the target's statistics onto the source's."""
    import torch

    (mean_t, sd_t), (mean_s, sd_s) = target, source
    shape = (1, -1, 1, 1)
    scale = torch.from_numpy(sd_s / np.maximum(sd_t, eps)).float().reshape(shape)
    return (embedding - torch.from_numpy(mean_t).float().reshape(shape)) * scale + torch.from_numpy(mean_s).float().reshape(shape)


def extend_bank(params: Params, model: PatchBankDetector, detector: str, regime: str, covered: list[str], seed: int, domain: str,
                added: dict, scored: dict, rows: dict, seconds_per_extraction: float, ks: list[int]) -> None:
    """Few-shot: the K normals' patches added to the clean bank, for each K of `ks`."""
    # The bank only grows, so each K searches just the patches added since the previous K and
    # merges them with the neighbours found so far: exact k-NN of the extended bank.
    adapted = copy.copy(model)  # shares the clean bank array; add_rows builds a new one
    found = {key: adapted.neighbours(r.rows.reshape(-1, r.rows.shape[-1])) for key, r in rows.items()}
    previous, patches = 0, 0
    for k in ks:
        for c in covered:
            block = added[c].take(range(previous, k))
            if len(block):
                offset = adapted.memory_bank_.shape[0]
                patches += adapted.add_rows(block)
                part = NearestNeighbours(block.bank_rows())
                for key, r in rows.items():
                    d, i = part.query(r.rows.reshape(-1, r.rows.shape[-1]), adapted.n_neighbours)
                    found[key] = merge_neighbours(*found[key], d, i + offset, adapted.n_neighbours)
        previous = k
        for (c, split), records in scored.items():
            begin = time.perf_counter()
            scores = adapted.scores_from_neighbours(rows[(c, split)], *found[(c, split)])
            seconds = (time.perf_counter() - begin) / max(len(records), 1) + seconds_per_extraction
            _save(params, detector, regime, f"fewshot_k{k}", domain, split, c, seed, records, scores, seconds,
                  added_patches=patches, memory_bank_size=adapted.memory_bank_.shape[0])
        log.info("%s/%s %s + %d %s normals per category: bank %d (+%d patches)", detector, regime, "+".join(covered), k, domain,
                 adapted.memory_bank_.shape[0], patches)
