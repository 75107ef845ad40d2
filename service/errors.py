"""Domain errors of the service, free of HTTP.

Why one module: handlers, the batcher and the registry raise these; exactly one place
(`service.plumbing.STATUS`, used by `error_response`) turns them into HTTP status codes and bodies.

    ServiceError
    ├── InvalidInput          (422: bad value or a limit exceeded; names `field` and `limit`)
    ├── PayloadTooLarge       (413: body over the upload limit, or more JSON values than any request needs)
    ├── UnsupportedMediaType  (415: a body whose Content-Type the endpoint does not read)
    ├── RequestTimeout        (408: the body did not arrive within body_timeout_s)
    ├── ModelNotFound         (404)
    ├── NotAcceptable         (406: `Accept` lists no format the endpoint produces)
    ├── ModelUnavailable      (503: the model exists but failed to load)
    ├── Overloaded            (503 + Retry-After: the queue is full, or too many requests in flight)
    ├── ShuttingDown          (503 + Retry-After: draining)
    ├── DeadlineExceeded      (504: expired while queued, never run)
    ├── ClientGone            (499: the client disconnected before its request ran)
    ├── InferenceFailed       (500: the model raised; only that batch fails)
    └── InternalError         (500: an unexpected exception; the detail names only the request ID)
    ModelLoadError            (not an HTTP error: a model directory that breaks the contract)
"""

from __future__ import annotations


class ServiceError(Exception):
    code = "error"

    def __init__(self, detail: str, *, field: str | None = None, limit: int | float | None = None):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.limit = limit


class InvalidInput(ServiceError):
    code = "invalid_input"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class RequestTimeout(ServiceError):
    code = "request_timeout"


class ModelNotFound(ServiceError):
    code = "model_not_found"


class NotAcceptable(ServiceError):
    code = "not_acceptable"


class ModelUnavailable(ServiceError):
    code = "model_unavailable"


class Overloaded(ServiceError):
    code = "overloaded"


class ShuttingDown(ServiceError):
    code = "shutting_down"


class DeadlineExceeded(ServiceError):
    code = "deadline_exceeded"


class ClientGone(ServiceError):
    code = "client_gone"


class InferenceFailed(ServiceError):
    code = "inference_failed"


class InternalError(ServiceError):
    code = "internal_error"


class ModelLoadError(Exception):
    """A model directory that does not follow docs/MODEL_FORMAT.md; the message names the file."""


def limit_error(field: str, limit: int | float, got: int | float, what: str = "") -> InvalidInput:
    """The standard 'over the limit' error: names the field, the limit and what was asked."""
    unit = f" {what}" if what else ""
    return InvalidInput(f"{field}: {got}{unit} exceeds the limit of {limit}", field=field, limit=limit)


def clip(value: object, n: int = 40) -> str:
    """`repr(value)` cut to about `n` characters: error details echo a prefix of the input, never all
    of it (a 100 KB model name makes a 100 KB error body and log line otherwise)."""
    text = repr(value)
    return text if len(text) <= n else f"{text[:n]}... ({len(text)} characters)"
