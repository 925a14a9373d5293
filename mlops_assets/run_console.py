"""What the `mlops` command shows while a run goes on and what it says when it is over.

- Progress: one line per finished step with the elapsed time, on stderr, read from the run's events in
  the Dagster instance by a small polling thread (execute_in_process gives no callback per step).
- Dagster's and dbt's own log lines go to a log file (path printed) unless --verbose: the process's
  stdout and stderr file descriptors are redirected, which also catches dbt's output.
- The summary is built from the facts: the run's events (materializations, check evaluations, step
  failures), the alerts the run recorded and the published file itself (did this run write it?).
  `exit_code` turns it into the command's exit status, so a command that did not do what it says
  never exits 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Exit statuses of run commands (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the run failed, or it did not publish although it should have
EXIT_BUSY = 2  # another run of the use case is in progress (with --no-wait)
EXIT_CHECKS_FAILED = 3  # the run went through but checks failed (the summary lists them)


class Progress:
    """Prints one line per step as the run's events arrive in the instance."""

    _STEP_EVENTS = ("STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED", "STEP_UP_FOR_RETRY")

    def __init__(self, instance, run_id: str, stream, started: float, poll_seconds: float = 0.5):
        self.instance, self.run_id, self.stream, self.started = instance, run_id, stream, started
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="mlops-progress", daemon=True)
        self._step_started: dict[str, float] = {}
        self._cursor = None

    def line(self, text: str) -> None:
        self.stream.write(f"[{time.perf_counter() - self.started:6.1f} s] {text}\n")
        self.stream.flush()

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # whatever arrived after the last poll
            self._poll()

    def _follow(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            with contextlib.suppress(Exception):  # the progress display must never break a run
                self._poll()

    def _poll(self) -> None:
        import dagster as dg

        kinds = {dg.DagsterEventType[name] for name in self._STEP_EVENTS}
        while True:
            connection = self.instance.get_records_for_run(self.run_id, cursor=self._cursor, of_type=kinds)
            for record in connection.records:
                self._show(record.event_log_entry)
            self._cursor = connection.cursor
            if not connection.has_more:
                return

    def _show(self, entry) -> None:
        event = entry.dagster_event
        step, kind = event.step_key, event.event_type_value
        if kind == "STEP_START":
            self._step_started[step] = entry.timestamp
            return
        took = entry.timestamp - self._step_started.get(step, entry.timestamp)
        label = {"STEP_SUCCESS": "done  ", "STEP_FAILURE": "FAILED", "STEP_SKIPPED": "skipped"}.get(kind, kind)
        self.line(f"{label} {step} ({took:.1f} s)")


@contextmanager
def output_to_log(log_path: Path | None) -> Iterator[tuple]:
    """Send this process's stdout/stderr (and its children's) to `log_path`; yield streams to the
    terminal. With None, nothing is redirected."""
    if log_path is None:
        yield sys.stdout, sys.stderr
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal_out = os.fdopen(os.dup(saved_out), "w", buffering=1)
    terminal_err = os.fdopen(os.dup(saved_err), "w", buffering=1)
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield terminal_out, terminal_err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        terminal_out.close()
        terminal_err.close()


@dataclass
class RunSummary:
    command: str
    use_case: str
    job: str
    run_id: str | None
    succeeded: bool
    expects_publication: bool
    log_file: str | None = None
    recovered_runs: list[str] = field(default_factory=list)
    load: dict = field(default_factory=dict)
    outcomes: dict = field(default_factory=dict)
    failed_steps: list[str] = field(default_factory=list)
    failed_checks_blocking: list[str] = field(default_factory=list)
    failed_checks_other: list[str] = field(default_factory=list)
    drift: dict = field(default_factory=dict)
    model_decision: dict = field(default_factory=dict)
    champion: str | None = None
    published: bool = False
    published_file: str | None = None
    publication: dict = field(default_factory=dict)
    not_published_because: str | None = None
    alerts: list[dict] = field(default_factory=list)

    def exit_code(self) -> int:
        if not self.succeeded or (self.expects_publication and not self.published):
            return EXIT_FAILED
        if self.failed_checks_blocking or self.failed_checks_other:
            return EXIT_CHECKS_FAILED
        return EXIT_OK

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code()}, indent=2, default=str)

    def to_text(self) -> str:
        status = {EXIT_OK: "succeeded", EXIT_CHECKS_FAILED: "completed with failed checks"}.get(
            self.exit_code(), "FAILED" if not self.succeeded else "did not publish"
        )
        lines = [f"Run {self.run_id} ({self.job}) {status}."]
        lines += [f"  Recovered: {line}" for line in self.recovered_runs]
        if self.load:
            lines.append(
                "  Customers: "
                + (
                    f"{self.load.get('rows', 0):,} rows loaded from {self.load.get('source_file')}, "
                    f"{self.load.get('quarantined_rows', 0):,} quarantined"
                    if not self.load.get("skipped")
                    else f"skipped: {self.load.get('message')}"
                )
            )
        if self.outcomes:
            lines.append(
                "  Outcomes:  "
                + (
                    f"{self.outcomes.get('new_outcomes', 0):,} new"
                    if not self.outcomes.get("skipped")
                    else f"skipped: {self.outcomes.get('message')}"
                )
            )
        lines += [f"  Failed step: {line}" for line in self.failed_steps]
        lines += [f"  Failed check (blocking): {line}" for line in self.failed_checks_blocking]
        lines += [f"  Failed check (not blocking): {line}" for line in self.failed_checks_other]
        if self.drift:
            lines.append(
                f"  Drift: {self.drift.get('drifted_features', 0)} drifted feature(s), "
                f"score PSI {self.drift.get('score_psi', 0):.3f}"
            )
        if self.model_decision:
            reasons = "; ".join(
                line.removeprefix("- ").strip() for line in (self.model_decision.get("reasons") or "").splitlines()
            )
            lines.append(
                f"  Model: {self.model_decision.get('model_version')} -> {self.model_decision.get('decision')}"
                + (f" ({reasons.strip()})" if reasons.strip() else "")
            )
        if self.champion:
            lines.append(f"  Champion: {self.champion}")
        if self.published:
            lines.append(
                f"  Published for marketing: {self.published_file} "
                f"({self.publication.get('customers', 0):,} customers, model {self.publication.get('model_version')})"
            )
        elif self.expects_publication or not self.succeeded:
            lines.append(f"  Not published: {self.not_published_because or 'see the failures above'}")
        for alert in self.alerts:
            lines.append(f"  Alert [{alert['severity']}] {alert['kind']}: {alert['message'][:300]}")
        if self.log_file:
            lines.append(f"  Dagster and dbt log: {self.log_file}")
        return "\n".join(lines)


