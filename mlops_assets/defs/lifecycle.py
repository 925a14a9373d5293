"""Model lifecycle in Dagster: validate the challenger, decide, and hand the champion to scoring.

propensity_model (candidate) -> model_validation (challenger vs champion, fairness, decision)
-> champion_model (status events; the model scoring must use) -> customer_scores.
The approval and rollback jobs re-materialize champion_model with a person's decision as config.
"""

from typing import Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.jobs import launcher_of
from mlops_assets.defs.metadata import float_metrics, markdown_table, png_image
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.lifecycle import apply_decision, approve, model_card, reject, rollback, validate_challenger
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.model_charts import reliability_chart
from mlops_assets.registry import (
    RegistryError,
    current_champion,
    ensure_tables,
    load_artifact,
    models_overview,
    record_model_card,
    record_validation,
)
from mlops_assets.use_cases import UseCase
from mlops_assets.warehouse import transaction


class ChampionConfig(dg.Config):
    action: Literal["apply_validation", "approve", "reject", "rollback"] = Field(
        "apply_validation",
        description=(
            "apply_validation: act on the new model's validation (promote, wait for approval or reject). "
            "approve / reject: a person's decision on a pending model. rollback: make a former champion "
            "the champion again."
        ),
    )
    model_version: str = Field("", description="The model to approve, reject or roll back to.")
    actor: str = Field("", description="Who decides (approver, reviewer); recorded in the audit trail.")
    comment: str = Field("", description="Why; recorded in the audit trail.")


def decision_set_metadata(record: dict) -> dict:
    """Which customers decided, both models' figures on them (charted over materializations: every
    point compares the two versions on the same customers), the interval, and a reliability chart."""
    comparison = record["comparison"]
    entries = {
        "evaluation_set": comparison["description"],
        **float_metrics(comparison["challenger"], prefix="decision_challenger_"),
        **float_metrics(comparison["champion"] or {}, prefix="decision_champion_"),
    }
    if record.get("difference") is not None:
        entries.update(
            {
                f"decision_{record['primary_metric']}_difference": float(record["difference"]),
                "decision_difference_ci_low": float(record["difference_low"]),
                "decision_difference_ci_high": float(record["difference_high"]),
            }
        )
    curves = {name: pd.DataFrame(rows) for name, rows in comparison["reliability"].items()}
    chart = reliability_chart(curves, f"reliability on {comparison['set'].replace('_', ' ')}")
    entries["reliability"] = png_image(chart, "reliability chart")
    return entries


