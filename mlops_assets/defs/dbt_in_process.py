"""dbt builds inside the step's own process (dbt's `dbtRunner`), reported as dagster-dbt's events.

Why not `DbtCliResource.cli`: dagster-dbt 0.29 starts a new dbt process for every command, and each
one imports dbt (`dbt --version` alone takes 4.4 s on this 2-core machine with compiled bytecode) and
parses the project again (1.9 s with dbt's partial-parse state, 3.7-4.7 s without) to execute about
1.3 s of SQL. Measured on the bundled job, in-process test runs, idle machine: the two dbt steps took
11.7 s + 7.1 s (first run) and 8.5 s + 9.0 s (second run) of 37 s and 33 s runs. In process, dbt is
imported and the project parsed once per process and warehouse, and each build then takes 1.1-1.8 s
(`benchmarks/pipeline_vs_bare_script.py` has the per-stage figures).

What stays dagster-dbt's: the asset specs (`@dbt_assets`), the node selection for a run's subset
(`get_updated_cli_invocation_params_for_context`, as `dbt.cli` computes it) and the translation of
dbt's result events into `Output`s and asset check results (`DbtCoreCliEventMessage`), so asset keys,
checks and subsetting behave exactly as with `dbt.cli`. dbt's progress lines go to the step's log.
"""

from __future__ import annotations

import gc
import os
import queue
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

# dbt keeps its flags, adapter and event manager in module globals: one invocation at a time per process.
_DBT_LOCK = threading.Lock()
_MANIFESTS: dict[tuple[str, str, str], Any] = {}
RESULT_EVENTS = {"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"}
PROGRESS_EVENTS = {"LogStartLine", *RESULT_EVENTS}
FAILED_STATUSES = {"error", "fail", "runtime error"}


class DbtProjectConfig(dg.ConfigurableResource):
    """Where the dbt project and its profile are; dbt itself runs in the step's process."""

    project_dir: str
    profiles_dir: str
    target: str | None = None

    def build(self, context: dg.AssetExecutionContext, warehouse_path: str, state_dir: Path) -> DbtBuild:
        """`dbt build` of the nodes this step materializes (its selection or the run's subset)."""
        return run_build(context, self, warehouse_path, state_dir)


@dataclass
class DbtBuild:
    params: Any  # dagster-dbt's invocation parameters: the manifest, translator and selection
    result_events: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    target_path: Path | None = None

    @property
    def succeeded(self) -> bool:
        return not self.failures


def _common_args(config: DbtProjectConfig, target_path: Path) -> list[str]:
    args = ["--project-dir", config.project_dir, "--profiles-dir", config.profiles_dir]
    args += ["--target-path", str(target_path), "--log-path", str(target_path), "--quiet", "--no-use-colors"]
    return args + (["--target", config.target] if config.target else [])


def _manifest(config: DbtProjectConfig, warehouse_path: str, state_dir: Path):
    """The parsed project, once per process and warehouse file name. dbt names the DuckDB catalog
    after the file (its stem) and writes that name into every node at parse time; the folder is not
    in the manifest (two parses of warehouse.duckdb in different folders give equal manifests but for
    timestamps), and each build connects to the path the profile reads at invocation. So processes
    that run several platforms (the test suite: one temporary home per test) parse once, not once per
    home (3.7-4.7 s each without partial-parse state). The parse keeps dbt's partial-parse state in
    `state_dir`, so the next process parses only what changed; it writes no manifest.json there
    (nothing reads it; 0.08 s of the 0.62 s parse, 3 alternating pairs of new processes)."""
    from dbt.cli.main import dbtRunner

    key = (config.project_dir, config.target or "", Path(warehouse_path).stem)
    if key not in _MANIFESTS:
        result = dbtRunner().invoke(["parse", *_common_args(config, state_dir), "--no-write-json"])
        if not result.success:
            raise dg.Failure(description=f"dbt could not parse {config.project_dir}: {result.exception}")
        _MANIFESTS[key] = result.result
    return _MANIFESTS[key]


