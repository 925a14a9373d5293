"""Load times of the review pages with 100 model versions in the registry.

    .venv/bin/python benchmarks/review_pages.py [--home DIR] [--versions 100] [--repeat 20] [--port 8130]

Runs the caravan pipeline into a temporary home (or uses --home, a platform home after a run), adds
model versions until the registry holds --versions (copies of the champion's registry row, status
events, validation and model card under new version names: every page then reads 100 versions'
rows), starts `mlops serve` on the loopback port, logs in, and requests each page --repeat times
over one keep-alive connection. Prints the median, p95 and maximum wall time per page, measured by
the client (the server's work plus loopback HTTP). The issue's target: every page under 300 ms.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

PASSWORD = "benchmark-password-2026"


def add_versions(warehouse: Path, target: int) -> tuple[str, str]:
    """Copy the champion's rows under new names until `target` versions exist; returns (champion, a copy)."""
    import duckdb

    with duckdb.connect(str(warehouse)) as connection:
        champion = connection.execute(
            "select model_version from caravan.model_status_events where status = 'champion' order by event_seq desc"
        ).fetchone()[0]
        have = connection.execute("select count(*) from caravan.model_registry").fetchone()[0]
        copy = champion
        for i in range(target - have):
            copy = f"{champion}-copy{i:03d}"
            for table in ("model_registry", "model_validations", "model_cards"):
                connection.execute(
                    f"insert into caravan.{table} select * replace (? as model_version) from caravan.{table} "
                    "where model_version = ?",
                    [copy, champion],
                )
            for status, actor in (("candidate", "pipeline"), ("pending_approval", "pipeline"), ("rejected", "bench")):
                connection.execute(
                    """insert into caravan.model_status_events
                       select coalesce(max(event_seq), 0) + 1, ?, ?, ?, 'benchmark copy', null, now()
                       from caravan.model_status_events""",
                    [copy, status, actor],
                )
        total = connection.execute("select count(*) from caravan.model_registry").fetchone()[0]
    print(f"registry: {total} model versions")
    return champion, copy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="a platform home after a run (copied, not changed)")
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--port", type=int, default=8130)
    args = parser.parse_args()

    import duckdb
    import httpx

    from mlops_assets.serving.config import hash_password
    from mlops_assets.serving.process import ServiceProcess

    work = Path(tempfile.mkdtemp(prefix="review-pages-bench-"))
    home = work / "home"
    try:
        if args.home:
            shutil.copytree(args.home, home)
        else:
            from serving import build_platform

            started = time.perf_counter()
            build_platform(home)
            print(f"pipeline run: {time.perf_counter() - started:.0f} s")
        champion, copy = add_versions(home / "warehouse.duckdb", args.versions)
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as connection:
            customer = connection.execute("select customer_id from caravan.score_history limit 1").fetchone()[0]
        config = home / "serving.yaml"
        config.write_text(
            "accounts:\n"
            f"  - {{name: bench, password_scrypt: '{hash_password(PASSWORD)}', roles: [reviewer, auditor]}}\n"
        )
        service = ServiceProcess(home, config, work / "service.log", port=args.port)
        try:
            service.wait_until_ready()
            with httpx.Client(base_url=service.url, timeout=30) as client:
                token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
                login = client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
                assert login.status_code == 303, login.text
                pages = {
                    "login": "/login",
                    "models (100 versions)": "/models/caravan",
                    "model (champion, card)": f"/models/caravan/{champion}",
                    "model (pending, review form)": f"/models/caravan/{copy}",
                    "compare (charts, fairness groups)": f"/compare/caravan?a={copy}&b={champion}",
                    "audit lookup": f"/audit/caravan?customer={customer}",
                    "audit report (download)": f"/audit/caravan/report?customer={customer}",
                }
                print(f"{'page':32} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'KB':>6}")
                worst = 0.0
                for name, path in pages.items():
                    client.get(path)  # warm-up (templates compiled, first DuckDB open)
                    times, size = [], 0
                    for _ in range(args.repeat):
                        started = time.perf_counter()
                        response = client.get(path)
                        times.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200, (path, response.status_code)
                        size = len(response.content)
                    median, p95, top = np.median(times), np.percentile(times, 95), max(times)
                    worst = max(worst, p95)
                    print(f"{name:32} {median:10.1f} {p95:8.1f} {top:8.1f} {size / 1024:6.0f}")
                print(f"slowest p95: {worst:.1f} ms (target: under 300 ms)")
        finally:
            service.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
