"""The inspection page in headless Chromium (Playwright, Debian's /usr/bin/chromium) against a
real `shiftad serve` app on loopback: upload an image, see the overlay, the badge and the
decision, set a ground-truth label, and save a screenshot as a test artifact
(`test-artifacts/inspection_page.png`, or under $SHIFTAD_TEST_ARTIFACTS)."""

import base64
import io
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shiftad import bundle as B
from shiftad.report.browser import find_chromium

from conftest import REPO, texture_records, with_defect
from test_bundle import bundle_dir, project  # noqa: F401  (fixtures)

playwright_api = pytest.importorskip("playwright.sync_api")
uvicorn = pytest.importorskip("uvicorn")
ARTIFACTS = Path(os.environ.get("SHIFTAD_TEST_ARTIFACTS", REPO / "test-artifacts"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(bundle_dir):  # noqa: F811
    from shiftad.serve import create_app

    port = free_port()
    config = uvicorn.Config(create_app(B.load_bundle(bundle_dir)), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started:
        if time.time() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture()
def browser():
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install chromium): the inspection page was not checked")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield browser
        browser.close()


def test_upload_shows_overlay_badge_decision_and_ground_truth_border(project, server, browser):  # noqa: F811
    root, _, _, _ = project
    normal = texture_records(root / "page", 1, size=64, seed=11)[0]
    defect = with_defect(normal, root, (16, 16, 48, 48))
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server)
    page.wait_for_function("document.querySelectorAll('#category option').length > 0")
    assert "knn (per_class, clean)" in page.inner_text("#model")

    page.set_input_files("#files", [defect.path, normal.path])
    page.wait_for_function("document.querySelectorAll('.card .badge').length == 2", timeout=60_000)
    cards = page.query_selector_all(".card")
    by_name = {card.query_selector("b").inner_text(): card for card in cards}
    for name, card in by_name.items():
        src = card.query_selector("img").get_attribute("src")
        assert src.startswith("data:image/png;base64,")
        overlay = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        assert overlay.shape == (64, 64, 3) and overlay.std() > 1  # a real heatmap, not an empty image
        score, threshold = (float(x) for x in card.query_selector(".badge").inner_text().split(" / "))
        decision = card.query_selector(".decision").inner_text()
        assert decision == ("anomalous" if score >= threshold else "normal"), (name, score, threshold)
        colour = card.query_selector(".badge").evaluate("e => getComputedStyle(e).backgroundColor")
        red, green = (int(v) for v in colour[colour.index("(") + 1 :].split(",")[:2])
        assert (red > green) == (score > threshold), (name, colour, score, threshold)  # green below, red above

    defect_card = by_name[Path(defect.path).name]
    defect_score = float(defect_card.query_selector(".badge").inner_text().split(" / ")[0])
    normal_score = float(by_name[Path(normal.path).name].query_selector(".badge").inner_text().split(" / ")[0])
    assert defect_score > normal_score  # the magenta square is the anomaly
    assert by_name[Path(normal.path).name].query_selector(".decision").inner_text() == "normal"
    assert defect_card.query_selector(".decision").inner_text() == "anomalous"
    defect_card.query_selector("select.label").select_option("anomalous")
    assert "right" in defect_card.get_attribute("class")  # green border: the decision matches the label
    normal_card = by_name[Path(normal.path).name]
    normal_card.query_selector("select.label").select_option("anomalous")
    assert "wrong" in normal_card.get_attribute("class")  # red border

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "inspection_page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert Image.open(shot).size[0] == 1100 and not errors, errors
