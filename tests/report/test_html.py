"""The HTML report page: structure without a browser, and a real headless-Chromium rendering check."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from shiftad.report import browser
from shiftad.report.browser import find_chromium, screenshot
from shiftad.report.html import (
    ANOMALOUS_COLOR,
    BORDER_WIDTH,
    CORRECT_COLOR,
    NORMAL_COLOR,
    SCORE_HIGH_COLOR,
    SCORE_LOW_COLOR,
    SCORE_MID_COLOR,
    SCORE_NAN_COLOR,
    TILE_SIZE,
    WRONG_COLOR,
    Figure,
    Gallery,
    Section,
    Table,
    Text,
    Tile,
    check_links,
    format_cell,
    render_page,
    score_color,
    write_page,
)


def tile(**overrides) -> Tile:
    fields = dict(
        image="overlays/a.png", mask="masks/a.png", score=0.7, threshold=0.5, score_range=(0.0, 1.0),
        is_anomalous=True, predicted_anomalous=True, caption="bottle/broken_large/000.png",
    )
    fields.update(overrides)
    return Tile(**fields)


def page(*blocks, title: str = "Report") -> str:
    return render_page(title, [Section("Results", list(blocks))])


# --- structure, no browser ------------------------------------------------------------------------
def test_text_and_captions_are_escaped():
    html = render_page(
        "A <b>title</b> & more",
        [Section("S <i>", [Text("first <script>alert(1)</script>\n\nsecond & \"third\""),
                           Gallery("G <x>", "note <y>", [tile(caption='<img src=x onerror="bad">')], open=True)])],
        generated="2024 <now>",
    )
    assert "<script>alert" not in html and "<b>title" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "A &lt;b&gt;title&lt;/b&gt; &amp; more" in html
    assert "&lt;img src=x onerror=&quot;bad&quot;&gt;" in html
    assert html.count("<p>") == 2  # blank-line paragraphs
    assert "2024 &lt;now&gt;" in html and "note &lt;y&gt;" in html


@pytest.mark.parametrize(
    "block",
    [
        Figure("/abs/roc.png", "roc"),
        Figure("roc.png", "roc", pdf="https://example.com/roc.pdf"),
        Figure("//cdn.example.com/x.png", "protocol-relative"),
        Figure("data:image/png;base64,AAAA", "data url"),
        Figure("C:\\report\\roc.png", "windows absolute"),
        Table("t", pd.DataFrame({"a": [1]}), links=[("CSV", "http://host/t.csv")]),
        Gallery("g", "", [tile(image="/tmp/x.png")]),
        Gallery("g", "", [tile(mask="file:///tmp/m.png")]),
        Gallery("g", "", [tile(extra=[("uncertainty", "/u.png")])]),
    ],
)
def test_absolute_paths_and_urls_are_refused(block):
    with pytest.raises(ValueError, match="relative"):
        page(block)


def test_relative_links_are_percent_encoded():
    html = page(Figure("figures/roc curve#1.png", "roc", pdf="figures/roc.pdf"), Table(
        "t", pd.DataFrame({"a": [1.0]}), links=[("CSV", "tables/t.csv"), ("LaTeX", "tables/t.tex")]))
    assert 'src="figures/roc%20curve%231.png"' in html
    assert 'href="figures/roc.pdf"' in html and 'href="tables/t.csv"' in html and 'href="tables/t.tex"' in html
    assert "://" not in html  # nothing external: no CDN, fonts or scripts


def test_score_colour_endpoints_and_clipping():
    assert score_color(0.0, 0.0, 1.0) == SCORE_LOW_COLOR
    assert score_color(1.0, 0.0, 1.0) == SCORE_HIGH_COLOR
    assert score_color(3.0, 2.0, 4.0) == SCORE_MID_COLOR
    assert score_color(-5.0, 0.0, 1.0) == SCORE_LOW_COLOR  # clipped
    assert score_color(9.0, 0.0, 1.0) == SCORE_HIGH_COLOR
    assert score_color(math.nan, 0.0, 1.0) == SCORE_NAN_COLOR
    assert score_color(0.5, 1.0, 0.0) == SCORE_NAN_COLOR  # an inverted range is a bug upstream, shown grey
    low, high = (np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) for c in (SCORE_LOW_COLOR, SCORE_HIGH_COLOR))
    assert low[1] > low[0] and high[0] > high[1]  # green at lo, red at hi
    html = page(Gallery("g", "", [tile(score=0.2, score_range=(0.2, 0.9))]))
    assert f"background:{SCORE_LOW_COLOR}" in html and "0.200 &lt; 0.500" in html
    html = page(Gallery("g", "", [tile(score=0.9, score_range=(0.2, 0.9))]))
    assert f"background:{SCORE_HIGH_COLOR}" in html and "0.900 ≥ 0.500" in html


def test_border_class_and_ground_truth_badge():
    cases = {  # (is_anomalous, predicted_anomalous): (border class, outcome, badge)
        (True, True): ("correct", "TP", "Anomalous"),
        (False, False): ("correct", "TN", "Normal"),
        (False, True): ("wrong", "FP", "Normal"),
        (True, False): ("wrong", "FN", "Anomalous"),
    }
    for (truth, predicted), (state, outcome, badge) in cases.items():
        t = tile(is_anomalous=truth, predicted_anomalous=predicted)
        html = page(Gallery("g", "", [t]))
        assert f'class="tile {state}"' in html and f"{outcome}</span>" in html
        assert f'class="badge gt-{badge.lower()}">{badge}</span>' in html
        assert t.correct is (state == "correct") and t.outcome == outcome
    html = page(Gallery("g", "", [tile()]))
    for selector, color in [(".tile.correct", CORRECT_COLOR), (".tile.wrong", WRONG_COLOR),
                            (".badge.gt-normal", NORMAL_COLOR), (".badge.gt-anomalous", ANOMALOUS_COLOR)]:
        assert f"{selector} {{" in html and color in html.split(f"{selector} {{", 1)[1].split("}", 1)[0]
    assert CORRECT_COLOR != WRONG_COLOR


def test_gallery_markup():
    tiles = [tile(), tile(mask=None, extra=[("uncertainty", "maps/u.png")])]
    html = page(Gallery("closed", "n", tiles), Gallery("opened", "n", tiles, open=True))
    assert html.count("<details") == 2 and html.count(" open>") == 1
    assert html.count('loading="lazy"') == 2 * 4  # overlay + mask, overlay + extra, per gallery
    assert f'width="{TILE_SIZE}" height="{TILE_SIZE}"' in html
    assert 'class="mask-toggle"' in html and "maps/u.png" in html and ">uncertainty</figcaption>" in html
    assert 'loading="lazy"' not in render_page("r", [Section("s", [Gallery("g", "", tiles)])], lazy=False)


def test_table_formatting():
    frame = pd.DataFrame({
        "category": ["bottle", "cable"],
        "image_auroc": [0.82349, math.nan],
        "n_test": [83, 150],
        "auroc_ci": ["0.823 [0.79, 0.85]", "–"],
        "flag": [True, False],
    })
    html = page(Table("Metrics", frame, caption="cap <1>", links=[("CSV", "tables/m.csv")]))
    assert "<td class=\"num\">0.823</td>" in html and "<td class=\"num\">–</td>" in html
    assert "<td class=\"num\">83</td>" in html and "<td>0.823 [0.79, 0.85]</td>" in html
    assert "<td>True</td>" in html and "<caption>cap &lt;1&gt;</caption>" in html
    assert "0.82349" not in html and "nan" not in html.lower().replace("nanos", "")
    assert format_cell(None) == "–" and format_cell(np.float32("nan")) == "–" and format_cell(np.int64(7)) == "7"
    assert format_cell(12.0, "n_test") == "12" and format_cell(0.5) == "0.500"


def test_table_of_contents_and_unique_anchors():
    html = render_page("r", [Section("Results", []), Section("Results", []), Section("Über & co", [])])
    for anchor in ("results", "results-2", "ber-co"):
        assert f'href="#{anchor}"' in html and f'<section id="{anchor}">' in html


def test_write_page_and_check_links(tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "roc curve.png").write_bytes(b"png")
    sections = [Section("s", [Figure("figures/roc curve.png", "roc", pdf="figures/roc.pdf"),
                              Gallery("g", "", [tile(image="figures/roc curve.png", mask="masks/m.png")])])]
    path = write_page(tmp_path / "report" / ".." / "index.html", "r", sections)
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert check_links(path) == ["figures/roc.pdf", "masks/m.png"]
    assert not list(tmp_path.glob(".*.tmp*"))  # the atomic write left nothing behind


def test_screenshot_without_chromium_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(browser.ENV_VAR, raising=False)
    assert find_chromium() is None
    (tmp_path / "p.html").write_text("<p>x</p>")
    with pytest.raises(RuntimeError, match="apt-get install chromium"):
        screenshot(tmp_path / "p.html", tmp_path / "p.png")


# --- real browser ---------------------------------------------------------------------------------
GREY = 128
EXTRA_RGB = (40, 90, 200)  # the extra map: a solid blue so it cannot be mistaken for the grey overlay


def rgb(color: str) -> np.ndarray:
    return np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)], dtype=int)


def near(pixels: np.ndarray, color, tol: int = 30) -> np.ndarray:
    return (np.abs(pixels.astype(int) - np.asarray(color, dtype=int)) <= tol).all(axis=-1)


def tile_box(shot: np.ndarray, color: str) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the one tile whose border has `color`: its columns hold long runs of it."""
    hit = near(shot, rgb(color), tol=25)
    columns = np.flatnonzero(hit.sum(axis=0) >= TILE_SIZE)  # only a tile's left/right borders are that tall
    assert columns.size >= 2, f"no tile border in {color} found"
    left, right = columns.min(), columns.max()
    assert right - left >= TILE_SIZE, f"border in {color}: columns {left}..{right} do not frame an image"
    rows = np.flatnonzero(hit[:, left])
    return rows.min(), left, rows.max(), right


