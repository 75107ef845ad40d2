"""Security: optional API keys, model-name validation, CORS off by default, no pickle on the serving
path, the container's user, request IDs (echoed or generated, in error bodies and in the logs)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from service.app import create_app

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def secured(make_settings):
    with TestClient(create_app(make_settings(api_keys="k1-secret, k2-secret"))) as c:
        yield c


# --- API keys ---------------------------------------------------------------------------------


def test_without_keys_configured_everything_is_open(client):
    assert client.post("/generate", json={"n": 1}).status_code == 200


def test_a_key_is_required_and_401_says_how(secured):
    r = secured.post("/generate", json={"n": 1})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"] == "unauthorized" and r.json()["request_id"] == r.headers["x-request-id"]
    for path in ("/models", "/models/tiny-cgan", "/openapi.json", "/docs"):
        assert secured.get(path).status_code == 401, path
    assert (
        secured.post("/generate", json={"n": 1}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    )
    assert secured.post("/generate", json={"n": 1}, headers={"X-API-Key": "k1-secre"}).status_code == 401
    assert (
        secured.post("/generate", json={"n": 1}, headers={"Authorization": "Basic k1-secret"}).status_code
        == 401
    )
    assert secured.post("/generate", json={"n": 1}, headers={"Authorization": "Bearer "}).status_code == 401


def test_either_header_and_any_configured_key_works(secured):
    assert (
        secured.post("/generate", json={"n": 1}, headers={"Authorization": "Bearer k1-secret"}).status_code
        == 200
    )
    assert (
        secured.post("/generate", json={"n": 1}, headers={"authorization": "bearer k2-secret"}).status_code
        == 200
    )
    assert secured.post("/generate", json={"n": 1}, headers={"X-API-Key": "k2-secret"}).status_code == 200


def test_health_and_metrics_stay_open_by_default_and_that_is_a_setting(secured, make_settings):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert secured.get(path).status_code == 200, path
    with TestClient(create_app(make_settings(api_keys="k", open_paths="/healthz"))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 401 and c.get("/readyz").status_code == 401


def test_keys_come_from_the_environment(monkeypatch, model_root):
    from service.settings import Settings

    monkeypatch.setenv("GANSERVE_API_KEYS", "a,b , ,c")
    monkeypatch.setenv("GANSERVE_CORS_ORIGINS", "https://x.example")
    s = Settings(models_dir=model_root)
    assert s.api_key_list == ["a", "b", "c"] and s.cors_origin_list == ["https://x.example"]


def test_the_key_check_is_constant_time_code():
    from service import auth

    src = Path(auth.__file__).read_text()
    assert "hmac.compare_digest" in src and "== k" not in src
    assert auth.key_ok(b"a", [b"x", b"a"]) and not auth.key_ok(None, [b""]) and not auth.key_ok(b"", [b"a"])


# --- model names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../tiny-cgan",
        "..",
        "/etc/passwd",
        "tiny-cgan/../tiny-gan",
        "./tiny-cgan",
        "a\\b",
        "%2e%2e",
        "~root",
        "a\x00b",
    ],
)
def test_path_like_model_names_are_rejected_not_resolved(client, name):
    r = client.post("/generate", json={"model": name})
    assert r.status_code == 422 and r.json()["field"] == "model", r.text


def test_path_traversal_in_the_models_url_never_reads_a_file(client):
    for path in ("/models/..%2F..%2Fetc%2Fpasswd", "/models/%2e%2e", "/models/.hidden", "/models/a..b"):
        r = client.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert "root:" not in r.text


# --- CORS -------------------------------------------------------------------------------------


def test_cors_is_off_unless_configured(client, make_settings):
    pre = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    r = client.options("/generate", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    r = client.post("/generate", json={"n": 1}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    with TestClient(create_app(make_settings(cors_origins="https://ok.example", api_keys="k"))) as c:
        r = c.options("/generate", headers={**pre, "Origin": "https://ok.example"})  # preflight needs no key
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ok.example"
        r = c.options("/generate", headers=pre)
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


# --- the serving path -------------------------------------------------------------------------


def test_no_pickle_or_torch_on_the_serving_path():
    bad = re.compile(
        r"\bpickle\b|allow_pickle\s*=\s*True|\bimport torch\b|\bfrom torch\b|torch\.load|joblib|dill"
    )
    hits = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for p in sorted((REPO / "service").rglob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if bad.search(line)
    ]
    assert not hits, hits
    # reference_stats.npz is read with allow_pickle=False, explicitly
    assert "allow_pickle=False" in (REPO / "service" / "registry.py").read_text()


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_the_container_runs_as_a_non_root_user(name):
    path = REPO / "docker" / name
    if not path.exists():
        pytest.skip(f"docker/{name} not written yet")
    users = [
        line.split(None, 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.strip().upper().startswith("USER ")
    ]
    assert users, f"docker/{name} sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"docker/{name} ends as {users[-1]}"


# --- request IDs ------------------------------------------------------------------------------


def test_every_response_carries_a_request_id_echoed_when_sane(client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123.x:y"})
    assert r.headers["x-request-id"] == "abc-123.x:y"
    ids = {client.get("/healthz").headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    for insane in ("has space", "a" * 200, "<script>", "x\ty"):
        rid = client.get("/healthz", headers={"X-Request-ID": insane}).headers["x-request-id"]
        assert rid != insane and re.fullmatch(r"[0-9a-f]{32}", rid)
    for r in (
        client.post("/generate", json={"n": 1}),
        client.get("/metrics"),
        client.get("/nowhere"),
        client.post("/generate", content=b"{", headers={"content-type": "application/json"}),
    ):
        assert "x-request-id" in r.headers


def test_errors_carry_the_request_id_in_the_body_and_the_log(client, caplog):
    caplog.set_level(logging.INFO, logger="service")
    r = client.post("/generate", json={"n": 100000}, headers={"X-Request-ID": "trace-42"})
    assert r.status_code == 422 and r.json()["request_id"] == "trace-42" and r.json()["field"] == "n"
    assert any("trace-42" in rec.getMessage() and "422" in rec.getMessage() for rec in caplog.records)
    r = client.get("/models/nope")
    assert r.json()["request_id"] == r.headers["x-request-id"]
    ok = client.post("/generate", json={"n": 1}).json()
    assert "request_id" not in ok


def test_an_unexpected_exception_is_a_json_500_with_the_request_id(make_settings, caplog):
    app = create_app(make_settings())

    @app.get("/boom")
    async def boom():
        raise RuntimeError("kaboom")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert r.status_code == 500 and r.headers["x-request-id"] == "boom-1"
    assert r.json()["error"] == "internal_error" and r.json()["request_id"] == "boom-1"
    assert "kaboom" not in r.text
    assert any("boom-1" in rec.getMessage() for rec in caplog.records)


def test_request_ids_are_unique_per_process_and_after_fork():
    from service.auth import new_request_id

    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child writes one ID and leaves at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read), os.close(write)
    assert child[:16] != new_request_id()[:16]
