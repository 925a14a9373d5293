"""Running the scoring service with uvicorn (what `mlops serve` and `make serve` do)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from mlops_assets.serving.app import create_app
from mlops_assets.serving.config import ServingConfig
from mlops_assets.settings import Settings
from mlops_assets.use_cases import get_use_case

GRACEFUL_SHUTDOWN_SECONDS = 10


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access-log lines are JSON already and are passed through."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == "mlops.serving.access":
            return message
        return json.dumps(
            {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": message}
        )


class Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM/SIGINT after its graceful shutdown: uvicorn does that so
    the process ends "killed by signal", but for a service a requested stop that drained every request
    is a clean exit (status 0)."""

    @contextlib.contextmanager
    def capture_signals(self):
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("mlops.serving", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False


def config_path(settings: Settings) -> Path:
    return Path(os.environ.get("MLOPS_SERVING_CONFIG", settings.home / "serving.yaml"))


def serve(host: str = "127.0.0.1", port: int = 8080, use_cases: list[str] | None = None) -> int:
    """Start the service; returns when it has shut down (SIGINT/SIGTERM: in-flight requests finish)."""
    settings = Settings.from_env()
    path = config_path(settings)
    config = ServingConfig.load(path)
    if not config.api_keys and not config.accounts:
        print(
            f"mlops serve: no API keys or accounts configured (file {path} or MLOPS_API_KEYS); "
            "every request would be refused.\n"
            "Create a key:  .venv/bin/python -m mlops_assets.serving.config  (prints a key and the line to add)",
            file=sys.stderr,
        )
        return 2
    names = use_cases or list(config.use_cases) or ["caravan"]
    configure_logging()
    app = create_app(settings, tuple(get_use_case(name) for name in names), config)
    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            access_log=False,  # the service writes its own structured access log
            log_config=None,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    server.run()
    return 0 if server.started else 1