def grey_image_box(shot: np.ndarray, box) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the grey overlay image inside a tile (its L-shaped untinted part spans it)."""
    top, left, bottom, right = box
    inner = near(shot[top:bottom, left:right], (GREY, GREY, GREY), tol=6)
    # rows/columns with many grey pixels: anti-aliased text has a few, the image at least half a side
    rows = np.flatnonzero(inner.sum(axis=1) >= TILE_SIZE // 3)
    cols = np.flatnonzero(inner.sum(axis=0) >= TILE_SIZE // 3)
    assert rows.size and cols.size, "the overlay image did not render"
    # the first run of grey columns is the overlay (an extra map, if any, is blue)
    run_end, columns = cols[0], set(cols.tolist())
    while run_end + 1 in columns:
        run_end += 1
    return top + rows.min(), left + cols[0], top + rows.max(), left + run_end


def quadrants(shot: np.ndarray, image_box):
    """Mean colour in the middle of each quadrant of an image: top-left, top-right, bottom-left, bottom-right."""
    top, left, bottom, right = image_box
    h, w = (bottom - top + 1) // 2, (right - left + 1) // 2
    out = []
    for dy, dx in [(0, 0), (0, w), (h, 0), (h, w)]:
        y0, x0 = top + dy + h // 4, left + dx + w // 4
        out.append(shot[y0:y0 + h // 2, x0:x0 + w // 2].reshape(-1, 3).mean(axis=0))
    return out


def is_grey(color) -> bool:
    return bool(np.all(np.abs(np.asarray(color) - GREY) <= 8))


def is_reddish(color) -> bool:
    r, g, b = color
    return r > g + 60 and r > b + 60


@pytest.mark.skipif(find_chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_page_renders_in_headless_chromium(tmp_path):
    (tmp_path / "overlays").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((64, 64, 3), GREY, np.uint8)).save(tmp_path / "overlays" / "grey tile.png")
    mask = np.zeros((64, 64, 4), np.uint8)
    mask[:32, :32] = (255, 0, 0, 140)  # semi-transparent red in the top-left quadrant only
    Image.fromarray(mask).save(tmp_path / "masks" / "mask.png")
    Image.fromarray(np.full((64, 64, 3), EXTRA_RGB, np.uint8)).save(tmp_path / "overlays" / "extra.png")
    right = Tile("overlays/grey tile.png", None, 0.1, 0.5, (0.1, 0.9), False, False, "correct: true negative")
    wrong = Tile("overlays/grey tile.png", "masks/mask.png", 0.5, 0.6, (0.1, 0.9), True, False,
                 "wrong: false negative", extra=[("uncertainty", "overlays/extra.png")])
    sections = [Section("Heatmaps", [Gallery("Tiles", "two tiles", [right, wrong], open=True)])]
    page_path = write_page(tmp_path / "index.html", "Screenshot test", sections)  # lazy images, as published
    assert check_links(page_path) == []

    started = time.perf_counter()
    shot = np.array(Image.open(screenshot(page_path, tmp_path / "shot.png", width=900, height=900)).convert("RGB"))
    elapsed = time.perf_counter() - started
    assert shot.shape == (900, 900, 3)

    # (a) borders: the correct tile framed green, the wrong one red; the correct tile comes first
    good_box, bad_box = tile_box(shot, CORRECT_COLOR), tile_box(shot, WRONG_COLOR)
    assert good_box[3] < bad_box[1]
    for box in (good_box, bad_box):
        assert box[2] - box[0] > TILE_SIZE and box[3] - box[1] > TILE_SIZE

    # (b) images rendered at their display size; the mask tints only the top-left quadrant of the wrong tile
    good_img, bad_img = grey_image_box(shot, good_box), grey_image_box(shot, bad_box)
    for top, left, bottom, right_ in (good_img, bad_img):
        assert abs((bottom - top + 1) - TILE_SIZE) <= 2 and abs((right_ - left + 1) - TILE_SIZE) <= 2
    assert all(is_grey(c) for c in quadrants(shot, good_img))  # no mask: all grey
    tl, tr, bl, br = quadrants(shot, bad_img)
    assert is_reddish(tl), f"mask overlay missing: top-left quadrant is {tl}"
    assert is_grey(tr) and is_grey(bl) and is_grey(br)
    extra = near(shot[bad_box[0]:bad_box[2], bad_img[3]:bad_box[3]], EXTRA_RGB, tol=6)
    assert extra.sum() > 0.9 * TILE_SIZE * TILE_SIZE, "the extra map did not render beside the overlay"

    # (c) badges below the images: green score + "Normal" on the right tile, amber score + red "Anomalous"
    def badge_pixels(box, image_box, color: str) -> int:
        region = shot[image_box[2] + 1:box[2] - BORDER_WIDTH, box[1] + BORDER_WIDTH + 1:box[3] - BORDER_WIDTH]
        return int(near(region, rgb(color), tol=20).sum())

    assert badge_pixels(good_box, good_img, SCORE_LOW_COLOR) > 400  # score badge and "Normal" badge
    assert badge_pixels(good_box, good_img, SCORE_MID_COLOR) == 0
    assert score_color(0.5, 0.1, 0.9) == SCORE_MID_COLOR
    assert badge_pixels(bad_box, bad_img, SCORE_MID_COLOR) > 200  # score 0.5 in (0.1, 0.9): amber
    assert badge_pixels(bad_box, bad_img, ANOMALOUS_COLOR) > 200
    assert elapsed < 30

    # the "show ground-truth masks" checkbox hides the mask layer (pure CSS)
    html = page_path.read_text(encoding="utf-8")
    assert html.count(" checked>") == 1
    unchecked = tmp_path / "unchecked.html"
    unchecked.write_text(html.replace(" checked>", ">"), encoding="utf-8")
    shot = np.array(Image.open(screenshot(unchecked, tmp_path / "unchecked.png", width=900, height=900)).convert("RGB"))
    assert all(is_grey(c) for c in quadrants(shot, grey_image_box(shot, tile_box(shot, WRONG_COLOR))))
