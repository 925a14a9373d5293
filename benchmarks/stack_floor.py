"""The floor the fixed stack puts under `mlops run`, against 3x the bare script (issue 15's target).

    .venv/bin/python benchmarks/stack_floor.py [--rounds 3] [--suite customer_features]

Why: issue 15 asks for the caravan main job within 3x a bare script doing the same ML work. The
design card fixes the stack (Dagster, dagster-dbt with dbt-duckdb, Great Expectations), and every
run of the job has to import it and run dbt and GX at least once. This measures that floor with
the platform's own code left out, so it says whether 3x is reachable at all with this stack.

Set-up (untimed): one `python -m mlops_assets.cli run` in a temporary MLOPS_HOME loads the bundled
5,822 customers, builds the marts and leaves dbt's partial-parse state (`dbt_state/`), as every
daily run after the first sees it. A pristine copy of that warehouse and state is restored to the
same path before each (b), so every build starts from the same files, at the path dbt's parse state
was written with (each (b) prints whether dbt did a partial or a full parse).

Then `--rounds` times, alternating, each a fresh process timed whole (wall, and CPU user + system
with its children, from wait4()):
- (a) imports: `python -c "import dagster, dagster_dbt, dbt.cli.main, great_expectations"`, and
  (a') the same ending with `os._exit(0)`, as `mlops run` ends (cli.entry_point): a normal exit
  finalizes the whole module graph, which took seconds here and which the job does not pay;
- (b) the least work the job does with those libraries, timed inside the process after the same
  imports: one `dbtRunner().invoke(["build", ...])` of the caravan seeds, models and tests with the
  arguments of mlops_assets/defs/dbt_in_process.py (project, profiles, target path = the state
  folder, quiet, no colours; selection `fqn:*.caravan.*`), then closing dbt's database as the step
  does (`release_dbt_database`), and one Great Expectations validation
  of one suite as the pipeline runs it (the table read from DuckDB into pandas, then
  `quality.expectations.validate` with the suite the pipeline loads: GX context, batch, results);
- (c) the bare script of benchmarks/pipeline_vs_bare_script.py (`--bare`), whole process.
floor = median (a') wall + median (b) dbt + GX wall; it is compared with 3 x median (c) wall. The
pipeline also does the bare script's ML work, so `floor + that work` (the bare script's timed
stages but its feature SQL, which the dbt build does; without its interpreter and imports) is
printed too. The machine may be shared: the figures are as measured; CPU seconds vary less.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pipeline_vs_bare_script import pipeline_environment, timed_process  # noqa: E402

IMPORTS = "import dagster, dagster_dbt, dbt.cli.main, great_expectations"
IMPORTS_NO_TEARDOWN = IMPORTS + "; import os; os._exit(0)"
USE_CASE = "caravan"


def stack_work(var: Path, suite_asset: str) -> dict:
    """(b), in this process: imports, one dbt build, one GX suite validation; seconds wall and CPU."""
    clock, cpu = time.perf_counter(), time.process_time()
    figures: dict = {}

    def lap(name: str) -> None:
        nonlocal clock, cpu
        now, now_cpu = time.perf_counter(), time.process_time()
        figures[name] = {"wall": now - clock, "cpu": now_cpu - cpu}
        clock, cpu = now, now_cpu

    import dagster  # noqa: F401
    import dagster_dbt  # noqa: F401
    import great_expectations  # noqa: F401
    from dbt.cli.main import dbtRunner

    lap("imports")
    sys.path.insert(0, str(ROOT))
    import os

    import duckdb

    from mlops_assets.defs.dbt_in_process import release_dbt_database
    from mlops_assets.quality.expectations import load_suite, validate
    from mlops_assets.settings import DBT_PROJECT_DIR
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(USE_CASE)
    suite = load_suite(use_case, suite_asset)
    lap("platform imports (not in the floor)")

    warehouse, state = var / "warehouse.duckdb", var / "dbt_state"
    os.environ["MLOPS_DUCKDB_PATH"] = str(warehouse)  # what the profile reads, as dbt_in_process sets it
    args = ["build", "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    args += ["--target-path", str(state), "--log-path", str(state), "--quiet", "--no-use-colors"]
    result = dbtRunner().invoke([*args, "--select", f"fqn:*.{USE_CASE}.*"])
    release_dbt_database()  # dbt-duckdb keeps the file open for the invocation (profile keep_open), as the step does
    if not result.success:
        raise SystemExit(f"dbt build failed: {result.exception} (log: {state / 'dbt.log'})")
    figures["dbt nodes"] = len(result.result.results)
    lap("dbt build")
    table = use_case.feature_mart if suite_asset == "customer_features" else suite_asset
    with duckdb.connect(str(warehouse), read_only=True) as connection:
        frame = connection.execute(f"select * from {USE_CASE}.{table}").fetchdf()
    outcomes = validate(frame, suite)
    figures["GX expectations"] = len(outcomes)
    lap("GX validation")
    # The log of this invocation only (dbt appends each run after a "=====" header line).
    log = (state / "dbt.log").read_text(errors="replace").rsplit("\n=====", 1)[-1]
    figures["dbt parse"] = "partial parse" if "Partial parsing enabled" in log else "full parse"
    return figures


def restore(pristine: Path, var: Path) -> None:
    """The warehouse and dbt state as the set-up run left them, at the path dbt's parse state knows."""
    for name in ("warehouse.duckdb", "dbt_state"):
        target = var / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        source = pristine / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    for wal in var.glob("warehouse.duckdb.wal"):
        wal.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="alternating (a), (b), (c) rounds (>= 3)")
    parser.add_argument("--suite", default="customer_features", help="the GX suite of (b)")
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)  # internal: run (b) on this MLOPS_HOME
    args = parser.parse_args()
    if args.work:
        print("FIGURES " + json.dumps(stack_work(args.work, args.suite)))
        return
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")

    python = sys.executable
    imports, imports_exit, work, bare = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        home = Path(tmp)
        env = pipeline_environment(home, ROOT)
        _, wall, _, _, _ = timed_process([python, "-m", "mlops_assets.cli", "run"], ROOT, env)
        print(f"set-up: `mlops run` in a new home {wall:.1f} s (untimed)", flush=True)
        var, pristine = home / "var", home / "pristine"
        pristine.mkdir()
        for name in ("warehouse.duckdb", "dbt_state"):
            source = var / name
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, pristine / name)
        # The set-up run's own dbt build folders are gone (discarded on success); only parse state is kept.
        for round_ in range(args.rounds):
            _, wall, cpu, _, _ = timed_process([python, "-c", IMPORTS], ROOT, env)
            imports.append({"wall": wall, "cpu": cpu})
            _, wall, cpu, _, _ = timed_process([python, "-c", IMPORTS_NO_TEARDOWN], ROOT, env)
            imports_exit.append({"wall": wall, "cpu": cpu})
            restore(pristine, var)
            _, wall, cpu, _, stdout = timed_process(
                [python, str(Path(__file__).resolve()), "--work", str(var), "--suite", args.suite], ROOT, env
            )
            work.append({"wall": wall, "cpu": cpu, **json.loads(stdout.split("FIGURES ", 1)[1])})
            with tempfile.TemporaryDirectory(prefix="bench-floor-bare-") as bare_home:
                _, wall, cpu, _, stdout = timed_process(
                    [python, str(ROOT / "benchmarks" / "pipeline_vs_bare_script.py"), "--bare", bare_home],
                    ROOT,
                    env,
                )
            stages = json.loads(stdout.split("STAGES ", 1)[1])
            # Its work beyond what (b) already does: all its timed stages but the feature SQL (dbt's job).
            work_beyond = sum(seconds for name, seconds in stages.items() if not name.startswith("features"))
            bare.append({"wall": wall, "cpu": cpu, "work": work_beyond})
            w = work[-1]
            print(
                f"round {round_ + 1}: (a) imports {imports[-1]['wall']:.2f} s (CPU {imports[-1]['cpu']:.2f}), "
                f"(a') with os._exit {imports_exit[-1]['wall']:.2f} s (CPU {imports_exit[-1]['cpu']:.2f}); "
                f"(b) dbt build {w['dbt build']['wall']:.2f} s (CPU {w['dbt build']['cpu']:.2f}, "
                f"{w['dbt nodes']} nodes, {w['dbt parse']}), GX {w['GX validation']['wall']:.2f} s "
                f"(CPU {w['GX validation']['cpu']:.2f}, {w['GX expectations']} expectations), whole process "
                f"{w['wall']:.2f} s; (c) bare script {bare[-1]['wall']:.2f} s (CPU {bare[-1]['cpu']:.2f})",
                flush=True,
            )

    def median(rows: list[dict], *path: str) -> float:
        def get(row):
            for key in path:
                row = row[key]
            return row

        return statistics.median(get(row) for row in rows)

    a_wall, a_cpu = median(imports_exit, "wall"), median(imports_exit, "cpu")
    dbt_wall, dbt_cpu = median(work, "dbt build", "wall"), median(work, "dbt build", "cpu")
    gx_wall, gx_cpu = median(work, "GX validation", "wall"), median(work, "GX validation", "cpu")
    bare_wall, bare_cpu, bare_work = median(bare, "wall"), median(bare, "cpu"), median(bare, "work")
    floor_wall, floor_cpu = a_wall + dbt_wall + gx_wall, a_cpu + dbt_cpu + gx_cpu
    print(f"\nStack floor of the caravan job, {args.rounds} alternating rounds (medians, seconds)")
    print(f"  (a) python -c '{IMPORTS}'")
    print(f"      wall {median(imports, 'wall'):6.2f}  CPU {median(imports, 'cpu'):6.2f}  (interpreter exit included)")
    print("  (a') the same ending with os._exit(0), as mlops run ends")
    print(f"      wall {a_wall:6.2f}  CPU {a_cpu:6.2f}")
    print(f"  (b) dbt build ({USE_CASE}, in process)   wall {dbt_wall:6.2f}  CPU {dbt_cpu:6.2f}")
    print(f"      GX validation ({args.suite})  wall {gx_wall:6.2f}  CPU {gx_cpu:6.2f}")
    print(f"      [imports inside (b): wall {median(work, 'imports', 'wall'):.2f}; not added, (a') counts them]")
    print(f"  floor (a') + (b)                       wall {floor_wall:6.2f}  CPU {floor_cpu:6.2f}")
    # A second estimate of the same floor: the imports as timed inside (b)'s process (no interpreter
    # start; a different import order), in place of (a').
    low_wall = median(work, "imports", "wall") + dbt_wall + gx_wall
    print(f"  floor with (b)'s own imports instead   wall {low_wall:6.2f}  (/ bare {low_wall / bare_wall:.2f})")
    print(f"  (c) bare script, whole process         wall {bare_wall:6.2f}  CPU {bare_cpu:6.2f}")
    print(f"      its work but the feature SQL       wall {bare_work:6.2f}  (ingest, train, score, publish)")
    print(f"  3 x bare script                        wall {3 * bare_wall:6.2f}  CPU {3 * bare_cpu:6.2f}")
    ratio_wall, ratio_cpu = floor_wall / bare_wall, floor_cpu / bare_cpu
    print(f"  floor / bare                           wall {ratio_wall:6.2f}  CPU {ratio_cpu:6.2f}")
    print(f"  (floor + that work) / bare             wall {(floor_wall + bare_work) / bare_wall:6.2f}")
    print(f"floor_over_bare_wall={ratio_wall:.2f}")


if __name__ == "__main__":
    main()
