"""The notebooks stage: papermill executes, nbconvert renders, a failing cell fails the stage;
the shipped notebooks hold no pipeline logic and read like a report."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import REPO
from shiftad.notebooks import run_notebooks_stage
from shiftad.params import validate_params

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def write_notebook(path, code: str) -> None:
    parameters = new_code_cell("detectors = []\ncategories = []\nproject_dir = '.'")
    parameters.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell("# t"), parameters, new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_a_failing_cell_fails_the_stage_and_leaves_no_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = tmp_path / "nb"
    sources.mkdir()
    write_notebook(sources / "a.ipynb", "print(sum(range(4)), categories)")
    out = tmp_path / "report/notebooks"
    written = run_notebooks_stage(validate_params({"categories": ["x"]}), progress=False, sources=sources, out=out)
    assert written == [out / "a.html"]
    executed = nbformat.read(out / "a.ipynb", as_version=4)
    assert "6 ['x']" in json.dumps(executed.cells[-1].outputs)  # the injected parameter reached the cell
    assert "<html" in (out / "a.html").read_text().lower()


def test_kernels_side_by_side_talk_over_their_own_sockets(tmp_path, monkeypatch):
    """Kernels started together over TCP can draw the same free port, and one dies before it
    replies; each kernel gets Unix sockets in a folder of its own instead."""
    monkeypatch.chdir(tmp_path)
    sources = tmp_path / "nb"
    sources.mkdir()
    for name in "abcd":
        write_notebook(sources / f"{name}.ipynb", "from ipykernel.kernelapp import IPKernelApp\n"
                                                  "app = IPKernelApp.instance()\nprint(app.transport, app.ip)")
    out = tmp_path / "report/notebooks"
    run_notebooks_stage(validate_params({"threads": 4}), progress=False, sources=sources, out=out)
    printed = [json.dumps(nbformat.read(out / f"{name}.ipynb", as_version=4).cells[-1].outputs) for name in "abcd"]
    assert all("ipc " in text for text in printed)
    assert len({text.split("ipc ")[1] for text in printed}) == 4  # no two kernels share a socket path

    write_notebook(sources / "b.ipynb", "raise ValueError('broken cell')")
    import shutil

    shutil.rmtree(out)
    with pytest.raises(Exception, match="broken cell"):
        run_notebooks_stage(validate_params({}), progress=False, sources=sources, out=out)
    assert not out.exists()  # nothing half-written looks complete


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shipped_notebooks_are_parameterised_and_hold_no_logic(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", []), "papermill needs a cell tagged 'parameters'"
    for cell in code:
        assert not cell.get("outputs"), "commit notebooks without outputs"
        assert "def " not in cell.source and "class " not in cell.source, f"{path.name}: logic belongs in shiftad, not in cells"
    # every figure or table cell comes after a sentence saying what it shows
    for previous, cell in zip(nb.cells, nb.cells[1:]):
        if cell.cell_type == "code" and ("F." in cell.source or "T." in cell.source or "figure(" in cell.source):
            assert previous.cell_type == "markdown" or "T." in cell.source, f"{path.name}: add a sentence before {cell.source[:40]!r}"
