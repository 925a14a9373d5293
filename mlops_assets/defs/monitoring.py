"""Monitoring: drift of each batch against the champion's training data, and realized performance.

Their checks are not blocking (a drifting batch is still scored with the current champion); a failed
check is picked up by the retraining sensor (sensors/retraining.py), which starts one retraining run.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.metadata import markdown_table, png_image
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.drift import compare_to_reference, score_drift, summarize_drift
from mlops_assets.ml.evaluation import realized_performance
from mlops_assets.ml.plots import drift_chart
from mlops_assets.ml.scoring import customers_of_latest_load
from mlops_assets.use_cases import UseCase

SCORE_ROW = "model_score"


def _append(connection, table: str, frame: pd.DataFrame) -> None:
    connection.register("rows_to_append", frame)
    connection.execute(f"create table if not exists {table} as select * from rows_to_append limit 0")
    connection.execute(f"insert into {table} by name select * from rows_to_append")
    connection.unregister("rows_to_append")


def build_monitoring_assets(use_case: UseCase) -> list:
    name = use_case.name
    monitoring = use_case.monitoring
    features_key = dg.AssetKey([name, use_case.feature_mart])
    champion_key = dg.AssetKey([name, "champion_model"])
    drift_key = dg.AssetKey([name, "drift_report"])
    performance_key = dg.AssetKey([name, "model_performance"])

    @dg.asset(
        key=drift_key,
        ins={
            "customer_features": dg.AssetIn(
                key=features_key,
                metadata={"columns": ["customer_id", *(f.name for f in use_case.features), "load_id", "loaded_at"]},
            ),
            "customer_scores": dg.AssetIn(
                key=dg.AssetKey([name, "customer_scores"]), metadata={"columns": ["score", "model_version"]}
            ),
            "champion_model": dg.AssetIn(key=champion_key),
        },
        group_name="monitoring",
        kinds={"pandas", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Drift of the latest batch against the champion's training data, per feature (PSI on bins from "
            "the reference quantiles or category frequencies, KS statistic for numeric features, missing "
            "share) and for the champion's score distribution. Every report is appended to "
            f"`{name}.drift_history`."
        ),
    )
    def drift_report(
        context: dg.AssetExecutionContext,
        customer_features: pd.DataFrame,
        customer_scores: pd.DataFrame,
        champion_model: ModelArtifact,
        warehouse: Warehouse,
    ) -> pd.DataFrame:
        profile = champion_model.reference_profile
        if not profile:
            raise dg.Failure(f"champion {champion_model.model_version} has no reference profile; retrain it")
        batch = customers_of_latest_load(customer_features)
        report = compare_to_reference(profile["features"], batch, monitoring.drift)
        # The champion's scores of this batch are in the score table already: no second prediction.
        if set(customer_scores["model_version"]) != {champion_model.model_version}:
            raise dg.Failure(
                f"customer_scores come from {sorted(set(customer_scores['model_version']))}, not the champion "
                f"{champion_model.model_version}; re-materialize customer_scores"
            )
        scores = score_drift(profile["scores"], customer_scores["score"].to_numpy(), monitoring.drift)
        score_row = {
            "feature": SCORE_ROW,
            "type": "score",
            "psi": scores["psi"],
            "ks_statistic": scores["ks_statistic"],
            "drifted": scores["drifted"],
            "severity": scores["severity"],
            "reason": scores["reason"],
        }
        report = pd.concat([report, pd.DataFrame([score_row])], ignore_index=True)
        load_id = str(batch["load_id"].iloc[0]) if len(batch) else None
        report = report.assign(
            load_id=load_id,
            model_version=champion_model.model_version,
            batch_customers=len(batch),
            computed_at=datetime.now(UTC).replace(tzinfo=None),
        )
        with warehouse.get_connection() as connection:
            _append(connection, f"{name}.drift_history", report)
        features_only = report[report["feature"] != SCORE_ROW]
        summary = summarize_drift(features_only)
        chart = drift_chart(
            features_only,
            monitoring.drift.psi_warn,
            monitoring.drift.psi_alert,
            f"batch {load_id} vs {champion_model.model_version}",
        )
        context.add_output_metadata(
            {
                "load_id": load_id or "",
                "batch_customers": len(batch),
                "drifted_features": summary["drifted_count"],
                "max_psi": float(summary["max_psi"]) if summary["max_psi"] == summary["max_psi"] else 0.0,
                "score_psi": float(scores["psi"]),
                "psi_by_feature": png_image(chart, "PSI by feature"),
                "top_drift": markdown_table(
                    report.sort_values("psi", ascending=False).head(15)[
                        ["feature", "psi", "ks_statistic", "severity", "reason"]
                    ]
                ),
            }
        )
        return report

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                "feature_drift",
                asset=drift_key,
                description=(
                    f"At most {monitoring.max_drifted_features} feature(s) with a drift alert (PSI > "
                    f"{monitoring.drift.psi_alert}, KS > {monitoring.drift.ks_alert}, or missing share up by "
                    f"{monitoring.drift.missing_share_alert:.0%}). A failure triggers retraining."
                ),
            ),
            dg.AssetCheckSpec(
                "score_drift",
                asset=drift_key,
                description="The champion's score distribution on the batch has no drift alert.",
            ),
        ],
        name=f"{name}__drift_checks",
        ins={"drift_report": dg.AssetIn(key=drift_key)},
        pool=WAREHOUSE_POOL,
    )
    def drift_checks(context: dg.AssetCheckExecutionContext, drift_report: pd.DataFrame, notifier: Notifier):
        features = drift_report[drift_report["feature"] != SCORE_ROW]
        score = drift_report[drift_report["feature"] == SCORE_ROW].iloc[0]
        drifted = features[features["drifted"]].sort_values("psi", ascending=False)
        feature_passed = len(drifted) <= monitoring.max_drifted_features
        load_id, version = drift_report["load_id"].iloc[0], drift_report["model_version"].iloc[0]
        if not feature_passed or score["drifted"]:
            notifier.notify(
                context,
                name,
                "drift",
                f"batch {load_id}: {len(drifted)} drifted feature(s) against {version}"
                + (f": {', '.join(drifted['feature'].head(5))}" if len(drifted) else "")
                + ("; score distribution drifted" if score["drifted"] else ""),
                {"features": drifted[["feature", "psi", "ks_statistic", "reason"]].to_dict("records")},
            )
        yield dg.AssetCheckResult(
            check_name="feature_drift",
            passed=bool(feature_passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{len(drifted)} drifted feature(s) in batch {load_id}"
                + (": " + "; ".join(f"{r.feature} ({r.reason})" for r in drifted.head(5).itertuples()))
                if len(drifted)
                else f"no feature drift in batch {load_id}"
            ),
            metadata={
                "drifted_features": ", ".join(drifted["feature"]) or "none",
                "drifted_count": len(drifted),
                "max_psi": float(features["psi"].max()),
                "load_id": str(load_id),
                "champion_version": str(version),
            },
        )
        yield dg.AssetCheckResult(
            check_name="score_drift",
            passed=not bool(score["drifted"]),
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"score distribution: {score['reason']}",
            metadata={"score_psi": float(score["psi"]), "score_ks": float(score["ks_statistic"])},
        )

    @dg.asset(
        key=performance_key,
        deps=[dg.AssetKey([name, "published_scores"]), dg.AssetKey([name, "stg_outcomes"])],
        group_name="monitoring",
        kinds={"pandas", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Realized performance of published scores once campaign outcomes arrive: per publication, "
            "customers with an outcome, buyers, ROC AUC and top-decile lift of the model that scored them "
            "(each customer counted in the publication that first scored them)."
        ),
    )
    def model_performance(context: dg.AssetExecutionContext, warehouse: Warehouse) -> pd.DataFrame:
        with warehouse.get_connection() as connection:
            # Each customer counts for the publication that first scored them: the score marketing acted
            # on (later re-publications, e.g. after a retrain on these outcomes, would be in-sample).
            scored = connection.execute(
                f"""with first_scores as (
                        select * from {name}.score_history
                        qualify row_number() over (partition by customer_id order by published_at) = 1
                    )
                    select h.publication_id, h.published_at, h.model_version, h.score,
                           o.{use_case.target} as outcome
                    from first_scores h
                    join {name}.stg_outcomes o using (customer_id)"""
            ).fetchdf()
        performance = realized_performance(scored, "publication_id", monitoring.min_outcomes)
        if len(scored):
            details = scored.groupby("publication_id").agg(
                published_at=("published_at", "first"), model_version=("model_version", "first")
            )
            performance = performance.merge(details, on="publication_id").sort_values("published_at")
        else:
            performance = performance.assign(published_at=pd.Series(dtype="datetime64[ns]"), model_version="")
        context.add_output_metadata(
            {
                "publications_with_outcomes": len(performance),
                "by_publication": markdown_table(performance.tail(10)),
            }
        )
        return performance.reset_index(drop=True)

    @dg.asset_check(
        asset=performance_key,
        name="realized_performance",
        description=(
            f"The latest publication with at least {monitoring.min_outcomes} outcomes has a realized ROC AUC of "
            f"at least {monitoring.min_realized_roc_auc} and a top-decile lift of at least "
            f"{monitoring.min_realized_top_decile_lift}. A failure triggers retraining."
        ),
    )
    def realized_performance_check(model_performance: pd.DataFrame) -> dg.AssetCheckResult:
        judged = model_performance.dropna(subset=["roc_auc"])
        if judged.empty:
            return dg.AssetCheckResult(
                passed=True, description=f"no publication has {monitoring.min_outcomes}+ outcomes yet"
            )
        latest = judged.iloc[-1]
        passed = (
            latest["roc_auc"] >= monitoring.min_realized_roc_auc
            and latest["top_decile_lift"] >= monitoring.min_realized_top_decile_lift
        )
        return dg.AssetCheckResult(
            passed=bool(passed),
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{latest['model_version']} on {latest['customers_with_outcome']} outcomes of publication "
                f"{latest['publication_id']}: ROC AUC {latest['roc_auc']:.3f} "
                f"(floor {monitoring.min_realized_roc_auc}), top-decile lift {latest['top_decile_lift']:.2f} "
                f"(floor {monitoring.min_realized_top_decile_lift})"
            ),
            metadata={
                "realized_roc_auc": float(latest["roc_auc"]),
                "realized_top_decile_lift": float(latest["top_decile_lift"]),
                "model_version": str(latest["model_version"]),
                "publication_id": str(latest["publication_id"]),
            },
        )

    return [drift_report, drift_checks, model_performance, realized_performance_check]
