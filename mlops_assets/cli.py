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
    mlops quality-suites                           rewrite the suite files from the data dictionary
    mlops serve [--host 127.0.0.1] [--port 8080] [--workers 2]   the scoring service (README "Scoring service")
    mlops new-use-case NAME --from FILE --target COLUMN [--id COLUMN] [--positive VALUE] ...
                                                   a new use case from one export (README walkthrough)

Commands that run a job take --json (summary for scripts), --verbose (Dagster's and dbt's log lines on
the terminal instead of a log file) and --no-wait (refuse when a run of the use case is in progress).
Exit status: 0 done; 1 the run failed or did not publish although it should have; 2 refused (busy);
3 done, but checks failed (listed in the summary).

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


def failure_lines(result) -> list[str]:
    """What went wrong in a run: each failed step's underlying error and each failed check."""
    from mlops_assets.run_console import RunSummary, collect_events

    summary = RunSummary("", "", "", None, result.success, False)
    collect_events(summary, result.all_events)
    return [
        *(f"step {line}" for line in summary.failed_steps),
        *(f"check {line}" for line in summary.failed_checks_blocking + summary.failed_checks_other),
    ]


def command_user() -> str:
    """Who runs this command: MLOPS_USER (set by the review pages to the logged-in reviewer, who acts
    through this command) or else the OS account. Recorded as the run's launcher (four-eyes rule)."""
    import getpass

    return os.environ.get("MLOPS_USER") or getpass.getuser()


def _wait_for_daemon_runs(instance, use_case: str, wait: bool, say) -> None:
    """Runs of the use case launched by the daemon (sensors, schedules, UI) finish first."""
    from mlops_assets.run_guard import UseCaseBusyError, active_runs_of_use_case, recover_abandoned_runs

    announced = False
    while runs := active_runs_of_use_case(instance, use_case):
        run = runs[0]
        text = f"run {run.run_id} ({run.job_name}, {run.status.value}) of use case {use_case} is in progress"
        if not wait:
            raise UseCaseBusyError(text)
        if not announced:
            say(f"Waiting: {text}. Ctrl-C to give up.")
            announced = True
        time.sleep(2)
        recover_abandoned_runs(instance)


def _definitions_for_job(job_name: str):
    """Only the definitions of the use case the job belongs to (jobs are named `<use case>_<job>`):
    a command pays for building one use case, not every use case of the code location.

    The modules and definitions built here live as long as the command, so they are moved out of
    the garbage collector's sight (gc.freeze) for the run: Python's collections over the whole heap
    of dagster, dbt, GX, pandas... cost seconds per run here. The command then ends without
    finalizing that heap (see `entry_point`).
    """
    import gc

    from mlops_assets.definitions import build_definitions
    from mlops_assets.use_cases import all_use_cases

    owners = [u for u in all_use_cases() if job_name.startswith(f"{u.name}_")]
    if not owners:
        raise SystemExit(f"no use case has a job {job_name!r}")
    definitions = build_definitions(use_cases=(max(owners, key=lambda u: len(u.name)),))
    gc.freeze()
    return definitions


