"""Shared fixtures: a full pipeline run into a temporary warehouse, reused by the integration tests.

A full run costs tens of seconds, so the session runs the caravan pipeline once (`completed_pipeline`)
and keeps a pristine copy of its files; tests that need "a platform after its first run" and then
change it get their own copy (`copy_of_first_run`) instead of running the pipeline again.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# Importing the code location builds its default Definitions; keep even that out of the repo's var/.
os.environ.setdefault("MLOPS_HOME", tempfile.mkdtemp(prefix="mlops-test-home-"))

import dagster as dg  # noqa: E402
import pytest  # noqa: E402

from mlops_assets.definitions import build_definitions  # noqa: E402
from mlops_assets.settings import Settings  # noqa: E402
from mlops_assets.use_cases import UseCase, get_use_case  # noqa: E402

# The longest test files (summed --durations per file, idle machine), longest first: `make test` runs
# two pytest-xdist workers that take whole files (--dist loadfile) in this order, so the long files
# start first and the short ones fill in at the end; the wall time is bounded by the busier worker.
LONGEST_FILES = (
    "test_new_use_case.py",
    "test_crash_recovery.py",
    "test_adaptation_loop.py",
    "test_model_lifecycle.py",
    "test_concurrent_readers.py",
    "test_bad_input_catalogue.py",
    "test_review_pages.py",
    "test_serving.py",
    "test_monitoring_loop.py",
    "test_disk_full.py",
    "test_postgres_instance.py",
    "test_swiss_bank.py",
    "test_bounded_load.py",
    "test_quality_suites.py",
    "test_ingestion.py",
    "test_pipeline.py",
)
# Files that share a session fixture's run go to the same worker (one work unit), so the run is paid
# once: both start from `modest_first_run`.
SAME_WORKER = {"test_concurrent_readers.py": "test_model_lifecycle.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file kept


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` as pytest-xdist does it, but in collection order (LONGEST_FILES first) and with
    the SAME_WORKER files as one unit. By default xdist re-sorts the files by their number of tests,
    which put the 40 quick cases of the bad-input catalogue first and the long CLI files last."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFilesFirst(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            folder, _, name = path.rpartition("/")
            return f"{folder}/{SAME_WORKER[name]}" if name in SAME_WORKER else path

    config.option.loadscopereorder = False
    return LongestFilesFirst(config, log)


def temporary_settings(home: Path) -> Settings:
    return Settings.under(home)


@dataclass
class PipelineHarness:
    """A temporary platform: warehouse, published folder, Dagster instance and definitions."""

    settings: Settings
    instance: dg.DagsterInstance
    defs: dg.Definitions
    # A copy of the home as it was right after the first run (completed_pipeline only).
    pristine_home: Path | None = None

    def run(self, job_name: str = "caravan_pipeline", run_config: dict | None = None, raise_on_error=True, tags=None):
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance, run_config=run_config or {}, raise_on_error=raise_on_error, tags=tags
        )

    def tick(self, sensor_name: str, cursor: str | None):
        """One evaluation of a sensor, as the daemon does it: (run requests, new cursor, skip reason)."""
        sensor = self.defs.resolve_sensor_def(sensor_name)
        context = dg.build_sensor_context(instance=self.instance, definitions=self.defs, cursor=cursor)
        result = sensor.evaluate_tick(context)
        return result.run_requests or [], result.cursor, result.skip_message

    def launch(self, request: dg.RunRequest, default_job: str, raise_on_error=False):
        return self.run(request.job_name or default_job, request.run_config, raise_on_error, dict(request.tags))

    def latest_metadata(self, key: str) -> dict:
        event = self.instance.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
        return {name: value.value for name, value in event.asset_materialization.metadata.items()}


def make_harness(home: Path, use_cases: tuple[UseCase, ...] | None = None) -> PipelineHarness:
    settings = temporary_settings(home)
    return PipelineHarness(
        settings=settings,
        instance=dg.DagsterInstance.ephemeral(),
        defs=build_definitions(settings, use_cases=use_cases),
    )


@pytest.fixture
def harness(tmp_path) -> PipelineHarness:
    return make_harness(tmp_path)


@pytest.fixture(scope="session")
def caravan() -> UseCase:
    return get_use_case("caravan")


def first_run(
    tmp_path_factory, name: str, job_name: str = "caravan_pipeline", run_config: dict | None = None, use_cases=None
) -> PipelineHarness:
    """One successful run of `job_name` in a new platform, and a pristine copy of its files to start
    tests from (`copy_of_first_run`)."""
    harness = make_harness(tmp_path_factory.mktemp(name), use_cases=use_cases)
    result = harness.run(job_name, run_config=run_config, raise_on_error=False)
    assert result.success, [str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
    return keep_pristine_copy(harness, tmp_path_factory)


def keep_pristine_copy(harness: PipelineHarness, tmp_path_factory) -> PipelineHarness:
    """Copy the home as the run left it (every connection is closed after a run, so the DuckDB files
    are complete on disk): `copy_of_first_run` starts tests from it."""
    harness.pristine_home = tmp_path_factory.mktemp("pristine") / "home"
    shutil.copytree(harness.settings.home, harness.pristine_home)
    _out_of_the_collectors_sight()
    return harness


def _out_of_the_collectors_sight() -> None:
    """What a first run leaves alive (dagster, dbt, GX, LightGBM modules, definitions, the session's
    platforms) lives as long as the worker: freeze it, as `mlops` does for a command's run
    (cli._definitions_for_job), so Python's full collections during the next tests' runs stop
    traversing it. Measured on test_monitoring_loop.py: 6.7 s -> 4.5 s spent collecting."""
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config) -> None:
    # Back in the collector's sight before the interpreter exits, so that DuckDB's bindings
    # (nanobind) see their objects finalized instead of reporting them leaked.
    gc.unfreeze()


@pytest.fixture(scope="session")
def completed_pipeline(tmp_path_factory) -> PipelineHarness:
    """One successful end-to-end run of the caravan pipeline on the bundled data."""
    return first_run(tmp_path_factory, "pipeline")


# Above the 0.70 floor but clearly below the default model (test ROC AUC about 0.71 against 0.76).
MODEST_MODEL = {
    "ops": {"caravan__propensity_model": {"config": {"num_leaves": 2, "max_rounds": 5, "search_trials": 1}}}
}


@pytest.fixture(scope="session")
def modest_first_run(tmp_path_factory) -> PipelineHarness:
    """The caravan pipeline's first run with a modest model (MODEST_MODEL): a first champion that the
    default model beats. Tests start from a copy (`copy_of_first_run`)."""
    return first_run(tmp_path_factory, "modest", run_config=MODEST_MODEL)


def copy_of_first_run(completed: PipelineHarness, home: Path, use_cases=None) -> PipelineHarness:
    """A platform in `home` exactly as `completed` (a `first_run`) left it after its run (warehouse with
    its champion and registry, published scores, dbt state), with a fresh Dagster instance and these
    use cases' definitions: what a separate first run would give, without paying for one."""
    shutil.copytree(completed.pristine_home, home, dirs_exist_ok=True)
    return make_harness(home, use_cases=use_cases)
