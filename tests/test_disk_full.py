"""A full disk where the published file is written: the publication fails and says so, the score
history commits nothing, no temporary file is left, and the previous publication stays.

Uses a 16 KB tmpfs (the test runs as root in CI; `mount` needs it) as the published folder of a copy
of the completed pipeline's platform and runs the scoring job against it. A copy, because the run
records validation results and alerts that other tests of the session pipeline count.
"""

from __future__ import annotations

import dataclasses
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
