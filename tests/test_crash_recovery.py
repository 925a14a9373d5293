"""Crash recovery: `mlops run` killed (SIGKILL of its whole process group) mid-dbt and mid-publication;
the next run recovers the abandoned runs by itself and completes with nothing lost or duplicated.

Before the fix the run after a kill waited forever for the `duckdb_warehouse` pool slot of the dead
run. These tests drive the real command in subprocesses with their own Dagster instance.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from mlops_assets.publishing import read_published
from mlops_assets.run_guard import UseCaseBusyError, process_is_alive, use_case_lock

PROJECT = Path(__file__).resolve().parents[1]
MLOPS = str(Path(sys.executable).with_name("mlops"))
RUN_TIMEOUT_SECONDS = 900


def _environment(home: Path) -> dict[str, str]:
    dagster_home = home / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", dagster_home / "dagster.yaml")
    return {**os.environ, "MLOPS_HOME": str(home / "var"), "DAGSTER_HOME": str(dagster_home)}


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _kill_run_when(environment: dict, seen, kill_signal: int = signal.SIGKILL) -> str:
    """Start `mlops run --verbose` in its own session; signal the group (SIGKILL by default) once
    `seen(line)` is true for an output line (or returns true when polled). Returns what triggered it."""
    process = subprocess.Popen(
        [MLOPS, "run", "--verbose"],
        cwd=PROJECT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=_no_core_dumps,  # SIGABRT would otherwise leave a core file behind
    )
    trigger: list[str] = []

    def kill(reason: str) -> None:
        if not trigger:
            trigger.append(reason)
            os.killpg(process.pid, kill_signal)

    def watch_files() -> None:
        while process.poll() is None and not trigger:
            reason = seen(None)
            if reason:
                kill(reason)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch_files, daemon=True)
    watcher.start()
    output = []
    for line in process.stdout:
        output.append(line)
        if not trigger and seen(line):
            kill(line.strip())
    process.wait(timeout=RUN_TIMEOUT_SECONDS)
    watcher.join()
    assert trigger, "the run ended before the kill point:\n" + "".join(output[-30:])
    assert process.returncode == -kill_signal
    return trigger[0]


def _training_set_done(line: str | None) -> bool:
    return line is not None and "] done" in line and "caravan__training_set (" in line


def _run(environment: dict, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MLOPS, *arguments],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
    )


@pytest.mark.timeout(2400)  # three runs of the real command; about 3 minutes on an idle machine
def test_killed_runs_are_recovered_and_the_next_run_completes(tmp_path):
    environment = _environment(tmp_path)
    var = Path(environment["MLOPS_HOME"])
    published = var / "published"

    # 1. Mid-dbt: killed while dbt writes the incremental customer history (dbt dies with the group).
    _kill_run_when(environment, lambda line: line is not None and "START sql incremental model" in line)

    # 2. Mid-training, as LightGBM aborting the process does (SIGABRT, exit status 134 in a shell): the
    #    progress line of the training set is printed while the model trains. This run must first
    #    recover run 1 (else it would wait for its pool slot forever and never get here).
    _kill_run_when(environment, _training_set_done, signal.SIGABRT)

    # 3. Mid-publication: killed while the new published file is being written, after recovering run 2.
    def publication_being_written(line):
        if line is not None or not published.exists():
            return None
        temporaries = [p.name for p in published.iterdir() if ".tmp" in p.name]
        return f"temporary file {temporaries[0]}" if temporaries else None

    _kill_run_when(environment, publication_being_written)
    assert [p for p in published.iterdir() if ".tmp" in p.name], "the kill left no temporary file to clean"

    # 4. The next run recovers run 3 and completes.
    finished = _run(environment, "run", "--json")
    assert finished.returncode == 0, finished.stderr[-3000:] + finished.stdout[-3000:]
    summary = json.loads(finished.stdout[finished.stdout.index("{") :])
    assert summary["published"] and summary["exit_code"] == 0
    assert len(summary["recovered_runs"]) == 1 and "marked failed" in summary["recovered_runs"][0]
    assert "recovered" in finished.stderr  # said on the progress lines too

    assert not [p for p in published.iterdir() if p.name.startswith(".")], "temporary files were left behind"
    scores = read_published(
        published / "caravan.duckdb",
        "select count(*) n, count(distinct customer_id) d, any_value(p.dagster_run_id) run "
        "from customer_scores, publication p",
    ).iloc[0]
    assert scores["n"] == scores["d"] == 5822
    with duckdb.connect(str(var / "warehouse.duckdb"), read_only=True) as connection:
        history = connection.execute(
            "select publication_id, count(*), count(distinct customer_id) from caravan.score_history group by 1"
        ).fetchall()
        assert history == [(scores["run"], 5822, 5822)]  # exactly the publication readers see
        duplicated = connection.execute(
            "select count(*) from (select load_id, customer_id from caravan.int_customer_history "
            "group by all having count(*) > 1)"
        ).fetchall()[0][0]
        assert duplicated == 0
        mart = connection.execute(
            "select count(*), count(distinct customer_id) from caravan.customer_features"
        ).fetchall()[0]
        assert mart[0] == mart[1] == 5822
        champions = connection.execute(
            "select count(*) from caravan.model_status_events where status = 'champion'"
        ).fetchall()[0][0]
        assert champions == 1


def test_a_second_run_of_the_same_use_case_is_refused_or_waits(tmp_path):
    environment = _environment(tmp_path)
    locks = Path(environment["MLOPS_HOME"]) / "locks"
    with use_case_lock(locks, "caravan", wait=False):
        # Another process (here: this test) runs caravan: --no-wait refuses with a clear message ...
        refused = _run(environment, "run", "--no-wait")
        assert refused.returncode == 2
        assert "another run of use case caravan is in progress" in refused.stderr
        assert f"pid {os.getpid()}" in refused.stderr
        # ... and within one process a second holder is refused too.
        with pytest.raises(UseCaseBusyError), use_case_lock(locks, "caravan", wait=False):
            pass
        # Another use case is not blocked.
        with use_case_lock(locks, "swiss_bank", wait=False):
            pass
    # The kernel releases the lock with its holder: a killed holder never leaves it behind.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from mlops_assets.run_guard import use_case_lock\n"
            f"with use_case_lock({str(locks)!r}, 'caravan', wait=False):\n"
            "    print('held', flush=True); time.sleep(600)",
        ],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UseCaseBusyError), use_case_lock(locks, "caravan", wait=False):
        pass
    holder.kill()
    holder.wait()
    with use_case_lock(locks, "caravan", wait=False):
        pass


def test_a_recycled_pid_does_not_count_as_the_run_still_going():
    me = os.getpid()
    assert process_is_alive(me)
    assert process_is_alive(me, not_started_after=time.time())
    # A process that started after the run did cannot be the run's process.
    assert not process_is_alive(me, not_started_after=time.time() - 3600 * 24 * 365)
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not process_is_alive(dead.pid)


_STUCK_RUN = """
import sys, time
import dagster as dg

