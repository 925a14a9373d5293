"""Turning model scores into the table marketing reads."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from mlops_assets.ml.artifacts import ModelArtifact
from mlops_assets.ml.evaluation import decile_from_rank, rank_of


def score_customers(model: ModelArtifact, customers: pd.DataFrame, chunk_size: int = 250_000) -> np.ndarray:
    """Purchase probabilities of `customers` (raw feature columns) with a stored model.

    The one scoring function: verifies the artefact's checksum (model text and calibration), computes
    LightGBM's raw score in chunks and applies the model's calibration. Batch scoring, the published
    file, validation and drift all get their scores from here (or from `ModelArtifact.predict`, which
    this calls).
    """
    return model.predict(customers, chunk_size=chunk_size)


def score_table(
    customer_ids: pd.Series,
    scores: np.ndarray,
    model_version: str,
    scored_at: datetime,
    reasons: pd.DataFrame | None = None,
    k: int = 0,
) -> pd.DataFrame:
    """One row per customer, best first: score, rank (1 = most likely buyer), decile (1 = top 10%).

    With `k`, also reason_i (readable label), reason_i_feature, _value and _contribution for i = 1..k,
    taken from `reasons` (explain_top_share's, indexed like `customer_ids`) and empty for customers
    without reasons. The rows are put in rank order and the reasons placed by position: at 1M
    customers a `sort_values` plus a merge on customer id took 1.44 s, this 0.24 s.
    """
    scores = np.asarray(scores, dtype=np.float64)
    rank = rank_of(scores)  # ties broken by position
    order = np.empty_like(rank)  # the customer at each rank: rank_of inverted
    order[rank - 1] = np.arange(len(rank))
    ranks = np.arange(1, len(rank) + 1, dtype=np.int64)
    table = pd.DataFrame(
        {
            "customer_id": customer_ids.to_numpy()[order],
            "score": scores[order],
            "rank": ranks,
            "decile": decile_from_rank(ranks),
            "model_version": model_version,
            "scored_at": scored_at,
        }
    )
    if k < 1:
        return table
    reasons = pd.DataFrame() if reasons is None else reasons
    positions = customer_ids.index.get_indexer(reasons.index)
    if (positions < 0).any():
        raise ValueError("reasons for customers that were not scored")
    rows = rank[positions] - 1  # the table is in rank order
    for slot in range(1, k + 1):
        for part, source in (
            ("", "label"),
            ("_feature", "feature"),
            ("_value", "value"),
            ("_contribution", "contribution"),
        ):
            values = reasons.get(f"reason_{slot}_{source}")
            # The types the merge on customer id gave: floats stay float, the rest object, a missing column NaN.
            values = np.empty(0) if values is None else values.to_numpy()
            column = np.full(len(table), np.nan, dtype=np.float64 if values.dtype.kind == "f" else object)
            column[rows] = values
            table[f"reason_{slot}{part}"] = column
    return table


def customers_of_latest_load(features: pd.DataFrame) -> pd.DataFrame:
    """The customers whose latest record came with the most recent load: the batch to score now.

    After the first full export that is every customer; after a batch export, the batch.
    """
    if features.empty:
        return features
    latest = features["loaded_at"].max()
    return features[features["loaded_at"] == latest]
