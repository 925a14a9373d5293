"""Loads run in bounded memory: DuckDB's memory limit is set for the load and restored after it, a load
larger than the limit spills instead of failing, the raw table is written in file order without a sort
that would not fit, running out of memory is reported as the machine's problem (never as bad data) and
changes nothing, and the outlier medians are computed in as many scans as fit (the 2 GB load itself is
benchmarks/streaming_load.py)."""

from __future__ import annotations

import duckdb
import pytest

from mlops_assets import warehouse
from mlops_assets.ingestion import LoadResourceError, SourceDataError, load_outcomes, load_source
from mlops_assets.quality import rows
from mlops_assets.synthetic.swiss_bank import write_parquet


def _memory_limit(connection) -> str:
    return connection.execute("select current_setting('memory_limit')").fetchall()[0][0]


def test_the_memory_limit_holds_for_the_body_only_and_rejects_what_is_not_a_size(tmp_path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as connection:
        default = _memory_limit(connection)
        with warehouse.bounded_memory(connection, "64MB"):
            assert _memory_limit(connection) == "61.0 MiB"  # DuckDB reports 64 MB in MiB
        assert _memory_limit(connection) == default
        with pytest.raises(RuntimeError), warehouse.bounded_memory(connection, "64MB"):
            raise RuntimeError("a failed load")
        assert _memory_limit(connection) == default
        with pytest.raises(ValueError, match="expected a size"), warehouse.bounded_memory(connection, "1GB'; drop"):
            pass


@pytest.fixture(scope="module")
def large_export(tmp_path_factory):
    """200,000 synthetic bank customers as CSV (about 15 MB; some 40 MB in DuckDB's temp tables)."""
    folder = tmp_path_factory.mktemp("export")
    write_parquet(folder / "customers.parquet", 200_000)
    with duckdb.connect() as connection:
        connection.execute(
            f"copy (select * from read_parquet('{folder / 'customers.parquet'}')) to '{folder / 'customers.csv'}'"
        )
    return folder / "customers.csv"


def _load(connection, path, load_id="load-1"):
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case("swiss_bank")
    return load_source(
        connection,
        path=path,
        source_format="csv",
        table="swiss_bank.raw_customers",
        rules=use_case.row_rules(),
        load_id=load_id,
        id_column="customer_id",
        id_prefix="SB",
    )


def test_a_load_larger_than_the_memory_limit_spills_and_completes(large_export, tmp_path, monkeypatch):
    # 48 MB: the load's temporary tables and the raw table need more, measured with 2 threads.
    monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "48MB")
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": 2}) as connection:
        load = _load(connection, large_export)
        assert load.row_count == 200_000
        assert connection.execute("select count(*) from swiss_bank.raw_customers").fetchall()[0][0] == 200_000
    # The other side: the same limit without spilling (no temporary folder) cannot hold the load, and
    # says so as a problem of resources, naming the file, the limit and the setting to raise.
    with (
        duckdb.connect(str(tmp_path / "w2.duckdb"), config={"temp_directory": "", "threads": 2}) as connection,
        pytest.raises(LoadResourceError) as raised,
    ):
        _load(connection, large_export)
    message = str(raised.value)
    assert str(large_export) in message and "MLOPS_LOAD_MEMORY_LIMIT=48MB" in message
    assert "not a problem with the file's data" in message and "temp_directory" in message


def _with_bad_rows(export, folder):
    """The export with, in data rows 7 and 150,000, an age that is not a whole number, and in data row
    199,999 the customer id of data row 3 (which it supersedes): three quarantined rows."""
    lines = export.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    age, customer_id = header.index("age"), header.index("customer_id")

    def replaced(row, column, value):
        fields = lines[row].rstrip("\n").split(",")
        fields[column] = value
        lines[row] = ",".join(fields) + "\n"

    replaced(7, age, "2.5")
    replaced(150_000, age, "0x21")
    replaced(199_999, customer_id, lines[3].split(",")[customer_id])
    path = folder / "customers_with_bad_rows.csv"
    path.write_text("".join(lines))
    return path


def test_the_raw_table_is_written_in_file_order_with_its_reasons_under_a_limit_a_sort_would_not_fit(
    large_export, tmp_path, monkeypatch
):
    # 64 MB with spilling: the former write (joins, then `order by source_row` over the whole export)
    # failed here with DuckDB's "failed to pin block", as the 2 GB load did under 1 GB.
    monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "64MB")
    export = _with_bad_rows(large_export, tmp_path)
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": 2}) as connection:
        load = _load(connection, export)
        assert (load.row_count, load.quarantined_rows) == (200_000, 3)
        in_table = connection.execute(
            "select customer_id, _source_row, _quarantine_reason, _outlier_columns from swiss_bank.raw_customers"
        ).fetchall()
        in_file = connection.execute(f"select customer_id from read_csv('{export}', all_varchar = true)").fetchall()
        outliers = connection.execute("select count(distinct customer_id) from _outliers").fetchall()[0][0]
    # Stored in file order: the n-th row read back is data row n, with the file's customer id.
    assert [row[1] for row in in_table] == list(range(1, 200_001))
    assert [row[0] for row in in_table] == [row[0] for row in in_file]
    reasons = {row[1]: row[2] for row in in_table if row[2] is not None}
    assert sorted(reasons) == [3, 7, 150_000]
    assert "superseded by row 199999" in reasons[3] and "'2.5' is not a whole number" in reasons[7]
    assert "'0x21' is not a whole number" in reasons[150_000]
    flagged = [row for row in in_table if row[3] is not None]
    assert len(flagged) == load.outlier_rows == outliers > 0
    assert all(row[2] is None for row in flagged)  # a quarantined row is not also an outlier


