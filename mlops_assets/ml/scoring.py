"""Turning model scores into the table marketing reads."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_assets.ml.evaluation import decile_of_rank


def score_table(customer_ids: pd.Series, scores: np.ndarray, model_version: str, scored_at: datetime) -> pd.DataFrame:
    """One row per customer: score, rank (1 = most likely buyer), decile (1 = top 10%)."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    return pd.DataFrame(
        {
            "customer_id": customer_ids.to_numpy(),
            "score": scores,
            "rank": rank,
            "decile": decile_of_rank(scores),
            "model_version": model_version,
            "scored_at": scored_at,
        }
    ).sort_values("rank", ignore_index=True)


def score_table_problems(scores: pd.DataFrame, expected_customer_ids: pd.Series) -> list[str]:
    """What is wrong with a score table: missing, unknown or repeated customers, bad scores."""
    problems = []
    duplicated = scores["customer_id"][scores["customer_id"].duplicated()]
    if len(duplicated):
        problems.append(f"{len(duplicated)} customers scored more than once, e.g. {list(duplicated[:5])}")
    missing = set(expected_customer_ids) - set(scores["customer_id"])
    if missing:
        problems.append(f"{len(missing)} customers not scored, e.g. {sorted(missing)[:5]}")
    unknown = set(scores["customer_id"]) - set(expected_customer_ids)
    if unknown:
        problems.append(f"{len(unknown)} scored ids are not customers, e.g. {sorted(unknown)[:5]}")
    bad = scores[~scores["score"].between(0.0, 1.0)]
    if len(bad):
        problems.append(f"{len(bad)} scores outside [0, 1] or missing, e.g. {list(bad['customer_id'][:5])}")
    if scores["model_version"].nunique() != 1:
        problems.append(f"scores from {scores['model_version'].nunique()} model versions, expected one")
    return problems


def reason_table(customer_ids: pd.Series, reasons: pd.DataFrame, k: int) -> pd.DataFrame:
    """Reasons keyed by customer: reason_i (readable label), reason_i_feature, _value, _contribution."""
    columns = {}
    for slot in range(1, k + 1):
        columns[f"reason_{slot}_label"] = f"reason_{slot}"
    table = reasons.rename(columns=columns)
    ordered = [
        column
        for slot in range(1, k + 1)
        for column in (
            f"reason_{slot}",
            f"reason_{slot}_feature",
            f"reason_{slot}_value",
            f"reason_{slot}_contribution",
        )
    ]
    table = table.reindex(columns=ordered)
    table.insert(0, "customer_id", customer_ids.loc[reasons.index].to_numpy() if len(reasons) else [])
    return table.reset_index(drop=True)


def customers_of_latest_load(features: pd.DataFrame) -> pd.DataFrame:
    """The customers whose latest record came with the most recent load: the batch to score now.

    After the first full export that is every customer; after a batch export, the batch.
    """
    if features.empty:
        return features
    latest = features["loaded_at"].max()
    return features[features["loaded_at"] == latest]
