"""`python -m service` (and the `ganserve-server` console script): run the service with uvicorn.

Flags override the matching GANSERVE_* environment variables; they are passed on through the
environment so that every uvicorn worker process builds the same Settings. A model root with no
loadable model stops the process here, before it binds a port (exit status 1), unless
`--allow-empty`: a service that looks healthy while serving nothing is worse than one that fails.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .protocol import server_options
from .settings import Settings

EMPTY_HELP = """\
error: no model to serve: {problem}.
Give a model repository (one sub-directory per model: model.json and its ONNX files, as
`python -m training export` writes them) with --models DIR or GANSERVE_MODELS_DIR=DIR, or unset both
to serve the models shipped with ganserve. To start empty on purpose and add models later, pass
--allow-empty or set GANSERVE_ALLOW_EMPTY=1."""


def models_problem(settings: Settings) -> str | None:
    """Why the service would start with no model (None when at least one loads).

    The registry decides, with the checks it runs at start (card, checksums, ONNX signatures), but
    without warm-up or the solo session: a fraction of a second for the shipped models."""
    root = Path(settings.models_dir)
    if not root.is_dir():
        return f"the model directory {root} does not exist"
    from .registry import Registry  # imports ONNX Runtime: only when the check runs

    registry = Registry(settings.model_copy(update={"warmup": False, "solo_intra_op_threads": 1}))
    quiet = logging.getLogger("service.registry")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the real load logs the same lines again
    try:
        registry.load_all()
    finally:
        quiet.setLevel(level)
    asyncio.run(registry.close(0.0))  # never started: frees the sessions' thread pools at once
    if registry.models:
        return None
    if registry.failed:
        reasons = "".join(f"\n  {name}: {why}" for name, why in sorted(registry.failed.items()))
        return f"no model directory in {root} loads:{reasons}"
    return f"the model directory {root} holds no model directory"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ganserve-server", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--host", help="bind address (default 127.0.0.1; GANSERVE_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000; GANSERVE_PORT)")
    parser.add_argument(
        "--models",
        metavar="DIR",
        help="model repository, one sub-directory per model (default: the models shipped with the "
        "package, or the repository's models/ in a clone; GANSERVE_MODELS_DIR)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        default=None,
        help="start even when no model loads, e.g. a repository filled later (GANSERVE_ALLOW_EMPTY)",
    )
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1; GANSERVE_WORKERS)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    for flag, env in (
        ("host", "HOST"),
        ("port", "PORT"),
        ("models", "MODELS_DIR"),
        ("allow_empty", "ALLOW_EMPTY"),
        ("workers", "WORKERS"),
        ("log_level", "LOG_LEVEL"),
    ):
        value = getattr(args, flag)
        if value is not None:
            os.environ[f"GANSERVE_{env}"] = str(value)
    settings = Settings()  # validates everything once, before any worker starts
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.allow_empty and (problem := models_problem(settings)):
        sys.exit(EMPTY_HELP.format(problem=problem))

    import uvicorn

    from .metrics import shared_by_workers

    # uvicorn drains on SIGTERM, then re-raises the signal with the previous handler restored:
    # this handler turns that into a clean exit 0 after the drain (orchestrators read it as success).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with shared_by_workers(settings.workers):  # one /metrics view over every worker
        uvicorn.run(
            "service.app:create_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=settings.drain_timeout_s + 5,
            **server_options(settings),  # header size and time limits (service/protocol.py)
        )


if __name__ == "__main__":
    main()
