"""`shiftad <stage>`: one subcommand per DAG stage. Thin: parse, load params, call the stage."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from shiftad.errors import ParamsError, ShiftadError
from shiftad.params import RULE_NAMES, Params, load_params
from shiftad.pipeline import GLOBAL_CATEGORY, REGIMES, RUNTIMES, TEACHER_DETECTORS

log = logging.getLogger("shiftad")


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _limit_threads(threads: int) -> None:
    """Cap every native thread pool of this process (torch, faiss, numpy/scipy BLAS, OpenMP) at
    `threads`. The stages import those libraries after this, and they read these variables when
    they load; a library already loaded (a test calling main()) is set directly."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def _enter_root(params: Params, args: argparse.Namespace) -> Params:
    """--root: run the stage inside DIR (its relative data/, results/ and report/ paths), with the
    params files, the notebooks and the user's own files anchored to the project folder first."""
    args.project = Path.cwd()
    args.params = [str(Path(p).resolve()) for p in (args.params or ["params.yaml"])]
    root = Path(args.root)
    if root.resolve() == args.project.resolve():
        return params
    if not root.is_dir():
        raise ShiftadError(f"--root: folder {root} not found (the folder holding data/, results/ and report/)")
    anchored = params.anchored(args.project)
    os.chdir(root)
    log.info("working in %s (--root)", root)
    return anchored


def _stage_threads(params: Params, args: argparse.Namespace) -> int:
    """--threads, else the stage's rule's threads in params (so DVC runs get the same as Snakemake jobs)."""
    if args.threads is not None:
        if args.threads < 1:
            raise ShiftadError(f"--threads: must be >= 1, got {args.threads}")
        return args.threads
    rule = args.command.replace("-", "_")
    return params.rule_threads(rule) if rule in RULE_NAMES else params.threads


def _training_seed(params: Params, args: argparse.Namespace) -> int:
    """--seed (one of params' seeds), else the reference seed (seeds[0])."""
    return params.reference_seed if args.seed is None else params.check_training_seed(args.seed)


def cmd_data(params: Params, args: argparse.Namespace) -> None:
    from shiftad.data.stage import run_data_stage

    records = run_data_stage(params, progress=not args.quiet)
    log.info("manifest: %d images", len(records))


def cmd_split(params: Params, args: argparse.Namespace) -> None:
    from shiftad.paths import MANIFEST, SPLITS
    from shiftad.split import run_split_stage

    splits = run_split_stage(params, MANIFEST, SPLITS)
    for category, parts in splits["categories"].items():
        log.info("%s: %s", category, ", ".join(f"{k} {len(v)}" for k, v in parts.items()))


def cmd_shift(params: Params, args: argparse.Namespace) -> None:
    from shiftad.shift import run_shift_stage

    for domain in [args.domain] if args.domain else list(params.domains):
        content = run_shift_stage(params, domain, progress=not args.quiet)
        settings = {k: content[k] for k in ("corruption", "severity", "families", "jitter") if k in content}
        log.info("domain %s (%s): %d images, %s", domain, content["recipe"],
                 sum(len(v) for c in content["categories"].values() for v in c.values()), settings)


def cmd_features(params: Params, args: argparse.Namespace) -> None:
    from shiftad.features import run_features_stage

    run_features_stage(params, args.set, args.spec, progress=not args.quiet)


def cmd_distill_teacher(params: Params, args: argparse.Namespace) -> None:
    from shiftad.distill import run_distill_stage

    run_distill_stage(params, args.detector, progress=not args.quiet)


def cmd_fit(params: Params, args: argparse.Namespace) -> None:
    from shiftad.fit import run_fit_stage

    run_fit_stage(params, args.detector, args.regime, params.check_fit_domain(args.domain, args.detector), args.category, _training_seed(params, args), progress=not args.quiet)


def cmd_score(params: Params, args: argparse.Namespace) -> None:
    from shiftad.score import run_score_stage

    model = params.check_fit_domain(args.model, args.detector) if args.model else None
    run_score_stage(params, args.detector, args.regime, model, args.category, _training_seed(params, args), progress=not args.quiet)


def cmd_evaluate(params: Params, args: argparse.Namespace) -> None:
    from shiftad.evaluate.stage import run_evaluate_stage

    run_evaluate_stage(params, progress=not args.quiet)


def cmd_robustness(params: Params, args: argparse.Namespace) -> None:
    from shiftad.robustness import run_robustness_stage
    from shiftad.pipeline import model_categories

    if args.detector not in (params.robustness.detectors or []):
        raise ParamsError(f"robustness.detectors: the sweep runs for {params.robustness.detectors}, not '{args.detector}'; add it there")
    for category in model_categories(params, "per_class", args.category):
        run_robustness_stage(params, args.detector, category, progress=not args.quiet)


def cmd_kshot(params: Params, args: argparse.Namespace) -> None:
    from shiftad.kshot import run_kshot_stage

    run_kshot_stage(params, args.detector, progress=not args.quiet)


