"""Time `mlops run` (the caravan main job) against a bare script doing the same ML work, as whole processes.

    .venv/bin/python benchmarks/pipeline_vs_bare_script.py [--pairs 3] [--root DIR]

Both sides are timed as whole processes (interpreter start, imports, work, exit), alternating
pipeline / bare script, `--pairs` times, on the bundled 5,822 customers:
- pipeline: `python -m mlops_assets.cli run` (what `mlops run` / `make run` do), in a temporary
  MLOPS_HOME and DAGSTER_HOME. One untimed run first fills the home, so the timed runs are what every
  daily run after the first sees (dbt's partial-parse state and a champion exist); the first run is
  printed too.
- bare script: this file with `--bare HOME`: CSV -> DuckDB -> features in SQL -> stratified split ->
  LightGBM with early stopping -> scores -> published DuckDB file, one process, no Dagster or dbt.
Per-stage times of the pipeline come from its run's Dagster event log (start-up = process start to
the run's start; dbt; data-quality checks; ML = ingestion, training, validation, scoring, drift;
publication; Dagster's own time between steps; exit = run end to process end). Peak RSS is each
process's own (with its dbt children) from wait4(). The machine may be shared: compare the ratio of
alternating runs rather than absolute times. The last line is `ratio_wall_median=<x>`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_process(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, float, float, str]:
    """(started epoch, wall seconds, CPU seconds, peak RSS MB, stdout) of one whole process.

    CPU seconds (user + system) and peak RSS are the process's own with its waited-for children
    (e.g. dbt), from wait4(); CPU time varies much less than wall time on a busy machine.
    """
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        started_epoch, started = time.time(), time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{stderr.read()[-3000:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return started_epoch, wall, cpu, usage.ru_maxrss / 1024, stdout.read()


STAGE_OF_STEP = (
    ("dbt", ("dbt",)),
    ("checks", ("__expectations", "scores_are_complete", "_check")),
    ("publication", ("published_scores",)),
)


def stage_of(step_key: str) -> str:
    for stage, markers in STAGE_OF_STEP:
        if any(marker in step_key for marker in markers):
            return stage
    return "ML"


def pipeline_stages(dagster_home: Path, started_epoch: float, wall: float) -> dict[str, float]:
    """Start-up, dbt, checks, ML, publication, Dagster between steps, exit: from the run's event log."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run = instance.get_runs(limit=1)[0]
        records = instance.all_logs(run.run_id)
    starts, stages = {}, defaultdict(float)
    run_start = run_end = None
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == dg.DagsterEventType.RUN_START:
            run_start = record.timestamp
        elif kind in (dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE):
            run_end = record.timestamp
        elif kind == dg.DagsterEventType.STEP_START:
            starts[record.step_key] = record.timestamp
        elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE) and record.step_key in starts:
            stages[stage_of(record.step_key)] += record.timestamp - starts[record.step_key]
    steps_total = sum(stages.values())
    return {
        "start-up": run_start - started_epoch,
        "dbt": stages["dbt"],
        "checks": stages["checks"],
        "ML": stages["ML"],
        "publication": stages["publication"],
        "dagster between steps": (run_end - run_start) - steps_total,
        "exit": started_epoch + wall - run_end,
    }