def _execute(args: argparse.Namespace, job_name: str, run_config: dict, tags: dict | None = None) -> int:
    """Run a job in this process: one run of the use case at a time, abandoned runs recovered first,
    progress per step, Dagster's and dbt's lines in a log file, and a summary of what happened."""
    import socket
    import uuid
    from datetime import UTC, datetime

    from mlops_assets.defs.jobs import LAUNCHED_BY_TAG
    from mlops_assets.run_console import EXIT_BUSY, Progress, RunSummary, collect_events, finish_summary, output_to_log
    from mlops_assets.run_guard import HOST_TAG, UseCaseBusyError, recover_abandoned_runs, use_case_lock
    from mlops_assets.settings import Settings
    from mlops_assets.warehouse import ConfigurationError

    started = time.perf_counter()
    settings = Settings.from_env()
    use_case = args.use_case
    log_path = (
        None
        if args.verbose
        else settings.home / "logs" / f"{args.command}-{use_case}-{datetime.now(UTC):%Y%m%dT%H%M%S}.log"
    )
    print(
        f"mlops {args.command} ({use_case}): starting"
        + (f"; Dagster and dbt log lines go to {log_path}" if log_path else ""),
        file=sys.stderr,
        flush=True,
    )
    summary = RunSummary(
        command=args.command,
        use_case=use_case,
        job=job_name,
        run_id=None,
        succeeded=False,
        expects_publication=args.command != "reject",
        log_file=str(log_path) if log_path else None,
    )
    try:
        with (
            use_case_lock(
                settings.home / "locks",
                use_case,
                wait=not args.no_wait,
                on_wait=lambda text: print(text, file=sys.stderr, flush=True),
            ),
            output_to_log(log_path) as (_, terminal),
        ):
            progress = Progress(None, "", terminal, started)
            instance = _instance()
            summary.recovered_runs = recover_abandoned_runs(instance)
            for line in summary.recovered_runs:
                progress.line(f"recovered: {line}")
            _wait_for_daemon_runs(instance, use_case, not args.no_wait, progress.line)
            progress.line("loading the pipeline definitions")
            job = _definitions_for_job(job_name).resolve_job_def(job_name)
            summary.run_id = str(uuid.uuid4())
            progress.line(f"run {summary.run_id} of {job_name} started")
            with Progress(instance, summary.run_id, terminal, started):
                result = job.execute_in_process(
                    instance=instance,
                    run_config={**QUIET_LOGS, **run_config},
                    tags={**(tags or {}), HOST_TAG: socket.gethostname(), LAUNCHED_BY_TAG: command_user()},
                    run_id=summary.run_id,
                    raise_on_error=False,
                )
    except UseCaseBusyError as error:
        print(f"Refused: {error}. Run again without --no-wait to queue behind it.", file=sys.stderr)
        return EXIT_BUSY
    except ConfigurationError as error:
        print(f"Not run: {error}", file=sys.stderr)
        return 1
    summary.succeeded = result.success
    collect_events(summary, result.all_events)
    finish_summary(summary, settings.published_dir / f"{use_case}.duckdb", settings.duckdb_path)
    print(summary.to_json() if args.json else summary.to_text())
    if not args.json and summary.published:
        duckdb_cli = Path(sys.executable).with_name("duckdb")
        print(f'  Try: {duckdb_cli} -readonly {summary.published_file} "{MARKETING_QUERY} LIMIT 20"')
    return summary.exit_code()


# What marketing typically asks the published file (kept here so the CLI need not import the assets).
MARKETING_QUERY = (
    "SELECT customer_id, score, rank, decile, model_version FROM customer_scores WHERE decile = 1 ORDER BY rank"
)


def run_pipeline(args: argparse.Namespace) -> int:
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    run_config: dict = {}
    if args.source:
        ingestion_config = {"source_path": os.path.abspath(args.source)}
        if args.format:
            ingestion_config["source_format"] = args.format
        run_config["ops"] = {f"{use_case.name}__raw_customers": {"config": ingestion_config}}
    return _execute(args, f"{use_case.name}_pipeline", run_config)


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
    raw_config = export_ingestion_config(Path(args.customers).resolve(), use_case.source)
    outcomes = {"outcomes_path": str(Path(args.outcomes).resolve()) if args.outcomes else ""}
    ops = {
        f"{use_case.name}__raw_customers": {"config": raw_config},
        f"{use_case.name}__raw_outcomes": {"config": outcomes},
    }
    return _execute(args, batch_job_name(use_case), {"ops": ops}, trigger_tags("manual", {"command": "mlops batch"}))


def retrain(args: argparse.Namespace) -> int:
    from mlops_assets.defs.jobs import retrain_job_name, trigger_tags
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    return _execute(args, retrain_job_name(use_case), {}, trigger_tags("manual", {"reason": args.reason}))


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
    code = _execute(args, job_name, {"ops": {f"{use_case.name}__champion_model": {"config": config}}})
    if code == 0 and not args.json:
        print(f"{args.command}: {args.version} by {actor} recorded.")
    return code


def _read_only_warehouse(use_case: str):
    """The warehouse read-only, or while a run holds it the registry's read copy (see read_only.py)."""
    from mlops_assets.read_only import reading_connection
    from mlops_assets.settings import Settings

    settings = Settings.from_env()
    return reading_connection(
        settings.duckdb_path, settings.published_dir, use_case, lambda text: print(text, file=sys.stderr)
    )


def list_models(args: argparse.Namespace) -> int:
    from mlops_assets.read_only import format_table, models_overview_rows

    with _read_only_warehouse(args.use_case) as connection:
        print(format_table(*models_overview_rows(connection, args.use_case)))
    return 0


def show_model_card(args: argparse.Namespace) -> int:
    """The card as last rendered (on every status change) from the registry; rendered now if none is."""
    import duckdb

    from mlops_assets.warehouse import table_exists

    with _read_only_warehouse(args.use_case) as connection:
        card = None
        if table_exists(connection, args.use_case, "model_cards"):
            rows = connection.execute(
                f"""select card_markdown from {args.use_case}.model_cards where model_version = ?
                    order by created_at desc limit 1""",
                [args.version],
            ).fetchall()
            card = rows[0][0] if rows else None
        # Rendering a card needs the whole registry: the warehouse, not the read copy (it has the cards).
        if card is None and not table_exists(connection, "main", "read_copy"):
            from mlops_assets.lifecycle import model_card
            from mlops_assets.registry import RegistryError
            from mlops_assets.use_cases import get_use_case

            try:
                card = model_card(connection, get_use_case(args.use_case), args.version)
            except (RegistryError, duckdb.Error) as error:
                print(f"No model {args.version} in use case {args.use_case}: {error}", file=sys.stderr)
                return 1
    if card is None:
        print(f"No model card of {args.version} in use case {args.use_case}", file=sys.stderr)
        return 1
    print(card)
    return 0


