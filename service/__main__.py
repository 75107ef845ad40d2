"""`python -m service` (and the `ganserve-server` console script): run the service with uvicorn.

Flags override the matching GANSERVE_* environment variables; they are passed on through the
environment so that every uvicorn worker process builds the same Settings.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="bind address (default 127.0.0.1; GANSERVE_HOST)")
    parser.add_argument("--port", type=int, help="port (default 8000; GANSERVE_PORT)")
    parser.add_argument(
        "--models", metavar="DIR", help="model directories root (default: the repository's models/)"
    )
    parser.add_argument("--workers", type=int, help="uvicorn worker processes (default 1; GANSERVE_WORKERS)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)
    for flag, env in (
        ("host", "HOST"),
        ("port", "PORT"),
        ("models", "MODELS_DIR"),
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

    import uvicorn

    # uvicorn drains on SIGTERM, then re-raises the signal with the previous handler restored:
    # this handler turns that into a clean exit 0 after the drain (orchestrators read it as success).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.drain_timeout_s + 5,
    )


if __name__ == "__main__":
    main()
