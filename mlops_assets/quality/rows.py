"""Row-level rules for a customer export, derived from the use case's data dictionary.

Rules (documented in the README, section "Data quality"):
- required value missing (null or blank) -> quarantined;
- value not of the column's data type (whole number: digits, `3.0` accepted, `2.5`/`0x21` not;
  number; boolean) -> quarantined;
- value outside [min_value, max_value] or not in allowed_values -> quarantined;
- duplicated customer id (exports that carry ids): the last row in file order is kept as the
  customer's current record, every earlier row is quarantined as superseded;
- outliers (flagged, kept): a numeric value whose robust z-score |x - median| / (1.4826 * MAD),
  computed over the load, exceeds OUTLIER_ROBUST_Z; columns with MAD 0 (mostly one value) are skipped.

Everything is one DuckDB query over the loaded rows, so it stays fast at millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_assets.warehouse import memory_limit_bytes, quote_identifier, sql_literal

OUTLIER_ROBUST_Z = 5.0

_TYPE_CHECKS = {
    # DuckDB's cast rounds '2.5' to 3 and reads '0x21' as 33: only plain decimal digits (with an
    # optional all-zero fraction, as spreadsheets write 3.0) count as a whole number.
    "integer": (
        "(not regexp_full_match({v}, '[+-]?[0-9]+([.]0*)?') or try_cast({v} as bigint) is null)",
        "is not a whole number",
    ),
    "float": ("try_cast({v} as double) is null", "is not a number"),
    "boolean": ("try_cast({v} as boolean) is null", "is not true/false"),
    "string": (None, None),
}
_CASTS = {"integer": "bigint", "float": "double", "boolean": "boolean", "string": "varchar"}


@dataclass(frozen=True)
class ColumnRule:
    column: str
    data_type: str
    required: bool
    min_value: float | None
    max_value: float | None
    allowed_values: tuple[str, ...]


def rules_from_dictionary(dictionary: pd.DataFrame) -> list[ColumnRule]:
    """One rule per source column; the customer-id column (value_type identifier) is the id, checked
    for presence and duplicates by ingestion itself."""
    rules = []
    for row in dictionary.itertuples(index=False):
        if row.value_type == "identifier":
            continue
        allowed = getattr(row, "allowed_values", None)
        rules.append(
            ColumnRule(
                column=row.source_column,
                data_type=getattr(row, "data_type", "string") or "string",
                required=str(getattr(row, "required", True)).strip().lower() not in ("false", "0", "no"),
                min_value=None if pd.isna(row.min_value) else float(row.min_value),
                max_value=None if pd.isna(row.max_value) else float(row.max_value),
                allowed_values=tuple(str(allowed).split("|")) if isinstance(allowed, str) and allowed else (),
            )
        )
    return rules


def _problem_expression(rule: ColumnRule) -> str:
    """SQL yielding a reason text when the row breaks the column's rule, else NULL."""
    value = f"nullif(trim(cast({quote_identifier(rule.column)} as varchar)), '')"
    shown = f"'''' || {value} || ''''"
    cases = []
    if rule.required:
        cases.append(f"when {value} is null then 'missing'")
    type_check, type_reason = _TYPE_CHECKS.get(rule.data_type, (None, None))
    if type_check:
        cases.append(f"when {value} is not null and {type_check.format(v=value)} then {shown} || ' {type_reason}'")
    if rule.data_type in ("integer", "float") and (rule.min_value is not None or rule.max_value is not None):
        number = f"try_cast({value} as double)"
        bounds = []
        if rule.min_value is not None:
            bounds.append(f"{number} < {rule.min_value}")
        if rule.max_value is not None:
            bounds.append(f"{number} > {rule.max_value}")
        low = "-inf" if rule.min_value is None else f"{rule.min_value:g}"
        high = "inf" if rule.max_value is None else f"{rule.max_value:g}"
        cases.append(f"when {' or '.join(bounds)} then {value} || ' is outside {low}..{high}'")
    if rule.allowed_values:
        allowed = ", ".join(sql_literal(v) for v in rule.allowed_values)
        cases.append(
            f"when {value} is not null and {value} not in ({allowed}) "
            f"then {shown} || ' is not one of {'/'.join(rule.allowed_values)}'"
        )
    if not cases:
        return "null"
    return f"case {' '.join(cases)} end"


def find_row_problems(
    connection: duckdb.DuckDBPyConnection, relation: str, rules: list[ColumnRule], deduplicate_ids: bool
) -> None:
    """Create temp table `_row_problems` (customer_id, source_row, column_name, raw_value, reason).

    `relation` must have customer_id and source_row (1-based data row number in the file). One scan
    checks every rule of a row (a list of per-column results, kept only where a rule is broken).
    """
    checks = ", ".join(
        f"{{'column_name': {sql_literal(rule.column)}, 'raw_value': cast({quote_identifier(rule.column)} as varchar), "
        f"'reason': {_problem_expression(rule)}}}"
        for rule in rules
    )
    selects = [
        f"""select customer_id, source_row, problem.column_name, problem.raw_value, problem.reason
            from (
                select customer_id, source_row,
                       unnest(list_filter([{checks}], lambda result: result.reason is not null)) as problem
                from {relation}
            )"""
    ]
    if deduplicate_ids:
        # Only ids seen more than once need the (costlier) look at their rows.
        selects.append(
            f"""select customer_id, source_row, 'customer_id' as column_name, customer_id as raw_value,
                       'duplicate customer id, superseded by row ' || last_row as reason
                from (select customer_id, source_row,
                             max(source_row) over (partition by customer_id) as last_row
                      from {relation}
                      where customer_id in (
                          select customer_id from {relation} group by customer_id having count(*) > 1))
                where source_row < last_row"""
        )
    connection.execute(f"create or replace temp table _row_problems as {' union all '.join(selects)}")