def build_lifecycle_assets(use_case: UseCase) -> list:
    name = use_case.name
    model_key = dg.AssetKey([name, "propensity_model"])
    training_set_key = dg.AssetKey([name, "training_set"])
    validation_key = dg.AssetKey([name, "model_validation"])
    champion_key = dg.AssetKey([name, "champion_model"])
    # What validation reads of the training set. Not the customer and load ids: reading those text
    # columns from DuckDB was 0.1-0.4 s of the 1M-customer load (a run that wrote the training set
    # hands it over from memory, where fewer columns are a smaller copy).
    read_columns = list(
        dict.fromkeys(
            [*(f.name for f in use_case.features), *use_case.sensitive_attributes, use_case.target, "period", "split"]
        )
    )

    @dg.asset(
        key=validation_key,
        ins={
            "propensity_model": dg.AssetIn(key=model_key),
            "training_set": dg.AssetIn(key=training_set_key, metadata={"columns": read_columns}),
        },
        group_name="validation",
        kinds={"pandas", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Validation report of the newly trained model: compared with the current champion on the same "
            "customers (the newest labelled period's test customers once there are several periods, else the "
            "random test split) with a paired bootstrap interval of the difference, checked against the "
            "quality floor, calibration and fairness, with the promotion decision and its reasons. Every "
            "validation is kept in "
            f"`{name}.model_validations`."
        ),
    )
    def model_validation(
        context: dg.AssetExecutionContext,
        propensity_model: ModelArtifact,
        training_set: pd.DataFrame,
        warehouse: Warehouse,
    ) -> pd.DataFrame:
        with warehouse.get_connection() as connection:
            ensure_tables(connection, name)
            champion_version = current_champion(connection, name)
            champion = (
                load_artifact(connection, name, champion_version)
                if champion_version and champion_version != propensity_model.model_version
                else None
            )
            validation = validate_challenger(use_case, propensity_model, champion, training_set, context.run.run_id)
            record_validation(connection, name, validation.record)
            card = model_card(connection, use_case, propensity_model.model_version)
            record_model_card(connection, name, propensity_model.model_version, card)
        context.add_output_metadata(
            {
                **decision_set_metadata(validation.record),
                "decision": validation.decision.action,
                "reasons": dg.MetadataValue.md("\n".join(f"- {r}" for r in validation.decision.reasons)),
                "model_version": propensity_model.model_version,
                "champion_version": champion.model_version if champion else "none",
                "comparison": markdown_table(validation.comparison),
                "fairness": dg.MetadataValue.md(validation.fairness_summary),
                # A snapshot before the decision (status candidate); the card after it, with the approval
                # record, is on champion_model, in `<use case>.model_cards` and on the review pages.
                "model_card_at_validation": dg.MetadataValue.md(card),
            }
        )
        record = validation.record
        return pd.DataFrame(
            [
                {
                    "model_version": record["model_version"],
                    "champion_version": record["champion_version"],
                    "decision": record["decision"],
                    "reasons": "; ".join(record["reasons"]),
                    "primary_metric": record["primary_metric"],
                    "challenger_value": record["challenger_value"],
                    "champion_value": record["champion_value"],
                    "fairness_passed": bool(record["fairness"].get("passed", True)),
                    "evaluation_set": record["evaluation_set"],
                    "evaluation_rows": record["evaluation_rows"],
                    "difference": record["difference"],
                    "difference_low": record["difference_low"],
                    "difference_high": record["difference_high"],
                }
            ]
        )

    @dg.asset(
        key=champion_key,
        ins={
            "propensity_model": dg.AssetIn(key=model_key),
            "model_validation": dg.AssetIn(key=validation_key),
        },
        io_manager_key="model_io_manager",
        group_name="registry",
        kinds={"lightgbm", "duckdb"},
        pool=WAREHOUSE_POOL,
        output_required=False,
        description=(
            "The model in production, which scoring uses: the champion after acting on the latest validation "
            "(auto mode promotes a model that passes every gate) or on a person's approval, rejection or "
            f"rollback. Status changes are appended to `{name}.model_status_events`. Without a champion "
            "(e.g. the first model waits for approval) nothing is materialized and nothing is scored."
        ),
    )
    def champion_model(
        context: dg.AssetExecutionContext,
        config: ChampionConfig,
        propensity_model: ModelArtifact,
        model_validation: pd.DataFrame,
        warehouse: Warehouse,
        notifier: Notifier,
    ):
        run_id = context.run.run_id
        with warehouse.get_connection() as connection:
            try:
                with transaction(connection):
                    if config.action == "apply_validation":
                        validated = model_validation["model_version"].iloc[0]
                        if validated != propensity_model.model_version:
                            raise RegistryError(
                                f"validation is of {validated}, but the model is {propensity_model.model_version}; "
                                "re-materialize model_validation"
                            )
                        change = apply_decision(connection, name, validated, run_id)
                    elif config.action == "approve":
                        # Four-eyes: neither the named approver nor whoever launched this run trained the model.
                        change = approve(
                            connection,
                            name,
                            config.model_version,
                            config.actor,
                            config.comment,
                            run_id,
                            acting_user=launcher_of(context.run.tags),
                        )
                    else:
                        action = {"reject": reject, "rollback": rollback}[config.action]
                        change = action(connection, name, config.model_version, config.actor, config.comment, run_id)
                    for version in change.changed:
                        record_model_card(connection, name, version, model_card(connection, use_case, version))
            except RegistryError as error:
                raise dg.Failure(description=str(error)) from error
            for kind, message, details in change.notifications:
                # Retraining on unchanged data gives the champion's twin: expected, not a warning.
                expected = kind == "promotion_refused" and "identical to the champion" in message
                severity = "info" if kind in ("promotion", "rollback") or expected else "warning"
                notifier.notify(context, name, kind, message, details, severity, connection=connection)
            champion_version = current_champion(connection, name)
            overview = models_overview(connection, name)
            if champion_version is None:
                context.log.warning(
                    f"{name}: no champion model yet (latest: {propensity_model.model_version}, "
                    f"{overview['status'].iloc[-1] if len(overview) else 'unknown'}); nothing will be scored"
                )
                return
            champion = load_artifact(connection, name, champion_version)
            card = model_card(connection, use_case, champion_version)
        yield dg.Output(
            champion,
            metadata={
                "champion_version": champion_version,
                "action": config.action,
                "challenger_version": propensity_model.model_version,
                "champion_test_roc_auc": float(champion.metrics["roc_auc"]),
                "champion_calibration": dg.MetadataValue.json(champion.calibration),
                "models": markdown_table(overview.tail(15)),
                "model_card": dg.MetadataValue.md(card),
            },
        )

    return [model_validation, champion_model]
