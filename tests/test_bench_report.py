"""The goals table and the host-ceiling figures (bench/report.py), and the suite's new parts end to end.

The arithmetic is checked on hand-made rows (no measurement); the end-to-end test runs the
`inproc`, `naive` and `host` parts for fractions of a second on the tiny test models, so that
`python -m bench all` cannot break in those parts unnoticed.
"""

from __future__ import annotations

import dataclasses

import pytest

from bench import report, suite


def _row(case, c, rps, images, p50=1.0, p99=10.0, cpu=None):
    return {
        "case": case,
        "concurrency": c,
        "requests_per_s": rps,
        "images_per_s": rps * images,
        "images_per_request": images,
        "p50_ms": p50,
        "p99_ms": p99,
        "server_cpu_cores": cpu,
    }


def _ref(lines: dict[str, float], batches=(64,)):
    b = str(max(batches))
    return {
        "model": "m",
        "batches": list(batches),
        "images_per_s": {k: {b: v} for k, v in lines.items()},
        "per_cpu_s": {k: {b: v / 2} for k, v in lines.items()},
    }


def test_host_costs_is_the_line_through_n1_and_n64():
    # n=1: 0.5 ms of server CPU per request; n=64: 0.5 ms + 63 x 30 us = 2.39 ms per request
    rows = [_row("n1", 64, 1000, 1, cpu=0.5), _row("n64", 16, 100, 64, cpu=0.239)]
    per_request_ms, per_image_us = report.host_costs(rows, "")
    assert per_image_us == pytest.approx(30.0)
    assert per_request_ms == pytest.approx(0.47)
    assert report.host_costs(rows, "raw") is None  # not measured


def test_goals_use_the_strong_naive_server_and_the_faster_layout():
    results = {
        "service": [
            _row("n1", 64, 1100, 1, p99=40.0),
            _row("n1", 1, 500, 1, p50=1.9),
            _row("n16", 16, 120, 16, cpu=1.9),
            {
                "case": "n16raw",
                "concurrency": 16,
                "skipped": "the server answers 406 to Accept: application/x-npy",
            },
        ],
        "naive_strong": [_row("n1", 64, 500, 1, p99=100.0)],
        "naive": [_row("n1", 64, 400, 1, p99=300.0)],  # the weak one: never the goal's baseline
        "inproc": _ref({"ort_1x2": 1900.0, "ort_2x1": 2400.0, "png_1x2": 1800.0, "png_2x1": 2000.0}),
    }
    goals = {name: (ok, txt) for name, ok, txt in report.targets(results)}
    ok, txt = next(v for k, v in goals.items() if k.startswith("n=1, c=64"))
    assert ok is True and "1100 vs 500 req/s = 2.20x" in txt and "= 0.40x" in txt
    ok, txt = next(v for k, v in goals.items() if k.startswith("n=16, c=16, PNG"))
    assert ok is True and "1920 vs 2000 images/s = 0.96x" in txt and "`png_2x1`" in txt
    assert "per CPU-second: 1011 vs 1000 images = 1.01x" in txt
    ok, txt = next(v for k, v in goals.items() if k.startswith("n=16, c=16, raw"))
    assert ok is None and "406" in txt
    ok, txt = next(v for k, v in goals.items() if k.startswith("n=1, c=1"))
    assert ok is True and "1.90 ms" in txt
    ok, txt = next(v for k, v in goals.items() if k.startswith("near-free"))
    assert ok is None and "not measured" in txt


def test_inproc_naive_and_host_parts_end_to_end(model_root, tmp_path):
    plan = dataclasses.replace(
        suite.QUICK,
        duration=0.3,
        warmup=0.1,
        closed_n1=(1,),
        closed_n16=(),
        naive_default_points=(("n1", 1),),
        ref_seconds=0.05,
        host_points=(("n1", 4), ("n1raw", 4), ("n64", 2), ("n64raw", 2)),
    )
    results = suite.run_all(plan, tmp_path, "cpu", model_root, {"inproc", "naive", "host"})
    assert results["inproc"]["model"] == "tiny-cgan"
    assert [(r["case"], r["concurrency"]) for r in results["naive_strong"]] == [("n1", 1)]
    assert results["naive_strong"][0]["statuses"] == {"200": results["naive_strong"][0]["ok"]}
    host = results["host"]
    assert host["model"] == "tiny-cgan-nearfree" and host["like"] == "tiny-cgan"
    png = [r for r in host["service"] if r["case"] in ("n1", "n64")]
    assert all(set(r["statuses"]) == {"200"} and r["ok"] > 0 for r in png)
    for r in host["service"]:  # raw rows: measured, or skipped with the server's answer
        if r["case"].endswith("raw"):
            assert "skipped" in r or set(r["statuses"]) == {"200"}
    results |= {"command": "test", "elapsed_s": 1.0}
    results["machine"]["after"] = results["machine"]["before"]
    doc = tmp_path / "BENCHMARKS.md"
    report.write(results, tmp_path, doc, "test")
    text = doc.read_text()
    assert "### Host ceiling: the near-free model (tiny-cgan-nearfree)" in text
    assert "### Naive baseline (`bench/naive.py`): sync handler, one ORT thread" in text
    assert "### In-process references (tiny-cgan, batch 64)" in text
