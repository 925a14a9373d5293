"""The bad-input catalogue, fed through the real ingestion path (a Dagster run of the whole job).

Every case must fail with a message naming the file and the column (and the row where there is
one), and must leave the published scores, the champion, the score history and the current model as
they were. Quirks of everyday exports (BOM, CRLF, blank lines, gzip) are accepted: tests/test_ingestion.py.
"""

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import copy_of_first_run

from mlops_assets.publishing import read_published
from mlops_assets.registry import current_champion


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


def a_directory(frame, directory):
    folder = directory / "export_folder.csv"
    folder.mkdir()
    return folder


def symlink_loop(frame, directory):
    first, second = directory / "loop_a.csv", directory / "loop_b.csv"
    first.symlink_to(second)
    second.symlink_to(first)
    return first


def dangling_symlink(frame, directory):
    link = directory / "moved_export.csv"
    link.symlink_to(directory / "gone.csv")
    return link


def binary_file(frame, directory):
    return _text(directory / "photo.csv", bytes(range(256)) * 64)


def spreadsheet_file(frame, directory):
    """An Excel workbook (a zip archive) saved under a .csv name."""
    import zipfile

    path = directory / "workbook.csv"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>" * 100)
    return path


def truncated_parquet(frame, directory):
    frame.to_parquet(directory / "full.parquet")
    content = (directory / "full.parquet").read_bytes()
    return _text(directory / "truncated.parquet", content[: len(content) // 2])


def csv_named_parquet(frame, directory):
    # Not byte-identical to the bundled export: that would be recognized as already loaded and skipped.
    return _csv(frame.head(-1), directory / "really_csv.parquet")


def parquet_read_as_csv(frame, directory):
    frame.to_parquet(directory / "export.parquet")
    return directory / "export.parquet"


def truncated_gzip(frame, directory):
    import gzip

    content = gzip.compress(_csv(frame, directory / "tmp.csv").read_bytes())
    return _text(directory / "cut_off.csv.gz", content[: len(content) // 2])


def fractions_in_integer_column(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 2, "MGEMLEEF"] = "2.5"  # DuckDB would round it to 3
    return _csv(broken, directory / "fractional_age.csv")


def hex_in_integer_column(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 2, "MOSTYPE"] = "0x21"  # DuckDB would read 33
    return _csv(broken, directory / "hex_subtype.csv")


def overflowing_integers(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 2, "MAANTHUI"] = "99999999999999999999999"
    return _csv(broken, directory / "overflow.csv")


def full_width_digits(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 2, "MOSHOOFD"] = "\uff13"  # a full-width 3 from an IME
    return _csv(broken, directory / "full_width.csv")


def negative_values(frame, directory):
    broken = frame.astype(object)
    broken.loc[broken.index % 10 == 2, "PPERSAUT"] = -1
    return _csv(broken, directory / "negative_contribution.csv")


def target_as_words(frame, directory):
    return _csv(frame.assign(Purchase=frame["Purchase"].map({"No": "nope", "Yes": "yes!"})), directory / "words.csv")


def duplicated_header_column(frame, directory):
    lines = [line.rstrip(b"\n") + b",1\n" for line in _lines(_csv(frame, directory / "tmp.csv"))]
    lines[0] = lines[0].replace(b",1\n", b",MOSTYPE\n")  # a second column of the same name
    return _text(directory / "two_mostype.csv", b"".join(lines))


def extra_field_in_a_row(frame, directory):
    lines = _lines(_csv(frame, directory / "tmp.csv"))
    lines[30] = lines[30].rstrip(b"\n") + b",1\n"
    return _text(directory / "one_field_too_many.csv", b"".join(lines))


def id_column_missing(frame, directory):
    return _csv(frame.head(-1), directory / "no_crm_id.csv")  # see csv_named_parquet


def blank_ids(frame, directory):
    ids = [f"K{i:05d}" if i % 50 else "" for i in range(len(frame))]
    return _csv(frame.assign(crm_id=ids), directory / "blank_ids.csv")


def exported_twice(frame, directory):
    """The export appended to itself: every customer twice, no ids to tell (the leak into test sets)."""
    return _csv(pd.concat([frame, frame]), directory / "appended_twice.csv")


def whitespace_only(frame, directory):
    return _text(directory / "blank_lines.csv", b"\n\n\n")


def nul_bytes(frame, directory):
    content = _csv(frame, directory / "tmp.csv").read_bytes().replace(b",", b",\x00", 1)
    return _text(directory / "nul_byte.csv", content)


def empty_rows_block(frame, directory):
    lines = _lines(_csv(frame, directory / "tmp.csv"))
    empty = b"," * 85 + b"\n"
    lines[1:1] = [empty] * 600  # 600 rows of nothing (about 9%)
    return _text(directory / "empty_rows.csv", b"".join(lines))


def tab_delimited(frame, directory):
    return _csv(frame, directory / "tabs.csv", sep="\t")


def columns_renamed_lowercase(frame, directory):
    return _csv(frame.rename(columns=str.lower), directory / "lowercase_header.csv")


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
    Case("a directory", a_directory, ["export_folder.csv", "not a file"]),
    Case("symbolic link loop", symlink_loop, ["loop_a.csv", "symbolic link loop"]),
    Case("dangling symbolic link", dangling_symlink, ["moved_export.csv", "link to a file that does not exist"]),
    Case("binary file", binary_file, ["photo.csv", "line 1 (header) is not valid UTF-8"]),
    Case("spreadsheet named .csv", spreadsheet_file, ["workbook.csv", "not a CSV text export"]),
    Case(
        "truncated Parquet",
        truncated_parquet,
        ["truncated.parquet", "cannot be read as Parquet"],
        {"source_format": "parquet"},
    ),
    Case(
        "CSV named .parquet",
        csv_named_parquet,
        ["really_csv.parquet", "cannot be read as Parquet"],
        {"source_format": "parquet"},
    ),
    Case("Parquet read as CSV", parquet_read_as_csv, ["export.parquet", "not valid UTF-8"]),
    Case("truncated gzip", truncated_gzip, ["cut_off.csv.gz", "Unexpected end of GZIP stream"]),
    Case(
        "fractions in a whole-number column",
        fractions_in_integer_column,
        ["fractional_age.csv", "column MGEMLEEF", "is not a whole number", "data row 3", "'2.5'"],
    ),
    Case(
        "hexadecimal in a whole-number column",
        hex_in_integer_column,
        ["hex_subtype.csv", "column MOSTYPE", "is not a whole number", "'0x21'"],
    ),
    Case("overflowing integers", overflowing_integers, ["overflow.csv", "column MAANTHUI", "is not a whole number"]),
    Case("full-width digits", full_width_digits, ["full_width.csv", "column MOSHOOFD", "is not a whole number"]),
    Case(
        "negative values",
        negative_values,
        ["negative_contribution.csv", "column PPERSAUT", "outside 0..9", "'-1'"],
    ),
    Case("target as words", target_as_words, ["words.csv", "column Purchase", "is not one of Yes/No", "'nope'"]),
    Case("duplicated header column", duplicated_header_column, ["two_mostype.csv", "MOSTYPE appear more than once"]),
    Case(
        "one field too many",
        extra_field_in_a_row,
        ["one_field_too_many.csv", "line 31 (data row 30)", "expected 86 fields, found 87"],
    ),
    Case(
        "id column missing",
        id_column_missing,
        ["no_crm_id.csv", "missing required column(s) crm_id"],
        {"id_column": "crm_id"},
    ),
    Case(
        "blank customer ids",
        blank_ids,
        ["blank_ids.csv", "column crm_id", "without a customer id", "data row 1"],
        {"id_column": "crm_id"},
    ),
    Case(
        "export appended twice (no ids)",
        exported_twice,
        ["appended_twice.csv", "repeat an earlier row exactly", "data row 308 repeats data row 122"],
    ),
    Case("only blank lines", whitespace_only, ["blank_lines.csv", "no header line"]),
    Case("NUL byte in the header", nul_bytes, ["nul_byte.csv", "missing required column(s) MAANTHUI"]),
    Case("block of empty rows", empty_rows_block, ["empty_rows.csv", "column MOSTYPE", "600 row(s) missing"]),
    Case("tab-delimited", tab_delimited, ["tabs.csv", "delimited by '\\t'"]),
    Case(
        "lower-case header", columns_renamed_lowercase, ["lowercase_header.csv", "missing required column(s) MOSTYPE"]
    ),
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
        history = connection.execute("select count(*), max(published_at) from caravan.score_history").fetchall()
        champion = current_champion(connection, "caravan")
    return tuple(published.iloc[0]), tuple(model), (tuple(history), champion)


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
    (_, scores_before), models_before, _ = _state(platform)
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
    (_, scores_after), models_after, _ = _state(platform)
    assert scores_after == scores_before
    assert [sha for _, sha in models_after] == [sha for _, sha in models_before]


def test_a_load_out_of_memory_is_the_machines_problem_said_so_and_changes_nothing(platform, tmp_path, monkeypatch):
    """Not bad data: the failure names the file, the limit and the setting to raise, raises a
    `load_resources` alert (not `data_quality`), and leaves everything as it was."""
    from mlops_assets import warehouse
    from mlops_assets.run_console import _root_message

    bundled = pd.read_csv(Path(__file__).parents[1] / "data/caravan/caravan.csv")
    path = _csv(bundled.head(5000), tmp_path / "export_to_big_for_the_limit.csv")  # content not loaded before
    before = _state(platform)
    monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "1MB")
    result = platform.run(
        run_config={"ops": {"caravan__raw_customers": {"config": {"source_path": str(path)}}}}, raise_on_error=False
    )
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    shown = _root_message(failure.step_failure_data.error)  # what `mlops run` prints for the step
    assert shown.startswith(f"{path}: the load ran out of memory or disk, not a problem with the file's data")
    assert "MLOPS_LOAD_MEMORY_LIMIT=1MB" in shown and "nothing was loaded or changed" in shown
    monkeypatch.undo()
    assert _state(platform) == before
    with duckdb.connect(str(platform.settings.duckdb_path), read_only=True) as connection:
        alerts = connection.execute(
            "select kind, message from caravan.alerts where message like ?", [f"%{path.name}%"]
        ).fetchall()
    assert [kind for kind, _ in alerts] == ["load_resources"]


def test_an_unreadable_export_is_named_and_changes_nothing(platform, tmp_path, monkeypatch):
    """A file the pipeline may not read (mode 000). As root the kernel allows the read anyway, so there
    the operating system's refusal is injected where the loader first opens the file."""
    import builtins
    import os

    from mlops_assets import ingestion

    bundled = pd.read_csv(Path(__file__).parents[1] / "data/caravan/caravan.csv")
    path = _csv(bundled, tmp_path / "locked_export.csv")
    path.chmod(0)
    if os.access(path, os.R_OK):  # running as root

        def refusing_open(file, *arguments, **options):
            if Path(file) == path:
                raise PermissionError(13, "Permission denied", str(path))
            return builtins.open(file, *arguments, **options)

        monkeypatch.setattr(ingestion, "open", refusing_open, raising=False)
    before = _state(platform)
    result = platform.run(
        run_config={"ops": {"caravan__raw_customers": {"config": {"source_path": str(path)}}}}, raise_on_error=False
    )
    assert not result.success
    message = failure_messages(result)
    assert f"{path}: source file cannot be read" in message and "Permission denied" in message, message
    monkeypatch.undo()
    assert _state(platform) == before
