"""Great Expectations suites for a use case's data assets, and running them on DataFrames.

The rules of a suite are *structural*: they come from the use case's data dictionary and YAML and
need no data, so a new use case has its suites before its first load. They may be kept as JSON files
in `mlops_assets/quality/suites/<use case>/<asset>.json` (versioned, reviewable, written by
`mlops quality-suites`); a use case without files gets the same suites built from its dictionary.
A broken file fails only that use case's checks, with a message naming the file (SuiteError). The
*profiled* part (the unit-change reference, quality/scale.py) is recorded from the use case's first
accepted load in the warehouse (quality/reference.py). Every expectation carries in its meta the
Dagster check it belongs to; its GX severity ("critical" or "warning") decides whether that check
blocks downstream assets.

These suites own the *structural* rules: schema, types, completeness, ids, the dictionary's ranges
and code lists, a unit change (quality/scale.py). They never judge how distributions move within
valid values: that is drift (ml/drift.py), which is reported, alerts and retrains, but never blocks
loading a batch into the history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.quality.scale import EXPECTATION as SCALE_EXPECTATION
from mlops_assets.quality.scale import table_quartiles, table_scale_reference, unit_change_results

SUITE_DIR = Path(__file__).parent / "suites"
SCALE_REFERENCE = "scale"  # kind of the unit-change reference in quality_reference
CRITICAL, WARNING = "critical", "warning"
# Load bookkeeping columns that ingestion adds to the raw table.
RAW_LOAD_COLUMNS = [
    "_load_id",
    "_source_file",
    "_loaded_at",
    "_source_row",
    "_quarantine_reason",
    "_outlier_columns",
]


@dataclass(frozen=True)
class CheckSpec:
    """A Dagster asset check made of the expectations whose meta names it."""

    name: str
    description: str
    # Aggregate rule: the check fails when more than this share of its expectations fail
    # (None: any failed expectation fails the check).
    max_failed_share: float | None = None
    # Set for checks evaluated outside GX (unit_change): whether a failure blocks downstream assets.
    blocking: bool | None = None


@dataclass(frozen=True)
class ExpectationOutcome:
    check: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    observed_value: str
    threshold: str
    unexpected_count: int | None = None
    unexpected_share: float | None = None
    sample_ids: list[str] = field(default_factory=list)


def _expectation(gx_class: str, check: str, severity: str = CRITICAL, **kwargs) -> dict:
    import great_expectations as gx

    expectation = getattr(gx.expectations, gx_class)(severity=severity, meta={"check": check}, **kwargs)
    return expectation.configuration.to_json_dict()


def _suite(name: str, expectations: list[dict], checks: list[CheckSpec]) -> dict:
    return {
        "name": name,
        "expectations": expectations,
        "meta": {"checks": [check.__dict__ for check in checks]},
    }


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names the file and how to fix it."""


def _dictionary_features(use_case) -> pd.DataFrame:
    dictionary = use_case.load_data_dictionary()
    return dictionary[~dictionary["value_type"].isin(["target", "identifier"])]


def raw_checks(use_case) -> list[CheckSpec]:
    quality = use_case.quality
    return [
        CheckSpec("schema", "Every column of the data dictionary is present."),
        CheckSpec("no_extra_columns", "No columns beyond the data dictionary's (extra ones are kept, unused)."),
        CheckSpec(
            "row_count_vs_previous_load",
            f"Rows between {quality.min_row_ratio}x and {quality.max_row_ratio}x the previous accepted load.",
        ),
        CheckSpec(
            "quarantine_share",
            f"At most {quality.max_quarantine_share:.0%} of rows quarantined (unusable values, duplicates).",
        ),
    ]