def find_outliers(connection: duckdb.DuckDBPyConnection, relation: str, rules: list[ColumnRule]) -> None:
    """Create temp table `_outliers` (customer_id, column_name, value, robust_z) for kept rows.

    Three scans whatever the number of columns (medians, then median absolute deviations, then flags),
    except for loads so large that all columns' medians at once would not fit in memory (_aggregates).
    """
    numeric = [r for r in rules if r.data_type in ("integer", "float")]
    if not numeric:
        connection.execute(
            "create or replace temp table _outliers "
            "(customer_id varchar, column_name varchar, value double, robust_z double)"
        )
        return
    names = [f"c{i}" for i in range(len(numeric))]
    values = ", ".join(
        f"try_cast(nullif(trim(cast({quote_identifier(r.column)} as varchar)), '') as double) as {n}"
        for r, n in zip(numeric, names, strict=True)
    )
    connection.execute(f"create or replace temp table _numeric as select customer_id, {values} from {relation}")
    medians = _aggregates(connection, [f"median({n})" for n in names])
    scales = _aggregates(
        connection,
        [f"1.4826 * median(abs({n} - {m}))" if m is not None else "null" for n, m in zip(names, medians, strict=True)],
    )
    flags = [
        f"{{'column_name': {sql_literal(r.column)}, 'value': {n}, 'robust_z': abs({n} - {m}) / {scale}}}"
        for r, n, m, scale in zip(numeric, names, medians, scales, strict=True)
        if m is not None and scale
    ]
    if not flags:
        connection.execute(
            "create or replace temp table _outliers as select customer_id, '' as column_name, "
            "0.0 as value, 0.0 as robust_z from _numeric limit 0"
        )
        return
    connection.execute(
        f"""
        create or replace temp table _outliers as
        select customer_id, flag.column_name, flag.value, flag.robust_z
        from (
            select customer_id,
                   unnest(list_filter([{", ".join(flags)}], lambda f: f.robust_z > {OUTLIER_ROBUST_Z})) as flag
            from _numeric
        )
        """
    )
    connection.execute("drop table _numeric")


# What the medians of one scan may hold: DuckDB's median keeps every value of its column in memory
# (it cannot spill), so the medians of 10 columns of a 26M-row export (about 4 GB) failed a load under
# its memory limit (warehouse.bounded_memory). At most a quarter of DuckDB's memory limit, so that a
# smaller limit takes more scans. Small loads still take one scan for all columns.
MEDIAN_SCAN_BYTES = 256 * 1024**2


def _aggregates(connection: duckdb.DuckDBPyConnection, expressions: list[str]) -> list:
    """`select <expressions> from _numeric`, in as many scans as keep each one's medians within
    MEDIAN_SCAN_BYTES and a quarter of the memory limit (about 16 bytes per value)."""
    rows = connection.execute("select count(*) from _numeric").fetchall()[0][0]
    budget = min(MEDIAN_SCAN_BYTES, memory_limit_bytes(connection) // 4)
    per_scan = max(1, budget // max(1, 16 * rows))
    values: list = []
    for start in range(0, len(expressions), per_scan):
        batch = expressions[start : start + per_scan]
        values += connection.execute("select " + ", ".join(batch) + " from _numeric").fetchall()[0]
    return values


# A reason's kind: `'abc' is not a whole number` -> `is not a whole number` (the value left out).
_KIND_PATTERN = sql_literal(r"^(?:'.*'|\S+) (is .*)$")


def summarize_problems(connection: duckdb.DuckDBPyConnection, relation: str = "_row_problems", limit: int = 5) -> str:
    """Human summary of table `relation` (as find_row_problems makes it): per column and kind of problem
    ('abc' is not a whole number -> is not a whole number), how many rows and the first one. Grouped
    in SQL, so that a file whose every row breaks a rule is summarized without fetching its problems."""
    kinds = connection.execute(
        f"""select column_name, kind, count(distinct source_row) as rows, min(source_row) as first_row,
                   arg_min({{'customer': customer_id, 'value': raw_value}}, source_row) as first,
                   count(*) over () as kinds
            from (select *, rowid as position, case when starts_with(reason, 'duplicate customer id')
                                 then 'duplicate customer id (superseded)'
                                 else coalesce(nullif(regexp_extract(reason, {_KIND_PATTERN}, 1), ''), reason)
                            end as kind
                  from {relation})
            group by column_name, kind
            order by rows desc, first_row, min(position)  -- ties: in the data dictionary's column order
            limit {int(limit)}"""
    ).fetchall()
    if not kinds:
        return "no problems"
    parts = [
        f"column {column}: {rows} row(s) {kind} "
        f"(first: data row {first_row}, customer {first['customer']}, value {first['value']!r})"
        for column, kind, rows, first_row, first, _ in kinds
    ]
    if kinds[0][5] > limit:
        parts.append(f"and {kinds[0][5] - limit} more kinds of problem")
    return "; ".join(parts)
