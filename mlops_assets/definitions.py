"""The Dagster code location: one Definitions object for every use case.

Nothing is built at import: `dagster dev` calls `load_definitions` (every use case), the `mlops`
command builds only the use case it runs (`build_definitions(use_cases=...)`), and
`from mlops_assets.definitions import defs` builds every use case once, on first use.
"""

from __future__ import annotations

from functools import cache

import dagster as dg

from mlops_assets.defs.features import build_dbt_steps
from mlops_assets.defs.ingestion import build_ingestion_assets
from mlops_assets.defs.jobs import (
    batch_job_name,
    build_model_decision_jobs,
    build_operational_jobs,
    build_pipeline_job,
    build_schedules,
    outcomes_job_name,
    retrain_job_name,
)
from mlops_assets.defs.lifecycle import build_lifecycle_assets
from mlops_assets.defs.monitoring import build_monitoring_assets
from mlops_assets.defs.quality import build_quality_checks
from mlops_assets.defs.readiness import ChampionGate
from mlops_assets.defs.replay import build_replay_job
from mlops_assets.defs.resources import build_resources
from mlops_assets.defs.review import build_drift_policy_checks, build_review_job
from mlops_assets.defs.scoring import build_scoring_assets
from mlops_assets.defs.serving import build_serving_assets, build_serving_jobs
from mlops_assets.defs.training import build_training_assets
from mlops_assets.defs.triggers import retrain_trigger_checks
from mlops_assets.settings import Settings
from mlops_assets.use_cases import UseCase, all_use_cases
from sensors import build_incoming_files_sensor, build_retraining_sensor, build_run_recovery_sensor


def build_definitions(settings: Settings | None = None, use_cases: tuple[UseCase, ...] | None = None) -> dg.Definitions:
    """Everything Dagster loads; tests pass a temporary `settings` or modified `use_cases`."""
    settings = settings or Settings.from_env()
    settings.prepare()
    use_cases = tuple(use_cases or all_use_cases())
    assets, checks, jobs, schedules, sensors = [*build_dbt_steps(tuple(u.name for u in use_cases))], [], [], [], []
    for use_case in use_cases:
        quality_checks = build_quality_checks(use_case)
        monitoring = [*build_monitoring_assets(use_case), *build_drift_policy_checks(use_case)]
        for definition in (
            *build_ingestion_assets(use_case),
            *build_training_assets(use_case),
            *build_lifecycle_assets(use_case),
            *build_scoring_assets(use_case),
            *build_serving_assets(use_case, settings),
            *monitoring,
            *quality_checks,
        ):
            (checks if isinstance(definition, dg.AssetChecksDefinition) else assets).append(definition)
        gate = ChampionGate(use_case.name, settings.published_dir / f"{use_case.name}.duckdb")
        operational = {job.name: job for job in build_operational_jobs(use_case)}
        jobs += [build_pipeline_job(use_case), *build_model_decision_jobs(use_case), *operational.values()]
        if use_case.monitoring.drift_policy == "review":
            jobs.append(build_review_job(use_case))
        if use_case.replay:
            jobs.append(build_replay_job(use_case))
        schedules += build_schedules(use_case, gate)
        serving_jobs, serving_schedules = build_serving_jobs(use_case, gate)
        jobs += serving_jobs
        schedules += serving_schedules
        sensors += [
            build_incoming_files_sensor(
                use_case.name,
                settings.incoming_dir,
                operational[batch_job_name(use_case)],
                operational[outcomes_job_name(use_case)],
                gate,
                source=use_case.source,
            ),
            build_retraining_sensor(
                use_case.name,
                operational[retrain_job_name(use_case)],
                # Declared on the checks themselves (spec metadata), see defs/triggers.py.
                retrain_trigger_checks([*quality_checks, *monitoring]),
                use_case.monitoring.retrain_cooldown_minutes,
                gate,
            ),
        ]
    sensors.append(build_run_recovery_sensor())  # one for the instance, whatever the use cases
    return dg.Definitions(
        assets=dg.map_asset_specs(_use_case_group, assets),
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=build_resources(settings),
        # One process: ~30 ms per step here, against 3-4 s per step for the multiprocess executor.
        executor=dg.in_process_executor,
    )


def _use_case_group(spec: dg.AssetSpec) -> dg.AssetSpec:
    """`caravan/...` assets go to groups `caravan_<stage>` (builders name the stage), tagged with their use
    case: each use case shows as its own in the UI, and "Materialize all" of a group touches one use case."""
    use_case = spec.key.path[0]
    return spec.replace_attributes(group_name=f"{use_case}_{spec.group_name}").merge_attributes(
        tags={"use_case": use_case}
    )


@cache
def _every_use_case() -> dg.Definitions:
    return build_definitions()


@dg.definitions
def load_definitions() -> dg.Definitions:
    """What `dagster dev` and the Dagster CLI load: every use case."""
    return _every_use_case()


def __getattr__(name: str):
    # `defs`, built on first use rather than at import (module attribute hook, PEP 562).
    if name == "defs":
        return _every_use_case()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
