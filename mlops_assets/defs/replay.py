"""The replay job: drop the next simulated batch into the use case's incoming folder."""

from typing import Literal

import dagster as dg
from pydantic import Field

from mlops_assets.defs.resources import IncomingFolder
from mlops_assets.replay import write_replay_files
from mlops_assets.use_cases import UseCase


class ReplayConfig(dg.Config):
    scenario: Literal["stationary", "persona_shift", "data_bug", "regime_change", "seasonal"] = Field(
        "stationary", description="regime_change and seasonal need macro and calendar columns (swiss_bank)."
    )
    batch_number: int = Field(1, ge=1, description="Batches with the same number and seed are identical.")
    size: int = Field(2000, ge=10)
    seed: int = 0
    strength: float = Field(0.5, ge=0, le=1, description="persona_shift: how far the customer base moves.")
    ramp_batches: int = Field(1, ge=1, description="The shift reaches `strength` after this many batches.")
    change_batch: int = Field(1, ge=1, description="regime_change: the first batch of the new regime.")
    bug: Literal["empty_column", "unit_change"] = "empty_column"
    bug_column: str = Field("", description="data_bug: the broken column (empty: the scenario's default).")
    with_outcomes: bool = Field(True, description="Also write the batch's campaign outcomes.")


def build_replay_job(use_case: UseCase) -> dg.JobDefinition:
    name = use_case.name

    @dg.op(name=f"{name}__write_replay_batch")
    def write_replay_batch(context: dg.OpExecutionContext, config: ReplayConfig, incoming: IncomingFolder) -> None:
        paths = write_replay_files(
            use_case.source_path,
            incoming.folder_for(name),
            config.scenario,
            batch_number=config.batch_number,
            size=config.size,
            seed=config.seed,
            strength=config.strength,
            ramp_batches=config.ramp_batches,
            change_batch=config.change_batch,
            bug=config.bug,
            bug_column=config.bug_column,
            with_outcomes=config.with_outcomes,
            generator=use_case.replay,
        )
        for kind, path in paths.items():
            context.log.info(f"wrote {kind}: {path}")

    @dg.job(
        name=f"{name}_replay",
        executor_def=dg.in_process_executor,
        description=(
            f"{use_case.title}: write the next simulated batch (stationary, persona_shift, data_bug, regime_change, "
            "seasonal) into "
            "the incoming folder, where the incoming-files sensor picks it up."
        ),
    )
    def replay_job():
        write_replay_batch()

    return replay_job
