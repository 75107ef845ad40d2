"""The HTTP API over real ONNX Runtime sessions (tiny models from tests/modelkit.py), through ASGI."""

from __future__ import annotations

import asyncio
import base64
import io
import threading

import numpy as np
import pytest
from conftest import started
from modelkit import make_model_dir, reference_images
from PIL import Image
from prometheus_client import REGISTRY

from service import __version__
from service.imaging import to_uint8


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def expected(model_root, name, seeds, labels=None) -> np.ndarray:
    return to_uint8(reference_images(model_root / name, seeds, labels))[..., 0]


def metric(name, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


ERROR_KEYS = {"error", "detail", "field", "limit", "request_id"}  # schemas.ErrorBody, on every path


def assert_error(r, status, field=None, text=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) >= {"error", "detail"}
    if field is not None:
        assert body["field"] == field, body
    if text is not None:
        assert text in body["detail"], body


# --- /generate ---------------------------------------------------------------------------------


def test_generate_echoes_seeds_and_labels_and_matches_the_reference_pixels(client, model_root):
    r = client.post("/generate", json={"n": 4, "seed": 100, "labels": [0, 1, 2, 1], "return_latents": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-cgan" and body["seed"] == 100
    assert [i["seed"] for i in body["images"]] == [100, 101, 102, 103]
    assert [i["label"] for i in body["images"]] == [0, 1, 2, 1]
    want = expected(model_root, "tiny-cgan", [100, 101, 102, 103], [0, 1, 2, 1])
    for i, img in enumerate(body["images"]):
        assert np.abs(pixels(img["image"]).astype(int) - want[i]).max() <= 1
        np.testing.assert_allclose(
            img["latent"], np.random.default_rng(100 + i).standard_normal(8), rtol=1e-6
        )


def test_generate_defaults_draw_a_seed_and_labels_from_each_seed(client):
    a = client.post("/generate", json={}).json()
    assert len(a["images"]) == 1 and isinstance(a["seed"], int)
    b = client.post("/generate", json={"seeds": [a["seed"]]}).json()["images"][0]
    assert b["image"] == a["images"][0]["image"] and b["label"] == a["images"][0]["label"]
    labels = [i["label"] for i in client.post("/generate", json={"n": 30, "seed": 0}).json()["images"]]
    assert set(labels) == {0, 1, 2}
    one = client.post("/generate", json={"n": 3, "seed": 0, "labels": 2}).json()["images"]
    assert [i["label"] for i in one] == [2, 2, 2]
    per_label = client.post("/generate", json={"seed": 0, "labels": [2, 0]}).json()["images"]
    assert [i["label"] for i in per_label] == [2, 0]  # without n: one image per label


def test_generate_truncation_and_unconditional_model(client, model_root):
    r = client.post("/generate", json={"n": 2, "seed": 3, "truncation": 0.5, "return_latents": True})
    assert max(abs(v) for img in r.json()["images"] for v in img["latent"]) <= 0.5
    r = client.post("/generate", json={"model": "tiny-gan", "seeds": [5, 6]})
    assert r.status_code == 200 and [i["label"] for i in r.json()["images"]] == [None, None]
    want = expected(model_root, "tiny-gan", [5, 6])
    assert np.abs(pixels(r.json()["images"][1]["image"]).astype(int) - want[1]).max() <= 1


def test_generate_png_grid(client):
    r = client.post("/generate", json={"n": 5, "seed": 1}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (3 * 10 + 2, 2 * 10 + 2)


@pytest.mark.parametrize(
    "path, accept, media_type",
    [
        ("/generate", "image/png", "image/png"),
        ("/generate", "application/json, image/png", "image/png"),  # a substring test, not q-values
        ("/generate", "*/*", "application/json"),
        ("/generate", "image/*", "application/json"),  # a wildcard allows the default
        ("/generate", "image/gif", 406),  # /generate offers no GIF, and the client takes nothing else
        ("/generate", "image/gif, application/json;q=0.5", "application/json"),
        ("/generate", "", "application/json"),
        ("/generate", "text/html,application/xhtml+xml,*/*;q=0.8", "application/json"),  # a browser
        ("/generate", "application/x-npy", "application/x-npy"),
        ("/interpolate", "image/png, image/gif", "image/gif"),  # the route's order, not the client's
        ("/interpolate", "image/png", "image/png"),
        ("/interpolate", "application/x-npy", "application/x-npy"),
        ("/interpolate", "text/html", 406),
        ("/arithmetic", "image/gif", 406),
        ("/arithmetic", "image/png", "image/png"),
        ("/arithmetic", "application/x-npy", "application/x-npy"),
    ],
)
def test_the_reply_format_follows_accept(client, path, accept, media_type):
    body = {
        "/generate": {"n": 2, "seed": 1},
        "/interpolate": {"keyframes": [{"seed": 1}, {"seed": 2}], "steps": 2},
        "/arithmetic": {"terms": [{"seeds": [1]}], "neighbors": 1, "seed": 0},
    }[path]
    r = client.post(path, json=body, headers={"Accept": accept})
    if media_type == 406:
        assert_error(r, 406, field="accept", text=repr(accept))
        assert r.json()["error"] == "not_acceptable" and "application/json" in r.json()["detail"]
        return
    assert r.status_code == 200 and r.headers["content-type"] == media_type, r.headers
    if media_type == "application/json":
        assert "x-seed" not in r.headers and r.json()["model"] == "tiny-cgan"
    elif media_type == "application/x-npy":
        arr = np.load(io.BytesIO(r.content), allow_pickle=False)
        assert arr.dtype == np.uint8 and arr.shape[1:] == (8, 8)
    else:
        assert Image.open(io.BytesIO(r.content)).format == media_type.split("/")[1].upper()


def test_generate_npy_reply_is_the_json_reply_as_one_array(client, model_root):
    """`Accept: application/x-npy`: uint8 (n, h, w) with the same pixels as the JSON reply's PNGs,
    the seeds and labels in headers; an unconditional model has no X-Labels."""
    body = {"n": 5, "seed": 40, "labels": [0, 1, 2, 0, 1]}
    r = client.post("/generate", json=body, headers={"Accept": "application/x-npy"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-npy"
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.dtype == np.uint8 and arr.shape == (5, 8, 8)
    assert r.headers["x-seeds"] == "40,41,42,43,44" and r.headers["x-labels"] == "0,1,2,0,1"
    assert r.headers["x-seed"] == "40"
    as_json = client.post("/generate", json=body).json()["images"]
    np.testing.assert_array_equal(arr, np.stack([pixels(i["image"]) for i in as_json]))
    np.testing.assert_array_equal(arr, expected(model_root, "tiny-cgan", range(40, 45), [0, 1, 2, 0, 1]))
    drawn = client.post("/generate", json={"seeds": [7, 3]}, headers={"Accept": "application/x-npy"})
    labels = [i["label"] for i in client.post("/generate", json={"seeds": [7, 3]}).json()["images"]]
    assert drawn.headers["x-seeds"] == "7,3" and drawn.headers["x-labels"] == ",".join(map(str, labels))
    r = client.post("/generate", json={"model": "tiny-gan", "n": 2}, headers={"Accept": "application/x-npy"})
    assert "x-labels" not in r.headers and len(r.headers["x-seeds"].split(",")) == 2
    assert np.load(io.BytesIO(r.content)).shape == (2, 8, 8)


def test_arithmetic_npy_reply_holds_the_result_then_the_neighbours(client):
    body = {"terms": [{"seeds": [1, 2]}], "neighbors": 3, "seed": 9, "label": 2}
    r = client.post("/arithmetic", json=body, headers={"Accept": "application/x-npy"})
    arr = np.load(io.BytesIO(r.content), allow_pickle=False)
    assert arr.shape == (4, 8, 8) and r.headers["x-label"] == "2" and r.headers["x-seed"] == "9"
    j = client.post("/arithmetic", json=body).json()
    want = [pixels(j["result"]["image"])] + [pixels(n["image"]) for n in j["neighbors"]]
    np.testing.assert_array_equal(arr, np.stack(want))


def test_openapi_lists_the_binary_reply_types_and_the_406(client):
    doc = client.get("/openapi.json").json()
    for path, media in (
        ("/generate", {"application/json", "image/png", "application/x-npy"}),
        ("/interpolate", {"application/json", "image/png", "image/gif", "application/x-npy"}),
        ("/arithmetic", {"application/json", "image/png", "application/x-npy"}),
    ):
        responses = doc["paths"][path]["post"]["responses"]
        assert set(responses["200"]["content"]) == media, path
        assert "406" in responses
    assert {"X-Seeds", "X-Labels"} <= set(doc["paths"]["/generate"]["post"]["responses"]["200"]["headers"])


@pytest.mark.parametrize(
    "payload, status, field",
    [
        ({"n": 257}, 422, "n"),
        ({"seeds": list(range(257))}, 422, "seeds"),
        ({"n": 0}, 422, "n"),
        ({"n": 2, "labels": [0, 1, 2]}, 422, "labels"),
        ({"labels": 3}, 422, "labels"),
        ({"labels": -1}, 422, "labels"),
        ({"model": "tiny-gan", "labels": 1}, 422, "labels"),
        ({"model": "nope"}, 404, "model"),
        ({"model": "../etc/passwd"}, 422, "model"),
        ({"seed": -1}, 422, "seed"),
        ({"seed": 2**63 - 1, "n": 2}, 422, "seed"),
        ({"truncation": 0}, 422, "truncation"),
        ({"n": "many"}, 422, "n"),
        ({"colour": "red"}, 422, "colour"),
    ],
)
def test_generate_rejects_bad_input_naming_the_field(client, payload, status, field):
    assert_error(client.post("/generate", json=payload), status, field)


def test_limits_name_the_limit(client):
    r = client.post("/generate", json={"n": 300})
    assert r.json()["limit"] == 256 and "256" in r.json()["detail"]


def test_nan_and_non_json_bodies_are_422(client):
    r = client.post("/generate", content=b'{"truncation": NaN}', headers={"content-type": "application/json"})
    assert_error(r, 422, "truncation")
    r = client.post("/generate", content=b"{oops", headers={"content-type": "application/json"})
    assert_error(r, 422)


# --- /interpolate ------------------------------------------------------------------------------


def test_interpolate_walks_from_keyframe_to_keyframe_morphing_the_label(client, model_root):
    body = {
        "keyframes": [{"seed": 1, "label": 0}, {"seed": 2, "label": 2}],
        "steps": 4,
        "return_latents": True,
    }
    r = client.post("/interpolate", json=body)
    assert r.status_code == 200, r.text
    frames = r.json()["frames"]
    assert len(frames) == 5 and frames[0]["t"] == 0 and frames[-1]["t"] == 1
    assert (
        frames[0]["label"] == [1, 0, 0]
        and frames[2]["label"] == [0.5, 0, 0.5]
        and frames[4]["label"] == [0, 0, 1]
    )
    assert (
        np.abs(pixels(frames[0]["image"]).astype(int) - expected(model_root, "tiny-cgan", [1], [0])[0]).max()
        <= 1
    )
    assert (
        np.abs(pixels(frames[4]["image"]).astype(int) - expected(model_root, "tiny-cgan", [2], [2])[0]).max()
        <= 1
    )
    lerp = client.post("/interpolate", json=body | {"method": "lerp"}).json()["frames"]
    z1, z2 = np.array(lerp[0]["latent"]), np.array(lerp[4]["latent"])
    np.testing.assert_allclose(lerp[1]["latent"], 0.75 * z1 + 0.25 * z2, rtol=1e-5, atol=1e-6)


def test_interpolate_latent_keyframes_gif_and_strip(client):
    z = [0.1] * 8
    body = {"keyframes": [{"latent": z, "label": 1}, {"seed": 3}, {"seed": 4}], "steps": 3}
    assert len(client.post("/interpolate", json=body).json()["frames"]) == 7
    gif = client.post("/interpolate", json=body, headers={"Accept": "image/gif"})
    assert gif.headers["content-type"] == "image/gif" and Image.open(io.BytesIO(gif.content)).n_frames == 7
    strip = client.post("/interpolate", json=body, headers={"Accept": "image/png"})
    assert Image.open(io.BytesIO(strip.content)).size == (7 * 10 + 2, 12)


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"keyframes": [{"seed": 1}]}, "keyframes"),
        ({"keyframes": [{"seed": 1}] * 17}, "keyframes"),
        ({"keyframes": [{"seed": 1}, {"seed": 2}], "steps": 65}, "steps"),
        ({"keyframes": [{"seed": 1}] * 10, "steps": 64}, "steps"),
        ({"keyframes": [{"seed": 1}, {"latent": [0.0] * 7, "label": 0}]}, "keyframes[1].latent"),
        ({"keyframes": [{"seed": 1}, {"latent": [0.0] * 8}]}, "keyframes[1].label"),
        ({"keyframes": [{"seed": 1, "latent": [0.0] * 8}, {"seed": 2}]}, "keyframes[0]"),
        ({"keyframes": [{"seed": 1}, {"seed": 2}], "method": "cubic"}, "method"),
        ({"model": "tiny-gan", "keyframes": [{"seed": 1, "label": 1}, {"seed": 2}]}, "keyframes[0].label"),
    ],
)
def test_interpolate_rejects_bad_input(client, payload, field):
    assert_error(client.post("/interpolate", json=payload), 422, field)


# --- /arithmetic -------------------------------------------------------------------------------


def test_arithmetic_combines_mean_latents_and_adds_neighbours(client):
    body = {
        "terms": [{"seeds": [1, 2]}, {"weight": -1, "seeds": [3]}, {"latents": [[0.5] * 8]}],
        "label": 1,
        "neighbors": 3,
        "seed": 9,
    }
    r = client.post("/arithmetic", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    g = [np.random.default_rng(s).standard_normal(8) for s in (1, 2, 3)]
    np.testing.assert_allclose(out["result"]["latent"], (g[0] + g[1]) / 2 - g[2] + 0.5, rtol=1e-5, atol=1e-6)
    assert out["label"] == 1 and out["seed"] == 9 and len(out["neighbors"]) == 3
    for nb in out["neighbors"]:
        assert np.abs(np.array(nb["latent"]) - out["result"]["latent"]).max() <= 0.25 + 1e-6
    again = client.post("/arithmetic", json=body).json()
    assert again["neighbors"][2]["image"] == out["neighbors"][2]["image"]
    strip = client.post("/arithmetic", json=body, headers={"Accept": "image/png"})
    assert strip.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"terms": []}, "terms"),
        ({"terms": [{"seeds": [1]}] * 17}, "terms"),
        ({"terms": [{"seeds": list(range(65))}]}, "terms[0].seeds"),
        ({"terms": [{"latents": [[0.0] * 3]}]}, "terms[0].latents[0]"),
        ({"terms": [{"seeds": [1]}], "neighbors": 256}, "neighbors"),
        ({"terms": [{"seeds": [1]}], "label": 5}, "label"),
        ({"terms": [{"weight": 1e9, "seeds": [1]}]}, "terms[0].weight"),
    ],
)
def test_arithmetic_rejects_bad_input(client, payload, field):
    assert_error(client.post("/arithmetic", json=payload), 422, field)


