"""Great Expectations suites as Dagster asset checks, and the validation history they append to.

One multi-asset check per (use case, asset) runs the asset's suite once and reports one check per
group of expectations (schema, completeness, valid values, ...). Checks holding a critical
expectation are blocking: a failure stops every downstream asset, so bad data never reaches a
model or the published scores. Every expectation result is appended to
`<use case>.validation_results`; nothing there is ever overwritten.
"""

import json
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.defs.triggers import retrain_metadata
from mlops_assets.ingestion import previous_accepted_load
from mlops_assets.quality.expectations import (
    SCALE_REFERENCE,
    CheckOutcome,
    CheckSpec,
    ExpectationOutcome,
    SuiteError,
    check_is_blocking,
    columns_read,
    default_checks,
    evaluate_checks,
    load_suite,
    profile_scale_reference,
    suite_checks,
    suite_source,
    unit_change_outcomes,
    validate,
)
from mlops_assets.quality.reference import record_reference, recorded_reference
from mlops_assets.use_cases import UseCase
from mlops_assets.warehouse import quote_identifier

VALIDATION_RESULTS_COLUMNS = """
    run_id varchar, asset varchar, suite varchar, check_name varchar, expectation varchar,
    column_name varchar, severity varchar, success boolean, observed_value varchar, threshold varchar,
    unexpected_count bigint, unexpected_share double, unexpected_sample varchar, load_id varchar,
    source_file varchar, validated_at timestamp
"""
# Loaded with the columns a suite reads: the ids its failures name and the load it came from.
CONTEXT_COLUMNS = ("customer_id", "_load_id", "load_id")


def _columns_to_load(read: list[str] | None, table_columns: list[str]) -> list[str] | None:
    """The columns of the table a suite's check loads, or None for all of them. Wide raw tables and
    the score table's twelve reason columns need not be loaded whole: at 1M scores the suite took
    1.0-1.4 s with all 18 columns, 0.25 s with the two it reads and the ids."""
    if read is None:
        return None
    wanted = {*read, *CONTEXT_COLUMNS}
    columns = [c for c in table_columns if c in wanted]
    return columns if 0 < len(columns) < len(table_columns) else None


def _load_of(frame: pd.DataFrame, connection, schema: str) -> tuple[str | None, str | None]:
    """The load the validated rows came from, and its source file, for messages that name the file."""
    column = "_load_id" if "_load_id" in frame.columns else "load_id" if "load_id" in frame.columns else None
    if column is None or frame.empty:
        return None, None
    load_id = str(frame[column].iloc[0])
    rows = connection.execute(
        f"select source_file from {schema}.raw_customer_loads where load_id = ?", [load_id]
    ).fetchall()
    return load_id, rows[0][0] if rows else None


def _outcomes_table(outcomes: list[ExpectationOutcome]) -> pd.DataFrame:
    """The validation report of one check: failed expectations first."""
    ordered = sorted(outcomes, key=lambda o: o.success)
    return pd.DataFrame(
        [
            {
                "result": "passed" if o.success else "FAILED",
                "expectation": o.expectation.removeprefix("expect_"),
                "column": o.column or "(table)",
                "severity": o.severity,
                "observed": o.observed_value,
                "expected": o.threshold,
                "unexpected": o.unexpected_count,
                "sample ids": ", ".join(o.sample_ids[:5]),
            }
            for o in ordered
        ]
    )


def _check_result(
    key: dg.AssetKey, outcome: CheckOutcome, load_id: str | None, source_file: str | None
) -> dg.AssetCheckResult:
    failed = outcome.failed
    where = f"{source_file}: " if source_file and not outcome.passed else ""
    metadata = {
        "expectations": len(outcome.expectations),
        "failed_expectations": len(failed),
        "load_id": load_id or "",
        "source_file": source_file or "",
    }
    metadata["report"] = markdown_table(_outcomes_table(outcome.expectations))
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=outcome.check.name,
        passed=outcome.passed,
        severity=dg.AssetCheckSeverity.ERROR if outcome.blocking else dg.AssetCheckSeverity.WARN,
        description=where + outcome.summary(),
        metadata=metadata,
    )


def record_validation_rows(connection, schema: str, rows: list[dict]) -> None:
    """Append outcomes (GX expectations, dbt tests, the unit-change rule) to `<schema>.validation_results`."""
    if not rows:
        return
    frame = pd.DataFrame(rows)
    connection.register("validation_rows", frame)
    connection.execute(f"create table if not exists {schema}.validation_results ({VALIDATION_RESULTS_COLUMNS})")
    connection.execute(f"insert into {schema}.validation_results by name select * from validation_rows")
    connection.unregister("validation_rows")


def _suite_or_problem(use_case: UseCase, asset: str) -> tuple[dict, str | None]:
    """The suite, or (a stand-in declaring the code's checks, the reason) when it cannot be used:
    a broken file or dictionary fails this use case's checks, never the loading of the others."""
    try:
        return load_suite(use_case, asset), None
    except SuiteError as error:
        problem = str(error)
    except Exception as error:  # the dictionary or code list the suite is built from
        problem = f"{use_case.data_dictionary_path}: cannot build the {asset} suite from it ({error})"
    checks = [
        CheckSpec(c.name, c.description, blocking=c.name != "no_extra_columns").__dict__
        for c in default_checks(use_case, asset)
    ]
    return {"name": f"{use_case.name}.{asset}", "expectations": [], "meta": {"checks": checks}}, problem


