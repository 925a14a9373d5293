"""Jobs: one per use case, running its whole graph from the raw export to the published scores."""

from __future__ import annotations

import json
from collections.abc import Mapping

import dagster as dg

from mlops_assets.use_cases import UseCase

# Run tags saying why a run (and so a model) came about; sensors and schedules set them.
TRIGGER_TAG = "mlops/trigger"
TRIGGER_REASON_TAG = "mlops/trigger_reason"


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
    return {"trigger": trigger, "trigger_reason": reason}


def pipeline_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_pipeline"


def build_pipeline_job(use_case: UseCase) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=pipeline_job_name(use_case),
        selection=dg.AssetSelection.key_prefixes([use_case.name]),
        description=(f"{use_case.title}: load the export, build features (dbt), train, check, score and publish."),
    )


def approval_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_model_approval"


def rollback_job_name(use_case: UseCase) -> str:
    return f"{use_case.name}_model_rollback"


def build_model_decision_jobs(use_case: UseCase) -> list[dg.UnresolvedAssetJobDefinition]:
    """A person's decision on the champion, then re-scoring and re-publishing with the champion."""
    selection = dg.AssetSelection.assets(dg.AssetKey([use_case.name, "champion_model"])).downstream()
    step = f"{use_case.name}__champion_model"
    return [
        dg.define_asset_job(
            name=approval_job_name(use_case),
            selection=selection,
            description=(
                f"{use_case.title}: approve (or reject) a model waiting for approval, then score and publish "
                "with the champion. Set action (approve/reject), model_version, actor and comment."
            ),
            config={"ops": {step: {"config": {"action": "approve", "model_version": "", "actor": "", "comment": ""}}}},
        ),
        dg.define_asset_job(
            name=rollback_job_name(use_case),
            selection=selection,
            description=(
                f"{use_case.title}: make a former champion the champion again, then score and publish with it. "
                "Set model_version, actor and comment."
            ),
            config={"ops": {step: {"config": {"action": "rollback", "model_version": "", "actor": "", "comment": ""}}}},
        ),
    ]
