"""Hostile clients against a real `python -m service`: what each attack costs the server.

Each attack runs against a fresh server process (tiny models from tests/modelkit.py) and reports
the status it got, its wall time, the server's CPU seconds (utime + stime from /proc) and RSS growth
during it, and the worst `/healthz` latency seen by a probe that polls every 20 ms meanwhile (its
median before the attack subtracted). tests/test_attacks.py asserts on these figures;
docs/RELIABILITY.md ("Attacks") tabulates them before and after the intake's hardening.

    python -m bench.attacks [--only NAME ...] [--json OUT]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import socket
import statistics
import struct
import tempfile
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.soak import rss_kib, server, tiny_models

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


class HealthProbe:
    """Polls /healthz every 20 ms on its own connection; `worst_ms` is the slowest reply."""

    def __init__(self, url: str):
        self.url, self.times, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        with httpx.Client(timeout=60) as c:
            while not self.stop.is_set():
                t = time.perf_counter()
                with contextlib.suppress(httpx.HTTPError):
                    c.get(self.url + "/healthz")
                self.times.append((time.perf_counter() - t) * 1000)
                self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def raw(url: str, data: bytes, *, read: bool = True, timeout: float = 60) -> bytes:
    """Send `data` on a fresh socket; the reply's bytes until the server closes or `timeout`."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.create_connection((host, port), timeout=timeout) as s:
        with contextlib.suppress(OSError):
            s.sendall(data)
        if not read:
            return b""
        out = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and _complete(out):
                    break
        return out


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    return m is not None and len(body) >= int(m.group(1))


def status_of(reply: bytes) -> int | str:
    m = re.match(rb"HTTP/1\.1 (\d+)", reply)
    return int(m.group(1)) if m else "closed"