@dg.op(pool="duckdb_warehouse")
def holds_the_warehouse():
    print("holding", flush=True)
    time.sleep(600)

@dg.job
def long_job():
    holds_the_warehouse()

instance = dg.DagsterInstance.from_config(sys.argv[1])
long_job.execute_in_process(instance=instance)
"""


def test_the_recovery_sensor_fails_a_killed_run_and_frees_its_pool_slot(tmp_path):
    import dagster as dg

    from sensors import build_run_recovery_sensor

    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    worker = subprocess.Popen(
        [sys.executable, "-c", _STUCK_RUN, str(home)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert worker.stdout.readline().strip() == "holding"
    instance = dg.DagsterInstance.from_config(str(home))
    sensor = build_run_recovery_sensor()

    def tick() -> str:
        return sensor.evaluate_tick(dg.build_sensor_context(instance=instance)).skip_message

    assert tick() == "no abandoned runs"  # alive: left alone
    [run] = instance.get_runs()
    assert instance.event_log_storage.get_concurrency_info("duckdb_warehouse").claimed_slots
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()

    assert "marked failed" in tick()
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE
    info = instance.event_log_storage.get_concurrency_info("duckdb_warehouse")
    assert not info.claimed_slots and not info.pending_steps
    assert tick() == "no abandoned runs"
