"""The notebooks stage: execute `notebooks/*.ipynb` with papermill into `report/notebooks/` and
convert each to HTML with nbconvert. A failing cell fails the stage (papermill raises).

The notebooks hold no logic: their cells call `shiftad.results.load_results`, the helpers below
and the report's table and figure functions, so a notebook and the report show the same numbers.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pandas as pd

from shiftad.io import atomic_dir, write_text
from shiftad.parallel import parallel_map
from shiftad.params import Params
from shiftad.paths import REPORT_DIR
from shiftad.results import Results, load_results  # noqa: F401  (the notebooks' entry point)

log = logging.getLogger(__name__)
NOTEBOOK_SOURCES = Path("notebooks")
NOTEBOOKS_OUT = REPORT_DIR / "notebooks"


def data_overview(root: str | Path = ".") -> pd.DataFrame:
    """Image counts per category, split and defect type (clean splits)."""
    from shiftad.split import SPLIT_NAMES, SplitView
    from shiftad.paths import MANIFEST, SPLITS

    root = Path(root)
    view = SplitView.clean(root / MANIFEST, root / SPLITS)
    rows = [{"category": c, "split": s, "defect_type": r.defect_type} for c in view.categories for s in SPLIT_NAMES for r in view.get(c, s)]
    frame = pd.DataFrame(rows)
    return frame.groupby(["category", "split", "defect_type"]).size().unstack("split", fill_value=0).reset_index()


def examples_figure(category: str, n: int = 4, root: str | Path = ".", domains: list[str] = ()):
    """Test images of one category, clean (top row) and in each shift domain (a row each), defect outlined in red."""
    import matplotlib.pyplot as plt
    import numpy as np

    from shiftad.data.images import read_image, read_mask
    from shiftad.split import domain_view

    rows = [("clean", domain_view("clean").get(category, "test"))] + [(d, domain_view(d).get(category, "test")) for d in domains]
    clean = rows[0][1]
    picked = [i for i, r in enumerate(clean) if r.is_anomalous][: (n + 1) // 2] + [i for i, r in enumerate(clean) if not r.is_anomalous][: n // 2]
    fig, axes = plt.subplots(len(rows), len(picked), figsize=(2.4 * len(picked), 2.6 * len(rows)), squeeze=False)
    for row, (name, records) in enumerate(rows):
        for column, i in enumerate(picked):
            ax = axes[row][column]
            record = records[i]
            ax.imshow(read_image(record.path))
            if record.mask_path:
                ax.contour(read_mask(record.mask_path).astype(np.uint8), levels=[0.5], colors="red", linewidths=1)
            ax.set_title(f"{name}: {record.defect_type}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        axes[row][0].set_ylabel(name)
    fig.suptitle(f"{category}: clean test images and their copies in each shift domain (defects outlined in red)")
    fig.tight_layout()
    return fig


def execute_notebook(task: tuple[str, str, dict, str]) -> str:
    """Execute one notebook with papermill (into `executed`) and return it rendered as HTML."""
    import papermill
    from nbconvert import HTMLExporter
    import nbformat
    from traitlets.config import Config

    source, executed, parameters, cwd = task
    log.info("executing %s", source)
    # The kernel talks over Unix sockets in a folder of its own: with TCP, kernels started side by
    # side can pick the same free port and one dies before it replies ("Address already in use").
    with tempfile.TemporaryDirectory(prefix="shiftad-kernel-") as sockets:
        ipc = Config({"KernelManager": {"transport": "ipc", "ip": str(Path(sockets) / "kernel")}})
        papermill.execute_notebook(source, executed, parameters=parameters, cwd=cwd, kernel_name="python3", progress_bar=False,
                                   log_output=False, config=ipc)
    body, _ = HTMLExporter(embed_images=True).from_notebook_node(nbformat.read(executed, as_version=4))
    return body


def run_notebooks_stage(params: Params, progress: bool = True, sources: Path = NOTEBOOK_SOURCES, out: Path = NOTEBOOKS_OUT,
                        params_files: list[str] | None = None) -> list[Path]:
    """`params_files`: the files the stage was given (overrides included), passed on so every
    notebook sees the same params. The notebooks run side by side in `params.threads` worker
    processes (each starts its own kernel)."""
    notebooks = sorted(sources.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"{sources}: no notebooks to execute")
    parameters = {"detectors": list(params.detectors), "categories": list(params.categories), "project_dir": str(Path.cwd()),
                  "params_files": [str(Path(f).resolve()) for f in (params_files or ["params.yaml"])]}
    written = []
    with atomic_dir(out) as tmp:
        tasks = [(str(notebook), str(tmp / notebook.name), parameters, str(Path.cwd())) for notebook in notebooks]
        bodies = parallel_map(execute_notebook, tasks, min(params.threads, len(tasks)), "notebooks", progress)
        for notebook, body in zip(notebooks, bodies):
            write_text(tmp / f"{notebook.stem}.html", body)
            written.append(out / f"{notebook.stem}.html")
    return written
