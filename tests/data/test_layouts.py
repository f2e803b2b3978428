"""The public benchmarks' layouts, each written here in small in its published form (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad.data.images import read_mask
from shiftad.data.layouts import scan_layout
from shiftad.data.stage import describe, run_data_stage
from shiftad.data.validate import validate_records
from shiftad.errors import DataError
from shiftad.io import read_json
from shiftad.params import validate_params


def image(path: Path, size: tuple[int, int] = (24, 16), seed: int = 0, mode: str = "RGB") -> Path:
    """A small image of `size` (w, h)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return path


def mask(path: Path, size: tuple[int, int] = (24, 16), box: tuple[int, int, int, int] | None = (2, 2, 6, 6), value: int = 255) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size[1], size[0]), np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        array[y0:y1, x0:x1] = value
    Image.fromarray(array).save(path)
    return path


def summary(records):
    return sorted((r.source_split, r.defect_type, r.label, r.mask_path is not None) for r in records)


def test_mvtec3d_reads_rgb_and_gt_and_ignores_the_point_clouds(tmp_path):
    cat = tmp_path / "mvtec_3d" / "bagel"
    for split, n in (("train", 3), ("validation", 2)):
        for i in range(n):
            image(cat / split / "good" / "rgb" / f"{i:03d}.png", seed=i)
            (cat / split / "good" / "xyz").mkdir(parents=True, exist_ok=True)
            (cat / split / "good" / "xyz" / f"{i:03d}.tiff").write_bytes(b"not read")
    image(cat / "test" / "good" / "rgb" / "000.png")
    mask(cat / "test" / "good" / "gt" / "000.png", box=None)
    image(cat / "test" / "crack" / "rgb" / "000.png")
    three = mask(cat / "test" / "crack" / "gt" / "000.png", value=253)  # 3D-AD's exports: 253, 254, 255
    with Image.open(three) as m:
        array = np.asarray(m).copy()
    array[2, 2], array[3, 3] = 254, 255
    Image.fromarray(array).save(three)
    records = scan_layout("mvtec3d", tmp_path / "mvtec_3d", ["bagel"])
    assert summary(records) == [("test", "crack", 1, True), ("test", "good", 0, False)] + [("train", "good", 0, False)] * 5
    assert all("/rgb/" in r.path for r in records)
    summaries = validate_records(records, progress=False)
    assert summaries["bagel"].values == {0, 253, 254, 255} and read_mask(three).sum() == 16


def test_mvtec_loco_merges_the_region_masks_of_each_image(tmp_path):
    cat = tmp_path / "loco" / "juice_bottle"
    for split in ("train", "validation"):
        image(cat / split / "good" / "000.png")
    image(cat / "test" / "good" / "000.png")
    image(cat / "test" / "logical_anomalies" / "000.png")
    image(cat / "test" / "structural_anomalies" / "000.png")
    regions = cat / "ground_truth" / "logical_anomalies" / "000"
    mask(regions / "000.png", box=(0, 0, 4, 4))
    mask(regions / "001.png", box=(10, 10, 14, 12), value=7)  # LOCO's region values vary
    mask(cat / "ground_truth" / "structural_anomalies" / "000" / "000.png", box=(5, 5, 9, 9))
    records = scan_layout("mvtec_loco", tmp_path / "loco", ["juice_bottle"])
    assert summary(records) == [("test", "good", 0, False), ("test", "logical_anomalies", 1, True),
                                ("test", "structural_anomalies", 1, True), ("train", "good", 0, False), ("train", "good", 0, False)]
    logical = next(r for r in records if r.defect_type == "logical_anomalies")
    merged = read_mask(logical.mask_path)
    assert merged.sum() == 16 + 8 and merged[0, 0] and merged[11, 13]
    validate_records(records, progress=False)


def test_mvtec_loco_region_masks_of_another_size_are_an_error(tmp_path):
    regions = tmp_path / "regions"
    mask(regions / "000.png")
    mask(regions / "001.png", size=(8, 8))
    with pytest.raises(DataError, match=r"001.png: mask size 8x8 differs"):
        read_mask(regions)


