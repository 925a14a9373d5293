"""Model lifecycle steps shared by the Dagster assets and the CLI: validation, decisions, cards."""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pandas as pd

from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.evaluation import calibration_table, classification_metrics, decile_table
from mlops_assets.ml.fairness import evaluate_fairness, fairness_table
from mlops_assets.ml.model_card import fill_limitations, model_facts, render_model_card
from mlops_assets.ml.promotion import REJECT, Decision, decide
from mlops_assets.registry import (
    RegistryError,
    latest_validation,
    model_status,
    promote,
    record_status,
    status_history,
)
from mlops_assets.use_cases import UseCase

MIN_RECENT_ROWS = 200


@dataclass
class Validation:
    decision: Decision
    record: dict  # the row for registry.record_validation
    comparison: pd.DataFrame
    fairness_summary: str


def _records(frame: pd.DataFrame | None) -> list[dict]:
    return [] if frame is None else json.loads(frame.to_json(orient="records"))


def validate_challenger(
    use_case: UseCase,
    challenger: ModelArtifact,
    champion: ModelArtifact | None,
    training_set: pd.DataFrame,
    run_id: str,
) -> Validation:
    """Evaluate challenger and champion on the same held-out customers (the test split) and decide.

    Splits hash customer ids with a fixed seed, so a test customer of this training set was never in
    the champion's training split either (unless their label changed).
    """
    target = use_case.target
    is_test = (training_set["split"] == "test").to_numpy()
    test = training_set[is_test]
    y_test = test[target].to_numpy()
    all_scores = challenger.predict(training_set)  # once: the test split and the population table
    challenger_scores = all_scores[is_test]
    metrics = classification_metrics(y_test, challenger_scores)
    champion_metrics, champion_note = None, ""
    if champion is not None:
        try:
            champion_metrics = classification_metrics(y_test, champion.predict(test))
        except KeyError as error:
            champion_note = f"champion {champion.model_version} cannot score the evaluation data: {error}"

    recent_metrics = None
    latest_load = training_set["load_id"].max()
    recent = test[test["load_id"] == latest_load]
    if training_set["load_id"].nunique() > 1 and len(recent) >= MIN_RECENT_ROWS and recent[target].nunique() == 2:
        recent_scores = all_scores[is_test & (training_set["load_id"] == latest_load).to_numpy()]
        recent_metrics = classification_metrics(recent[target].to_numpy(), recent_scores)

    fairness_passed, fairness_reasons, fairness_summary = True, [], "No fairness gate configured."
    fairness_record: dict = {}
    gated_table = population_table = None
    if use_case.fairness:
        spec = use_case.fairness
        bounds = spec.model_copy()
        result = evaluate_fairness(y_test, challenger_scores, test[spec.attribute], bounds, attribute=spec.attribute)
        gated_table = result.table
        population_table = fairness_table(
            training_set[target].to_numpy(),
            all_scores,
            training_set[spec.attribute],
            spec.top_share,
            spec.min_group_size,
        )
        fairness_passed, fairness_reasons = result.passed, result.reasons
        fairness_summary = (
            f"Attribute `{spec.attribute}`, top {spec.top_share:.0%} by score, test split: selection-rate ratio "
            f"{result.demographic_parity_ratio:.2f} (bound {spec.min_selection_rate_ratio}), true-positive-rate "
            f"ratio {result.equal_opportunity_ratio:.2f} (bound {spec.min_tpr_ratio}). "
            + ("Passed. " if result.passed else "FAILED: " + "; ".join(result.reasons) + ". ")
            + " ".join(result.notes)
        )
        fairness_record = {
            "attribute": spec.attribute,
            "passed": result.passed,
            "demographic_parity_ratio": result.demographic_parity_ratio,
            "equal_opportunity_ratio": result.equal_opportunity_ratio,
            "reasons": result.reasons,
            "notes": result.notes,
            "bounds": bounds.model_dump(),
        }

    decision = decide(
        metrics,
        champion_metrics,
        min_roc_auc=use_case.thresholds.min_test_roc_auc,
        fairness_passed=fairness_passed,
        fairness_reasons=fairness_reasons,
        policy=use_case.promotion,
    )
    if champion is not None and champion.sha256 == challenger.sha256:
        # Same data and parameters give the same trees: nothing to promote (e.g. a retrain after a
        # data-quality failure, which trains on the last accepted data).
        decision = Decision(REJECT, [f"identical to the champion {champion.model_version} (same sha256)"], {})
    if champion_note:
        decision.reasons.append(champion_note)
    primary = use_case.promotion.primary_metric
    comparison = pd.DataFrame(
        [
            {"metric": key, "challenger": metrics[key], "champion": (champion_metrics or {}).get(key)}
            for key in ("roc_auc", "pr_auc", "top_decile_lift", "top_decile_capture_rate", "brier_score")
        ]
    )
    record = {
        "model_version": challenger.model_version,
        "champion_version": champion.model_version if champion else None,
        "primary_metric": primary,
        "challenger_value": metrics[primary],
        "champion_value": (champion_metrics or {}).get(primary),
        "tolerance": use_case.promotion.tolerance,
        "decision": decision.action,
        "reasons": decision.reasons,
        "metrics": metrics,
        "champion_metrics": champion_metrics,
        "recent_metrics": recent_metrics,
        "fairness": fairness_record,
        "report": {
            "deciles": _records(decile_table(y_test, challenger_scores)),
            "calibration": _records(calibration_table(y_test, challenger_scores)),
            "fairness_table": _records(gated_table),
            "population_fairness_table": _records(population_table),
            "fairness_summary": fairness_summary,
        },
        "evaluation_rows": len(test),
        "dagster_run_id": run_id,
    }
    return Validation(decision, record, comparison, fairness_summary)


