"""Loads run in bounded memory: DuckDB's memory limit is set for the load and restored after it, a load
larger than the limit spills instead of failing, and the outlier medians are computed in as many scans
as fit (the 2 GB load itself is benchmarks/streaming_load.py)."""

from __future__ import annotations

import duckdb
import pytest

from mlops_assets import warehouse
from mlops_assets.ingestion import load_source
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


def _load(connection, path):
    from mlops_assets.use_cases import get_use_case

    use_case = get_use_case("swiss_bank")
    return load_source(
        connection,
        path=path,
        source_format="csv",
        table="swiss_bank.raw_customers",
        rules=use_case.row_rules(),
        load_id="load-1",
        id_column="customer_id",
        id_prefix="SB",
    )


def test_a_load_larger_than_the_memory_limit_spills_and_completes(large_export, tmp_path, monkeypatch):
    # 96 MB: the load's temporary tables need more (three copies of the export), measured with 2 threads.
    monkeypatch.setattr(warehouse, "LOAD_MEMORY_LIMIT", "96MB")
    with duckdb.connect(str(tmp_path / "w.duckdb"), config={"threads": 2}) as connection:
        load = _load(connection, large_export)
        assert load.row_count == 200_000
        assert connection.execute("select count(*) from swiss_bank.raw_customers").fetchall()[0][0] == 200_000
    # The other side: the same limit without spilling (no temporary folder) cannot hold the load.
    with (
        duckdb.connect(str(tmp_path / "w2.duckdb"), config={"temp_directory": "", "threads": 2}) as connection,
        pytest.raises(duckdb.OutOfMemoryException),
    ):
        _load(connection, large_export)


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
