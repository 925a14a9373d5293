"""dbt tests as data-quality checks: failing rows named, every outcome recorded next to the GX ones.

dbt owns the structural rules (the data dictionary's schema, types, completeness and valid values,
tests/generic/dictionary_rules.sql, and `unique`/`not_null`/`accepted_values` on ids and targets);
dagster-dbt turns each test result into an asset check result. This module adds what dagster-dbt
does not know: the failing (column, rule) rows that a test with `store_failures` left in the
warehouse (as a table in the check's metadata and in its description, naming the load's source
file), one `<use case>.validation_results` row per outcome (so the table lists every rule's outcome
whichever engine ran it), and a `data_quality` alert when a blocking test fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pandas as pd

from mlops_assets.defs.metadata import markdown_table
from mlops_assets.warehouse import table_exists

DBT_SUITE = "dbt"
SAMPLE_ROWS = 50


def _test_node(manifest: Mapping[str, Any], result: dg.AssetCheckResult) -> Mapping[str, Any] | None:
    unique_id = result.metadata.get("unique_id")
    unique_id = getattr(unique_id, "value", unique_id)
    return manifest.get("nodes", {}).get(unique_id) if unique_id else None


def _current_load(connection, schema: str) -> tuple[str | None, str | None]:
    """The load the staging step built from (raw_customers holds exactly one load)."""
    if not table_exists(connection, schema, "raw_customers"):
        return None, None
    rows = connection.execute(f"select _load_id, _source_file from {schema}.raw_customers limit 1").fetchall()
    return (str(rows[0][0]), str(rows[0][1])) if rows else (None, None)


def _stored_failures(connection, node: Mapping[str, Any]) -> pd.DataFrame:
    """The failing rows dbt stored for a test with `store_failures` (empty if none were stored)."""
    if not node.get("config", {}).get("store_failures"):
        return pd.DataFrame()
    schema, alias = node["schema"], node["alias"]
    if not table_exists(connection, schema, alias):
        return pd.DataFrame()
    return connection.execute(f'select * from {schema}."{alias}" limit {SAMPLE_ROWS}').fetchdf()


def _failure_text(failures: pd.DataFrame) -> str:
    if not {"column_name", "rule"} <= set(failures.columns):
        return f"{len(failures)} failing row(s)"
    parts = []
    for row in failures.head(3).itertuples(index=False):
        part = f"{row.column_name} ({row.rule}, expected {row.expected}): {row.unexpected_count}"
        if getattr(row, "element_count", None) is not None and not pd.isna(row.element_count):
            part += f" of {int(row.element_count)}"
        if row.sample_values:
            part += f", values {row.sample_values}"
        if row.sample_ids:
            part += f", e.g. ids {row.sample_ids}"
        parts.append(part)
    more = f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
    return f"{len(failures)} failing (column, rule): " + "; ".join(parts) + more


def _validation_rows(
    key: dg.AssetKey, node: Mapping[str, Any], passed: bool, failures: pd.DataFrame, load: tuple, now: datetime
) -> list[dict]:
    test = node.get("test_metadata", {}).get("name") or node["name"]
    base = {
        "asset": key.to_user_string(),
        "suite": DBT_SUITE,
        "check_name": node["name"],
        "expectation": f"dbt:{test}",
        "severity": "critical"
        if str(node.get("config", {}).get("severity", "error")).lower() == "error"
        else "warning",
        "load_id": load[0],
        "source_file": load[1],
        "validated_at": now,
    }
    if passed or not {"column_name", "rule"} <= set(failures.columns):
        return [
            {
                **base,
                "column_name": node.get("column_name"),
                "success": passed,
                "observed_value": "0 failing rows" if passed else f"{len(failures) or 'some'} failing row(s)",
                "threshold": "no failing rows",
                "unexpected_count": 0 if passed else len(failures),
                "unexpected_share": None,
                "unexpected_sample": "[]",
            }
        ]
    return [
        {
            **base,
            "column_name": row.column_name,
            "expectation": f"dbt:{test}:{row.rule}",
            "success": False,
            "observed_value": f"{row.unexpected_count} unexpected"
            + (f" ({row.sample_values})" if row.sample_values else ""),
            "threshold": str(row.expected),
            "unexpected_count": int(row.unexpected_count),
            "unexpected_share": (
                float(row.unexpected_count) / float(row.element_count)
                if not pd.isna(row.element_count) and row.element_count
                else None
            ),
            "unexpected_sample": json.dumps([i for i in str(row.sample_ids or "").split(", ") if i]),
        }
        for row in failures.itertuples(index=False)
    ]


def with_failing_rows(
    events: Iterable[Any], manifest: Mapping[str, Any], connection, on_failure
) -> Iterator[tuple[Any, list[dict]]]:
    """Each event, dbt test results with their failing rows named; and the validation rows of each.

    `on_failure(key, node, message)` is called for each failed blocking test (the alert)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    loads: dict[str, tuple] = {}
    for event in events:
        node = _test_node(manifest, event) if isinstance(event, dg.AssetCheckResult) else None
        if node is None:
            yield event, []
            continue
        key = event.asset_key
        schema = key.path[0]
        loads.setdefault(schema, _current_load(connection, schema))
        load = loads[schema]
        status = event.metadata.get("status")
        # Only a test that ran and failed stored its rows now (an erroring one left an older table).
        failed_now = str(getattr(status, "value", status)).lower() == "fail"
        failures = _stored_failures(connection, node) if failed_now else pd.DataFrame()
        rows = _validation_rows(key, node, event.passed, failures, load, now)
        if event.passed:
            yield event, rows
            continue
        message = f"{load[1]}: " if load[1] else ""
        message += f"dbt test {node['name']} failed on {key.to_user_string()}: " + _failure_text(failures)
        metadata = {"source_file": load[1] or "", "load_id": load[0] or ""}
        if not failures.empty:
            metadata["failing_rows"] = markdown_table(failures)
            metadata["failing_rows_table"] = f"{node['schema']}.{node['alias']}"
        if event.severity == dg.AssetCheckSeverity.ERROR:
            on_failure(key, node, message)
        yield (
            dg.AssetCheckResult(
                asset_key=key,
                check_name=event.check_name,
                passed=False,
                severity=event.severity,
                description=message,
                metadata={**event.metadata, **metadata},
            ),
            rows,
        )
