"""Telling broken data from real change, on plain functions: unit changes, drift causes, the regime
change and seasonal replays of the synthetic bank, and the training window."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.drift import build_reference_profile, classify_batch, compare_to_reference
from mlops_assets.ml.windows import TrainingWindow, apply_window
from mlops_assets.quality.scale import scale_jump, scale_reference
from mlops_assets.replay import break_export, make_swiss_bank_batch
from mlops_assets.use_cases import get_use_case

BANK = get_use_case("swiss_bank")
MACRO = ["interest_rate", "unemployment_rate", "consumer_confidence"]


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The batch as staging types it (flags as 0/1, categories as text) plus the mart's derived feature."""
    frame = frame.copy()
    for column in ("has_mortgage", "has_investment_account", "salary_account"):
        frame[column] = frame[column].astype(int)
    for column in ("settlement", "canton"):
        frame[column] = frame[column].astype(str)
    frame["balance_per_product"] = frame["balance_chf"] / frame["products_held"]
    return frame


@pytest.fixture(scope="module")
def reference():
    """A year of the old economy (batches of every month) as the champion's training data."""
    batches = [
        typed(make_swiss_bank_batch("seasonal", batch_number=n, size=500, seed=1).customers) for n in range(1, 13)
    ]
    frame = pd.concat(batches, ignore_index=True)
    return frame, build_reference_profile(frame, BANK.features)


def classify(reference, scenario: str, batch_number: int = 3, **options) -> dict:
    frame, profile = reference
    batch = typed(make_swiss_bank_batch(scenario, batch_number=batch_number, size=1500, seed=2, **options).customers)
    report = compare_to_reference(profile, batch, BANK.monitoring.drift)
    return classify_batch(report, score_drifted=False, seasonal=set(BANK.monitoring.seasonal_features), co_moving_min=3)


def test_regime_change_is_a_co_moving_group_that_requests_a_retrain(reference):
    classified = classify(reference, "regime_change", strength=1.0)
    assert classified["primary_cause"] == "co_moving_group" and classified["requests_retrain"]
    assert set(MACRO) <= set(classified["features_by_cause"]["co_moving_group"])


def test_seasonal_and_stationary_batches_request_no_retrain(reference):
    seasonal = classify(reference, "seasonal", batch_number=7)
    assert seasonal["causes"] == ["seasonal"] and not seasonal["requests_retrain"]
    assert "contact_month" in seasonal["features_by_cause"]["seasonal"]
    assert classify(reference, "stationary")["causes"] == []


def test_a_single_moved_feature_and_a_score_only_shift_are_told_apart(reference):
    frame, profile = reference
    batch = typed(make_swiss_bank_batch("stationary", batch_number=4, size=1500, seed=2).customers)
    batch["digital_logins_per_month"] = batch["digital_logins_per_month"] + 8
    report = compare_to_reference(profile, batch, BANK.monitoring.drift)
    single = classify_batch(report, score_drifted=True)
    assert single["causes"] == ["single_feature_shift"] and single["requests_retrain"]
    quiet = compare_to_reference(
        profile, typed(make_swiss_bank_batch("stationary", batch_number=5, size=1500).customers)
    )
    assert classify_batch(quiet, score_drifted=True)["causes"] == ["score_only_shift"]


def test_unit_change_is_a_power_of_ten_with_the_same_shape_and_a_real_shift_is_not():
    rng = np.random.default_rng(0)
    balance = pd.Series(np.exp(rng.normal(9.5, 1.0, 5000)))
    reference = scale_reference(pd.DataFrame({"balance": balance}), ["balance"])["balance"]
    assert scale_jump(reference, balance * 10, 0.1)[0] == 1
    assert scale_jump(reference, balance / 100, 0.1)[0] == -2
    assert scale_jump(reference, balance * 1.3, 0.1)[0] == 0  # richer customers: drift, not a unit
    rate = pd.Series(rng.normal(1.0, 0.3, 5000)).clip(0.05)
    rate_reference = scale_reference(pd.DataFrame({"rate": rate}), ["rate"])["rate"]
    assert scale_jump(rate_reference, rate + 2.5, 0.1)[0] == 0  # rates rising 1% -> 3.5%: real change


def test_replay_batches_are_deterministic_and_data_bugs_break_the_export():
    first = make_swiss_bank_batch("regime_change", batch_number=4, size=300, seed=9, strength=0.7)
    again = make_swiss_bank_batch("regime_change", batch_number=4, size=300, seed=9, strength=0.7)
    pd.testing.assert_frame_equal(first.customers, again.customers)
    pd.testing.assert_frame_equal(first.outcomes, again.outcomes)
    assert "bought_product_a" not in first.customers.columns
    assert (first.customers["contact_month"] == 4).all()
    before = make_swiss_bank_batch("regime_change", batch_number=2, size=300, seed=9, change_batch=3)
    assert before.customers["interest_rate"].mean() < 1.3 < first.customers["interest_rate"].mean()
    bug = make_swiss_bank_batch("data_bug", batch_number=2, size=300, seed=9, bug="unit_change")
    np.testing.assert_allclose(bug.customers["balance_chf"], before.customers["balance_chf"] * 10, rtol=1e-6)
    with pytest.raises(KeyError, match="not in the export"):
        break_export(first.customers, "empty_column", "no_such_column")


def test_training_window_always_holds_the_newest_load():
    times = pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01", "2026-03-01"])
    frame = pd.DataFrame({"customer_id": ["a", "b", "c", "d"], "loaded_at": times})
    assert len(apply_window(frame, TrainingWindow())) == 4
    assert apply_window(frame, TrainingWindow(mode="last_loads", last_loads=1))["customer_id"].tolist() == ["c", "d"]
    weights = apply_window(frame, TrainingWindow(mode="recency", half_life_loads=1))["sample_weight"].tolist()
    assert weights == [0.25, 0.5, 1.0, 1.0]
