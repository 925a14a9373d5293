"""Monitoring: drift of each batch against the champion's training data, and realized performance.

Their checks are not blocking (a drifting batch is still scored with the current champion). The
drift report classifies the likely cause of each batch's drift (ml/drift.py `classify_batch`); only
causes that call for retraining make a check fail with severity ERROR, which the retraining sensor
(sensors/retraining.py) turns into one retraining run. Seasonal drift and broken-data causes are
reported with severity WARN; so are the evaluations of a retraining run itself.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.metadata import markdown_table, png_image
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.defs.triggers import retrain_metadata
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.drift import (
    RETRAIN_CAUSES,
    classify_batch,
    compare_to_reference,
    score_drift,
    summarize_drift,
    target_rate_change,
)
from mlops_assets.ml.evaluation import realized_performance
from mlops_assets.ml.plots import drift_chart
from mlops_assets.ml.scoring import customers_of_latest_load
from mlops_assets.use_cases import UseCase

SCORE_ROW = "model_score"
RETRAIN_RUN_TAG = "mlops/retrain"


def _append(connection, table: str, frame: pd.DataFrame) -> None:
    connection.register("rows_to_append", frame)
    connection.execute(f"create table if not exists {table} as select * from rows_to_append limit 0")
    # Columns added by a newer version of the report are added to an older history table.
    existing = {row[0] for row in connection.execute(f"describe {table}").fetchall()}
    for column, kind, *_ in connection.execute("describe rows_to_append").fetchall():
        if column not in existing:
            connection.execute(f'alter table {table} add column "{column}" {kind}')
    connection.execute(f"insert into {table} by name select * from rows_to_append")
    connection.unregister("rows_to_append")


def is_retrain_run(context) -> bool:
    return bool(context.run.tags.get(RETRAIN_RUN_TAG))


def _target_rate(frame: pd.DataFrame, batch: pd.DataFrame, target: str) -> dict | None:
    """Buyer rate of the batch's customers with outcomes against everyone else's. `batch` holds rows of
    `frame` (customers_of_latest_load), so membership is by row index: 0.03 s at 1M against 0.3 s by id."""
    if target not in frame.columns:
        return None
    in_batch = frame.index.isin(batch.index)
    known = frame[target].notna()
    batch_outcomes, reference = frame.loc[in_batch & known, target], frame.loc[~in_batch & known, target]
    return target_rate_change(int(batch_outcomes.sum()), len(batch_outcomes), int(reference.sum()), len(reference))


def _causes_table(classified: dict) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "cause": cause,
                "features": ", ".join(features),
                "requests retrain": "yes" if cause in RETRAIN_CAUSES else "no",
            }
            for cause, features in classified["features_by_cause"].items()
        ],
        columns=["cause", "features", "requests retrain"],
    )


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
                metadata={
                    "columns": [
                        "customer_id",
                        *(f.name for f in use_case.features),
                        use_case.target,
                        "load_id",
                        "loaded_at",
                    ]
                },
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
            "share) and for the champion's score distribution, with the batch's likely cause (unit/scale "
            "change, missing values, new categories, co-moving group, single-feature shift, score-only shift, "
            "target-rate change, seasonal). Every report is appended to "
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
        classified = classify_batch(
            report,
            score_drifted=scores["drifted"],
            seasonal=set(monitoring.seasonal_features),
            co_moving_min=monitoring.co_moving_min_features,
            target_rate=_target_rate(customer_features, batch, use_case.target),
        )
        report = report.assign(cause=classified["per_feature"])
        score_row["cause"] = "score_only_shift" if "score_only_shift" in classified["causes"] else ""
        report = pd.concat([report, pd.DataFrame([score_row])], ignore_index=True)
        load_id = str(batch["load_id"].iloc[0]) if len(batch) else None
        report = report.assign(
            load_id=load_id,
            model_version=champion_model.model_version,
            batch_customers=len(batch),
            primary_cause=classified["primary_cause"],
            batch_causes=", ".join(classified["causes"]),
            requests_retrain=classified["requests_retrain"],
            run_kind="retrain" if is_retrain_run(context) else "batch",
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
                "primary_cause": classified["primary_cause"],
                "requests_retrain": classified["requests_retrain"],
                "causes": markdown_table(_causes_table(classified)),
                "run_kind": "retraining run (the new champion on the batch that triggered it)"
                if is_retrain_run(context)
                else "batch",
                "psi_by_feature": png_image(chart, "PSI by feature"),
                "top_drift": markdown_table(
                    report.sort_values("psi", ascending=False).head(15)[
                        ["feature", "psi", "ks_statistic", "severity", "cause", "reason"]
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
                    f"{monitoring.drift.missing_share_alert:.0%}), seasonal features "
                    f"({', '.join(monitoring.seasonal_features) or 'none declared'}) not counted. Severity ERROR "
                    "(requests a retrain) only when the likely cause calls for one."
                ),
                metadata=retrain_metadata(True),
            ),
            dg.AssetCheckSpec(
                "score_drift",
                asset=drift_key,
                description=(
                    "The champion's score distribution on the batch has no drift alert. Severity ERROR only when "
                    "no seasonal or broken-data cause explains it."
                ),
                metadata=retrain_metadata(True),
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
        counted = drifted[drifted["cause"] != "seasonal"]
        seasonal = drifted[drifted["cause"] == "seasonal"]["feature"].tolist()
        feature_passed = len(counted) <= monitoring.max_drifted_features
        first = drift_report.iloc[0]
        load_id, version, causes = first["load_id"], first["model_version"], first["batch_causes"]
        retrain_run = is_retrain_run(context)
        requests_retrain = bool(first["requests_retrain"]) and not retrain_run
        prefix = "retraining run, the new champion on its own training batch (not a trigger): " if retrain_run else ""
        if (not feature_passed or score["drifted"]) and not retrain_run:
            notifier.notify(
                context,
                name,
                "drift",
                f"batch {load_id}: {len(counted)} drifted feature(s) against {version}"
                + (f": {', '.join(counted['feature'].head(5))}" if len(counted) else "")
                + ("; score distribution drifted" if score["drifted"] else "")
                + f"; likely cause: {causes or 'none'}"
                + ("; retraining requested" if requests_retrain else "; no retrain (cause does not call for one)"),
                {
                    "features": drifted[["feature", "psi", "ks_statistic", "cause", "reason"]].to_dict("records"),
                    "causes": causes,
                },
            )
        severity = dg.AssetCheckSeverity.ERROR if requests_retrain else dg.AssetCheckSeverity.WARN
        yield dg.AssetCheckResult(
            check_name="feature_drift",
            passed=bool(feature_passed),
            severity=severity,
            description=prefix
            + (
                f"{len(counted)} drifted feature(s) in batch {load_id} (cause: {causes})"
                + (": " + "; ".join(f"{r.feature} ({r.cause}: {r.reason})" for r in counted.head(5).itertuples()))
                if len(counted)
                else f"no feature drift in batch {load_id}"
            )
            + (f"; seasonal drift, expected: {', '.join(seasonal)}" if seasonal else ""),
            metadata={
                "drifted_features": ", ".join(counted["feature"]) or "none",
                "drifted_count": len(counted),
                "seasonal_drift": ", ".join(seasonal) or "none",
                "causes": causes or "none",
                "primary_cause": str(first["primary_cause"]),
                "requests_retrain": requests_retrain,
                "max_psi": float(features["psi"].max()),
                "load_id": str(load_id),
                "champion_version": str(version),
            },
        )
        yield dg.AssetCheckResult(
            check_name="score_drift",
            passed=not bool(score["drifted"]),
            severity=severity,
            description=prefix + f"score distribution: {score['reason']}" + (f" (cause: {causes})" if causes else ""),
            metadata={
                "score_psi": float(score["psi"]),
                "score_ks": float(score["ks_statistic"]),
                "load_id": str(load_id),
                "causes": causes or "none",
            },
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
        metadata=retrain_metadata(True),
        description=(
            f"The latest publication with at least {monitoring.min_outcomes} outcomes has a realized ROC AUC of "
            f"at least {monitoring.min_realized_roc_auc} and a top-decile lift of at least "
            f"{monitoring.min_realized_top_decile_lift}. A failure triggers retraining."
        ),
    )
    def realized_performance_check(
        context: dg.AssetCheckExecutionContext, model_performance: pd.DataFrame
    ) -> dg.AssetCheckResult:
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
        retrain_run = is_retrain_run(context)
        return dg.AssetCheckResult(
            passed=bool(passed),
            # A retraining run re-reads the publication that triggered it: shown, not a new trigger.
            severity=dg.AssetCheckSeverity.WARN if retrain_run else dg.AssetCheckSeverity.ERROR,
            description=("retraining run, performance of the publication that triggered it: " if retrain_run else "")
            + (
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

    @dg.asset_check(
        asset=dg.AssetKey([name, "published_scores"]),
        name="new_customers_scored",
        metadata=retrain_metadata(False),
        description=(
            "Honest freshness: the newest customer export was accepted and its customers are in the published "
            "scores. Warns when the newest batch was held for review, blocked or rejected (its customers keep "
            "their last published scores, new ones have none), or when a publication re-published old scores only."
        ),
    )
    def new_customers_scored(warehouse: Warehouse) -> dg.AssetCheckResult:
        with warehouse.get_connection() as connection:
            return _new_customers_scored(connection, name)

    return [drift_report, drift_checks, model_performance, realized_performance_check, new_customers_scored]


def _new_customers_scored(connection, name: str) -> dg.AssetCheckResult:
    """See the check `new_customers_scored`. A re-read of a file already ingested (status `skipped`)
    brings no batch: the newest batch is the newest load that was not skipped."""
    newest = connection.execute(
        f"""select load_id, status, source_file, loaded_at from {name}.raw_customer_loads
            where status <> 'skipped' order by loaded_at desc limit 1"""
    ).fetchone()
    publication = connection.execute(
        f"""with latest as (select publication_id, published_at from {name}.score_history
                            order by published_at desc limit 1),
                 first_seen as (select customer_id, min(published_at) as first_published
                                from {name}.score_history group by customer_id)
            select l.publication_id, l.published_at, count(*), min(h.scored_at),
                   count(*) filter (where f.first_published = l.published_at)
            from {name}.score_history h join latest l using (publication_id)
            join first_seen f using (customer_id)
            group by l.publication_id, l.published_at"""
    ).fetchone()
    if newest is None or publication is None:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description="no batch has been scored and published yet"
        )
    load_id, status, source_file, loaded_at = newest
    publication_id, published_at, customers, scored_at, first_time = publication
    metadata = {
        "newest_load": load_id,
        "newest_load_status": status,
        "publication_id": publication_id,
        "published_customers": customers,
        "customers_scored_for_the_first_time": first_time,
    }
    batch = f"the newest batch {load_id} ({source_file}, {loaded_at:%Y-%m-%d %H:%M})"
    if status != "accepted":
        description = (
            f"{batch} is {status}: its customers are not scored; the published scores are those of publication "
            f"{publication_id} ({published_at:%Y-%m-%d %H:%M})"
        )
    elif scored_at < loaded_at.replace(microsecond=0):  # scoring times are kept to the second
        description = f"{batch} is not scored: publication {publication_id} re-published scores from {scored_at}"
    else:
        return dg.AssetCheckResult(
            passed=True,
            description=(
                f"publication {publication_id} scored the {customers} customer(s) of {batch} "
                f"({first_time} for the first time)"
            ),
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        passed=False, severity=dg.AssetCheckSeverity.WARN, description=description, metadata=metadata
    )
