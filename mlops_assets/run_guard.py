"""Crash recovery and one run per use case, for runs started by the `mlops` command.

Hand-written because Dagster's own run monitoring lives in its daemon (only `dagster dev` runs it) and
the default run launcher cannot tell whether a run worker is alive: a `mlops run` killed with
SIGKILL leaves its run STARTED and its `duckdb_warehouse` pool slot claimed, and every later run
then waits for that slot forever. Before a run starts, `recover_abandoned_runs` marks every run
whose process is gone as failed (public `DagsterInstance.report_run_failed`) and frees its pool
slots, so the next run goes ahead without any manual step.

A run's process is the one that logged its RUN_START event (its pid is in the event); the check uses
/proc, with the process start time guarding against a recycled pid. Runs from another machine (tag
`mlops/host`) are left alone; runs without that tag are judged only on a single-machine (SQLite)
instance.

`use_case_lock` serializes runs of one use case started from the command line: an exclusive
`flock` on `<MLOPS_HOME>/locks/<use case>.lock`, which the kernel releases when the holder dies, so a
crash can never leave it behind. Runs launched by the daemon (sensors, schedules, UI) are queued by
Dagster's tag concurrency limit on `mlops/use_case` (dagster_home/dagster.yaml).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

USE_CASE_TAG = "mlops/use_case"
HOST_TAG = "mlops/host"

# Runs whose process may still be alive: a run in any other state holds no pool slot.
_UNFINISHED = ("NOT_STARTED", "STARTING", "STARTED", "CANCELING")


def _boot_time() -> float:
    with open("/proc/stat") as handle:
        for line in handle:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), or None if it does not exist or is a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing one.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def process_is_alive(pid: int, not_started_after: float | None = None) -> bool:
    """True if `pid` runs and, when given, started no later than `not_started_after` (else the pid
    was recycled by another process)."""
    started = process_started_at(pid)
    if started is None:
        return False
    # /proc's start time has clock-tick resolution; allow a little slack.
    return not_started_after is None or started <= not_started_after + 2.0


def _single_machine(instance) -> bool:
    return type(instance.run_storage).__name__.lower().startswith("sqlite")


def _run_process(instance, run) -> tuple[int | None, float | None]:
    """The pid that started the run, and when it did (None, None before the run started)."""
    import dagster as dg

    for record in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START):
        if record.dagster_event is not None and record.dagster_event.pid is not None:
            return record.dagster_event.pid, record.timestamp
    return None, None


def recover_abandoned_runs(instance, *, not_started_grace_seconds: float = 300.0) -> list[str]:
    """Mark every unfinished run whose process is gone as failed and free its pool slots.

    Returns one line per recovered run (for the command's summary). Runs without a RUN_START event
    (created, never started) are recovered once they are older than `not_started_grace_seconds`.
    """
    import dagster as dg

    host = socket.gethostname()
    single_machine = _single_machine(instance)
    statuses = [dg.DagsterRunStatus[name] for name in _UNFINISHED]
    recovered = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=statuses)):
        run = record.dagster_run
        run_host = run.tags.get(HOST_TAG)
        if (run_host or (host if single_machine else None)) != host:
            continue
        pid, started = _run_process(instance, run)
        if pid is None:
            # Created or being launched, not started yet: give its launcher time.
            if time.time() - record.create_timestamp.timestamp() < not_started_grace_seconds:
                continue
        elif process_is_alive(pid, not_started_after=started):
            continue
        reason = f"process {pid} is gone" if pid else "it never started"
        instance.report_run_failed(
            run, message=f"Marked failed by mlops before the next run: {reason} (killed or crashed)."
        )
        recovered.append(f"run {run.run_id} ({run.job_name}) marked failed: {reason}; its pool slots freed")
    _free_slots_of_finished_runs(instance)
    return recovered


def _free_slots_of_finished_runs(instance) -> None:
    """Pool slots or pending claims still held by runs that are over (e.g. just marked failed)."""
    import dagster as dg

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return
    holders = storage.get_concurrency_run_ids()
    if not holders:
        return
    records = instance.get_run_records(filters=dg.RunsFilter(run_ids=list(holders)))
    runs = {record.dagster_run.run_id: record.dagster_run for record in records}
    for run_id in holders:
        # A finished run holds nothing any more; claims of runs deleted from the instance belong to nobody.
        if run_id not in runs or runs[run_id].is_finished:
            storage.free_concurrency_slots_for_run(run_id)


def active_runs_of_use_case(instance, use_case: str) -> list:
    """Unfinished runs of `use_case` (e.g. launched by the daemon), after recovery."""
    import dagster as dg

    statuses = [dg.DagsterRunStatus[name] for name in ("QUEUED", *_UNFINISHED)]
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=statuses, tags={USE_CASE_TAG: use_case})))


class UseCaseBusyError(RuntimeError):
    """Another run of the same use case is going on and the caller asked not to wait."""


@contextmanager
def use_case_lock(
    lock_dir: Path, use_case: str, *, wait: bool, on_wait: Callable[[str], None] = print
) -> Iterator[None]:
    """Hold the use case's run lock for the duration of the block (see the module docstring)."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{use_case}.lock"
    # os.open's descriptors are not inherited by child processes (dbt), so the lock dies with us.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip() or "another process"
            message = f"another run of use case {use_case} is in progress ({holder}; lock {path})"
            if not wait:
                raise UseCaseBusyError(message) from None
            on_wait(f"Waiting: {message}. Ctrl-C to give up.")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(descriptor)
