"""A lean async httpx load generator: closed loop (fixed concurrency) and open loop (fixed rate).

Lean on purpose (it shares the 2 cores with the server, see ../shared/guide/MEASUREMENTS.md):
one httpx transport per connection, used directly (a shared client's pool costs milliseconds of
CPU per request at high concurrency; the client's per-request machinery ~0.4 ms more), requests
built once, uvloop, responses not parsed (status, length and
`Retry-After` only). Its own CPU use (process time over wall time) is reported with every run.

Server-side figures come from outside the request path: the mean batch size from the delta of
`ganserve_batch_size_{sum,count}` on `/metrics`, and server CPU from `/proc/<pid>/stat` (utime +
stime of the server process and all its descendants, e.g. uvicorn workers).

Closed loop: `concurrency` workers send back to back; latency = send -> last byte.
Open loop: arrivals every 1/rate s on a fixed schedule; latency counts from the scheduled time
(no coordinated omission); a request that finds no idle connection opens a new one.
Either can run as several processes (`procs`), so that on a many-core host the generator is not
the limit; the figures are merged as if one process had sent everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

CLK_TCK = os.sysconf("SC_CLK_TCK")
# every timestamp: uvloop's loop.time() ticks in whole milliseconds, too coarse for a 2 ms request
clock = time.perf_counter


# --- server-side probes ----------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def proc_cpu_s(pid: int | None) -> float:
    """utime + stime (seconds) of `pid` and all its live descendants."""
    if pid is None:
        return 0.0
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / CLK_TCK


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine (all cores) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK  # minus idle and iowait


_METRIC = re.compile(r"^(ganserve_batch_size_(?:sum|count))\{([^}]*)\}\s+(\S+)$", re.M)


async def batch_stats(base_url: str) -> dict[str, float]:
    """{'sum': rows, 'count': calls} of the generator batchers (all models) from /metrics."""
    out = {"sum": 0.0, "count": 0.0}
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=30, verify=_SSL) as c:
            text = (await c.get("/metrics")).text
    except httpx.HTTPError:
        return {"sum": float("nan"), "count": float("nan")}  # a run must not die on a scrape
    for name, labels, value in _METRIC.findall(text):
        if ":" in labels:  # discriminator / classifier batchers are labelled "model:role"
            continue
        out["sum" if name.endswith("sum") else "count"] += float(value)
    return out


# --- results -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    mode: str
    path: str
    images_per_request: int
    concurrency: int | None = None
    rate: float | None = None
    duration_s: float = 0.0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    requests_per_s: float = 0.0
    images_per_s: float = 0.0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_batch_size: float | None = None
    server_cpu_cores: float | None = None
    loadgen_cpu_cores: float = 0.0
    other_cpu_cores: float | None = None  # everything else on the machine during the window
    retry_after_missing: int = 0
    rejected_p99_ms: float | None = None
    max_connections: int = 0
    procs: int = 1  # load-generator processes

    @property
    def errors(self) -> int:
        return sum(v for k, v in self.statuses.items() if k != "200")


def _pct(lat: list[float], q: float) -> float | None:
    return float(np.percentile(lat, q) * 1000) if lat else None


class _Recorder:
    """Outcomes inside the measured window [t_start, t_end); `t_begin`: when sending began."""

    def __init__(self, t_start: float, t_end: float, by_start: bool, t_begin: float | None = None):
        self.t_start, self.t_end, self.by_start = t_start, t_end, by_start
        self.t_begin = t_start if t_begin is None else t_begin
        self.ok_lat: list[float] = []
        self.rej_lat: list[float] = []
        self.statuses: Counter = Counter()
        self.retry_after_missing = 0

    def add(self, t0: float, t1: float, status: str, retry_after: bool = True) -> None:
        t = t0 if self.by_start else t1  # open loop: by arrival; closed loop: by completion
        if not self.t_start <= t < self.t_end:
            return  # warm-up or tail: outside the measured window
        self.statuses[status] += 1
        if status == "200":
            self.ok_lat.append(t1 - t0)
        else:
            self.rej_lat.append(t1 - t0)
            if status == "503" and not retry_after:
                self.retry_after_missing += 1

    def state(self) -> dict:
        return {
            "ok_lat": self.ok_lat,
            "rej_lat": self.rej_lat,
            "statuses": dict(self.statuses),
            "retry_after_missing": self.retry_after_missing,
        }

    def merge(self, state: dict) -> None:
        """Add another process's outcomes (same window)."""
        self.ok_lat.extend(state["ok_lat"])
        self.rej_lat.extend(state["rej_lat"])
        self.statuses.update(state["statuses"])
        self.retry_after_missing += state["retry_after_missing"]


