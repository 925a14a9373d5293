"""The batch path's feature logic for single requests: the use case's own dbt SQL on in-memory DuckDB.

Batch features come from dbt models (staging casts and renames, history, portfolio summaries, the mart).
Rewriting them in Python for the service would give two feature definitions that drift apart. Instead
the service compiles the use case's dbt models once (`dbt compile`, against a throw-away DuckDB file
named like the warehouse, so the compiled SQL names the same relations) and turns them into one SQL
statement, prepared once per in-memory DuckDB connection (`OnlineFeatures`). A request's records take
the place of `raw_customers`, shaped like ingestion's table (every export column as text plus the load
columns); the statement then yields exactly the feature rows the batch path would build from the same
export rows, at the cost of executing it, not of planning it for each request. The records are
first checked with ingestion's own row rules (quality/rows.py, from the data dictionary), so a bad value
gets the same verdict ("'abc' is not a whole number", "60 is outside 0..9") as in a batch file.

Compiling costs 10-20 s (dbt parses the project), so the compiled SQL is cached under
`dbt_project/target/serving/`, keyed by a hash of the dbt project's files and the dbt version.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
from duckdb.sqltypes import VARCHAR

from mlops_assets.ingestion import ensure_outcomes_table
from mlops_assets.quality.rows import find_row_problems
from mlops_assets.settings import DBT_PROJECT_DIR
from mlops_assets.use_cases import UseCase
from mlops_assets.warehouse import quote_identifier

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
            # Only the models: the data tests of the staging models read their seeds while compiling,
            # and nothing exists in the throw-away database.
            "--indirect-selection",
            "empty",
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


@dataclass(frozen=True)
class FeatureRows:
    """Feature rows as DuckDB fetched them (Python values, None = missing): what the service scores.
    A pandas DataFrame of one request's row cost 3-4 ms more to fetch than these (measured in process
    on this 2-core machine, ~90 columns), and more again to prepare for LightGBM."""

    columns: list[str]
    values: list[tuple]

    @classmethod
    def fetch(cls, result: duckdb.DuckDBPyConnection) -> FeatureRows:
        return cls([d[0] for d in result.description], result.fetchall())

    @functools.cached_property
    def _positions(self) -> dict[str, int]:  # once per request: each model reads ~90 columns by name
        return {name: position for position, name in enumerate(self.columns)}

    def column(self, name: str) -> list:
        position = self._positions[name]
        return [row[position] for row in self.values]

    def take(self, positions: list[int]) -> FeatureRows:
        return FeatureRows(self.columns, [self.values[p] for p in positions])


class _RequestChannel:
    """The JSON records of the request being built on one connection (read by `request_records()`)."""

    payload: str | None = None


@dataclass
class _PreparedConnection:
    connection: duckdb.DuckDBPyConnection
    channel: _RequestChannel


class OnlineFeatures:
    """Turns request records (raw export columns) into the mart's feature rows with the use case's dbt SQL.

    The compiled models become one statement: each model a CTE (in dependency order, relation names
    replaced by CTE names), `raw_customers` the request's records, `raw_outcomes` an empty relation of
    ingestion's shape (a request carries no outcome). It is prepared once per connection (SQL PREPARE),
    and each request only executes it: planning the view chain of about 90 columns cost 50-500 ms per
    request, execution a few ms.

    Why the records come in through a scalar function (`request_records()`, a Python UDF returning the
    request's records as JSON text) instead of a table or a bound parameter: DuckDB re-binds and
    re-optimizes a prepared statement on every execution when it reads a table or a variable (measured
    with DuckDB 2.0: 25-50 ms per execution, as much as preparing it), SQL `EXECUTE` takes no bound
    parameters, and the Python API has no prepared-statement handle. A function with side effects is
    evaluated on every execution and keeps the prepared plan. The records are data (a JSON array of rows
    parsed by `from_json`, then cast to raw_customers' column types); nothing a caller sends becomes SQL
    text.

    DuckDB connections are not meant for concurrent use: the service keeps a small pool of in-memory
    connections (one per core by default), each with its own prepared statement; a request borrows one.
    """

    STATEMENT = "request_features"

    def __init__(self, use_case: UseCase, feature_sql: FeatureSql, connections: int | None = None):
        self.use_case = use_case
        self.sql = feature_sql
        self.rules = use_case.row_rules()
        self.source_columns = [rule.column for rule in self.rules]
        self.required = {rule.column for rule in self.rules if rule.required}
        self.id_column = use_case.source.id_column or "customer_id"
        self.raw_columns, outcome_columns = self._raw_shapes()
        self.statement = self._flat_statement(outcome_columns)
        self.size = max(1, connections or os.cpu_count() or 2)
        self._pool: queue.LifoQueue[_PreparedConnection] = queue.LifoQueue()
        self._created = 0
        self._lock = threading.Lock()

    def _raw_shapes(self) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(name, type) of raw_customers as the service fills it, and of ingestion's raw_outcomes."""
        with duckdb.connect() as scratch:
            schema = self.use_case.name
            scratch.execute(f"create schema {schema}")
            columns = ", ".join(f"{quote_identifier(c)} varchar" for c in self.source_columns)
            scratch.execute(
                f"""create table {schema}.raw_customers (
                        customer_id varchar, {columns}, _load_id varchar, _source_file varchar,
                        _loaded_at timestamp, _source_row bigint, _quarantine_reason varchar,
                        _outlier_columns varchar)"""
            )
            target_column, _ = self.use_case.target_source()
            ensure_outcomes_table(scratch, schema, target_column)
            shapes = [
                [(d[0], str(d[1])) for d in scratch.execute(f"select * from {schema}.{table} limit 0").description]
                for table in ("raw_customers", "raw_outcomes")
            ]
        return shapes[0], shapes[1]

    def _flat_statement(self, outcome_columns: list[tuple[str, str]]) -> str:
        schema = self.use_case.name
        # The records arrive as a JSON array of rows, each an array of text in raw_customers' column
        # order (positional: parsing into a struct of ~90 named fields cost 2-3 ms per request).
        columns = ", ".join(
            f"r[{position}] as {quote_identifier(name)}"
            if kind == "VARCHAR"
            else f"cast(r[{position}] as {kind}) as {quote_identifier(name)}"
            for position, (name, kind) in enumerate(self.raw_columns, start=1)
        )
        outcomes = ", ".join(f"cast(null as {kind}) as {quote_identifier(name)}" for name, kind in outcome_columns)
        names = {
            f'"{CATALOG}"."{schema}"."raw_customers"': '"__request_raw_customers"',
            f'"{CATALOG}"."{schema}"."raw_outcomes"': '"__request_raw_outcomes"',
        }
        names.update({relation: f'"__model_{i}"' for i, (relation, _) in enumerate(self.sql.models)})
        ctes = [
            f'"__request_raw_customers" as (select {columns} '
            "from (select unnest(from_json(request_records(), '[[\"VARCHAR\"]]')) as r))",
            f'"__request_raw_outcomes" as (select {outcomes} where false)',
        ]
        for relation, select in self.sql.models:
            for name, replacement in names.items():
                select = select.replace(name, replacement)
            # The newline ends a trailing `--` comment of the compiled model.
            ctes.append(f"{names[relation]} as (\n{select}\n)")
        return "with " + ",\n".join(ctes) + f"\nselect * from {names[self.sql.mart_relation]}"

    def _new_connection(self) -> _PreparedConnection:
        connection = duckdb.connect(config={"threads": 1})
        channel = _RequestChannel()
        connection.create_function("request_records", lambda: channel.payload, [], VARCHAR, side_effects=True)
        try:
            connection.execute(f"prepare {self.STATEMENT} as {self.statement}")
        except duckdb.Error as error:
            connection.close()
            raise RuntimeError(
                f"{self.use_case.name}: the feature SQL compiled from dbt cannot be prepared for the service "
                f"(it may read a relation other than raw_customers, raw_outcomes and its own models): {error}"
            ) from error
        return _PreparedConnection(connection, channel)

    def warm_up(self) -> None:
        """Create and prepare every connection of the pool now rather than on the first requests."""
        borrowed = [self._borrow() for _ in range(self.size)]
        for prepared in borrowed:
            self._pool.put(prepared)

    def _borrow(self) -> _PreparedConnection:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            create = self._created < self.size
            if create:
                self._created += 1
        if create:
            try:
                return self._new_connection()
            except BaseException:
                with self._lock:
                    self._created -= 1
                raise
        return self._pool.get()

    @contextmanager
    def _connection(self) -> Iterator[_PreparedConnection]:
        prepared = self._borrow()
        try:
            yield prepared
        finally:
            prepared.channel.payload = None
            self._pool.put(prepared)

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

    def texts(self, records: list[dict]) -> list[dict]:
        """Records as the export's text (customer_id and every source column; None where missing)."""
        return [
            {
                "customer_id": str(r[self.id_column]),
                **{c: None if r.get(c) is None else _as_text(r.get(c)) for c in self.source_columns},
            }
            for r in records
        ]

    def rows(self, records: list[dict], loaded_at: datetime) -> FeatureRows:
        """The mart rows of `records`, in request order, as fetched (what the service scores).
        RecordError for values breaking the rules."""
        return self._built(records, loaded_at, as_frame=False)

    def build(self, records: list[dict], loaded_at: datetime) -> pd.DataFrame:
        """The same rows as a DataFrame, typed as the batch path reads the mart (for comparing them)."""
        return self._built(records, loaded_at, as_frame=True)

    def _built(self, records: list[dict], loaded_at: datetime, as_frame: bool):
        self.check_fields(records)
        texts = self.texts(records)
        with self._connection() as prepared:
            if not self.surely_valid(texts):
                self._raise_problems(prepared.connection, texts)
            load_columns = {
                "_load_id": LOAD_ID,
                "_source_file": "request",
                "_loaded_at": loaded_at.isoformat(sep=" "),
                "_quarantine_reason": None,
                "_outlier_columns": None,
            }
            names = [name for name, _ in self.raw_columns]
            prepared.channel.payload = json.dumps(
                [
                    [{**text, **load_columns, "_source_row": str(row)}[name] for name in names]
                    for row, text in enumerate(texts, start=1)
                ]
            )
            try:
                result = prepared.connection.execute(f"execute {self.STATEMENT}")
                fetched = result.fetchdf() if as_frame else FeatureRows.fetch(result)
            except duckdb.Error:
                # A value the quick check let through but the dbt SQL refused: word it with ingestion's
                # rules if they see a problem; otherwise it is the service's error, not the caller's.
                self._raise_problems(prepared.connection, texts)
                raise
        built = fetched["customer_id"].tolist() if as_frame else fetched.column("customer_id")
        requested = [text["customer_id"] for text in texts]
        if built == requested:
            return fetched
        position = {customer_id: i for i, customer_id in enumerate(built)}
        order = [position[c] for c in requested if c in position]
        return fetched.take(order).reset_index(drop=True) if as_frame else fetched.take(order)

    def _raise_problems(self, connection: duckdb.DuckDBPyConnection, texts: list[dict]) -> None:
        frame = pd.DataFrame(texts, columns=["customer_id", *self.source_columns], dtype=object)
        problems = self._sql_problems(connection, frame)
        if problems:
            raise RecordError(problems)


def _as_text(value) -> str:
    """A JSON value as the export would hold it: text (booleans as true/false, numbers unchanged)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