def test_mvtec_ad2_uses_test_public_and_leaves_the_private_sets(tmp_path, caplog):
    cat = tmp_path / "ad2" / "can"
    for split in ("train", "validation"):
        image(cat / split / "good" / "000_regular.png")
    image(cat / "test_public" / "good" / "000_regular.png")
    image(cat / "test_public" / "bad" / "001_regular.png")
    mask(cat / "test_public" / "ground_truth" / "bad" / "001_regular_mask.png")
    image(cat / "test_private" / "000_regular.png")
    image(cat / "test_private_mixed" / "000_regular.png")
    with caplog.at_level("INFO"):
        records = scan_layout("mvtec_ad2", tmp_path / "ad2", ["can"])
    assert summary(records) == [("test", "bad", 1, True), ("test", "good", 0, False), ("train", "good", 0, False), ("train", "good", 0, False)]
    assert "test_private, test_private_mixed carry no labels" in caplog.text
    validate_records(records, progress=False)


def write_visa(root: Path) -> None:
    rows = ["object,split,label,image,mask"]
    for i in range(3):
        image(root / "candle" / "Data" / "Images" / "Normal" / f"{i:04d}.JPG", size=(30, 20), seed=i)
        rows.append(f"candle,train,normal,candle/Data/Images/Normal/{i:04d}.JPG,")
    image(root / "candle" / "Data" / "Images" / "Normal" / "0100.JPG", size=(30, 20))
    rows.append("candle,test,normal,candle/Data/Images/Normal/0100.JPG,")
    image(root / "candle" / "Data" / "Images" / "Anomaly" / "000.JPG", size=(30, 20))
    mask(root / "candle" / "Data" / "Masks" / "Anomaly" / "000.png", size=(30, 20), value=2)  # VisA: defect index values
    rows.append("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png")
    image(root / "pcb1" / "Data" / "Images" / "Normal" / "0000.JPG")
    rows.append("pcb1,train,normal,pcb1/Data/Images/Normal/0000.JPG,")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")


def test_visa_follows_its_split_file(tmp_path):
    write_visa(tmp_path / "VisA")
    records = scan_layout("visa", tmp_path / "VisA", ["candle"])
    assert summary(records) == [("test", "anomaly", 1, True), ("test", "good", 0, False)] + [("train", "good", 0, False)] * 3
    summaries = validate_records(records, progress=False)
    assert summaries["candle"].values == {0, 2} and summaries["candle"].sizes == {(30, 20): 5}
    with pytest.raises(DataError, match=r"category 'capsules': no row in .*1cls.csv; its objects: \['candle', 'pcb1'\]"):
        scan_layout("visa", tmp_path / "VisA", ["capsules"])


def test_visa_split_file_errors_name_the_line(tmp_path):
    write_visa(tmp_path / "VisA")
    split = tmp_path / "VisA" / "split_csv" / "1cls.csv"
    split.write_text(split.read_text().replace("candle,test,normal,candle/Data/Images/Normal/0100.JPG", "candle,test,normal,candle/gone.JPG"))
    with pytest.raises(DataError, match=r"1cls.csv, line 5: image .*candle/gone.JPG not found"):
        scan_layout("visa", tmp_path / "VisA", ["candle"])


def write_kolektorsdd2(root: Path) -> None:
    for split, defective in (("train", [False, False, False, True]), ("test", [False, True, True])):
        for i, bad in enumerate(defective):
            image(root / split / f"{10000 + i}.png", size=(23, 63), seed=i)
            mask(root / split / f"{10000 + i}_GT.png", size=(23, 63), box=(3, 10, 8, 30) if bad else None)


