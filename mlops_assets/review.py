"""Holding a drifting batch for review, and a data engineer's decision on it (plain functions, no Dagster).

With the use case's `monitoring.drift_policy: review`, a batch whose drift calls for retraining is
held: its staging check fails, so it never reaches the customer history and nothing is scored or
published from it (its customers keep their last published scores); it is not rejected either. Its
load's status in `<schema>.raw_customer_loads` becomes `held`. A data engineer then accepts it (the
same file is loaded again and admitted, because its sha256 was accepted) or rejects it; every hold
and decision is a row in `<schema>.batch_reviews` with who, when and why. With `block`, the batch is
recorded as `blocked` and cannot be accepted.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pandas as pd

from mlops_assets.warehouse import table_exists, transaction

REVIEWS_COLUMNS = """
    load_id varchar, source_file varchar, sha256 varchar, decision varchar, decided_by varchar,
    reason varchar, decided_at timestamp
"""
HELD, BLOCKED, ACCEPTED, REJECTED = "held", "blocked", "accepted", "rejected"
POLICY_ACTOR = "drift policy"


class ReviewError(ValueError):
    """A review decision that cannot be made; the message says why."""


def ensure_reviews_table(connection: duckdb.DuckDBPyConnection, schema: str) -> None:
    connection.execute(f"create schema if not exists {schema}")
    connection.execute(f"create table if not exists {schema}.batch_reviews ({REVIEWS_COLUMNS})")


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _load(connection, schema: str, load_id: str) -> tuple[str, str, str]:
    rows = connection.execute(
        f"select source_file, sha256, status from {schema}.raw_customer_loads where load_id = ?", [load_id]
    ).fetchall()
    if not rows:
        raise ReviewError(f"{schema}: no load {load_id!r} in raw_customer_loads")
    return rows[0]


def hold(connection: duckdb.DuckDBPyConnection, schema: str, load_id: str, policy: str, explanation: str) -> str:
    """Mark a load held (policy `review`) or blocked (policy `block`); returns the new status."""
    status = HELD if policy == "review" else BLOCKED
    source_file, sha256, _ = _load(connection, schema, load_id)
    ensure_reviews_table(connection, schema)
    with transaction(connection):
        connection.execute(
            f"update {schema}.raw_customer_loads set status = ?, message = ? where load_id = ?",
            [status, explanation, load_id],
        )
        connection.execute(
            f"insert into {schema}.batch_reviews values (?, ?, ?, ?, ?, ?, ?)",
            [load_id, source_file, sha256, status, POLICY_ACTOR, explanation, _now()],
        )
    return status


def decide(
    connection: duckdb.DuckDBPyConnection, schema: str, load_id: str, decision: str, decided_by: str, reason: str
) -> tuple[str, str]:
    """Record a person's decision on a held load; returns its (source_file, sha256)."""
    if decision not in (ACCEPTED, REJECTED):
        raise ReviewError(f"decision must be {ACCEPTED} or {REJECTED}, not {decision!r}")
    if not decided_by.strip() or not reason.strip():
        raise ReviewError("a review decision needs who decided (--by) and why (--why)")
    source_file, sha256, status = _load(connection, schema, load_id)
    if status != HELD:
        raise ReviewError(f"{schema}: load {load_id} is {status!r}, not held for review; nothing to decide")
    with transaction(connection):
        connection.execute(
            f"update {schema}.raw_customer_loads set status = ? where load_id = ?", [f"review_{decision}", load_id]
        )
        connection.execute(
            f"insert into {schema}.batch_reviews values (?, ?, ?, ?, ?, ?, ?)",
            [load_id, source_file, sha256, decision, decided_by.strip(), reason.strip(), _now()],
        )
    return source_file, sha256


def acceptance_of(connection: duckdb.DuckDBPyConnection, schema: str, sha256: str) -> dict | None:
    """The review that accepted a file with this sha256, if any (who, why, when, the held load)."""
    if not table_exists(connection, schema, "batch_reviews"):
        return None
    frame = connection.execute(
        f"""select load_id, decided_by, reason, decided_at from {schema}.batch_reviews
            where sha256 = ? and decision = ? order by decided_at desc limit 1""",
        [sha256, ACCEPTED],
    ).fetchdf()
    return frame.iloc[0].to_dict() if len(frame) else None


def reviews(connection: duckdb.DuckDBPyConnection, schema: str) -> pd.DataFrame:
    if not table_exists(connection, schema, "batch_reviews"):
        return pd.DataFrame(columns=["load_id", "source_file", "sha256", "decision", "decided_by", "reason"])
    return connection.execute(f"select * from {schema}.batch_reviews order by decided_at").fetchdf()
