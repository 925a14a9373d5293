"""The batch path's feature logic for single requests: the use case's own dbt SQL on in-memory DuckDB.

Batch features come from dbt models (staging casts and renames, history, portfolio summaries, the mart).
Rewriting them in Python for the service would give two feature definitions that drift apart. Instead
the service compiles the use case's dbt models once (`dbt compile`, against a throw-away DuckDB file
named like the warehouse, so the compiled SQL names the same relations) and creates them as views in an
in-memory DuckDB database per worker thread. A request's records go into an in-memory `raw_customers`
table shaped like ingestion's (every export column as text plus the load columns); the mart view then
yields exactly the feature rows the batch path would build from the same export rows. The records are
first checked with ingestion's own row rules (quality/rows.py, from the data dictionary), so a bad value
gets the same verdict ("'abc' is not a whole number", "60 is outside 0..9") as in a batch file.

Compiling costs 10-20 s (dbt parses the project), so the compiled SQL is cached under
`dbt_project/target/serving/`, keyed by a hash of the dbt project's files and the dbt version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from mlops_assets.ingestion import ensure_outcomes_table, quote_identifier
from mlops_assets.quality.rows import find_row_problems
from mlops_assets.settings import DBT_PROJECT_DIR
from mlops_assets.use_cases import UseCase

CACHE_DIR = DBT_PROJECT_DIR / "target" / "serving"
# The pipeline's warehouse file is warehouse.duckdb, so its dbt relations live in catalog "warehouse".
CATALOG = "warehouse"
LOAD_ID = "service-request"
_INTEGER = re.compile(r"[+-]?[0-9]{1,15}")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]{1,15}(?:\.[0-9]*)?|\.[0-9]+)")


class RecordError(ValueError):
    """A request record breaks a rule: `problems` are (record index, field, rule) triples."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"records[{i}].{field}: {rule}" for i, field, rule in problems))


@dataclass(frozen=True)
class FeatureSql:
    """The use case's dbt models as compiled SQL, in dependency order, and the mart's relation."""

    use_case: str
    models: list[tuple[str, str]]  # (relation name, compiled select)
    mart_relation: str


def _project_fingerprint() -> str:
    digest = hashlib.sha256(importlib.metadata.version("dbt-core").encode())
    for folder in ("models", "macros"):
        for path in sorted((DBT_PROJECT_DIR / folder).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(DBT_PROJECT_DIR)).encode())
                digest.update(path.read_bytes())
    for name in ("dbt_project.yml", "profiles.yml"):
        digest.update((DBT_PROJECT_DIR / name).read_bytes())
    return digest.hexdigest()[:16]


def _mart_node_name(use_case: UseCase, manifest: dict) -> str:
    for node in manifest["nodes"].values():
        if (
            node["resource_type"] == "model"
            and node["schema"] == use_case.name
            and node["alias"] == use_case.feature_mart
        ):
            return node["name"]
    raise LookupError(f"{use_case.name}: no dbt model with alias {use_case.feature_mart!r} in schema {use_case.name}")


def _ordered_models(manifest: dict, selected: set[str]) -> list[tuple[str, str]]:
    ordered, done = [], set()

    def visit(unique_id: str) -> None:
        if unique_id in done:
            return
        done.add(unique_id)
        node = manifest["nodes"][unique_id]
        for parent in node["depends_on"]["nodes"]:
            if parent in selected:
                visit(parent)
        ordered.append((node["relation_name"], node["compiled_code"]))

    for unique_id in sorted(selected):
        visit(unique_id)
    return ordered