def _root_message(error) -> str:
    messages = []
    while error is not None:
        messages.append(error.message.strip())
        error = error.cause
    # The outermost message with a file name says most (a loader's SourceDataError or
    # LoadResourceError); else the root.
    for message in messages:
        if any(name in message for name in ("SourceDataError", "LoadResourceError", "Failure")):
            return message.split(": ", 1)[-1]
    return messages[-1] if messages else "failed"


def _metadata(event) -> dict:
    return {name: value.value for name, value in event.step_materialization_data.materialization.metadata.items()}


def collect_events(summary: RunSummary, events) -> None:
    """Fill `summary` from a run's Dagster events."""
    for event in events:
        if event.is_step_failure:
            summary.failed_steps.append(f"{event.step_key}: {_root_message(event.step_failure_data.error)}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION":
            evaluation = event.asset_check_evaluation_data
            if not evaluation.passed:
                line = f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}: {evaluation.description}"
                (summary.failed_checks_blocking if evaluation.blocking else summary.failed_checks_other).append(line)
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            name = event.asset_key.path[-1]
            metadata = _metadata(event)
            if name == "raw_customers":
                summary.load = {
                    "rows": metadata.get("dagster/row_count"),
                    "source_file": metadata.get("source_file"),
                    "quarantined_rows": metadata.get("quarantined_rows", 0),
                    "skipped": bool(metadata.get("skipped", False)),
                    "message": metadata.get("message", ""),
                }
            elif name == "raw_outcomes":
                summary.outcomes = {
                    "new_outcomes": metadata.get("new_outcomes", 0),
                    "skipped": bool(metadata.get("skipped", False)),
                    "message": metadata.get("message", ""),
                }
            elif name == "drift_report":
                summary.drift = {k: metadata.get(k) for k in ("drifted_features", "max_psi", "score_psi")}
            elif name == "model_validation":
                summary.model_decision = {k: metadata.get(k) for k in ("model_version", "decision", "reasons")}
            elif name == "champion_model":
                summary.champion = metadata.get("champion_version")


def read_publication(published_file: Path) -> dict:
    """The `publication` row of a published file ({} if there is none)."""
    import duckdb

    if not published_file.exists():
        return {}
    try:
        with duckdb.connect(str(published_file), read_only=True) as connection:
            frame = connection.execute("select * from publication").fetchdf()
    except duckdb.Error:
        return {}
    return {} if frame.empty else frame.iloc[0].to_dict()


def read_alerts(warehouse: Path, use_case: str, run_id: str) -> list[dict]:
    import duckdb

    from mlops_assets.warehouse import table_exists

    if not warehouse.exists():
        return []
    try:
        with duckdb.connect(str(warehouse), read_only=True) as connection:
            if not table_exists(connection, use_case, "alerts"):
                return []
            rows = connection.execute(
                f"select kind, severity, message from {use_case}.alerts where dagster_run_id = ? order by raised_at",
                [run_id],
            ).fetchall()
    except duckdb.Error:
        return []
    return [{"kind": k, "severity": s, "message": m} for k, s, m in rows]


def finish_summary(summary: RunSummary, published_file: Path, warehouse: Path) -> None:
    """Publication and alerts, read from the published file and the warehouse (the truth, not the plan)."""
    publication = read_publication(published_file)
    summary.published = publication.get("dagster_run_id") == summary.run_id
    if summary.published:
        summary.published_file = str(published_file)
        summary.publication = publication
    elif summary.expects_publication or not summary.succeeded:
        previous = (
            f"the file {published_file} still holds the scores of run {publication.get('dagster_run_id')} "
            f"(model {publication.get('model_version')}, published {publication.get('published_at')})"
            if publication
            else f"nothing has been published at {published_file} yet"
        )
        if not summary.succeeded:
            reason = "the run failed"
        elif summary.champion is None:
            reason = "there is no champion model (the new model was not promoted and none was before)"
        else:
            reason = "the publication step did not run"
        summary.not_published_because = f"{reason}; {previous}"
    summary.alerts = read_alerts(warehouse, summary.use_case, summary.run_id) if summary.run_id else []
