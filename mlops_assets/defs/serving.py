"""The scoring service's side of the graph: models exported for it, and its traffic brought back.

- `serving_models`: after each publication, the champion and any model pending approval are exported
  to the published folder (LightGBM text + sha256, atomic renames; serving/artefacts.py), where the
  service picks them up within a second without opening the warehouse;
- `served_traffic`: the service's request log (JSON lines under `<home>/serving/requests/`) appended to
  `<use case>.served_requests` / `served_scores`, with the drift of the served records against the
  champion's training data, so monitoring covers real-time traffic as well as batches;
- `shadow_comparison`: champion against shadow (challenger / pending) scores on the same live requests.
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.defs.io_managers import Warehouse
from mlops_assets.defs.jobs import use_case_tags
from mlops_assets.defs.metadata import markdown_table
from mlops_assets.defs.readiness import ChampionGate, gated_schedule
from mlops_assets.defs.resources import WAREHOUSE_POOL, ScorePublisher
from mlops_assets.integrity import recorded_signature
from mlops_assets.ml.drift import compare_to_reference, summarize_drift
from mlops_assets.registry import current_champion, ensure_tables, load_artifact, record_alert
from mlops_assets.serving.artefacts import SHADOW_STATUSES, export_serving_models
from mlops_assets.serving.records import alerts_path, requests_dir
from mlops_assets.settings import Settings
from mlops_assets.use_cases import UseCase
from mlops_assets.warehouse import table_exists, transaction

MIN_DRIFT_RECORDS = 50

_TABLES = {
    "served_log_offsets": "log_file varchar primary key, ingested_bytes bigint, ingested_at timestamp",
    "served_requests": """logged_at timestamp, request_id varchar, endpoint varchar, status integer,
        latency_ms double, caller varchar, client varchar, customer_id varchar, model_version varchar,
        detail varchar""",
    "served_scores": """logged_at timestamp, request_id varchar, caller varchar, customer_id varchar,
        answered_by varchar, probability double, champion_version varchar, champion_probability double,
        shadows varchar, features varchar""",
}


def _ensure_serving_tables(connection, schema: str) -> None:
    ensure_tables(connection, schema)
    for table, columns in _TABLES.items():
        connection.execute(f"create table if not exists {schema}.{table} ({columns})")


def shadow_models(connection, schema: str) -> list[tuple]:
    """(version, status) of the models whose latest status is pending approval or candidate."""
    return connection.execute(
        f"""select model_version, status from (
                select model_version, status, event_seq,
                       row_number() over (partition by model_version order by event_seq desc) as latest
                from {schema}.model_status_events)
            where latest = 1 and status in ({", ".join("?" for _ in SHADOW_STATUSES)})
            order by event_seq""",
        list(SHADOW_STATUSES),
    ).fetchall()


def new_log_lines(connection, schema: str, path: Path) -> list[dict]:
    """Complete lines of `path` after the offset already ingested; the offset moves in the caller's
    transaction (a partly written last line waits for the next run)."""
    done = connection.execute(
        f"select ingested_bytes from {schema}.served_log_offsets where log_file = ?", [str(path)]
    ).fetchall()
    start = done[0][0] if done else 0
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    connection.execute(
        f"insert or replace into {schema}.served_log_offsets values (?, ?, ?)",
        [str(path), start + len(complete), datetime.now(UTC).replace(tzinfo=None)],
    )
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


def request_rows(entries: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per request, and one row per scored record (with champion and shadow scores)."""
    requests = pd.DataFrame(
        [
            {
                "logged_at": pd.Timestamp(e["logged_at"]).tz_convert(None),
                "request_id": e["request_id"],
                "endpoint": e["endpoint"],
                "status": e["status"],
                "latency_ms": e["latency_ms"],
                "caller": e.get("caller"),
                "client": e.get("client"),
                "customer_id": e.get("customer_id"),
                "model_version": e.get("model_version"),
                "detail": json.dumps({k: e[k] for k in ("outputs", "inputs") if k in e}, default=str),
            }
            for e in entries
        ],
        columns=[c.split()[0] for c in _TABLES["served_requests"].replace("\n", " ").split(", ")],
    )
    scores = pd.DataFrame(
        [
            {
                "logged_at": pd.Timestamp(e["logged_at"]).tz_convert(None),
                "request_id": e["request_id"],
                "caller": e.get("caller"),
                "customer_id": r["customer_id"],
                "answered_by": r["answered_by"],
                "probability": r["probability"],
                "champion_version": r["champion"]["model_version"],
                "champion_probability": r["champion"]["probability"],
                "shadows": json.dumps(r["shadows"]),
                "features": json.dumps(r["features"]),
            }
            for e in entries
            if e["endpoint"] == "score" and e["status"] == 200
            for r in e.get("records", [])
        ],
        columns=[c.split()[0] for c in _TABLES["served_scores"].replace("\n", " ").split(", ")],
    )
    return requests, scores


