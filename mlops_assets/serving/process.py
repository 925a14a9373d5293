"""Starting and stopping the real service process on a free loopback port (tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServiceProcess:
    """`mlops serve` in its own process group, with MLOPS_HOME and the configuration given."""

    def __init__(
        self,
        home: Path,
        config: Path,
        log: Path,
        use_cases: tuple[str, ...] = ("caravan",),
        environment: dict[str, str] | None = None,
        port: int | None = None,
        workers: int = 1,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log)
        command = [
            sys.executable,
            "-m",
            "mlops_assets.cli",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        for use_case in use_cases:
            command += ["--use-case", use_case]
        environment = {
            **os.environ,
            "MLOPS_HOME": str(home),
            "MLOPS_SERVING_CONFIG": str(config),
            **(environment or {}),
        }
        environment.pop("MLOPS_API_KEYS", None)
        self._log_handle = open(self.log, "ab")  # noqa: SIM115 -- the process writes to it until stop()
        self.process = subprocess.Popen(
            command, env=environment, stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_until_ready(self, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                response = httpx.get(f"{self.url}/v1/ready", timeout=2)
                last = response.json()
                if response.status_code == 200:
                    return last
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"service not ready after {timeout} s: {last}; log: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (graceful: requests in flight finish), then wait; returns the exit code."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log_handle.close()
        return self.process.returncode
