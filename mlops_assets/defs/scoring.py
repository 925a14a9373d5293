"""Scoring every customer with the model and publishing the scores for marketing."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import WAREHOUSE_POOL, ScorePublisher
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.scoring import score_table, score_table_problems
from mlops_assets.use_cases import UseCase

MARKETING_QUERY = (
    "SELECT customer_id, score, rank, decile, model_version "
    "FROM customer_scores WHERE decile = 1 ORDER BY rank"
)


def build_scoring_assets(use_case: UseCase) -> list:
    name = use_case.name
    features_key = dg.AssetKey([name, use_case.feature_mart])
    scores_key = dg.AssetKey([name, "customer_scores"])

    @dg.asset(
        key=scores_key,
        ins={
            "customer_features": dg.AssetIn(key=features_key),
            "propensity_model": dg.AssetIn(key=[name, "propensity_model"]),
        },
        group_name="scoring",
        kinds={"lightgbm", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "One row per customer: purchase probability (score), rank (1 = most likely buyer), "
            "decile (1 = top 10%), model version and scoring time. Checked before publication."
        ),
    )
    def customer_scores(
        context: dg.AssetExecutionContext,
        customer_features: pd.DataFrame,
        propensity_model: ModelArtifact,
    ) -> pd.DataFrame:
        scores = propensity_model.predict(customer_features, chunk_size=use_case.scoring.chunk_size)
        table = score_table(
            customer_features["customer_id"],
            scores,
            propensity_model.model_version,
            datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        )
        per_decile = (
            table.groupby("decile")["score"]
            .agg(customers="size", min_score="min", max_score="max")
            .reset_index()
        )
        context.add_output_metadata(
            {
                "model_version": propensity_model.model_version,
                "model_sha256": propensity_model.sha256,
                "mean_score": float(table["score"].mean()),
                "score_deciles": markdown_table(per_decile),
            }
        )
        return table

    @dg.asset_check(
        asset=scores_key,
        additional_ins={"customer_features": dg.AssetIn(key=features_key)},
        blocking=True,
        description=(
            "Every customer scored exactly once by one model, every score in [0, 1]; gates publication."
        ),
    )
    def scores_are_complete(
        customer_scores: pd.DataFrame, customer_features: pd.DataFrame
    ) -> dg.AssetCheckResult:
        problems = score_table_problems(customer_scores, customer_features["customer_id"])
        return dg.AssetCheckResult(
            passed=not problems,
            description="; ".join(problems) or "complete",
            metadata={"scored_customers": len(customer_scores), "customers": len(customer_features)},
        )

    @dg.asset(
        key=[name, "published_scores"],
        ins={"customer_scores": dg.AssetIn(key=scores_key)},
        group_name="scoring",
        kinds={"duckdb"},
        description=(
            f"The score table marketing reads: `customer_scores` in the DuckDB file `{name}.duckdb` of the "
            "published folder, replaced atomically on each publication, so readers never meet a lock "
            "or a half-written table. Its `publication` table says which model produced the scores."
        ),
    )
    def published_scores(
        context: dg.AssetExecutionContext, customer_scores: pd.DataFrame, publisher: ScorePublisher
    ) -> dg.MaterializeResult:
        model_version = customer_scores["model_version"].iloc[0]
        publication = pd.DataFrame(
            [
                {
                    "use_case": name,
                    "model_version": model_version,
                    "scored_at": customer_scores["scored_at"].iloc[0],
                    "published_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
                    "customers": len(customer_scores),
                    "dagster_run_id": context.run.run_id,
                }
            ]
        )
        path = publisher.publish(name, {"customer_scores": customer_scores, "publication": publication})
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "model_version": model_version,
                "dagster/row_count": len(customer_scores),
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn(name=str(name), type=str(dtype))
                        for name, dtype in customer_scores.dtypes.items()
                    ]
                ),
                "query": dg.MetadataValue.md(f'```\nduckdb -readonly {path} "{MARKETING_QUERY}"\n```'),
                "top_customers": markdown_table(
                    customer_scores.head(10)[["customer_id", "score", "rank", "decile"]]
                ),
            }
        )

    return [customer_scores, scores_are_complete, published_scores]
