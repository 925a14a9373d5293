import duckdb
import pandas as pd
import pytest

from mlops_assets.ingestion import SourceDataError, load_source

TABLE = "caravan.raw_customers"


@pytest.fixture
def sample_export(caravan, tmp_path):
    frame = pd.read_csv(caravan.source_path, nrows=50)
    path = tmp_path / "export.csv"
    frame.to_csv(path, index=False)
    return path, frame


def _load(connection, caravan, path, **overrides):
    arguments = dict(
        path=path,
        source_format="csv",
        table=TABLE,
        required_columns=caravan.required_source_columns,
        load_id=overrides.pop("load_id", "load-1"),
        id_prefix="CV",
        load_log_table="caravan.raw_customer_loads",
    )
    arguments.update(overrides)
    return load_source(connection, **arguments)


def test_loads_rows_as_text_with_row_position_ids_and_logs_the_load(caravan, sample_export):
    path, frame = sample_export
    connection = duckdb.connect()
    load = _load(connection, caravan, path)
    assert load.row_count == 50 and load.extra_columns == []
    loaded = connection.execute(f"select * from {TABLE} order by customer_id").fetchdf()
    assert loaded["customer_id"].tolist()[:3] == ["CV0000001", "CV0000002", "CV0000003"]
    assert loaded["MOSTYPE"].tolist() == frame["MOSTYPE"].astype(str).tolist()
    assert set(loaded["_load_id"]) == {"load-1"}
    log = connection.execute("select load_id, row_count, sha256 from caravan.raw_customer_loads").fetchall()
    assert log == [("load-1", 50, load.sha256)]


def test_id_column_from_the_export_is_used(caravan, sample_export, tmp_path):
    _, frame = sample_export
    path = tmp_path / "with_ids.parquet"
    frame.assign(crm_id=[f"K-{i}" for i in range(50)]).to_parquet(path)
    connection = duckdb.connect()
    _load(connection, caravan, path, source_format="parquet", id_column="crm_id")
    ids = connection.execute(f"select customer_id from {TABLE} order by customer_id").fetchdf()["customer_id"]
    assert (
        ids.iloc[0] == "K-0"
        and "crm_id" not in connection.execute(f"select * from {TABLE} limit 0").fetchdf()
    )


def test_missing_file_names_the_path(caravan, tmp_path):
    with pytest.raises(SourceDataError, match=r"nowhere\.csv: source file not found"):
        _load(duckdb.connect(), caravan, tmp_path / "nowhere.csv")


def test_missing_columns_are_named_and_the_last_good_load_is_kept(caravan, sample_export, tmp_path):
    path, frame = sample_export
    connection = duckdb.connect()
    _load(connection, caravan, path)
    broken = tmp_path / "broken.csv"
    frame.drop(columns=["MGEMLEEF", "PPERSAUT"]).to_csv(broken, index=False)
    with pytest.raises(
        SourceDataError, match=r"broken\.csv: missing required column\(s\) MGEMLEEF, PPERSAUT"
    ):
        _load(connection, caravan, broken, load_id="load-2")
    assert connection.execute(f"select count(*), any_value(_load_id) from {TABLE}").fetchone() == (
        50,
        "load-1",
    )
    assert connection.execute("select count(*) from caravan.raw_customer_loads").fetchone()[0] == 1


def test_header_only_file_is_refused(caravan, sample_export, tmp_path):
    _, frame = sample_export
    empty = tmp_path / "header_only.csv"
    frame.head(0).to_csv(empty, index=False)
    with pytest.raises(SourceDataError, match=r"header_only\.csv: the file has a header but no data rows"):
        _load(duckdb.connect(), caravan, empty)


def test_extra_columns_are_kept_and_reported(caravan, sample_export, tmp_path):
    _, frame = sample_export
    path = tmp_path / "extra.csv"
    frame.assign(campaign_code="X").to_csv(path, index=False)
    load = _load(duckdb.connect(), caravan, path)
    assert load.extra_columns == ["campaign_code"]
