"""The benchmark's load generator against a real uvicorn (bench/loadgen.py): what it counts is right.

The figures in docs/BENCHMARKS.md are only as good as this counting, so it is checked on a tiny
model: completions, statuses, latencies, the batch size read from /metrics, and the open loop's
schedule.
"""

from __future__ import annotations

import os

from bench import loadgen


def test_closed_loop_counts_completions_latency_and_batches(live_server):
    r = loadgen.run(
        loadgen.closed_loop(live_server, "/generate", b'{"n": 2}', 2, 4, 1.0, 0.3, server_pid=os.getpid())
    )
    assert set(r.statuses) == {"200"} and r.ok > 10
    assert abs(r.requests_per_s - r.ok / 1.0) < 1e-9 and r.images_per_s == 2 * r.requests_per_s
    assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms <= r.max_ms < 5000
    assert 2 <= r.mean_batch_size <= 8  # 4 connections x 2 rows at most
    assert r.loadgen_cpu_cores > 0 and r.server_cpu_cores > 0


def test_open_loop_keeps_its_schedule_and_sees_4xx(live_server):
    r = loadgen.run(loadgen.open_loop(live_server, "/generate", b'{"n": 0}', 1, 50.0, 1.0, 0.2))
    assert set(r.statuses) == {"422"} and r.ok == 0  # every arrival in the window, none accepted
    assert 40 <= sum(r.statuses.values()) <= 60 and r.p50_ms is None


def test_split_spreads_connections_over_processes():
    assert loadgen._split(64, 4) == [16] * 4
    assert loadgen._split(5, 2) == [3, 2] and sum(loadgen._split(7, 3)) == 7


def test_closed_loop_over_several_processes_merges_their_counts(live_server):
    r = loadgen.run(
        loadgen.closed_loop(
            live_server, "/generate", b'{"n": 2}', 2, 5, 1.0, 0.3, server_pid=os.getpid(), procs=2
        )
    )
    assert r.procs == 2 and r.max_connections == 5  # 3 + 2 connections
    assert set(r.statuses) == {"200"} and r.ok > 10
    assert abs(r.requests_per_s - r.ok / 1.0) < 1e-9 and r.images_per_s == 2 * r.requests_per_s
    assert 0 < r.p50_ms <= r.p95_ms <= r.p99_ms <= r.max_ms < 5000
    assert 2 <= r.mean_batch_size <= 10
    # the children's CPU is counted (this process only sleeps while they send)
    assert r.loadgen_cpu_cores > 0


def test_open_loop_over_several_processes_keeps_the_schedule(live_server):
    r = loadgen.run(loadgen.open_loop(live_server, "/generate", b'{"n": 0}', 1, 60.0, 1.0, 0.2, procs=3))
    # three interleaved schedules of 20/s: 60 arrivals in the 1 s window, every one counted once
    assert r.procs == 3 and set(r.statuses) == {"422"}
    assert 57 <= sum(r.statuses.values()) <= 63


def test_raw_accept_header_reaches_the_server(live_server):
    """The raw rows send `Accept: application/x-npy`; the service either produces it or says 406,
    or ignores it (until raw replies exist): whichever, the load generator counts that status."""
    from bench import suite

    note = suite.raw_unavailable(live_server, "n1raw")
    r = loadgen.run(
        loadgen.closed_loop(
            live_server, "/generate", b'{"n": 1}', 1, 2, 0.5, 0.1, headers={"accept": suite.NPY}
        )
    )
    if note and "406" in note:
        assert set(r.statuses) == {"406"}
    else:
        assert set(r.statuses) == {"200"}
