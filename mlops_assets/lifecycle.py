"""Model lifecycle steps shared by the Dagster assets and the CLI: validation, decisions, cards."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.calibration import is_calibrated, reliability_table
from mlops_assets.ml.datasets import out_of_time_customers
from mlops_assets.ml.evaluation import classification_metrics, decile_table
from mlops_assets.ml.fairness import evaluate_fairness, fairness_table
from mlops_assets.ml.fairness_summary import fairness_summary, fairness_verdict
from mlops_assets.ml.model_card import METRIC_NAMES, fill_limitations, model_facts, render_model_card
from mlops_assets.ml.promotion import REJECT, Decision, decide, paired_bootstrap
from mlops_assets.registry import (
    RegistryError,
    latest_validation,
    model_status,
    promote,
    record_status,
    status_history,
)
from mlops_assets.use_cases import UseCase

# The model card's metrics less the counts: what is compared between champion and challenger.
COMPARED_METRICS = tuple(name for name in METRIC_NAMES if name not in ("customers", "buyers"))


@dataclass
class Validation:
    decision: Decision
    record: dict  # the row for registry.record_validation
    comparison: pd.DataFrame
    fairness_summary: str


def _records(frame: pd.DataFrame | None) -> list[dict]:
    return [] if frame is None else json.loads(frame.to_json(orient="records"))


def _evaluation_set(use_case: UseCase, training_set: pd.DataFrame, is_test: np.ndarray) -> tuple[str, np.ndarray, str]:
    """(name, row mask, description) of the customers that decide: out-of-time when possible."""
    target = use_case.target
    mask, description = out_of_time_customers(training_set, target, use_case.time)
    if mask is not None:
        return "out_of_time", mask, description
    buyers = int(training_set.loc[is_test, target].sum())
    return (
        "random_split",
        is_test,
        f"the random test split ({int(is_test.sum())} customers, {buyers} buyers; {description})",
    )


def validate_challenger(
    use_case: UseCase,
    challenger: ModelArtifact,
    champion: ModelArtifact | None,
    training_set: pd.DataFrame,
    run_id: str,
) -> Validation:
    """Evaluate challenger and champion on the same held-out customers and decide.

    The decision set is the newest labelled period's test customers once there is more than one
    period (out-of-time), else the random test split; the random test split is always reported as a
    second view. Splits are drawn per period with a fixed seed, so no model trained on either set.
    """
    target, policy = use_case.target, use_case.promotion
    is_test = (training_set["split"] == "test").to_numpy()
    set_name, in_decision, set_description = _evaluation_set(use_case, training_set, is_test)
    labels = training_set[target].to_numpy()
    all_scores = challenger.predict(training_set)  # once: test split, decision set, population table
    test = training_set[is_test]
    y_test, challenger_scores = labels[is_test], all_scores[is_test]
    metrics = classification_metrics(y_test, challenger_scores)
    decision_metrics = classification_metrics(labels[in_decision], all_scores[in_decision])
    champion_metrics = champion_decision_metrics = paired = None
    champion_note, champion_decision_scores = "", None
    if champion is not None:
        try:
            champion_test_scores = champion.predict(test)
        except KeyError as error:
            champion_note = f"champion {champion.model_version} cannot score the evaluation data: {error}"
        else:
            champion_metrics = classification_metrics(y_test, champion_test_scores)
            champion_decision_scores = champion_test_scores[in_decision[is_test]]
            champion_decision_metrics = classification_metrics(labels[in_decision], champion_decision_scores)
            compared = [policy.primary_metric, *(["roc_auc"] if policy.primary_metric != "roc_auc" else [])]
            paired = paired_bootstrap(
                labels[in_decision],
                all_scores[in_decision],
                champion_decision_scores,
                compared,
                {m: (decision_metrics[m], champion_decision_metrics[m]) for m in compared},
                resamples=policy.bootstrap_samples,
                confidence=policy.confidence,
                seed=use_case.split.seed,
            )
    calibration_passed, calibration_summary = is_calibrated(decision_metrics, policy.max_ece, policy.max_mean_score_gap)
    if not calibration_passed and champion_decision_metrics is not None:
        # Under drift neither model may be calibrated on the present; the challenger must then not be
        # worse calibrated than the model in production.
        champion_brier = champion_decision_metrics["brier_score"]
        if decision_metrics["brier_score"] <= champion_brier:
            calibration_passed = True
            calibration_summary += f", but Brier not above the champion's {champion_brier:.4f} on the same customers"
    fairness = _fairness(use_case, training_set, test, challenger_scores, all_scores)
    decision = decide(
        decision_metrics,
        paired,
        min_roc_auc=use_case.thresholds.min_test_roc_auc,
        calibration_passed=calibration_passed,
        calibration_summary=calibration_summary,
        fairness_passed=fairness.passed,
        fairness_reasons=fairness.reasons,
        fairness_verdict=fairness_verdict(fairness.record) if fairness.record else "not configured",
        policy=policy,
        evaluation_set=set_description,
    )
    if champion is not None and champion.sha256 == challenger.sha256:
        # Same data and parameters give the same trees: nothing to promote (e.g. a retrain after a
        # data-quality failure, which trains on the last accepted data).
        decision = Decision(REJECT, [f"identical to the champion {champion.model_version} (same sha256)"], {})
    if champion_note:
        decision.reasons.append(champion_note)
    primary = policy.primary_metric
    comparison = pd.DataFrame(
        [
            {
                "metric": key,
                "challenger": decision_metrics[key],
                "champion": (champion_decision_metrics or {}).get(key),
                "challenger (random split)": metrics[key],
                "champion (random split)": (champion_metrics or {}).get(key),
            }
            for key in COMPARED_METRICS
        ]
    )
    y_decision = labels[in_decision]
    reliability = {"challenger": _records(reliability_table(y_decision, all_scores[in_decision]))}
    if champion_decision_scores is not None:
        reliability["champion"] = _records(reliability_table(y_decision, champion_decision_scores))
    record = {
        "model_version": challenger.model_version,
        "champion_version": champion.model_version if champion else None,
        "primary_metric": primary,
        "challenger_value": decision_metrics[primary],
        "champion_value": (champion_decision_metrics or {}).get(primary),
        "difference": paired[primary].difference if paired else None,
        "difference_low": paired[primary].low if paired else None,
        "difference_high": paired[primary].high if paired else None,
        "tolerance": policy.tolerance,
        "decision": decision.action,
        "reasons": decision.reasons,
        "evaluation_set": set_description,
        "metrics": metrics,
        "champion_metrics": champion_metrics,
        "recent_metrics": decision_metrics if set_name == "out_of_time" else None,
        "comparison": {
            "set": set_name,
            "description": set_description,
            "challenger": decision_metrics,
            "champion": champion_decision_metrics,
            "paired": {m: d.as_dict() for m, d in (paired or {}).items()},
            "calibration_guard": {"passed": calibration_passed, "summary": calibration_summary},
            "reliability": reliability,
        },
        "fairness": fairness.record,
        "report": {
            "deciles": _records(decile_table(y_decision, all_scores[in_decision])),
            "calibration": reliability["challenger"],
            "fairness_table": _records(fairness.gated_table),
            "population_fairness_table": _records(fairness.population_table),
            "fairness_summary": fairness.summary,
        },
        "evaluation_rows": int(in_decision.sum()),
        "dagster_run_id": run_id,
    }
    return Validation(decision, record, comparison, fairness.summary)


@dataclass
class _Fairness:
    passed: bool = True
    reasons: list = field(default_factory=list)
    summary: str = "No fairness gate configured."
    record: dict = field(default_factory=dict)
    gated_table: pd.DataFrame | None = None
    population_table: pd.DataFrame | None = None


def _fairness(use_case, training_set, test, challenger_scores, all_scores) -> _Fairness:
    """The fairness gate on the test split and the per-group table on all labelled customers."""
    if not use_case.fairness:
        return _Fairness()
    target, spec = use_case.target, use_case.fairness
    bounds = spec.model_copy()
    result = evaluate_fairness(
        test[target].to_numpy(), challenger_scores, test[spec.attribute], bounds, attribute=spec.attribute
    )
    population_table = fairness_table(
        training_set[target].to_numpy(), all_scores, training_set[spec.attribute], spec.top_share, spec.min_group_size
    )
    record = {
        "attribute": spec.attribute,
        "passed": result.passed,
        "demographic_parity_ratio": result.demographic_parity_ratio,
        "equal_opportunity_ratio": result.equal_opportunity_ratio,
        "reasons": result.reasons,
        "notes": result.notes,
        "bounds": bounds.model_dump(),
    }
    summary = (
        f"Top {spec.top_share:.0%} by score, test split. {fairness_summary(record)}. "
        + "".join(f"{reason}. " for reason in result.reasons)
        + " ".join(result.notes)
    )
    return _Fairness(result.passed, result.reasons, summary, record, result.table, population_table)


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


def training_launcher(connection: duckdb.DuckDBPyConnection, schema: str, model_version: str) -> str | None:
    """Who started the run that trained the model (lineage `launched_by`; None: a sensor, a schedule,
    or a model trained before launchers were recorded)."""
    rows = connection.execute(
        f"select json_extract_string(lineage, '$.launched_by') from {schema}.model_registry where model_version = ?",
        [model_version],
    ).fetchall()
    return rows[0][0] if rows and rows[0][0] else None


def _same_person(a: str | None, b: str | None) -> bool:
    return bool(a and b) and a.strip().casefold() == b.strip().casefold()


def four_eyes_refusal(launcher: str | None, approver: str, acting_user: str | None = None) -> str | None:
    """Why an approval breaks the four-eyes rule, or None: the approver named in the decision, and the
    person who actually launched the approval (the logged-in reviewer, the OS account of `mlops`, the
    Dagster UI user) may not be who started the model's training run."""
    for person, role in ((approver, "approver"), (acting_user, "person launching the approval")):
        if _same_person(person, launcher):
            return (
                f"four-eyes rule: the {role} {person!r} started the training run of this model; "
                "another reviewer must approve it"
            )
    return None


