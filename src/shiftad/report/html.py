"""A self-contained HTML report page: one file, inline CSS, no JavaScript, relative links only.

Build a page from `Section`s holding blocks (`Text`, `Table`, `Figure`, `Gallery`) and render it with
`render_page` (a string) or `write_page` (written atomically). The page references images and other
files only by relative paths, so the report folder can be moved, zipped or served as it is;
`render_page` refuses absolute paths and URLs, and `check_links` lists references of a written page
whose files are missing.

Heatmap tiles (`Tile`) show the pipeline's overlay image with the ground-truth mask layered on top
(a checkbox per gallery hides the masks), a score badge coloured green→red over the tile's
`score_range`, a ground-truth badge, and a border telling whether the decision was right:

* border `CORRECT_COLOR` (green): predicted_anomalous == is_anomalous; `WRONG_COLOR` (red) otherwise,
  also spelled out as TP/TN/FP/FN text for readers who cannot tell the colours apart;
* ground-truth badge `NORMAL_COLOR` (green) "Normal" or `ANOMALOUS_COLOR` (red) "Anomalous";
* score badge `score_color(score, lo, hi)`: `SCORE_LOW_COLOR` at lo, `SCORE_MID_COLOR` halfway,
  `SCORE_HIGH_COLOR` at hi (clipped), `SCORE_NAN_COLOR` for a non-finite score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from os import PathLike
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pandas as pd

from shiftad.io import write_text

# --- colours (hex, documented in the module docstring) ------------------------------------------
CORRECT_COLOR = "#1a9641"  # tile border: the decision matches the ground truth
WRONG_COLOR = "#d7191c"  # tile border: the decision is wrong
NORMAL_COLOR = "#1a9641"  # ground-truth badge "Normal"
ANOMALOUS_COLOR = "#d7191c"  # ground-truth badge "Anomalous"
SCORE_LOW_COLOR = "#1a9641"  # score badge at the low end of score_range
SCORE_MID_COLOR = "#f0a30a"  # score badge halfway (amber: keeps the scale from passing through brown)
SCORE_HIGH_COLOR = "#d7191c"  # score badge at the high end of score_range
SCORE_NAN_COLOR = "#7f7f7f"  # score badge when the score or range is not finite

TILE_SIZE = 160  # display size of every tile image, in CSS pixels
BORDER_WIDTH = 4  # tile border, in CSS pixels

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")  # "http:", "data:", "javascript:", also "C:"


# --- blocks -------------------------------------------------------------------------------------
@dataclass
class Tile:
    """One test image: heatmap overlay, optional ground-truth mask layer, score and decision."""

    image: str  # relative path of the heatmap overlay (image blended with its heatmap)
    mask: str | None  # relative path of an RGBA PNG (mask red, transparent elsewhere), or None
    score: float
    threshold: float
    score_range: tuple[float, float]  # (lo, hi) for the score badge colour
    is_anomalous: bool  # ground truth
    predicted_anomalous: bool  # the decision
    caption: str
    extra: list[tuple[str, str]] = field(default_factory=list)  # (label, relative image path) shown beside

    @property
    def correct(self) -> bool:
        return bool(self.predicted_anomalous) == bool(self.is_anomalous)

    @property
    def outcome(self) -> str:
        """TP / TN / FP / FN, with "anomalous" as the positive class."""
        return ("T" if self.correct else "F") + ("P" if self.predicted_anomalous else "N")


@dataclass
class Gallery:
    """A collapsible (`<details>`) grid of tiles, collapsed unless `open`."""

    title: str
    note: str
    tiles: list[Tile]
    open: bool = False


@dataclass
class Table:
    """A data frame as an HTML table, with links (label, relative href) to other formats of it."""

    title: str
    frame: pd.DataFrame
    caption: str = ""
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Figure:
    """An image with a caption, and optionally a link to a PDF version."""

    path: str
    caption: str
    pdf: str | None = None


@dataclass
class Text:
    """Plain text; blank lines separate paragraphs. HTML is escaped, no other markup is interpreted."""

    markdown_light: str


Block = Text | Table | Figure | Gallery


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------------
def check_relative(path: str | PathLike[str]) -> str:
    """The path as a POSIX string; ValueError if it is empty, absolute, or a URL (anything with a scheme)."""
    text = Path(path).as_posix() if isinstance(path, PathLike) else str(path)
    if not text:
        raise ValueError("empty path in report page")
    if "://" in text or text.startswith(("/", "\\")) or _SCHEME.match(text) or Path(text).is_absolute():
        raise ValueError(f"report page links must be relative paths (no absolute path, no URL), got {text!r}")
    return text


def _url(path: str | PathLike[str]) -> str:
    """A validated relative path, percent-encoded for src/href (spaces, '#', '?') and HTML-escaped."""
    return escape(quote(check_relative(path), safe="/"), quote=True)


def _hex_to_rgb(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _rgb_to_hex(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{max(0, min(255, round(c))):02x}" for c in rgb)


def score_fraction(score: float, lo: float, hi: float) -> float:
    """(score - lo) / (hi - lo) clipped to [0, 1]; NaN when it cannot be computed."""
    if not all(math.isfinite(v) for v in (score, lo, hi)) or hi < lo:
        return math.nan
    if hi == lo:  # degenerate range: a step at lo
        return 0.0 if score < lo else 1.0
    return min(1.0, max(0.0, (score - lo) / (hi - lo)))


def score_color(score: float, lo: float, hi: float) -> str:
    """Badge colour: SCORE_LOW_COLOR at lo → SCORE_MID_COLOR → SCORE_HIGH_COLOR at hi (hex)."""
    t = score_fraction(float(score), float(lo), float(hi))
    if math.isnan(t):
        return SCORE_NAN_COLOR
    a, b, u = (SCORE_LOW_COLOR, SCORE_MID_COLOR, 2 * t) if t <= 0.5 else (SCORE_MID_COLOR, SCORE_HIGH_COLOR, 2 * t - 1)
    ca, cb = _hex_to_rgb(a), _hex_to_rgb(b)
    return _rgb_to_hex(tuple(x + (y - x) * u for x, y in zip(ca, cb)))


def text_color(background: str) -> str:
    """Black or white, whichever reads better on `background` (relative luminance test)."""
    r, g, b = (c / 255 for c in _hex_to_rgb(background))
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#000000" if luminance > 0.35 else "#ffffff"


def format_cell(value: object, column: str = "", digits: int = 3) -> str:
    """Floats with `digits` decimals, NaN/None as "–", integers and `n_*` counts as integers, else str."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value, "dtype").kind in "iu"):
        return str(int(value))  # type: ignore[arg-type]
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value, "dtype").kind == "f"):
        number = float(value)  # type: ignore[arg-type]
        if math.isnan(number):
            return "–"
        if column.startswith("n_") and number.is_integer():
            return str(int(number))
        return f"{number:.{digits}f}"
    return str(value)


