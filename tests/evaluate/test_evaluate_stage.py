import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shiftad.data.records import ImageRecord
from shiftad.evaluate.stage import evaluate_category, ground_truth_masks, summarise
from shiftad.params import validate_params
from shiftad.report.tables import markdown_table, with_macro_mean


@pytest.fixture
def records(tmp_path):
    out = []
    for i in range(6):
        anomalous = i >= 3
        image = tmp_path / f"{i}.png"
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(image)
        mask = None
        if anomalous:
            mask = tmp_path / f"{i}_mask.png"
            m = np.zeros((16, 16), np.uint8)
            m[4:8, 4:8] = 255
            Image.fromarray(m).save(mask)
        out.append(ImageRecord(str(image), "c", int(anomalous), "dent" if anomalous else "good", str(mask) if mask else None, "test"))
    return out


def score_file(records, image_scores):
    maps = np.zeros((len(records), 8, 8), np.float32)
    for i, r in enumerate(records):
        if r.is_anomalous:
            maps[i, 2:4, 2:4] = 1.0
    return {"paths": np.array([r.path for r in records]), "labels": np.array([r.label for r in records]),
            "image_scores": np.asarray(image_scores, float), "maps": maps, "seconds_per_image": np.array(0.01)}


def test_threshold_comes_from_validation_only(records):
    params = validate_params({"evaluation": {"threshold": {"rule": "percentile", "percentile": 50}}})
    val = score_file(records, [1, 2, 3, 10, 11, 12])
    row_a, preds_a, roc_a, pr_a = evaluate_category(params, records, val, score_file(records, [0, 0, 0, 5, 5, 5]), "t", None)
    row_b, _, _, _ = evaluate_category(params, records, val, score_file(records, [100, 0, 0, 0, 0, 100]), "t", None)
    assert row_a["threshold"] == row_b["threshold"] == 2.0  # median of val normals (1, 2, 3)
    assert row_a["image_auroc"] == 1.0 and row_b["image_auroc"] != 1.0
    assert row_a["pixel_auroc"] == 1.0 and row_a["aupro"] == pytest.approx(1.0)
    assert [p["prediction"]["is_anomalous"] for p in preds_a] == [False] * 3 + [True] * 3
    assert all(p["correct"] for p in preds_a)
    assert preds_a[3]["ground_truth"]["mask_path"] == records[3].mask_path
    # curves: a perfect separation reaches TPR 1 at FPR 0 and precision 1 at recall 1
    assert ((roc_a["fpr"] == 0) & (roc_a["tpr"] == 1)).any()
    assert ((pr_a["recall"] == 1) & (pr_a["precision"] == 1)).any()


def test_score_file_out_of_step_with_splits_is_an_error(records):
    params = validate_params({})
    val = score_file(records, [1, 2, 3, 10, 11, 12])
    with pytest.raises(RuntimeError, match="rerun the score stage"):
        evaluate_category(params, records[::-1], val, val, "t", None)


def test_ground_truth_masks_are_resized_nearest_and_missing_masks_disable_pixel_metrics(records):
    masks = ground_truth_masks(records, (8, 8))
    assert masks.shape == (6, 8, 8) and masks[3:, 2:4, 2:4].all() and masks[3:].sum() == 3 * 4 and not masks[:3].any()
    without = records[:3] + [ImageRecord(r.path, r.category, 1, r.defect_type, None, "test") for r in records[3:]]
    assert ground_truth_masks(without, (8, 8)) is None


def test_summary_and_tables_use_macro_means():
    table = pd.DataFrame([
        {"detector": "p", "regime": "r", "scenario": "s", "category": c, "image_auroc": a, "image_auprc": 1.0, "f1": 1.0,
         "pixel_auroc": float("nan"), "aupro": 0.5, "threshold_rule": "f1_max", "n_test": 10}
        for c, a in (("a", 0.8), ("b", 0.6))
    ])
    assert summarise(table)["p"]["r"]["s"]["image_auroc"] == 0.7
    assert summarise(table)["p"]["r"]["s"]["pixel_auroc"] is None
    full = with_macro_mean(table)
    assert full.iloc[-1]["category"] == "mean" and full.iloc[-1]["image_auroc"] == pytest.approx(0.7)
    md = markdown_table(full)
    assert "| p | r | s | mean | 0.700 | 1.000 |" in md and "–" in md and "| 10 |" in md
