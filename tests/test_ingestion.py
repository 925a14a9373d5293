"""Loading exports: ids, quarantine of unusable rows, and clear errors for broken files."""

from datetime import datetime, timedelta

import duckdb
import pandas as pd
import pytest

from mlops_assets import ingestion
from mlops_assets.ingestion import CsvDialect, SourceDataError, load_outcomes, load_source
from mlops_assets.quality.rows import ColumnRule, find_outliers

TABLE = "caravan.raw_customers"


@pytest.fixture
def sample(caravan):
    return pd.read_csv(caravan.source_path, nrows=200)


def _write(frame: pd.DataFrame, path, **csv_options):
    frame.to_csv(path, index=False, **csv_options)
    return path


def _load(connection, caravan, path, **overrides):
    arguments = dict(
        path=path,
        source_format="csv",
        table=TABLE,
        rules=caravan.row_rules(),
        load_id=overrides.pop("load_id", "load-1"),
        id_prefix="CV",
        max_quarantine_share=0.05,
    )
    arguments.update(overrides)
    return load_source(connection, **arguments)


def test_loads_rows_as_text_with_row_position_ids_and_logs_the_load(caravan, sample, tmp_path):
    connection = duckdb.connect()
    load = _load(connection, caravan, _write(sample, tmp_path / "export.csv"))
    assert load.row_count == 200 and load.extra_columns == [] and load.quarantined_rows == 0
    loaded = connection.execute(f"select * from {TABLE} order by customer_id").fetchdf()
    assert loaded["customer_id"].tolist()[:3] == ["CV0000001", "CV0000002", "CV0000003"]
    assert loaded["MOSTYPE"].tolist() == sample["MOSTYPE"].astype(str).tolist()
    assert set(loaded["_load_id"]) == {"load-1"} and loaded["_quarantine_reason"].isna().all()
    log = connection.execute("select load_id, row_count, status, sha256 from caravan.raw_customer_loads").fetchall()
    assert log == [("load-1", 200, "accepted", load.sha256)]


def test_id_column_from_a_parquet_export_is_used(caravan, sample, tmp_path):
    path = tmp_path / "with_ids.parquet"
    sample.assign(crm_id=[f"K-{i:03d}" for i in range(200)]).to_parquet(path)
    connection = duckdb.connect()
    _load(connection, caravan, path, source_format="parquet", id_column="crm_id")
    frame = connection.execute(f"select * from {TABLE} order by customer_id").fetchdf()
    assert frame["customer_id"].iloc[0] == "K-000" and "crm_id" not in frame.columns


def test_a_few_bad_rows_are_quarantined_with_reasons_and_the_load_goes_on(caravan, sample, tmp_path):
    broken = sample.astype(str)
    broken.loc[4, "MGEMLEEF"] = "forty"  # data row 5
    broken.loc[9, "PPERSAUT"] = "60"  # data row 10, range 0..9
    connection = duckdb.connect()
    load = _load(connection, caravan, _write(broken, tmp_path / "export.csv"))
    assert load.quarantined_rows == 2
    problems = connection.execute(
        "select source_row, customer_id, column_name, reason from caravan.quarantined_customers order by 1"
    ).fetchall()
    assert problems == [
        (5, "CV0000005", "MGEMLEEF", "'forty' is not a whole number"),
        (10, "CV0000010", "PPERSAUT", "60 is outside 0..9"),
    ]
    reasons = connection.execute(
        f"select customer_id, _quarantine_reason from {TABLE} where _quarantine_reason is not null"
    ).fetchall()
    assert sorted(reasons) == [
        ("CV0000005", "MGEMLEEF: 'forty' is not a whole number"),
        ("CV0000010", "PPERSAUT: 60 is outside 0..9"),
    ]


def test_duplicate_ids_keep_the_last_row(caravan, sample, tmp_path):
    with_ids = sample.assign(crm_id=[f"K-{i:03d}" for i in range(200)])
    with_ids.loc[7, "crm_id"] = "K-003"  # K-003 appears at data rows 4 and 8
    connection = duckdb.connect()
    load = _load(connection, caravan, _write(with_ids, tmp_path / "ids.csv"), id_column="crm_id")
    assert load.quarantined_rows == 1
    row = connection.execute("select source_row, reason from caravan.quarantined_customers").fetchone()
    assert row == (4, "duplicate customer id, superseded by row 8")