def cmd_fewshot(params: Params, args: argparse.Namespace) -> None:
    from shiftad.fewshot import run_fewshot_stage

    run_fewshot_stage(params, args.detector, args.regime, _training_seed(params, args), progress=not args.quiet)


def cmd_statistics(params: Params, args: argparse.Namespace) -> None:
    from shiftad.statistics.stage import run_statistics_stage

    run_statistics_stage(params, progress=not args.quiet)


def cmd_notebooks(params: Params, args: argparse.Namespace) -> None:
    from shiftad.notebooks import run_notebooks_stage

    run_notebooks_stage(params, progress=not args.quiet, params_files=args.params, sources=args.project / "notebooks")


def cmd_report(params: Params, args: argparse.Namespace) -> None:
    from shiftad.report.stage import run_report_stage

    run_report_stage(params, progress=not args.quiet)


def cmd_screenshot(params: Params, args: argparse.Namespace) -> None:
    from shiftad.report.browser import screenshot

    out = screenshot(args.page, args.out, width=args.width, height=args.height)
    log.info("%s: screenshot of %s", out, args.page)


def cmd_export(params: Params, args: argparse.Namespace) -> None:
    from shiftad.export import export_bundle
    from shiftad.paths import bundle_dir

    if args.out is not None and (args.regime is None or args.domain is None):
        raise ShiftadError("export --out: names one bundle; give --regime and --domain with it")
    onnx_files: dict = {}  # one ONNX export per feature network, copied into every bundle that runs it
    for regime in [args.regime] if args.regime else REGIMES:
        for domain in [params.check_fit_domain(args.domain, args.detector)] if args.domain else params.fit_domains_of(args.detector):
            path = export_bundle(params, args.detector, regime, domain, args.out or bundle_dir(args.detector, regime, domain),
                                 onnx_files=onnx_files)
            log.info("%s: bundle of %s/%s/%s", path, args.detector, regime, domain)


def cmd_predict(params: Params | None, args: argparse.Namespace) -> int:
    from shiftad.bundle import load_bundle
    from shiftad.predict import predict, summary_line

    bundle = load_bundle(args.bundle, runtime=args.runtime)
    records = predict(bundle, args.images, args.category, Path(args.out), progress=not args.quiet, batch_size=args.batch_size)
    print(summary_line(records))
    return 1 if any("error" in r for r in records) else 0