async def _send(conn: httpx.AsyncHTTPTransport, request: httpx.Request) -> tuple[str, bool]:
    try:
        r = await conn.handle_async_request(request)
        await r.aread()
        await r.aclose()
        return str(r.status_code), "retry-after" in r.headers
    except httpx.TimeoutException:
        return "timeout", False
    except httpx.HTTPError as exc:
        return type(exc).__name__, False


# httpx builds (and loads certifi into) a new SSLContext per transport unless given one: ~10-160 ms
# of CPU each here, which made the first seconds of a 64-connection run measure nothing else.
_SSL = ssl.create_default_context()


def _conn() -> httpx.AsyncHTTPTransport:
    """One keep-alive connection. The transport alone, without AsyncClient's per-request
    machinery (URL merging, cookies, auth and redirect flow, event hooks): measured here at c=1,
    0.3-0.5 ms less client CPU per request, which on 2 shared cores goes back to the server."""
    one = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    return httpx.AsyncHTTPTransport(verify=_SSL, limits=one)


def _request(url: str, body: bytes, timeout: float, headers: dict[str, str] | None = None) -> httpx.Request:
    """Built once per connection and re-sent (its byte stream re-reads)."""
    return httpx.Request(
        "POST",
        url,
        content=body,
        headers={"content-type": "application/json", **(headers or {})},
        extensions={"timeout": httpx.Timeout(timeout).as_dict()},
    )