def test_too_many_bad_rows_reject_the_load_and_keep_the_previous_table(caravan, sample, tmp_path):
    connection = duckdb.connect()
    _load(connection, caravan, _write(sample, tmp_path / "good.csv"))
    broken = sample.astype(str)
    broken["MGEMLEEF"] = "40-50"  # an export that switched to text labels
    path = _write(broken, tmp_path / "text_labels.csv")
    with pytest.raises(SourceDataError) as error:
        _load(connection, caravan, path, load_id="load-2")
    message = str(error.value)
    assert "text_labels.csv" in message and "200 of 200 rows (100.0%) cannot be used" in message
    assert "column MGEMLEEF: 200 row(s) is not a whole number (first: data row 1" in message
    assert connection.execute(f"select count(*), any_value(_load_id) from {TABLE}").fetchone() == (
        200,
        "load-1",
    )
    statuses = connection.execute("select load_id, status from caravan.raw_customer_loads order by 1").fetchall()
    assert statuses == [("load-1", "accepted"), ("load-2", "rejected")]


def test_outliers_are_flagged_by_robust_z_score_not_removed():
    connection = duckdb.connect()
    balances = [1000.0 + 10 * i for i in range(100)] + [1_000_000.0]
    connection.execute(
        "create temp table customers as select 'C' || i as customer_id, b as balance "
        "from (select unnest(range(101)) as i, unnest(?) as b)",
        [balances],
    )
    find_outliers(connection, "customers", [ColumnRule("balance", "float", True, 0, None, ())])
    flagged = connection.execute("select customer_id, column_name from _outliers").fetchall()
    assert flagged == [("C100", "balance")]


def test_whole_numbers_are_strict_three_point_zero_is_fine_but_fractions_and_hex_are_quarantined(
    caravan, sample, tmp_path
):
    values = sample.astype(str)
    values.loc[0, "MGEMLEEF"] = "3.0"  # spreadsheet style: accepted
    values.loc[1, "MGEMLEEF"] = " 3 "
    values.loc[2, "MGEMLEEF"] = "2.5"  # DuckDB would round it to 3
    values.loc[3, "MOSTYPE"] = "0x21"  # DuckDB would read it as 33
    values.loc[4, "MGEMLEEF"] = "1e1"
    connection = duckdb.connect()
    load = _load(connection, caravan, _write(values, tmp_path / "numbers.csv"), max_quarantine_share=0.5)
    reasons = dict(
        connection.execute("select source_row, reason from caravan.quarantined_customers order by 1").fetchall()
    )
    assert load.quarantined_rows == 3
    assert reasons == {
        3: "'2.5' is not a whole number",
        4: "'0x21' is not a whole number",
        5: "'1e1' is not a whole number",
    }


def test_the_same_customers_file_twice_is_recognized_by_content_and_skipped(caravan, sample, tmp_path):
    connection = duckdb.connect()
    first = _load(connection, caravan, _write(sample, tmp_path / "export.csv"), load_id="load-1")
    other = _load(connection, caravan, _write(sample.head(50), tmp_path / "other.csv"), load_id="load-2")
    renamed = tmp_path / "export_copy.csv"  # same content under another name: still the same file
    renamed.write_bytes((tmp_path / "export.csv").read_bytes())
    again = _load(connection, caravan, renamed, load_id="load-3")
    assert not first.skipped and not other.skipped and again.skipped
    assert "already loaded" in again.message and "load-1" in again.message and "export_copy.csv" in again.message
    # Nothing changed: the raw table still holds the latest real load.
    assert connection.execute(f"select distinct _load_id from {TABLE}").fetchall() == [("load-2",)]
    log = connection.execute("select load_id, status from caravan.raw_customer_loads order by loaded_at").fetchall()
    assert log == [("load-1", "accepted"), ("load-2", "accepted"), ("load-3", "skipped")]
    ledger = connection.execute("select kind, load_id from caravan.ingested_files order by loaded_at").fetchall()
    assert ledger == [("customers", "load-1"), ("customers", "load-2")]


