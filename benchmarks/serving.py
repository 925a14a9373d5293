"""Bounded load on the scoring service over loopback: latency percentiles and throughput.

    .venv/bin/python benchmarks/serving.py [--home DIR] [--seconds 8] [--concurrency 1 8 32] [--port N]
                                           [--workers 2]

Runs the caravan pipeline into a temporary home (or uses --home, a platform home with published
scores and exported models), starts `mlops serve --workers 2` on a free loopback port, and for lookup
and for score (one record, with reasons) sends requests from N client processes (one keep-alive
connection each) for a fixed time at each concurrency; then the same at concurrency 8 while another
process republishes the scores and the models again and again (the service swaps snapshots
meanwhile). Prints p50/p95/p99 latency, requests/s, errors, and the CPU time per request of the
service's processes and of the clients (ms; these depend little on what else the machine runs).
Client and server share the machine's cores, so latency and throughput include the clients' cost.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_platform(home: Path) -> None:
    import dagster as dg

    from mlops_assets.definitions import build_definitions
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    defs = build_definitions(Settings.under(home), use_cases=(get_use_case("caravan"),))
    assert defs.resolve_job_def("caravan_pipeline").execute_in_process(instance=dg.DagsterInstance.ephemeral()).success


def republish_loop(home: Path, stop_file: Path) -> None:
    """Run in a separate process: the daily scoring job (score + publish) and a fresh model export,
    over and over, until stop_file exists; the count of publications goes to <stop_file>.count."""
    count_file = stop_file.with_suffix(".count")
    from datetime import UTC, datetime

    import dagster as dg
    import duckdb

    from mlops_assets.definitions import build_definitions
    from mlops_assets.integrity import recorded_signature
    from mlops_assets.registry import current_champion, load_artifact
    from mlops_assets.serving.artefacts import export_serving_models
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    settings = Settings.under(home)
    defs = build_definitions(settings, use_cases=(get_use_case("caravan"),))
    job = defs.resolve_job_def("caravan_scoring")
    instance = dg.DagsterInstance.ephemeral()
    publications = 0
    while not stop_file.exists():
        assert job.execute_in_process(instance=instance).success
        with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
            champion = load_artifact(connection, "caravan", current_champion(connection, "caravan"))
            signatures = {champion.model_version: recorded_signature(connection, "caravan", champion.model_version)}
        export_serving_models(settings.published_dir, "caravan", champion, [], datetime.now(UTC), signatures)
        publications += 1
        count_file.write_text(str(publications))  # the benchmark measures once the first one is done


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far (Linux /proc) of a process and of its worker processes (one level
    of children: `mlops serve --workers N`'s supervisor and its workers), for CPU per request."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for process in (pid, *(int(child) for child in children.read_text().split())):
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a worker that has just ended
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class KeepAliveConnection:
    """The least an HTTP/1.1 client needs for these requests: one keep-alive socket, requests sent as
    prepared bytes, responses read by their Content-Length (the service always sends one).

    Hand-written because the clients share the machine's two cores with the service and every
    client microsecond is taken from it: http.client cost 0.3-0.5 ms of CPU per request here (it
    parses headers with the email package), httpx 1.1-1.4 ms, as much as the service itself; this
    costs a tenth of http.client (figures in the README)."""

    def __init__(self, host: str, port: int):
        self.address = (host, port)
        self.socket = socket.create_connection(self.address, timeout=30)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, message: bytes) -> tuple[int, bytes]:
        """(status, body) of the response to one prepared request."""
        self.socket.sendall(message)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        head, self.buffer = self.buffer[:end].decode("latin-1").split("\r\n"), self.buffer[end + 4 :]
        length = next(
            (
                int(value)
                for name, _, value in (line.partition(":") for line in head[1:])
                if name.lower() == "content-length"
            ),
            None,
        )
        if length is None:
            raise ConnectionError(f"response without Content-Length: {head[0]}")
        while len(self.buffer) < length:
            self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(head[0].split(" ", 2)[1]), body

    def _receive(self) -> None:
        chunk = self.socket.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the service")
        self.buffer += chunk

    def close(self) -> None:
        self.socket.close()


def _request_bytes(host: str, key: str, kind: str, payload) -> bytes:
    if kind == "lookup":
        path = f"/v1/use-cases/caravan/customers/{payload}"
        return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n\r\n".encode()
    body = json.dumps({"records": [payload]}).encode()
    head = (
        f"POST /v1/use-cases/caravan/score HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _client(url: str, key: str, kind: str, payloads: list, slot: int, step: int, start_at: float, stop_at: float, out):
    """One client process with one keep-alive connection: requests from start_at until stop_at (epoch
    seconds); sends (latencies, errors, versions, CPU seconds) to `out`."""
    authority = url.removeprefix("http://")
    host, port = authority.split(":")
    messages = [_request_bytes(authority, key, kind, payload) for payload in payloads]  # prepared before timing
    connection = KeepAliveConnection(host, int(port))
    latencies, errors, versions = [], [], set()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu = time.process_time()
    i = slot
    while time.time() < stop_at:
        started = time.perf_counter()
        try:
            status, content = connection.request(messages[i % len(messages)])
            elapsed = time.perf_counter() - started
            if status != 200:
                errors.append(f"{status} {content[:200]!r}")
            else:
                answer = json.loads(content)
                versions.add(answer["model_version"] if kind == "lookup" else answer["results"][0]["model_version"])
                latencies.append(elapsed)
        except OSError as error:
            errors.append(repr(error))
            connection.close()
            connection = KeepAliveConnection(host, int(port))
        i += step
    connection.close()
    out.put((latencies, errors, versions, time.process_time() - cpu))


def load(url: str, key: str, kind: str, payloads: list, concurrency: int, seconds: float, server_pid: int) -> dict:
    """`concurrency` client processes, each with one keep-alive connection, for `seconds`.

    The clients are processes (KeepAliveConnection), not threads: threads of one client process wait
    for each other's turn at Python's interpreter lock, which the latencies then included."""
    context = multiprocessing.get_context("fork")  # the payloads are inherited, not pickled
    out = context.SimpleQueue()
    start_at = time.time() + 1.0  # the clients fork and prepare their requests meanwhile
    stop_at = start_at + seconds
    clients = [
        context.Process(target=_client, args=(url, key, kind, payloads, slot, concurrency, start_at, stop_at, out))
        for slot in range(concurrency)
    ]
    for client in clients:
        client.start()
    while time.time() < start_at:
        time.sleep(0.001)
    server_cpu = process_cpu_seconds(server_pid)
    results = [out.get() for _ in clients]
    server_cpu = process_cpu_seconds(server_pid) - server_cpu
    for client in clients:
        client.join()
    values = np.array([v for latencies, _, _, _ in results for v in latencies]) * 1000
    errors = [e for _, client_errors, _, _ in results for e in client_errors]
    versions = set().union(*(client_versions for _, _, client_versions, _ in results))
    client_cpu = sum(cpu for _, _, _, cpu in results)
    return {
        "requests": len(values),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": float(np.percentile(values, 50)) if len(values) else float("nan"),
        "p95_ms": float(np.percentile(values, 95)) if len(values) else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if len(values) else float("nan"),
        "per_second": len(values) / seconds,
        "versions": len(versions),
        # CPU time per answered request: what the figures cost regardless of the machine's other load.
        "server_cpu_ms": 1000 * server_cpu / max(len(values), 1),
        "client_cpu_ms": 1000 * client_cpu / max(len(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="an existing platform home (default: run the pipeline first)")
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--port", type=int, help="loopback port of the service (default: a free one)")
    parser.add_argument("--workers", type=int, default=2, help="`mlops serve --workers` (default 2: one a core here)")
    parser.add_argument("--republish-loop", nargs=2, metavar=("HOME", "STOP_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.republish_loop:
        republish_loop(Path(args.republish_loop[0]), Path(args.republish_loop[1]))
        return

    import duckdb

    from mlops_assets.serving.config import hash_api_key, new_api_key
    from mlops_assets.serving.process import ServiceProcess

    scratch = Path(tempfile.mkdtemp(prefix="mlops-serving-bench-"))
    home = args.home
    if home is None:
        home = scratch / "home"
        started = time.perf_counter()
        build_platform(home)
        print(f"pipeline run for the benchmark's platform: {time.perf_counter() - started:.0f} s")
    key = new_api_key()
    config = scratch / "serving.yaml"
    config.write_text(
        json.dumps({"api_keys": [{"name": "bench", "sha256": hash_api_key(key), "scopes": ["lookup", "score"]}]})
    )
    with duckdb.connect(str(home / "published" / "caravan.duckdb"), read_only=True) as connection:
        customers = [row[0] for row in connection.execute("select customer_id from customer_scores").fetchall()]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as connection:
        raw = connection.execute("select * from caravan.raw_customers using sample 500 rows (reservoir, 7)").fetchdf()
    records = raw.drop(columns=[c for c in raw.columns if c.startswith("_")]).to_dict("records")
    rng = np.random.default_rng(0)
    lookups = list(rng.choice(customers, size=2000))

    service = ServiceProcess(home, config, scratch / "service.log", port=args.port, workers=args.workers)
    rows = []
    try:
        service.wait_until_ready()
        for kind, payloads in (("lookup", lookups), ("score", records)):
            load(service.url, key, kind, payloads, 2, 2.0, service.process.pid)  # warm-up: worker threads, connections
            for concurrency in args.concurrency:
                rows.append(
                    {
                        "endpoint": kind,
                        "concurrency": concurrency,
                        "phase": "steady",
                        **load(service.url, key, kind, payloads, concurrency, args.seconds, service.process.pid),
                    }
                )
        for kind, payloads in (("lookup", lookups), ("score", records)):
            stop_file = scratch / f"stop-{kind}"
            count_file = stop_file.with_suffix(".count")
            republisher = subprocess.Popen(
                [sys.executable, __file__, "--republish-loop", str(home), str(stop_file)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while not count_file.exists():  # the republisher imports Dagster and makes a first publication
                time.sleep(0.5)
            before = int(count_file.read_text())
            result = load(service.url, key, kind, payloads, 8, max(args.seconds, 15), service.process.pid)
            publications = int(count_file.read_text()) - before
            stop_file.touch()
            republisher.wait(timeout=600)
            rows.append(
                {"endpoint": kind, "concurrency": 8, "phase": f"republishing ({publications} publications)", **result}
            )
    finally:
        exit_code = service.stop()
    averages = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"\nload average (1, 5, 15 min) at the end: {averages} on {os.cpu_count()} cores")
    print(f"service: mlops serve --workers {args.workers}")
    print(
        f"{'endpoint':8} {'conc':>4} {'phase':32} {'requests':>8} {'errors':>6} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'p99 ms':>8} {'req/s':>8} {'versions':>8} {'srv cpu':>8} {'cli cpu':>8}"
    )
    for row in rows:
        print(
            f"{row['endpoint']:8} {row['concurrency']:>4} {row['phase']:32} {row['requests']:>8} {row['errors']:>6} "
            f"{row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['per_second']:>8.0f} "
            f"{row['versions']:>8} {row['server_cpu_ms']:>8.2f} {row['client_cpu_ms']:>8.2f}"
        )
        if row["errors"]:
            print(f"   first error: {row['first_error']}")
    print(f"\nservice exit code after SIGTERM: {exit_code}; log: {scratch / 'service.log'}")


if __name__ == "__main__":
    main()