def audit(args: argparse.Namespace) -> int:
    import json

    from mlops_assets.ml.fairness_summary import fairness_summary
    from mlops_assets.read_only import audit_rows

    with _read_only_warehouse(args.use_case) as connection:
        rows = audit_rows(connection, args.use_case, args.customer, args.date)
    if not rows:
        print(f"No published score for customer {args.customer}" + (f" on {args.date}" if args.date else ""))
        return 1
    for row in rows:
        reasons = json.loads(row.reasons) if row.reasons else []
        fairness = json.loads(row.fairness) if row.fairness else {}
        fairness_text = fairness_summary(fairness)
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
    fairness: {fairness_text}
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
        f"{use_case.name}__raw_customers": {"config": export_ingestion_config(Path(source_file), use_case.source)},
        f"{use_case.name}__raw_outcomes": {"config": {"outcomes_path": ""}},
    }
    tags = trigger_tags("manual", {"command": "mlops review accept", "load_id": args.load})
    return _execute(args, batch_job_name(use_case), {"ops": ops}, tags)


def generate_quality_suites(args: argparse.Namespace) -> int:
    from mlops_assets.quality.expectations import build_suites, write_suite
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case(args.use_case)
    # From the dictionary and the YAML alone: no data needed (the profiled references are recorded
    # from the first accepted load, quality/reference.py).
    for asset, suite in build_suites(use_case).items():
        path = write_suite(use_case, asset, suite)
        print(f"{path}: {len(suite['expectations'])} expectations")
    return 0


