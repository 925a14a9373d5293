import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.datasets import (
    TimeSpec,
    assign_splits,
    build_training_set,
    dataset_fingerprint,
    out_of_time_customers,
    period_labels,
)
from mlops_assets.ml.windows import TrainingWindow


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


def _history(periods: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """customers per period: (customers, buyers)."""
    parts = []
    for period, (customers, buyers) in periods.items():
        labels = [1] * buyers + [0] * (customers - buyers)
        ids = [f"{period}-{i}" for i in range(customers)]
        parts.append(pd.DataFrame({"customer_id": ids, "bought": labels, "period": period}))
    frame = pd.concat(parts, ignore_index=True)
    frame["split"] = assign_splits(frame["customer_id"], frame["bought"], periods=frame["period"])
    return frame


def test_out_of_time_customers_are_the_newest_periods_test_customers():
    frame = _history({"2026-01": (3000, 200), "2026-02": (1500, 150), "2026-03": (1500, 150)})
    mask, description = out_of_time_customers(frame, "bought", TimeSpec())
    assert set(frame.loc[mask, "period"]) == {"2026-03"} and set(frame.loc[mask, "split"]) == {"test"}
    assert mask.sum() == 300 and "newest period(s) 2026-03 (300 customers, 30 buyers)" in description
    mask, _ = out_of_time_customers(frame, "bought", TimeSpec(evaluation_periods=2))
    assert set(frame.loc[mask, "period"]) == {"2026-02", "2026-03"}


def test_out_of_time_falls_back_with_the_reason_when_there_is_no_usable_newest_period():
    single = _history({"2026-01": (3000, 200)})
    assert out_of_time_customers(single, "bought", TimeSpec()) == (None, "a single period of labelled data (2026-01)")
    small = _history({"2026-01": (3000, 200), "2026-02": (500, 40)})
    mask, reason = out_of_time_customers(small, "bought", TimeSpec())
    assert mask is None and "hold only 100 test customers with 8 buyers (need 200 and 20)" in reason


def test_periods_from_loads_dates_and_batch_numbers_sort_in_time_order():
    loads = pd.Series(pd.to_datetime(["2026-11-26 09:00:01", "2026-11-25 23:59:59"]))
    assert list(period_labels(loads, TimeSpec())) == ["2026-11-26 09:00:01.000000", "2026-11-25 23:59:59.000000"]
    monthly = TimeSpec(order="column", column="call_date", granularity="month")
    assert list(period_labels(pd.Series(["2026-01-31", "2026-02-01"]), monthly)) == ["2026-01", "2026-02"]
    batches = period_labels(pd.Series([9, 10]), TimeSpec(order="column", column="batch"))
    assert sorted(batches) == list(batches)
    with pytest.raises(ValueError, match="time.column"):
        TimeSpec(order="column")


def test_the_training_set_is_the_labelled_customers_in_id_order_with_period_and_split():
    rng = np.random.default_rng(3)
    loads = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"])
    mart = pd.DataFrame(
        {
            "customer_id": [f"C{i:04d}" for i in range(900)],
            "x": rng.normal(size=900),
            "bought": np.r_[np.tile([1, 0, 0, 0, 0], 170), [np.nan] * 50],
            "loaded_at": np.repeat(loads, 300),
        }
    ).sample(frac=1, random_state=0)  # in no order
    columns = ["customer_id", "x", "bought"]
    common = dict(target="bought", time=TimeSpec(), fractions=(0.6, 0.2, 0.2), seed=42)
    frame = build_training_set(mart, columns, window=TrainingWindow(), **common)
    assert len(frame) == 850  # the 50 without a known outcome are left out
    assert frame["customer_id"].is_monotonic_increasing and list(frame.index) == list(range(850))
    assert list(frame.columns) == [*columns, "period", "split"]  # the time column is not kept
    assert frame["bought"].dtype == "int64" and frame["period"].nunique() == 3
    by_split = frame.groupby("split")["bought"].agg(["size", "sum"])
    assert by_split.loc["train", "size"] == 510 and by_split.loc["test", "sum"] == 34
    same = build_training_set(mart.sort_values("customer_id"), columns, window=TrainingWindow(), **common)
    pd.testing.assert_frame_equal(frame, same)

    newest = build_training_set(mart, columns, window=TrainingWindow(mode="last_loads", last_loads=1), **common)
    assert len(newest) == 250 and newest["period"].nunique() == 1
    weighted = build_training_set(mart, columns, window=TrainingWindow(mode="recency"), **common)
    assert "sample_weight" in weighted.columns and weighted["sample_weight"].max() == 1.0
