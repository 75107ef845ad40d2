"""What ships, tested as a user gets it: `python -m build` makes the sdist and the wheel, and the
wheel, installed with `[serve,cpu]` into a fresh virtualenv, serves out of the box.

- both distributions pass `twine check`; the sdist carries models/ and the build hook (setup.py)
- the wheel holds the packages, the web page and every default model file, byte for byte, under
  service/default_models/ (and no tests, bench, docs or top-level models/); serving needs no torch
- in a new virtualenv (no system site-packages: a missing dependency fails here), from a folder
  outside the repository with no GANSERVE_* variable: `ganserve-server` serves both default models
  (ready), `ganserve generate` brings back the same PNG bytes as the source tree's service for the
  same seeds, `--version` prints the package's version, and an empty model root fails fast.
pip fetches the dependencies from the package index (or its cache): about half a minute.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest
from conftest import free_port, run_uvicorn

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SHIPPED = sorted(p.name for p in MODELS.iterdir() if (p / "model.json").is_file())


def run(cmd: list, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


def model_files() -> dict[str, str]:
    """Relative path -> sha256 of every file of models/ a release carries (local debris aside:
    hidden files, stray ONNX external data; the same rule as setup.py's)."""
    return {
        str(p.relative_to(MODELS)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in MODELS.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "__")) for part in p.relative_to(MODELS).parts)
        and not p.name.endswith(".onnx.data")
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """`python -m build`: the sdist, then the wheel built from it, as a release would make them."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    (wheel,) = out.glob(f"ganserve-{VERSION}-py3-none-any.whl")
    (sdist,) = out.glob(f"ganserve-{VERSION}.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_distributions_pass_twine_check(dist):
    out = run([sys.executable, "-m", "twine", "check", "--strict", dist["sdist"], dist["wheel"]])
    assert out.stdout.count("PASSED") == 2, out.stdout


def test_the_sdist_carries_the_models_and_the_build_hook(dist):
    import tarfile

    with tarfile.open(dist["sdist"]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert {"pyproject.toml", "setup.py", "MANIFEST.in", "README.md"} <= names
    assert {f"models/{rel}" for rel in model_files()} <= names


def test_the_wheel_holds_the_packages_the_page_and_the_default_models(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        packaged = {
            n.removeprefix("service/default_models/"): hashlib.sha256(wheel.read(n)).hexdigest()
            for n in names
            if n.startswith("service/default_models/")
        }
        meta = wheel.read(f"ganserve-{VERSION}.dist-info/METADATA").decode()
    # every top-level package of the repository, the web page, the default models byte for byte
    packages = [p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name not in ("tests", "bench")]
    assert {"service", "training"} <= set(packages)
    assert {f"{p}/__init__.py" for p in packages} <= names, sorted(names)
    assert "service/static/index.html" in names, "the web page ships in the wheel"
    assert packaged == model_files() and {rel.split("/")[0] for rel in packaged} == set(SHIPPED)
    assert not any(n.startswith(("tests/", "models/", "bench/", "docs/")) for n in names)
    # the serving extras pull no torch
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    serving = [r for r in requires if "extra ==" not in r or re.search(r"extra == \"(serve|cpu|gpu)\"", r)]
    assert serving and not [r for r in serving if r.startswith("torch")], serving
    assert re.search(rf"^Version: {re.escape(VERSION)}$", meta, re.M)


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel and its `[serve,cpu]` dependencies; returns its bin/."""
    path = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--clear", path], timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # --no-compile: byte-compile on import only what serving uses, not all of scipy (half the CPU time)
    wheel = f"{dist['wheel']}[serve,cpu]"
    run([path / "bin/python", "-m", "pip", "install", "-q", "--no-compile", wheel], env=env)
    return path / "bin"


def user_env() -> dict[str, str]:
    """A user's shell: no GANSERVE_* settings, nothing from this checkout on the path."""
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith("GANSERVE_") and k not in drop}


@pytest.mark.slow
def test_the_installed_wheel_serves_the_default_models_from_anywhere(venv, tmp_path):
    home = tmp_path / "elsewhere"
    home.mkdir()
    assert not home.resolve().is_relative_to(ROOT)
    env = user_env()

    def installed(*argv, **kw) -> subprocess.CompletedProcess:
        return run([venv / argv[0], *argv[1:]], cwd=home, env=env, **kw)

    # the installed package, not this checkout; and no torch in the environment
    where = installed(
        "python", "-c", "import service.settings as s; print(s.__file__); print(s.Settings().models_dir)"
    )
    module, models_dir = where.stdout.split()
    assert Path(module).is_relative_to(venv.parent) and Path(models_dir).is_relative_to(venv.parent), (
        where.stdout
    )
    assert (
        "ModuleNotFoundError"
        in subprocess.run(
            [venv / "python", "-c", "import torch"], cwd=home, env=env, capture_output=True, text=True
        ).stderr
    )
    assert installed("ganserve", "--version").stdout.strip() == f"ganserve {VERSION}"
    assert installed("ganserve-server", "--version").stdout.strip() == f"ganserve-server {VERSION}"

    # an empty model root fails fast, saying what to do
    empty = subprocess.run(
        [venv / "ganserve-server", "--models", home / "no-models"],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 1 and "--allow-empty" in empty.stderr, empty.stderr

    # no path given: the default models inside the wheel
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "server.log").open("w+")

    def server_log() -> str:
        log.seek(0)
        return log.read()

    proc = subprocess.Popen(
        [venv / "ganserve-server", "--port", str(port), "--log-level", "warning"],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{url}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, server_log()
            assert time.monotonic() < deadline, "no /readyz within 60 s\n" + server_log()
            time.sleep(0.3)
        assert ready.json()["models"] == dict.fromkeys(SHIPPED, "ready")
        requests = [
            ["generate", "-n", "4", "--seed", "5", "--label", "3"],  # the default model
            *[["generate", "--model", name, "--seeds", "1,2,77"] for name in SHIPPED],
        ]
        got = {}
        for i, argv in enumerate(requests):
            out = installed("ganserve", "--url", url, *argv, "--out-dir", home / f"r{i}")
            assert "images from" in out.stdout, out.stdout
            got[i] = {p.name: p.read_bytes() for p in sorted((home / f"r{i}").iterdir())}
            assert got[i] and all(png.startswith(b"\x89PNG") for png in got[i].values())
    finally:
        proc.terminate()
        code = proc.wait(timeout=30)
    assert code == 0, "SIGTERM drains and exits 0"

    # the same requests to the source tree's service: the same bytes
    from service.app import create_app
    from service.cli import main as cli
    from service.settings import REPOSITORY_MODELS_DIR, Settings

    with run_uvicorn(create_app(Settings(models_dir=REPOSITORY_MODELS_DIR))) as (_, source_url):
        for i, argv in enumerate(requests):
            assert cli(["--url", source_url, *argv, "--out-dir", str(tmp_path / f"s{i}")]) == 0
            expected = {p.name: p.read_bytes() for p in sorted((tmp_path / f"s{i}").iterdir())}
            assert got[i] == expected, f"{argv}: the installed service's images differ"
