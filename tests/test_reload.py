"""Model versions (Triton's layout beside the flat one) and reload without downtime: discovery,
requests that name a version, POST /admin/reload and SIGHUP, and a reload under a steady stream of
requests against a real uvicorn that loses none."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import free_port, run_uvicorn
from modelkit import make_model_dir, read_card, reference_images, write_card
from PIL import Image
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from service.app import create_app
from service.client import latents
from service.imaging import to_uint8
from service.registry import ModelKey, Registry

REPO = Path(__file__).resolve().parents[1]
KEY = "reload-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEEDS, LABELS = [1, 2], [0, 2]


def add_version(root: Path, name: str, version: str, seed: int) -> Path:
    """A complete model directory moved into place as `root/name/version` in one rename (as a
    deployment should: a half-copied folder would fail its checksums and be skipped)."""
    staging = make_model_dir(root.parent / f"staging-{name}-{version}", name, seed=seed)
    target = root / name / version
    target.parent.mkdir(parents=True, exist_ok=True)
    staging.rename(target)
    return target


def png_rows(reply: dict) -> np.ndarray:
    return np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(i["image"])))) for i in reply["images"]]
    )


def expected_png(model_dir: Path, seeds=SEEDS, labels=LABELS) -> np.ndarray:
    return to_uint8(reference_images(model_dir, seeds, labels))[..., 0]


# --- discovery and requests that name a version ---------------------------------------------------


def test_versioned_and_flat_folders_the_newest_serves_by_default(tmp_path, make_settings):
    root = tmp_path / "models"
    v1, v3 = add_version(root, "m", "1", seed=0), add_version(root, "m", "3", seed=3)
    (root / "m" / "notes").mkdir()  # not a version folder: ignored
    (root / "m" / "07").mkdir()  # a leading zero: ignored
    make_model_dir(root, "flat", seed=1)
    reg = Registry(make_settings(models_dir=root, default_model="m"))
    assert [(k, p.name) for k, p in reg.discover()] == [
        (ModelKey("flat", "1"), "flat"),
        (ModelKey("m", "1"), "1"),
        (ModelKey("m", "3"), "3"),
    ]
    with TestClient(create_app(make_settings(models_dir=root, default_model="m"))) as c:
        models = {m["name"]: m for m in c.get("/models").json()["models"]}
        assert models["m"]["versions"] == ["1", "3"] and models["flat"]["versions"] == ["1"]
        newest = c.post("/generate", json={"seeds": SEEDS, "labels": LABELS})
        assert np.array_equal(png_rows(newest.json()), expected_png(v3))
        pinned = c.post("/generate", json={"seeds": SEEDS, "labels": LABELS, "version": "1"})
        assert np.array_equal(png_rows(pinned.json()), expected_png(v1))
        walk = c.post(
            "/interpolate", json={"version": "1", "keyframes": [{"seed": 1}, {"seed": 2}], "steps": 2}
        )
        assert walk.status_code == 200
        missing = c.post("/generate", json={"version": "2"})
        assert missing.status_code == 404 and missing.json()["field"] == "version"
        assert "has no version '2' (served: 1, 3)" in missing.json()["detail"]
        assert c.post("/generate", json={"version": "one"}).status_code == 422
        assert c.post("/generate", json={"version": 1}).status_code == 422  # a string, as in v2 URLs
        meta = c.get("/v2/models/m").json()
        assert meta["versions"] == ["1", "3"]
        z, y = latents(SEEDS, 8, 3, labels=LABELS)
        header = {
            "inputs": [
                {"name": "z", "shape": [2, 8], "datatype": "FP32", "data": z.ravel().tolist()},
                {"name": "y", "shape": [2, 3], "datatype": "FP32", "data": y.ravel().tolist()},
            ]
        }
        r = c.post("/v2/models/m/versions/1/infer", json=header).json()
        assert r["model_version"] == "1"
        assert c.post("/v2/models/m/infer", json=header).json()["model_version"] == "3"
        text = c.get("/metrics").text
        for version in ("1", "3"):
            labels = f'kind="conditional",model="m",provider="CPUExecutionProvider",version="{version}"'
            assert f"ganserve_model_info{{{labels}}} 1.0" in text
        assert (
            REGISTRY.get_sample_value("ganserve_images_generated_total", {"model": "m", "version": "1"}) >= 4
        )


def test_a_broken_new_version_leaves_the_old_one_serving(tmp_path, make_settings):
    root = tmp_path / "models"
    add_version(root, "m", "1", seed=0)
    broken = add_version(root, "m", "2", seed=2)
    card = read_card(broken)
    card["latent_dim"] = 0
    write_card(broken, card)
    reg = Registry(make_settings(models_dir=root, default_model="m"))
    reg.load_all()
    assert reg.get("m").version == "1" and reg.ready and not reg.failed
    asyncio.run(reg.close(0))


# --- the admin endpoint ---------------------------------------------------------------------------


def test_admin_reload_needs_configured_keys_and_a_valid_key(tmp_path, make_settings):
    root = tmp_path / "models"
    add_version(root, "m", "1", seed=0)
    with TestClient(create_app(make_settings(models_dir=root, default_model="m"))) as c:
        r = c.post("/admin/reload")
        assert r.status_code == 403 and "GANSERVE_API_KEYS" in r.json()["detail"]
    open_too = make_settings(models_dir=root, default_model="m", api_keys=KEY, open_paths="/admin/reload")
    with TestClient(create_app(open_too)) as c:
        assert c.post("/admin/reload").status_code == 401  # an open path still needs the key here
        assert c.post("/admin/reload", headers={"X-API-Key": "wrong"}).status_code == 401
        r = c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 200 and r.json()["unchanged"] == ["m@1"]
    workers = make_settings(models_dir=root, default_model="m", api_keys=KEY, workers=2)
    with TestClient(create_app(workers)) as c:
        r = c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 409 and "SIGHUP" in r.json()["detail"]


def test_reload_loads_replaces_retires_and_reports(tmp_path, make_settings):
    root = tmp_path / "models"
    add_version(root, "m", "1", seed=0)
    flat = make_model_dir(root, "flat", seed=1)
    settings = make_settings(models_dir=root, default_model="m", api_keys=KEY)
    with TestClient(create_app(settings), headers=AUTH) as c:
        v2 = add_version(root, "m", "2", seed=2)
        bad = add_version(root, "m", "3", seed=3)
        (bad / "generator.onnx").write_bytes(b"half-copied")
        replacement = make_model_dir(tmp_path / "next", "flat", seed=5)
        shutil.rmtree(flat)
        replacement.rename(flat)  # the flat layout: a new model.json in place
        r = c.post("/admin/reload", headers=AUTH, json={"wait": True})
        report = r.json()
        assert r.status_code == 200, r.text
        assert report["loaded"] == ["m@2"] and report["replaced"] == ["flat@1"]
        assert report["unchanged"] == ["m@1"] and list(report["failed"]) == ["m@3"]
        assert "checksum mismatch" in report["failed"]["m@3"]
        gen = c.post("/generate", json={"seeds": SEEDS, "labels": LABELS})
        assert np.array_equal(png_rows(gen.json()), expected_png(v2))
        flat_gen = c.post("/generate", json={"model": "flat", "seeds": SEEDS, "labels": LABELS})
        assert np.array_equal(png_rows(flat_gen.json()), expected_png(flat))
        shutil.rmtree(root / "m" / "1")
        shutil.rmtree(bad)
        report = c.post("/admin/reload", headers=AUTH, json={"wait": False}).json()
        assert report["retired"] == ["m@1"] and not report["failed"]
        assert [m["versions"] for m in c.get("/models").json()["models"] if m["name"] == "m"] == [["2"]]
        assert c.post("/generate", json={"version": "1"}).status_code == 404
        assert c.get("/readyz").status_code == 200


# --- under load ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_reload_under_a_steady_stream_loses_no_request(tmp_path, make_settings):
    """Four clients send /generate and v2 infer requests back to back. Version 2 is moved in and
    reloaded (the new default within one second), then version 1 is deleted and reloaded (it is
    retired while requests run on it). Every request succeeds with one version's exact pixels."""
    root = tmp_path / "models"
    v1 = add_version(root, "m", "1", seed=0)
    staging = make_model_dir(tmp_path / "staging", "m", seed=2)
    pixels = {"1": expected_png(v1), "2": expected_png(staging)}
    floats = {"1": reference_images(v1, SEEDS, LABELS), "2": reference_images(staging, SEEDS, LABELS)}
    z, y = latents(SEEDS, 8, 3, labels=LABELS)
    header = {
        "inputs": [
            {"name": "z", "shape": [2, 8], "datatype": "FP32", "data": z.ravel().tolist()},
            {"name": "y", "shape": [2, 3], "datatype": "FP32", "data": y.ravel().tolist()},
        ]
    }
    settings = make_settings(models_dir=root, default_model="m", api_keys=KEY, max_queue_delay_ms=2)
    results: list[tuple[float, int, str | None]] = []  # (sent, status, version served)
    stop = asyncio.Event()

    async def stream(url: str, i: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as c:
            while not stop.is_set():
                sent = time.monotonic()
                if i % 2:
                    r = await c.post("/generate", json={"seeds": SEEDS, "labels": LABELS})
                    got = png_rows(r.json()) if r.status_code == 200 else None
                    version = next(
                        (v for v, p in pixels.items() if got is not None and np.array_equal(got, p)), None
                    )
                else:
                    r = await c.post("/v2/models/m/infer", json=header)
                    version = r.json().get("model_version") if r.status_code == 200 else None
                    if version is not None:
                        (out,) = r.json()["outputs"]
                        image = np.asarray(out["data"], np.float32).reshape(out["shape"])
                        assert np.allclose(image, floats[version], atol=1e-5)
                results.append((sent, r.status_code, version))

    with run_uvicorn(create_app(settings)) as (_, url):
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60) as admin:
            clients = [asyncio.create_task(stream(url, i)) for i in range(4)]
            await asyncio.sleep(0.7)
            staging.rename(root / "m" / "2")
            t_new = time.monotonic()
            first = await admin.post("/admin/reload", json={"wait": False})
            took = time.monotonic() - t_new
            await asyncio.sleep(1.0)
            shutil.rmtree(v1)
            t_retire = time.monotonic()
            second = await admin.post("/admin/reload")  # waits for version 1 to drain
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*clients)

    assert first.json()["loaded"] == ["m@2"] and second.json()["retired"] == ["m@1"], (
        first.text,
        second.text,
    )
    assert took < 1.0, f"the reload took {took:.2f} s"
    assert results and all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:5]
    assert all(version is not None for _, _, version in results)  # every image is one version's, exactly
    before = [v for sent, _, v in results if sent < t_new]
    after = [v for sent, _, v in results if sent > t_new + 1.0]
    assert before and set(before) == {"1"}
    assert after and set(after) == {"2"}, "the default changed within one second of the reload"
    assert len([1 for sent, _, _ in results if t_retire <= sent]) > 4  # requests ran across the retirement


# --- SIGHUP --------------------------------------------------------------------------------------


def test_sighup_reloads_a_running_server(tmp_path):
    root = tmp_path / "models"
    add_version(root, "m", "1", seed=0)
    port = free_port()
    env = os.environ | {"GANSERVE_LOG_LEVEL": "warning", "GANSERVE_PROVIDER": "cpu"}
    cmd = [sys.executable, "-m", "service", "--port", str(port), "--models", str(root)]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def versions() -> list[str] | None:
        try:
            return httpx.get(f"{url}/models", timeout=2).json()["models"][0]["versions"]
        except httpx.TransportError:
            return None

    def wait_for(expected: list[str]) -> None:
        deadline = time.monotonic() + 30
        while versions() != expected:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read().decode()
            time.sleep(0.05)

    try:
        wait_for(["1"])
        add_version(root, "m", "2", seed=2)
        proc.send_signal(signal.SIGHUP)
        t0 = time.monotonic()
        wait_for(["1", "2"])
        assert time.monotonic() - t0 < 5
        r = httpx.post(f"{url}/generate", json={"seeds": SEEDS, "labels": LABELS}, timeout=30)
        assert np.array_equal(png_rows(r.json()), expected_png(root / "m" / "2"))
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
