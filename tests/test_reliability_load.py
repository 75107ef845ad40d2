"""Overload, soak and SIGTERM drain against a real `python -m service` process (bench/soak.py).

CI versions, bounded (about 40 s in all); the long run is `make soak` (docs/RELIABILITY.md).
"""

from __future__ import annotations

import os

import pytest

from bench import soak

pytestmark = pytest.mark.slow
SOAK_S = float(os.environ.get("GANSERVE_SOAK_S", "20"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return soak.tiny_models(tmp_path_factory.mktemp("soak-models"))


def test_overload_keeps_the_queue_bounded_rejects_with_retry_after_and_meets_deadlines(models):
    r = soak.overload(models, 6.0, 32, 16, max_queue_rows=64, request_timeout_s=2.0, inference_threads=1)
    brief = {k: v for k, v in r.items() if k != "samples"}
    assert r["demand_x_queue"] >= 8
    assert set(r["statuses"]) <= {"200", "503"}, brief
    assert r["statuses"]["503"] > 0 and r["statuses"]["200"] > 0 and r["missing_retry_after"] == 0, brief
    assert r["client_error_count"] == 0, brief
    assert r["queue_max"] <= 64 and r["queue_end"] == 0, brief
    # the deadline bounds the queue wait (an expired request is a 504, never run); the client also
    # waits for the call, PNG encoding and its own turn on a shared 2-core CI box: generous slack
    assert r["latency_p99_s"] <= 2.0 + 1.0 and r["latency_max_s"] <= 2.0 + 5.0, brief


def test_soak_no_errors_flat_memory_no_fd_or_queue_growth(models):
    r = soak.soak(models, SOAK_S, 16, 8, warmup_s=SOAK_S / 4, max_queue_rows=128)
    brief = {k: v for k, v in r.items() if k != "samples"}
    assert set(r["statuses"]) <= {"200", "503"} and r["client_error_count"] == 0, brief
    assert r["statuses"]["200"] > 100, brief
    assert r["rss_growth_pct"] < 5.0, brief
    assert r["fds_end"] <= r["fds_warm"] + 2 and r["queue_end"] == 0, brief
    assert r["ok"], brief


def test_sigterm_under_load_drains_in_flight_requests_and_exits_0(models):
    r = soak.drain(models)
    assert r["exit_code"] == 0, r
    assert r["statuses"] == [200] * r["clients"] and r["completed_after_sigterm"] == r["clients"], r