def raw_suite(use_case) -> dict:
    """The export as loaded: columns, size relative to the previous load, share of unusable rows."""
    required = ["customer_id", *_dictionary_features(use_case)["source_column"], *RAW_LOAD_COLUMNS]
    target_source = use_case.load_data_dictionary().query("value_type == 'target'")["source_column"].tolist()
    required += target_source
    quality = use_case.quality
    checks = raw_checks(use_case)
    expectations = [
        _expectation("ExpectTableColumnsToMatchSet", "schema", column_set=required, exact_match=False),
        _expectation(
            "ExpectTableColumnsToMatchSet", "no_extra_columns", WARNING, column_set=required, exact_match=True
        ),
        _expectation(
            "ExpectTableRowCountToBeBetween",
            "row_count_vs_previous_load",
            min_value={"$PARAMETER": "min_rows"},
            max_value={"$PARAMETER": "max_rows"},
        ),
        _expectation(
            "ExpectColumnValuesToBeNull",
            "quarantine_share",
            column="_quarantine_reason",
            mostly=1 - quality.max_quarantine_share,
        ),
    ]
    return _suite(f"{use_case.name}.raw_customers", expectations, checks)


UNIT_CHANGE = CheckSpec(
    "unit_change",
    "No numeric column's scale jumped by a power of ten while its shape stayed (quartiles all x10^k of "
    "the reference's): a changed unit, not a change of customers.",
    blocking=True,
)


STAGED_CHECKS = [UNIT_CHANGE]


def staged_suite(use_case) -> dict:
    """The latest load, typed and usable. Its structural rules (schema, types, completeness, valid
    values from the data dictionary; unique, non-null ids; a valid target) are dbt tests on the
    staging model (dbt_project/tests/generic/dictionary_rules.sql), run in the staging step. What
    stays here is profiled: `unit_change` against the reference recorded from the first accepted
    load (quality/reference.py, quality/scale.py). Blocking: a load failing it never reaches the
    customer history.

    Distributions moving within valid values are not judged here (that is drift, see ml/drift.py):
    macro indicators recorded with every customer move together in a new economic regime, and such
    a batch must reach the history so that a retrain can learn from it.
    """
    return _suite(f"{use_case.name}.stg_customers", [], STAGED_CHECKS)


def numeric_features(use_case) -> list[str]:
    """The dictionary's numeric features: the columns a unit-change reference is profiled on."""
    features = _dictionary_features(use_case)
    return [row.feature_name for row in features.itertuples() if row.data_type in ("integer", "float")]


def profile_scale_reference(use_case, connection, table: str) -> dict[str, list[float]]:
    """The unit-change reference of an accepted load (quality/scale.py), computed in DuckDB."""
    columns = {r[0] for r in connection.execute(f"describe {table}").fetchall()}
    return table_scale_reference(connection, table, [c for c in numeric_features(use_case) if c in columns])


MART_CHECKS = [
    CheckSpec("schema", "Every model feature and the target are present."),
    CheckSpec("completeness", "No missing values in model features."),
    CheckSpec("target_has_both_classes", "Labelled customers include buyers and non-buyers."),
]


def mart_suite(use_case) -> dict:
    """The feature mart models train on and score from: features present and complete, labelled
    customers of both classes (unique, non-null ids are dbt tests on the mart). Blocking for
    training and scoring."""
    quality = use_case.quality
    features = [f.name for f in use_case.features]
    checks = MART_CHECKS
    expectations = [
        _expectation(
            "ExpectTableColumnsToMatchSet",
            "schema",
            column_set=["customer_id", *features, use_case.target, "load_id"],
            exact_match=False,
        ),
        _expectation(
            "ExpectColumnDistinctValuesToContainSet",
            "target_has_both_classes",
            column=use_case.target,
            value_set=[0, 1],
        ),
    ]
    for name in features:
        expectations.append(
            _expectation(
                "ExpectColumnValuesToNotBeNull", "completeness", column=name, mostly=1 - quality.max_null_share
            )
        )
    return _suite(f"{use_case.name}.customer_features", expectations, checks)


SCORES_CHECKS = [
    CheckSpec("schema", "The columns marketing reads."),
    CheckSpec("valid_scores", "Scores are probabilities in [0, 1]; deciles 1-10; no missing values."),
]


