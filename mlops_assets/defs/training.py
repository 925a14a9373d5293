"""Training: the recorded training set and the LightGBM propensity model with its quality gate."""

import json
from dataclasses import replace
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.defs.config import camel, config_from_model
from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.jobs import trigger_of
from mlops_assets.defs.metadata import float_metrics, markdown_table, png_image
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.datasets import build_training_set, dataset_fingerprint
from mlops_assets.ml.drift import build_reference_profile, build_score_profile
from mlops_assets.ml.evaluation import calibration_table, classification_metrics, decile_table
from mlops_assets.ml.model_charts import validation_curve_chart
from mlops_assets.ml.plots import lift_and_calibration_chart
from mlops_assets.ml.search import TUNED, SearchResult
from mlops_assets.ml.training import TrainedModel, TrainingParams, train_propensity_model
from mlops_assets.registry import record_search_trials
from mlops_assets.settings import code_version
from mlops_assets.use_cases import UseCase


def feature_importance(booster, top: int = 15) -> pd.DataFrame:
    importance = pd.DataFrame(
        {
            "feature": booster.feature_name(),
            "gain": booster.feature_importance(importance_type="gain"),
            "splits": booster.feature_importance(importance_type="split"),
        }
    )
    importance["gain_share"] = importance["gain"] / importance["gain"].sum()
    return importance.sort_values("gain", ascending=False).head(top)[["feature", "gain_share", "splits"]]


def trial_rows(result: SearchResult) -> pd.DataFrame:
    """The search's trials (`SearchResult.table`) as rows of `<use case>.model_search_trials`: the tuned
    parameters as one JSON column, plus the search's folds and sample size."""
    table = result.table()
    params = [json.dumps(row, sort_keys=True) for row in table[list(TUNED)].to_dict("records")]
    return table.drop(columns=list(TUNED)).assign(params=params, folds=result.folds, search_rows=result.search_rows)


def search_summary(result: SearchResult) -> dict:
    """The best trial and the search's budget use, for the model's lineage and metadata."""
    baseline = result.trials[0]
    return {
        "trials": len(result.trials),
        "stopped_by_time": result.stopped_by_time,
        "folds": result.folds,
        "search_rows": result.search_rows,
        "cv_metric": result.best.cv_metric,
        "best_trial": result.best.trial,
        "best_cv_mean": result.best.cv_mean,
        "best_cv_std": result.best.cv_std,
        "configured_params_cv_mean": baseline.cv_mean,
        "best_rounds": result.best.best_rounds,
        "best_params": {k: result.best.params[k] for k in TUNED},
        "seconds": sum(t.seconds for t in result.trials),
    }


def training_loads(connection, use_case_name: str, load_ids: pd.Series) -> pd.DataFrame:
    """The loads (source file, sha256, load time) the training set's customers came from, oldest first."""
    return connection.execute(
        f"""select load_id, source_file, sha256, loaded_at from {use_case_name}.raw_customer_loads
            where load_id in (select unnest(?)) order by loaded_at""",
        [sorted(load_ids.astype(str).unique())],
    ).fetchdf()


def training_lineage(
    trained: TrainedModel,
    splits: dict[str, pd.DataFrame],
    loads: pd.DataFrame,
    fingerprint: str,
    feature_mart_run_id: str | None,
    split_seed: int,
) -> dict:
    """What a model was trained on and how: the rows, the loads and files they came from, the search."""
    window = (
        f"{loads['loaded_at'].min():%Y-%m-%d %H:%M:%S} .. {loads['loaded_at'].max():%Y-%m-%d %H:%M:%S}"
        if len(loads)
        else "n/a"
    )
    return {
        "training_rows": sum(len(part) for part in splits.values()),
        "split_sizes": "/".join(str(len(splits[s])) for s in ("train", "validation", "test")),
        "training_set_fingerprint": fingerprint,
        "load_ids": loads["load_id"].tolist(),
        "source_files": loads["source_file"].tolist(),
        "source_sha256": loads["sha256"].tolist(),
        "training_window": window,
        "feature_mart_run_id": feature_mart_run_id,
        "scale_pos_weight": trained.scale_pos_weight,
        "split_seed": split_seed,
        "search": search_summary(trained.search),
        "refit_on_all_data": False,
    }


