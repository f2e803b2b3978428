"""`shiftad serve`: a bundle behind a REST API (FastAPI + uvicorn).

Endpoints: `POST /predict` (multipart upload `file`, or JSON `{"image_base64": …}`; `category`
optional where the bundle holds one category or has a router), `GET /health`, `GET /model` (bundle
metadata), `GET /openapi.json` and `/docs` (FastAPI). A user's mistake is a 4xx with a clear
message, never a 500: wrong content type (415), too many bytes (413), too many pixels — a
decompression bomb is refused from its header, before decoding (413), unreadable image (400),
unknown category (404).

`GET /` serves the inspection page (`web/inspect.html`). Scoring runs in a worker thread, one
request at a time (the model uses every core), so `/health` answers while an image is scored.
`--runtime onnx` runs the feature network with ONNX Runtime.
"""


# No `from __future__ import annotations` here: FastAPI reads the endpoint annotations (Request) at runtime.
import base64
import binascii
import io
import json
import math
import threading
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from shiftad.bundle import Bundle
from shiftad.data.images import to_rgb_array
from shiftad.evaluate.stage import overlay

IMAGE_TYPES = {"image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp"}
UNTYPED = {"", "application/octet-stream"}  # file parts that declare no type: the decoder decides
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
PAGE = Path(__file__).parent / "web" / "inspect.html"  # plain HTML + a little JavaScript, no build step


class Prediction(BaseModel):
    category: str = Field(description="the category whose model and threshold scored the image")
    routed_category: str | None = Field(None, description="set when the bundle's router chose the category (no category sent)")
    anomaly_score: float
    threshold: float = Field(description="the threshold validation chose for this category")
    is_anomalous: bool = Field(description="anomaly_score >= threshold")
    margin: float = Field(description="anomaly_score - threshold: how far the decision is from flipping")
    relative_margin: float | None = Field(description="margin / |threshold| (null when the threshold is 0)")
    heatmap_png_base64: str = Field(description="the anomaly map over the image (blue = normal, red = at or above threshold), PNG")


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    detail: str


IMAGE_FIELDS = {"category": {"type": "string", "description": "optional when the bundle holds one category or has a router"}}
PREDICT_BODY = {"required": True, "content": {
    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": f"the image ({', '.join(sorted(IMAGE_TYPES))})"},
        **IMAGE_FIELDS}},
        "encoding": {"file": {"contentType": ", ".join(sorted(IMAGE_TYPES | {"application/octet-stream"}))}}},
    "application/json": {"schema": {"type": "object", "required": ["image_base64"], "properties": {
        "image_base64": {"type": "string", "format": "byte", "minLength": 1, "description": "the image file's bytes, base64"}, **IMAGE_FIELDS}}},
}}
ERRORS = {400: "unreadable image or malformed body", 404: "unknown category", 413: "upload or image too large",
          415: "unsupported content type", 422: "missing file field or category"}


