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
import http.client
import json
import multiprocessing
import os
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


def _client(url: str, key: str, kind: str, payloads: list, slot: int, step: int, start_at: float, stop_at: float, out):
    """One client process with one keep-alive connection: requests from start_at until stop_at (epoch
    seconds); sends (latencies, errors, versions, CPU seconds) to `out`."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    latencies, errors, versions = [], [], set()
    while time.time() < start_at:
        time.sleep(0.001)
    cpu = time.process_time()
    i = slot
    while time.time() < stop_at:
        payload = payloads[i % len(payloads)]
        started = time.perf_counter()
        try:
            if kind == "lookup":
                connection.request("GET", f"/v1/use-cases/caravan/customers/{payload}", headers=headers)
            else:
                body = json.dumps({"records": [payload]})
                connection.request("POST", "/v1/use-cases/caravan/score", body=body, headers=headers)
            response = connection.getresponse()
            content = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"{response.status} {content[:200]!r}")
            else:
                answer = json.loads(content)
                versions.add(answer["model_version"] if kind == "lookup" else answer["results"][0]["model_version"])
                latencies.append(elapsed)
        except (OSError, http.client.HTTPException) as error:
            errors.append(repr(error))
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
        i += step
    connection.close()
    out.put((latencies, errors, versions, time.process_time() - cpu))


def load(url: str, key: str, kind: str, payloads: list, concurrency: int, seconds: float, server_pid: int) -> dict:
    """`concurrency` client processes, each with one keep-alive connection, for `seconds`.

    The clients are processes using the standard library's http.client, not threads using httpx:
    httpx cost 1.1-1.4 ms of CPU per request on the same two cores as the service (about as much as
    the service itself), http.client about a quarter of that; and threads of one client process
    wait for each other's turn at Python's interpreter lock, which the latencies then included."""
    context = multiprocessing.get_context("fork")  # the payloads are inherited, not pickled
    out = context.SimpleQueue()
    start_at = time.time() + 0.5
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
