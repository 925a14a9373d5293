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
from mlops_assets.run_console import RunSummary, collect_events, finish_summary


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
    "score history": r"insert into caravan\.score_history",
}
# Commits after the publication: the run still fails and says so, but the scores are out.
AFTER_THE_SWAP = {"monitoring history": r"insert into caravan\.drift_history"}


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


def _summary(result, settings) -> RunSummary:
    """What `mlops retrain` would print for the run: read from its events and the published file."""
    summary = RunSummary("retrain", "caravan", result.dagster_run.job_name, result.run_id, result.success, True)
    collect_events(summary, result.all_events)
    finish_summary(summary, settings.published_dir / "caravan.duckdb", settings.duckdb_path)
    return summary


def _run_with_a_full_disk_at(platform, point: str, patch) -> tuple:
    """Run the retrain with the disk full at `point`; returns (result, whether the fault was reached)."""
    from mlops_assets.defs import io_managers
    from mlops_assets.publishing import PreparedPublication

    fault = _DiskFullAt({**COMMIT_POINTS, **AFTER_THE_SWAP}.get(point, "(?!)"))
    with patch.context() as patched:
        if point == "publication swap":

            def full_disk_swap(self):
                fault.fired = True
                raise OSError(errno.ENOSPC, "No space left on device", str(self.destination))

            patched.setattr(PreparedPublication, "swap", full_disk_swap)
        else:
            patched.setattr(io_managers, "warehouse_connection", fault.wrap(io_managers.warehouse_connection))
        return platform.run("caravan_retrain", raise_on_error=False), fault.fired


def test_a_full_disk_at_each_commit_point_fails_the_run_truthfully(completed_pipeline, tmp_path, monkeypatch):
    """One platform, one retrain per commit point in the order a run reaches them: each run after a
    failed one gets past the earlier commit point (the platform is not wedged), and the last run, with
    space again, completes and publishes."""
    platform = copy_of_first_run(completed_pipeline, tmp_path / "home")
    for point in [*COMMIT_POINTS, "publication swap", *AFTER_THE_SWAP]:
        before = _platform_state(platform.settings)
        failed, reached = _run_with_a_full_disk_at(platform, point, monkeypatch)
        assert reached, f"the retrain never reached the {point} commit"
        summary = _summary(failed, platform.settings)
        text = f"[{point}]\n" + summary.to_text()
        assert not failed.success and summary.exit_code() != 0, text  # not done as it says: non-zero exit
        assert "No space left on device" in "\n".join(summary.failed_steps), text  # the real error, named
        assert "no transaction is active" not in text, text
        assert not [p for p in platform.settings.published_dir.iterdir() if p.name.endswith((".tmp", ".tmp.wal"))]
        if point in AFTER_THE_SWAP:
            # Monitoring runs after the publication: the new scores are out and the summary says so;
            # the score history holds exactly the publications readers saw.
            published, champion, history = _platform_state(platform.settings)
            assert summary.published and published[0] == failed.run_id, text
            assert "Published for marketing" in text, text
            assert champion == before[1] and history[1] == before[2][1] + 1, text
        else:
            # Published scores, champion and history unchanged, and the summary says nothing was published.
            assert _platform_state(platform.settings) == before, text
            assert not summary.published and "Not published" in text, text

    # With space again the next run completes and publishes.
    before = _platform_state(platform.settings)
    recovered = platform.run("caravan_retrain", raise_on_error=False)
    assert recovered.success, "\n".join(_summary(recovered, platform.settings).failed_steps)
    published, _, history = _platform_state(platform.settings)
    assert published[0] == recovered.run_id
    assert history[1] == before[2][1] + 1
