"""Gallery assets: thumbnails, red mask layers aligned with them, badge ranges around the threshold."""

import json

import numpy as np
from PIL import Image

from shiftad.report.gallery import MASK_RGBA, OUTLINE_RGBA, build_tiles, score_range
from shiftad.report.html import Gallery, Section, check_links, write_page


def test_score_range_is_symmetric_around_the_threshold():
    assert score_range([1.0, 2.0, 5.0], 2.0) == (-1.0, 5.0)
    assert score_range([], 2.0) == (1.0, 3.0)


def test_tiles_link_thumbnails_and_mask_layers(tmp_path):
    heat = tmp_path / "heat.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(heat)
    mask = np.zeros((128, 128), np.uint8)
    mask[:64, :64] = 255  # the top-left quadrant, at twice the heatmap size
    Image.fromarray(mask).save(tmp_path / "mask.png")
    records = [
        {"filename": "n.png", "ground_truth": {"is_anomalous": False, "defect_type": "good", "mask_path": None},
         "prediction": {"is_anomalous": True, "anomaly_score": 3.0, "heatmap_path": str(heat)}, "correct": False},
        {"filename": "a.png", "ground_truth": {"is_anomalous": True, "defect_type": "crack", "mask_path": str(tmp_path / "mask.png")},
         "prediction": {"is_anomalous": True, "anomaly_score": 4.0, "heatmap_path": str(heat)}, "correct": True},
    ]
    (tmp_path / "p.json").write_text(json.dumps(records))
    done: set[str] = set()
    pairs = build_tiles(tmp_path / "p.json", 2.0, tmp_path / "gallery", "d/r/s", "c", done)
    assert [f for f, _ in pairs] == ["n.png", "a.png"]
    tiles = [t for _, t in pairs]
    assert [t.image for t in tiles] == ["gallery/d/r/s/c/0000.jpg", "gallery/d/r/s/c/0001.jpg"]
    assert tiles[0].mask is None and tiles[1].mask.startswith("gallery/masks/")
    assert not tiles[0].correct and tiles[1].correct and tiles[0].score_range == (0.0, 4.0)
    layer = np.asarray(Image.open(tmp_path / tiles[1].mask))
    assert layer.shape == (64, 64, 4)  # resized to the thumbnail
    assert tuple(layer[10, 10]) == MASK_RGBA and layer[40, 40, 3] == 0 and layer[10, 40, 3] == 0
    assert tuple(layer[10, 32]) == OUTLINE_RGBA  # the edge just outside the defect
    again = build_tiles(tmp_path / "p.json", 2.0, tmp_path / "gallery", "d/r/t", "c", done)
    assert again[1][1].mask == tiles[1].mask  # one layer file per mask, shared by runs


def test_extra_heatmaps_become_thumbnails_beside_the_heatmap(tmp_path):
    heat, uncertainty = tmp_path / "heat.png", tmp_path / "heat_uncertainty.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(heat)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(uncertainty)
    records = [
        {"filename": "n.png", "ground_truth": {"is_anomalous": False, "defect_type": "good", "mask_path": None},
         "prediction": {"is_anomalous": False, "anomaly_score": 1.0, "heatmap_path": str(heat),
                        "extra_heatmaps": {"uncertainty": str(uncertainty)}}, "correct": True},
        {"filename": "m.png", "ground_truth": {"is_anomalous": False, "defect_type": "good", "mask_path": None},
         "prediction": {"is_anomalous": False, "anomaly_score": 1.0, "heatmap_path": str(heat)}, "correct": True},
    ]
    (tmp_path / "p.json").write_text(json.dumps(records))
    report = tmp_path / "report"
    tiles = [t for _, t in build_tiles(tmp_path / "p.json", 2.0, report / "gallery", "d/r/s", "c", set())]
    assert tiles[0].extra == [("uncertainty", "gallery/d/r/s/c/0000_uncertainty.jpg")] and tiles[1].extra == []
    thumb = np.asarray(Image.open(report / tiles[0].extra[0][1]))
    assert thumb.shape == (64, 64, 3) and abs(int(thumb[32, 32, 0]) - 200) <= 2  # the uncertainty overlay, not the heatmap
    page = write_page(report / "index.html", "t", [Section("g", [Gallery("d/r/s", "", tiles)])])
    html = page.read_text()
    assert 'src="gallery/d/r/s/c/0000_uncertainty.jpg"' in html and "<figcaption>uncertainty</figcaption>" in html
    assert html.count("<figcaption>heatmap</figcaption>") == 1  # only the tile with two maps names them
    assert check_links(page) == []
    (report / tiles[0].extra[0][1]).unlink()
    assert check_links(page) == ["gallery/d/r/s/c/0000_uncertainty.jpg"]  # a missing extra thumbnail is caught