def run(coro):
    """Run a load coroutine on uvloop when installed (the server's loop too): less CPU per request."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


# --- drivers: what one process sends (built before the clock starts, run against a _Recorder) ---


def _closed_driver(url: str, body: bytes, concurrency: int, timeout: float, headers=None):
    """`concurrency` connections, each sending back to back until the window ends."""
    conns = [_conn() for _ in range(concurrency)]

    async def driver(rec: _Recorder) -> dict:
        async def worker(conn: httpx.AsyncHTTPTransport) -> None:
            request = _request(url, body, timeout, headers)
            while True:
                t0 = clock()
                if t0 >= rec.t_end:
                    return
                status, ra = await _send(conn, request)
                rec.add(t0, clock(), status, ra)

        try:
            await asyncio.gather(*(worker(c) for c in conns))
        finally:
            await asyncio.gather(*(c.aclose() for c in conns))
        return {"connections": concurrency}

    return driver


def _open_driver(
    url: str,
    body: bytes,
    rate: float,
    timeout: float,
    max_connections: int,
    headers=None,
    offset: float = 0.0,
):
    """Arrivals at `t_begin + offset + k / rate`; each takes an idle connection or opens one."""
    prewarm = [_conn() for _ in range(min(64, max_connections))]
    request = _request(url, body, timeout, headers)  # re-sent on every connection

    async def driver(rec: _Recorder) -> dict:
        idle: list[httpx.AsyncHTTPTransport] = list(prewarm)
        all_clients: list[httpx.AsyncHTTPTransport] = list(prewarm)
        tasks: set[asyncio.Task] = set()

        async def one(t_sched: float) -> None:
            client = idle.pop() if idle else None
            if client is None:
                if len(all_clients) >= max_connections:
                    rec.add(t_sched, clock(), "client_saturated")
                    return
                client = _conn()
                all_clients.append(client)
            status, ra = await _send(client, request)
            rec.add(t_sched, clock(), status, ra)
            idle.append(client)

        interval = 1.0 / rate
        t_sched = rec.t_begin + offset
        while t_sched < rec.t_end:
            delay = t_sched - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            # send every arrival that is due (the loop may wake late under load)
            while t_sched <= clock() and t_sched < rec.t_end:
                task = asyncio.ensure_future(one(t_sched))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                t_sched += interval
        if tasks:
            await asyncio.wait(list(tasks), timeout=timeout + 5)
        await asyncio.gather(*(c.aclose() for c in all_clients))
        return {"connections": len(all_clients)}

    return driver


_DRIVERS = {"closed": _closed_driver, "open": _open_driver}


# --- several load-generator processes -----------------------------------------------------------
# One Python process tops out near one core (~1,000-1,500 small requests/s here): on a many-core
# GPU host it, not the server, was the limit. With `procs` > 1 each child process runs its share
# of the connections (closed loop) or of the arrivals (open loop, schedules interleaved) against
# the same window; the parent only starts them, reads the server-side probes, and merges. The
# window's times are `time.perf_counter` values: CLOCK_MONOTONIC on Linux, the same in every
# process. Children are plain `python -c` subprocesses speaking one JSON line at a time on
# stdin/stdout (multiprocessing's spawn would re-run the caller's main script in each child).

_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from bench.loadgen import _child_main; _child_main()"


def _child_main() -> None:
    """A load-generator process: read its driver's arguments, say ready, run the window on 'go'
    (the window's times), write its outcomes."""
    spec = json.loads(sys.stdin.readline())
    mode, kwargs = spec["mode"], spec["kwargs"]
    kwargs["body"] = kwargs["body"].encode("latin-1")

    async def main() -> dict:
        driver = _DRIVERS[mode](**kwargs)
        print("ready", flush=True)
        t_begin, t_start, t_end = json.loads(sys.stdin.readline())  # nothing else runs on this loop yet
        rec = _Recorder(t_start, t_end, by_start=mode == "open", t_begin=t_begin)
        cpu: dict[str, float] = {}

        async def mark(name: str, at: float) -> None:
            await asyncio.sleep(max(0.0, at - clock()))
            cpu[name] = time.process_time()

        marks = [asyncio.ensure_future(mark("start", t_start)), asyncio.ensure_future(mark("end", t_end))]
        stats = await driver(rec)
        await asyncio.gather(*marks)
        return rec.state() | {"stats": stats, "cpu_s": cpu["end"] - cpu["start"]}

    out = run(main())
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


def _split(total: int, parts: int) -> list[int]:
    """`total` connections over `parts` processes, as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class _Children:
    """Load-generator child processes, started and ready (connections built) before the clock."""

    def __init__(self, mode: str, kwargs_list: list[dict]):
        root = str(Path(__file__).resolve().parents[1])
        self.procs: list[subprocess.Popen] = []
        try:
            for kwargs in kwargs_list:
                p = subprocess.Popen(
                    [sys.executable, "-c", _CHILD, root],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                self.procs.append(p)
                spec = {"mode": mode, "kwargs": kwargs | {"body": kwargs["body"].decode("latin-1")}}
                self._send(p, spec)
            for p in self.procs:
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"a load-generator process did not start (exit status {p.wait()})")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _send(p: subprocess.Popen, obj) -> None:
        p.stdin.write(json.dumps(obj) + "\n")
        p.stdin.flush()

    async def driver(self, rec: _Recorder) -> dict:
        for p in self.procs:
            self._send(p, [rec.t_begin, rec.t_start, rec.t_end])

        def collect() -> list[dict]:
            lines = [p.stdout.readline() for p in self.procs]
            if not all(lines):
                raise RuntimeError("a load-generator process died during the run")
            return [json.loads(line) for line in lines]

        results = await asyncio.to_thread(collect)
        for r in results:
            rec.merge(r)
        return {
            "connections": sum(r["stats"]["connections"] for r in results),
            "loadgen_cpu_s": sum(r["cpu_s"] for r in results),
        }

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()  # a child still waiting for 'go' reads EOF and exits
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()


# --- runs ---------------------------------------------------------------------------------------


async def _run(
    base_url: str,
    path: str,
    images: int,
    duration: float,
    warmup: float,
    server_pid: int | None,
    driver,
    mode: str,
    concurrency: int | None,
    rate: float | None,
    procs: int = 1,
) -> RunResult:
    b0 = await batch_stats(base_url)
    now = clock()
    rec = _Recorder(now + warmup, now + warmup + duration, by_start=mode == "open", t_begin=now)
    cpu_marks: dict[str, tuple[float, float, float]] = {}

    async def mark(name: str, at: float) -> None:
        await asyncio.sleep(max(0.0, at - clock()))
        cpu_marks[name] = (proc_cpu_s(server_pid), time.process_time(), machine_busy_s())

    marks = [
        asyncio.ensure_future(mark("start", rec.t_start)),
        asyncio.ensure_future(mark("end", rec.t_end)),
    ]
    stats = await driver(rec)
    await asyncio.gather(*marks)
    b1 = await batch_stats(base_url)
    (s0, l0, m0), (s1, l1, m1) = cpu_marks["start"], cpu_marks["end"]
    gen_s = (l1 - l0) + stats.get("loadgen_cpu_s", 0.0)  # this process and its children
    ok = rec.statuses.get("200", 0)
    calls = b1["count"] - b0["count"]
    return RunResult(
        mode=mode,
        path=path,
        images_per_request=images,
        concurrency=concurrency,
        rate=rate,
        duration_s=duration,
        ok=ok,
        statuses=dict(sorted(rec.statuses.items())),
        requests_per_s=ok / duration,
        images_per_s=ok * images / duration,
        p50_ms=_pct(rec.ok_lat, 50),
        p95_ms=_pct(rec.ok_lat, 95),
        p99_ms=_pct(rec.ok_lat, 99),
        max_ms=max(rec.ok_lat) * 1000 if rec.ok_lat else None,
        mean_batch_size=(b1["sum"] - b0["sum"]) / calls if calls and calls == calls else None,
        server_cpu_cores=(s1 - s0) / duration if server_pid else None,
        loadgen_cpu_cores=gen_s / duration,
        other_cpu_cores=max(0.0, (m1 - m0) - (s1 - s0) - gen_s) / duration if server_pid else None,
        retry_after_missing=rec.retry_after_missing,
        rejected_p99_ms=_pct(rec.rej_lat, 99),
        max_connections=stats.get("connections", concurrency or 0),
        procs=procs,
    )


async def _run_procs(mode: str, kwargs_list: list[dict], **run_kw) -> RunResult:
    children = await asyncio.to_thread(_Children, mode, kwargs_list)  # started before the clock
    try:
        return await _run(driver=children.driver, mode=mode, procs=len(kwargs_list), **run_kw)
    finally:
        await asyncio.to_thread(children.close)


async def closed_loop(
    base_url: str,
    path: str,
    body: bytes,
    images: int,
    concurrency: int,
    duration: float = 5.0,
    warmup: float = 1.0,
    server_pid: int | None = None,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
    procs: int = 1,
) -> RunResult:
    """`concurrency` connections back to back; with `procs` > 1 they are split over that many
    processes (at most one process per connection)."""
    run_kw = dict(
        base_url=base_url,
        path=path,
        images=images,
        duration=duration,
        warmup=warmup,
        server_pid=server_pid,
        concurrency=concurrency,
        rate=None,
    )
    url = base_url + path
    procs = max(1, min(procs, concurrency))
    if procs == 1:
        driver = _closed_driver(url, body, concurrency, timeout, headers)  # before the clock starts
        return await _run(driver=driver, mode="closed", **run_kw)
    kwargs_list = [
        {"url": url, "body": body, "concurrency": c, "timeout": timeout, "headers": headers}
        for c in _split(concurrency, procs)
    ]
    return await _run_procs("closed", kwargs_list, **run_kw)


async def open_loop(
    base_url: str,
    path: str,
    body: bytes,
    images: int,
    rate: float,
    duration: float = 5.0,
    warmup: float = 1.0,
    server_pid: int | None = None,
    timeout: float = 30.0,
    max_connections: int = 4096,  # under the kernel's somaxconn (4096 here) and the fd limit
    headers: dict[str, str] | None = None,
    procs: int = 1,
) -> RunResult:
    """Arrivals at `rate`/s; with `procs` > 1 process i sends arrivals i, i + procs, ... (each at
    rate / procs, its schedule shifted by i / rate) and opens at most max_connections / procs."""
    run_kw = dict(
        base_url=base_url,
        path=path,
        images=images,
        duration=duration,
        warmup=warmup,
        server_pid=server_pid,
        concurrency=None,
        rate=rate,
    )
    url = base_url + path
    procs = max(1, procs)
    if procs == 1:
        driver = _open_driver(url, body, rate, timeout, max_connections, headers)
        return await _run(driver=driver, mode="open", **run_kw)
    kwargs_list = [
        {
            "url": url,
            "body": body,
            "rate": rate / procs,
            "timeout": timeout,
            "max_connections": max(1, max_connections // procs),
            "headers": headers,
            "offset": i / rate,
        }
        for i in range(procs)
    ]
    return await _run_procs("open", kwargs_list, **run_kw)
