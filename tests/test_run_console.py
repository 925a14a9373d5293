"""The command's summary and exit status come from the facts (the published file, the events)."""

import json
import os
import shutil
import subprocess
import sys

import pandas as pd

from mlops_assets.publishing import publish_tables
from mlops_assets.run_console import (
    EXIT_CHECKS_FAILED,
    EXIT_FAILED,
    EXIT_OK,
    RunSummary,
    finish_summary,
)
from mlops_assets.settings import PROJECT_ROOT


def _publish(path, run_id):
    publication = pd.DataFrame(
        [{"dagster_run_id": run_id, "model_version": "m1", "customers": 3, "published_at": pd.Timestamp("2026-01-01")}]
    )
    publish_tables(path, {"publication": publication, "customer_scores": pd.DataFrame({"score": [0.1]})})


def test_published_only_if_the_file_carries_this_run(tmp_path):
    published = tmp_path / "caravan.duckdb"
    _publish(published, "earlier-run")
    summary = RunSummary("run", "caravan", "caravan_pipeline", "this-run", True, True)
    summary.champion = None
    finish_summary(summary, published, tmp_path / "no_warehouse.duckdb")
    assert not summary.published and summary.exit_code() == EXIT_FAILED
    assert "no champion" in summary.not_published_because and "earlier-run" in summary.not_published_because
    assert "Not published" in summary.to_text() and "Published for marketing" not in summary.to_text()

    _publish(published, "this-run")
    summary = RunSummary("run", "caravan", "caravan_pipeline", "this-run", True, True)
    finish_summary(summary, published, tmp_path / "no_warehouse.duckdb")
    assert summary.published and summary.exit_code() == EXIT_OK
    assert json.loads(summary.to_json())["publication"]["customers"] == 3


def test_failed_checks_and_failed_runs_are_not_success(tmp_path):
    published = tmp_path / "caravan.duckdb"
    _publish(published, "this-run")
    checks = RunSummary("batch", "caravan", "caravan_batch", "this-run", True, True)
    checks.failed_checks_other = ["caravan/drift_report:feature_drift: 3 features drifted"]
    finish_summary(checks, published, tmp_path / "none.duckdb")
    assert checks.exit_code() == EXIT_CHECKS_FAILED
    assert "Failed check (not blocking): caravan/drift_report:feature_drift" in checks.to_text()

    failed = RunSummary("run", "caravan", "caravan_pipeline", "failed-run", False, True)
    failed.failed_steps = ["caravan__raw_customers: export.csv: the file is empty (0 bytes)"]
    finish_summary(failed, published, tmp_path / "none.duckdb")
    assert failed.exit_code() == EXIT_FAILED
    text = failed.to_text()
    assert "FAILED" in text and "still holds the scores of run this-run" in text

    rejected = RunSummary("reject", "caravan", "caravan_model_approval", "r", True, False)
    finish_summary(rejected, published, tmp_path / "none.duckdb")
    assert rejected.exit_code() == EXIT_OK  # a rejection publishes nothing, and says nothing about it


def test_a_setting_that_is_not_usable_stops_the_command_with_one_line_naming_it(tmp_path):
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    environment = {
        **os.environ,
        "MLOPS_HOME": str(tmp_path / "var"),
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_RUN_MEMORY_LIMIT": "lots",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mlops_assets.cli", "run"],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    assert "Not run: MLOPS_RUN_MEMORY_LIMIT='lots': expected a size such as 1GB or 512MB" in done.stderr
    assert "Traceback" not in done.stderr and "Published" not in done.stdout
