"""The Open Inference Protocol (/v2) with the real `tritonclient.http` client against a real uvicorn,
and raw HTTP where a client would not send the request (bad headers, trailing bytes)."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from conftest import started
from modelkit import reference_images
from PIL import Image
from prometheus_client import REGISTRY
from tritonclient.utils import InferenceServerException

from service.client import latents
from service.imaging import to_uint8

KEY = "v2-test-key"


@pytest.fixture
def tc(live_server):
    client = triton.InferenceServerClient(live_server.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


def tensors(z: np.ndarray, y: np.ndarray | None, binary: bool, datatype: str = "FP32"):
    inputs = [triton.InferInput("z", list(z.shape), datatype)]
    inputs[0].set_data_from_numpy(z, binary_data=binary)
    if y is not None:
        inputs.append(triton.InferInput("y", list(y.shape), datatype))
        inputs[1].set_data_from_numpy(y, binary_data=binary)
    return inputs


def infer(tc, z, y, binary: bool, **kw) -> np.ndarray:
    outputs = [triton.InferRequestedOutput("image", binary_data=binary)]
    return tc.infer("tiny-cgan", tensors(z, y, binary), outputs=outputs, **kw).as_numpy("image")


def assert_refused(call, status: str, text: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        call()
    assert caught.value.status() == status, caught.value
    assert text in caught.value.message(), caught.value.message()


def pngs(items) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(it["image"])))) for it in items])


# --- health and metadata ------------------------------------------------------------------------


def test_health_server_and_model_metadata(tc):
    assert tc.is_server_live() and tc.is_server_ready()
    assert tc.is_model_ready("tiny-cgan") and tc.is_model_ready("tiny-gan", "1")
    assert not tc.is_model_ready("tiny-cgan", "7")  # no such version: 404
    meta = tc.get_server_metadata()
    assert meta["name"] == "ganserve" and "binary_tensor_data" in meta["extensions"]
    model = tc.get_model_metadata("tiny-cgan")
    assert model == {
        "name": "tiny-cgan",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": "z", "datatype": "FP32", "shape": [-1, 8]},
            {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
        ],
        "outputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
    }
    assert tc.get_model_metadata("tiny-gan", "1")["inputs"] == [
        {"name": "z", "datatype": "FP32", "shape": [-1, 8]}
    ]
    assert_refused(lambda: tc.get_model_metadata("nope"), "404", "unknown model 'nope'")
    assert_refused(lambda: tc.get_model_metadata("tiny-cgan", "2"), "404", "no version '2'")


# --- infer --------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_a_batch_of_64_gives_the_models_images(tc, model_root, binary):
    seeds, labels = list(range(100, 164)), [i % 3 for i in range(64)]
    z, y = latents(seeds, 8, 3, labels=labels)
    image = infer(tc, z, y, binary, request_id="req-1")
    assert image.shape == (64, 1, 8, 8) and image.dtype == np.float32
    np.testing.assert_allclose(image, reference_images(model_root / "tiny-cgan", seeds, labels), atol=1e-5)


def test_binary_and_json_agree_bit_for_bit_and_the_default_reply_is_binary(tc):
    z, y = latents([1, 2, 3], 8, 3)
    as_json = infer(tc, z, y, binary=False)
    assert np.array_equal(infer(tc, z, y, binary=True), as_json)
    result = tc.infer("tiny-cgan", tensors(z, y, binary=True))  # no outputs named: binary_data_output
    assert np.array_equal(result.as_numpy("image"), as_json)
    assert result.get_response()["model_version"] == "1"


def test_the_sdk_latent_rule_makes_generates_images(tc, live_server):
    """A v2 user who samples z (and y) with the SDK's `latents` gets /generate's pixels: seeds
    alone (labels drawn from the seeds), labels given, truncation, and an unconditional model."""
    cases = [
        ("tiny-cgan", {"seeds": [5, 6, 7, 8]}, {}),
        ("tiny-cgan", {"seeds": [9, 10], "labels": [2, 0]}, {"labels": [2, 0]}),
        ("tiny-cgan", {"seeds": [11, 12], "truncation": 0.5}, {"truncation": 0.5}),
        ("tiny-gan", {"seeds": [1, 2, 3]}, {}),
    ]
    for model, body, kw in cases:
        r = httpx.post(f"{live_server}/generate", json={"model": model, **body}, timeout=30)
        assert r.status_code == 200, r.text
        z, y = latents(body["seeds"], 8, 3 if model == "tiny-cgan" else 0, **kw)
        outputs = [triton.InferRequestedOutput("image")]
        image = tc.infer(model, tensors(z, y, binary=True), outputs=outputs).as_numpy("image")
        assert np.array_equal(to_uint8(image)[..., 0], pngs(r.json()["images"])), (model, body)


def test_bad_shapes_datatypes_and_names_are_400(tc, settings):
    z, y = latents([1, 2], 8, 3)
    cases = [
        (tensors(z[:, :7].copy(), y, True), "z: shape [2, 7]; the model takes [N, 8]"),
        (tensors(z, y[:1].copy(), True), "with one N >= 1 for every input"),
        (tensors(z.reshape(2, 2, 4).copy(), y, True), "z: shape [2, 2, 4]"),
        (
            tensors(z.astype(np.float64), y.astype(np.float64), True, "FP64"),
            "z: datatype FP64; the model takes FP32",
        ),
        (tensors(z.astype(np.int32), None, False, "INT32") + tensors(z, y, True)[1:], "datatype INT32"),
        (tensors(z, None, True), "inputs: ['z']; model 'tiny-cgan' takes exactly ['y', 'z']"),
    ]
    for inputs, text in cases:
        assert_refused(lambda inputs=inputs: tc.infer("tiny-cgan", inputs), "400", text)
    n = settings.max_images + 1
    big_z, big_y = latents(range(n), 8, 3)
    assert_refused(
        lambda: tc.infer("tiny-cgan", tensors(big_z, big_y, True)),
        "400",
        f"shape[0]: {n} rows exceeds the limit of {settings.max_images}",
    )
    wrong_out = [triton.InferRequestedOutput("logits")]
    assert_refused(lambda: tc.infer("tiny-cgan", tensors(z, y, True), outputs=wrong_out), "400", "'image'")
    nan = z.copy()
    nan[0, 0] = np.nan
    assert_refused(lambda: tc.infer("tiny-cgan", tensors(nan, y, True)), "400", "z: values must be finite")
    assert_refused(lambda: tc.infer("nope", tensors(z, y, True)), "404", "unknown model")


def _raw(
    live_server, header: dict, blob: bytes = b"", headers: dict | None = None, length: int | None = None
):
    head = json.dumps(header).encode()
    hdrs = {"Inference-Header-Content-Length": str(len(head) if length is None else length)} if blob else {}
    url = f"{live_server}/v2/models/tiny-cgan/infer"
    return httpx.post(url, content=head + blob, headers=hdrs | (headers or {}), timeout=30)


def test_raw_requests_are_checked_before_any_tensor_is_decoded(live_server):
    z, y = latents([1, 2], 8, 3)
    spec = [
        {"name": "z", "shape": [2, 8], "datatype": "FP32", "parameters": {"binary_data_size": 64}},
        {"name": "y", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}},
    ]
    blob = z.tobytes() + y.tobytes()
    ok = _raw(live_server, {"inputs": spec}, blob)
    assert ok.status_code == 200 and "Inference-Header-Content-Length" not in ok.headers
    assert len(ok.json()["outputs"][0]["data"]) == 2 * 64  # binary inputs, no binary output asked: JSON
    cases = [
        (_raw(live_server, {"inputs": spec}, blob + b"xx"), "2 bytes after the tensors"),
        (_raw(live_server, {"inputs": spec}, blob[:-4]), "y: binary_data_size 24"),
        (_raw(live_server, {"inputs": spec}, blob, length=10**9), "Inference-Header-Content-Length"),
        (_raw(live_server, {"inputs": spec}, blob, headers={"Content-Encoding": "gzip"}), "Content-Encoding"),
        (_raw(live_server, {"inputs": "z"}), "inputs: Input should be a valid list"),
        (
            _raw(
                live_server,
                {"inputs": [{"name": "z", "shape": [2, 8], "datatype": "FP32", "data": ["a"] * 16}]},
            ),
            "inputs",
        ),
        (httpx.post(f"{live_server}/v2/models/tiny-cgan/infer", content=b"{not json"), "not JSON"),
    ]
    for r, text in cases:
        assert r.status_code == 400, (text, r.text)
        assert set(r.json()) == {"error"} and text in r.json()["error"], r.text
    strings = [
        {"name": "z", "shape": [2, 8], "datatype": "FP32", "data": ["1.0"] * 16},
        {"name": "y", "shape": [2, 3], "datatype": "FP32", "data": y.ravel().tolist()},
    ]
    r = _raw(live_server, {"inputs": strings})
    assert r.status_code == 400 and "z: data holds 16 values of kind 'U'" in r.json()["error"]
    flood = {"inputs": spec, "pad": [0] * 100_000}  # far more JSON values than any request needs
    r = _raw(live_server, flood, blob)
    assert r.status_code == 400 and "JSON values" in r.json()["error"]


def test_nested_json_data_and_the_request_id_come_back(live_server, model_root):
    z, y = latents([4, 5], 8, 3, labels=[1, 1])
    header = {
        "id": "my-request",
        "inputs": [
            {"name": "z", "shape": [2, 8], "datatype": "FP32", "data": z.tolist()},
            {"name": "y", "shape": [2, 3], "datatype": "FP32", "data": y.tolist()},
        ],
    }
    r = httpx.post(f"{live_server}/v2/models/tiny-cgan/versions/1/infer", json=header, timeout=30)
    assert r.status_code == 200, r.text
    reply = r.json()
    assert (
        reply["id"] == "my-request" and reply["model_name"] == "tiny-cgan" and reply["model_version"] == "1"
    )
    (out,) = reply["outputs"]
    image = np.asarray(out["data"], np.float32).reshape(out["shape"])
    np.testing.assert_allclose(image, reference_images(model_root / "tiny-cgan", [4, 5], [1, 1]), atol=1e-5)


def test_api_keys_guard_v2_and_tritonclient_sends_them(make_settings):
    from conftest import run_uvicorn

    from service.app import create_app

    app = create_app(make_settings(api_keys=KEY, open_paths="/healthz,/readyz,/metrics,/v2/health/ready"))
    with run_uvicorn(app) as (_, url):
        tc = triton.InferenceServerClient(url.removeprefix("http://"))
        assert tc.is_server_ready()  # an open path: probes need no key
        z, y = latents([1], 8, 3)
        assert_refused(lambda: tc.infer("tiny-cgan", tensors(z, y, True)), "401", "unauthorized")
        headers = {"Authorization": f"Bearer {KEY}"}
        image = tc.infer("tiny-cgan", tensors(z, y, True), headers=headers).as_numpy("image")
        assert image.shape == (1, 1, 8, 8)
        assert tc.get_model_metadata("tiny-cgan", headers=headers)["name"] == "tiny-cgan"
        tc.close()


# --- one queue, one metrics view ---------------------------------------------------------------


def metric(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.anyio
async def test_v2_and_generate_rows_share_one_batch_and_one_metrics_view(make_settings):
    """With a 300 ms gathering window, a /generate of 3 images and a v2 infer of 2 rows that
    arrive together run as one inference call of 5 rows, counted under the same labels."""
    from service.app import create_app

    app = create_app(make_settings(max_queue_delay_ms=300))
    z, y = latents([1, 2], 8, 3)
    header = {
        "inputs": [
            {"name": "z", "shape": [2, 8], "datatype": "FP32", "data": z.ravel().tolist()},
            {"name": "y", "shape": [2, 3], "datatype": "FP32", "data": y.ravel().tolist()},
        ]
    }
    labels = {"model": "tiny-cgan", "version": "1"}
    async with started(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as c:
            images = metric("ganserve_images_generated_total", **labels)
            fives = metric("ganserve_batch_size_bucket", **labels, le="8.0") - metric(
                "ganserve_batch_size_bucket", **labels, le="4.0"
            )
            calls = metric("ganserve_batch_size_count", **labels)
            gen, v2 = await asyncio.gather(
                c.post("/generate", json={"seeds": [7, 8, 9]}),
                c.post("/v2/models/tiny-cgan/infer", json=header),
            )
            assert gen.status_code == 200 and v2.status_code == 200, (gen.text, v2.text)
            assert metric("ganserve_batch_size_count", **labels) == calls + 1  # one call for both
            after = metric("ganserve_batch_size_bucket", **labels, le="8.0") - metric(
                "ganserve_batch_size_bucket", **labels, le="4.0"
            )
            assert after == fives + 1  # of 5 rows
            assert metric("ganserve_images_generated_total", **labels) == images + 5
            assert (
                metric(
                    "ganserve_requests_total", endpoint="/v2/models/{name}/infer", method="POST", status="200"
                )
                >= 1
            )