def pipeline_environment(home: Path, root: Path) -> dict[str, str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    return {**os.environ, "MLOPS_HOME": str(home / "var"), "DAGSTER_HOME": str(dagster_home)}


def bare_script(home: Path) -> dict[str, float]:
    """The same ML work without Dagster or dbt; returns seconds per stage (after imports)."""
    sys.path.insert(0, str(ROOT))
    import duckdb
    import pandas as pd

    from mlops_assets.ml.datasets import assign_splits
    from mlops_assets.ml.evaluation import classification_metrics
    from mlops_assets.ml.training import predict_proba, train_propensity_model
    from mlops_assets.publishing import publish_tables
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case("caravan")
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        stages[name] = now - clock
        clock = now

    connection = duckdb.connect(str(home / "bare.duckdb"))
    connection.execute(
        f"create table raw as select printf('CV%07d', row_number() over ()) as customer_id, * "
        f"from read_csv('{use_case.source_path}', header = true, all_varchar = true)"
    )
    lap("ingest")
    dictionary = use_case.load_data_dictionary()
    renames = [
        f"cast({row.source_column} as integer) as {row.feature_name}"
        for row in dictionary.itertuples()
        if row.value_type not in ("target", "identifier")
    ]
    counts = [n for n in dictionary["feature_name"] if n.startswith("num_")]
    contributions = [n for n in dictionary["feature_name"] if n.startswith("contribution_")]
    connection.execute(
        f"""
        create table features as
        with staged as (
            select customer_id, {", ".join(renames)},
                   case Purchase when 'Yes' then 1 when 'No' then 0 end as {use_case.target}
            from raw
        )
        select *, {" + ".join(counts)} as total_policies,
               {" + ".join(f"({c} > 0)::integer" for c in counts)} as policy_types_held,
               {" + ".join(contributions)} as total_contribution_class
        from staged
        """
    )
    features = connection.execute("select * from features").fetchdf()
    lap("features (SQL)")
    features["split"] = assign_splits(features["customer_id"], features[use_case.target], seed=42)
    parts = {name: part for name, part in features.groupby("split")}
    trained = train_propensity_model(
        parts["train"], parts["validation"], use_case.features, use_case.target, use_case.training
    )
    test_scores = predict_proba(trained.booster, parts["test"], use_case.features, trained.score_offset)
    metrics = classification_metrics(parts["test"][use_case.target], test_scores)
    lap("split, train, evaluate")
    scores = predict_proba(trained.booster, features, use_case.features, trained.score_offset)
    table = pd.DataFrame({"customer_id": features["customer_id"], "score": scores})
    table["rank"] = table["score"].rank(ascending=False, method="first").astype(int)
    table["decile"] = (table["rank"] * 10 - 1) // len(table) + 1
    table["scored_at"] = datetime.now(UTC).replace(tzinfo=None)
    lap("score")
    publish_tables(home / "bare_published.duckdb", {"customer_scores": table})
    lap("publish")
    connection.close()
    if metrics["roc_auc"] <= 0.7:
        raise SystemExit(f"bare script: test ROC AUC {metrics['roc_auc']:.3f}, expected above 0.7")
    return stages


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=3, help="alternating pipeline / bare script pairs (>= 3)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose pipeline is timed (default: this)")
    parser.add_argument("--bare", type=Path, help=argparse.SUPPRESS)  # internal: run the bare script here
    args = parser.parse_args()
    if args.bare:
        print("STAGES " + json.dumps(bare_script(args.bare)))
        return
    if args.pairs < 3:
        parser.error("--pairs must be at least 3")

    root = args.root.resolve()
    pipeline_command = [sys.executable, "-m", "mlops_assets.cli", "run"]
    pipeline_walls, bare_walls, pipeline_rss, bare_rss, pipeline_cpu, bare_cpu = [], [], [], [], [], []
    pipeline_stage_runs, bare_stage_runs = [], []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as pipeline_home:
        env = pipeline_environment(Path(pipeline_home), root)
        started, first_wall, _, first_rss, _ = timed_process(pipeline_command, root, env)
        first_stages = pipeline_stages(Path(pipeline_home) / "dagster_home", started, first_wall)
        print(f"first run in a new home (untimed warm-up): {first_wall:.1f} s, peak RSS {first_rss:.0f} MB", flush=True)
        for pair in range(args.pairs):
            started, wall, cpu, rss, _ = timed_process(pipeline_command, root, env)
            pipeline_walls.append(wall)
            pipeline_cpu.append(cpu)
            pipeline_rss.append(rss)
            pipeline_stage_runs.append(pipeline_stages(Path(pipeline_home) / "dagster_home", started, wall))
            with tempfile.TemporaryDirectory(prefix="bench-bare-") as bare_home:
                _, wall, cpu, rss, stdout = timed_process(
                    [sys.executable, str(Path(__file__).resolve()), "--bare", bare_home], ROOT, dict(os.environ)
                )
            bare_walls.append(wall)
            bare_cpu.append(cpu)
            bare_rss.append(rss)
            bare_stage_runs.append(json.loads(stdout.split("STAGES ", 1)[1]))
            print(
                f"pair {pair + 1}: pipeline {pipeline_walls[-1]:.2f} s, bare script {bare_walls[-1]:.2f} s, "
                f"ratio {pipeline_walls[-1] / bare_walls[-1]:.2f} "
                f"(CPU {pipeline_cpu[-1]:.1f} s / {bare_cpu[-1]:.1f} s)",
                flush=True,
            )

    def medians(runs: list[dict[str, float]]) -> dict[str, float]:
        return {name: statistics.median(run[name] for run in runs) for name in runs[0]}

    pipeline_wall, bare_wall = statistics.median(pipeline_walls), statistics.median(bare_walls)
    ratios = [p / b for p, b in zip(pipeline_walls, bare_walls, strict=True)]
    print(f"\nCaravan, 5,822 customers, whole processes, {args.pairs} alternating pairs (medians)")
    print(
        f"  pipeline `mlops run`:  {pipeline_wall:6.2f} s wall"
        f"  (range {min(pipeline_walls):.2f}-{max(pipeline_walls):.2f})"
    )
    print(f"  bare script:           {bare_wall:6.2f} s wall  (range {min(bare_walls):.2f}-{max(bare_walls):.2f})")
    cpu_ratio = statistics.median(p / b for p, b in zip(pipeline_cpu, bare_cpu, strict=True))
    print(
        f"  CPU (user + system): pipeline {statistics.median(pipeline_cpu):.2f} s,"
        f" bare {statistics.median(bare_cpu):.2f} s, ratio {cpu_ratio:.2f}"
    )
    print(f"  peak RSS: pipeline {max(pipeline_rss):.0f} MB (with its dbt processes), bare {max(bare_rss):.0f} MB")
    print("  pipeline stages (median s)            first run")
    for (name, seconds), first in zip(medians(pipeline_stage_runs).items(), first_stages.values(), strict=True):
        print(f"    {name:32s} {seconds:6.2f}   {first:6.2f}")
    bare_stages = medians(bare_stage_runs)
    print("  bare script stages (median s)")
    print(f"    {'start-up (interpreter, imports)':32s} {bare_wall - sum(bare_stages.values()):6.2f}")
    for name, seconds in bare_stages.items():
        print(f"    {name:32s} {seconds:6.2f}")
    print(f"  ratio per pair: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"ratio_wall_median={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
