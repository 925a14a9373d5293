"""Jobs: one per use case, running its whole graph from the raw export to the published scores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from mlops_assets.defs.readiness import ChampionGate, gated_schedule
from mlops_assets.run_guard import USE_CASE_TAG
from mlops_assets.use_cases import UseCase

# What `dg.define_asset_job` returns (its class, UnresolvedAssetJobDefinition, is not exported).
AssetJob = Any

# Run tags saying why a run (and so a model) came about; sensors and schedules set them.
TRIGGER_TAG = "mlops/trigger"
TRIGGER_REASON_TAG = "mlops/trigger_reason"
# Who started a run: `mlops` sets it from MLOPS_USER or the OS account; Dagster sets `dagster/user`
# where its UI knows the user (Dagster+). Recorded in a model's lineage for the four-eyes rule.
LAUNCHED_BY_TAG = "mlops/launched_by"
DAGSTER_USER_TAG = "dagster/user"


def launcher_of(tags: Mapping[str, str]) -> str | None:
    """The person who started the run, if anything recorded one (sensors and schedules: None)."""
    return tags.get(LAUNCHED_BY_TAG) or tags.get(DAGSTER_USER_TAG) or None


def trigger_tags(trigger: str, reason: dict | None = None) -> dict[str, str]:
    return {TRIGGER_TAG: trigger, TRIGGER_REASON_TAG: json.dumps(reason or {}, sort_keys=True, default=str)}


def trigger_of(tags: Mapping[str, str]) -> dict:
    """The trigger recorded with a model: manual (UI, CLI), schedule or sensor, with its reason."""
    trigger = tags.get(TRIGGER_TAG)
    if trigger is None:
        trigger = "schedule" if "dagster/schedule_name" in tags else "manual"
    try:
        reason = json.loads(tags.get(TRIGGER_REASON_TAG, "{}"))
    except json.JSONDecodeError:
        reason = {"text": tags.get(TRIGGER_REASON_TAG)}
    for source in ("dagster/schedule_name", "dagster/sensor_name"):
        if source in tags:
            reason.setdefault(source.split("/")[1], tags[source])
    return {"trigger": trigger, "trigger_reason": reason, "launched_by": launcher_of(tags)}


def use_case_tags(use_case: UseCase) -> dict[str, str]:
    """Every job of a use case carries this tag: dagster_home/dagster.yaml lets one run per value go at
    a time (the others wait in the run queue), and `mlops` waits for such runs too."""
    return {USE_CASE_TAG: use_case.name}


def pipeline_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_pipeline"


def batch_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_batch"


def retrain_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_retrain"


def scoring_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_scoring"


def drift_report_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_drift_report"


def outcomes_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_outcomes"


def _key(use_case: UseCase, name: str) -> dg.AssetKey:
    return dg.AssetKey([use_case.name, name])


def _model_lineage(use_case: UseCase) -> dg.AssetSelection:
    return dg.AssetSelection.assets(
        *(_key(use_case, n) for n in ("training_set", "propensity_model", "model_validation", "champion_model"))
    )


def build_operational_jobs(use_case: UseCase) -> list[AssetJob]:
    """The jobs that run a use case day to day (sensors and schedules launch them)."""
    everything = dg.AssetSelection.key_prefixes([use_case.name])
    mart = _key(use_case, use_case.feature_mart)
    return [
        dg.define_asset_job(
            batch_job_name(use_case),
            tags=use_case_tags(use_case),
            selection=everything - _model_lineage(use_case),
            description=(
                f"{use_case.title}: a new batch arrives: load the export and any outcome file, build features, "
                "check quality and drift, score with the current champion, publish, measure realized performance. "
                "No training: failed checks make the retraining sensor start the retrain job."
            ),
        ),
        dg.define_asset_job(
            retrain_job_name(use_case),
            tags=use_case_tags(use_case),
            # The mart's checks run again so that a retrain never trains on data that fails them.
            selection=dg.AssetSelection.assets(_key(use_case, "training_set")).downstream()
            | dg.AssetSelection.checks_for_assets(mart),
            description=(
                f"{use_case.title}: retrain on the accepted labelled customers, validate against the champion, "
                "decide, then score and publish with the champion. Started by the retraining sensor (or by hand)."
            ),
        ),
        dg.define_asset_job(
            scoring_job_name(use_case),
            tags=use_case_tags(use_case),
            selection=dg.AssetSelection.assets(_key(use_case, "customer_scores"), _key(use_case, "published_scores")),
            description=f"{use_case.title}: score the latest batch with the champion and publish (daily schedule).",
        ),
        dg.define_asset_job(
            drift_report_job_name(use_case),
            tags=use_case_tags(use_case),
            selection=dg.AssetSelection.assets(_key(use_case, "drift_report")),
            description=f"{use_case.title}: drift of the latest batch against the champion (weekly schedule).",
        ),
        dg.define_asset_job(
            outcomes_job_name(use_case),
            tags=use_case_tags(use_case),
            selection=dg.AssetSelection.assets(
                _key(use_case, "raw_outcomes"),
                _key(use_case, "stg_outcomes"),
                mart,
                _key(use_case, "model_performance"),
            ),
            description=f"{use_case.title}: load an outcome file, refresh labels and realized performance.",
        ),
    ]


def build_schedules(use_case: UseCase, gate: ChampionGate) -> list[dg.ScheduleDefinition]:
    return [
        gated_schedule(
            gate,
            name=f"{use_case.name}_daily_scoring",
            job=scoring_job_name(use_case),
            cron_schedule="0 6 * * *",
            tags=trigger_tags("schedule", {"schedule": "daily scoring"}),
            description="Scores the latest batch with the champion and publishes, every morning at 06:00.",
        ),
        gated_schedule(
            gate,
            name=f"{use_case.name}_weekly_drift_report",
            job=drift_report_job_name(use_case),
            cron_schedule="0 7 * * 1",
            tags=trigger_tags("schedule", {"schedule": "weekly drift report"}),
            description="Drift report of the latest batch against the champion, Mondays at 07:00.",
        ),
    ]


def build_pipeline_job(use_case: UseCase) -> AssetJob:
    return dg.define_asset_job(
        tags=use_case_tags(use_case),
        name=pipeline_job_name(use_case),
        selection=dg.AssetSelection.key_prefixes([use_case.name]),
        description=(f"{use_case.title}: load the export, build features (dbt), train, check, score and publish."),
    )


def approval_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_model_approval"


def rollback_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_model_rollback"


def build_model_decision_jobs(use_case: UseCase) -> list[AssetJob]:
    """A person's decision on the champion, then re-scoring and re-publishing with the champion."""
    selection = dg.AssetSelection.assets(dg.AssetKey([use_case.name, "champion_model"])).downstream()
    step = f"{use_case.name}__champion_model"
    return [
        dg.define_asset_job(
            tags=use_case_tags(use_case),
            name=approval_job_name(use_case),
            selection=selection,
            description=(
                f"{use_case.title}: approve (or reject) a model waiting for approval, then score and publish "
                "with the champion. Set action (approve/reject), model_version, actor and comment."
            ),
            config={"ops": {step: {"config": {"action": "approve", "model_version": "", "actor": "", "comment": ""}}}},
        ),
        dg.define_asset_job(
            tags=use_case_tags(use_case),
            name=rollback_job_name(use_case),
            selection=selection,
            description=(
                f"{use_case.title}: make a former champion the champion again, then score and publish with it. "
                "Set model_version, actor and comment."
            ),
            config={"ops": {step: {"config": {"action": "rollback", "model_version": "", "actor": "", "comment": ""}}}},
        ),
    ]