# --- /score ------------------------------------------------------------------------------------


def _generated(client, n=4):
    return [
        i["image"] for i in client.post("/generate", json={"n": n, "seed": 50, "labels": 1}).json()["images"]
    ]


def test_score_json_gives_realness_labels_is_and_fid_with_a_warning(client):
    images = _generated(client)
    r = client.post("/score", json={"images": images, "labels": [1, 1, 1, 1]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["scores"]) == 4
    for s in out["scores"]:
        assert 0 <= s["realness"] <= 1 and 0 <= s["confidence"] <= 1 and s["label_name"] == str(s["label"])
    st = out["set"]
    assert st["n"] == 4 and st["inception_score"] >= 1 and st["fid"] >= 0 and st["reference_n"] == 256
    assert 0 <= st["label_accuracy"] <= 1 and "unstable" in st["warning"]


def test_score_multipart_upload_matches_json(client):
    images = _generated(client, 2)
    files = [("images", (f"{i}.png", base64.b64decode(b), "image/png")) for i, b in enumerate(images)]
    r = client.post("/score", files=files, data={"labels": "1,1"})
    assert r.status_code == 200, r.text
    assert (
        r.json()["scores"]
        == client.post("/score", json={"images": images, "labels": [1, 1]}).json()["scores"]
    )


def test_score_without_optional_networks(tmp_path, make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    make_model_dir(tmp_path, "bare", with_discriminator=False, with_classifier=False)
    with TestClient(create_app(make_settings(models_dir=tmp_path, default_model=None))) as c:
        img = c.post("/generate", json={"n": 1}).json()["images"][0]["image"]
        out = c.post("/score", json={"images": [img]}).json()
        assert out["scores"][0]["realness"] is None and "no classifier" in out["set"]["warning"]


def _png(size, mode="L"):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize(
    "payload, field, text",
    [
        ({"images": ["not base64!"]}, "images[0]", "base64"),
        ({"images": [base64.b64encode(b"hello").decode()]}, "images[0]", "not a readable image"),
        ({"images": [_png((9, 8))]}, "images[0]", "needs 8x8"),
        ({"images": [_png((2000, 2000))]}, "images[0]", "exceeds the limit"),
        ({"images": []}, "images", None),
        ({"images": [_png((8, 8))], "labels": [1, 2]}, "labels", None),
        ({"images": [_png((8, 8))], "labels": [7]}, "labels", None),
    ],
)
def test_score_rejects_bad_images(client, payload, field, text):
    assert_error(client.post("/score", json=payload), 422, field, text)


def test_score_respects_the_pixel_setting(make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(max_image_pixels=32))) as c:
        assert_error(
            c.post("/score", json={"images": [_png((8, 8))]}), 422, "images[0]", "exceeds the limit of 32"
        )


# --- body size ---------------------------------------------------------------------------------


def test_bodies_over_the_upload_limit_get_413_before_being_read(make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(max_upload_bytes=2048))) as c:
        big = {"images": [_png((8, 8))] * 200}
        assert_error(c.post("/score", json=big), 413, "body", "2048")

        def chunks():  # no Content-Length: counted while streaming
            for _ in range(10):
                yield b" " * 1000

        assert_error(c.post("/generate", content=chunks(), headers={"content-type": "application/json"}), 413)
        assert c.post("/generate", json={"n": 1}).status_code == 200


