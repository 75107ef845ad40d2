"""All Prometheus metrics of the service, declared once (prefix `ganserve_`, units in names).

Why one module: a Grafana dashboard is written against these exact names; every other module
imports the objects from here. Stages of a request each have their own metric: admission
(`rejected_total`: the in-flight bound and draining in the middleware, a full queue in the
batcher), queue (`queue_depth`, `queue_seconds`), inference (`batch_size`, `inference_seconds`),
HTTP (`requests_total`, `request_seconds`). Every metric with a `model` label has a `version`
label too (the model directory's version, "1" for the flat layout), so a rollout shows both.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

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
QUEUE_DEPTH = Gauge("ganserve_queue_depth", "Rows waiting in the batcher queue", ["model", "version"])
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
    "ganserve_model_info", "Served models, every version (value 1)", ["model", "version", "provider", "kind"]
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