def test_kolektorsdd2_labels_images_by_their_masks_and_trains_on_normals_only(tmp_path, caplog):
    write_kolektorsdd2(tmp_path / "KSDD2")
    with caplog.at_level("INFO"):
        records = scan_layout("kolektorsdd2", tmp_path / "KSDD2", ["ksdd2"])
    assert summary(records) == [("test", "defect", 1, True), ("test", "defect", 1, True), ("test", "good", 0, False)] + [("train", "good", 0, False)] * 3
    assert "1 defective train images are not used" in caplog.text
    with pytest.raises(DataError, match="KolektorSDD2 is one category"):
        scan_layout("kolektorsdd2", tmp_path / "KSDD2", ["a", "b"])
    (tmp_path / "KSDD2" / "test" / "10001_GT.png").unlink()
    with pytest.raises(DataError, match=r"10001.png: its mask 10001_GT.png is missing"):
        scan_layout("kolektorsdd2", tmp_path / "KSDD2", ["ksdd2"])


def test_a_missing_category_names_what_is_there(tmp_path):
    image(tmp_path / "ad2" / "can" / "train" / "good" / "0.png")
    with pytest.raises(DataError, match=r"category 'fabric': folder .*fabric/train/good not found \(MVTec AD 2 layout.*\['can'\]"):
        scan_layout("mvtec_ad2", tmp_path / "ad2", ["fabric"])


def test_data_stage_reads_a_layout_with_only_dataset_and_categories_set(tmp_path, monkeypatch, caplog):
    """As a user points the DAG at VisA: `dataset: {source, root}` and `categories`, nothing else."""
    monkeypatch.chdir(tmp_path)
    write_visa(tmp_path / "VisA")
    params = validate_params({"dataset": {"source": "visa", "root": "VisA"}, "categories": ["candle"]})
    with caplog.at_level("INFO"):
        records = run_data_stage(params, progress=False)
    assert len(records) == 5 and read_json("data/raw/source.json")["masks_per_category"]["candle"]["values"] == [0, 2]
    assert "candle: 5 images: test/anomaly: 1 (masks); test/good: 1; train/good: 3" in caplog.text
    assert "sizes (w x h): 30x20: 5" in caplog.text
    assert describe(records, {}) == ""


def write_mvtec3d(root: Path) -> None:
    cat = root / "bagel"
    for split in ("train", "validation"):
        image(cat / split / "good" / "rgb" / "000.png")
    for defect in ("good", "crack"):
        image(cat / "test" / defect / "rgb" / "000.png")
        mask(cat / "test" / defect / "gt" / "000.png", box=None if defect == "good" else (2, 2, 6, 6), value=254)


def write_mvtec_loco(root: Path) -> None:
    cat = root / "bagel"
    for split in ("train", "validation"):
        image(cat / split / "good" / "000.png")
    for defect in ("good", "logical_anomalies"):
        image(cat / "test" / defect / "000.png")
    mask(cat / "ground_truth" / "logical_anomalies" / "000" / "000.png")


def write_mvtec_ad2(root: Path) -> None:
    cat = root / "bagel"
    for split in ("train", "validation"):
        image(cat / split / "good" / "000.png")
    image(cat / "test_public" / "good" / "000.png")
    image(cat / "test_public" / "bad" / "001.png")
    mask(cat / "test_public" / "ground_truth" / "bad" / "001_mask.png")


def write_visa_bagel(root: Path) -> None:
    write_visa(root)
    split = root / "split_csv" / "1cls.csv"
    split.write_text(split.read_text().replace("candle", "bagel"))
    (root / "candle").rename(root / "bagel")


WRITERS = {"mvtec3d": write_mvtec3d, "mvtec_loco": write_mvtec_loco, "mvtec_ad2": write_mvtec_ad2,
           "visa": write_visa_bagel, "kolektorsdd2": write_kolektorsdd2}


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_every_layout_makes_a_manifest_with_only_dataset_and_categories_set(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    WRITERS[source](tmp_path / "published")
    params = validate_params({"dataset": {"source": source, "root": "published"}, "categories": ["bagel"]})
    records = run_data_stage(params, progress=False)
    assert {r.source_split for r in records} == {"train", "test"}
    assert any(r.label == 1 and r.mask_path for r in records) and any(r.label == 0 and r.source_split == "test" for r in records)
    assert all(r.category == "bagel" for r in records)
