"""The model registry: every model ever trained, its validations and an append-only status history.

Plain functions over a DuckDB connection (no Dagster), so the CLI, the Dagster assets and a notebook
share one implementation. Tables live in the use case's schema:

- `model_registry`: one immutable row per model version: LightGBM text + sha256, features, params,
  test metrics, training-data fingerprint, lineage (run, code version, loads, trigger), drift profile;
- `model_status_events`: candidate / pending_approval / champion / retired / rejected, with who, when
  and why. A model's status is its latest event; nothing is ever updated or deleted;
- `model_validations`: each validation of a challenger against the champion (metrics, fairness,
  decision and reasons);
- `model_cards`: the rendered model card of each version, one row per rendering;
- `score_history`: every score ever published, with the reasons;
- `alerts`: notifications raised by the platform.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import duckdb
import pandas as pd

from mlops_assets.read_only import AUDIT_VIEW, audit_sql, models_overview_sql
from mlops_assets.warehouse import table_exists

if TYPE_CHECKING:  # LightGBM is imported only where an artefact is loaded: `mlops models` stays fast
    from mlops_assets.ml.artifacts import ModelArtifact

STATUSES = ("candidate", "pending_approval", "champion", "retired", "rejected")

_TABLES = {
    "model_registry": """
        model_version varchar primary key, use_case varchar, target varchar, model_text varchar,
        sha256 varchar, features varchar, params varchar, metrics varchar, trained_at timestamp,
        score_offset double, best_iteration integer, training_set_fingerprint varchar, lineage varchar,
        reference_profile varchar, calibration varchar, registered_at timestamp
    """,
    "model_status_events": """
        event_seq bigint, model_version varchar, status varchar, actor varchar, reason varchar,
        dagster_run_id varchar, changed_at timestamp
    """,
    "model_validations": """
        validation_id varchar, model_version varchar, champion_version varchar, primary_metric varchar,
        challenger_value double, champion_value double, tolerance double, decision varchar,
        reasons varchar, metrics varchar, champion_metrics varchar, recent_metrics varchar,
        fairness varchar, report varchar, evaluation_rows bigint, dagster_run_id varchar,
        validated_at timestamp
    """,
    "model_cards": "model_version varchar, card_markdown varchar, created_at timestamp",
    # Every trial of the cross-validated hyperparameter search (ml/search.py), like an experiment tracker.
    "model_search_trials": """
        model_version varchar, dagster_run_id varchar, trial integer, params varchar, cv_metric varchar,
        cv_mean double, cv_std double, best_rounds integer, folds integer, search_rows bigint, seconds double,
        is_best boolean, recorded_at timestamp
    """,
    "alerts": """
        alert_id varchar, kind varchar, severity varchar, message varchar, details varchar,
        dagster_run_id varchar, raised_at timestamp
    """,
}


class RegistryError(RuntimeError):
    """A registry action that is not allowed (wrong status, unknown version)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# Columns added after a table was first created: warehouses from older versions get them on start.
_ADDED_COLUMNS = {
    "model_registry": ["calibration varchar"],
    "model_validations": [
        "evaluation_set varchar",
        "difference double",
        "difference_low double",
        "difference_high double",
        "comparison varchar",
    ],
}


def ensure_tables(connection: duckdb.DuckDBPyConnection, schema: str) -> None:
    connection.execute(f"create schema if not exists {schema}")
    for table, columns in _TABLES.items():
        connection.execute(f"create table if not exists {schema}.{table} ({columns})")
    for table, added in _ADDED_COLUMNS.items():
        for column in added:
            connection.execute(f"alter table {schema}.{table} add column if not exists {column}")


def record_search_trials(
    connection: duckdb.DuckDBPyConnection, schema: str, model_version: str, run_id: str, trials: pd.DataFrame
) -> None:
    """Append the search's trials (one row each: params as JSON, CV metric, rounds, time)."""
    ensure_tables(connection, schema)
    rows = trials.assign(model_version=model_version, dagster_run_id=run_id, recorded_at=_now())
    connection.register("trial_rows", rows)
    connection.execute(f"insert into {schema}.model_search_trials by name select * from trial_rows")
    connection.unregister("trial_rows")


def register_model(connection: duckdb.DuckDBPyConnection, schema: str, artifact: ModelArtifact, run_id: str) -> bool:
    """Add a model version (once) with a `candidate` event. Returns False if it was registered before."""
    ensure_tables(connection, schema)
    exists = connection.execute(
        f"select count(*) from {schema}.model_registry where model_version = ?", [artifact.model_version]
    ).fetchall()[0][0]
    if exists:
        return False
    record = artifact.to_record()
    record["registered_at"] = _now()
    connection.register("registry_row", pd.DataFrame([record]))
    connection.execute(f"insert into {schema}.model_registry by name select * from registry_row")
    connection.unregister("registry_row")
    record_status(connection, schema, artifact.model_version, "candidate", "pipeline", "trained", run_id)
    return True


def record_status(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    status: str,
    actor: str,
    reason: str,
    run_id: str | None,
) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    sequence = connection.execute(
        f"select coalesce(max(event_seq), 0) + 1 from {schema}.model_status_events"
    ).fetchall()[0][0]
    connection.execute(
        f"insert into {schema}.model_status_events values (?, ?, ?, ?, ?, ?, ?)",
        [sequence, model_version, status, actor, reason, run_id, _now()],
    )


def model_status(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str) -> str | None:
    rows = connection.execute(
        f"""select status from {schema}.model_status_events where model_version = ?
            order by event_seq desc limit 1""",
        [model_version],
    ).fetchall()
    return rows[0][0] if rows else None


