"""Failed checks that declare they request a retrain (drift, realized performance) start one retraining run.

Which checks count is declared on each check (spec metadata `mlops/requests_retrain`, see
mlops_assets/defs/triggers.py); data-quality checks declare they do not: broken data is stopped,
and a retrain would only see the last good data again. Drift checks fail with severity ERROR only
when the batch's likely cause calls for retraining (not seasonal drift, not broken data).

Why a custom sensor over the instance's asset-check records (and not a run-failure sensor or
declarative automation): a failed non-blocking check (drift, performance) does not fail its run, so a
run-failure sensor never sees it; and declarative automation re-fires on every tick while a check
stays failed and cannot put the failed checks, features and values on the run as its reason. Here:

- the cursor holds the id of the last check evaluation handled, so each failed evaluation leads to
  exactly one retraining request (all failures found in one tick share that request), and the loads
  already retrained for: one batch never requests a second retrain;
- after a request, new failures wait `retrain_cooldown_minutes`; then one request covers them all;
- failures from retraining runs themselves are ignored, so a check that stays failed cannot loop;
- the request carries tags: trigger = sensor and the reason (checks, descriptions, drifted features,
  values), which the model registry records with the new model;
- on its first tick the sensor starts from the latest evaluation (old failures start nothing).

What a retraining run does with bad data is decided by the gates, not here: it re-runs the feature
mart's blocking checks, trains only on accepted loads, and champion/challenger decides on promotion.
"""

import json
import time

import dagster as dg

from mlops_assets.defs.jobs import AssetJob, trigger_tags
from mlops_assets.defs.readiness import ChampionGate

RETRAIN_TAG = "mlops/retrain"
HISTORY_PER_CHECK = 50
REMEMBERED_LOADS = 100


def _evaluation(record) -> dg.AssetCheckEvaluation | None:
    event = record.event.dagster_event if record.event else None
    return event.event_specific_data if event is not None else None


def _short(value, limit: int = 300):
    return value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value


def _summary(record, evaluation: dg.AssetCheckEvaluation) -> dict:
    """What failed, compactly (it travels as a run tag and is stored with the retrained model)."""
    metadata = {
        name: _short(value.value)
        for name, value in (evaluation.metadata or {}).items()
        if isinstance(value.value, str | int | float) and name != "report"
    }
    return {
        "check": record.key.to_user_string(),
        "evaluation_id": record.id,
        "run_id": record.run_id,
        "description": _short(evaluation.description, 500),
        "metadata": metadata,
    }


def build_retraining_sensor(
    use_case_name: str,
    retrain_job: AssetJob,
    check_keys: list[dg.AssetCheckKey],
    cooldown_minutes: float,
    gate: ChampionGate,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{use_case_name}_retrain_on_failed_checks",
        job=retrain_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Starts {retrain_job.name} once per failed check of {use_case_name} that declares it requests a "
            f"retrain (at most one per batch, cool-down {cooldown_minutes:g} min). Watches: "
            + ", ".join(key.to_user_string() for key in check_keys)
        ),
    )
    def retrain_on_failed_checks(context: dg.SensorEvaluationContext):
        if reason := gate.skip_reason(context.instance):
            return dg.SkipReason(reason)  # the cursor stays unset: watching starts with the champion
        state = json.loads(context.cursor) if context.cursor else None
        storage = context.instance.event_log_storage
        # Filtered here by the status's name: its enum lives in a private module of Dagster.
        failed = [
            record
            for key in check_keys
            for record in storage.get_asset_check_execution_history(key, limit=HISTORY_PER_CHECK)
            if record.status.value == "FAILED"
        ]
        latest_id = max((record.id for record in failed), default=0)
        if state is None:
            return dg.SensorResult(
                skip_reason=f"started watching {len(check_keys)} checks",
                cursor=json.dumps({"last_id": latest_id, "last_request": 0.0}),
            )

        new = []
        for record in sorted(failed, key=lambda r: r.id):
            if record.id <= state["last_id"]:
                continue
            evaluation = _evaluation(record)
            run = context.instance.get_run_by_id(record.run_id)
            if evaluation is None or evaluation.severity != dg.AssetCheckSeverity.ERROR:
                continue
            if run is not None and run.tags.get(RETRAIN_TAG):
                continue  # a retraining run's own checks: reacting would loop
            new.append(_summary(record, evaluation))
        requested_loads = state.get("requested_loads", [])
        loads = {item["metadata"].get("load_id") for item in new} - {None, ""}
        if new and loads and loads <= set(requested_loads):
            return dg.SensorResult(
                skip_reason=f"batch(es) {', '.join(sorted(loads))} already had their retrain: one per batch",
                cursor=json.dumps({**state, "last_id": max(latest_id, state["last_id"])}),
            )
        if not new:
            return dg.SensorResult(
                skip_reason="no new failed checks",
                cursor=json.dumps({**state, "last_id": max(latest_id, state["last_id"])}),
            )

        waited = time.time() - state["last_request"]
        if waited < cooldown_minutes * 60:
            return dg.SkipReason(
                f"{len(new)} new failed check(s), waiting for the cool-down "
                f"({cooldown_minutes * 60 - waited:.0f} s left) before one retraining run"
            )
        reason = {"failed_checks": new}
        newest = max(item["evaluation_id"] for item in new)
        request = dg.RunRequest(
            run_key=f"retrain:{use_case_name}:{newest}",
            tags={**trigger_tags("sensor", reason), RETRAIN_TAG: "true"},
        )
        context.log.info(f"retraining {use_case_name}: " + "; ".join(f"{i['check']}: {i['description']}" for i in new))
        remembered = [*requested_loads, *sorted(loads - set(requested_loads))][-REMEMBERED_LOADS:]
        return dg.SensorResult(
            run_requests=[request],
            cursor=json.dumps(
                {"last_id": max(latest_id, newest), "last_request": time.time(), "requested_loads": remembered}
            ),
        )

    return retrain_on_failed_checks