def shadow_table(scores: pd.DataFrame, top_decile_cutoff: float | None) -> pd.DataFrame:
    """Champion vs each shadow model on the same served records."""
    rows = []
    for record in scores.itertuples(index=False):
        for shadow in json.loads(record.shadows):
            rows.append(
                (record.champion_version, shadow["model_version"], record.champion_probability, shadow["probability"])
            )
    pairs = pd.DataFrame(rows, columns=["champion_version", "shadow_version", "champion", "shadow"])
    result = []
    for (champion, shadow), group in pairs.groupby(["champion_version", "shadow_version"], sort=False):
        difference = (group["shadow"] - group["champion"]).abs()
        same_call = (
            float(((group["champion"] >= top_decile_cutoff) == (group["shadow"] >= top_decile_cutoff)).mean())
            if top_decile_cutoff is not None
            else np.nan
        )
        result.append(
            {
                "champion_version": champion,
                "shadow_version": shadow,
                "records": len(group),
                "mean_champion": group["champion"].mean(),
                "mean_shadow": group["shadow"].mean(),
                "mean_abs_difference": difference.mean(),
                "p95_abs_difference": difference.quantile(0.95),
                "correlation": group["champion"].corr(group["shadow"]) if len(group) > 2 else np.nan,
                "same_top_decile_call": same_call,
            }
        )
    return pd.DataFrame(
        result,
        columns=[
            "champion_version",
            "shadow_version",
            "records",
            "mean_champion",
            "mean_shadow",
            "mean_abs_difference",
            "p95_abs_difference",
            "correlation",
            "same_top_decile_call",
        ],
    )


