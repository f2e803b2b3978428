"""MVTec layout scanning, and the download / extraction against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import socket
import sys
import tarfile
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad.data.mvtec import download_mvtec, scan_mvtec_layout
from shiftad.data.records import read_manifest
from shiftad.data.stage import run_data_stage
from shiftad.errors import DataError
from shiftad.io import read_json
from shiftad.params import DatasetParams, MVTecParams, Params


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def image(value: int = 100) -> np.ndarray:
    return np.full((16, 16, 3), value, dtype=np.uint8)


def mask() -> np.ndarray:
    array = np.zeros((16, 16), dtype=np.uint8)
    array[4:8, 4:8] = 255
    return array


def make_category(root: Path, category: str) -> Path:
    """A tiny MVTec-layout category: 3 train, 1 test good, 2 test crack with masks."""
    folder = root / category
    for i in range(3):
        write_png(folder / "train" / "good" / f"{i:03d}.png", image(90 + i))
    write_png(folder / "test" / "good" / "000.png", image())
    for i in range(2):
        write_png(folder / "test" / "crack" / f"{i:03d}.png", image(200))
        write_png(folder / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask())
    return folder


# --- scanning -------------------------------------------------------------------------


def test_scan_labels_splits_and_masks(tmp_path):
    make_category(tmp_path, "bottle")
    records = scan_mvtec_layout(tmp_path, ["bottle"])
    assert len(records) == 6
    train = [r for r in records if r.source_split == "train"]
    defects = [r for r in records if r.label == 1]
    assert len(train) == 3 and all(r.label == 0 and r.defect_type == "good" and r.mask_path is None for r in train)
    assert [Path(r.mask_path).name for r in defects] == ["000_mask.png", "001_mask.png"]
    assert all(r.defect_type == "crack" and r.source_split == "test" for r in defects)
    good_test = [r for r in records if r.source_split == "test" and r.label == 0]
    assert len(good_test) == 1 and good_test[0].mask_path is None


def test_scan_all_categories_and_selection(tmp_path):
    make_category(tmp_path, "bottle")
    make_category(tmp_path, "cable")
    (tmp_path / "not_a_category").mkdir()
    assert {r.category for r in scan_mvtec_layout(tmp_path, None)} == {"bottle", "cable"}
    assert {r.category for r in scan_mvtec_layout(tmp_path, ["cable"])} == {"cable"}


def test_root_that_is_one_category(tmp_path):
    folder = make_category(tmp_path, "kolektor")
    assert {r.category for r in scan_mvtec_layout(folder, None)} == {"kolektor"}
    assert len(scan_mvtec_layout(folder, ["kolektor"])) == 6


def test_missing_category_names_the_folder(tmp_path):
    make_category(tmp_path, "bottle")
    with pytest.raises(DataError, match=r"category 'cable'.*cable/train/good not found.*\['bottle'\]"):
        scan_mvtec_layout(tmp_path, ["cable"])


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        scan_mvtec_layout(tmp_path / "nowhere", None)
    with pytest.raises(DataError, match="no category folders found"):
        scan_mvtec_layout(tmp_path, None)


def test_empty_category_names_category_and_folder(tmp_path):
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"category 'bottle': no images in .*bottle"):
        scan_mvtec_layout(tmp_path, ["bottle"])


def test_non_image_files_and_orphan_masks_are_skipped_with_a_warning(tmp_path):
    folder = make_category(tmp_path, "bottle")
    (folder / "train" / "good" / ".DS_Store").write_bytes(b"\0")
    (folder / "train" / "good" / "notes.txt").write_text("hi")
    write_png(folder / "ground_truth" / "crack" / "999_mask.png", mask())
    with pytest.warns(UserWarning) as caught:
        records = scan_mvtec_layout(tmp_path, ["bottle"])
    messages = " ".join(str(w.message) for w in caught)
    assert ".DS_Store" in messages and "notes.txt" in messages
    assert "crack/999_mask.png" in messages and "match no image" in messages
    assert len(records) == 6


# --- download -------------------------------------------------------------------------


class ArchiveHandler(BaseHTTPRequestHandler):
    """Serves `server.payload`, honouring `Range: bytes=N-` unless `server.ignore_range`."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        if self.path != "/mvtec.tar.xz":
            self.send_error(404)
            return
        payload = self.server.payload
        requested = self.headers.get("Range")
        self.server.requests.append(requested)
        start = int(requested.removeprefix("bytes=").rstrip("-")) if requested else 0
        if requested and not self.server.ignore_range:
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            start = 0
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None:  # a dropped connection in the middle of the body
            body = body[: self.server.cut_after]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    # only ever contact 127.0.0.1, also where the environment names a proxy
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "*")


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ArchiveHandler)
    httpd.payload, httpd.requests, httpd.ignore_range, httpd.cut_after = b"", [], False, None
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def build_archive(tmp_path: Path, extra_member: str | None = None) -> bytes:
    source = tmp_path / "archive_source"
    make_category(source, "bottle")
    make_category(source, "cable")
    (source / "license.txt").write_text("license")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ("license.txt", "bottle", "cable"):
            tar.add(source / name, arcname=name)
        if extra_member:
            info = tarfile.TarInfo(extra_member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


def dataset(tmp_path: Path, url: str, payload: bytes, categories=("bottle",), sha256: str | None = None) -> tuple[DatasetParams, list[str]]:
    params = DatasetParams(
        source="mvtec",
        root=str(tmp_path / "mvtec"),
        mvtec=MVTecParams(url=url, sha256=sha256 or hashlib.sha256(payload).hexdigest(), archive=str(tmp_path / "raw" / "mvtec.tar.xz")),
    )
    return params, list(categories)


def url_of(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/mvtec.tar.xz"


def test_download_checks_and_extracts_only_the_selected_category(tmp_path, server):
    server.payload = build_archive(tmp_path)
    params, categories = dataset(tmp_path, url_of(server), server.payload)
    download_mvtec(params, categories, progress=False)
    root = Path(params.root)
    assert Path(params.mvtec.archive).read_bytes() == server.payload
    assert sorted(p.name for p in root.iterdir()) == ["bottle"]  # no cable, no staging folder
    assert len(scan_mvtec_layout(root, ["bottle"])) == 6
    assert server.requests == [None]


def test_download_resumes_a_part_file(tmp_path, server):
    server.payload = build_archive(tmp_path)
    params, categories = dataset(tmp_path, url_of(server), server.payload)
    half = len(server.payload) // 2
    part = Path(params.mvtec.archive + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(server.payload[:half])
    download_mvtec(params, categories, progress=False)
    assert server.requests == [f"bytes={half}-"]
    assert Path(params.mvtec.archive).read_bytes() == server.payload
    assert not part.exists()
    assert (Path(params.root) / "bottle" / "train" / "good").is_dir()


def test_interrupted_download_resumes_on_the_next_run(tmp_path, server):
    server.payload = build_archive(tmp_path)
    server.cut_after = 500
    params, categories = dataset(tmp_path, url_of(server), server.payload)
    with pytest.raises(DataError, match=r"the download stopped after 500 of \d+ bytes.*rerun to resume it from .*mvtec.tar.xz.part"):
        download_mvtec(params, categories, progress=False)
    assert not Path(params.mvtec.archive).exists()
    server.cut_after = None
    download_mvtec(params, categories, progress=False)
    assert server.requests == [None, "bytes=500-"]
    assert Path(params.mvtec.archive).read_bytes() == server.payload


def test_download_starts_over_when_the_server_ignores_range(tmp_path, server):
    server.payload = build_archive(tmp_path)
    server.ignore_range = True
    params, categories = dataset(tmp_path, url_of(server), server.payload)
    part = Path(params.mvtec.archive + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"stale bytes from another file")
    download_mvtec(params, categories, progress=False)
    assert server.requests == ["bytes=29-"]
    assert Path(params.mvtec.archive).read_bytes() == server.payload


def test_wrong_checksum_is_an_error_and_keeps_the_file(tmp_path, server):
    server.payload = build_archive(tmp_path)
    params, categories = dataset(tmp_path, url_of(server), server.payload, sha256="0" * 64)
    actual = hashlib.sha256(server.payload).hexdigest()
    with pytest.raises(DataError, match=rf"mvtec.tar.xz: SHA-256 is {actual}, expected 0{{64}}.*delete"):
        download_mvtec(params, categories, progress=False)
    assert Path(params.mvtec.archive).is_file()
    assert not (Path(params.root) / "bottle").exists()


def test_archive_already_present_is_not_downloaded(tmp_path, server):
    payload = build_archive(tmp_path)
    params, categories = dataset(tmp_path, url_of(server), payload)
    Path(params.mvtec.archive).parent.mkdir(parents=True)
    Path(params.mvtec.archive).write_bytes(payload)
    download_mvtec(params, categories, progress=False)
    assert server.requests == []
    assert (Path(params.root) / "bottle" / "train" / "good").is_dir()


def test_skip_when_root_holds_the_categories(tmp_path, server):
    params, categories = dataset(tmp_path, url_of(server), b"", categories=("bottle", "cable"))
    make_category(Path(params.root), "bottle")
    make_category(Path(params.root), "cable")
    download_mvtec(params, categories, progress=False)
    assert server.requests == []
    assert not Path(params.mvtec.archive).exists()


def test_unknown_category_lists_the_archive_categories(tmp_path, server):
    server.payload = build_archive(tmp_path)
    params, categories = dataset(tmp_path, url_of(server), server.payload, categories=("bottle", "zipper"))
    with pytest.raises(DataError, match=r"no category \['zipper'\] in this archive.*\['bottle', 'cable'\]"):
        download_mvtec(params, categories, progress=False)
    assert not (Path(params.root) / "bottle").exists()  # nothing half-done is left behind
    assert [p.name for p in Path(params.root).iterdir()] == []


def test_unsafe_member_is_refused(tmp_path, server):
    server.payload = build_archive(tmp_path, extra_member="bottle/../../evil.txt")
    params, categories = dataset(tmp_path, url_of(server), server.payload)
    with pytest.raises(DataError, match=r"cannot extract it \(at 'bottle/../../evil.txt'"):
        download_mvtec(params, categories, progress=False)
    assert not (tmp_path / "evil.txt").exists()


def test_unreachable_server_explains_how_to_place_the_data(tmp_path):
    with socket.socket() as unused:  # bound but not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}/mvtec.tar.xz"
        params, categories = dataset(tmp_path, url, b"")
        with pytest.raises(DataError) as caught:
            download_mvtec(params, categories, progress=False)
    message = str(caught.value)
    assert f"{url} could not be reached" in message
    assert f"put it at {params.mvtec.archive}" in message
    assert f"{params.root}/<category>/" in message and "rerun" in message


def test_http_error_status_is_reported_with_the_hint(tmp_path, server):
    params, categories = dataset(tmp_path, url_of(server).replace("mvtec.tar.xz", "moved.tar.xz"), b"")
    with pytest.raises(DataError, match=r"moved.tar.xz: the server answered HTTP 404 .*put it at"):
        download_mvtec(params, categories, progress=False)


def test_incomplete_category_folder_is_not_overwritten(tmp_path, server):
    params, categories = dataset(tmp_path, url_of(server), b"")
    (Path(params.root) / "bottle" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match=r"mvtec/bottle exists but holds no train/good"):
        download_mvtec(params, categories, progress=False)
    assert server.requests == []


# --- the stage for MVTec-layout sources -----------------------------------------------


def test_stage_mvtec_source_with_data_in_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_category(tmp_path / "data" / "raw" / "mvtec", "bottle")
    params = Params.model_validate({"categories": ["bottle"], "dataset": {"source": "mvtec", "root": "data/raw/mvtec", "mvtec": {"url": "http://127.0.0.1:9/x"}}})
    records = run_data_stage(params, progress=False)
    assert len(records) == 6 and records[0].path.startswith("data/raw/mvtec/bottle/")
    assert read_manifest("data/processed/manifest.json") == records
    info = read_json("data/raw/source.json")
    assert info == {"source": "mvtec", "root": "data/raw/mvtec", "images_per_category": {"bottle": 6}, "images": 6,
                    "masks_per_category": {"bottle": {"masks": 2, "values": [0, 255], "defect_images_with_empty_mask": 0}}}


def test_stage_synthetic_source_calls_the_generator(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def generate_synthetic(root, params, seed, categories, progress=True, workers=1):
        calls.append((root, seed))
        for category in categories:
            make_category(root, category)

    fake = types.ModuleType("shiftad.data.synthetic")
    fake.generate_synthetic = generate_synthetic
    monkeypatch.setitem(sys.modules, "shiftad.data.synthetic", fake)
    params = Params.model_validate({"seed": 7, "categories": ["a", "b"], "dataset": {"root": "data/raw/synthetic"}})
    records = run_data_stage(params, progress=False)
    assert calls == [(Path("data/raw/synthetic"), 7)]
    assert read_json("data/raw/source.json")["images_per_category"] == {"a": 6, "b": 6}
    assert len(records) == 12


def test_snakemake_data_rule_keeps_a_hand_extracted_mvtec_folder(tmp_path):
    """The data rule declares the MVTec folder as its output; Snakemake deletes a job's outputs
    before it runs unless they are updated in place, which would wipe categories placed by hand
    (and force a re-extraction on every rerun)."""
    import shutil
    import subprocess

    from conftest import REPO

    project = tmp_path / "project"
    project.mkdir()
    for name in ("Snakefile", "params.yaml", "environment.yml", "workflow", "src"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, project / name)
    placed = make_category(project / "data/raw/mvtec", "bottle") / "train/good/000.png"
    (project / "mvtec.yaml").write_text("categories: [bottle]\ndataset: {source: mvtec, root: data/raw/mvtec, mvtec: {url: 'http://127.0.0.1:9/x'}}\n")
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(project / "src")}
    done = subprocess.run([str(bin_dir / "snakemake"), "--cores", "1", "--configfile", "mvtec.yaml", "--until", "data"],
                          cwd=project, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert placed.is_file(), "Snakemake deleted the hand-extracted MVTec folder"
    assert len(read_manifest(project / "data/processed/manifest.json")) == 6
