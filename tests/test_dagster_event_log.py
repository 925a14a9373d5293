"""The local Dagster instance's event log (`mlops_assets/dagster_event_log.py`): connections kept open,
nothing else changed. What it must keep: every event a process stored is there for the next process,
also when the writer is killed without closing anything, and threads storing at once lose nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import dagster as dg

from mlops_assets.dagster_event_log import OPEN_DATABASES, OpenSqliteEventLogStorage

PROJECT = Path(__file__).resolve().parents[1]

# A run that materializes an asset with a passing check, then ends its process without closing
# anything (like `mlops`, and like a killed process).
WRITER = textwrap.dedent(
    """
    import os
    import dagster as dg

    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="numbers")])
    def numbers():
        yield dg.Output([1, 2, 3])
        yield dg.AssetCheckResult(passed=True)

    instance = dg.DagsterInstance.get()
    result = dg.materialize([numbers], instance=instance)
    print(result.run_id, type(instance.event_log_storage).__name__, flush=True)
    os._exit(0)
    """
)


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    return home


def test_events_of_a_process_that_exits_without_closing_are_all_read_by_the_next(tmp_path, monkeypatch):
    home = _dagster_home(tmp_path)
    environment = {**os.environ, "DAGSTER_HOME": str(home)}
    written = subprocess.run(
        [sys.executable, "-c", WRITER], env=environment, capture_output=True, text=True, check=True
    )
    run_id, storage_class = written.stdout.split()
    assert storage_class == "OpenSqliteEventLogStorage"

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, OpenSqliteEventLogStorage)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        kinds = [record.dagster_event.event_type for record in instance.all_logs(run_id) if record.dagster_event]
        assert kinds.count(dg.DagsterEventType.ASSET_MATERIALIZATION) == 1
        assert kinds[-1] == dg.DagsterEventType.RUN_SUCCESS
        # The index database has the cross-run records too: the latest materialization and the check.
        materialization = instance.get_latest_materialization_event(dg.AssetKey("numbers"))
        assert materialization is not None and materialization.run_id == run_id
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")]
        )
        assert check[dg.AssetCheckKey(dg.AssetKey("numbers"), "positive")].run_id == run_id


def test_threads_storing_at_once_lose_no_event_and_wipe_starts_afresh(tmp_path):
    storage = OpenSqliteEventLogStorage(base_dir=str(tmp_path / "runs"))
    run_ids = [f"run-{n}" for n in range(OPEN_DATABASES + 4)]

    def store(my_runs: list[str]) -> None:
        for n, run_id in ((n, run_id) for n in range(20) for run_id in my_runs):
            storage.store_event(
                dg.EventLogEntry(
                    error_info=None,
                    level="INFO",
                    user_message=f"message {n}",
                    run_id=run_id,
                    timestamp=float(n),
                )
            )

    threads = [threading.Thread(target=store, args=(run_ids[start::4],)) for start in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # More run databases than connections kept open: the oldest were closed and reopened on reading.
    assert [len(storage.get_records_for_run(run_id, limit=1000).records) for run_id in run_ids] == [20] * len(run_ids)

    storage.wipe()
    assert storage.get_records_for_run(run_ids[0]).records == []
    storage.store_event(dg.EventLogEntry(None, "INFO", "after wipe", run_ids[0], 1.0))
    assert len(storage.get_records_for_run(run_ids[0]).records) == 1
    storage.dispose()


def test_an_instance_keeps_its_events_in_its_own_folder_whatever_dagster_home_names(tmp_path, monkeypatch):
    """`DagsterInstance.from_config(folder)` (the recovery sensor's test, tools) under `make test`,
    where DAGSTER_HOME names the project's instance: the events must not go there."""
    other, mine = _dagster_home(tmp_path / "other"), _dagster_home(tmp_path / "mine")
    monkeypatch.setenv("DAGSTER_HOME", str(other))

    @dg.asset
    def numbers() -> list[int]:
        return [1, 2, 3]

    with dg.DagsterInstance.from_config(str(mine)) as instance:
        run_id = dg.materialize([numbers], instance=instance).run_id
        assert instance.get_latest_materialization_event(dg.AssetKey("numbers")).run_id == run_id
    assert (mine / "history" / "runs" / f"{run_id}.db").exists()
    assert not (other / "history").exists()