@dataclass
class ChampionChange:
    champion: str | None
    changed: list[str]  # versions whose status changed
    notifications: list[tuple[str, str, dict]]  # (kind, message, details)


def apply_decision(
    connection: duckdb.DuckDBPyConnection, schema: str, model_version: str, run_id: str
) -> ChampionChange:
    """Act on a candidate's latest validation. Idempotent: a model already decided is left alone."""
    validation = latest_validation(connection, schema, model_version)
    if validation is None:
        raise RegistryError(f"{schema}: model {model_version} has no validation; materialize model_validation")
    if model_status(connection, schema, model_version) != "candidate":
        return ChampionChange(None, [], [])
    reasons = "; ".join(json.loads(validation["reasons"]))
    if validation["decision"] == "promote":
        previous = promote(connection, schema, model_version, "pipeline (auto approval)", reasons, run_id)
        return ChampionChange(
            model_version,
            [model_version, *([previous] if previous else [])],
            [
                (
                    "promotion",
                    f"{model_version} is the new champion (was {previous or 'none'})",
                    {"reasons": reasons},
                )
            ],
        )
    if validation["decision"] == "pending_approval":
        record_status(connection, schema, model_version, "pending_approval", "pipeline", reasons, run_id)
        return ChampionChange(
            None,
            [model_version],
            [
                (
                    "approval_pending",
                    f"{model_version} passed all gates and waits for approval",
                    {"reasons": reasons},
                )
            ],
        )
    record_status(connection, schema, model_version, "rejected", "pipeline", reasons, run_id)
    return ChampionChange(
        None,
        [model_version],
        [("promotion_refused", f"{model_version} was not promoted: {reasons}", {"reasons": reasons})],
    )


