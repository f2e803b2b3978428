"""The report's Training table and figure: read from the trained detectors' model folders, they
say how much of the paper's training a scale is and whether the loss was still falling."""

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from shiftad.io import write_json  # noqa: E402
from shiftad.params import validate_params  # noqa: E402
from shiftad.pipeline import model_path  # noqa: E402
from shiftad.report import figures as F  # noqa: E402
from shiftad.report import tables as T  # noqa: E402

CATEGORIES = ["brick", "widget"]


def write_model(root, detector, category, history):
    folder = root / model_path(detector, "per_class", "clean", category, 0)
    folder.mkdir(parents=True)
    write_json(folder / "meta.json", {"detector": detector, "training": {"history": history}})


@pytest.fixture
def training(tmp_path):
    params = validate_params({"categories": CATEGORIES, "detectors": ["patchcore", "efficientad", "uninformed_students"]})
    for category in CATEGORIES:
        # EfficientAD logs every 20th of its 400 steps; the loss halves from step 300 to step 400
        write_model(tmp_path, "efficientad", category,
                    [{"step": step, "loss": 10.0 if step < 300 else 10.0 - 5.0 * (step - 300) / 100} for step in range(20, 401, 20)])
        # two students, 8 epochs: the table averages the students per epoch
        write_model(tmp_path, "uninformed_students", category,
                    {f"p17_s{k}": [{"epoch": e, "loss": 2.0 + k} for e in range(1, 9)] for k in (0, 1)})
    return params, T.training_frame(params, tmp_path)


def test_the_training_frame_reads_every_trained_model_and_averages_the_students(training):
    params, frame = training
    assert set(frame["detector"]) == {"efficientad", "uninformed_students"}  # PatchCore has no training history
    steps = frame[frame["detector"] == "efficientad"]
    assert len(steps) == 2 * 20 and (steps["planned"] == params.efficientad.train.steps).all() and (steps["paper"] == 70000).all()
    epochs = frame[frame["detector"] == "uninformed_students"]
    assert len(epochs) == 2 * 8 and (epochs["loss"] == 2.5).all() and (epochs["unit"] == "epoch").all()


def test_the_training_table_gives_the_share_of_the_paper_and_the_late_loss_drop(training):
    params, frame = training
    table = T.training_table(frame).set_index("detector")
    assert params.efficientad.scale == "cpu" and table.loc["efficientad", "scale"] == "cpu"
    assert table.loc["efficientad", "share of the paper's"] == f"{params.efficientad.train.steps / 70000:.2%}"
    assert table.loc["efficientad", "loss drop over the last quarter"] == "50.0%"  # 10 at step 300 -> 5 at step 400
    assert table.loc["uninformed_students", "loss drop over the last quarter"] == "0.0%"  # a flat loss: converged


def test_the_training_figure_has_one_panel_per_trained_detector_and_says_the_share(training):
    _, frame = training
    fig = F.training_figure(frame)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2 and "efficientad, cpu scale" in titles[0] and "of the paper's" in titles[0]
    assert all(len(ax.get_lines()) == len(CATEGORIES) for ax in fig.axes if ax.get_title())
    empty = F.training_figure(pd.DataFrame())
    assert [t.get_text() for ax in empty.axes for t in ax.texts] == [F.NO_DATA]
