"""The bad-input catalogue, fed through the real ingestion path (a Dagster run of the whole job).

Every case must fail with a message naming the file and the column (and the row where there is
one), and must leave the published scores and the current model as they were.
"""

from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from conftest import copy_of_first_run

from mlops_assets.publishing import read_published


@dataclass
class Case:
    name: str
    build: object  # (bundled frame, directory) -> path of the bad export
    expected: list[str]  # fragments the failure message must contain
    run_config: dict | None = None


def _csv(frame: pd.DataFrame, path: Path, **options) -> Path:
    frame.to_csv(path, index=False, **options)
    return path


def _text(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _lines(source: Path) -> list[bytes]:
    return source.read_bytes().splitlines(keepends=True)


def missing_file(frame, directory):
    return directory / "export_missing.csv"


def empty_file(frame, directory):
    return _text(directory / "empty.csv", b"")


def header_only(frame, directory):
    return _csv(frame.head(0), directory / "header_only.csv")


def ragged_rows(frame, directory):
    lines = _lines(_csv(frame, directory / "tmp.csv"))
    lines[10] = b",".join(lines[10].split(b",")[:80]) + b"\n"  # data row 10 lost 6 fields
    return _text(directory / "ragged.csv", b"".join(lines))


def bad_quoting(frame, directory):
    lines = _lines(_csv(frame, directory / "tmp.csv"))
    lines[20] = b'"' + lines[20]  # an opening quote that is never closed
    return _text(directory / "bad_quoting.csv", b"".join(lines))


def wrong_delimiter(frame, directory):
    return _csv(frame, directory / "semicolons.csv", sep=";")


def not_utf8(frame, directory):
    content = _csv(frame, directory / "tmp.csv").read_bytes().replace(b",No\n", b",N\xe9e\n", 1)
    return _text(directory / "latin1.csv", content)


def required_column_missing(frame, directory):
    return _csv(frame.drop(columns=["MGEMLEEF"]), directory / "no_age_class.csv")


def text_in_numeric_column(frame, directory):
    labels = {1: "20-30", 2: "30-40", 3: "40-50", 4: "50-60", 5: "60-70", 6: "70-80"}
    return _csv(frame.assign(MGEMLEEF=frame["MGEMLEEF"].map(labels)), directory / "age_as_text.csv")


def nulls_above_threshold(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 3, "MOSTYPE"] = None  # 10% empty, limit 5%
    return _csv(broken, directory / "empty_subtypes.csv")


def duplicate_ids(frame, directory):
    ids = [f"K{i:05d}" for i in range(len(frame))]
    ids = [ids[i - 1] if i % 5 == 1 else ids[i] for i in range(len(ids))]  # 20% repeat the previous id
    return _csv(frame.assign(crm_id=ids), directory / "duplicated_ids.csv")


def values_out_of_range(frame, directory):
    return _csv(frame.assign(PPERSAUT=frame["PPERSAUT"] * 10), directory / "car_contribution_x10.csv")


def single_class_target(frame, directory):
    return _csv(frame.assign(Purchase="No"), directory / "no_buyers.csv")


def tenfold_row_drop(frame, directory):
    return _csv(frame.head(len(frame) // 10), directory / "partial_export.csv")


def swapped_distributions(frame, directory, caravan=None):
    """Same columns and valid codes, but another population: every value drawn uniformly in range."""
    rng = np.random.default_rng(7)
    dictionary = pd.read_csv(Path(__file__).parents[1] / "dbt_project/seeds/caravan/caravan_data_dictionary.csv")
    swapped = frame.copy()
    for row in dictionary.itertuples():
        if row.value_type != "target":
            swapped[row.source_column] = rng.integers(int(row.min_value), int(row.max_value) + 1, len(frame))
    return _csv(swapped, directory / "other_population.csv")


CASES = [
    Case("missing file", missing_file, ["export_missing.csv", "source file not found"]),
    Case("empty file", empty_file, ["empty.csv", "the file is empty"]),
    Case("header only", header_only, ["header_only.csv", "header but no data rows"]),
    Case("ragged rows", ragged_rows, ["ragged.csv", "line 11 (data row 10)", "expected 86 fields, found 80"]),
    Case("bad quoting", bad_quoting, ["bad_quoting.csv", "line 21 (data row 20)", "not closed"]),
    Case("wrong delimiter", wrong_delimiter, ["semicolons.csv", "delimited by ';'"]),
    Case("non-UTF-8 bytes", not_utf8, ["latin1.csv", "not valid UTF-8", "line"]),
    Case(
        "required column missing",
        required_column_missing,
        ["no_age_class.csv", "missing required column(s) MGEMLEEF"],
    ),
    Case(
        "text in a numeric column",
        text_in_numeric_column,
        ["age_as_text.csv", "column MGEMLEEF", "is not a whole number", "data row 1"],
    ),
    Case(
        "nulls above threshold",
        nulls_above_threshold,
        ["empty_subtypes.csv", "column MOSTYPE", "missing", "data row 4"],
    ),
    Case(
        "duplicate ids",
        duplicate_ids,
        ["duplicated_ids.csv", "column customer_id", "duplicate customer id", "data row 1, customer K00000"],
        {"id_column": "crm_id"},
    ),
    Case(
        "values out of range",
        values_out_of_range,
        ["car_contribution_x10.csv", "column PPERSAUT", "outside 0..9", "data row"],
    ),
    Case("single-class target", single_class_target, ["no_buyers.csv", "purchased_caravan_policy", "[0, 1]"]),
    Case(
        "10x drop in rows",
        tenfold_row_drop,
        ["partial_export.csv", "table_row_count_to_be_between", "observed 582"],
    ),
    Case("swapped data set", swapped_distributions, ["other_population.csv", "column_mean_to_be_between"]),
]


@pytest.fixture(scope="module")
def platform(tmp_path_factory, completed_pipeline):
    return copy_of_first_run(completed_pipeline, tmp_path_factory.mktemp("catalogue"))


def _state(harness) -> tuple:
    published = read_published(
        harness.settings.published_dir / "caravan.duckdb",
        "select (select model_version from publication) v, sum(hash(customer_id, score)) h from customer_scores",
    )
    with duckdb.connect(str(harness.settings.duckdb_path), read_only=True) as connection:
        model = connection.execute("select model_version, sha256 from caravan.propensity_model").fetchall()
    return tuple(published.iloc[0]), tuple(model)


def failure_messages(result) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            while error is not None:
                messages.append(error.message)
                error = error.cause
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                messages.append(evaluation.description or "")
    return "\n".join(messages)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(platform, case, tmp_path):
    bundled = pd.read_csv(Path(__file__).parents[1] / "data/caravan/caravan.csv")
    before = _state(platform)
    path = case.build(bundled, tmp_path)
    config = {"source_path": str(path), **(case.run_config or {})}
    result = platform.run(run_config={"ops": {"caravan__raw_customers": {"config": config}}}, raise_on_error=False)
    assert not result.success
    message = failure_messages(result)
    for fragment in case.expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert _state(platform) == before


def test_unknown_extra_column_warns_and_the_run_goes_on(platform, tmp_path):
    bundled = pd.read_csv(Path(__file__).parents[1] / "data/caravan/caravan.csv")
    path = _csv(bundled.assign(campaign_code="X"), tmp_path / "with_campaign_code.csv")
    (_, scores_before), models_before = _state(platform)
    result = platform.run(run_config={"ops": {"caravan__raw_customers": {"config": {"source_path": str(path)}}}})
    assert result.success
    warnings = [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
        and e.asset_check_evaluation_data.check_name == "no_extra_columns"
    ]
    assert len(warnings) == 1 and not warnings[0].passed
    assert "with_campaign_code.csv" in warnings[0].description and "campaign_code" in warnings[0].description
    assert platform.latest_metadata("caravan/raw_customers")["extra_columns"] == "campaign_code"
    # Same data apart from the unused column: the retrained model and the published scores are identical.
    (_, scores_after), models_after = _state(platform)
    assert scores_after == scores_before
    assert [sha for _, sha in models_after] == [sha for _, sha in models_before]