def test_every_error_path_answers_one_body_with_the_request_id(make_settings):
    """Error handlers, validation, Starlette's own errors and the middleware share `error_body`."""
    from starlette.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(max_upload_bytes=2048))) as c:
        replies = {
            "422 domain": c.post("/generate", json={"n": 100_000}),
            "422 validation": c.post("/generate", content=b"{", headers={"content-type": "application/json"}),
            "422 path": c.get("/models/" + "x" * 65),
            "404 model": c.get("/models/nope"),
            "404 path": c.get("/nowhere"),
            "405": c.get("/generate"),
            "413 length": c.post("/score", content=b" " * 4096, headers={"content-type": "application/json"}),
            "413 stream": c.post("/generate", content=iter([b" " * 1500] * 2)),
            "404 body model": c.post("/generate", json={"model": "nope"}),
        }
    for name, r in replies.items():
        assert r.status_code == int(name[:3]), (name, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json", name
        assert set(r.json()) == ERROR_KEYS and r.json()["request_id"] == r.headers["x-request-id"], name
    assert replies["413 stream"].json()["field"] == "body" and replies["413 stream"].json()["limit"] == 2048


# --- models, health, docs ----------------------------------------------------------------------


def test_models_health_and_docs(client):
    models = client.get("/models").json()
    assert models["default"] == "tiny-cgan"
    names = {m["name"]: m for m in models["models"]}
    assert (
        names["tiny-cgan"]["provider"] == "CPUExecutionProvider"
        and names["tiny-gan"]["kind"] == "unconditional"
    )
    card = client.get("/models/tiny-cgan").json()
    assert card["card"]["latent_dim"] == 8 and card["batcher"]["max_batch_size"] == 64
    assert_error(client.get("/models/nope"), 404, "name")
    # "/models/.." is normalised to "/" (the web page) by the client; send the dots escaped
    assert client.get("/models/%2E%2E").status_code in (404, 422)
    assert client.get("/models/%2Fetc%2Fpasswd").status_code in (404, 422)
    assert client.get("/healthz").json() == {"status": "ok", "version": __version__}
    assert models["version"] == __version__
    assert client.get("/readyz").json() == {
        "ready": True,
        "models": {"tiny-cgan": "ready", "tiny-gan": "ready"},
    }
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/generate", "/interpolate", "/arithmetic", "/score", "/models", "/readyz", "/metrics"} <= set(
        paths
    )
    assert_error(client.get("/nowhere"), 404)


