"""The local Dagster instance's SQLite files: no fsync per event, and nothing else touched."""

import dagster as dg
import pytest
import sqlalchemy

from mlops_assets.dagster_sqlite import relax_dagster_sqlite_sync


def synchronous(path) -> int:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as connection:
        return connection.exec_driver_sql("PRAGMA synchronous").scalar()


def test_only_files_in_the_dagster_home_are_relaxed(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_DAGSTER_SQLITE_SYNC", raising=False)
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "dagster_home_other"
    home.mkdir()
    elsewhere.mkdir()
    relax_dagster_sqlite_sync(home)

    assert synchronous(home / "runs.db") == 0  # OFF
    assert synchronous(elsewhere / "runs.db") == 2  # SQLite's default, FULL

    # Dagster's own storages on that home still record a run and its events.
    @dg.asset
    def one() -> int:
        return 1

    with dg.DagsterInstance.local_temp(str(home)) as instance:
        result = dg.materialize([one], instance=instance)
        assert result.success
        assert instance.get_latest_materialization_event(dg.AssetKey("one")) is not None


def test_the_default_can_be_restored_and_a_bad_level_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("MLOPS_DAGSTER_SQLITE_SYNC", "full")
    relax_dagster_sqlite_sync(home)
    assert synchronous(home / "runs.db") == 2

    monkeypatch.setenv("MLOPS_DAGSTER_SQLITE_SYNC", "sometimes")
    with pytest.raises(SystemExit, match="MLOPS_DAGSTER_SQLITE_SYNC='SOMETIMES'"):
        relax_dagster_sqlite_sync(home)