def _failures(run_result, exception: BaseException | None) -> list[str]:
    failures = [f"dbt: {exception}"] if exception is not None else []
    for node_result in getattr(run_result, "results", None) or []:
        if str(node_result.status).lower() in FAILED_STATUSES:
            failures.append(f"{node_result.node.resource_type} {node_result.node.name}: {node_result.message}")
    return failures


def run_build(
    context: dg.AssetExecutionContext, config: DbtProjectConfig, warehouse_path: str, state_dir: Path
) -> DbtBuild:
    from dbt.cli.main import dbtRunner
    from dbt_common.events.functions import msg_to_dict

    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest={}, dagster_dbt_translator=DagsterDbtTranslator()
    )
    build = DbtBuild(params, target_path=state_dir / f"build-{context.run.run_id[:8]}-{uuid.uuid4().hex[:7]}")
    args = ["build", *_common_args(config, build.target_path), *params.selection_args]
    if params.indirect_selection:
        args += ["--indirect-selection", params.indirect_selection]
    messages: queue.Queue = queue.Queue()

    def on_event(event) -> None:  # called on dbt's worker threads: hand over to the step's thread
        if event.info.name in PROGRESS_EVENTS:
            messages.put(msg_to_dict(event))

    def invoke() -> None:
        try:
            result = dbtRunner(manifest=_manifest(config, warehouse_path, state_dir), callbacks=[on_event]).invoke(args)
            failures = _failures(result.result, result.exception)
            if not result.success and not failures:  # never report a build dbt says failed as done
                failures = [f"dbt build did not succeed (see {build.target_path / 'dbt.log'})"]
            messages.put(failures)
        except BaseException as error:  # reported by the step, never lost in the thread
            messages.put([f"dbt: {error}"])

    with _DBT_LOCK, _collections_in_this_thread():
        # The profile reads the warehouse path from the environment (dbt_project/profiles.yml).
        os.environ["MLOPS_DUCKDB_PATH"] = warehouse_path
        worker = threading.Thread(target=invoke, name="dbt", daemon=True)
        worker.start()
        try:
            while not isinstance(message := messages.get(), list):
                context.log.info(message["info"]["msg"])
                if message["info"]["name"] in RESULT_EVENTS:
                    build.result_events.append(message)
            build.failures = message
        finally:  # also when the step is interrupted: the file must not stay locked by this process
            worker.join()
            release_dbt_database()
    return build


def release_dbt_database() -> None:
    """Close dbt-duckdb's database. The profile keeps it open for the whole invocation (one open of
    the file instead of one each time dbt's connections go idle), and dbt-duckdb keeps it in a
    class attribute for the life of the process: without this, the file would stay locked after
    the build, for the step's readers and for other processes."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    try:
        environment = DuckDBConnectionManager.env()
    except Exception:  # no environment: the invocation never connected (e.g. it failed to start)
        return
    environment.close()
    DuckDBConnectionManager.close_all_connections()  # the next build opens a new one


@contextmanager
def _collections_in_this_thread() -> Iterator[None]:
    """No garbage collection while dbt's threads run: a collection triggered there finalized the
    Dagster instance's SQLite connections on the wrong thread ("SQLite objects created in a thread
    can only be used in that same thread", seen twice in 40 runs of benchmarks/adaptation.py)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def asset_events(
    context: dg.AssetExecutionContext, build: DbtBuild
) -> Iterator[dg.Output | dg.AssetCheckResult | dg.AssetObservation]:
    """dagster-dbt's own translation of dbt's result events (models, seeds, tests)."""
    params = build.params
    for raw_event in build.result_events:
        message = DbtCoreCliEventMessage(raw_event=raw_event, event_history_metadata={})
        yield from message.to_default_asset_events(
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            context=context,
            target_path=build.target_path,
            project=params.dbt_project,
        )


def discard_artefacts(build: DbtBuild) -> None:
    """A successful build's folder (compiled SQL, run results, log) is not needed; a failed one's is kept."""
    if build.succeeded and build.target_path is not None:
        shutil.rmtree(build.target_path, ignore_errors=True)
