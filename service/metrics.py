"""All Prometheus metrics of the service, declared once (prefix `ganserve_`, units in names).

Why one module: a Grafana dashboard is written against these exact names; every other module
imports the objects from here. Stages of a request each have their own metric: admission
(`rejected_total`: the in-flight bound and draining in the middleware, a full queue in the
batcher), queue (`queue_depth`, `queue_seconds`), inference (`batch_size`, `inference_seconds`),
HTTP (`requests_total`, `request_seconds`). Every metric with a `model` label has a `version`
label too (the model directory's version, "1" for the flat layout), so a rollout shows both.

Several worker processes (`--workers N`) share one view through prometheus-client's multiprocess
mode: `python -m service` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers
start, each worker writes its values there, and `/metrics` in any worker reads them all: counters
and histograms summed, gauges by their `multiprocess_mode` (queue depth summed over live workers,
model info the max, so 1 and not N). One process keeps the ordinary in-memory registry.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client when it is imported

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "ganserve_requests_total",
    "HTTP requests by endpoint, method and status",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "ganserve_request_seconds", "HTTP request latency in seconds", ["endpoint"], buckets=_LATENCY_BUCKETS
)
IMAGES_GENERATED = Counter(
    "ganserve_images_generated_total", "Images produced by a generator", ["model", "version"]
)
QUEUE_DEPTH = Gauge(
    "ganserve_queue_depth",
    "Rows waiting in the batcher queue",
    ["model", "version"],
    multiprocess_mode="livesum",
)
QUEUE_SECONDS = Histogram(
    "ganserve_queue_seconds",
    "Seconds a request waited before its inference call",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "ganserve_batch_size", "Rows per inference call", ["model", "version"], buckets=_BATCH_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    "ganserve_inference_seconds",
    "Seconds per inference call (with output encoding)",
    ["model", "version"],
    buckets=_LATENCY_BUCKETS,
)
REJECTED = Counter(
    "ganserve_rejected_total",
    "Requests rejected or dropped, by reason: in a model's batcher overloaded (queue full), deadline, "
    'cancelled; at admission, before a body names a model (model="", version=""), inflight and shutting_down',
    ["model", "version", "reason"],
)
# Admission (service.app's middleware) answers before any body is read: no model to name.
ADMISSION_REJECTED = {reason: REJECTED.labels("", "", reason) for reason in ("inflight", "shutting_down")}
MODEL_INFO = Gauge(
    "ganserve_model_info",
    "Served models, every version (value 1)",
    ["model", "version", "provider", "kind"],
    multiprocess_mode="livemax",
)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


if multiprocess_dir():
    # a worker that exits (restart, scale-down) leaves its counters; its live gauges go with it
    atexit.register(multiprocess.mark_process_dead, os.getpid())


@contextlib.contextmanager
def shared_by_workers(workers: int):
    """Around the server's run: with several workers, a fresh PROMETHEUS_MULTIPROC_DIR that they
    inherit, removed when they are gone (one already set is used and kept, as under gunicorn)."""
    if workers <= 1 or multiprocess_dir():
        yield
        return
    path = tempfile.mkdtemp(prefix="ganserve-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type: this process's, or every worker's summed."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
