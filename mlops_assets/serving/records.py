"""Durable records of the service outside the warehouse lock: every request, and the service's alerts.

Requests go to `<home>/serving/requests/<use case>/<YYYY-MM-DD>.jsonl` (UTC day), one JSON object per
line. JSON lines rather than DuckDB or Parquet: a DuckDB file would be locked by the service against
the asset that reads it, and Parquet cannot be appended to; a text file opened with O_APPEND takes
each line in one write() from any thread, and a reader takes every complete line. Each line is written
to the file as its request completes (so it survives a crash of the service); a background thread
fsyncs the files every `sync_interval` seconds and `close` on shutdown, so a crash of the machine can
lose the last fraction of a second. The fsync runs off the request path: on a busy disk it takes
milliseconds, which the request that happened to trigger it used to wait for.

The asset `<use case>/served_traffic` reads the files from where it stopped (byte offsets) into the
warehouse. Alerts (e.g. a refused artefact) go to `<home>/serving/alerts.jsonl`, the log, and the
webhook of MLOPS_ALERT_WEBHOOK_URL if set; served_traffic copies them into `<use case>.alerts`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

logger = logging.getLogger("mlops.serving")

# Set for the worker processes of a service started with several (server.py): a directory that lives
# as long as the service.
SERVICE_RUN_DIR = "MLOPS_SERVING_RUN_DIR"


def requests_dir(home: Path, use_case: str) -> Path:
    return Path(home) / "serving" / "requests" / use_case


def alerts_path(home: Path) -> Path:
    return Path(home) / "serving" / "alerts.jsonl"


class _AppendFile:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.dirty = False

    def append(self, line: bytes) -> None:
        os.write(self.fd, line)
        self.dirty = True

    def sync(self) -> None:
        if self.dirty:
            self.dirty = False
            os.fsync(self.fd)

    def close(self) -> None:
        self.sync()
        os.close(self.fd)


class RequestLog:
    """Appends one JSON line per request to the use case's file of the day."""

    def __init__(self, home: Path, sync_interval: float = 0.2):
        self.home = Path(home)
        self.sync_interval = sync_interval
        self._files: dict[tuple[str, str], _AppendFile] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name="request-log-sync", daemon=True)
        self._syncer.start()

    def _file(self, use_case: str, day: str) -> _AppendFile:
        key = (use_case, day)
        handle = self._files.get(key)
        if handle is None:
            with self._lock:
                handle = self._files.get(key)
                if handle is None:
                    for old_key in [k for k in self._files if k[0] == use_case]:
                        self._files.pop(old_key).close()
                    handle = _AppendFile(requests_dir(self.home, use_case) / f"{day}.jsonl")
                    self._files[key] = handle
        return handle

    def record(self, use_case: str, entry: dict) -> None:
        now = datetime.now(UTC)
        entry = {"logged_at": now.isoformat(), **entry}
        line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode("utf-8")
        self._file(use_case, now.strftime("%Y-%m-%d")).append(line)

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.sync_interval):
            try:
                self.sync()
            except OSError as error:  # e.g. a full disk: keep trying; the lines are written already
                logger.warning("request log: fsync failed: %s", error)

    def sync(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.sync()

    def close(self) -> None:
        self._closed.set()
        self._syncer.join(timeout=5)
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


def _first_to_claim(event: str) -> bool:
    """Whether this process is the first of the service's workers to claim `event` (always, with one
    process): every worker sees the same refused file, and the alert is raised once, not once a worker.
    The claim is a file created exclusively in the service's run directory (atomic across processes)."""
    run_dir = os.environ.get(SERVICE_RUN_DIR)
    if not run_dir:
        return True
    claims = Path(run_dir) / "alerts"
    claims.mkdir(exist_ok=True)
    try:
        os.close(os.open(claims / hashlib.sha256(event.encode()).hexdigest(), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def raise_alert(
    home: Path, use_case: str, kind: str, message: str, details: dict | None = None, event: str | None = None
) -> None:
    """Record an alert in the service's alert file and the log; post it to the webhook if configured.
    `event` identifies what happened (e.g. the refused files' identity): raised once for the service."""
    if event is not None and not _first_to_claim(event):
        logger.warning("[%s %s] %s (alert raised by another worker)", use_case, kind, message)
        return
    alert = {
        "raised_at": datetime.now(UTC).isoformat(),
        "use_case": use_case,
        "kind": kind,
        "severity": "critical",
        "message": message,
        "details": details or {},
    }
    handle = _AppendFile(alerts_path(home))
    try:
        handle.append((json.dumps(alert, default=str) + "\n").encode("utf-8"))
    finally:
        handle.close()
    logger.error("[%s %s] %s", use_case, kind, message)
    webhook = os.environ.get("MLOPS_ALERT_WEBHOOK_URL")
    if webhook:
        request = urllib.request.Request(
            webhook,
            data=json.dumps(alert, default=str).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5):
                pass
        except OSError as error:  # an unreachable webhook must not stop the service; the alert is stored
            logger.warning("alert webhook %s failed: %s", webhook, error)
