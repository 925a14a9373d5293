"""Running the scoring service with uvicorn (what `mlops serve` and `make serve` do)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from mlops_assets.serving.app import create_app
from mlops_assets.serving.config import ServingConfig
from mlops_assets.serving.records import SERVICE_RUN_DIR
from mlops_assets.settings import Settings
from mlops_assets.use_cases import get_use_case

GRACEFUL_SHUTDOWN_SECONDS = 10
# What the parent of several worker processes hands its workers (spawned fresh: they read the environment).
WORKER_USE_CASES = "MLOPS_SERVING_USE_CASES"


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


def serve(host: str = "127.0.0.1", port: int = 8080, use_cases: list[str] | None = None, workers: int = 1) -> int:
    """Start the service; returns when it has shut down (SIGINT/SIGTERM: in-flight requests finish).

    `workers` > 1 runs that many worker processes on one listening socket under uvicorn's supervisor
    (it restarts a worker that dies, and SIGHUP replaces them one by one); each worker loads and
    verifies the published files itself. One process serves requests on one core: at concurrency 8 on
    two cores, lookup p99 was 6.6-8.1 ms at 1,978-2,283 requests/s with one worker and 5.0-6.5 ms at
    2,225-3,070 requests/s with two (benchmarks/serving.py, three runs each, README)."""
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
    if workers < 1:
        print(f"mlops serve: --workers must be at least 1, not {workers}", file=sys.stderr)
        return 2
    names = use_cases or list(config.use_cases) or ["caravan"]
    definitions = tuple(get_use_case(name) for name in names)  # an unknown one fails before any worker starts
    configure_logging()
    if workers > 1:
        return _serve_with_workers(host, port, names, workers)
    server = Server(_uvicorn_config(create_app(settings, definitions, config), host, port))
    server.run()
    return 0 if server.started else 1


def _uvicorn_config(app, host: str, port: int, **options) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,  # the service writes its own structured access log
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        **options,
    )


def _serve_with_workers(host: str, port: int, names: list[str], workers: int) -> int:
    """uvicorn's multiprocess supervisor over `app_from_environment`. The workers share, through their
    environment: the use cases; one session secret (a review-page login made on one worker holds on the
    others); and a directory for this run of the service, where prometheus-client's multiprocess mode
    keeps each worker's metrics for /metrics to add up, and where alerts are claimed once
    (records.raise_alert)."""
    with tempfile.TemporaryDirectory(prefix="mlops-serve-") as run_dir:
        metrics_dir = Path(run_dir) / "metrics"
        metrics_dir.mkdir()
        os.environ.update(
            {WORKER_USE_CASES: ",".join(names), SERVICE_RUN_DIR: run_dir, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        )
        os.environ.setdefault("MLOPS_SESSION_SECRET", secrets.token_urlsafe(32))
        config = _uvicorn_config(
            "mlops_assets.serving.server:app_from_environment", host, port, factory=True, workers=workers
        )
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
    return 1 if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes) else 0


def app_from_environment():
    """The app of one worker process (uvicorn calls this factory in each worker it spawns)."""
    configure_logging()
    settings = Settings.from_env()
    names = os.environ[WORKER_USE_CASES].split(",")
    return create_app(settings, tuple(get_use_case(name) for name in names), ServingConfig.load(config_path(settings)))
