"""Until a use case has a champion, its schedules and sensors skip and say why.

A use case added to `use_cases/` appears in Dagster at once, but scoring, drift reports, served
traffic, incoming batches and retraining all need a champion model: without this gate its 06:00
scoring failed every day with "Table ... champion_model does not exist". The gate opens when the
use case has published scores or Dagster has recorded a champion materialization (the published file
alone would keep a champion whose publication failed from ever being re-scored by the schedule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg


@dataclass(frozen=True)
class ChampionGate:
    use_case_name: str
    published_file: Path

    def skip_reason(self, instance: dg.DagsterInstance) -> str | None:
        """None once the use case has a champion; else why its automation does nothing yet."""
        if self.published_file.exists():
            return None
        if instance.get_latest_materialization_event(dg.AssetKey([self.use_case_name, "champion_model"])):
            return None
        return (
            f"{self.use_case_name} has no champion model yet (nothing published at {self.published_file}): "
            f"build one with `mlops run --use-case {self.use_case_name}`"
        )


def gated_schedule(
    gate: ChampionGate,
    *,
    name: str,
    job,
    cron_schedule: str,
    description: str,
    tags: dict[str, str] | None = None,
) -> dg.ScheduleDefinition:
    """A schedule (running by default, Europe/Zurich) that requests `job` once `gate` is open."""
    job_target = {"job_name": job} if isinstance(job, str) else {"job": job}

    @dg.schedule(
        name=name,
        cron_schedule=cron_schedule,
        execution_timezone="Europe/Zurich",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{description} Skips until {gate.use_case_name} has a champion.",
        **job_target,
    )
    def _schedule(context: dg.ScheduleEvaluationContext):
        reason = gate.skip_reason(context.instance)
        return dg.SkipReason(reason) if reason else dg.RunRequest(tags=tags or {})

    return _schedule