def current_champion(connection: duckdb.DuckDBPyConnection, schema: str) -> str | None:
    """The model whose latest status is `champion` (promotions retire the previous champion)."""
    if not table_exists(connection, schema, "model_status_events"):
        return None
    rows = connection.execute(
        f"""select model_version from (
                select model_version, status,
                       row_number() over (partition by model_version order by event_seq desc) as latest,
                       event_seq
                from {schema}.model_status_events)
            where latest = 1 and status = 'champion'
            order by event_seq desc""",
    ).fetchall()
    if len(rows) > 1:
        raise RegistryError(f"{schema}: {len(rows)} models have champion status: {[r[0] for r in rows]}")
    return rows[0][0] if rows else None


def load_artifact(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str) -> ModelArtifact:
    """A registered model, after verifying its checksum (raises ArtifactIntegrityError if changed)."""
    frame = connection.execute(
        f"select * exclude (registered_at) from {schema}.model_registry where model_version = ?",
        [model_version],
    ).fetchdf()
    if frame.empty:
        raise RegistryError(f"{schema}: no registered model {model_version!r}")
    from mlops_assets.ml.artifacts import ModelArtifact

    artifact = ModelArtifact.from_record(frame.iloc[0].to_dict())
    artifact.verify()
    return artifact


def promote(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    actor: str,
    reason: str,
    run_id: str,
) -> str | None:
    """Make `model_version` the champion; the previous champion is retired. Returns the previous one."""
    previous = current_champion(connection, schema)
    if previous == model_version:
        return previous
    if previous:
        record_status(connection, schema, previous, "retired", actor, f"replaced by {model_version}: {reason}", run_id)
    record_status(connection, schema, model_version, "champion", actor, reason, run_id)
    return previous


def record_validation(connection: duckdb.DuckDBPyConnection, schema: str, validation: dict) -> None:
    ensure_tables(connection, schema)
    row = {"validation_id": uuid.uuid4().hex, "validated_at": _now(), **validation}
    for key in ("reasons", "metrics", "champion_metrics", "recent_metrics", "fairness", "report", "comparison"):
        row[key] = json.dumps(row.get(key), default=str, sort_keys=True)
    connection.register("validation_row", pd.DataFrame([row]))
    connection.execute(f"insert into {schema}.model_validations by name select * from validation_row")
    connection.unregister("validation_row")


def latest_validation(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str) -> pd.Series | None:
    frame = connection.execute(
        f"""select * from {schema}.model_validations where model_version = ?
            order by validated_at desc limit 1""",
        [model_version],
    ).fetchdf()
    return None if frame.empty else frame.iloc[0]


def record_model_card(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str, card: str) -> None:
    connection.execute(f"insert into {schema}.model_cards values (?, ?, ?)", [model_version, card, _now()])


def status_history(
    connection: duckdb.DuckDBPyConnection, schema: str, model_version: str | None = None
) -> pd.DataFrame:
    where = "where model_version = ?" if model_version else ""
    return connection.execute(
        f"select * from {schema}.model_status_events {where} order by event_seq",
        [model_version] if model_version else [],
    ).fetchdf()


def models_overview(connection: duckdb.DuckDBPyConnection, schema: str) -> pd.DataFrame:
    """Every model with its status and latest validation (SQL shared with `mlops models`, read_only.py)."""
    return connection.execute(models_overview_sql(schema)).fetchdf()


def record_alert(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    kind: str,
    severity: str,
    message: str,
    details: dict | None,
    run_id: str | None,
) -> None:
    ensure_tables(connection, schema)
    connection.execute(
        f"insert into {schema}.alerts values (?, ?, ?, ?, ?, ?, ?)",
        [uuid.uuid4().hex, kind, severity, message, json.dumps(details or {}, default=str), run_id, _now()],
    )


def create_audit_view(connection: duckdb.DuckDBPyConnection, schema: str) -> None:
    """One row per published score with the model, its training data, validation and approval."""
    connection.execute(
        f"""
        create or replace view {schema}.{AUDIT_VIEW} as
        with approval as (
            select model_version, actor as approved_by, reason as approval_reason, changed_at as approved_at,
                   row_number() over (partition by model_version order by event_seq) as first_champion
            from {schema}.model_status_events where status = 'champion'
        ),
        validation as (
            select *, row_number() over (partition by model_version order by validated_at desc) as latest
            from {schema}.model_validations
        )
        select h.customer_id, h.published_at, h.score, h.rank, h.decile, h.model_version, h.scored_at,
               h.reasons, h.publication_id,
               r.trained_at, r.sha256 as model_sha256, r.training_set_fingerprint,
               json_extract_string(r.lineage, '$.training_window') as training_window,
               json_extract(r.lineage, '$.training_rows') as training_rows,
               json_extract_string(r.lineage, '$.trigger') as trigger,
               json_extract_string(r.lineage, '$.trigger_reason') as trigger_reason,
               json_extract_string(r.lineage, '$.code_version') as code_version,
               json_extract_string(r.lineage, '$.dagster_run_id') as training_run_id,
               r.features, r.params, r.metrics as test_metrics,
               v.decision as validation_decision, v.reasons as validation_reasons,
               v.champion_version as validated_against, v.fairness, v.validated_at,
               a.approved_by, a.approval_reason, a.approved_at
        from {schema}.score_history h
        left join {schema}.model_registry r using (model_version)
        left join validation v on v.model_version = h.model_version and v.latest = 1
        left join approval a on a.model_version = h.model_version and a.first_champion = 1
        """
    )


def audit_customer(
    connection: duckdb.DuckDBPyConnection, schema: str, customer_id: str, on_date: str | None = None
) -> pd.DataFrame:
    """Every score published for a customer (optionally on one date), with the full chain."""
    parameters = [customer_id, on_date] if on_date else [customer_id]
    return connection.execute(audit_sql(schema, on_date), parameters).fetchdf()
