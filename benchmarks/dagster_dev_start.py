"""How long `dagster dev` takes to answer with the project's code location loaded, on a warm set-up.

    .venv/bin/python benchmarks/dagster_dev_start.py [--starts 3]

Starts `dagster dev -w workspace.yaml` (as `make dev` does, on a free loopback port) in a temporary
DAGSTER_HOME holding the project's dagster.yaml, and polls its GraphQL API until the code location
`bank_mlops` reports LOADED; prints the seconds from start, then stops the process group. One untimed
start first creates the instance's files, as `make dev` finds them after its first start. The issue's
target is 15 s. Figures depend on the machine's load: compare starts run one after the other.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
QUERY = """{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _location_state(port: int) -> tuple[str, str] | None:
    """(load status, what the location is: RepositoryLocation or PythonError), None while no answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            workspace = json.load(response)["data"]["workspaceOrError"]
    except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError, ValueError):
        return None
    for entry in workspace.get("locationEntries", []):
        if entry["name"] == "bank_mlops":
            loaded = entry["locationOrLoadError"] or {}
            return entry["loadStatus"], loaded.get("__typename", "")
    return None


def start_once(dagster_home: Path, mlops_home: Path, timeout: float = 180) -> float:
    port = _free_port()
    environment = {**os.environ, "DAGSTER_HOME": str(dagster_home), "MLOPS_HOME": str(mlops_home)}
    command = [str(PROJECT / ".venv" / "bin" / "dagster"), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1"]
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "-p", str(port)],
        cwd=PROJECT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: dagster dev, its webserver, daemon and code server
    )
    try:
        while time.perf_counter() - started < timeout:
            state = _location_state(port)
            if state is not None and state[0] == "LOADED":
                if state[1] != "RepositoryLocation":
                    raise RuntimeError(f"the code location failed to load: {state[1]}")
                return time.perf_counter() - started
            if process.poll() is not None:
                raise RuntimeError(f"dagster dev exited with {process.returncode}")
            time.sleep(0.1)
        raise RuntimeError(f"no loaded code location after {timeout:.0f} s")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        _kill_session(process.pid)


def _kill_session(session: int) -> None:
    """Stop what is left of the session: the code server runs in a process group of its own (it
    would exit by itself once its heartbeat stops, after up to 45 s)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # after ")": state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagster-dev-start-") as folder:
        dagster_home, mlops_home = Path(folder) / "dagster", Path(folder) / "var"
        dagster_home.mkdir()
        shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", dagster_home)
        print(f"first start (untimed, creates the instance): {start_once(dagster_home, mlops_home):.1f} s")
        seconds = []
        for number in range(1, args.starts + 1):
            seconds.append(start_once(dagster_home, mlops_home))
            print(f"start {number}: code location loaded after {seconds[-1]:.1f} s")
    print(f"dagster_dev_start_median_s={statistics.median(seconds):.1f} (target 15)")


if __name__ == "__main__":
    main()