def test_running_out_of_memory_while_reading_is_not_called_bad_data_and_loses_nothing(
    large_export, sample_export, tmp_path, monkeypatch
):
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": 2}) as connection:
        first = _load(connection, sample_export, "load-1")
        before = connection.execute("select * from swiss_bank.raw_customers order by _source_row").fetchall()
        # 16 MB cannot hold the CSV reader's buffers for this file, spill folder or not: this used to
        # surface as "cannot be parsed: Out of Memory Error", as if the file were broken.
        monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "16MB")
        with pytest.raises(LoadResourceError) as raised:
            _load(connection, large_export, "load-2")
        assert not isinstance(raised.value, SourceDataError)
        message = str(raised.value)
        assert message.startswith(f"{large_export}: the load ran out of memory or disk")
        assert "MLOPS_LOAD_MEMORY_LIMIT=16MB" in message and "nothing was loaded or changed" in message
        # Nothing lost: the previous load stays, and the file is not recorded as ingested, so that the
        # same file loads once the limit is raised.
        assert connection.execute("select * from swiss_bank.raw_customers order by _source_row").fetchall() == before
        assert connection.execute("select load_id from swiss_bank.ingested_files").fetchall() == [(first.load_id,)]
        monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "256MB")
        assert _load(connection, large_export, "load-3").row_count == 200_000


@pytest.fixture(scope="module")
def sample_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("sample") / "customers.csv"
    write_parquet(path.with_suffix(".parquet"), 1_000)
    with duckdb.connect() as connection:
        connection.execute(f"copy (select * from read_parquet('{path.with_suffix('.parquet')}')) to '{path}'")
    return path


def test_outcomes_load_under_the_same_memory_limit(tmp_path, monkeypatch):
    path = tmp_path / "outcomes.csv"
    with duckdb.connect() as connection:
        connection.execute(
            f"""copy (select 'C' || lpad(i::varchar, 7, '0') as customer_id,
                             case when i % 9 = 0 then 'Yes' else 'No' end as Purchase
                      from range(1, 400001) as t(i)) to '{path}'"""
        )
    arguments = dict(path=path, schema="caravan", target_column="Purchase", allowed_values=("Yes", "No"))
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": 2}) as connection:
        default = _memory_limit(connection)  # DuckDB's, 80% of the machine's memory
        # The load's limit holds while the outcomes are read (16 MB cannot hold this file's reader)...
        monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "16MB")
        with pytest.raises(LoadResourceError, match="MLOPS_LOAD_MEMORY_LIMIT=16MB"):
            load_outcomes(connection, load_id="o-1", **arguments)
        assert not warehouse.table_exists(connection, "caravan", "raw_outcomes")  # nothing written
        monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "128MB")
        loaded = load_outcomes(connection, load_id="o-2", **arguments)
        assert (loaded.rows, loaded.buyers) == (400_000, 44_444)
        # ... and the platform's is back afterwards.
        assert _memory_limit(connection) == default


def test_outlier_medians_in_one_scan_or_one_per_column_agree(large_export, monkeypatch):
    from mlops_assets.use_cases import get_use_case

    rules = get_use_case("swiss_bank").row_rules()
    flagged = []
    with duckdb.connect() as connection:
        connection.execute(f"create table export as select * from read_csv('{large_export}', all_varchar = true)")
        for budget in (rows.MEDIAN_SCAN_BYTES, 1):  # one scan for all columns; one scan per column
            monkeypatch.setattr(rows, "MEDIAN_SCAN_BYTES", budget)
            rows.find_outliers(connection, "export", rules)
            flagged.append(connection.execute("select * from _outliers order by customer_id, column_name").fetchall())
    assert flagged[0] == flagged[1] and len(flagged[0]) > 0


def test_problems_are_summarized_in_sql_per_column_and_kind_first_row_first():
    """The summary groups in DuckDB (a file whose every row breaks a rule is never fetched whole)."""
    with duckdb.connect() as connection:
        connection.execute(
            """create table problems as select * from (values
                ('age', 2, 'b', null, 'missing'), ('age', 1, 'a', null, 'missing'),
                ('balance', 3, 'c', 'x', '''x'' is not a number'),
                ('age', 5, 'e', '2.5', '''2.5'' is not a whole number'),
                ('customer_id', 4, 'd', 'd', 'duplicate customer id, superseded by row 9'),
                ('canton', 6, 'f', 'it''s', '''it''s'' is not one of ZH/BE'),
                ('age', 7, 'g', '130', '130 is outside 18..100')
            ) as t(column_name, source_row, customer_id, raw_value, reason)"""
        )
        summary = rows.summarize_problems(connection, "problems", limit=3)
        connection.execute("create table none_found as select * from problems limit 0")
        assert rows.summarize_problems(connection, "none_found") == "no problems"
    assert summary == (
        "column age: 2 row(s) missing (first: data row 1, customer a, value None); "
        "column balance: 1 row(s) is not a number (first: data row 3, customer c, value 'x'); "
        "column customer_id: 1 row(s) duplicate customer id (superseded) (first: data row 4, customer d, value 'd'); "
        "and 3 more kinds of problem"
    )