def approve(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    approver: str,
    comment: str,
    run_id: str,
) -> ChampionChange:
    status = model_status(connection, schema, model_version)
    if status != "pending_approval":
        raise RegistryError(f"{schema}: model {model_version} is {status or 'not registered'}, not pending approval")
    if not approver:
        raise RegistryError("an approval needs the approver's name")
    previous = promote(connection, schema, model_version, approver, f"approved: {comment or 'no comment'}", run_id)
    return ChampionChange(
        model_version,
        [model_version, *([previous] if previous else [])],
        [
            (
                "promotion",
                f"{model_version} approved by {approver} and is the new champion",
                {"comment": comment},
            )
        ],
    )


def reject(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    actor: str,
    comment: str,
    run_id: str,
) -> ChampionChange:
    status = model_status(connection, schema, model_version)
    if status not in ("pending_approval", "candidate"):
        raise RegistryError(
            f"{schema}: model {model_version} is {status or 'not registered'}; only a pending model can be rejected"
        )
    if not actor:
        raise RegistryError("a rejection needs the reviewer's name")
    record_status(connection, schema, model_version, "rejected", actor, f"rejected: {comment or 'no comment'}", run_id)
    return ChampionChange(
        None,
        [model_version],
        [("promotion_refused", f"{model_version} rejected by {actor}", {"comment": comment})],
    )


def rollback(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    actor: str,
    comment: str,
    run_id: str,
) -> ChampionChange:
    """Make a former champion the champion again."""
    history = status_history(connection, schema, model_version)
    if history.empty or "champion" not in set(history["status"]):
        raise RegistryError(f"{schema}: model {model_version} was never champion; only a former champion can come back")
    if not actor:
        raise RegistryError("a rollback needs the name of who asks for it")
    previous = promote(connection, schema, model_version, actor, f"rollback: {comment or 'no comment'}", run_id)
    return ChampionChange(
        model_version,
        [model_version, *([previous] if previous and previous != model_version else [])],
        [("rollback", f"{actor} rolled back to {model_version} (was {previous})", {"comment": comment})],
    )


def model_card(connection: duckdb.DuckDBPyConnection, use_case: UseCase, model_version: str) -> str:
    """Render a version's model card from the registry, its latest validation and its status history."""
    from mlops_assets.registry import load_artifact

    schema = use_case.name
    artifact = load_artifact(connection, schema, model_version)
    validation = latest_validation(connection, schema, model_version)
    report = json.loads(validation["report"]) if validation is not None else {}
    fairness_rows = report.get("fairness_table") or []
    population_rows = report.get("population_fairness_table") or []
    limitations = fill_limitations(use_case.known_limitations, model_facts(artifact.metrics, artifact.lineage))
    if population_rows:
        population = pd.DataFrame(population_rows)
        limitations.append(
            "Contact rates per group on all labelled customers (not gated): "
            + ", ".join(
                f"{use_case.fairness.attribute}={row.group}: {row.selection_rate:.1%} of {row.customers}"
                for row in population.itertuples()
            )
        )
    return render_model_card(
        use_case_title=use_case.title,
        use_case_description=use_case.description,
        model_version=model_version,
        status=model_status(connection, schema, model_version) or "unknown",
        lineage=artifact.lineage,
        features=[f.model_dump() for f in artifact.features],
        params=artifact.params,
        metrics=artifact.metrics,
        champion_version=validation["champion_version"] if validation is not None else None,
        champion_metrics=json.loads(validation["champion_metrics"]) if validation is not None else None,
        recent_metrics=json.loads(validation["recent_metrics"]) if validation is not None else None,
        deciles=pd.DataFrame(report.get("deciles") or []),
        calibration=pd.DataFrame(report.get("calibration") or []),
        fairness_table=pd.DataFrame(fairness_rows) if fairness_rows else None,
        fairness_summary=report.get("fairness_summary", "not validated"),
        decision=(
            f"{validation['decision']}: " + "; ".join(json.loads(validation["reasons"]))
            if validation is not None
            else "not validated yet"
        ),
        status_events=status_history(connection, schema, model_version),
        limitations=limitations,
    )
