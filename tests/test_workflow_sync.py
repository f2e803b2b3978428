"""Snakefile and dvc.yaml describe the same DAG: the same commands, each writing the same outputs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent


def snakemake_jobs(extra: list[str] | None = None, field: str = "output") -> dict[str, set[str]]:
    """command -> outputs (or inputs), from a dry run of the whole DAG."""
    out = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "--forceall", *(extra or [])], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", out):
        command = re.search(r"Shell command: (.+?)(?: 2> \S+)?$", block, re.M)
        outputs = re.search(rf"^\s+{field}: (.+)$", block, re.M)
        if command and command.group(1).strip() != "None":  # rule all has no command
            # Snakemake passes the job's threads (it may scale them to --cores); DVC runs take params' own
            jobs[re.sub(r" --root \S+ --threads \d+", "", command.group(1).strip())] = set(outputs.group(1).split(", ")) if outputs else set()
    return jobs


def dvc_stages(field: str = "outs") -> dict[str, set[str]]:
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {stage.cmd: {str(o.def_path) for o in getattr(stage, field)} for stage in repo.index.stages}


def covered(path: str, outs: set[str]) -> bool:
    return any(path == o or path.startswith(o.rstrip("/") + "/") for o in outs)


def test_snakefile_and_dvc_yaml_run_the_same_commands_with_the_same_outputs():
    smk, dvc = snakemake_jobs(), dvc_stages()
    assert set(smk) == set(dvc), f"only in Snakefile: {set(smk) - set(dvc)}; only in dvc.yaml: {set(dvc) - set(smk)}"
    for command, outputs in smk.items():
        missing = [p for p in outputs if not covered(p, dvc[command])]
        assert not missing, f"{command}: Snakemake writes {missing}, which dvc.yaml does not track"
        unwritten = [o for o in dvc[command] if not any(covered(p, {o}) or covered(o, {p}) for p in outputs)]
        assert not unwritten, f"{command}: dvc.yaml tracks {unwritten}, which Snakemake does not write"


def test_every_stage_has_its_rule_file_module_and_cli_verb():
    from shiftad.cli import build_parser

    verbs = set(build_parser()._subparsers._group_actions[0].choices)
    for stage in ("data", "split", "features", "fit", "score", "fewshot", "kshot", "evaluate", "robustness", "statistics", "report", "export"):
        assert (REPO / "workflow" / "rules" / f"{stage}.smk").is_file()
        assert (REPO / "src" / "shiftad" / f"{stage}.py").is_file() or (REPO / "src" / "shiftad" / stage).is_dir()
        assert stage in verbs
    # the teachers (EfficientAD, Uninformed Students): rule file and module `distill`, verb `distill-teacher`
    assert (REPO / "workflow/rules/distill.smk").is_file() and (REPO / "src/shiftad/distill.py").is_file() and "distill-teacher" in verbs


def test_configfile_overrides_reach_the_cli(tmp_path):
    override = tmp_path / "my.yaml"
    override.write_text("patchcore: {coreset_ratio: 0.02}\n")
    commands = snakemake_jobs(["--configfile", str(override)])
    fit = next(c for c in commands if c.startswith("shiftad fit"))
    assert f"--params params.yaml --params {override}" in fit


def test_both_rerun_a_stage_when_the_same_source_code_changes():
    """Same source files; Snakemake lists files (it compares modification times, and an edit
    does not touch the folder's), DVC may list folders (it hashes their contents)."""
    import os

    from shiftad.pipeline import source_files

    smk, dvc = snakemake_jobs(field="input"), dvc_stages("deps")
    os.chdir(REPO)
    for command in dvc:
        smk_code = {p for p in smk[command] if p.startswith("src/")}
        dvc_code = set(source_files(*sorted(p for p in dvc[command] if p.startswith("src/"))))
        assert smk_code == dvc_code, f"{command}: Snakefile code inputs {smk_code} != dvc.yaml deps {dvc_code}"
        assert all(p.endswith(".py") for p in smk_code), f"{command}: a folder as Snakemake input misses edits inside it"

