"""Repository contracts: environment.yml lists pyproject's dependencies; outputs are not in git."""

import tomllib

import yaml

from conftest import REPO


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_deps = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_deps) == wanted
    assert "python=3.11" in env["dependencies"]


def test_ci_runs_the_readme_test_line():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    lines = [l for l in block.splitlines()[1:] if l.strip() and not l.strip().startswith("#")]
    assert len(lines) == 2
    assert lines[1] in (REPO / ".ci/run").read_text()
