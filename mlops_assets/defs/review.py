"""Drift policy per use case (`monitoring.drift_policy`): admit, review or block a drifting batch.

`admit` (default) builds nothing here: drift is reported, alerts and retrains (defs/monitoring.py).
`review` and `block` add a blocking check on the staged batch that compares it with the champion's
training data *before* it reaches the customer history; a batch whose drift calls for retraining is
then held for a data engineer's decision (or blocked). The review job and `mlops review` record the
decision (mlops_assets/review.py); an accepted file is loaded again and admitted.
"""

import shutil
from pathlib import Path
from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import WAREHOUSE_POOL, IncomingFolder, Notifier
from mlops_assets.defs.triggers import retrain_metadata
from mlops_assets.ml.drift import classify_batch, compare_to_reference
from mlops_assets.registry import current_champion, load_artifact
from mlops_assets.review import ACCEPTED, REJECTED, acceptance_of, decide, hold
from mlops_assets.use_cases import UseCase


def staged_drift(connection, use_case: UseCase) -> tuple[dict | None, str | None, str | None, str | None]:
    """(classification, champion, load id, sha256) of the staged batch against the champion's training
    data; classification None when there is no champion yet. Only the features staging holds are
    compared (features built later in the mart are left to the drift report)."""
    name = use_case.name
    champion = current_champion(connection, name)
    staged = connection.execute(f"select * from {name}.stg_customers").fetchdf()
    if champion is None or staged.empty:
        return None, champion, None, None
    load_id = str(staged["load_id"].iloc[0])
    sha256 = connection.execute(
        f"select sha256 from {name}.raw_customer_loads where load_id = ?", [load_id]
    ).fetchone()[0]
    profile = load_artifact(connection, name, champion).reference_profile["features"]
    profile = {**profile, "features": [e for e in profile["features"] if e["name"] in staged.columns]}
    report = compare_to_reference(profile, staged, use_case.monitoring.drift)
    classified = classify_batch(
        report,
        score_drifted=False,
        seasonal=set(use_case.monitoring.seasonal_features),
        co_moving_min=use_case.monitoring.co_moving_min_features,
    )
    return classified, champion, load_id, sha256


def build_drift_policy_checks(use_case: UseCase) -> list[dg.AssetChecksDefinition]:
    policy = use_case.monitoring.drift_policy
    if policy == "admit":
        return []
    name = use_case.name

    @dg.asset_check(
        asset=dg.AssetKey([name, "stg_customers"]),
        name="drift_policy",
        blocking=True,
        pool=WAREHOUSE_POOL,
        metadata=retrain_metadata(False),
        description=(
            f"Drift policy `{policy}`: a batch whose drift against the champion's training data calls for "
            + (
                "retraining is held for review (not in the history, not rejected) until a data engineer "
                f"accepts or rejects it (job {name}_batch_review or `mlops review`)."
                if policy == "review"
                else "retraining is blocked."
            )
        ),
    )
    def drift_policy(context: dg.AssetCheckExecutionContext, warehouse: Warehouse, notifier: Notifier):
        with warehouse.get_connection() as connection:
            classified, champion, load_id, sha256 = staged_drift(connection, use_case)
            if classified is None or not classified["requests_retrain"]:
                why = "no champion yet" if champion is None else f"cause: {classified['explanation']}"
                return dg.AssetCheckResult(passed=True, description=f"batch admitted ({why})")
            accepted = acceptance_of(connection, name, sha256) if policy == "review" else None
            if accepted is not None:
                return dg.AssetCheckResult(
                    passed=True,
                    description=(
                        f"batch admitted: accepted on review of load {accepted['load_id']} by "
                        f"{accepted['decided_by']} ({accepted['reason']}); drift: {classified['explanation']}"
                    ),
                )
            status = hold(connection, name, load_id, policy, f"drift: {classified['explanation']}")
            action = (
                f"held for review: `mlops review accept|reject --use-case {name} --load {load_id} --by NAME "
                f"--why TEXT` or the job {name}_batch_review; its customers keep their last published scores"
                if status == "held"
                else "blocked by the drift policy; nothing from it was loaded into the history"
            )
            notifier.notify(
                context,
                name,
                f"batch_{status}",
                f"batch {load_id} {action}. Drift against {champion}: {classified['explanation']}",
                {"load_id": load_id, "causes": classified["causes"]},
                "warning",
                connection,
            )
        return dg.AssetCheckResult(
            passed=False,
            description=f"batch {load_id} {action}",
            metadata={
                "load_id": load_id,
                "status": status,
                "causes": markdown_table(
                    pd.DataFrame(
                        [{"cause": c, "features": ", ".join(f)} for c, f in classified["features_by_cause"].items()]
                    )
                ),
            },
        )

    return [drift_policy]


class ReviewConfig(dg.Config):
    action: Literal["accept", "reject"] = Field(description="accept: load the batch into the history; reject.")
    load_id: str = Field(description="The held load (see the alert, or raw_customer_loads with status 'held').")
    by: str = Field(description="Who decides; recorded in batch_reviews.")
    why: str = Field(description="Why; recorded in batch_reviews.")


def build_review_job(use_case: UseCase) -> dg.JobDefinition:
    name = use_case.name

    @dg.op(name=f"{name}__review_held_batch")
    def review_held_batch(
        context: dg.OpExecutionContext,
        config: ReviewConfig,
        warehouse: Warehouse,
        incoming: IncomingFolder,
        notifier: Notifier,
    ) -> None:
        decision = ACCEPTED if config.action == "accept" else REJECTED
        with warehouse.get_connection() as connection:
            source_file, _ = decide(connection, name, config.load_id, decision, config.by, config.why)
            notifier.notify(
                context,
                name,
                "batch_review",
                f"batch {config.load_id} {decision} by {config.by}: {config.why}",
                {"load_id": config.load_id, "source_file": source_file},
                "info",
                connection,
            )
        if decision == ACCEPTED:
            # The incoming-files sensor loads the accepted copy; its sha256 is on record as accepted.
            source = Path(source_file)
            copy = incoming.folder_for(name) / f"{source.stem}-accepted{source.suffix}"
            shutil.copyfile(source, copy)
            context.log.info(f"accepted batch copied to {copy}; the incoming-files sensor loads it")

    @dg.job(
        name=f"{name}_batch_review",
        executor_def=dg.in_process_executor,
        description=(
            f"{use_case.title}: accept or reject a batch held by the drift policy (recorded with who and why). "
            "An accepted batch is handed to the incoming-files sensor and loaded into the history."
        ),
    )
    def review_job():
        review_held_batch()

    return review_job
