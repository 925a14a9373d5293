"""A full disk where the published file is written: the publication fails and says so, the score
history commits nothing, no temporary file is left, and the previous publication stays.

Uses a 16 KB tmpfs (the test runs as root in CI; `mount` needs it) as the published folder of a copy
of the completed pipeline's platform and runs the scoring job against it. A copy, because the run
records validation results and alerts that other tests of the session pipeline count.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import re
import subprocess

import duckdb
import pytest
from conftest import copy_of_first_run

from mlops_assets.definitions import build_definitions
from mlops_assets.run_console import RunSummary, collect_events


@pytest.fixture
def full_disk(tmp_path):
    mount_point = tmp_path / "full_disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def _history(settings) -> tuple:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        return connection.execute("select count(*), max(published_at) from caravan.score_history").fetchall()[0]


def test_a_full_disk_fails_the_publication_truthfully_and_records_nothing(completed_pipeline, full_disk, tmp_path):
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    settings = dataclasses.replace(platform.settings, published_dir=full_disk)
    definitions = build_definitions(settings)
    history_before = _history(settings)

    result = definitions.resolve_job_def("caravan_scoring").execute_in_process(
        instance=platform.instance, raise_on_error=False
    )

    assert not result.success
    summary = RunSummary("run", "caravan", "caravan_scoring", result.run_id, result.success, True)
    collect_events(summary, result.all_events)
    failure = "\n".join(summary.failed_steps)
    assert "caravan__published_scores" in failure
    assert "No space left on device" in failure or "space" in failure.lower(), failure
    assert "no transaction is active" not in failure  # the real error, not the rollback's
    assert _history(settings) == history_before  # nothing recorded for a publication that did not happen
    assert list(full_disk.iterdir()) == []  # no temporary file left behind, nothing published
    # The regular published file of the pipeline is untouched.
    assert (platform.settings.published_dir / "caravan.duckdb").exists()


# --- A full disk at each commit point of a run (fault injection) ------------------------------------
#
# A tmpfs fills up at one place, not at a chosen commit. To show every platform commit, the warehouse
# connections of the run (all opened through `io_managers.warehouse_connection`) are wrapped: at the
# chosen write, the transaction fails the way DuckDB's does when the disk is full: its commit raises
# `IOException: ... No space left on device` and the transaction is gone (so a later `rollback` has
# nothing to roll back, which used to hide the real error). A write outside a transaction fails at
# once. The publication swap fails as `os.replace` does on a full disk (ENOSPC).

DISK_FULL = "IO Error: Could not write file: No space left on device"

# Commit point -> the write whose transaction fails (matched against the statement's text).
COMMIT_POINTS = {
    "registry": r"insert into caravan\.model_registry",
    "model status": r"insert into caravan\.model_status_events",
    "alerts": r"insert into caravan\.alerts",
    "monitoring history": r"insert into caravan\.drift_history",
    "score history": r"insert into caravan\.score_history",
}


class _FullDiskConnection:
    """A warehouse connection on which one chosen write meets a full disk (see above)."""

    def __init__(self, real, fault: _DiskFullAt):
        self._real, self._fault, self._in_transaction, self._doomed = real, fault, False, False

    def execute(self, statement, *arguments):
        text = " ".join(str(statement).split()).lower()
        if text.startswith("begin"):
            self._in_transaction = True
        elif text in ("commit", "rollback"):
            self._in_transaction = False
            if text == "commit" and self._doomed:
                self._doomed = False
                self._real.execute("rollback")  # DuckDB: a failed commit leaves no transaction
                raise duckdb.IOException(DISK_FULL)
        elif not self._fault.fired and re.search(self._fault.pattern, text):
            self._fault.fired = True
            if not self._in_transaction:
                raise duckdb.IOException(DISK_FULL)
            self._doomed = True
        return self._real.execute(statement, *arguments)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _DiskFullAt:
    def __init__(self, pattern: str):
        self.pattern, self.fired = pattern, False

    def wrap(self, original):
        @contextlib.contextmanager
        def connection(database, **options):
            with original(database, **options) as real:
                # `select * from obj` finds the caller's DataFrame `obj` one frame above this wrapper.
                real.execute("set python_scan_all_frames = true")
                yield _FullDiskConnection(real, self)

        return connection


PUBLISHED_STATE = (
    "select p.dagster_run_id, p.model_version, p.published_at, count(*), sum(s.score) "
    "from publication p, customer_scores s group by all"
)


def _platform_state(settings) -> tuple:
    """What must not change when a run fails: the published scores, the champion, the score history."""
    from mlops_assets.publishing import read_published
    from mlops_assets.registry import current_champion

    published = tuple(read_published(settings.published_dir / "caravan.duckdb", PUBLISHED_STATE).iloc[0])
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as connection:
        champion = current_champion(connection, "caravan")
        history = connection.execute(
            "select count(*), count(distinct publication_id), max(published_at) from caravan.score_history"
        ).fetchall()[0]
    return published, champion, history


def _failure_text(result) -> str:
    summary = RunSummary("run", "caravan", result.dagster_run.job_name, result.run_id, result.success, True)
    collect_events(summary, result.all_events)
    return "\n".join(summary.failed_steps + summary.failed_checks_blocking)


@pytest.mark.parametrize("point", [*COMMIT_POINTS, "publication swap"])
def test_a_full_disk_at_each_commit_point_changes_nothing_and_says_so(completed_pipeline, tmp_path, monkeypatch, point):
    from mlops_assets.defs import io_managers
    from mlops_assets.publishing import PreparedPublication

    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    before = _platform_state(platform.settings)
    fault = _DiskFullAt(COMMIT_POINTS.get(point, "(?!)"))
    with monkeypatch.context() as patch:
        if point == "publication swap":

            def full_disk_swap(self):
                fault.fired = True
                raise OSError(errno.ENOSPC, "No space left on device", str(self.destination))

            patch.setattr(PreparedPublication, "swap", full_disk_swap)
        else:
            patch.setattr(io_managers, "warehouse_connection", fault.wrap(io_managers.warehouse_connection))
        failed = platform.run("caravan_retrain", raise_on_error=False)

    assert fault.fired, f"the retrain never reached the {point} commit"
    assert not failed.success  # a run that could not record what it did does not report success
    failure = _failure_text(failed)
    assert "No space left on device" in failure, failure  # the real error, named
    assert "no transaction is active" not in failure, failure
    assert _platform_state(platform.settings) == before  # published scores, champion, history unchanged
    assert not [p for p in platform.settings.published_dir.iterdir() if p.name.endswith((".tmp", ".tmp.wal"))]

    # With space again the next run completes and publishes.
    recovered = platform.run("caravan_retrain", raise_on_error=False)
    assert recovered.success, _failure_text(recovered)
    published, _, history = _platform_state(platform.settings)
    assert published[0] == recovered.run_id
    assert history[1] == before[2][1] + 1
