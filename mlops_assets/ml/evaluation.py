"""Model quality measures marketing cares about: ranking quality and lift in the contacted top share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops_assets.ml.calibration import calibration_metrics


def rank_of(scores: np.ndarray) -> np.ndarray:
    """1 for the highest score; ties are broken by position, so ranks are unique."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(len(scores), dtype=np.int64)
    rank[order] = np.arange(1, len(scores) + 1)
    return rank


def decile_from_rank(rank: np.ndarray) -> np.ndarray:
    return np.ceil(rank * 10 / max(len(rank), 1)).astype(np.int64)


def decile_of_rank(scores: np.ndarray) -> np.ndarray:
    """Decile 1 holds the highest scores; ties are broken by position so deciles have equal sizes."""
    return decile_from_rank(rank_of(scores))


def decile_table(y_true: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    """Per score decile: customers, buyers, response rate, lift over the base rate, cumulative capture."""
    y_true = np.asarray(y_true, dtype=float)
    frame = pd.DataFrame({"decile": decile_of_rank(scores), "buyer": y_true, "score": scores})
    table = frame.groupby("decile").agg(
        customers=("buyer", "size"),
        buyers=("buyer", "sum"),
        min_score=("score", "min"),
        max_score=("score", "max"),
    )
    base_rate = y_true.mean() if len(y_true) else np.nan
    table["response_rate"] = table["buyers"] / table["customers"]
    table["lift"] = table["response_rate"] / base_rate if base_rate > 0 else np.nan
    total_buyers = table["buyers"].sum()
    table["cumulative_capture"] = table["buyers"].cumsum() / total_buyers if total_buyers > 0 else np.nan
    return table.reset_index()


def classification_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Ranking (ROC AUC, PR AUC, lift and capture in the top decile, capture in the top 20%) and
    calibration (Brier score against the base rate's, ECE, mean score against the realized rate)."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # on use (see ml/training.py)

    y_true = np.asarray(y_true, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if len(np.unique(y_true)) < 2:
        raise ValueError("metrics need both buyers and non-buyers in the evaluation data")
    rank = rank_of(scores)
    top = decile_from_rank(rank) == 1
    top_fifth = rank <= len(rank) // 5
    base_rate = float(y_true.mean())
    top_rate = float(y_true[top].mean())
    return {
        "roc_auc": float(roc_auc_score(y_true, scores)),
        "pr_auc": float(average_precision_score(y_true, scores)),
        "top_decile_lift": top_rate / base_rate,
        "top_decile_capture_rate": float(y_true[top].sum() / y_true.sum()),
        "top_20pct_capture_rate": float(y_true[top_fifth].sum() / y_true.sum()),
        **calibration_metrics(y_true, scores),
        "base_rate": base_rate,
        "customers": float(len(y_true)),
        "buyers": float(y_true.sum()),
    }


def calibration_table(y_true: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Mean predicted score against observed buyer rate, in bins of equal customer count."""
    frame = pd.DataFrame({"score": np.asarray(scores, float), "buyer": np.asarray(y_true, float)})
    frame["bin"] = pd.qcut(frame["score"].rank(method="first"), q=bins, labels=False) + 1
    return (
        frame.groupby("bin")
        .agg(customers=("buyer", "size"), mean_score=("score", "mean"), observed_rate=("buyer", "mean"))
        .reset_index()
    )


def realized_performance(scored: pd.DataFrame, group_column: str, min_outcomes: int) -> pd.DataFrame:
    """Per group (e.g. publication): customers with an outcome, buyers, ROC AUC and top-decile lift of
    the published scores. Metrics are NaN for groups with fewer than `min_outcomes` or a single class.

    `scored` holds one row per published score with a known outcome: group, score, outcome (0/1).
    """
    rows = []
    for group, part in scored.groupby(group_column, sort=False):
        row = {group_column: group, "customers_with_outcome": len(part), "buyers": int(part["outcome"].sum())}
        if len(part) >= min_outcomes and part["outcome"].nunique() == 2:
            metrics = classification_metrics(part["outcome"].to_numpy(), part["score"].to_numpy())
            row.update(roc_auc=metrics["roc_auc"], top_decile_lift=metrics["top_decile_lift"])
        else:
            row.update(roc_auc=np.nan, top_decile_lift=np.nan)
        rows.append(row)
    columns = [group_column, "customers_with_outcome", "buyers", "roc_auc", "top_decile_lift"]
    return pd.DataFrame(rows, columns=columns)
