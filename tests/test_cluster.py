"""Running the DAG beyond one machine: per-rule resources from params, a lint-clean Snakefile and
the SLURM profile's dry run of the whole default DAG."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from shiftad.errors import ParamsError
from shiftad.params import GPU_RULES, RULE_NAMES, load_params, validate_params

BIN = Path(sys.executable).parent


def snakemake(*args: str) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(REPO)}
    if "PYTHONPATH" in os.environ:  # a checkout tested against another checkout's environment
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run([str(BIN / "snakemake"), *args], cwd=REPO, capture_output=True, text=True, env=env)


def dry_run_jobs(out: str) -> dict[str, list[dict[str, str]]]:
    """rule -> one dict per job: its resources and shell command, from `snakemake -n -p` output."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        if not rule:
            continue
        resources = re.search(r"^\s+resources: (.+)$", block, re.M)
        command = re.search(r"Shell command: (.+)$", block, re.M)
        jobs.setdefault(rule.group(1), []).append({
            **dict(kv.split("=", 1) for kv in (resources.group(1).split(", ") if resources else [])),
            "command": command.group(1) if command else "",
        })
    return jobs


def test_rule_resources_come_from_params_with_per_rule_overrides():
    params = validate_params({"threads": 2, "resources": {"mem_mb": 3000, "runtime": 30, "gpu": 1, "gpu_model": "a100",
                                                          "rules": {"fit": {"threads": 8, "mem_mb": 32000, "gpu": 2}}}})
    assert params.rule_threads("fit") == 8 and params.rule_threads("score") == 2
    assert params.rule_resources("fit") == {"mem_mb": 32000, "runtime": 30, "gpu": 2, "gpu_model": "a100"}
    assert params.rule_resources("score") == {"mem_mb": 3000, "runtime": 30, "gpu": 1, "gpu_model": "a100"}
    assert params.rule_resources("report") == {"mem_mb": 3000, "runtime": 30}  # runs no model: never a GPU
    assert set(GPU_RULES) < set(RULE_NAMES)


def test_laptop_defaults_ask_for_no_gpu():
    params = load_params([REPO / "params.yaml"])
    for rule in RULE_NAMES:
        assert "gpu" not in params.rule_resources(rule), rule


@pytest.mark.parametrize("rules, match", [
    ({"fitt": {"mem_mb": 1}}, r"resources.rules.fitt: no such rule"),
    ({"report": {"gpu": 1}}, r"resources.rules.report.gpu: report runs no model"),
    ({"fit": {"runtime": 0}}, r"resources.rules.fit.runtime"),
])
def test_bad_resources_name_the_key(rules, match):
    with pytest.raises(ParamsError, match=match):
        validate_params({"resources": {"rules": rules}})


def test_every_rule_of_the_snakefile_is_a_known_rule_with_threads_and_resources():
    text = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    rules = re.findall(r"^\s*rule (\w+):", text, re.M)
    assert sorted(rules) == sorted(RULE_NAMES)
    for rule in rules:
        assert f'threads: P.rule_threads("{rule}")' in text and f'**P.rule_resources("{rule}")' in text, rule


def test_snakemake_lint_is_clean():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_slurm_profile_dry_runs_the_whole_default_dag_with_params_resources(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    override = tmp_path / "gpu.yaml"
    override.write_text(yaml.safe_dump({"resources": {"gpu": 1, "gpu_model": "a100", "rules": {"fit": {"threads": 4, "mem_mb": 32000}}}}))
    result = snakemake("-n", "-p", "--forceall", "--cores", "8", "--profile", "profiles/slurm", "--configfile", str(override))
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = dry_run_jobs(result.stdout)
    local = dry_run_jobs(snakemake("-n", "-p", "--forceall").stdout)
    assert {r: len(j) for r, j in jobs.items()} == {r: len(j) for r, j in local.items()}  # the whole DAG, job for job
    assert len(jobs["fit"]) >= 12 and len(jobs["score"]) >= 12
    for job in jobs["fit"]:
        assert (job["gpu"], job["gpu_model"], job["mem_mb"]) == ("1", "a100", "32000")
        assert "--threads 4" in job["command"]
    for job in jobs["report"] + jobs["evaluate"]:
        assert "gpu" not in job and job["mem_mb"] == "4096"


def job_counts(out: str) -> dict[str, int]:
    stats = out.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats.split("\n\n", 1)[0], re.M)}