def new_use_case_command(args: argparse.Namespace) -> int:
    """`mlops new-use-case`: profile the export, write the use case, refresh dbt's manifest, check it loads."""
    from mlops_assets.dbt_manifest import ensure_fresh_manifest
    from mlops_assets.onboarding import OnboardingError, new_use_case
    from mlops_assets.use_cases import load_use_case

    started = time.perf_counter()
    try:
        created = new_use_case(
            args.name,
            Path(args.source),
            args.target,
            id_column=args.id,
            time_column=args.time,
            positive=args.positive,
            sensitive=args.sensitive or [],
            delimiter=args.delimiter,
            decimal=args.decimal,
        )
    except OnboardingError as error:
        print(f"new-use-case: {error}", file=sys.stderr)
        return 1
    try:
        # No suite files to write: the suites are built from the dictionary until files exist, and the
        # unit-change reference is recorded from the first accepted load (quality/expectations.py).
        use_case = load_use_case(created.yaml_path)
        ensure_fresh_manifest()
        from mlops_assets.definitions import build_definitions

        build_definitions(use_cases=(use_case,))  # fails here, not in `dagster dev`, if anything is off
    except Exception as error:
        import shutil

        # Nothing half-written stays behind: the other use cases would fail to load with it.
        for path in [created.yaml_path, created.dictionary_path, *created.dbt_paths]:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in [created.dictionary_path, *created.dbt_paths]}:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"new-use-case: {args.name} could not be set up, nothing kept: {error}", file=sys.stderr)
        return 1
    profile = created.profile
    dialect = profile.dialect
    read_as = f", delimiter {dialect.delimiter!r}, decimal {dialect.decimal!r}" if profile.format == "csv" else ""
    print(
        f"Use case {use_case.name}: {profile.rows:,} rows, {len(profile.columns)} columns "
        f"({profile.format}{read_as}); "
        f"target {use_case.target} = 1 for {'/'.join(created.positive)}, {len(use_case.features)} features."
    )
    for path in [created.yaml_path, created.dictionary_path, *created.dbt_paths]:
        print(f"  wrote {path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}")
    print(f"Review {created.yaml_path.relative_to(PROJECT_ROOT)} (features, sensitive attributes), then run:")
    print(f"  mlops run --use-case {use_case.name}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def add_new_use_case_command(commands) -> None:
    sub = commands.add_parser(
        "new-use-case", help="profile an export and write a new use case (YAML, data dictionary, dbt files)"
    )
    sub.add_argument("name", help="the use case's name: lower-case letters, digits and _")
    sub.add_argument("--from", dest="source", required=True, help="the customer export (CSV, any dialect, or Parquet)")
    sub.add_argument("--target", required=True, help="the column telling whether the customer bought")
    sub.add_argument("--id", help="the customer id column (default: ids assigned at ingestion)")
    sub.add_argument("--time", help="a column ordering customers in time (e.g. a campaign date)")
    sub.add_argument("--positive", action="append", help="target value meaning bought (repeatable; default: yes-like)")
    sub.add_argument("--sensitive", nargs="+", help="sensitive attributes (columns) whose groups fairness compares")
    sub.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    sub.add_argument("--decimal", choices=[".", ","], help="decimal mark (default: detected)")
    sub.set_defaults(handler=new_use_case_command)


def serve(args: argparse.Namespace) -> int:
    from mlops_assets.serving.server import serve as run_service

    return run_service(args.host, args.port, args.serve_use_case, args.workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str, runs_a_job: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--use-case", default="caravan")
        sub.set_defaults(handler=handler)
        if runs_a_job:
            sub.add_argument("--json", action="store_true", help="print the summary as JSON (for scripts)")
            sub.add_argument("--verbose", action="store_true", help="Dagster's and dbt's log lines on the terminal")
            sub.add_argument(
                "--no-wait", action="store_true", help="refuse (exit 2) if a run of the use case is in progress"
            )
        return sub

    run = command("run", run_pipeline, "materialize a use case end to end and publish its scores", True)
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
    batch_command = command("batch", run_batch, "load a batch export (and outcomes), check, score, publish", True)
    batch_command.add_argument("--customers", required=True, help="the batch's customer export")
    batch_command.add_argument("--outcomes", help="an outcome file to load with it")
    retrain_command = command("retrain", retrain, "retrain, validate against the champion, decide, re-score", True)
    retrain_command.add_argument("--reason", default="requested from the command line")
    for name, person in (("approve", "approver"), ("reject", "reviewer"), ("rollback", "actor")):
        sub = command(name, decide_on_model, f"{name} a model (recorded with who and why)", True)
        sub.add_argument("--version", required=True, help="model version")
        sub.add_argument(f"--{person}", required=True, help="your name, recorded in the audit trail")
        sub.add_argument("--comment", default="", help="why, recorded in the audit trail")
    card = command("model-card", show_model_card, "print a model version's model card (markdown)")
    card.add_argument("--version", required=True)
    audit_command = command("audit", audit, "every score published for a customer, with the full chain")
    audit_command.add_argument("--customer", required=True)
    audit_command.add_argument("--date", help="only scores published on this date (YYYY-MM-DD)")
    review = command("review", review_batch, "accept or reject a batch held by the drift policy `review`", True)
    review.add_argument("action", choices=["accept", "reject"])
    review.add_argument("--load", required=True, help="the held load id (see the batch_held alert)")
    review.add_argument("--by", required=True, help="your name, recorded in batch_reviews")
    review.add_argument("--why", required=True, help="why, recorded in batch_reviews")
    command(
        "quality-suites",
        generate_quality_suites,
        "(re)write the Great Expectations suite files from the data dictionary (no data needed)",
    )
    service = commands.add_parser("serve", help="run the scoring service (HTTP, bound to 127.0.0.1 by default)")
    service.add_argument("--host", default="127.0.0.1")
    service.add_argument("--port", type=int, default=8080)
    service.add_argument("--use-case", dest="serve_use_case", action="append", help="repeatable; default caravan")
    service.add_argument(
        "--workers", type=int, default=1, help="worker processes on one socket (one a core; README: Scoring service)"
    )
    service.set_defaults(handler=serve)
    add_new_use_case_command(commands)
    args = parser.parse_args(argv)
    return args.handler(args)


def entry_point() -> None:
    """The `mlops` command: `main`, then the process ends as soon as its output is flushed.

    Finalizing the interpreter's heap at exit bought nothing and cost seconds: frozen objects (see
    `_definitions_for_job`) are never finalized, and DuckDB's bindings then print hundreds of
    "nanobind: leaked ..." lines; unfreezing them first made that final collection cost about 3 s
    (2.9-3.2 s against 0.15 s, load 2). Every connection and file is closed by the time `main`
    returns, so nothing is lost by skipping it.
    """
    import gc
    import logging

    # A young-generation collection every 50,000 allocations instead of Python's 700: the imports and
    # runs of dagster, dbt and GX create millions of long-lived objects, and the default made `mlops
    # run` spend 2.4-3.1 s in 1,481 young, 135 middle and 11 full collections (gc.callbacks, caravan);
    # with this, 0.9-1.0 s in 21 young ones, and the same peak RSS (641-646 MB against 641-643 MB; at
    # 1M swiss_bank customers 2.64 GB both ways).
    gc.set_threshold(50_000)
    try:
        code = main()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
