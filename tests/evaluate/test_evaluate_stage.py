from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from shiftad.data.records import ImageRecord
from shiftad.data.images import read_image
from shiftad.evaluate import stage as evaluate_stage
from shiftad.evaluate.stage import evaluate_category, extra_map_range, ground_truth_masks, overlay, summarise
from shiftad.io import read_json, save_npz
from shiftad.params import validate_params
from shiftad.paths import HEATMAPS_DIR, METRICS_DIR, PREDICTIONS_DIR, scores_file
from shiftad.report.tables import markdown_table, with_macro_mean
from shiftad.split import SplitView


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
    masks, pixel_images = ground_truth_masks(records, (8, 8))
    assert masks.shape == (6, 8, 8) and masks[3:, 2:4, 2:4].all() and masks[3:].sum() == 3 * 4 and not masks[:3].any()
    assert pixel_images.all()
    without = records[:3] + [ImageRecord(r.path, r.category, 1, r.defect_type, None, "test") for r in records[3:]]
    assert ground_truth_masks(without, (8, 8))[0] is None


def test_an_anomalous_image_with_an_empty_mask_counts_for_images_not_pixels(records, tmp_path):
    """Annotated at image level only: its pixels are not normal pixels (they would be, scored
    high, false positives), and it still counts as an anomalous image."""
    empty = tmp_path / "4_mask.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(empty)
    params = validate_params({})
    test = score_file(records, [0, 0, 0, 5, 5, 5])
    test["maps"][4] = 2.0  # the unannotated defect is scored high everywhere
    row, *_ = evaluate_category(params, records, score_file(records, [1, 2, 3, 10, 11, 12]), test, "t", None)
    keep = np.array([True] * 4 + [False, True])
    masks, pixel_images = ground_truth_masks(records, (8, 8))
    np.testing.assert_array_equal(pixel_images, keep)
    expected = roc_auc_score(masks[keep].ravel(), test["maps"][keep].ravel())
    assert row["pixel_auroc"] == pytest.approx(expected, abs=1e-12) and row["pixel_auroc"] == 1.0
    assert roc_auc_score(masks.ravel(), test["maps"].ravel()) < 1.0  # what counting it as normal pixels gives
    assert row["n_test_pixel_excluded"] == 1 and row["n_test_anomalous"] == 3 and row["image_auroc"] == 1.0


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


def with_uncertainty(scores: dict, values) -> dict:
    """A score file with an auxiliary map `uncertainty`: image i's map filled with values[i], plus a ramp."""
    ramp = np.linspace(0, 0.5, 64, dtype=np.float32).reshape(8, 8)
    return {**scores, "extra_map_uncertainty": np.stack([np.float32(v) + ramp for v in values])}


def test_extra_map_colours_come_from_validation_normals_never_from_test():
    val_maps = np.stack([np.full((8, 8), v, np.float32) for v in (1, 2, 3, 50, 60, 70)])
    val_maps[0, 0, 0] = 4.0  # the top of the normal images
    labels = np.array([0, 0, 0, 1, 1, 1])
    vmin, vmax = extra_map_range(val_maps, labels, np.full((6, 8, 8), -5.0, np.float32))
    assert vmin == 2.0  # median of the normal images' values; anomalous val images are left out
    assert 3.0 < vmax <= 4.0  # the largest per-image 99.9th percentile of the normal images
    assert extra_map_range(val_maps, labels, np.full((6, 8, 8), 999.0, np.float32)) == (vmin, vmax)  # test maps play no part
    # no normal validation image: vmin from the test maps (as for the heatmaps), vmax still from validation
    vmin, vmax = extra_map_range(val_maps[3:], labels[3:], np.full((6, 8, 8), -5.0, np.float32))
    assert vmin == -5.0 and 69.0 < vmax <= 70.5


def test_extra_maps_are_drawn_beside_the_heatmap_and_recorded(records, tmp_path):
    params = validate_params({})
    val = with_uncertainty(score_file(records, [1, 2, 3, 10, 11, 12]), [1, 2, 3, 50, 60, 70])
    test = with_uncertainty(score_file(records, [0, 0, 0, 5, 5, 5]), [0, 1, 2, 3, 4, 5])
    folder = tmp_path / "heat"
    _, predictions, _, _ = evaluate_category(params, records, val, test, "t", folder)
    vmin, vmax = extra_map_range(val["extra_map_uncertainty"], val["labels"], test["extra_map_uncertainty"])
    for i, (record, p) in enumerate(zip(records, predictions)):
        heatmap = Path(p["prediction"]["heatmap_path"])
        extra = Path(p["prediction"]["extra_heatmaps"]["uncertainty"])
        assert set(p["prediction"]["extra_heatmaps"]) == {"uncertainty"}
        assert extra == heatmap.with_name(f"{heatmap.stem}_uncertainty.jpg") and extra.is_file()
        drawn = np.asarray(Image.open(extra)).astype(int)  # JPEG (quality 90): within a few levels of the overlay
        expected = overlay(read_image(record.path), test["extra_map_uncertainty"][i], vmin, vmax).astype(int)
        assert drawn.shape == expected.shape and np.abs(drawn - expected).mean() < 2.0
    last = predictions[-1]["prediction"]  # uncertainty above the normal range: red, where its heatmap is not
    assert not np.array_equal(np.asarray(Image.open(last["extra_heatmaps"]["uncertainty"])), np.asarray(Image.open(last["heatmap_path"])))
    assert len(list(folder.glob("*.jpg"))) == 2 * len(records)