def _slug(title: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


# --- rendering ----------------------------------------------------------------------------------
CSS = f"""
:root {{ color-scheme: light; }}
body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1600px; padding: 1rem 1.5rem 3rem; color: #1f2328; background: #ffffff;
  line-height: 1.45; }}
h1 {{ margin: 0.2rem 0 0.3rem; font-size: 1.6rem; }}
h2 {{ margin-top: 2rem; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2rem; font-size: 1.3rem; }}
.generated {{ color: #59636e; font-size: 0.85rem; margin: 0 0 1rem; }}
nav.toc {{ background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.4rem 1rem;
  display: inline-block; }}
nav.toc ol {{ margin: 0.3rem 0; padding-left: 1.4rem; }}
a {{ color: #0969da; }}
.table-block {{ margin: 1rem 0; overflow-x: auto; }}
.table-block h3, details.gallery > summary {{ font-size: 1.05rem; font-weight: 600; }}
table.data {{ border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; }}
table.data caption {{ caption-side: bottom; text-align: left; color: #59636e; padding-top: 0.3rem; }}
table.data th, table.data td {{ border: 1px solid #d0d7de; padding: 0.2rem 0.5rem; white-space: nowrap; }}
table.data th {{ background: #f6f8fa; position: sticky; top: 0; }}
table.data td.num {{ text-align: right; }}
table.data tbody tr:nth-child(even) {{ background: #fafbfc; }}
.links {{ font-size: 0.85rem; margin: 0.2rem 0; }}
.links a {{ margin-right: 0.8rem; }}
figure.figure {{ margin: 1rem 0; }}
figure.figure img {{ max-width: 100%; height: auto; border: 1px solid #d0d7de; }}
figure.figure figcaption {{ color: #59636e; font-size: 0.9rem; }}
details.gallery {{ margin: 1rem 0; border: 1px solid #d0d7de; border-radius: 6px; padding: 0.4rem 0.8rem; }}
details.gallery > summary {{ cursor: pointer; }}
.gallery .note {{ color: #59636e; font-size: 0.9rem; margin: 0.3rem 0; }}
.legend {{ font-size: 0.8rem; color: #59636e; margin: 0.2rem 0 0.5rem; }}
.legend .swatch {{ display: inline-block; width: 0.8em; height: 0.8em; vertical-align: -0.1em;
  margin: 0 0.2em 0 0.6em; border-radius: 2px; }}
.mask-toggle-label {{ font-size: 0.85rem; user-select: none; }}
.mask-toggle:not(:checked) ~ .grid img.mask {{ display: none; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }}
.tile {{ flex: 0 0 auto; width: min-content; border: {BORDER_WIDTH}px solid; border-radius: 4px; padding: 6px;
  background: #ffffff; font-size: 0.8rem; }}
.tile.correct {{ border-color: {CORRECT_COLOR}; }}
.tile.wrong {{ border-color: {WRONG_COLOR}; }}
.maps {{ display: flex; gap: 6px; }}
.map {{ margin: 0; }}
.map figcaption {{ font-size: 0.75rem; color: #59636e; text-align: center; }}
.stack {{ position: relative; width: {TILE_SIZE}px; height: {TILE_SIZE}px; background: #eeeeee; }}
.stack img, .map img {{ display: block; width: {TILE_SIZE}px; height: {TILE_SIZE}px; object-fit: contain; }}
.stack img.mask {{ position: absolute; left: 0; top: 0; pointer-events: none; }}
.badges {{ display: flex; flex-wrap: wrap; gap: 4px; margin-top: 4px; align-items: center; }}
.badge {{ display: inline-block; border-radius: 3px; padding: 1px 6px; font-weight: 600; white-space: nowrap; }}
.badge.gt-normal {{ background: {NORMAL_COLOR}; color: {text_color(NORMAL_COLOR)}; }}
.badge.gt-anomalous {{ background: {ANOMALOUS_COLOR}; color: {text_color(ANOMALOUS_COLOR)}; }}
.outcome {{ font-weight: 600; }}
.tile.correct .outcome {{ color: {CORRECT_COLOR}; }}
.tile.wrong .outcome {{ color: {WRONG_COLOR}; }}
.caption {{ margin-top: 3px; overflow-wrap: anywhere; color: #1f2328; }}
footer {{ margin-top: 3rem; color: #59636e; font-size: 0.8rem; }}
"""


def _img(path: str, alt: str, cls: str, lazy: bool) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return (
        f'<img class="{cls}" src="{_url(path)}" alt="{escape(alt)}" width="{TILE_SIZE}" height="{TILE_SIZE}"'
        f' decoding="async"{loading}>'
    )


def _render_tile(tile: Tile, lazy: bool) -> str:
    lo, hi = tile.score_range
    background = score_color(tile.score, lo, hi)
    relation = "≥" if tile.score >= tile.threshold else "<"
    score_text = f"{tile.score:.3f} {relation} {tile.threshold:.3f}"
    truth = "Anomalous" if tile.is_anomalous else "Normal"
    state = "correct" if tile.correct else "wrong"
    verdict = "✓" if tile.correct else "✗"
    predicted = "anomalous" if tile.predicted_anomalous else "normal"
    tooltip = f"{tile.outcome}: predicted {predicted}, ground truth {truth.lower()}; score {score_text}"
    layers = [_img(tile.image, f"heatmap overlay: {tile.caption}", "overlay", lazy)]
    if tile.mask is not None:
        layers.append(_img(tile.mask, "", "mask", lazy))
    label = "<figcaption>heatmap</figcaption>" if tile.extra else ""  # name the maps only when there are several
    maps = [f'<figure class="map"><div class="stack">{"".join(layers)}</div>{label}</figure>']
    for label, path in tile.extra:
        maps.append(
            f'<figure class="map">{_img(path, label, "extra", lazy)}<figcaption>{escape(label)}</figcaption></figure>'
        )
    return (
        f'<div class="tile {state}" title="{escape(tooltip)}">'
        f'<div class="maps">{"".join(maps)}</div>'
        '<div class="badges">'
        f'<span class="badge score" style="background:{background};color:{text_color(background)}">'
        f"{escape(score_text)}</span>"
        f'<span class="badge gt-{truth.lower()}">{truth}</span>'
        f'<span class="outcome">{verdict} {tile.outcome}</span>'
        "</div>"
        f'<div class="caption">{escape(tile.caption)}</div>'
        "</div>"
    )


def _legend() -> str:
    def swatch(color: str, label: str) -> str:
        return f'<span class="swatch" style="background:{color}"></span>{escape(label)}'

    return (
        '<div class="legend">Border:'
        + swatch(CORRECT_COLOR, "correct decision")
        + swatch(WRONG_COLOR, "wrong decision")
        + " · Score:"
        + swatch(SCORE_LOW_COLOR, "low")
        + swatch(SCORE_MID_COLOR, "mid")
        + swatch(SCORE_HIGH_COLOR, "high")
        + " · Mask: ground truth in red</div>"
    )


def _render_gallery(gallery: Gallery, anchor: str, lazy: bool) -> str:
    open_attr = " open" if gallery.open else ""
    has_masks = any(t.mask is not None for t in gallery.tiles)
    toggle = (
        f'<input type="checkbox" class="mask-toggle" id="{anchor}-masks" checked>'
        f'<label class="mask-toggle-label" for="{anchor}-masks"> show ground-truth masks</label>'
        if has_masks
        else ""
    )
    tiles = "\n".join(_render_tile(t, lazy) for t in gallery.tiles)
    note = f'<p class="note">{escape(gallery.note)}</p>' if gallery.note else ""
    return (
        f'<details class="gallery" id="{anchor}"{open_attr}>'
        f"<summary>{escape(gallery.title)} ({len(gallery.tiles)} images)</summary>"
        f"{note}{_legend()}{toggle}"
        f'<div class="grid">\n{tiles}\n</div></details>'
    )


def _render_table(table: Table, anchor: str) -> str:
    frame = table.frame
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    columns = [str(c) for c in frame.columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c]) for c in frame.columns
    ]
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    rows = []
    for row in frame.itertuples(index=False, name=None):
        cells = []
        for value, column, is_num in zip(row, columns, numeric):
            cls = ' class="num"' if is_num else ""
            cells.append(f"<td{cls}>{escape(format_cell(value, column))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{escape(table.caption)}</caption>" if table.caption else ""
    links = ""
    if table.links:
        links = '<div class="links">' + "".join(f'<a href="{_url(h)}">{escape(lbl)}</a>' for lbl, h in table.links)
        links += "</div>"
    return (
        f'<div class="table-block" id="{anchor}"><h3>{escape(table.title)}</h3>{links}'
        f'<table class="data">{caption}<thead><tr>{head}</tr></thead><tbody>\n'
        + "\n".join(rows)
        + "\n</tbody></table></div>"
    )


def _render_figure(figure: Figure, lazy: bool) -> str:
    loading = ' loading="lazy"' if lazy else ""
    pdf = f' <a href="{_url(figure.pdf)}">(PDF)</a>' if figure.pdf else ""
    return (
        f'<figure class="figure"><img src="{_url(figure.path)}" alt="{escape(figure.caption)}"{loading}>'
        f"<figcaption>{escape(figure.caption)}{pdf}</figcaption></figure>"
    )


def _render_text(text: Text) -> str:
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", text.markdown_light.strip()) if p.strip()]
    return "\n".join(f"<p>{escape(p)}</p>" for p in paragraphs)


def _render_block(block: Block, anchor: str, lazy: bool) -> str:
    if isinstance(block, Text):
        return _render_text(block)
    if isinstance(block, Table):
        return _render_table(block, anchor)
    if isinstance(block, Figure):
        return _render_figure(block, lazy)
    if isinstance(block, Gallery):
        return _render_gallery(block, anchor, lazy)
    raise TypeError(f"unknown report block {type(block).__name__}")


def render_page(title: str, sections: list[Section], generated: str = "", lazy: bool = True) -> str:
    """The whole page as one HTML string. ValueError if any image/link path is absolute or a URL.

    `lazy=False` drops `loading="lazy"` from the images (e.g. for a page meant to be printed).
    """
    used: set[str] = {"toc"}
    toc, body = [], []
    for section in sections:
        anchor = _slug(section.title, used)
        toc.append(f'<li><a href="#{anchor}">{escape(section.title)}</a></li>')
        parts = [f'<section id="{anchor}"><h2>{escape(section.title)}</h2>']
        for i, block in enumerate(section.blocks):
            parts.append(_render_block(block, f"{anchor}-{i + 1}", lazy))
        parts.append("</section>")
        body.append("\n".join(parts))
    generated_html = f'<p class="generated">Generated {escape(generated)}</p>' if generated else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{escape(title)}</h1>{generated_html}</header>\n"
        f'<nav class="toc" id="toc"><strong>Contents</strong><ol>{"".join(toc)}</ol></nav>\n'
        + "\n".join(body)
        + "\n<footer>Self-contained report: every linked file lies beside this page.</footer>\n</body>\n</html>\n"
    )