def scores_suite(use_case) -> dict:
    """The score table before publication. One row per customer of the latest load, nobody else, one
    model version: owned by the `scores_are_complete` check (set comparisons in DuckDB), not repeated
    here (at 1M customers GX's uniqueness and distinct-count took 0.48 s of the suite's 0.88 s)."""
    checks = SCORES_CHECKS
    columns = ["customer_id", "score", "rank", "decile", "model_version", "scored_at"]
    expectations = [
        _expectation("ExpectTableColumnsToMatchSet", "schema", column_set=columns, exact_match=False),
        _expectation("ExpectColumnValuesToBeBetween", "valid_scores", column="score", min_value=0.0, max_value=1.0),
        _expectation("ExpectColumnValuesToNotBeNull", "valid_scores", column="score"),
        _expectation("ExpectColumnValuesToBeBetween", "valid_scores", column="decile", min_value=1, max_value=10),
    ]
    return _suite(f"{use_case.name}.customer_scores", expectations, checks)


SUITE_ASSETS = ("raw_customers", "stg_customers", "customer_features", "customer_scores")


def suite_path(use_case, asset: str) -> Path:
    return use_case.suite_dir / f"{asset}.json"


def write_suite(use_case, asset: str, suite: dict) -> Path:
    path = suite_path(use_case, asset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(suite, indent=2, sort_keys=True) + "\n")
    return path


def _check_suite_shape(suite: Any) -> None:
    """The structure this module relies on; GX itself checks each expectation when the suite runs."""
    if not isinstance(suite, dict) or not isinstance(suite.get("expectations"), list):
        raise ValueError("not a suite: expected an object with a list 'expectations'")
    checks = suite.get("meta", {}).get("checks") if isinstance(suite.get("meta"), dict) else None
    if not isinstance(checks, list) or not checks:
        raise ValueError("meta.checks must list the suite's checks")
    names = set()
    for check in checks:
        CheckSpec(**check)  # TypeError on unknown or missing fields
        names.add(check["name"])
    for number, expectation in enumerate(suite["expectations"], 1):
        if not isinstance(expectation, dict) or not isinstance(expectation.get("type"), str):
            raise ValueError(f"expectation {number} has no 'type'")
        check = (expectation.get("meta") or {}).get("check")
        if check not in names:
            raise ValueError(f"expectation {number} ({expectation['type']}) names check {check!r}, not in meta.checks")


def load_suite(use_case, asset: str) -> dict:
    """The suite of `asset`: its file if the use case keeps one, else built from the data dictionary.

    Raises SuiteError naming the file when the file cannot be used."""
    path = suite_path(use_case, asset)
    if not path.exists():
        return structural_suite(use_case, asset)
    try:
        suite = json.loads(path.read_text())
        _check_suite_shape(suite)
    except (OSError, ValueError, TypeError) as error:
        raise SuiteError(
            f"{path}: broken expectation suite ({error}); fix the file, or delete it to use the suite "
            f"built from {use_case.data_dictionary_path}, or rewrite it with "
            f"`mlops quality-suites --use-case {use_case.name}`"
        ) from error
    return suite


def suite_source(use_case, asset: str) -> str:
    """Where the suite of `asset` comes from, for descriptions."""
    path = suite_path(use_case, asset)
    return str(path) if path.exists() else f"built from {use_case.data_dictionary_path}"


def suite_checks(suite: dict) -> list[CheckSpec]:
    return [CheckSpec(**check) for check in suite["meta"]["checks"]]


def check_is_blocking(suite: dict, check: CheckSpec) -> bool:
    """Blocking if declared so, if the check aggregates (its own rule decides) or if it holds a
    critical expectation."""
    if check.blocking is not None:
        return check.blocking
    if check.max_failed_share is not None:
        return True
    return any(
        e["meta"]["check"] == check.name and e.get("severity", CRITICAL) == CRITICAL for e in suite["expectations"]
    )


