"""Hostile clients against a real `python -m service` (uvicorn on 127.0.0.1): each attack is refused
with the right status, costs bounded CPU and memory, and leaves /healthz responsive.

The attacks and their measurement live in bench/attacks.py (`python -m bench.attacks` prints the
cost of each; docs/RELIABILITY.md, "Attacks", has the figures before and after). Bounds here are the
goals of issue 18 with room for a shared 2-core box: < 50 ms of server CPU per MB sent (asserted at
100 ms), RSS growth < 50 MB, a concurrent /healthz delayed < 100 ms (asserted at 250 ms).
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bench import attacks
from bench.soak import server

SLOW_S = 2.0  # body and header timeouts of the server under attack


@pytest.fixture(scope="module")
def target(model_root: Path):
    settings = {"log_level": "info", "body_timeout_s": SLOW_S, "header_timeout_s": SLOW_S}
    with server(model_root, **settings) as (proc, url):
        yield proc, url


def _log(proc) -> str:
    proc.log.seek(0)
    return proc.log.read().decode(errors="replace")  # read to the end: the server appends there


@pytest.mark.parametrize(
    ("attack", "mb", "statuses"),
    [
        ("big_invalid_list", 8, {413}),
        ("big_invalid_list_1mb", 1, {413}),
        ("big_latents", 8, {413, 422}),
        ("many_seeds", 8, {413}),
        ("png_text_chunks", 2, {200}),  # 20 PNGs with 63 MB of zTXt: chunks dropped unread
    ],
)
def test_large_hostile_bodies_cost_what_reading_them_costs(target, attack, mb, statuses):
    proc, url = target
    seen = attacks.measure(url, proc.pid, attacks.ATTACKS[attack])
    assert seen["status"] in statuses, seen
    assert seen["server_cpu_s"] < 0.1 * mb + 0.1, seen
    assert seen["rss_growth_mb"] < 50, seen
    assert seen["healthz_extra_ms"] < 250, seen


def test_every_list_is_bounded_in_the_schema(target):
    _, url = target
    doc = httpx.get(url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def arrays(node):
        if isinstance(node, dict):
            if node.get("type") == "array":
                yield node
            for v in node.values():
                yield from arrays(v)
        elif isinstance(node, list):
            for v in node:
                yield from arrays(v)

    for name in ("GenerateRequest", "InterpolateRequest", "ArithmeticRequest", "ScoreRequest", "Keyframe"):
        found = list(arrays(schemas[name]))
        assert found and all("maxItems" in a for a in found), name
    r = httpx.post(url + "/interpolate", json={"keyframes": [{"seed": 1}] * 2000})
    assert r.status_code == 422 and r.json()["field"] == "keyframes" and r.json()["limit"] == 1024


def test_stalled_uploads_take_no_slot_and_time_out(target):
    proc, url = target
    seen = attacks.stalled_uploads(url, n=300)
    assert seen["normal_statuses"] == [200], seen
    # a stalled body is answered 408 after body_timeout_s and its connection closed
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=SLOW_S + 10) as s:
        s.sendall(attacks.post("/generate", b'{"n": 1, "seed": 1}')[:-5])
        t = time.monotonic()
        reply = b""
        while chunk := s.recv(65536):  # the head and the body may arrive in separate segments
            reply += chunk
        # the server closed the connection (recv returned b"") within the timeout
        assert attacks.status_of(reply) == 408 and time.monotonic() - t < SLOW_S + 3
        body = json.loads(reply.partition(b"\r\n\r\n")[2])
        assert body["field"] == "body" and body["limit"] == SLOW_S


def test_headers_are_bounded_in_size_and_time(target):
    proc, url = target
    seen = attacks.measure(url, proc.pid, attacks.huge_header)
    assert seen["status"] in (431, "closed") and seen["server_cpu_s"] < 0.5, seen
    assert seen["rss_growth_mb"] < 50, seen
    # 60 KB of headers are still fine (the limit is 64 KiB by default)
    assert httpx.get(url + "/healthz", headers={"X-Big": "a" * 60_000}).status_code == 200
    # a head that dribbles in is cut off after header_timeout_s
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=SLOW_S + 10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
        t = time.monotonic()
        reply = s.recv(65536)
        assert attacks.status_of(reply) in (408, "closed") and time.monotonic() - t < SLOW_S + 3


def test_disconnects_are_not_server_errors(target):
    proc, url = target
    before = _log(proc).count("Traceback")
    seen = attacks.disconnect_mid_body(url, n=100)
    assert seen["new_500s"] == 0, seen
    log = _log(proc)
    assert log.count("Traceback") == before
    assert 'status="499"' in httpx.get(url + "/metrics").text


def test_log_lines_cannot_be_forged(target):
    proc, url = target
    assert attacks.log_forging(url)["status"] == 404
    time.sleep(0.2)
    log = _log(proc)
    assert not re.search(r"(?m)^2099-01-01 ERROR", log)
    assert "/x\\n2099-01-01 ERROR service: FORGED" in log


def test_small_refusals_name_their_field_and_limit(target):
    _, url = target
    seen = attacks.long_model_name(url)
    assert seen["status"] == 422 and seen["reply_bytes"] < 2000, seen
    assert attacks.text_plain(url)["status"] == 415
    r = httpx.post(url + "/generate", content=b'{"n": 1}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and r.json()["field"] == "content-type"
    for path in ("/interpolate", "/arithmetic", "/score"):
        assert (
            httpx.post(url + path, content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
        )
    seen = attacks.chunked_over_limit(url)
    body = json.loads(seen["body"])
    assert seen["status"] == 413 and body["field"] == "body" and body["limit"] == 8 * 1024 * 1024
    r = httpx.post(url + "/generate", json={"labels": []})
    assert r.status_code == 422 and r.json()["field"] == "labels"
    assert attacks.head_healthz(url)["status"] == 200


@pytest.mark.parametrize("labels", ["١,٢", "0_1", "+1", "1,-1", "1,,2", "99999999"])
def test_multipart_labels_are_as_strict_as_json(target, labels):
    _, url = target
    png = attacks.png_with_text(0, 0)
    files = [("images", ("a.png", png, "image/png")), ("images", ("b.png", png, "image/png"))]
    r = httpx.post(url + "/score", files=files, data={"labels": labels})
    assert r.status_code == 422 and r.json()["field"] == "labels", r.text
    assert httpx.post(url + "/score", files=files, data={"labels": "0, 1"}).status_code == 200