def write_page(
    path: str | Path, title: str, sections: list[Section], generated: str = "", lazy: bool = True
) -> Path:
    """Render the page and write it atomically to `path`; returns the path."""
    path = Path(path)
    write_text(path, render_page(title, sections, generated=generated, lazy=lazy))
    return path


# --- link check ---------------------------------------------------------------------------------
class _LinkCollector(HTMLParser):
    ATTRS = {"src", "href", "srcset", "poster", "data"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in self.ATTRS and value:
                if name == "srcset":
                    self.links.extend(part.strip().split(" ")[0] for part in value.split(",") if part.strip())
                else:
                    self.links.append(value)


def check_links(page_path: str | Path) -> list[str]:
    """References in a written page that are not existing files relative to it (in page order, unique).

    In-page anchors ("#...") are skipped; absolute paths and URLs are always reported (the page must be
    self-contained).
    """
    page_path = Path(page_path)
    collector = _LinkCollector()
    collector.feed(page_path.read_text(encoding="utf-8"))
    collector.close()
    bad: list[str] = []
    for link in collector.links:
        if link.startswith("#") or link in bad:
            continue
        try:
            check_relative(link)
        except ValueError:
            bad.append(link)
            continue
        target = unquote(urlsplit(link).path)
        if not target or not (page_path.parent / target).is_file():
            bad.append(link)
    return bad
