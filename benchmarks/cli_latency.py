"""Wall time of the read-only `mlops` commands, and how long `make run` stays silent.

    .venv/bin/python benchmarks/cli_latency.py [--repeat 5] [--skip-run]

Uses the platform of MLOPS_HOME (default var/): run `make run` once first. Prints, per read command,
the median and worst wall time of `--repeat` calls (target: under 1 s), then starts `make run` and
prints the time to its first line, to its first per-step progress line and to its end, and the read
commands' wall times while that run holds the warehouse (they then read the registry's read copy). Figures
depend on the machine's load: compare alternating runs, not runs hours apart.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb

PROJECT = Path(__file__).resolve().parents[1]
MLOPS = str(PROJECT / ".venv" / "bin" / "mlops")


def _timed(arguments: list[str]) -> tuple[float, float, int]:
    """Wall time, CPU time (user + system, less distorted by other processes' load) and exit status."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(arguments, cwd=PROJECT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, completed.returncode


def read_commands(warehouse: Path, use_case: str) -> dict[str, list[str]]:
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        version = connection.execute(
            f"select model_version from {use_case}.model_status_events where status = 'champion' "
            "order by 1 desc limit 1"
        ).fetchall()[0][0]
        customer = connection.execute(f"select customer_id from {use_case}.score_history limit 1").fetchall()[0][0]
    return {
        "models": [MLOPS, "models", "--use-case", use_case],
        "model-card": [MLOPS, "model-card", "--use-case", use_case, "--version", version],
        "audit": [MLOPS, "audit", "--use-case", use_case, "--customer", customer],
    }


def _read_while_running(commands: dict[str, list[str]], process: subprocess.Popen, results: dict) -> None:
    """Call the read commands in turn while the run goes on (its steps hold the warehouse, so they
    read either the warehouse or the registry's read copy): wall time, exit status, source."""
    while process.poll() is None:
        for name, arguments in commands.items():
            started = time.perf_counter()
            completed = subprocess.run(arguments, cwd=PROJECT, capture_output=True, text=True)
            source = "read copy" if "read from the copy" in completed.stderr else "warehouse"
            results.setdefault(name, []).append((time.perf_counter() - started, completed.returncode, source))


def time_to_progress(commands: dict[str, list[str]]) -> None:
    started = time.perf_counter()
    process = subprocess.Popen(
        ["make", "run"], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    during_run: dict[str, list] = {}
    reader = threading.Thread(target=_read_while_running, args=(commands, process, during_run))
    first_line = first_step = None
    for line in process.stdout:
        now = time.perf_counter() - started
        if first_line is None and line.startswith("mlops run"):
            first_line = now
        if first_step is None and "] " in line and line.startswith("["):
            first_step = now
            reader.start()  # from the first step on, the run opens the warehouse
    process.wait()
    total = time.perf_counter() - started
    if reader.is_alive() or reader.ident:
        reader.join()
    print(f"make run: first line after {first_line:.2f} s, first progress line after {first_step:.2f} s, ", end="")
    print(f"done after {total:.1f} s (exit {process.returncode})")
    for name, calls in during_run.items():
        times = [seconds for seconds, _, _ in calls]
        failed = sum(1 for _, code, _ in calls if code != 0)
        from_copy = sum(1 for _, _, source in calls if source == "read copy")
        print(
            f"  during the run: mlops {name:<11} {len(calls)} calls, wall median {statistics.median(times):.2f} s, "
            f"worst {max(times):.2f} s; {from_copy} answered from the read copy, {failed} failed"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--use-case", default="caravan")
    parser.add_argument("--skip-run", action="store_true", help="only the read commands")
    args = parser.parse_args()
    home = Path(os.environ.get("MLOPS_HOME", PROJECT / "var"))
    warehouse = home / "warehouse.duckdb"
    if not warehouse.exists():
        sys.exit(f"{warehouse}: no warehouse; run `make run` first")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    commands = read_commands(warehouse, args.use_case)
    for name, arguments in commands.items():
        times, cpu_times = [], []
        for _ in range(args.repeat):
            seconds, cpu, code = _timed(arguments)
            if code != 0:
                sys.exit(f"{' '.join(arguments)} exited {code}")
            times.append(seconds)
            cpu_times.append(cpu)
        verdict = "ok" if statistics.median(times) < 1.0 else "SLOW"
        print(
            f"mlops {name:<11} wall median {statistics.median(times):.2f} s, worst {max(times):.2f} s; "
            f"CPU median {statistics.median(cpu_times):.2f} s  [{verdict}]"
        )
    if not args.skip_run:
        time_to_progress(commands)


if __name__ == "__main__":
    main()