def build_serving_assets(use_case: UseCase, settings: Settings) -> list:
    name = use_case.name
    traffic_key = dg.AssetKey([name, "served_traffic"])

    @dg.asset(
        key=[name, "serving_models"],
        deps=[dg.AssetKey([name, "published_scores"])],
        group_name="serving",
        kinds={"lightgbm", "json"},
        pool=WAREHOUSE_POOL,
        description=(
            "The models the scoring service serves, exported next to the published scores "
            f"(`models/{name}/` of the published folder): the champion and every model pending approval "
            "(scored in shadow), LightGBM text + sha256, swapped atomically; the service verifies and "
            "hot-swaps them within a second, without opening the warehouse."
        ),
    )
    def serving_models(context: dg.AssetExecutionContext, warehouse: Warehouse, publisher: ScorePublisher):
        with warehouse.get_connection() as connection:
            champion_version = current_champion(connection, name)
            if champion_version is None:
                raise dg.Failure(f"{name}: no champion to export for the scoring service")
            champion = load_artifact(connection, name, champion_version)
            shadows = [(load_artifact(connection, name, v), s) for v, s in shadow_models(connection, name)]
            versions = [champion.model_version, *(artifact.model_version for artifact, _ in shadows)]
            signatures = {v: recorded_signature(connection, name, v) for v in versions}
        path = export_serving_models(
            Path(publisher.published_dir), name, champion, shadows, datetime.now(UTC), signatures, context.run.run_id
        )
        return dg.MaterializeResult(
            metadata={
                "champion_version": champion_version,
                "champion_sha256": champion.sha256,
                "shadow_versions": ", ".join(a.model_version for a, _ in shadows) or "none",
                "manifest": dg.MetadataValue.path(str(path)),
            }
        )

    @dg.asset(
        key=traffic_key,
        check_specs=[
            dg.AssetCheckSpec(
                "served_feature_drift",
                asset=traffic_key,
                description=(
                    f"At most {use_case.monitoring.max_drifted_features} feature(s) of the records scored by the "
                    "service drift from the champion's training data (same thresholds as the batch drift report); "
                    f"judged once {MIN_DRIFT_RECORDS}+ records were served."
                ),
            )
        ],
        group_name="serving",
        kinds={"duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Requests answered by the scoring service, appended from its request log to "
            f"`{name}.served_requests` (every request) and `{name}.served_scores` (every scored record, "
            "with the features, champion and shadow scores); drift of the served records against the "
            "champion's training data; the service's alerts (refused artefacts) copied into "
            f"`{name}.alerts`."
        ),
    )
    def served_traffic(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
        logs = sorted(requests_dir(settings.home, name).glob("*.jsonl"))
        with warehouse.get_connection() as connection:
            _ensure_serving_tables(connection, name)
            with transaction(connection):
                entries = [entry for path in logs for entry in new_log_lines(connection, name, path)]
                requests, scores = request_rows(entries)
                for table, frame in (("served_requests", requests), ("served_scores", scores)):
                    connection.register("_new_rows", frame)
                    connection.execute(f"insert into {name}.{table} by name select * from _new_rows")
                    connection.unregister("_new_rows")
                alerts = (
                    new_log_lines(connection, name, alerts_path(settings.home))
                    if alerts_path(settings.home).exists()
                    else []
                )
                for alert in (a for a in alerts if a["use_case"] == name):
                    record_alert(
                        connection, name, alert["kind"], alert["severity"], alert["message"], alert["details"], None
                    )
            summary = connection.execute(
                f"""select endpoint, status, count(*) as requests,
                           round(quantile_cont(latency_ms, 0.5), 2) as p50_ms,
                           round(quantile_cont(latency_ms, 0.99), 2) as p99_ms
                    from {name}.served_requests group by all order by endpoint, status"""
            ).fetchdf()
            champion_version = current_champion(connection, name)
            recent = connection.execute(
                f"select features from {name}.served_scores where champion_version = ?", [champion_version]
            ).fetchdf()
            profile = load_artifact(connection, name, champion_version).reference_profile if champion_version else {}
        metadata = {
            "new_requests": len(requests),
            "new_scored_records": len(scores),
            "requests_by_endpoint": markdown_table(summary),
            "alerts_copied": len(alerts),
        }
        if len(recent) >= MIN_DRIFT_RECORDS and profile.get("features"):
            served = pd.DataFrame([json.loads(f) for f in recent["features"]])
            report = compare_to_reference(profile["features"], served, use_case.monitoring.drift)
            drift = summarize_drift(report)
            metadata["served_records_for_drift"] = len(served)
            metadata["drifted_features"] = drift["drifted_count"]
            metadata["served_drift"] = markdown_table(
                report.sort_values("psi", ascending=False).head(10)[["feature", "psi", "ks_statistic", "drifted"]]
            )
            drifted = report[report["drifted"]]["feature"].tolist()
            check = dg.AssetCheckResult(
                check_name="served_feature_drift",
                passed=len(drifted) <= use_case.monitoring.max_drifted_features,
                description=f"{len(drifted)} drifted feature(s) in {len(served)} served records"
                + (f": {', '.join(drifted[:5])}" if drifted else ""),
                metadata={"drifted_features": len(drifted), "served_records": len(served)},
            )
        else:
            metadata["served_drift"] = dg.MetadataValue.md(
                f"{len(recent)} served records scored by the champion; drift needs at least {MIN_DRIFT_RECORDS}."
            )
            check = dg.AssetCheckResult(
                check_name="served_feature_drift",
                passed=True,
                description=f"not judged: {len(recent)} served records, fewer than {MIN_DRIFT_RECORDS}",
            )
        return dg.MaterializeResult(metadata=metadata, check_results=[check])

    @dg.asset(
        key=[name, "shadow_comparison"],
        deps=[traffic_key],
        group_name="serving",
        kinds={"pandas", "duckdb"},
        pool=WAREHOUSE_POOL,
        description=(
            "Champion against shadow models on live traffic: per pair of versions, records, mean scores, "
            "absolute differences, correlation, and how often both put a customer on the same side of the "
            "published top-decile cut-off (would both contact them?)."
        ),
    )
    def shadow_comparison(context: dg.AssetExecutionContext, warehouse: Warehouse) -> pd.DataFrame:
        with warehouse.get_connection() as connection:
            _ensure_serving_tables(connection, name)
            scores = connection.execute(
                f"select champion_version, champion_probability, shadows from {name}.served_scores "
                "where shadows <> '[]'"
            ).fetchdf()
            cutoff = (
                connection.execute(f"select min(score) from {name}.customer_scores where decile = 1").fetchall()[0][0]
                if table_exists(connection, name, "customer_scores")
                else None
            )
        table = shadow_table(scores, cutoff)
        context.add_output_metadata(
            {
                "compared_records": int(table["records"].sum()) if len(table) else 0,
                "top_decile_cutoff": float(cutoff) if cutoff is not None else float("nan"),
                "comparison": markdown_table(table) if len(table) else dg.MetadataValue.md("No shadow scores yet."),
            }
        )
        return table

    return [serving_models, served_traffic, shadow_comparison]


def build_serving_jobs(use_case: UseCase, gate: ChampionGate) -> tuple[list, list]:
    """A job that brings the served traffic in (hourly schedule), and its schedule."""
    job = dg.define_asset_job(
        f"{use_case.name}_served_traffic",
        tags=use_case_tags(use_case),
        selection=dg.AssetSelection.assets(
            dg.AssetKey([use_case.name, "served_traffic"]), dg.AssetKey([use_case.name, "shadow_comparison"])
        ),
        description=f"{use_case.title}: load the scoring service's request log, served drift, shadow comparison.",
    )
    schedule = gated_schedule(
        gate,
        name=f"{use_case.name}_hourly_served_traffic",
        job=job,
        cron_schedule="15 * * * *",
        description="Brings the scoring service's requests into the warehouse every hour.",
    )
    return [job], [schedule]
