"""The `ganserve` command line against a real uvicorn on 127.0.0.1 (and in-process for speed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from service.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_saves_a_grid_and_prints_seeds(live_server, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "--url",
        live_server,
        "generate",
        "--label",
        "2",
        "-n",
        "4",
        "--seed",
        "5",
        "-o",
        str(tmp_path / "twos.png"),
        "--out-dir",
        str(tmp_path / "each"),
    )
    assert code == 0
    assert "4 images from tiny-cgan (base seed 5)" in out and "seed 8  label 2" in out
    assert Image.open(tmp_path / "twos.png").size[0] > 8
    assert len(list((tmp_path / "each").glob("*.png"))) == 4


def test_interpolate_gif_and_json(live_server, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "--url",
        live_server,
        "--json",
        "interpolate",
        "--from-seed",
        "1",
        "--to-seed",
        "2",
        "--from-label",
        "0",
        "--to-label",
        "2",
        "--steps",
        "4",
        "-o",
        str(tmp_path / "walk.gif"),
    )
    assert code == 0
    data = json.loads(out)
    assert len(data["frames"]) == 5 and data["frames"][-1]["label"] == [0.0, 0.0, 1.0]
    assert Image.open(tmp_path / "walk.gif").n_frames == 5


def test_arithmetic_score_and_models(live_server, capsys, tmp_path):
    code, out, _ = run(
        capsys,
        "--url",
        live_server,
        "arithmetic",
        "--plus",
        "1,2",
        "--minus",
        "3",
        "--plus",
        "4",
        "--label",
        "1",
        "--neighbors",
        "2",
        "-o",
        str(tmp_path / "sum.png"),
    )
    assert code == 0 and "result + 2 neighbours" in out
    code, out, _ = run(capsys, "--url", live_server, "score", str(tmp_path / "sum.png"))
    assert code == 1  # a strip is not an image of the model's shape: the server says so
    run(capsys, "--url", live_server, "generate", "-n", "2", "--out-dir", str(tmp_path / "g"))
    files = sorted(str(p) for p in (tmp_path / "g").glob("*.png"))
    code, out, _ = run(capsys, "--url", live_server, "--json", "score", *files)
    assert code == 0 and len(json.loads(out)["scores"]) == 2
    code, out, _ = run(capsys, "--url", live_server, "models")
    assert code == 0 and "tiny-cgan (default): ready conditional 1x8x8" in out


def test_errors_print_the_servers_message_and_exit_non_zero(live_server, capsys):
    code, _, err = run(capsys, "--url", live_server, "generate", "-n", "100000")
    assert code == 1 and "256" in err and "n" in err
    code, _, err = run(capsys, "--url", live_server, "generate", "--model", "missing")
    assert code == 1 and "missing" in err


def test_unreachable_service_exits_3(capsys):
    from conftest import free_port

    code, _, err = run(capsys, "--url", f"http://127.0.0.1:{free_port()}", "models")
    assert code == 3 and "cannot reach" in err


def test_url_from_the_environment_and_console_script(live_server):
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "--json", "models"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"GANSERVE_URL": live_server, "PATH": ""},
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["default"] == "tiny-cgan"


def test_bad_command_line_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", "--seeds", "1,x"])
    assert info.value.code == 2


def test_serve_hands_everything_after_it_to_the_server(monkeypatch):
    import service.__main__

    seen = []
    monkeypatch.setattr(service.__main__, "main", seen.append)
    assert main(["serve", "--port", "8123", "--log-level", "info"]) == 0
    assert main(["--url", "http://elsewhere", "serve", "-h"]) == 0
    assert seen == [["--port", "8123", "--log-level", "info"], ["-h"]]
    with pytest.raises(SystemExit) as info:
        main(["models", "--port", "1"])  # only `serve` takes the server's flags
    assert info.value.code == 2


def test_api_key_from_flag_or_environment_and_401_exits_1(make_settings, capsys, monkeypatch):
    from conftest import run_uvicorn

    from service.app import create_app

    with run_uvicorn(create_app(make_settings(api_keys="k1-secret"))) as (_, url):
        code, _, err = run(capsys, "--url", url, "models")
        assert code == 1 and "401" in err
        code, out, _ = run(capsys, "--url", url, "--api-key", "k1-secret", "models")
        assert code == 0 and "tiny-cgan (default)" in out
        monkeypatch.setenv("GANSERVE_API_KEY", "k1-secret")
        code, out, _ = run(capsys, "--url", url, "--json", "generate", "-n", "1", "--seed", "4")
        assert code == 0 and json.loads(out)["images"][0]["seed"] == 4
