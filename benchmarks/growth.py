"""How the default DAG's cost grows with categories and train images, and what that says about
the full MVTec AD study on a CPU.

Each setting runs the real default DAG (`snakemake --cores 2`) in a temporary copy of the
project with one override (categories, or `dataset.synthetic.train_good`), then reads its
per-job benchmark files (benchmarks/profile_dag.py). It prints wall minutes and job-seconds per
setting, per rule, and a linear fit of job-seconds against the images the DAG handles, which it
extrapolates to MVTec AD's image counts.

    python benchmarks/growth.py                                  # 2, 3, 4 categories; 50, 100, 200 train images
    python benchmarks/growth.py --settings cats2 train100 --json growth.json
Run it on an idle machine, one DAG at a time (each setting takes 10-40 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from profile_dag import read_jobs, summarise  # noqa: E402

PROJECT_FILES = ["Snakefile", "params.yaml", "environment.yml", "workflow", "src", "notebooks"]
SETTINGS = {
    "cats2": {"categories": ["brick", "widget"]},
    "cats3": {},  # the default: brick, gravel, widget with 50 train images each
    "cats4": {"categories": ["brick", "gravel", "grass", "widget"]},
    "train100": {"dataset": {"synthetic": {"train_good": 100}}},
    "train200": {"dataset": {"synthetic": {"train_good": 200}}},
}
SETTINGS["train50"] = SETTINGS["cats3"]
# MVTec AD: 15 categories, 3,629 train images (242 per category on average), 1,725 test images
MVTEC = {"categories": 15, "train_per_category": 242, "test_per_category": 115}


def images_handled(params: dict) -> int:
    """Images one category set puts through the DAG: train (+ its val share) and test, both domains."""
    synthetic = params["dataset"]["synthetic"]
    n_categories = len(params["categories"])
    return 2 * n_categories * (synthetic["train_good"] + synthetic["test_good"] + 3 * synthetic["test_per_defect"])


def run_setting(name: str, override: dict, keep: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"shiftad-growth-{name}-"))
    for item in PROJECT_FILES:
        source = REPO / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / item)
    (work / "growth.yaml").write_text(yaml.safe_dump(override or {"seed": 0}))
    snakemake = Path(sys.executable).parent / "snakemake"
    start = time.perf_counter()
    env = {**os.environ, "PATH": f"{snakemake.parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # the jobs call `shiftad`
    subprocess.run([str(snakemake), "--cores", "2", "--configfile", "growth.yaml", "--quiet"], cwd=work, check=True,
                   stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    from shiftad.params import deep_merge

    params = deep_merge(yaml.safe_load((REPO / "params.yaml").read_text()), override)
    jobs = read_jobs(work / "logs" / "benchmarks")
    result = {"setting": name, "wall_s": wall, "job_s": sum(j.seconds for j in jobs), "jobs": len(jobs),
              "images": images_handled(params), "per_rule": {r["group"]: r["job_s"] for r in summarise(jobs, lambda j: j.rule)}}
    if not keep:
        shutil.rmtree(work)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["cats2", "cats3", "cats4", "train100", "train200"], choices=sorted(SETTINGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep each run's project folder")
    args = parser.parse_args(argv)
    results = []
    for name in args.settings:
        print(f"--- {name}: {SETTINGS[name] or 'the default DAG'}", flush=True)
        results.append(run_setting(name, SETTINGS[name], args.keep))
        r = results[-1]
        print(f"    {r['jobs']} jobs, {r['wall_s'] / 60:.1f} min wall, {r['job_s']:.0f} job-seconds, {r['images']} images", flush=True)
    print(f"\n{'setting':10}{'images':>8}{'jobs':>6}{'wall min':>10}{'job-s':>8}")
    for r in results:
        print(f"{r['setting']:10}{r['images']:>8}{r['jobs']:>6}{r['wall_s'] / 60:>10.1f}{r['job_s']:>8.0f}")
    if len(results) >= 2:
        import numpy as np

        x = np.array([r["images"] for r in results], dtype=float)
        y = np.array([r["job_s"] for r in results])
        slope, intercept = np.polyfit(x, y, 1)
        mvtec_images = 2 * MVTEC["categories"] * (MVTEC["train_per_category"] + MVTEC["test_per_category"])
        estimate = intercept + slope * mvtec_images
        print(f"\njob-seconds ≈ {intercept:.0f} + {slope:.2f} × images (least squares over {len(results)} runs)")
        print(f"MVTec AD at this config (Lite0, smoke-scale trained detectors, 256 px): {mvtec_images} images -> "
              f"≈ {estimate / 3600:.1f} CPU-hours of jobs, ≈ {estimate / 2 / 3600:.1f} h on 2 cores")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
