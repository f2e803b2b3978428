"""The folder and CSV sources, and the data stage on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad.data.csv_source import read_csv_source
from shiftad.data.folder import scan_folder
from shiftad.data.records import read_manifest
from shiftad.data.stage import run_data_stage
from shiftad.errors import DataError
from shiftad.io import read_json
from shiftad.params import Params


def write_png(path: Path, array: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8) if array is None else array).save(path)
    return path


def mask() -> np.ndarray:
    array = np.zeros((16, 16), dtype=np.uint8)
    array[2:6, 2:6] = 255
    return array


# --- folder ---------------------------------------------------------------------------


def make_folder(root: Path) -> Path:
    for name in ("a", "b", "c"):
        write_png(root / "images" / "good" / f"{name}.png")
    write_png(root / "images" / "scratch" / "s1.png")
    write_png(root / "images" / "scratch" / "s2.jpg")
    write_png(root / "masks" / "scratch" / "s1.png", mask())
    write_png(root / "masks" / "scratch" / "s2_mask.png", mask())
    return root


def test_scan_folder(tmp_path):
    records = scan_folder(make_folder(tmp_path), "parts")
    assert len(records) == 5
    assert {r.category for r in records} == {"parts"} and {r.source_split for r in records} == {None}
    normal = [r for r in records if r.label == 0]
    defects = [r for r in records if r.label == 1]
    assert len(normal) == 3 and all(r.defect_type == "good" and r.mask_path is None for r in normal)
    assert [Path(r.mask_path).name for r in defects] == ["s1.png", "s2_mask.png"]
    assert {r.defect_type for r in defects} == {"scratch"}


def test_scan_folder_without_masks_is_image_level(tmp_path):
    write_png(tmp_path / "images" / "good" / "a.png")
    write_png(tmp_path / "images" / "dent" / "d.png")
    assert [r.mask_path for r in scan_folder(tmp_path, "x")] == [None, None]


def test_scan_folder_skips_non_images_with_a_warning(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "images" / "good" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "images" / "scratch" / "notes.txt").write_text("x")
    (tmp_path / "images" / "loose.png").write_bytes(b"x")
    with pytest.warns(UserWarning) as caught:
        records = scan_folder(tmp_path, "parts")
    messages = " ".join(str(w.message) for w in caught)
    assert ".DS_Store" in messages and "notes.txt" in messages and "loose.png" in messages
    assert len(records) == 5


def test_scan_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match=r"category 'parts': folder .*images/good not found"):
        scan_folder(tmp_path, "parts")
    (tmp_path / "images" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"category 'parts': no images in .*images"):
        scan_folder(tmp_path, "parts")


# --- csv ------------------------------------------------------------------------------


@pytest.fixture()
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    for name in ("n1", "n2", "d1"):
        write_png(root / "img" / f"{name}.png")
    write_png(root / "masks" / "d1.png", mask())
    return root


def write_csv(root: Path, text: str, name: str = "labels.csv") -> Path:
    path = root / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_minimal_columns(data):
    csv_file = write_csv(data, "filename,is_anomalous\nimg/n1.png,0\n\nimg/d1.png,1\n")
    records = read_csv_source(data, csv_file, "widget")
    assert [(Path(r.path).name, r.label, r.defect_type, r.category, r.mask_path) for r in records] == [
        ("n1.png", 0, "good", "widget", None),
        ("d1.png", 1, "defect", "widget", None),
    ]


def test_csv_optional_columns_bom_and_boolean_labels(data):
    text = "\ufeffFilename, is_anomalous ,mask_path,category,defect_type\nimg/n1.png,false,,,\nimg/d1.png,TRUE,masks/d1.png,cam2,dent\n"
    records = read_csv_source(data, write_csv(data, text), "widget")
    assert records[0].label == 0 and records[0].category == "widget"
    assert (records[1].label, records[1].category, records[1].defect_type) == (1, "cam2", "dent")
    assert records[1].mask_path.endswith("masks/d1.png")


def test_csv_absolute_path_inside_root_is_allowed(data):
    csv_file = write_csv(data, f"filename,is_anomalous\n{data.absolute() / 'img' / 'n1.png'},0\n")
    assert read_csv_source(data, csv_file, "w")[0].path.endswith("img/n1.png")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,is_anomalous\nimg/n1.png,0\n", r"labels.csv, line 1: missing required column\(s\) \['filename'\]"),
        ("filename,label\nimg/n1.png,0\n", r"labels.csv, line 1: missing required column\(s\) \['is_anomalous'\]"),
        ("filename,is_anomalous\nimg/n1.png,0\nimg/n2.png,2\n", r"labels.csv, line 3: is_anomalous is '2'"),
        ("filename,is_anomalous\nimg/n1.png,yes\n", r"labels.csv, line 2: is_anomalous is 'yes'"),
        ("filename,is_anomalous\nimg/n1.png,0\nimg/zz.png,0\n", r"labels.csv, line 3: filename 'img/zz.png': file .*zz.png not found"),
        ("filename,is_anomalous\nimg/n1.png,0\n../x.png,0\n", r"labels.csv, line 3: filename '../x.png' is outside the data root"),
        ("filename,is_anomalous\nimg/../../x.png,0\n", r"labels.csv, line 2: filename 'img/../../x.png' is outside the data root"),
        ("filename,is_anomalous\n/etc/hostname,0\n", r"labels.csv, line 2: filename '/etc/hostname' is outside the data root"),
        ("filename,is_anomalous\nimg/n1.png,0\n./img/n1.png,0\n", r"labels.csv, line 3: filename './img/n1.png' is listed twice \(first on line 2\)"),
        ("filename,is_anomalous,mask_path\nimg/d1.png,1,masks/none.png\n", r"labels.csv, line 2: mask_path 'masks/none.png': file .* not found"),
        ("filename,is_anomalous,mask_path\nimg/d1.png,1,../m.png\n", r"labels.csv, line 2: mask_path '../m.png' is outside the data root"),
        ("filename,is_anomalous,defect_type\nimg/n1.png,0,dent\n", r"labels.csv, line 2: defect_type 'dent' contradicts is_anomalous 0"),
        ("filename,is_anomalous,category\nimg/n1.png,0,a/b\n", r"labels.csv, line 2: category 'a/b' must be a plain name"),
        ("filename,is_anomalous\nimg/n1.png\n", r"labels.csv, line 2: 1 values for 2 columns"),
        ("filename,is_anomalous\n", r"labels.csv: no rows below the header"),
    ],
)
def test_csv_errors_name_the_file_and_line(data, text, message):
    with pytest.raises(DataError, match=message):
        read_csv_source(data, write_csv(data, text), "w")


def test_csv_symlink_out_of_root_is_refused(data, tmp_path):
    outside = write_png(tmp_path / "elsewhere" / "secret.png")
    (data / "img" / "link.png").symlink_to(outside)
    csv_file = write_csv(data, "filename,is_anomalous\nimg/n1.png,0\nimg/link.png,0\n")
    with pytest.raises(DataError, match=r"labels.csv, line 3: filename 'img/link.png' is outside the data root.*symbolic link"):
        read_csv_source(data, csv_file, "w")


def test_csv_missing_file_and_unknown_column_warning(data):
    with pytest.raises(DataError, match=r"nope.csv: CSV file not found"):
        read_csv_source(data, data / "nope.csv", "w")
    csv_file = write_csv(data, "filename,is_anomalous,mask\nimg/n1.png,0,x\n")
    with pytest.warns(UserWarning, match=r"ignored unknown columns \['mask'\]"):
        read_csv_source(data, csv_file, "w")


# --- the stage ------------------------------------------------------------------------


def params(source: str, root: str, categories: list[str] = ["custom"]) -> Params:
    return Params.model_validate({"categories": categories, "dataset": {"source": source, "root": root}, "split": {"policy": "ratios"}})


def test_stage_folder_source(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "mydata")
    records = run_data_stage(params("folder", "mydata"), progress=False)
    assert read_manifest("data/processed/manifest.json") == records
    assert all(r.path.startswith("mydata/images/") for r in records)
    info = read_json("data/raw/source.json")
    assert info == {"source": "folder", "root": "mydata", "images_per_category": {"custom": 5}, "images": 5,
                    "masks_per_category": {"custom": {"masks": 2, "values": [0, 255], "defect_images_with_empty_mask": 0}}}


def test_stage_csv_source(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    write_csv(data, "filename,is_anomalous,mask_path,category\nimg/n1.png,0,,a\nimg/n2.png,0,,b\nimg/d1.png,1,masks/d1.png,b\n")
    records = run_data_stage(params("csv", "data", ["a", "b"]), progress=False)
    assert [r.path for r in records] == ["data/img/n1.png", "data/img/d1.png", "data/img/n2.png"]
    assert read_json("data/raw/source.json")["images_per_category"] == {"a": 1, "b": 2}
    with pytest.raises(DataError, match=r"categories: params list \['a'\] but the data holds \['a', 'b'\]"):
        run_data_stage(params("csv", "data", ["a"]), progress=False)


def test_stage_missing_root_names_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source in ("folder", "csv"):
        with pytest.raises(DataError, match=r"dataset.root: folder missing not found"):
            run_data_stage(params(source, "missing"), progress=False)
    assert not Path("data/processed/manifest.json").exists()


def test_stage_validates_before_writing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "mydata")
    (tmp_path / "mydata" / "images" / "good" / "broken.png").write_text("not an image")
    with pytest.raises(DataError, match=r"broken.png: cannot read this image"):
        run_data_stage(params("folder", "mydata"), progress=False)
    assert not Path("data/processed/manifest.json").exists()