@cache
def _batch_definition():
    """One ephemeral GX context per process: importing and setting up GX costs seconds."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.execution_engine import pandas_execution_engine

    # GX's pandas engine hashes every row of each batch (md5 of `hash_pandas_object`) for a batch
    # marker, `pandas_data_fingerprint`, unless the frame holds HASH_THRESHOLD bytes or more; GX has no
    # setting for it. The platform never reads that marker (its loads carry their own sha256) and the
    # hash is most of the suites' time on large tables: swiss_bank at 1M customers, the four suites
    # took 7.1 s with it and 3.3 s without (2 alternating pairs; whole run 41.6 -> 38.0 s).
    pandas_execution_engine.HASH_THRESHOLD = 0
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("dataframes")
    return source.add_dataframe_asset("frame").add_batch_definition_whole_dataframe("whole_frame")


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _threshold_text(kwargs: dict, parameters: dict) -> str:
    shown = {}
    for key, value in kwargs.items():
        if key in ("column", "batch_id", "result_format"):
            continue
        if isinstance(value, dict) and "$PARAMETER" in value:
            value = parameters.get(value["$PARAMETER"])
        if isinstance(value, list) and len(value) > 8:
            value = [*value[:8], "..."]
        shown[key] = value
    return ", ".join(f"{k}={v}" for k, v in shown.items())


def _observed_text(result: dict) -> str:
    if "observed_value" in result:
        value = _json_safe(result["observed_value"])
        if isinstance(value, float):
            return f"{value:.4g}"
        if isinstance(value, list) and len(value) > 8:
            return str([*value[:8], "..."])
        return str(value)
    if "unexpected_count" in result:
        return f"{result['unexpected_count']} of {result.get('element_count')} unexpected"
    return ""


def _run(frame: pd.DataFrame, expectations: list[dict], parameters: dict, id_column: str, sample_size: int):
    import great_expectations as gx

    if not expectations:
        return []
    suite = gx.ExpectationSuite(name="validation", expectations=expectations)
    if len(suite.expectations) != len(expectations):  # GX logs and drops what it cannot build
        kept = {json.dumps(e.configuration.to_json_dict(), sort_keys=True) for e in suite.expectations}
        dropped = [e["type"] for e in expectations if json.dumps(e, sort_keys=True) not in kept]
        raise SuiteError(
            f"Great Expectations cannot build {len(expectations) - len(suite.expectations)} "
            f"expectation(s): {', '.join(dropped[:5]) or 'see the log'}"
        )
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": frame})
    result_format: dict = {"result_format": "SUMMARY", "partial_unexpected_count": sample_size}
    if id_column in frame.columns:
        result_format["unexpected_index_column_names"] = [id_column]
    return batch.validate(suite, expectation_parameters=parameters, result_format=result_format).results


def columns_read(suite: dict) -> list[str] | None:
    """The columns the suite's expectations read row by row (`column`, `column_A`/`_B`, `column_list`;
    `expect_table_columns_*` read only the header, see `validate`'s schema_columns), or None when an
    expectation may read columns it does not name this way (a row condition, a query): then the
    whole table is needed."""
    columns: list[str] = []
    for expectation in suite["expectations"]:
        kwargs = expectation["kwargs"]
        if any("row_condition" in key or "query" in key for key in kwargs):
            return None
        if expectation["type"].startswith("expect_table_columns"):
            continue
        columns += [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]
        columns += list(kwargs.get("column_list") or [])
    return list(dict.fromkeys(columns))


def validate(
    frame: pd.DataFrame,
    suite: dict,
    *,
    parameters: dict | None = None,
    schema_columns: list[str] | None = None,
    id_column: str = "customer_id",
    sample_size: int = 10,
) -> list[ExpectationOutcome]:
    """Run a suite on a DataFrame; one outcome per expectation, with ids of offending rows.

    `schema_columns`: the table's full column list, when `frame` holds only the columns the row-level
    expectations need (a wide raw table need not be loaded whole to check its header).
    """
    parameters = parameters or {}
    expectations = suite["expectations"]
    if schema_columns is not None:
        is_schema = [e["type"].startswith("expect_table_columns") for e in expectations]
        results = _run(
            pd.DataFrame(columns=schema_columns),
            [e for e, s in zip(expectations, is_schema, strict=True) if s],
            parameters,
            id_column,
            sample_size,
        ) + _run(
            frame,
            [e for e, s in zip(expectations, is_schema, strict=True) if not s],
            parameters,
            id_column,
            sample_size,
        )
    else:
        results = _run(frame, expectations, parameters, id_column, sample_size)
    outcomes = []
    for result in results:
        config = result.expectation_config
        details = result.result or {}
        if result.exception_info and result.exception_info.get("raised_exception"):
            details = {"observed_value": f"error: {result.exception_info.get('exception_message')}"}
        samples = [
            str(entry.get(id_column))
            for entry in details.get("partial_unexpected_index_list") or []
            if isinstance(entry, dict) and id_column in entry
        ]
        outcomes.append(
            ExpectationOutcome(
                check=config.meta.get("check", "other"),
                expectation=config.type,
                column=config.kwargs.get("column"),
                severity=str(getattr(config.severity, "value", config.severity)).lower(),
                success=bool(result.success),
                observed_value=_observed_text(details),
                threshold=_threshold_text(dict(config.kwargs), parameters),
                unexpected_count=details.get("unexpected_count"),
                unexpected_share=(
                    details["unexpected_percent"] / 100 if details.get("unexpected_percent") is not None else None
                ),
                sample_ids=samples,
            )
        )
    return outcomes


def unit_change_outcomes(
    reference: dict[str, list[float]], connection, table: str, tolerance: float
) -> list[ExpectationOutcome]:
    """The unit-change rule (quality/scale.py) of `table` against the recorded reference, as
    expectation outcomes of the check `unit_change`; quartiles computed in DuckDB."""
    columns = {r[0] for r in connection.execute(f"describe {table}").fetchall()}
    current = table_quartiles(connection, table, [c for c in reference if c in columns])
    return [
        ExpectationOutcome(
            check=UNIT_CHANGE.name,
            expectation=SCALE_EXPECTATION,
            column=column,
            severity=CRITICAL,
            success=passed,
            observed_value=observed,
            threshold=expected,
        )
        for column, passed, observed, expected in unit_change_results(reference, current, tolerance)
    ]


@dataclass(frozen=True)
class CheckOutcome:
    check: CheckSpec
    passed: bool
    blocking: bool
    expectations: list[ExpectationOutcome]

    @property
    def failed(self) -> list[ExpectationOutcome]:
        return [e for e in self.expectations if not e.success]

    def summary(self) -> str:
        failed = self.failed
        if not failed:
            return f"{len(self.expectations)} expectation(s) met"
        head = "; ".join(
            f"{e.column or 'table'}: {e.expectation.removeprefix('expect_')} observed {e.observed_value} "
            f"(expected {e.threshold})" + (f", e.g. ids {', '.join(e.sample_ids[:3])}" if e.sample_ids else "")
            for e in failed[:3]
        )
        more = f"; and {len(failed) - 3} more" if len(failed) > 3 else ""
        return f"{len(failed)} of {len(self.expectations)} expectation(s) failed: {head}{more}"


def evaluate_checks(suite: dict, outcomes: list[ExpectationOutcome]) -> list[CheckOutcome]:
    """Group expectation outcomes into the suite's checks and apply each check's rule."""
    evaluated = []
    for check in suite_checks(suite):
        members = [o for o in outcomes if o.check == check.name]
        failed = [o for o in members if not o.success]
        if check.max_failed_share is not None:
            passed = not members or len(failed) / len(members) <= check.max_failed_share
        else:
            passed = not any(o.severity == CRITICAL for o in failed) if check_is_blocking(suite, check) else not failed
        evaluated.append(CheckOutcome(check, passed, check_is_blocking(suite, check), members))
    return evaluated


def default_checks(use_case, asset: str) -> list[CheckSpec]:
    """The checks of `asset` as the code declares them (what Dagster shows even when the suite
    cannot be built: its checks then fail with the reason)."""
    checks = {"raw_customers": raw_checks(use_case), "stg_customers": STAGED_CHECKS}
    checks |= {"customer_features": MART_CHECKS, "customer_scores": SCORES_CHECKS}
    return checks[asset]


def structural_suite(use_case, asset: str) -> dict:
    """The suite of `asset` from the use case's dictionary and YAML alone (no data needed)."""
    if asset == "raw_customers":
        return raw_suite(use_case)
    if asset == "stg_customers":
        return staged_suite(use_case)
    if asset == "customer_features":
        return mart_suite(use_case)
    if asset == "customer_scores":
        return scores_suite(use_case)
    raise KeyError(f"no suite for asset {asset!r}; known: {', '.join(SUITE_ASSETS)}")


def build_suites(use_case) -> dict[str, dict]:
    """All suites of a use case, from its dictionary and YAML (what `mlops quality-suites` writes)."""
    return {asset: structural_suite(use_case, asset) for asset in SUITE_ASSETS}
