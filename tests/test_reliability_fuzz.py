"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis), plus a corpus
of hostile inputs that random generation rarely reaches (NaN/inf, huge numbers, giant PNG headers).

Every operation and method of /openapi.json, positive and negative cases, against a real uvicorn:
no 5xx, and every response conforms to the schema (status code, content type, headers, body), and
every schema-violating request is rejected (bodies are parsed strictly: no "3" or true for an int).
One built-in check is off: `positive_data_acceptance`, because some rules are not expressible in
the schema (the limits are settings, a keyframe needs exactly one of seed/latent, a latent has the
model's latent_dim, a label is below its num_classes, a name matches the model-name rule): a
schema-valid request that breaks them is a correct 422.
Bounded for CI: `GANSERVE_FUZZ_EXAMPLES` cases per operation and mode (default 25, about 400 cases
in all); the long run (`make soak`) sets it to 500.
"""

from __future__ import annotations

import base64
import io
import os
import struct
import zlib
from pathlib import Path

import httpx
import pytest
from conftest import DEFAULT_TEST_MODEL, run_uvicorn

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from service.app import create_app  # noqa: E402
from service.schemas import ErrorBody  # noqa: E402
from service.settings import Settings  # noqa: E402

EXAMPLES = int(os.environ.get("GANSERVE_FUZZ_EXAMPLES", "25"))
CASES: list[int] = []  # one entry per fuzzed request (reported by the soak run)


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    """Write how many requests were fuzzed to $GANSERVE_FUZZ_REPORT (read by bench.soak)."""
    yield
    out = os.environ.get("GANSERVE_FUZZ_REPORT")
    if out:
        Path(out).write_text(str(len(CASES)))


@pytest.fixture(scope="module")
def fuzz_url(model_root):
    s = Settings(models_dir=model_root, default_model=DEFAULT_TEST_MODEL, log_level="warning")
    with run_uvicorn(create_app(s)) as (_, url):
        yield url


def _schema():
    """The schema as the app serves it (it does not depend on the models loaded)."""
    app = create_app(Settings(models_dir="/nonexistent", log_level="warning"))
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    # a list past its maxItems may also make the body too large: 413 is a rejection too
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return schema


schema = _schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=os.environ.get("GANSERVE_FUZZ_RANDOM") is None,
)
def test_api_fuzz_no_5xx_and_responses_match_the_schema(fuzz_url, case):
    CASES.append(1)
    response = case.call_and_validate(
        base_url=fuzz_url, timeout=30, excluded_checks=[positive_data_acceptance]
    )
    assert response.status_code < 500 or response.status_code == 503, response.text


# --- hostile corpus -------------------------------------------------------------------------------


def _png_header_claiming(width: int, height: int) -> str:
    """A valid PNG signature + IHDR claiming huge dimensions, with a tiny IDAT (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(raw).decode()


def _gif() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, format="GIF")
    return base64.b64encode(buf.getvalue()).decode()


HOSTILE = [
    ("/generate", '{"n": NaN}'),
    ("/generate", '{"n": Infinity}'),
    ("/generate", '{"truncation": -Infinity}'),
    ("/generate", '{"n": 1e308}'),
    ("/generate", '{"n": 18446744073709551616}'),
    ("/generate", '{"n": -1}'),
    ("/generate", '{"n": 0}'),
    ("/generate", '{"seed": 9223372036854775807, "n": 2}'),
    ("/generate", '{"seeds": []}'),
    ("/generate", '{"seeds": [' + ",".join(["1"] * 10000) + "]}"),
    ("/generate", '{"labels": [' + ",".join(["1"] * 5000) + "]}"),
    ("/generate", '{"labels": 999999}'),
    ("/generate", '{"n": "3"}'),
    ("/generate", '{"n": true}'),
    ("/generate", '{"model": "../../etc/passwd"}'),
    ("/generate", '{"model": "/etc/passwd"}'),
    ("/generate", '{"model": "' + "a" * 10000 + '"}'),
    ("/generate", '{"unknown_field": 1}'),
    ("/generate", "[]"),
    ("/generate", "null"),
    ("/generate", ""),
    ("/generate", "{" * 10000),
    ("/interpolate", '{"keyframes": []}'),
    ("/interpolate", '{"keyframes": [{"seed": 1}, {"seed": 2}], "steps": 1000000}'),
    ("/interpolate", '{"keyframes": [{"latent": [1e300]}, {"seed": 2}]}'),
    ("/interpolate", '{"keyframes": [{"latent": [NaN, 0, 0, 0, 0, 0, 0, 0]}, {"seed": 2}]}'),
    ("/interpolate", '{"keyframes": [{"latent": []}, {"seed": 2}]}'),
    (
        "/interpolate",
        '{"keyframes": [{"latent": [0,0,0,0,0,0,0,0], "label": 0}, {"seed": 1, "latent": [0]}]}',
    ),
    ("/interpolate", '{"keyframes": [' + ",".join(['{"seed": 1}'] * 1000) + "]}"),
    ("/arithmetic", '{"terms": []}'),
    ("/arithmetic", '{"terms": [{"seeds": [1]}], "neighbors": 1000000000}'),
    ("/arithmetic", '{"terms": [{"weight": Infinity, "seeds": [1]}]}'),
    ("/arithmetic", '{"terms": [{"latents": [[0,0,0,0,0,0,0,0]], "weight": 1e99}]}'),
    ("/arithmetic", '{"terms": [' + ",".join(['{"seeds": [1]}'] * 500) + "]}"),
    ("/score", '{"images": []}'),
    ("/score", '{"images": ["not base64!!"]}'),
    ("/score", '{"images": ["' + base64.b64encode(b"definitely not a png").decode() + '"]}'),
    ("/score", '{"images": ["' + _png_header_claiming(100000, 100000) + '"]}'),
    ("/score", '{"images": ["' + _png_header_claiming(0, 0) + '"]}'),
    ("/score", '{"images": ["' + _gif() + '"]}'),
    ("/score", '{"images": ["' + _png_header_claiming(8, 8) + '"]}'),  # truncated pixel data
    ("/score", '{"images": ["AAAA"], "labels": [-1]}'),
]


@pytest.mark.parametrize("path, body", HOSTILE, ids=[f"{p}:{b[:40]}" for p, b in HOSTILE])
def test_hostile_bodies_get_a_clean_4xx_naming_the_problem(fuzz_url, path, body):
    r = httpx.post(fuzz_url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    err = ErrorBody.model_validate(r.json())
    assert err.error and err.detail
    assert r.headers["x-request-id"] == r.json()["request_id"]


def test_hostile_multipart_and_headers(fuzz_url):
    with httpx.Client(base_url=fuzz_url, timeout=30) as c:
        bomb = base64.b64decode(_png_header_claiming(50000, 50000))
        r = c.post("/score", files=[("images", ("b.png", bomb, "image/png"))])
        assert r.status_code == 422 and r.json()["field"] == "images[0]"
        r = c.post("/score", files=[("images", ("x.png", b"\0" * 100, "image/png"))], data={"labels": "a,b"})
        assert r.status_code == 422
        r = c.post(
            "/score", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data; boundary=x"}
        )
        assert 400 <= r.status_code < 500
        r = c.post("/generate", content=b"\xff\xfe\x00", headers={"content-type": "application/json"})
        assert r.status_code == 422
        r = c.get("/models/" + "%2e%2e%2f" * 3 + "etc")
        assert r.status_code in (404, 422)