class InputError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def decode_image(data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Bytes -> H×W×3 uint8 RGB, checking size limits before the full decode."""
    if len(data) > max_bytes:
        raise InputError(413, f"upload of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    if not data:
        raise InputError(400, "empty upload")
    try:
        with Image.open(io.BytesIO(data)) as probe:  # reads the header only
            width, height = probe.size
            if width * height > max_pixels:
                raise InputError(413, f"image of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}")
            probe.load()
            return to_rgb_array(probe)  # the pipeline's rules: gray repeated, alpha dropped, 16-bit scaled
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(400, f"not a readable image ({exc.__class__.__name__}: {exc})") from None


def _finite(value):
    """NaN / inf (a threshold fact that could not be computed) as null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class Inspector:
    """Scores one image with the bundle's model for its category (models loaded once, scoring serialised)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self._lock = threading.Lock()

    def category(self, requested: str | None) -> str | None:
        """The category to score with; None: the bundle's router decides."""
        if requested is None or requested == "":
            if self.bundle.routes:
                return None
            if len(self.bundle.categories) != 1:
                raise InputError(422, f"this bundle holds {self.bundle.categories}; send a category")
            return self.bundle.categories[0]
        if requested not in self.bundle.categories:
            raise InputError(404, f"unknown category '{requested}'; this bundle knows {self.bundle.categories}")
        return requested

    def inspect(self, image: np.ndarray, category: str | None) -> dict:
        with self._lock:
            model = self.bundle.routing_model() if category is None else self.bundle.model(category)
            scores = model.score_images([image], category=category)
        routed = None
        if category is None:
            category = routed = str(scores.categories[0])
        threshold, floor = self.bundle.threshold(category), self.bundle.map_floor(category)
        score, heat = float(scores.image_scores[0]), scores.maps[0]
        vmin = floor if math.isfinite(floor) else float(heat.min())
        return {
            "category": category, "routed_category": routed, "anomaly_score": score, "threshold": threshold, "is_anomalous": bool(score >= threshold),
            "margin": score - threshold, "relative_margin": (score - threshold) / abs(threshold) if threshold else None,
            "heatmap_png_base64": png_base64(overlay(image, heat, vmin, max(threshold, vmin + 1e-6), model.resize)),
        }


def create_app(bundle: Bundle, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS):
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    inspector = Inspector(bundle)
    app = FastAPI(title="shiftad inspection API", version=str(bundle.meta["versions"].get("shiftad", "")),
                  description=f"{bundle.meta['detector']} ({bundle.meta['regime']}, {bundle.meta['domain']}) on {bundle.categories}")

    @app.exception_handler(InputError)
    async def _input_error(_request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.message})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health", response_model=Health)
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/model")
    def model() -> dict:
        """The bundle's metadata: detector, regime, domain, categories, thresholds, backbone, ONNX facts, versions."""
        meta = bundle.meta
        keys = ("detector", "regime", "domain", "categories", "thresholds", "image_size", "backbone", "preprocessing", "onnx", "versions")
        return _finite({**{key: meta.get(key) for key in keys}, "routes": bundle.routes, "runtime": bundle.runtime})

    @app.post("/predict", response_model=Prediction, openapi_extra={"requestBody": PREDICT_BODY},
              responses={code: {"model": ErrorBody, "description": text} for code, text in ERRORS.items()})
    async def predict(request: Request) -> dict:
        """Score one image: multipart upload (`file`) or JSON (`image_base64`); `category` where the bundle holds several."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes * 4 // 3 + 65536:
            raise InputError(413, f"request of {length} bytes exceeds the upload limit of {max_bytes} bytes")
        if content_type == "multipart/form-data":
            form = await request.form()
            upload, category = form.get("file"), form.get("category")
            if upload is None or not hasattr(upload, "read"):
                raise InputError(422, "multipart body needs a 'file' field holding the image")
            declared = (upload.content_type or "").split(";")[0].strip().lower()
            if declared not in IMAGE_TYPES | UNTYPED:  # no or a generic type: the decoder decides
                raise InputError(415, f"file content type '{upload.content_type}' is not one of {sorted(IMAGE_TYPES)}")
            data = await upload.read(max_bytes + 1)
        elif content_type == "application/json":
            raw = bytearray()
            async for chunk in request.stream():  # capped: a chunked body has no Content-Length to check
                raw += chunk
                if len(raw) > max_bytes * 4 // 3 + 65536:
                    raise InputError(413, f"JSON body exceeds the upload limit of {max_bytes} bytes (base64)")
            try:
                body = json.loads(raw)
                encoded = body["image_base64"]
                data = base64.b64decode(encoded, validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise InputError(400, "JSON body needs 'image_base64' holding a base64-encoded image") from None
            category = body.get("category")
        else:
            raise InputError(415, f"content type '{content_type or 'none'}': send multipart/form-data (field 'file') or application/json")
        image = decode_image(data, max_bytes, max_pixels)
        chosen = inspector.category(category if isinstance(category, str) else None)
        return await run_in_threadpool(inspector.inspect, image, chosen)

    return app