def _unit_change(connection, use_case: UseCase, table: str, load: tuple, passed: bool) -> list:
    """Unit-change outcomes against the recorded reference; without one, this load becomes the
    reference if it passed every other blocking check (the first accepted load)."""
    schema = use_case.name
    reference = recorded_reference(connection, schema, "stg_customers", SCALE_REFERENCE)
    if reference is not None:
        return unit_change_outcomes(reference["values"], connection, table, use_case.quality.unit_change_tolerance)
    if passed and load[0] is not None:
        profile = profile_scale_reference(use_case, connection, table)
        record_reference(connection, schema, "stg_customers", SCALE_REFERENCE, profile, *load)
    return []


def build_suite_checks(use_case: UseCase, asset: str, key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The asset checks of one suite, run together (GX is set up once per process, not per check)."""
    suite, problem = _suite_or_problem(use_case, asset)
    schema = use_case.name
    is_raw = asset == "raw_customers"
    specs = [
        dg.AssetCheckSpec(
            name=check.name,
            asset=key,
            blocking=check_is_blocking(suite, check),
            description=check.description,
            # Broken data is stopped, never retrained on: a retrain would only see the last good data.
            metadata=retrain_metadata(False),
        )
        for check in suite_checks(suite)
    ]
    table = f"{schema}.{key.path[-1]}"
    read = columns_read(suite)

    @dg.multi_asset_check(
        specs=specs,
        name=f"{schema}__{asset}__expectations",
        description=f"Great Expectations suite {suite['name']} ({problem or suite_source(use_case, asset)})",
        pool=WAREHOUSE_POOL,
    )
    def expectations_check(context: dg.AssetCheckExecutionContext, warehouse: Warehouse, notifier: Notifier):
        if problem:
            raise dg.Failure(description=problem)
        parameters = {}
        with warehouse.get_connection() as connection:
            table_columns = [r[0] for r in connection.execute(f"describe {table}").fetchall()]
            loaded = _columns_to_load(read, table_columns)
            selected = "*" if loaded is None else ", ".join(map(quote_identifier, loaded))
            # The staging suite's unit-change quartiles are computed in DuckDB: one row names the load.
            limit = " limit 1" if asset == "stg_customers" else ""
            frame = connection.execute(f"select {selected} from {table}{limit}").fetchdf()
            load_id, source_file = _load_of(frame, connection, schema)
            schema_columns = None if loaded is None else table_columns
            if is_raw:
                previous = (
                    previous_accepted_load(connection, schema, load_id, key.to_user_string()) if load_id else None
                )
                quality = use_case.quality
                parameters = {
                    "min_rows": int(previous.row_count * quality.min_row_ratio) if previous is not None else 1,
                    "max_rows": int(previous.row_count * quality.max_row_ratio) if previous is not None else None,
                }
            try:
                outcomes = validate(frame, suite, parameters=parameters, schema_columns=schema_columns)
            except Exception as error:  # an expectation GX cannot build or run: name the file to fix
                raise dg.Failure(description=f"{suite_source(use_case, asset)}: suite cannot run: {error}") from error
            if asset == "stg_customers":
                passed = all(o.success or o.severity != "critical" for o in outcomes)
                outcomes += _unit_change(connection, use_case, table, (load_id, source_file), passed)
            checks = evaluate_checks(suite, outcomes)
            now = datetime.now(UTC).replace(tzinfo=None)
            record_validation_rows(
                connection,
                schema,
                [
                    {
                        "run_id": context.run.run_id,
                        "asset": key.to_user_string(),
                        "suite": suite["name"],
                        "check_name": o.check,
                        "expectation": o.expectation,
                        "column_name": o.column,
                        "severity": o.severity,
                        "success": o.success,
                        "observed_value": o.observed_value,
                        "threshold": o.threshold,
                        "unexpected_count": o.unexpected_count,
                        "unexpected_share": o.unexpected_share,
                        "unexpected_sample": json.dumps(o.sample_ids),
                        "load_id": load_id,
                        "source_file": source_file,
                        "validated_at": now,
                    }
                    for o in outcomes
                ],
            )
            blocked = [c for c in checks if c.blocking and not c.passed]
            if blocked:
                notifier.notify(
                    context,
                    schema,
                    "data_quality",
                    f"{key.to_user_string()} failed {', '.join(c.check.name for c in blocked)}"
                    + (f" for {source_file}" if source_file else "")
                    + f": {blocked[0].summary()}",
                    {"load_id": load_id, "checks": [c.check.name for c in blocked]},
                    "error",
                    connection,
                )
        for outcome in checks:
            yield _check_result(key, outcome, load_id, source_file)

    return expectations_check


def build_quality_checks(use_case: UseCase) -> list[dg.AssetChecksDefinition]:
    name = use_case.name
    targets = {
        "raw_customers": dg.AssetKey([name, "raw_customers"]),
        "stg_customers": dg.AssetKey([name, "stg_customers"]),
        "customer_features": dg.AssetKey([name, use_case.feature_mart]),
        "customer_scores": dg.AssetKey([name, "customer_scores"]),
    }
    return [build_suite_checks(use_case, asset, key) for asset, key in targets.items()]
