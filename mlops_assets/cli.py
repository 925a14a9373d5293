"""The `mlops` command: run pipelines, decide on models, and answer audit questions.

    mlops run [--use-case caravan] [--source FILE --format csv|parquet]
    mlops replay --scenario persona_shift --batch 1 [--strength 0.8]   next simulated batch
    mlops replay --use-case swiss_bank --scenario regime_change|seasonal --batch 1
    mlops batch --customers FILE [--outcomes FILE]   a batch: load, check, score, publish, monitor
    mlops retrain [--reason TEXT]
    mlops synthetic --customers 1000000 [--persona-shift 0.5]   synthetic Swiss bank customers
    mlops models                                   every model with status, metrics, decision
    mlops approve  --version V --approver NAME [--comment TEXT]
    mlops reject   --version V --reviewer NAME [--comment TEXT]
    mlops rollback --version V --actor NAME [--comment TEXT]
    mlops model-card --version V
    mlops audit --customer ID [--date YYYY-MM-DD]
    mlops review accept|reject --load ID --by NAME --why TEXT   decide on a batch held for review
    mlops quality-suites                           regenerate the Great Expectations suites
    mlops serve [--host 127.0.0.1] [--port 8080]   the scoring service (README "Scoring service")

Decisions run the same Dagster jobs as the UI (recorded in the Dagster instance of DAGSTER_HOME, by
default dagster_home/), so scores are re-published with the new champion straight away.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from mlops_assets.settings import PROJECT_ROOT

QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _instance():
    import dagster as dg

    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / "dagster_home"))
    return dg.DagsterInstance.get()


def _root_message(error) -> str:
    while error is not None and error.cause is not None:
        error = error.cause
    return error.message.strip() if error is not None else "failed"


def failure_lines(result) -> list[str]:
    """What went wrong in a run: each failed step's underlying error and each failed check."""
    lines = []
    for event in result.all_events:
        if event.is_step_failure:
            lines.append(f"step {event.step_key}: {_root_message(event.step_failure_data.error)}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                key = evaluation.asset_key.to_user_string()
                lines.append(f"check {key}:{evaluation.check_name}: {evaluation.description}")
    return lines


def _definitions_for_job(job_name: str):
    """Only the definitions of the use case the job belongs to (jobs are named `<use case>_<job>`):
    a command pays for building one use case, not every use case of the code location.

    The modules and definitions built here live as long as the command, so they are moved out of
    the garbage collector's sight (gc.freeze), and so is everything else when the command exits:
    Python's collections over the whole heap of dagster, dbt, GX, pandas... cost seconds per run
    and at exit here (measured: exit 15 s -> 2 s on the loaded 2-core machine). Nothing is lost:
    connections and files are closed and committed by then, and atexit handlers still run.
    """
    import atexit
    import gc

    from mlops_assets.definitions import build_definitions
    from mlops_assets.use_cases import all_use_cases

    owners = [u for u in all_use_cases() if job_name.startswith(f"{u.name}_")]
    if not owners:
        raise SystemExit(f"no use case has a job {job_name!r}")
    definitions = build_definitions(use_cases=(max(owners, key=lambda u: len(u.name)),))
    gc.freeze()
    atexit.register(gc.freeze)
    return definitions


def _execute(job_name: str, run_config: dict, tags: dict | None = None):
    job = _definitions_for_job(job_name).resolve_job_def(job_name)
    result = job.execute_in_process(
        instance=_instance(), run_config={**QUIET_LOGS, **run_config}, tags=tags, raise_on_error=False
    )
    if not result.success:
        print(f"\nRun {result.run_id} failed.", file=sys.stderr)
        for line in failure_lines(result):
            print(f"  {line}", file=sys.stderr)
        print("The last published scores, if any, were left untouched.", file=sys.stderr)
    return result


def _published_summary(use_case_name: str, run_id: str) -> str:
    from mlops_assets.defs.scoring import MARKETING_QUERY
    from mlops_assets.settings import Settings

    settings = Settings.from_env()
    published = settings.published_dir / f"{use_case_name}.duckdb"
    duckdb_cli = Path(sys.executable).with_name("duckdb")
    return f"""
Run {run_id} succeeded.
  Warehouse (DuckDB):   {settings.duckdb_path}
  Score table:          {use_case_name}.customer_scores in the warehouse
  Published for marketing (safe to read while pipelines run):
                        {published}  (table customer_scores, model info in table publication)
  Try:
    {duckdb_cli} -readonly {published} "{MARKETING_QUERY} LIMIT 20"
"""


def run_pipeline(args: argparse.Namespace) -> int:
    from mlops_assets.defs.jobs import pipeline_job_name
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    run_config: dict = {}
    if args.source:
        ingestion_config = {"source_path": os.path.abspath(args.source)}
        if args.format:
            ingestion_config["source_format"] = args.format
        run_config["ops"] = {f"{use_case.name}__raw_customers": {"config": ingestion_config}}
    result = _execute(pipeline_job_name(use_case), run_config)
    if not result.success:
        return 1
    print(_published_summary(use_case.name, result.run_id))
    return 0


def replay(args: argparse.Namespace) -> int:
    from mlops_assets.replay import write_replay_files
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    if not use_case.replay:
        raise SystemExit(f"use case {use_case.name} has no replay generator")
    folder = Settings.from_env().incoming_dir / use_case.name
    paths = write_replay_files(
        use_case.source_path,
        folder,
        args.scenario,
        batch_number=args.batch,
        size=args.size,
        seed=args.seed,
        strength=args.strength,
        ramp_batches=args.ramp,
        change_batch=args.change_batch,
        bug=args.bug,
        with_outcomes=not args.no_outcomes,
        generator=use_case.replay,
    )
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    print(f"`make dev` picks these up (sensor {use_case.name}_incoming_files), or run: mlops batch --customers ...")
    return 0


def run_batch(args: argparse.Namespace) -> int:
    from mlops_assets.defs.jobs import batch_job_name, trigger_tags
    from mlops_assets.ingestion import export_ingestion_config
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    raw_config = export_ingestion_config(Path(args.customers).resolve())
    outcomes = {"outcomes_path": str(Path(args.outcomes).resolve()) if args.outcomes else ""}
    ops = {
        f"{use_case.name}__raw_customers": {"config": raw_config},
        f"{use_case.name}__raw_outcomes": {"config": outcomes},
    }
    result = _execute(batch_job_name(use_case), {"ops": ops}, trigger_tags("manual", {"command": "mlops batch"}))
    if not result.success:
        return 1
    print(_published_summary(use_case.name, result.run_id))
    return 0


def retrain(args: argparse.Namespace) -> int:
    from mlops_assets.defs.jobs import retrain_job_name, trigger_tags
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    result = _execute(retrain_job_name(use_case), {}, trigger_tags("manual", {"reason": args.reason}))
    if not result.success:
        return 1
    print(_published_summary(use_case.name, result.run_id))
    return 0


def generate_synthetic(args: argparse.Namespace) -> int:
    from mlops_assets.synthetic.swiss_bank import write_parquet
    from mlops_assets.use_cases import get_use_case

    path = Path(args.out) if args.out else get_use_case("swiss_bank").source_path
    started = time.perf_counter()
    write_parquet(path, args.customers, seed=args.seed, persona_shift=args.persona_shift)
    print(f"{path}: {args.customers:,} customers in {time.perf_counter() - started:.1f} s")
    return 0


def decide_on_model(args: argparse.Namespace) -> int:
    from mlops_assets.defs.jobs import approval_job_name, rollback_job_name
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    actor = args.approver if args.command == "approve" else args.reviewer if args.command == "reject" else args.actor
    config = {"action": args.command, "model_version": args.version, "actor": actor, "comment": args.comment}
    job_name = rollback_job_name(use_case) if args.command == "rollback" else approval_job_name(use_case)
    result = _execute(job_name, {"ops": {f"{use_case.name}__champion_model": {"config": config}}})
    if not result.success:
        return 1
    print(f"{args.command}: {args.version} by {actor} recorded.")
    if args.command != "reject":
        print(_published_summary(use_case.name, result.run_id))
    return 0


def _read_only_warehouse():
    import duckdb

    from mlops_assets.settings import Settings

    path = Settings.from_env().duckdb_path
    if not path.exists():
        raise SystemExit(f"{path}: no warehouse yet; run `mlops run` first")
    return duckdb.connect(str(path), read_only=True)


def list_models(args: argparse.Namespace) -> int:
    from mlops_assets.registry import models_overview

    with _read_only_warehouse() as connection:
        print(models_overview(connection, args.use_case).to_string(index=False))
    return 0


def show_model_card(args: argparse.Namespace) -> int:
    from mlops_assets.lifecycle import model_card
    from mlops_assets.use_cases import get_use_case

    with _read_only_warehouse() as connection:
        print(model_card(connection, get_use_case(args.use_case), args.version))
    return 0


def audit(args: argparse.Namespace) -> int:
    import json

    from mlops_assets.registry import audit_customer

    with _read_only_warehouse() as connection:
        rows = audit_customer(connection, args.use_case, args.customer, args.date)
    if rows.empty:
        print(f"No published score for customer {args.customer}" + (f" on {args.date}" if args.date else ""))
        return 1
    for row in rows.itertuples(index=False):
        reasons = json.loads(row.reasons) if row.reasons else []
        fairness = json.loads(row.fairness) if row.fairness else {}
        fairness_text = "passed" if fairness.get("passed") else "failed" if fairness else "n/a"
        ratio = fairness.get("demographic_parity_ratio")
        reason_text = "; ".join(f"{r['label']} = {r['value']} ({r['contribution']:+.3f})" for r in reasons)
        print(
            f"""
Published {row.published_at} (publication {row.publication_id})
  Score {row.score:.4f}, rank {row.rank}, decile {row.decile}
  Model {row.model_version} (sha256 {row.model_sha256}), trained {row.trained_at}
    training data: {row.training_rows} labelled customers, window {row.training_window},
                   fingerprint {row.training_set_fingerprint}
    trigger: {row.trigger} {row.trigger_reason}; code {row.code_version}; training run {row.training_run_id}
  Validation: {row.validation_decision} against {row.validated_against or "no champion"} at {row.validated_at}
    {"; ".join(json.loads(row.validation_reasons)) if row.validation_reasons else ""}
    fairness: {fairness_text}, selection-rate ratio {f"{ratio:.2f}" if ratio is not None else "n/a"}
  Approved by {row.approved_by} at {row.approved_at}: {row.approval_reason}
  Reasons for this score: {reason_text or "not explained (outside the explained top share)"}"""
        )
    return 0


def review_batch(args: argparse.Namespace) -> int:
    """Accept or reject a batch held by the drift policy; an accepted batch is loaded and admitted."""
    from mlops_assets.defs.jobs import batch_job_name, trigger_tags
    from mlops_assets.ingestion import export_ingestion_config
    from mlops_assets.review import ACCEPTED, REJECTED, ReviewError, decide
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case
    from mlops_assets.warehouse import warehouse_connection

    use_case = get_use_case(args.use_case)
    decision = ACCEPTED if args.action == "accept" else REJECTED
    try:
        with warehouse_connection(str(Settings.from_env().duckdb_path)) as connection:
            source_file, _ = decide(connection, use_case.name, args.load, decision, args.by, args.why)
    except ReviewError as error:
        print(f"review not recorded: {error}", file=sys.stderr)
        return 1
    print(f"load {args.load}: {decision} by {args.by} ({args.why})")
    if decision == REJECTED:
        return 0
    ops = {
        f"{use_case.name}__raw_customers": {"config": export_ingestion_config(Path(source_file))},
        f"{use_case.name}__raw_outcomes": {"config": {"outcomes_path": ""}},
    }
    tags = trigger_tags("manual", {"command": "mlops review accept", "load_id": args.load})
    result = _execute(batch_job_name(use_case), {"ops": ops}, tags)
    if not result.success:
        return 1
    print(_published_summary(use_case.name, result.run_id))
    return 0


def generate_quality_suites(args: argparse.Namespace) -> int:
    import duckdb

    from mlops_assets.quality.expectations import build_suites, write_suite
    from mlops_assets.settings import Settings
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    database = args.warehouse or str(Settings.from_env().duckdb_path)
    with duckdb.connect(database, read_only=True) as connection:
        staged = connection.execute(f"select * from {use_case.name}.stg_customers").fetchdf()
        mart = connection.execute(f"select * from {use_case.name}.{use_case.feature_mart}").fetchdf()
    for asset, suite in build_suites(use_case, staged, mart).items():
        path = write_suite(use_case.name, asset, suite)
        print(f"{path}: {len(suite['expectations'])} expectations")
    return 0


def serve(args: argparse.Namespace) -> int:
    from mlops_assets.serving.server import serve as run_service

    return run_service(args.host, args.port, args.serve_use_case)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--use-case", default="caravan")
        sub.set_defaults(handler=handler)
        return sub

    run = command("run", run_pipeline, "materialize a use case end to end and publish its scores")
    run.add_argument("--source", help="load this CSV or Parquet export instead of the use case's default")
    run.add_argument("--format", choices=["csv", "parquet"], help="format of --source")
    command("models", list_models, "list every model with its status, metrics and latest decision")
    replay_command = command("replay", replay, "write the next simulated batch into the incoming folder")
    replay_command.add_argument(
        "--scenario",
        choices=["stationary", "persona_shift", "data_bug", "regime_change", "seasonal"],
        required=True,
        help="regime_change and seasonal: --use-case swiss_bank (macro and calendar columns)",
    )
    replay_command.add_argument("--batch", type=int, required=True, help="batch number (1, 2, ...)")
    replay_command.add_argument("--size", type=int, default=2000)
    replay_command.add_argument("--seed", type=int, default=0)
    replay_command.add_argument("--strength", type=float, default=0.5, help="persona_shift strength in [0, 1]")
    replay_command.add_argument("--ramp", type=int, default=1, help="the shift reaches --strength after N batches")
    replay_command.add_argument("--change-batch", type=int, default=1, help="regime_change: first changed batch")
    replay_command.add_argument("--bug", choices=["empty_column", "unit_change"], default="empty_column")
    replay_command.add_argument("--no-outcomes", action="store_true", help="do not write the batch's outcomes")
    synthetic = command("synthetic", generate_synthetic, "generate synthetic Swiss bank customers (Parquet)")
    synthetic.add_argument("--customers", type=int, default=100_000)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--persona-shift", type=float, default=0.0, help="0 = old buyer persona, 1 = new")
    synthetic.add_argument("--out", help="default: the swiss_bank use case's source path")
    batch_command = command("batch", run_batch, "load a batch export (and outcomes), check, score, publish")
    batch_command.add_argument("--customers", required=True, help="the batch's customer export")
    batch_command.add_argument("--outcomes", help="an outcome file to load with it")
    retrain_command = command("retrain", retrain, "retrain, validate against the champion, decide, re-score")
    retrain_command.add_argument("--reason", default="requested from the command line")
    for name, person in (("approve", "approver"), ("reject", "reviewer"), ("rollback", "actor")):
        sub = command(name, decide_on_model, f"{name} a model (recorded with who and why)")
        sub.add_argument("--version", required=True, help="model version")
        sub.add_argument(f"--{person}", required=True, help="your name, recorded in the audit trail")
        sub.add_argument("--comment", default="", help="why, recorded in the audit trail")
    card = command("model-card", show_model_card, "print a model version's model card (markdown)")
    card.add_argument("--version", required=True)
    audit_command = command("audit", audit, "every score published for a customer, with the full chain")
    audit_command.add_argument("--customer", required=True)
    audit_command.add_argument("--date", help="only scores published on this date (YYYY-MM-DD)")
    review = command("review", review_batch, "accept or reject a batch held by the drift policy `review`")
    review.add_argument("action", choices=["accept", "reject"])
    review.add_argument("--load", required=True, help="the held load id (see the batch_held alert)")
    review.add_argument("--by", required=True, help="your name, recorded in batch_reviews")
    review.add_argument("--why", required=True, help="why, recorded in batch_reviews")
    suites = command(
        "quality-suites",
        generate_quality_suites,
        "(re)generate the Great Expectations suites from the data dictionary and accepted reference data",
    )
    suites.add_argument("--warehouse", help="DuckDB file to profile (default: the local warehouse)")
    service = commands.add_parser("serve", help="run the scoring service (HTTP, bound to 127.0.0.1 by default)")
    service.add_argument("--host", default="127.0.0.1")
    service.add_argument("--port", type=int, default=8080)
    service.add_argument("--use-case", dest="serve_use_case", action="append", help="repeatable; default caravan")
    service.set_defaults(handler=serve)
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