def test_load_times_only_grow_even_when_the_clock_goes_back(caravan, sample, tmp_path, monkeypatch):
    """The feature mart's incremental latest records take the history from the newest load time on,
    so a load must never be stamped earlier than the one before (a clock set back, say by NTP)."""
    connection = duckdb.connect()
    first = _load(connection, caravan, _write(sample, tmp_path / "export.csv"), load_id="load-1")

    class ClockSetBack(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.now(tz) - timedelta(days=1)

    monkeypatch.setattr(ingestion, "datetime", ClockSetBack)
    second = _load(connection, caravan, _write(sample.head(50), tmp_path / "other.csv"), load_id="load-2")
    assert second.loaded_at == first.loaded_at + timedelta(microseconds=1)
    stamped = connection.execute(f"select distinct _loaded_at from {TABLE}").fetchall()
    assert stamped == [(second.loaded_at,)]


def test_outcomes_are_loaded_once_per_file_and_once_per_customer_and_day(tmp_path):
    connection = duckdb.connect()

    def outcomes(name, rows, load_id):
        path = tmp_path / name
        pd.DataFrame(rows, columns=["customer_id", "Purchase"]).to_csv(path, index=False)
        return load_outcomes(
            connection,
            path=path,
            schema="caravan",
            target_column="Purchase",
            allowed_values=("Yes", "No"),
            load_id=load_id,
        )

    first = outcomes("outcomes_1.csv", [("A", "No"), ("B", "Yes"), ("A", "Yes")], "o-1")
    assert not first.skipped and first.duplicates_superseded == 1
    same_file = outcomes("outcomes_1_again.csv", [("A", "No"), ("B", "Yes"), ("A", "Yes")], "o-2")
    assert same_file.skipped and "already loaded" in same_file.message and "o-1" in same_file.message
    # Another file repeating B's outcome the same day, correcting A and adding C.
    overlapping = outcomes("outcomes_2.csv", [("B", "Yes"), ("A", "No"), ("C", "No")], "o-3")
    assert overlapping.repeated_outcomes == 1
    stored = connection.execute(
        "select _load_id, customer_id, Purchase from caravan.raw_outcomes order by _load_id, customer_id"
    ).fetchall()
    assert stored == [("o-1", "A", "Yes"), ("o-1", "B", "Yes"), ("o-3", "A", "No"), ("o-3", "C", "No")]


@pytest.mark.parametrize("quirk", ["utf-8 bom", "crlf and trailing blank lines", "gzip .csv.gz", "gzip named .csv"])
def test_everyday_export_quirks_load_the_same_values(caravan, sample, tmp_path, quirk):
    import gzip

    plain = _write(sample, tmp_path / "plain.csv").read_bytes()
    content, name = {
        "utf-8 bom": (b"\xef\xbb\xbf" + plain, "bom.csv"),
        "crlf and trailing blank lines": (plain.replace(b"\n", b"\r\n") + b"\r\n\r\n", "crlf.csv"),
        "gzip .csv.gz": (gzip.compress(plain), "export.csv.gz"),
        "gzip named .csv": (gzip.compress(plain), "export.csv"),
    }[quirk]
    path = tmp_path / name
    path.write_bytes(content)
    connection = duckdb.connect()
    load = _load(connection, caravan, path)
    assert load.row_count == 200 and load.quarantined_rows == 0 and load.extra_columns == []
    loaded = connection.execute(f"select * exclude (_load_id, _source_file, _loaded_at) from {TABLE}").fetchdf()
    reference = duckdb.connect()
    _load(reference, caravan, _write(sample, tmp_path / "reference.csv"))
    expected = reference.execute(f"select * exclude (_load_id, _source_file, _loaded_at) from {TABLE}").fetchdf()
    pd.testing.assert_frame_equal(loaded, expected)


def test_a_semicolon_export_with_decimal_commas_is_read_in_the_use_cases_dialect(tmp_path):
    """One dialect for every file of a use case: delimiter, decimal mark, encoding, quote."""
    rules = [
        ColumnRule("balance", "float", True, 0, None, ()),
        ColumnRule("city", "string", True, None, None, ()),
        ColumnRule("default", "string", False, None, None, ("Ja", "Nein")),
    ]
    path = tmp_path / "export.csv"
    path.write_bytes("id;balance;city;default\nK1;1234,5;'Zürich; Altstadt';Ja\nK2;0,25;Bern;Nein\n".encode("latin-1"))
    connection = duckdb.connect()
    dialect = CsvDialect(delimiter=";", decimal=",", encoding="latin-1", quote="'")
    load = load_source(
        connection,
        path=path,
        source_format="csv",
        table="bank.raw_customers",
        rules=rules,
        load_id="l1",
        delimiter=";",
        id_column="id",
        dialect=dialect,
    )
    assert load.quarantined_rows == 0
    rows = connection.execute("select customer_id, balance, city from bank.raw_customers order by 1").fetchall()
    assert rows == [("K1", "1234.5", "Zürich; Altstadt"), ("K2", "0.25", "Bern")]
    # The same file read with commas as the delimiter is rejected, naming the file and the columns.
    with pytest.raises(SourceDataError) as error:
        load_source(
            duckdb.connect(),
            path=path,
            source_format="csv",
            table="bank.raw_customers",
            rules=rules,
            load_id="l2",
            dialect=CsvDialect(encoding="latin-1"),
            id_column="id",
        )
    assert str(path) in str(error.value) and "delimited by ';', not ','" in str(error.value)


def test_a_header_that_does_not_match_is_rejected_never_re_keyed(caravan, sample, tmp_path):
    renamed = sample.rename(columns={"MOSTYPE": "MOSTYP"}).assign(customer_id=[f"X{i}" for i in range(200)])
    path = _write(renamed, tmp_path / "renamed.csv")
    connection = duckdb.connect()
    with pytest.raises(SourceDataError) as error:
        _load(connection, caravan, path)
    message = str(error.value)
    assert str(path) in message and "missing required column(s) MOSTYPE" in message
    assert "unexpected column(s) MOSTYP" in message
    # A `customer_id` column is the customers' ids, not renamed to customer_id_1 beside assigned ones.
    _load(connection, caravan, _write(sample.assign(customer_id=[f"X{i}" for i in range(200)]), tmp_path / "ids.csv"))
    columns = [row[0] for row in connection.execute(f"describe {TABLE}").fetchall()]
    assert "customer_id_1" not in columns
    assert connection.execute(f"select min(customer_id) from {TABLE}").fetchall()[0][0] == "X0"


def test_assigned_ids_never_collide_across_batches(caravan, sample, tmp_path):
    connection = duckdb.connect()
    _load(connection, caravan, _write(sample, tmp_path / "full.csv"))
    first = _load(
        connection, caravan, _write(sample.head(50), tmp_path / "b1.csv"), load_id="b1", assigned_ids="next_free"
    )
    ids_1 = connection.execute(f"select min(customer_id), max(customer_id) from {TABLE}").fetchall()[0]
    _load(connection, caravan, _write(sample.tail(30), tmp_path / "b2.csv"), load_id="b2", assigned_ids="next_free")
    ids_2 = connection.execute(f"select min(customer_id), max(customer_id) from {TABLE}").fetchall()[0]
    assert first.row_count == 50 and ids_1 == ("CV0000201", "CV0000250") and ids_2 == ("CV0000251", "CV0000280")
    # The full export again (same customers, same order): the same ids by row position.
    _load(connection, caravan, _write(sample, tmp_path / "full_again.csv", lineterminator="\r\n"), load_id="again")
    assert connection.execute(f"select min(customer_id), max(customer_id) from {TABLE}").fetchall()[0] == (
        "CV0000001",
        "CV0000200",
    )


def test_outcome_files_use_the_dialect_and_id_column_of_the_use_case(tmp_path):
    path = tmp_path / "outcomes_1.csv"
    path.write_text("id;default\nK1;yes\nK2;no\nK3;YES\n")
    connection = duckdb.connect()
    arguments = dict(path=path, schema="bank", target_column="default", load_id="o1", delimiter=";")
    with pytest.raises(SourceDataError, match="outcomes_1.csv: 1 row"):
        load_outcomes(connection, allowed_values=("yes", "no"), id_column="id", **arguments)
    path.write_text("id;default\nK1;yes\nK2;no\nK3;si\n")
    loaded = load_outcomes(
        connection, allowed_values=("yes", "si", "no"), positive_values=("yes", "si"), id_column="id", **arguments
    )
    assert loaded.rows == 3 and loaded.buyers == 2


def test_batches_and_incoming_files_get_the_use_cases_dialect_and_id_column(tmp_path):
    from mlops_assets.ingestion import export_ingestion_config
    from mlops_assets.use_cases import SourceSpec

    source = SourceSpec(path="x.csv", delimiter=";", decimal=",", encoding="latin-1", id_column="kunden_nr")
    path = tmp_path / "customers_1.csv"
    path.write_text("kunden_nr;saldo\nK1;1,5\n")
    config = export_ingestion_config(path, source)
    assert config["id_column"] == "kunden_nr" and config["assigned_ids"] == "next_free"
    assert (config["delimiter"], config["decimal"], config["encoding"]) == (";", ",", "latin-1")
    # Without an id column in the use case, a batch's `customer_id` column is its ids (read with `;`).
    no_ids = SourceSpec(path="x.csv", delimiter=";")
    path.write_text("customer_id;saldo\nK1;1.5\n")
    assert export_ingestion_config(path, no_ids)["id_column"] == "customer_id"
    path.write_text("saldo\n1.5\n")
    assert export_ingestion_config(path, no_ids)["id_column"] is None
    with pytest.raises(ValueError, match="decimal mark and the delimiter"):
        SourceSpec(path="x.csv", delimiter=",", decimal=",")
