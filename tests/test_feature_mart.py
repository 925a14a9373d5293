"""The feature mart's latest records, built incrementally, against a window over the whole history."""

import dagster as dg
import duckdb
import pandas as pd
from conftest import copy_of_first_run

LATEST_BY_WINDOW = """
    select * from caravan.int_customer_history
    qualify row_number() over (partition by customer_id order by loaded_at desc, load_id desc) = 1
"""


def _differences_from_the_window(connection) -> int:
    """Rows in the incremental latest records and not in the window over the history, or the reverse."""
    return connection.execute(
        f"""select count(*) from (
                (select * from caravan.int_latest_records except all ({LATEST_BY_WINDOW}))
                union all
                (({LATEST_BY_WINDOW}) except all select * from caravan.int_latest_records)
            )"""
    ).fetchone()[0]


def _source(platform, frame: pd.DataFrame, name: str) -> dict:
    path = platform.settings.home / name
    frame.to_csv(path, index=False)
    return {"ops": {"caravan__raw_customers": {"config": {"source_path": str(path)}}}}


def test_latest_records_built_incrementally_are_the_window_over_the_whole_history(
    tmp_path, completed_pipeline, caravan
):
    """A partial export (the first 3,000 customers, 1,000 of them changed) replaces those customers'
    records and keeps the others'; a build stopped after the history was extended is caught up by the
    next run. After each, the incremental latest records equal a window over the whole history, and
    the mart has one row per customer ever accepted."""
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home", use_cases=(caravan,))
    export = pd.read_csv(caravan.source_path)
    partial = export.head(3000).copy()
    partial.loc[:999, "MAANTHUI"] = 1  # number_of_houses, within the dictionary's range

    result = platform.run(run_config=_source(platform, partial, "partial.csv"))
    assert result.success
    with duckdb.connect(str(platform.settings.duckdb_path), read_only=True) as connection:
        assert _differences_from_the_window(connection) == 0
        houses = dict(
            connection.execute(
                "select customer_id, number_of_houses from caravan.customer_features order by customer_id"
            ).fetchall()
        )
        loads = connection.execute("select count(distinct load_id) from caravan.int_latest_records").fetchone()[0]
    assert len(houses) == 5822 and loads == 2  # customers missing from the partial export keep theirs
    changed = [houses[customer] for customer in sorted(houses)[:1000]]
    assert set(changed) == {1}

    # The marts step stops after the history took a new export: the latest records miss it ...
    another = export.head(4000).copy()
    another.loc[:1999, "MAANTHUI"] = 2
    config = _source(platform, another, "another.csv")
    steps = [dg.AssetKey(["caravan", n]) for n in ("raw_customers", "stg_customers", "int_customer_history")]
    job = platform.defs.resolve_job_def("caravan_pipeline")
    assert job.execute_in_process(instance=platform.instance, asset_selection=steps, run_config=config).success
    with duckdb.connect(str(platform.settings.duckdb_path), read_only=True) as connection:
        assert _differences_from_the_window(connection) == 4000 * 2  # each customer of the export

    # ... and the next run (the same file: its ingestion is skipped) catches up.
    assert platform.run(run_config=config).success
    with duckdb.connect(str(platform.settings.duckdb_path), read_only=True) as connection:
        assert _differences_from_the_window(connection) == 0
        updated = connection.execute(
            "select count(*) from caravan.customer_features where number_of_houses = 2"
        ).fetchone()[0]
    assert updated >= 2000
