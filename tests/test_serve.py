"""REST API: good, bad and hostile inputs through FastAPI's test client; schemathesis against the OpenAPI schema."""

import base64
import io

import pytest
from PIL import Image

from shiftad import bundle as B

from test_bundle import bundle_dir, project, routed_project  # noqa: F401  (fixtures)

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from shiftad.serve import create_app  # noqa: E402


@pytest.fixture()
def client(project, bundle_dir):  # noqa: F811
    root, params, train, threshold = project
    bundle = B.load_bundle(bundle_dir)
    return TestClient(create_app(bundle, max_bytes=200_000, max_pixels=500_000)), train, threshold


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_and_base64_give_the_same_answer(client):
    api, train, threshold = client
    data = open(train[0].path, "rb").read()
    multipart = api.post("/predict", files={"file": ("a.png", data, "image/png")})
    assert multipart.status_code == 200, multipart.text
    body = multipart.json()
    assert body["threshold"] == threshold and body["is_anomalous"] == (body["anomaly_score"] >= threshold)
    assert body["margin"] == pytest.approx(body["anomaly_score"] - threshold)
    assert Image.open(io.BytesIO(base64.b64decode(body["heatmap_png_base64"]))).size == (64, 64)
    as_json = api.post("/predict", json={"image_base64": base64.b64encode(data).decode(), "category": "tex"})
    assert as_json.status_code == 200 and as_json.json()["anomaly_score"] == pytest.approx(body["anomaly_score"])


def test_health_model_and_openapi(client):
    api, _, _ = client
    assert api.get("/health").json() == {"status": "ok"}
    assert api.get("/model").json()["categories"] == ["tex"]
    assert "/predict" in api.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize("case, status", [
    ("text file", 415), ("not an image", 400), ("too many bytes", 413), ("bomb", 413),
    ("unknown category", 404), ("bad base64", 400), ("no body type", 415), ("truncated", 400),
    ("json list", 400), ("json without image", 400), ("multipart without file", 422), ("declared huge", 413),
    ("chunked huge json", 413),
])
def test_user_mistakes_and_hostile_inputs_are_4xx_with_a_message(client, case, status):
    api, train, threshold = client
    good = open(train[0].path, "rb").read()
    if case == "text file":
        r = api.post("/predict", files={"file": ("a.txt", b"hello", "text/plain")})
    elif case == "not an image":
        r = api.post("/predict", files={"file": ("a.png", b"hello", "image/png")})
    elif case == "too many bytes":
        r = api.post("/predict", files={"file": ("a.png", b"\0" * 300_000, "image/png")})
    elif case == "bomb":  # 1000x1000 of one colour: a few kB of PNG, a million pixels when decoded
        r = api.post("/predict", files={"file": ("b.png", png_bytes(Image.new("L", (1000, 1000))), "image/png")})
    elif case == "unknown category":
        r = api.post("/predict", files={"file": ("a.png", good, "image/png")}, data={"category": "nope"})
    elif case == "bad base64":
        r = api.post("/predict", json={"image_base64": "%%%"})
    elif case == "no body type":
        r = api.post("/predict", content=good)
    elif case == "json list":
        r = api.post("/predict", json=[1, 2])
    elif case == "json without image":
        r = api.post("/predict", json={"category": "tex"})
    elif case == "multipart without file":
        r = api.post("/predict", files={"other": ("a.png", good, "image/png")})
    elif case == "chunked huge json":  # no Content-Length: the body is read with a cap
        body = iter([b'{"image_base64": "', b"A" * 400_000, b'%"}'])  # uncapped, this would be a 400 (bad base64)
        r = api.post("/predict", content=body, headers={"content-type": "application/json"})
    elif case == "declared huge":  # refused from the Content-Length header, before the body is read
        r = api.post("/predict", content=b"x", headers={"content-type": "application/json", "content-length": str(10**9)})
    else:
        r = api.post("/predict", files={"file": ("a.png", good[: len(good) // 2], "image/png")})
    assert r.status_code == status, (case, r.status_code, r.text)
    assert r.json()["detail"]


def test_the_page_is_served_and_talks_to_the_api(client):
    api, _, _ = client
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'fetch("predict"' in page.text and 'fetch("model")' in page.text and "://" not in page.text  # no external assets


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_gray_rgba_and_16_bit_uploads_follow_the_pipeline_input_rules(client, mode):
    """Gray repeated to RGB, alpha dropped, 16-bit scaled by 1/257: the same score as the RGB image."""
    import numpy as np

    api, train, threshold = client
    rgb = np.asarray(Image.open(train[0].path).convert("L").convert("RGB"))
    gray = rgb[:, :, 0]
    image = {"L": Image.fromarray(gray), "RGBA": Image.fromarray(np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])),
             "I;16": Image.fromarray(gray.astype(np.uint16) * 257)}[mode]
    reference = api.post("/predict", files={"file": ("a.png", png_bytes(Image.fromarray(rgb)), "image/png")}).json()
    answer = api.post("/predict", files={"file": ("a.png", png_bytes(image), "image/png")})
    assert answer.status_code == 200, answer.text
    assert answer.json()["anomaly_score"] == pytest.approx(reference["anomaly_score"], rel=1e-6)


def test_model_metadata_is_valid_json_without_nan(client):
    api, _, _ = client
    body = api.get("/model").json()
    assert body["detector"] == "knn" and body["runtime"] == "torch" and body["onnx"]["input_size"] == 64
    assert body["thresholds"]["tex"]["f1_max"] is None  # no anomalous validation image in this project: null, not NaN (a 500)
    assert body["thresholds"]["tex"]["map_floor"] >= 0


schemathesis = pytest.importorskip("schemathesis")


def test_the_api_keeps_its_openapi_contract_under_generated_requests(client):
    """Schemathesis generates requests from the OpenAPI schema (valid and invalid bodies of both
    media types): no 500, every status, content type and body as documented, invalid requests
    rejected. Its "schema-valid data is accepted" check is left out: a schema cannot say "a
    decodable image", so random bytes are rightly refused with a documented 400."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance

    api, _, _ = client
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    checked = []
    for path, method in (("/predict", "POST"), ("/health", "GET"), ("/model", "GET")):
        operation = schema[path][method]

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case):
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        run()
        checked.append(path)
    assert checked == ["/predict", "/health", "/model"]


def test_a_routed_bundle_answers_without_a_category(routed_project):
    bundle_path, tests, thresholds = routed_project
    api = TestClient(create_app(B.load_bundle(bundle_path)))
    assert api.get("/model").json()["routes"] is True
    routed = api.post("/predict", files={"file": ("s.png", open(tests[2].path, "rb").read(), "image/png")})
    assert routed.status_code == 200, routed.text
    assert routed.json()["routed_category"] == "stripes" and routed.json()["threshold"] == thresholds["stripes"]
    named = api.post("/predict", files={"file": ("s.png", open(tests[2].path, "rb").read(), "image/png")}, data={"category": "tex"})
    assert named.status_code == 200 and named.json()["routed_category"] is None and named.json()["category"] == "tex"
    unknown = api.post("/predict", files={"file": ("s.png", open(tests[2].path, "rb").read(), "image/png")}, data={"category": "nope"})
    assert unknown.status_code == 404 and "nope" in unknown.json()["detail"]
