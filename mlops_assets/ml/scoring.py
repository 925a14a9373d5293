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


def score_table(customer_ids: pd.Series, scores: np.ndarray, model_version: str, scored_at: datetime) -> pd.DataFrame:
    """One row per customer: score, rank (1 = most likely buyer), decile (1 = top 10%)."""
    scores = np.asarray(scores, dtype=np.float64)
    rank = rank_of(scores)
    return pd.DataFrame(
        {
            "customer_id": customer_ids.to_numpy(),
            "score": scores,
            "rank": rank,
            "decile": decile_from_rank(rank),
            "model_version": model_version,
            "scored_at": scored_at,
        }
    ).sort_values("rank", ignore_index=True)


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