def test_the_full_study_config_dry_runs_every_category_detector_and_seed_with_gpus():
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]'")
    params = load_params([REPO / "params.yaml", REPO / "config/mvtec_full.yaml"])
    assert len(params.categories) == 15 and params.seeds == [0, 1, 2] and params.dataset.source == "mvtec"
    assert params.efficientad.scale == params.uninformed_students.scale == "paper"
    assert params.split.mvtec.val_anomaly_fraction == 0  # the whole official test set is tested
    result = snakemake("-n", "--profile", "profiles/slurm", "--configfile", "config/mvtec_full.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout)
    n_det, n_cat, n_seed = len(params.detectors), 15, 3
    n_fits = sum(len(params.fit_domains_of(d)) for d in params.detectors)
    assert n_fits == 2 * n_det  # the full study refits every detector on camera_change
    assert counts["fit"] == n_fits * (n_cat + 1) * n_seed  # per class + global, every fitted domain, every seed
    assert counts["score"] == n_det * 2 * n_seed  # per regime: every fitted domain's models, every category
    assert counts["shift"] == len(params.domains)  # one job per shift domain
    assert counts["export"] == n_det and counts["robustness"] == n_det  # one job per detector
    readme = (REPO / "README.md").read_text()
    assert f"{counts['total']:,} jobs" in readme, "README: the full study's job count is out of date"
    fit_resources = dry_run_jobs(result.stdout)["fit"][0]
    assert fit_resources["gpu"] == "1" and fit_resources["mem_mb"] == "48000"


def test_the_full_study_configs_layers_exist_in_its_backbones():
    import timm

    from shiftad.backbones import is_vision_transformer

    params = load_params([REPO / "params.yaml", REPO / "config/mvtec_full.yaml"])
    wanted = {params.backbone.name: set(params.patchcore.layers) | set(params.padim.layers) | set(params.routed_ae.layers)
                                    | set(params.efficientad.teacher.layers),
              params.uninformed_students.teacher.backbone: set(params.uninformed_students.teacher.layers)}
    for name, layers in wanted.items():
        modules = dict(timm.create_model(name, pretrained=False).named_modules())  # architecture only: no download
        assert layers <= set(modules), f"{name}: {sorted(layers - set(modules))} are not layers"
    assert is_vision_transformer(params.knn.backbone)


def test_kubernetes_profile_dry_runs_the_whole_default_dag_through_storage():
    pytest.importorskip("snakemake_executor_plugin_kubernetes", reason="pip install -e '.[kubernetes]'")
    pytest.importorskip("snakemake_storage_plugin_fs", reason="pip install -e '.[kubernetes]'")
    result = snakemake("-n", "-p", "--forceall", "--profile", "profiles/kubernetes")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = dry_run_jobs(result.stdout)
    local = dry_run_jobs(snakemake("-n", "-p", "--forceall").stdout)
    assert {r: len(j) for r, j in jobs.items()} == {r: len(j) for r, j in local.items()}
    # every stage works inside Snakemake's local copy of the storage, and reads its images from there
    for rule, rule_jobs in jobs.items():
        for job in rule_jobs:
            if job["command"] not in ("", "None"):  # rule all runs nothing
                assert "--root .snakemake/storage/fs/mnt/shiftad " in job["command"], (rule, job["command"])
    fit = re.search(r"rule fit:\n\s+input: (.+)", result.stdout).group(1)
    assert "/mnt/shiftad/data/raw/synthetic (retrieve from storage)" in fit and "src/shiftad/fit.py," in fit  # code: local


def test_the_cli_runs_a_stage_inside_root_with_the_users_files_anchored_to_the_project(tmp_path, monkeypatch):
    from shiftad import cli

    project, root = tmp_path / "project", tmp_path / "project/.snakemake/storage/fs/store"
    root.mkdir(parents=True)
    (project / "params.yaml").write_text(yaml.safe_dump({"dataset": {"source": "folder", "root": "my_part"},
                                                         "categories": ["part"], "split": {"policy": "ratios"},
                                                         "backbone": {"weights": "weights/lite0.safetensors"}}))
    monkeypatch.chdir(project)
    seen = {}
    monkeypatch.setattr(cli, "cmd_check_params", lambda params, args: seen.update(cwd=Path.cwd(), params=params, files=args.params))
    assert cli.main(["check-params", "--root", ".snakemake/storage/fs/store"]) == 0
    assert seen["cwd"] == root.resolve()
    assert seen["params"].dataset.root == str(project / "my_part")  # the user's folder, not one inside the storage
    assert seen["params"].backbone.weights == str(project / "weights/lite0.safetensors")
    assert seen["files"] == [str(project / "params.yaml")]
    monkeypatch.chdir(project)
    assert cli.main(["check-params", "--root", "missing"]) == 2  # a clear error, not a stage run elsewhere


THREADS_PROBE = """
import sys
from shiftad.cli import main
assert main(["check-params", "--params", sys.argv[1], "--threads", "1"]) == 0
import faiss, numpy, torch  # loaded after the CLI set the limits, as every stage loads them
from threadpoolctl import threadpool_info
print("threads:", torch.get_num_threads(), faiss.omp_get_max_threads(), sorted({p["num_threads"] for p in threadpool_info()}))
"""


def test_threads_cap_every_native_pool_of_any_stage():
    """A job's threads reach torch, faiss and numpy's BLAS whatever the stage (evaluate and
    statistics too), not only in the stages that happen to call torch."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(REPO / "params.yaml")], capture_output=True, text=True,
                         env=env, cwd=REPO, check=True).stdout
    assert out.splitlines()[-1] == "threads: 1 1 [1]", out  # unset, each is the core count (2 here)