def post(path: str, body: bytes, ctype: bytes = b"application/json", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: " + ctype + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def array(item: bytes, n: int) -> bytes:
    return b"[" + (item + b",") * (n - 1) + item + b"]"


def png_with_text(chunks: int, size: int) -> bytes:
    """A valid 8x8 grey PNG carrying `chunks` zTXt chunks that each inflate to `size` bytes."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ztxt = chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * size, 9))
    raw_rows = b"".join(b"\x00" + b"\x80" * 8 for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
        + ztxt * chunks
        + chunk(b"IDAT", zlib.compress(raw_rows))
        + chunk(b"IEND", b"")
    )


def count_500(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(
        float(v) for v in re.findall(r'^ganserve_requests_total\{[^}]*status="500"[^}]*\} (\S+)$', text, re.M)
    )


# --- the attacks: each takes the base URL and returns what it saw --------------------------------


def big_invalid_list(url, mb=8):
    """/interpolate with `mb` MB of empty keyframes (each one invalid)."""
    n = mb * 1024 * 1024 // 3 - 10
    r = raw(url, post("/interpolate", b'{"keyframes":' + array(b"{}", n) + b"}"))
    return {"status": status_of(r), "body": r.partition(b"\r\n\r\n")[2][:300].decode("latin-1")}


def big_invalid_list_1mb(url):
    return big_invalid_list(url, 1)


def big_latents(url):
    """/arithmetic with 8 MB of latents of the wrong length (valid JSON numbers)."""
    body = b'{"terms":[{"latents":' + array(array(b"0.5", 4000), 520) + b"}]}"
    return {"status": status_of(raw(url, post("/arithmetic", body)))}


def many_seeds(url):
    """/generate with 2 million seeds (8 MB)."""
    body = b'{"seeds":' + array(b"7", 4_000_000) + b"}"
    return {"status": status_of(raw(url, post("/generate", body)))}


def png_text_chunks(url):
    """/score with 20 PNGs, each with 63 zTXt chunks of 1 MB inflated."""
    img = base64.b64encode(png_with_text(63, 1 << 20)).decode()
    body = json.dumps({"images": [img] * 20}).encode()
    return {"status": status_of(raw(url, post("/score", body)))}


def huge_header(url, mb=16):
    """A 16 MB request header on GET /healthz."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (mb << 20) + b"\r\n\r\n"
    return {"status": status_of(raw(url, head))}


def stalled_uploads(url, n=300):
    """`n` connections send headers and 5 of 16 body bytes and stall; meanwhile 20 normal requests."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(post("/generate", b'{"n": 1, "seed":1}')[:-14])
        socks.append(s)
    time.sleep(0.5)
    statuses = []
    with httpx.Client(timeout=30) as c:
        for i in range(20):
            statuses.append(c.post(url + "/generate", json={"n": 1, "seed": i}).status_code)
    for s in socks:
        s.close()
    return {"status": max(set(statuses), key=statuses.count), "normal_statuses": sorted(set(statuses))}


def disconnect_mid_body(url, n=200):
    """`n` clients send half a body and close: no 500s counted, no traceback logged."""
    before = count_500(url)
    host, port = urlsplit(url).hostname, urlsplit(url).port
    for _ in range(n):
        with socket.create_connection((host, port)) as s:
            s.sendall(post("/generate", b'{"n": 1, "seed": 1}' + b" " * 100)[:-50])
    time.sleep(1.0)
    return {"status": "closed", "new_500s": count_500(url) - before}


def log_forging(url):
    """A path with an encoded newline: the log must not get a line of the client's making."""
    r = raw(url, b"GET /x%0a2099-01-01%20ERROR%20service:%20FORGED HTTP/1.1\r\nHost: x\r\n\r\n")
    return {"status": status_of(r)}


def long_model_name(url):
    """A 100 KB model name: the 422 echoes at most a prefix of it."""
    r = raw(url, post("/generate", json.dumps({"model": "m" * 100_000}).encode()))
    return {"status": status_of(r), "reply_bytes": len(r)}


def text_plain(url):
    """A JSON body sent as text/plain (a cross-site form or fetch sends that without a preflight)."""
    return {"status": status_of(raw(url, post("/generate", b'{"n": 1}', b"text/plain")))}


def chunked_over_limit(url):
    """A chunked body over the upload limit: 413 naming the field and the limit."""
    chunk = b"a" * 65536
    body = (b"10000\r\n" + chunk + b"\r\n") * 130 + b"0\r\n\r\n"
    head = (
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    r = raw(url, head + body)
    return {"status": status_of(r), "body": r.partition(b"\r\n\r\n")[2][:300].decode("latin-1")}


def head_healthz(url):
    return {"status": status_of(raw(url, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))}


ATTACKS = {
    f.__name__: f
    for f in (
        big_invalid_list,
        big_invalid_list_1mb,
        big_latents,
        many_seeds,
        png_text_chunks,
        huge_header,
        stalled_uploads,
        disconnect_mid_body,
        log_forging,
        long_model_name,
        text_plain,
        chunked_over_limit,
        head_healthz,
    )
}


def measure(url: str, pid: int, attack) -> dict:
    """Run `attack` once against the server `pid`, with the /healthz probe going."""
    with HealthProbe(url) as probe:
        time.sleep(0.3)
        base_ms = statistics.median(probe.times) if probe.times else 0.0
        n0 = len(probe.times)
        rss0, cpu0, t0 = rss_kib(pid), cpu_s(pid), time.perf_counter()
        seen = attack(url)
        wall = time.perf_counter() - t0
        cpu, rss1 = cpu_s(pid) - cpu0, rss_kib(pid)
        time.sleep(0.2)
    during = probe.times[n0:] or [base_ms]
    return seen | {
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu, 3),
        "rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        "healthz_extra_ms": round(max(during) - base_ms, 1),
    }


def run(names: list[str], models: Path, **settings) -> dict[str, dict]:
    out = {}
    for name in names:
        with server(models, **settings) as (proc, url):
            out[name] = measure(url, proc.pid, ATTACKS[name])
            proc.log.seek(0)
            log = proc.log.read().decode(errors="replace")
            out[name]["tracebacks"] = log.count("Traceback")
            out[name]["forged_lines"] = len(re.findall(r"(?m)^2099-01-01 ERROR", log))
        print(name, json.dumps(out[name]), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), help="attacks to run (default all)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        models = tiny_models(Path(tmp))
        results = run(args.only or list(ATTACKS), models, log_level="info")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