def cmd_serve(params: Params | None, args: argparse.Namespace) -> None:
    import uvicorn

    from shiftad.bundle import load_bundle
    from shiftad.serve import create_app

    app = create_app(load_bundle(args.bundle, runtime=args.runtime), max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def cmd_check_params(params: Params, args: argparse.Namespace) -> None:
    print("params are valid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shiftad", description="Anomaly detection under domain shift: one subcommand per DAG stage.")
    parser.add_argument("--version", action="version", version=f"shiftad {__import__('shiftad').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--params", action="append", metavar="YAML", help="params file; repeat to override in order (default: params.yaml)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--threads", type=int, metavar="N", help="CPU threads (torch, faiss); overrides params' threads (Snakemake passes the job's)")
        p.add_argument("--root", default=".", metavar="DIR",
                       help="the folder the DAG's data/, results/ and report/ live under (default: here). Snakemake passes its local "
                            "copy of the default storage when jobs share no filesystem (Kubernetes); params files, notebooks and "
                            "your own data and weights files stay relative to here")
        p.set_defaults(func=func)
        return p

    add("check-params", cmd_check_params, "validate params.yaml (and overrides) and exit")
    add("data", cmd_data, "generate / download / scan the data set and write data/processed/manifest.json")
    add("split", cmd_split, "write seeded train/val/test splits to data/processed/splits.json")
    shift = add("shift", cmd_shift, "write a shift domain's copy of every split (params `domains`: mvtec_shift, camera_change or corruption "
                "recipe) to data/domains/<domain>/ and data/processed/domains/<domain>.json")
    shift.add_argument("--domain", help="this shift domain only (default: every one in turn)")
    features = add("features", cmd_features, "run each frozen network of the study (PatchCore, PaDiM, kNN, routed AE) once over every image "
                   "it will see and store the outputs in results/features/<set>/<spec>/ (later jobs look them up)")
    features.add_argument("--spec", help="only this network (its spec id, the folder name; default: every one)")
    features.add_argument("--set", required=True, choices=("study", "robustness"),
                          help="study: every split of both domains; robustness: the images of the severity sweep")
    distill = add("distill-teacher", cmd_distill_teacher, "a detector's teacher, shared by all its fits: EfficientAD's PDN (distilled from the offline backbone, or "
                  "checked and copied from efficientad.teacher.source) | Uninformed Students' patch networks (distilled)")
    distill.add_argument("--detector", required=True, choices=TEACHER_DETECTORS)
    fit = add("fit", cmd_fit, "fit a detector's models of one regime and training domain (every category, or --category)")
    fit.add_argument("--detector", required=True)
    fit.add_argument("--regime", required=True, choices=REGIMES)
    fit.add_argument("--domain", required=True, help="domain of the training images (clean, or one of params refit.domains for a detector of refit.detectors)")
    fit.add_argument("--category", help=f"only this category's model (or '{GLOBAL_CATEGORY}', the global model); default: every model of the regime")
    fit.add_argument("--seed", type=int, help="training seed, one of params' seeds (default: the first)")
    score = add("score", cmd_score, "score the val and test images of every domain with a regime's fitted models (per class: each its own category; global: every category)")
    score.add_argument("--detector", required=True)
    score.add_argument("--regime", required=True, choices=REGIMES)
    score.add_argument("--model", help="only the models fitted on this domain (default: the models of every domain the detector is fitted on)")
    score.add_argument("--category", help=f"only this category's model (or '{GLOBAL_CATEGORY}', the global model); default: every model of the regime")
    score.add_argument("--seed", type=int, help="the model's training seed, one of params' seeds (default: the first)")
    add("evaluate", cmd_evaluate, "thresholds from val, metrics on test, per-image records and heatmaps")
    robustness = add("robustness", cmd_robustness, "severity sweep: each category's test images shifted by one family at a time, scored by its clean per-class model")
    robustness.add_argument("--detector", required=True)
    robustness.add_argument("--category", help="only this category (default: every category)")
    kshot = add("kshot", cmd_kshot, "K-shot learning curves of a memory-bank detector, every category: K clean train images x seeds, threshold on val")
    kshot.add_argument("--detector", required=True)
    fewshot = add("fewshot", cmd_fewshot, "few-shot adaptation: clean memory banks plus K shifted normal train images score the shifted val/test images")
    fewshot.add_argument("--detector", required=True)
    fewshot.add_argument("--regime", required=True, choices=["per_class", "global"])
    fewshot.add_argument("--seed", type=int, help="the clean model's training seed, one of params' seeds (default: the first)")
    add("statistics", cmd_statistics, "bootstrap CIs, paired tests (bootstrap, DeLong, Holm), breakdowns and error lists")
    add("report", cmd_report, "tables (CSV, Markdown, LaTeX), figures (PNG, PDF) and report/index.html")
    shot = add("screenshot", cmd_screenshot, "render a report page in headless Chromium and save a PNG (a tool, not a DAG stage)")
    shot.add_argument("page", nargs="?", default="report/index.html")
    shot.add_argument("--out", default="report/screenshot.png")
    shot.add_argument("--width", type=int, default=1280)
    shot.add_argument("--height", type=int, default=2400)
    export = add("export", cmd_export, "write self-contained model bundles (state, validation thresholds, params, versions, hashes): "
                 "one per regime and domain of a detector (results/bundles/<detector>/<regime>/<domain>), or the one of --regime and --domain")
    export.add_argument("--detector", required=True)
    export.add_argument("--regime", choices=REGIMES, help="only this regime's bundles")
    export.add_argument("--domain", help="only this training domain's bundles (default: every domain the detector is fitted on)")
    export.add_argument("--out", help="bundle folder to write (one bundle: with --regime and --domain; default results/bundles/...)")
    predict = add("predict", cmd_predict, "inspect images with a bundle: JSON record + heatmap overlay per image, a summary line")
    predict.add_argument("--bundle", required=True)
    predict.add_argument("images", nargs="+", help="image files, globs or folders")
    predict.add_argument("--category", help="needed when the bundle holds several categories")
    predict.add_argument("--out", default="predictions", help="folder for the records and overlays (default: predictions)")
    predict.add_argument("--runtime", choices=RUNTIMES, default="torch", help="run the feature network with torch or ONNX Runtime")
    predict.add_argument("--batch-size", type=int, help="images per forward pass (default: the model's)")
    predict.set_defaults(needs_params=False)
    serve = add("serve", cmd_serve, "serve a bundle over HTTP: POST /predict, GET /health, GET /model, OpenAPI at /docs")
    serve.add_argument("--bundle", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--runtime", choices=RUNTIMES, default="torch", help="run the feature network with torch or ONNX Runtime")
    serve.add_argument("--max-upload-mb", type=float, default=20.0)
    serve.add_argument("--max-pixels", type=int, default=40_000_000, help="larger images are refused from their header (decompression bombs)")
    serve.set_defaults(needs_params=False)
    add("notebooks", cmd_notebooks, "execute the notebooks with papermill into report/notebooks/ and convert them to HTML")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs a harmless failed AVX2 import
    try:
        params = load_params(args.params) if getattr(args, "needs_params", True) else None
        if params is not None:
            params = params.model_copy(update={"threads": _stage_threads(params, args)})
            _limit_threads(params.threads)
            params = _enter_root(params, args)
        status = args.func(params, args)
    except ShiftadError as exc:
        print(f"shiftad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    raise SystemExit(main())
