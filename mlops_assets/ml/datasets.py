"""Training data: deterministic stratified splits and content fingerprints."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")


def assign_splits(
    customer_ids: pd.Series,
    labels: pd.Series,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 42,
) -> pd.Series:
    """Assign each customer to train, validation or test.

    Within each label class customers are ordered by a seeded hash of their id and cut at the
    cumulative fractions, so every split gets its share of buyers (stratified), and the result
    depends only on the ids, labels and seed, never on row order.
    """
    if len(customer_ids) != len(labels):
        raise ValueError("customer_ids and labels must have the same length")
    if not np.isclose(sum(fractions), 1.0) or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    if customer_ids.duplicated().any():
        raise ValueError("customer ids must be unique to assign a split")

    hash_key = f"{seed:016d}"[-16:]
    order_key = pd.util.hash_pandas_object(
        customer_ids.astype(str).reset_index(drop=True), index=False, hash_key=hash_key
    )
    frame = pd.DataFrame({"label": labels.to_numpy(), "order_key": order_key.to_numpy()})
    position = frame.groupby("label")["order_key"].rank(method="first") - 1
    class_size = frame.groupby("label")["label"].transform("size")
    quantile = (position / class_size).to_numpy()

    train_end, validation_end = fractions[0], fractions[0] + fractions[1]
    split = np.where(quantile < train_end, "train", np.where(quantile < validation_end, "validation", "test"))
    return pd.Series(split, index=customer_ids.index, name="split")


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a table's column names and cell values: equal fingerprints mean equal data."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, frame.columns)).encode("utf-8"))
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()