def model_metadata(
    artifact: ModelArtifact, trained: TrainedModel, test_labels, test_scores, params: TrainingParams
) -> dict:
    """The model's page in the UI: test metrics, deciles, lift and calibration, the validation curve,
    the search and the most important features."""
    deciles = decile_table(test_labels, test_scores)
    calibration = calibration_table(test_labels, test_scores)
    chart = lift_and_calibration_chart(deciles, calibration, f"{artifact.model_version}, test split")
    curve = validation_curve_chart(
        trained.search.best.curve,
        trained.validation_curve,
        trained.best_iteration,
        params.early_stopping_metric,
        f"{artifact.model_version}: {params.early_stopping_metric} per round",
    )
    return {
        **float_metrics(artifact.metrics, prefix="test_"),
        "best_iteration": trained.best_iteration,
        "training_set_fingerprint": artifact.training_set_fingerprint,
        "test_deciles": markdown_table(
            deciles[["decile", "customers", "buyers", "response_rate", "lift", "cumulative_capture"]]
        ),
        "lift_and_calibration": png_image(chart, "lift and calibration"),
        "validation_curve": png_image(curve, "validation curve per boosting round"),
        "calibration": dg.MetadataValue.json(trained.calibration),
        "search": dg.MetadataValue.json(artifact.lineage["search"]),
        "search_trials": markdown_table(trained.search.table()),
        "top_features": markdown_table(feature_importance(trained.booster)),
        "params": dg.MetadataValue.json(artifact.params),
    }


def _latest_run_id(context: dg.AssetExecutionContext, key: dg.AssetKey) -> str | None:
    event = context.instance.get_latest_materialization_event(key)
    return event.run_id if event else None