def test_every_post_route_documents_its_request_body(client):
    """Handlers parse their own bodies (`plumbing.parse`): each declares it with `@body`."""
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    posts = {path: ops["post"] for path, ops in doc["paths"].items() if "post" in ops}
    assert {"/generate", "/interpolate", "/arithmetic", "/score"} <= set(posts)
    for path, op in posts.items():
        content = op.get("requestBody", {}).get("content", {})
        assert "application/json" in content, f"POST {path} has no requestBody: add @body(Model)"
        ref = content["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert schemas[ref]["properties"], path
    assert "multipart/form-data" in posts["/score"]["requestBody"]["content"]
    seed = schemas["GenerateRequest"]["properties"]["seed"]["anyOf"][0]
    assert seed["maximum"] == 2**63 - 1 and isinstance(seed["maximum"], int)  # exact, not a float
    assert schemas["Keyframe"]["properties"]["latent"]  # nested models are components too


def test_a_failed_model_is_listed_and_readyz_names_it(tmp_path, make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    make_model_dir(tmp_path, "good")
    bad = make_model_dir(tmp_path, "broken")
    (bad / "generator.onnx").write_bytes(b"garbage")
    with TestClient(create_app(make_settings(models_dir=tmp_path, default_model=None))) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["models"]["good"] == "ready"
        assert "broken/generator.onnx: checksum mismatch" in r.json()["models"]["broken"]
        info = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert info["broken"]["status"] == "failed"
        assert_error(c.post("/generate", json={"model": "broken"}), 503, "model")
        assert c.post("/generate", json={}).json()["model"] == "good"


def test_no_models_starts_and_is_not_ready(tmp_path, make_settings):
    from starlette.testclient import TestClient

    from service.app import create_app

    with TestClient(create_app(make_settings(models_dir=tmp_path / "missing", default_model=None))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        assert c.get("/models").json() == {"version": __version__, "default": None, "models": []}
        assert_error(c.post("/generate", json={}), 404, "model")


def test_metrics_appear_and_move(client):
    before = metric("ganserve_images_generated_total", model="tiny-cgan", version="1")
    reqs = metric("ganserve_requests_total", endpoint="/generate", method="POST", status="200")
    client.post("/generate", json={"n": 3})
    client.post("/generate", json={"n": 999})
    text = client.get("/metrics").text
    for name in (
        "ganserve_requests_total",
        "ganserve_request_seconds_bucket",
        "ganserve_images_generated_total",
        "ganserve_queue_depth",
        "ganserve_queue_seconds_bucket",
        "ganserve_batch_size_bucket",
        "ganserve_inference_seconds_bucket",
        'ganserve_model_info{kind="conditional",model="tiny-cgan",'
        'provider="CPUExecutionProvider",version="1"} 1.0',
    ):
        assert name in text, name
    assert metric("ganserve_images_generated_total", model="tiny-cgan", version="1") == before + 3
    assert metric("ganserve_requests_total", endpoint="/generate", method="POST", status="200") == reqs + 1
    assert metric("ganserve_requests_total", endpoint="/generate", method="POST", status="422") >= 1
    assert metric("ganserve_batch_size_count", model="tiny-cgan", version="1") > 0


# --- batching behaviour through the API --------------------------------------------------------


class Gate:
    """Wraps a model's run_fn: blocks calls until opened, can fail, counts rows."""

    def __init__(self, run_fn, fail=False):
        self.run_fn, self.fail, self.rows = run_fn, fail, []
        self.open = threading.Event()

    def __call__(self, inputs):
        self.open.wait(10)
        self.rows.append(len(inputs["z"]))
        if self.fail:
            raise RuntimeError("injected failure")
        return self.run_fn(inputs)


@pytest.mark.anyio
async def test_determinism_across_64_concurrent_requests_of_mixed_composition(async_client, app, model_root):
    gen = app.state.registry.models["tiny-cgan"].generator
    gate = Gate(gen.run_fn)
    gen.run_fn = gate
    rng = np.random.default_rng(0)
    jobs = []
    for _ in range(64):
        n = int(rng.integers(1, 9))
        seeds = [int(s) for s in rng.integers(0, 50, size=n)]
        labels = [int(s) % 3 for s in seeds]
        jobs.append((seeds, labels))
    tasks = [
        asyncio.ensure_future(async_client.post("/generate", json={"seeds": s, "labels": lab}))
        for s, lab in jobs
    ]
    await asyncio.sleep(0.2)
    gate.open.set()
    responses = await asyncio.gather(*tasks)
    assert max(gate.rows) > 8  # requests really were batched together
    alone = {}
    for (seeds, labels), r in zip(jobs, responses, strict=True):
        assert r.status_code == 200
        for s, lab, img in zip(seeds, labels, r.json()["images"], strict=True):
            px = pixels(img["image"]).astype(int)
            if s not in alone:
                alone[s] = expected(model_root, "tiny-cgan", [s], [lab])[0]
            assert np.abs(px - alone[s]).max() <= 1
    single = await async_client.post("/generate", json={"seeds": [jobs[0][0][0]], "labels": [jobs[0][1][0]]})
    assert single.json()["images"][0]["image"] == responses[0].json()["images"][0]["image"]


@pytest.mark.anyio
async def test_an_injected_inference_failure_fails_only_its_batch(async_client, app):
    gen = app.state.registry.models["tiny-cgan"].generator
    original = gen.run_fn
    gate = Gate(original, fail=True)
    gate.open.set()
    gen.run_fn = gate
    r = await async_client.post("/generate", json={"n": 2})
    assert r.status_code == 500 and r.json()["error"] == "inference_failed"
    gen.run_fn = original
    assert (await async_client.post("/generate", json={"n": 2})).status_code == 200


@pytest.mark.anyio
async def test_full_queue_gives_503_with_retry_after_and_expired_requests_504(make_settings):
    import httpx

    from service.app import create_app

    app = create_app(make_settings(max_queue_rows=4, request_timeout_s=0.2, inference_threads=1))
    async with started(app):
        gen = app.state.registry.models["tiny-cgan"].generator
        gate = Gate(gen.run_fn)
        gen.run_fn = gate
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = asyncio.ensure_future(c.post("/generate", json={"n": 1}))  # blocks the only thread
            await asyncio.sleep(0.05)
            queued = asyncio.ensure_future(c.post("/generate", json={"n": 4}))  # fills the queue
            await asyncio.sleep(0.05)
            before = metric("ganserve_rejected_total", model="tiny-cgan", version="1", reason="overloaded")
            r = await c.post("/generate", json={"n": 1})
            assert (
                r.status_code == 503 and r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded"
            )
            assert set(r.json()) == ERROR_KEYS and r.json()["limit"] == 4  # as the in-flight refusal
            assert (
                metric("ganserve_rejected_total", model="tiny-cgan", version="1", reason="overloaded")
                == before + 1
            )
            await asyncio.sleep(0.3)  # the queued request's deadline passes
            gate.open.set()
            assert (await first).status_code == 200
            late = await queued
            assert late.status_code == 504 and late.json()["error"] == "deadline_exceeded"
            assert gate.rows == [1]


@pytest.mark.anyio
async def test_requests_over_the_in_flight_bound_get_503_before_any_work(make_settings):
    import httpx

    from service.app import create_app

    app = create_app(make_settings(max_inflight_requests=2, inference_threads=1))
    async with started(app):
        gen = app.state.registry.models["tiny-cgan"].generator
        gate = Gate(gen.run_fn)
        gen.run_fn = gate
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            held = [asyncio.ensure_future(c.post("/generate", json={"n": 1})) for _ in range(2)]
            await asyncio.sleep(0.05)
            before = metric("ganserve_rejected_total", model="", version="", reason="inflight")
            r = await c.post("/generate", json={"n": 1})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert (
                r.json()["error"] == "overloaded" and r.json()["limit"] == 2 and set(r.json()) == ERROR_KEYS
            )
            assert metric("ganserve_rejected_total", model="", version="", reason="inflight") == before + 1
            assert r.json()["request_id"] == r.headers["x-request-id"] != ""
            assert (await c.get("/healthz")).status_code == 200  # GETs are never bounded
            gate.open.set()
            assert [(await h).status_code for h in held] == [200, 200]
            assert gate.rows == [1, 1] or gate.rows == [2]  # the rejected request never ran
            assert (await c.post("/generate", json={"n": 1})).status_code == 200  # slots freed


@pytest.mark.anyio
async def test_a_client_that_disconnects_leaves_no_work_behind(make_settings):
    from service.app import create_app

    app = create_app(make_settings(inference_threads=1))
    async with started(app):
        await _disconnect_scenario(app)


async def _disconnect_scenario(app):
    import httpx

    async_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    gen = app.state.registry.models["tiny-cgan"].generator
    gate = Gate(gen.run_fn)
    gen.run_fn = gate
    blocker = asyncio.ensure_future(async_client.post("/generate", json={"n": 1}))
    blocker2 = asyncio.ensure_future(async_client.post("/generate", json={"n": 1}))
    await asyncio.sleep(0.05)
    cancelled_before = metric("ganserve_rejected_total", model="tiny-cgan", version="1", reason="cancelled")

    sent = []
    disconnect = asyncio.Event()

    async def receive():
        if not sent:
            sent.append(1)
            return {"type": "http.request", "body": b'{"n": 5}', "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/generate",
        "raw_path": b"/generate",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
        "state": {},
    }
    call = asyncio.ensure_future(app(scope, receive, send))
    await asyncio.sleep(0.05)
    assert gen.queued_rows == 5
    disconnect.set()
    await call
    gate.open.set()
    await blocker
    await blocker2
    assert 5 not in gate.rows and sum(gate.rows) == 2
    assert (
        metric("ganserve_rejected_total", model="tiny-cgan", version="1", reason="cancelled")
        == cancelled_before + 1
    )


@pytest.mark.anyio
async def test_shutdown_finishes_queued_requests_and_rejects_new_ones(make_settings):
    import httpx

    from service.app import create_app

    app = create_app(make_settings(inference_threads=1))
    ctx = app.router.lifespan_context(app)
    await ctx.__aenter__()
    gen = app.state.registry.models["tiny-cgan"].generator
    gate = Gate(gen.run_fn)
    gen.run_fn = gate
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        inflight = [asyncio.ensure_future(c.post("/generate", json={"n": 2})) for _ in range(5)]
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(ctx.__aexit__(None, None, None))
        await asyncio.sleep(0.05)
        before = metric("ganserve_rejected_total", model="", version="", reason="shutting_down")
        r = await c.post("/generate", json={"n": 1})
        assert r.status_code == 503 and "retry-after" in r.headers and r.json()["error"] == "shutting_down"
        assert metric("ganserve_rejected_total", model="", version="", reason="shutting_down") == before + 1
        assert (await c.get("/readyz")).status_code == 503
        gate.open.set()
        assert [x.status_code for x in await asyncio.gather(*inflight)] == [200] * 5
        await stopping


def test_padded_batches_serve_the_same_images(make_settings, model_root):
    """`pad_batches=on` (what CUDA gets by default) changes the shape of each call, not a pixel."""
    from starlette.testclient import TestClient

    from service.app import create_app

    body = {"seeds": [3, 1, 4, 1, 5], "labels": [0, 1, 2, 0, 1]}
    with TestClient(create_app(make_settings(pad_batches="on", max_batch_size=16))) as c:
        gen = c.app.state.registry.models["tiny-cgan"].generator
        padded = c.post("/generate", json=body).json()["images"]
    got = np.stack([pixels(i["image"]) for i in padded]).astype(int)
    assert np.abs(got - expected(model_root, "tiny-cgan", body["seeds"], body["labels"])).max() <= 1
    assert gen.run_fn.__name__ == "run_padded"
