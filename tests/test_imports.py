"""A job pays only for what it uses: the stages that read results (and the CLI's argument
parsing, which every job runs) import no deep-learning stack. Each check runs in a fresh
interpreter, so an import made by another test cannot hide one. The e2e test runs these stages
for real and checks the same after they ran (tests/e2e/test_dag.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "torchvision", "faiss")
LIGHT_STAGES = ("shiftad.evaluate.stage", "shiftad.statistics.stage", "shiftad.report.stage", "shiftad.notebooks",
                "shiftad.split", "shiftad.data.stage", "shiftad.pipeline")


def heavy_modules_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("module", LIGHT_STAGES)
def test_a_stage_that_reads_results_imports_no_deep_learning_stack(module):
    assert heavy_modules_after(f"import {module}") == []


def test_parsing_any_stage_command_imports_no_deep_learning_stack():
    code = ("from shiftad.cli import build_parser\n"
            "parser = build_parser()\n"
            "for argv in (['fit', '--detector', 'patchcore', '--regime', 'global', '--domain', 'clean'], ['evaluate'], ['report'],\n"
            "             ['export', '--detector', 'padim'], ['robustness', '--detector', 'knn']):\n"
            "    parser.parse_args(argv)")
    assert heavy_modules_after(code) == []


def test_the_probe_sees_a_heavy_import():
    assert heavy_modules_after("import torch") == ["torch"]
