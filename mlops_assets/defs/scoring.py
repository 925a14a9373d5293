"""Scoring every customer with the model and publishing the scores for marketing."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd

from mlops_assets.defs.io_managers import Warehouse, table_metadata
from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.resources import WAREHOUSE_POOL, Notifier, ScorePublisher
from mlops_assets.integrity import ArtifactTamperedError, verify_model
from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.explanations import explain_top_share
from mlops_assets.ml.scoring import customers_of_latest_load, score_customers, score_table
from mlops_assets.publishing import drop_unpublished_history
from mlops_assets.read_only import read_copy_path, write_read_copy
from mlops_assets.registry import create_audit_view, ensure_tables
from mlops_assets.use_cases import UseCase
from mlops_assets.warehouse import transaction

MARKETING_QUERY = (
    "SELECT customer_id, score, rank, decile, model_version FROM customer_scores WHERE decile = 1 ORDER BY rank"
)


def _history_select(k: int, scores_table: str) -> str:
    """The score-history row of each published score; reasons as one JSON list (null if not explained)."""
    reasons = ", ".join(
        f"{{'feature': reason_{i}_feature, 'label': reason_{i}, 'value': reason_{i}_value, "
        f"'contribution': reason_{i}_contribution}}"
        for i in range(1, k + 1)
    )
    return f"""
        select cast(? as varchar) as publication_id, cast(? as timestamp) as published_at, customer_id, score,
               rank, decile,
               model_version, scored_at,
               case when reason_1_feature is null then null
                    else cast(to_json(list_filter([{reasons}], lambda r: r.feature is not null)) as varchar)
               end as reasons
        from {scores_table}"""


def refresh_read_copy(context, use_case_name: str, warehouse: Warehouse, publisher: ScorePublisher) -> str:
    """After a publication: the registry's read copy for `mlops models/model-card/audit` while runs
    hold the warehouse (read_only.py). The scores are already published, so a failure here does not
    fail the run: it is logged, and the read commands keep the previous copy (they say how old it is)."""
    try:
        with warehouse.get_connection() as connection:
            path = write_read_copy(connection, use_case_name, read_copy_path(publisher.published_dir, use_case_name))
    except (duckdb.Error, OSError) as error:
        context.log.warning(f"the registry's read copy was not refreshed (the previous one stays): {error}")
        return f"not refreshed: {error}"
    return str(path)


def verify_before_scoring(context, use_case_name: str, model: ModelArtifact, warehouse: Warehouse, notifier) -> None:
    """Refuse a champion whose artefact no longer matches its signature (see mlops_assets/integrity.py)."""
    with warehouse.get_connection() as connection:
        try:
            verify_model(
                connection,
                use_case_name,
                model.model_version,
                model.model_text,
                warehouse.signing_key(),
                calibration=model.calibration,
            )
        except ArtifactTamperedError as error:
            notifier.notify(
                context,
                use_case_name,
                "integrity",
                str(error),
                {"model_version": model.model_version},
                "error",
                connection=connection,
            )
            raise dg.Failure(description=str(error)) from error


def publish_scores(
    connection: duckdb.DuckDBPyConnection, use_case: UseCase, publisher: ScorePublisher, run_id: str, scores_table: str
) -> tuple[Path, dict]:
    """Publish `scores_table` (the warehouse's score table) as the use case's published file, with its
    `publication` row, and record it in the score history. Returns the file and the publication row.

    The score history (what auditors query) commits before the new file is swapped in, so readers never
    see a publication the history lacks; a failed swap takes its history rows back out, and history
    rows a killed writer left behind are dropped first (drop_unpublished_history).
    """
    name = use_case.name
    customers, model_version, scored_at = connection.execute(
        f"select count(*), min(model_version), min(scored_at) from {scores_table}"
    ).fetchone()
    publication = {
        "use_case": name,
        "model_version": model_version,
        "scored_at": scored_at,
        "published_at": datetime.now(UTC).replace(tzinfo=None, microsecond=0),
        "customers": customers,
        "dagster_run_id": run_id,
    }
    ensure_tables(connection, name)
    drop_unpublished_history(connection, name, publisher.path_for(name))
    tables = {"customer_scores": f"select * from {scores_table}", "publication": pd.DataFrame([publication])}
    prepared = publisher.prepare(name, tables, connection)
    try:
        history = _history_select(use_case.scoring.reasons_per_customer, scores_table)
        with transaction(connection):
            connection.execute(f"create table if not exists {name}.score_history as {history} limit 0", [None, None])
            connection.execute(
                f"insert into {name}.score_history by name {history}", [run_id, publication["published_at"]]
            )
            create_audit_view(connection, name)
        try:
            path = prepared.swap()
        except BaseException:
            connection.execute(f"delete from {name}.score_history where publication_id = ?", [run_id])
            raise
    finally:
        prepared.discard()
    return path, publication


def build_scoring_assets(use_case: UseCase) -> list:
    name = use_case.name
    features_key = dg.AssetKey([name, use_case.feature_mart])
    scores_key = dg.AssetKey([name, "customer_scores"])
    # Scoring needs the ids, the model inputs and the load time, not the whole mart.
    scoring_columns = ["customer_id", *(f.name for f in use_case.features), "loaded_at"]

    @dg.asset(
        key=scores_key,
        ins={
            # In customer order: ranks of equal scores are broken by row position, and the mart's stored
            # order differs from run to run (573 of caravan's 5,822 ranks did between two runs).
            "customer_features": dg.AssetIn(
                key=features_key, metadata={"columns": scoring_columns, "order_by": "customer_id"}
            ),
            "champion_model": dg.AssetIn(key=[name, "champion_model"]),
        },
        group_name="scoring",
        kinds={"lightgbm", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "One row per customer of the latest load, scored by the champion model: purchase probability (score), rank "
            "(1 = most likely buyer), decile (1 = top 10%), model version, scoring time, and for the "
            f"top {use_case.scoring.explain_top_share:.0%} the {use_case.scoring.reasons_per_customer} "
            "main reasons (LightGBM SHAP contributions, readable names). Checked before publication."
        ),
    )
    def customer_scores(
        context: dg.AssetExecutionContext,
        customer_features: pd.DataFrame,
        champion_model: ModelArtifact,
        warehouse: Warehouse,
        notifier: Notifier,
    ) -> pd.DataFrame:
        verify_before_scoring(context, name, champion_model, warehouse, notifier)
        customer_features = customers_of_latest_load(customer_features)
        # The champion, not necessarily the newest model; loading verifies the artefact's checksum.
        booster = champion_model.load_booster()
        scores = score_customers(champion_model, customer_features, chunk_size=use_case.scoring.chunk_size)
        k = use_case.scoring.reasons_per_customer
        if use_case.scoring.explain_top_share > 0:
            explained = explain_top_share(
                booster,
                customer_features,
                champion_model.features,
                scores,
                use_case.readable_names(),
                top_share=use_case.scoring.explain_top_share,
                k=k,
            )
            reasons, explained_count = explained.reasons, explained.explained
        else:
            reasons, explained_count = pd.DataFrame(), 0
        table = score_table(
            customer_features["customer_id"],
            scores,
            champion_model.model_version,
            datetime.now(UTC).replace(tzinfo=None, microsecond=0),
            reasons,
            k,
        )
        per_decile = (
            table.groupby("decile")["score"].agg(customers="size", min_score="min", max_score="max").reset_index()
        )
        context.add_output_metadata(
            {
                "model_version": champion_model.model_version,
                "model_sha256": champion_model.sha256,
                "mean_score": float(table["score"].mean()),
                "explained_customers": explained_count,
                "explanation_coverage": explained_count / max(len(table), 1),
                "score_deciles": markdown_table(per_decile),
            }
        )
        return table

    @dg.asset_check(
        asset=scores_key,
        additional_deps=[features_key],
        blocking=True,
        description=(
            "Every customer of the latest load scored exactly once, nobody else, by one model; gates publication."
        ),
    )
    def scores_are_complete(warehouse: Warehouse) -> dg.AssetCheckResult:
        mart = f"{name}.{use_case.feature_mart}"
        with warehouse.get_connection() as connection:
            # Set comparisons in DuckDB: a million ids never have to come into Python.
            duplicated, missing, unknown, versions, scored, expected, example_missing = connection.execute(
                f"""
                with expected as (
                    select customer_id from {mart} where loaded_at = (select max(loaded_at) from {mart})
                ),
                scores as (select customer_id, model_version from {name}.customer_scores)
                select
                    (select count(*) - count(distinct customer_id) from scores),
                    (select count(*) from expected anti join scores using (customer_id)),
                    (select count(*) from scores anti join expected using (customer_id)),
                    (select count(distinct model_version) from scores),
                    (select count(*) from scores),
                    (select count(*) from expected),
                    (select list(customer_id order by customer_id)[1:5]
                     from (select customer_id from expected anti join scores using (customer_id)))
                """
            ).fetchall()[0]
        problems = []
        if duplicated:
            problems.append(f"{duplicated} customers scored more than once")
        if missing:
            problems.append(f"{missing} customers of the latest load not scored, e.g. {example_missing}")
        if unknown:
            problems.append(f"{unknown} scored ids are not customers of the latest load")
        if versions != 1:
            problems.append(f"scores from {versions} model versions, expected one")
        return dg.AssetCheckResult(
            passed=not problems,
            description="; ".join(problems) or "complete",
            metadata={"scored_customers": scored, "customers_of_latest_load": expected},
        )

    @dg.asset(
        key=[name, "published_scores"],
        # Not an input: the scores are copied from the warehouse's table by DuckDB, file to file, never
        # through pandas (at 1M scores 0.5 s against 1.9 s). Blocking checks on customer_scores still
        # stop this step.
        deps=[scores_key],
        # Marketing expects fresh scores every day: the UI flags the asset when the last publication is
        # older than this (evaluated by Dagster's freshness daemon).
        freshness_policy=dg.FreshnessPolicy.time_window(
            fail_window=timedelta(hours=use_case.monitoring.published_scores_max_age_hours)
        ),
        group_name="scoring",
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            f"The score table marketing reads: `customer_scores` in the DuckDB file `{name}.duckdb` of the "
            "published folder, replaced atomically on each publication, so readers never meet a lock "
            "or a half-written table. Its `publication` table says which model produced the scores."
        ),
    )
    def published_scores(
        context: dg.AssetExecutionContext, publisher: ScorePublisher, warehouse: Warehouse
    ) -> dg.MaterializeResult:
        with warehouse.get_connection() as connection:
            path, publication = publish_scores(
                connection, use_case, publisher, context.run.run_id, scores_table=f"{name}.customer_scores"
            )
            schema = table_metadata(connection, f"{name}.customer_scores", publication["customers"])
            top = connection.execute(
                f"select customer_id, score, rank, decile from {name}.customer_scores order by rank limit 10"
            ).fetchdf()
        read_copy = refresh_read_copy(context, name, warehouse, publisher)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": schema["dagster/row_count"],
                "dagster/column_schema": schema["dagster/column_schema"],
                "path": dg.MetadataValue.path(str(path)),
                "registry_read_copy": read_copy,
                "model_version": publication["model_version"],
                "query": dg.MetadataValue.md(f'```\nduckdb -readonly {path} "{MARKETING_QUERY}"\n```'),
                "top_customers": markdown_table(top),
            }
        )

    return [customer_scores, scores_are_complete, published_scores]
