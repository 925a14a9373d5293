"""A warehouse from before calibration and the out-of-time comparison gets the new columns in place."""

import duckdb

from mlops_assets.registry import ensure_tables


def test_older_registry_tables_gain_the_new_columns_and_keep_their_rows():
    connection = duckdb.connect()
    connection.execute("create schema caravan")
    connection.execute("create table caravan.model_registry (model_version varchar, sha256 varchar)")
    connection.execute("insert into caravan.model_registry values ('caravan-old', 'abc')")
    connection.execute("create table caravan.model_validations (validation_id varchar, model_version varchar)")
    ensure_tables(connection, "caravan")
    ensure_tables(connection, "caravan")  # idempotent
    columns = {
        table: {
            name
            for (name,) in connection.execute(
                "select column_name from information_schema.columns where table_schema = 'caravan' and table_name = ?",
                [table],
            ).fetchall()
        }
        for table in ("model_registry", "model_validations", "model_search_trials")
    }
    assert "calibration" in columns["model_registry"]
    assert {"evaluation_set", "difference", "difference_low", "difference_high", "comparison"} <= columns[
        "model_validations"
    ]
    assert {"params", "cv_mean", "best_rounds", "is_best"} <= columns["model_search_trials"]
    assert connection.execute("select model_version, calibration from caravan.model_registry").fetchall() == [
        ("caravan-old", None)
    ]
