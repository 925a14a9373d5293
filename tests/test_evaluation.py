import numpy as np
import pytest

from mlops_assets.ml.evaluation import calibration_table, classification_metrics, decile_of_rank, decile_table


def test_deciles_have_equal_sizes_and_decile_one_holds_the_top_scores():
    scores = np.linspace(0, 1, 100)
    deciles = decile_of_rank(scores)
    assert np.bincount(deciles)[1:].tolist() == [10] * 10
    assert set(deciles[scores >= 0.91]) == {1}
    assert set(deciles[scores < 0.1]) == {10}


def test_metrics_of_a_perfect_ranking():
    y = np.r_[np.ones(10), np.zeros(90)]
    scores = np.r_[np.linspace(0.9, 1.0, 10), np.linspace(0.0, 0.5, 90)]
    metrics = classification_metrics(y, scores)
    assert metrics["roc_auc"] == pytest.approx(1.0)
    assert metrics["pr_auc"] == pytest.approx(1.0)
    assert metrics["top_decile_capture_rate"] == pytest.approx(1.0)
    assert metrics["top_decile_lift"] == pytest.approx(10.0)
    assert metrics["base_rate"] == pytest.approx(0.1)


def test_metrics_of_a_random_ranking_are_near_chance():
    rng = np.random.default_rng(1)
    y = rng.random(20_000) < 0.1
    metrics = classification_metrics(y, rng.random(20_000))
    assert metrics["roc_auc"] == pytest.approx(0.5, abs=0.02)
    assert metrics["top_decile_lift"] == pytest.approx(1.0, abs=0.15)


def test_metrics_need_both_classes():
    with pytest.raises(ValueError, match="both buyers and non-buyers"):
        classification_metrics(np.zeros(10), np.random.default_rng(0).random(10))


def test_decile_and_calibration_tables():
    rng = np.random.default_rng(2)
    scores = rng.random(1000)
    y = rng.random(1000) < scores  # perfectly calibrated by construction
    table = decile_table(y, scores)
    assert table["customers"].sum() == 1000
    assert table["cumulative_capture"].iloc[-1] == pytest.approx(1.0)
    assert table["lift"].iloc[0] > table["lift"].iloc[-1]
    calibration = calibration_table(y, scores)
    assert np.abs(calibration["mean_score"] - calibration["observed_rate"]).max() < 0.12