def compile_feature_sql(use_case: UseCase) -> FeatureSql:
    """Compile (or read from the cache) the models the use case's feature mart is built from."""
    cache = CACHE_DIR / f"{use_case.name}-{_project_fingerprint()}.json"
    if cache.exists():
        stored = json.loads(cache.read_text())
        return FeatureSql(stored["use_case"], [tuple(m) for m in stored["models"]], stored["mart_relation"])
    with tempfile.TemporaryDirectory(prefix="mlops-serving-dbt-") as scratch:
        parsed = json.loads((DBT_PROJECT_DIR / "target" / "manifest.json").read_text())
        mart = _mart_node_name(use_case, parsed)
        # A throw-away database named like the warehouse: nothing exists in it, so incremental models
        # compile to their full (non-incremental) form, and the pipeline's file is never touched.
        environment = {**os.environ, "MLOPS_DUCKDB_PATH": str(Path(scratch) / f"{CATALOG}.duckdb")}
        command = [
            str(Path(sys.executable).with_name("dbt")),
            "compile",
            "--select",
            f"+{mart}",
            "--target-path",
            str(Path(scratch) / "target"),
            "--log-path",
            str(Path(scratch) / "logs"),
            "--quiet",
        ]
        completed = subprocess.run(command, cwd=DBT_PROJECT_DIR, env=environment, capture_output=True, text=True)
        if completed.returncode != 0:
            raise RuntimeError(
                f"dbt compile of {use_case.name}'s features failed: {completed.stdout}{completed.stderr}"
            )
        manifest = json.loads((Path(scratch) / "target" / "manifest.json").read_text())
    selected = {
        unique_id
        for unique_id, node in manifest["nodes"].items()
        if node["resource_type"] == "model" and node.get("compiled_code") is not None
    }
    mart_id = next(i for i in selected if manifest["nodes"][i]["name"] == mart)
    feature_sql = FeatureSql(
        use_case.name, _ordered_models(manifest, selected), manifest["nodes"][mart_id]["relation_name"]
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache.with_name(f".{cache.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_text(json.dumps({**feature_sql.__dict__}))
    os.replace(temporary, cache)
    return feature_sql


class OnlineFeatures:
    """Turns request records (raw export columns) into the mart's feature rows, one database per thread.

    DuckDB connections are not meant for concurrent use; each worker thread gets its own in-memory
    database with the compiled views, so requests never share state.
    """

    def __init__(self, use_case: UseCase, feature_sql: FeatureSql):
        self.use_case = use_case
        self.sql = feature_sql
        self.rules = use_case.row_rules()
        self.source_columns = [rule.column for rule in self.rules]
        self.required = {rule.column for rule in self.rules if rule.required}
        self.id_column = use_case.source.id_column or "customer_id"
        self._local = threading.local()

    def _connection(self) -> duckdb.DuckDBPyConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = duckdb.connect(config={"threads": 1})
            connection.execute(f"attach ':memory:' as {CATALOG}")
            connection.execute(f"use {CATALOG}")
            schema = self.use_case.name
            connection.execute(f"create schema {schema}")
            columns = ", ".join(f"{quote_identifier(c)} varchar" for c in self.source_columns)
            connection.execute(
                f"""create table {schema}.raw_customers (
                        customer_id varchar, {columns}, _load_id varchar, _source_file varchar,
                        _loaded_at timestamp, _source_row bigint, _quarantine_reason varchar,
                        _outlier_columns varchar)"""
            )
            target_column, _ = self.use_case.target_source()
            ensure_outcomes_table(connection, schema, target_column)
            for relation, select in self.sql.models:
                connection.execute(f"create view {relation} as {select}")
            self._raw_columns = [
                d[0] for d in connection.execute(f"select * from {schema}.raw_customers limit 0").description
            ]
            self._local.connection = connection
        return connection

    def check_fields(self, records: list[dict]) -> None:
        """Unknown or missing columns, before any value is looked at (RecordError)."""
        known = set(self.source_columns) | {self.id_column}
        problems = []
        for index, record in enumerate(records):
            for field in sorted(set(record) - known):
                problems.append((index, field, "unknown field: not a column of the export"))
            for field in sorted(self.required - set(record)):
                problems.append((index, field, "missing: a required column of the export"))
            customer_id = record.get(self.id_column)
            if customer_id is None or not str(customer_id).strip():
                problems.append((index, self.id_column, "missing: every record needs a customer id"))
        if problems:
            raise RecordError(problems)

    def surely_valid(self, texts: list[dict]) -> bool:
        """True only when every value plainly passes its rule; anything unusual goes to the SQL rules.

        Ingestion's rules are SQL (DuckDB casts); planning that query costs far more than a request may,
        so plain values (digits, decimals, true/false, listed codes, within range) are accepted here and
        every other case is judged by ingestion's own SQL (`find_row_problems`), which also words the 422.
        """
        ids = [t["customer_id"] for t in texts]
        if len(set(ids)) != len(ids):
            return False
        for text in texts:
            for rule in self.rules:
                value = text[rule.column]
                if value is None or value == "":
                    if rule.required:
                        return False
                    continue
                if value != value.strip():
                    return False
                if rule.allowed_values and value not in rule.allowed_values:
                    return False
                if rule.data_type in ("integer", "float"):
                    pattern = _INTEGER if rule.data_type == "integer" else _DECIMAL
                    if not pattern.fullmatch(value):
                        return False
                    number = float(value)
                    if (rule.min_value is not None and number < rule.min_value) or (
                        rule.max_value is not None and number > rule.max_value
                    ):
                        return False
                elif rule.data_type == "boolean" and value not in ("true", "false"):
                    return False
        return True

    def _sql_problems(self, connection: duckdb.DuckDBPyConnection, frame: pd.DataFrame) -> list[tuple[int, str, str]]:
        connection.register("_request", frame.assign(source_row=range(1, len(frame) + 1)))
        try:
            find_row_problems(connection, "_request", self.rules, deduplicate_ids=True)
        finally:
            connection.unregister("_request")
        problems = connection.execute(
            "select source_row, column_name, reason from _row_problems order by source_row, column_name"
        ).fetchall()
        return [
            (row - 1, self.id_column if column == "customer_id" else column, reason) for row, column, reason in problems
        ]

    def build(self, records: list[dict], loaded_at: datetime) -> pd.DataFrame:
        """The mart rows of `records`, in request order (RecordError for values breaking the rules)."""
        self.check_fields(records)
        texts = [
            {
                "customer_id": str(r[self.id_column]),
                **{c: None if r.get(c) is None else _as_text(r.get(c)) for c in self.source_columns},
            }
            for r in records
        ]
        connection = self._connection()
        frame = pd.DataFrame(texts, columns=["customer_id", *self.source_columns], dtype=object)
        if not self.surely_valid(texts):
            problems = self._sql_problems(connection, frame)
            if problems:
                raise RecordError(problems)
        schema = self.use_case.name
        frame["_load_id"] = LOAD_ID
        frame["_source_file"] = "request"
        frame["_loaded_at"] = pd.Timestamp(loaded_at)
        frame["_source_row"] = range(1, len(frame) + 1)
        frame["_quarantine_reason"] = None
        frame["_outlier_columns"] = None
        connection.execute(f"delete from {schema}.raw_customers")
        connection.from_df(frame[self._raw_columns]).insert_into(f"{schema}.raw_customers")
        features = connection.execute(f"select * from {self.sql.mart_relation}").fetchdf()
        order = {customer_id: position for position, customer_id in enumerate(frame["customer_id"])}
        return features.sort_values("customer_id", key=lambda ids: ids.map(order), ignore_index=True)


def _as_text(value) -> str:
    """A JSON value as the export would hold it: text (booleans as true/false, numbers unchanged)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
