import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.datasets import assign_splits, dataset_fingerprint


def _customers(n=1000, buyers=60):
    ids = pd.Series([f"C{i:05d}" for i in range(n)])
    labels = pd.Series(np.r_[np.ones(buyers, int), np.zeros(n - buyers, int)])
    return ids, labels


def test_splits_are_stratified_with_exact_shares():
    ids, labels = _customers()
    split = assign_splits(ids, labels, (0.6, 0.2, 0.2), seed=7)
    counts = pd.crosstab(split, labels)
    assert counts.loc["train", 1] == 36 and counts.loc["validation", 1] == 12 and counts.loc["test", 1] == 12
    assert counts.loc["train", 0] == 564 and counts.loc["validation", 0] == 188 and counts.loc["test", 0] == 188


def test_splits_depend_on_ids_and_seed_not_on_row_order():
    ids, labels = _customers()
    split = assign_splits(ids, labels, seed=7)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    split_shuffled = assign_splits(ids.iloc[shuffled], labels.iloc[shuffled], seed=7)
    assert (split_shuffled.sort_index() == split).all()
    other_seed = assign_splits(ids, labels, seed=8)
    assert (other_seed != split).mean() > 0.3


def test_splits_reject_bad_input():
    ids, labels = _customers(10, 2)
    with pytest.raises(ValueError, match="sum to 1"):
        assign_splits(ids, labels, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="unique"):
        assign_splits(pd.Series(["a", "a"]), pd.Series([0, 1]))


def test_fingerprint_changes_with_any_cell_and_with_column_names():
    frame = pd.DataFrame({"customer_id": ["a", "b"], "x": [1.0, 2.0]})
    base = dataset_fingerprint(frame)
    assert base == dataset_fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[1, "x"] = 2.5
    assert dataset_fingerprint(changed) != base
    assert dataset_fingerprint(frame.rename(columns={"x": "y"})) != base