def test_records_without_extra_maps_have_no_extra_key(records, tmp_path):
    params = validate_params({})
    val = score_file(records, [1, 2, 3, 10, 11, 12])
    _, predictions, _, _ = evaluate_category(params, records, val, score_file(records, [0, 0, 0, 5, 5, 5]), "t", tmp_path / "heat")
    assert all(list(p["prediction"]) == ["is_anomalous", "anomaly_score", "heatmap_path"] for p in predictions)
    assert len(list((tmp_path / "heat").glob("*.jpg"))) == len(records)
    _, predictions, _, _ = evaluate_category(params, records, with_uncertainty(val, range(6)),
                                             with_uncertainty(score_file(records, [0, 0, 0, 5, 5, 5]), range(6)), "t", None)
    assert all("extra_heatmaps" not in p["prediction"] for p in predictions)  # no overlays drawn, none recorded


def test_an_extra_map_missing_from_validation_is_an_error(records, tmp_path):
    val = score_file(records, [1, 2, 3, 10, 11, 12])
    with pytest.raises(RuntimeError, match="extra map 'uncertainty'.*rerun the score stage"):
        evaluate_category(validate_params({}), records, val, with_uncertainty(val, range(6)), "t", tmp_path / "heat")


def test_the_stage_records_final_extra_heatmap_paths_and_every_training_seeds_metrics(records, tmp_path, monkeypatch):
    params = validate_params({"categories": ["c"], "detectors": ["patchcore"], "seeds": [3, 7]})
    monkeypatch.setattr(evaluate_stage, "domain_view", lambda domain: SplitView({"c": {"test": records}}))
    monkeypatch.chdir(tmp_path)
    image_scores = {3: [1, 2, 3, 10, 11, 12], 7: [1, 11, 3, 10, 2, 12]}  # seed 7's model ranks two images wrongly
    for seed, scores in image_scores.items():
        for regime in evaluate_stage.REGIMES:
            for scenario in params.scenario_runs("patchcore").values():
                for split, domain, values in (("val", scenario.threshold, [1, 2, 3, 50, 60, 70]), ("test", scenario.test, range(6))):
                    save_npz(scores_file("patchcore", regime, scenario.model_key, domain, split, "c", seed),
                             **with_uncertainty(score_file(records, scores), values))
    evaluate_stage.run_evaluate_stage(params, progress=False)
    table, seeds = pd.read_csv(METRICS_DIR / "scenarios.csv"), pd.read_csv(METRICS_DIR / "seeds.csv")
    assert sorted(seeds["seed"].unique()) == [3, 7] and len(seeds) == 2 * len(table)
    reference = seeds[seeds["seed"] == 3].drop(columns="seed").reset_index(drop=True)
    pd.testing.assert_frame_equal(reference, table, check_dtype=False)  # the reference seed's rows are scenarios.csv's
    labels = [r.label for r in records]
    for seed, scores in image_scores.items():
        assert np.allclose(seeds.loc[seeds["seed"] == seed, "image_auroc"], roc_auc_score(labels, scores))
    predictions = read_json(PREDICTIONS_DIR / "patchcore" / "per_class" / "clean" / "c.json")
    for p in predictions:
        heatmap, extra = Path(p["prediction"]["heatmap_path"]), Path(p["prediction"]["extra_heatmaps"]["uncertainty"])
        assert extra.parent == heatmap.parent == HEATMAPS_DIR / "patchcore" / "per_class" / "clean" / "c"  # not the temporary folder
        assert extra.is_file() and heatmap.is_file()


def test_two_worker_processes_write_what_one_process_writes(records, tmp_path, monkeypatch):
    """evaluate's `threads` workers share the (run, category) pairs: the same tables, predictions
    and heatmaps, byte for byte, as one process."""
    monkeypatch.setattr(evaluate_stage, "domain_view", lambda domain: SplitView({"c": {"test": records}, "d": {"test": records}}))
    outputs = {}
    for threads in (1, 2):
        params = validate_params({"categories": ["c", "d"], "detectors": ["patchcore", "padim"], "threads": threads})
        folder = tmp_path / f"threads{threads}"
        folder.mkdir()
        monkeypatch.chdir(folder)
        for detector in params.detectors:
            for regime in evaluate_stage.REGIMES:
                for scenario in params.scenario_runs(detector).values():
                    for category in params.categories:
                        for split, domain in (("val", scenario.threshold), ("test", scenario.test)):
                            save_npz(scores_file(detector, regime, scenario.model_key, domain, split, category, 0),
                                     **score_file(records, [1, 2, 3, 10, 11, 12] if split == "val" else [2, 1, 9, 4, 12, 11]))
        evaluate_stage.run_evaluate_stage(params, progress=False)
        outputs[threads] = {p.relative_to(folder).as_posix(): p.read_bytes()
                            for p in sorted(folder.rglob("*")) if p.is_file() and "scores" not in p.parts}
    assert len(outputs[1]) > 20 and outputs[1] == outputs[2]