def build_training_assets(use_case: UseCase) -> list:
    name = use_case.name
    features_key = dg.AssetKey([name, use_case.feature_mart])
    training_set_key = dg.AssetKey([name, "training_set"])
    model_key = dg.AssetKey([name, "propensity_model"])
    feature_names = [f.name for f in use_case.features]
    # Sensitive attributes travel along (model inputs only if listed as features) for fairness.
    sensitive_only = [a for a in use_case.sensitive_attributes if a not in feature_names]
    target = use_case.target
    time_column = use_case.time.source_column
    TrainingConfig = config_from_model(f"{camel(name)}TrainingConfig", use_case.training)

    @dg.asset(
        key=training_set_key,
        ins={
            "customer_features": dg.AssetIn(
                key=features_key,
                metadata={
                    "columns": list(
                        dict.fromkeys(
                            [
                                "customer_id",
                                *feature_names,
                                *sensitive_only,
                                target,
                                "load_id",
                                time_column,
                                "loaded_at",
                            ]
                        )
                    ),
                    "order_by": "customer_id",
                },
            )
        },
        group_name="training",
        kinds={"pandas", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Snapshot of the labelled customers a model is trained on: features, target and the "
            "split (train/validation/test), stratified by target and period, deterministic per customer id "
            f"and seed ({use_case.split.seed}), and each customer's period ({use_case.time.order} order), "
            "which decides the out-of-time comparison of champion and challenger."
        ),
    )
    def training_set(
        context: dg.AssetExecutionContext, customer_features: pd.DataFrame, notifier: Notifier
    ) -> pd.DataFrame:
        trigger = trigger_of(context.run.tags)
        if trigger["trigger"] == "sensor":
            notifier.notify(context, name, "retrain_started", "retraining started", trigger, "info")
        window = use_case.monitoring.training_window
        frame = build_training_set(
            customer_features,
            ["customer_id", *feature_names, *sensitive_only, target, "load_id"],
            target,
            use_case.time,
            window,
            use_case.split.fractions,
            use_case.split.seed,
        )
        summary = (
            frame.groupby(["period", "split"])[target]
            .agg(customers="size", buyers="sum", buyer_rate="mean")
            .reset_index()
        )
        context.add_output_metadata(
            {
                "fingerprint": dataset_fingerprint(frame.drop(columns=["load_id"])),
                "unlabelled_customers_left_out": int(customer_features[target].isna().sum()),
                "outside_training_window": int(customer_features[target].notna().sum()) - len(frame),
                "split_summary": markdown_table(summary),
                "buyer_rate": float(frame[target].mean()),
                "training_window": window.model_dump_json(),
            }
        )
        return frame

    @dg.asset(
        key=model_key,
        ins={"training_set": dg.AssetIn(key=training_set_key)},
        io_manager_key="model_io_manager",
        group_name="training",
        kinds={"lightgbm", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "LightGBM binary propensity model: parameters and boosting rounds chosen by a cross-validated "
            "search on the training split (every trial in `model_search_trials`), scores calibrated on the "
            "validation split, stored in DuckDB as LightGBM text plus the calibration map under one sha256. "
            "Metrics are measured on the test split."
        ),
    )
    def propensity_model(
        context: dg.AssetExecutionContext,
        config: TrainingConfig,
        training_set: pd.DataFrame,
        warehouse: Warehouse,
    ) -> ModelArtifact:
        params = TrainingParams(**config.model_dump())
        splits = {split: part for split, part in training_set.groupby("split")}
        trained = train_propensity_model(splits["train"], splits["validation"], use_case.features, target, params)
        trained_at = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
        provisional = ModelArtifact.from_booster(
            trained.booster,
            calibration=trained.calibration,
            model_version="",
            use_case=name,
            target=target,
            features=use_case.features,
            # The parameters the model was trained with: the configuration with the search's best values.
            params=params.model_copy(update={k: trained.lgb_params[k] for k in TUNED}).model_dump(),
            metrics={},
            trained_at=trained_at,
            best_iteration=trained.best_iteration,
        )
        test = splits["test"]
        test_scores = provisional.predict(test)
        metrics = classification_metrics(test[target].to_numpy(), test_scores)
        fingerprint = dataset_fingerprint(training_set.drop(columns=["load_id"]))
        version = f"{name}-{trained_at:%Y%m%d-%H%M%S}-{provisional.sha256[:8]}"
        with warehouse.get_connection() as connection:
            record_search_trials(connection, name, version, context.run.run_id, trial_rows(trained.search))
            loads = training_loads(connection, name, training_set["load_id"])
        mart_run_id = _latest_run_id(context, features_key)
        lineage = training_lineage(trained, splits, loads, fingerprint, mart_run_id, use_case.split.seed)
        artifact = replace(
            provisional,
            model_version=version,
            metrics=metrics,
            training_set_fingerprint=fingerprint,
            lineage={
                "dagster_run_id": context.run.run_id,
                "code_version": code_version(),
                **trigger_of(context.run.tags),
                **lineage,
            },
            reference_profile={
                "features": build_reference_profile(training_set, use_case.features),
                # Out-of-sample scores of the test split: a random, stratified sample of the population.
                "scores": build_score_profile(test_scores),
            },
        )
        context.add_output_metadata(model_metadata(artifact, trained, test[target].to_numpy(), test_scores, params))
        return artifact

    @dg.asset_check(
        asset=model_key,
        description=(
            f"Test-split ROC AUC must reach the use case's floor ({use_case.thresholds.min_test_roc_auc}). "
            "Not blocking: model_validation applies the same floor on its decision set (the newest labelled "
            "period's test customers, else this test split) and records a model below it as rejected, with "
            "the reason; such a model never becomes champion."
        ),
    )
    def meets_quality_floor(propensity_model: ModelArtifact) -> dg.AssetCheckResult:
        floor = use_case.thresholds.min_test_roc_auc
        roc_auc = propensity_model.metrics["roc_auc"]
        return dg.AssetCheckResult(
            passed=roc_auc >= floor,
            description=f"test ROC AUC {roc_auc:.4f} against floor {floor}",
            metadata={
                "test_roc_auc": roc_auc,
                "floor": floor,
                "model_version": propensity_model.model_version,
            },
        )

    return [training_set, propensity_model, meets_quality_floor]