def approve(
    connection: duckdb.DuckDBPyConnection,
    schema: str,
    model_version: str,
    approver: str,
    comment: str,
    run_id: str,
    acting_user: str | None = None,
) -> ChampionChange:
    status = model_status(connection, schema, model_version)
    if status != "pending_approval":
        raise RegistryError(f"{schema}: model {model_version} is {status or 'not registered'}, not pending approval")
    if not approver:
        raise RegistryError("an approval needs the approver's name")
    refusal = four_eyes_refusal(training_launcher(connection, schema, model_version), approver, acting_user)
    if refusal:
        raise RegistryError(f"{schema}: {model_version}: {refusal}")
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


def group_label(group, labels: dict[str, str]) -> str:
    """A fairness group as a person reads it: its code with the code list's label, e.g. "3 (40-50 years)"."""
    key = str(int(group)) if isinstance(group, float) and group.is_integer() else str(group)
    return f"{key} ({labels[key]})" if key in labels else key


def model_card(connection: duckdb.DuckDBPyConnection, use_case: UseCase, model_version: str) -> str:
    """Render a version's model card from the registry, its latest validation and its status history."""
    from mlops_assets.registry import load_artifact

    schema = use_case.name
    artifact = load_artifact(connection, schema, model_version)
    validation = latest_validation(connection, schema, model_version)
    report = json.loads(validation["report"]) if validation is not None else {}
    # A use case without a fairness section (e.g. fresh from `mlops new-use-case`) has no groups to label.
    labels = use_case.fairness_group_labels()
    fairness_rows = [{**row, "group": group_label(row["group"], labels)} for row in report.get("fairness_table") or []]
    population_rows = report.get("population_fairness_table") or []
    limitations = fill_limitations(use_case.known_limitations, model_facts(artifact.metrics, artifact.lineage))
    if population_rows:
        population = pd.DataFrame(population_rows)
        limitations.append(
            "Contact rates per group on all labelled customers (not gated): "
            + ", ".join(
                f"{use_case.fairness.attribute}={group_label(row.group, labels)}: "
                f"{row.selection_rate:.1%} of {row.customers}"
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
        comparison=json.loads(validation["comparison"])
        if validation is not None and isinstance(validation.get("comparison"), str)
        else None,
        calibration_map=artifact.calibration,
    )
