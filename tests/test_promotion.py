"""Champion/challenger decisions: paired bootstrap intervals, gates, and the out-of-time replay."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.ml.promotion import (
    PENDING_APPROVAL,
    PROMOTE,
    REJECT,
    PairedDifference,
    PromotionPolicy,
    _weighted_metrics,
    decide,
    paired_bootstrap,
)

CHALLENGER = {"roc_auc": 0.78}


def _difference(metric, difference, low, high, challenger=3.0):
    return PairedDifference(metric, challenger, challenger - difference, difference, low, high, 0.95, 1000)


def _decide(primary=(0.2, -0.3, 0.7), roc=(0.0, -0.01, 0.01), floor_value=0.78, calibrated=True, fair=True, **policy):
    policy = PromotionPolicy(**policy)
    comparison = {
        policy.primary_metric: _difference(policy.primary_metric, *primary),
        "roc_auc": _difference("roc_auc", *roc, challenger=0.78),
    }
    return decide(
        {"roc_auc": floor_value},
        comparison,
        min_roc_auc=0.70,
        calibration_passed=calibrated,
        calibration_summary="Brier 0.0500 (base rate 0.0560)" if calibrated else "ECE 0.0900 > 0.05",
        fairness_passed=fair,
        fairness_reasons=[] if fair else ["age=5 contacted at half the rate of age=3"],
        policy=policy,
        evaluation_set="out-of-time: test customers of period 2",
    )


def test_not_significantly_worse_is_promoted_and_significantly_worse_rejected_with_figures():
    assert _decide(primary=(0.2, -0.3, 0.7)).action == PROMOTE  # better, not significantly
    assert _decide(primary=(-0.3, -0.9, 0.3)).action == PROMOTE  # worse by noise only
    rejected = _decide(primary=(-1.1, -1.8, -0.4))
    assert rejected.action == REJECT and not rejected.gates["not_worse_than_champion"]
    assert "difference -1.1000 [95% CI -1.8000, -0.4000], significantly worse" in rejected.summary
    assert "compared on out-of-time: test customers of period 2" in rejected.summary


def test_tolerance_lets_a_slightly_worse_challenger_through():
    assert _decide(primary=(-0.5, -0.8, -0.2)).action == REJECT
    assert _decide(primary=(-0.5, -0.8, -0.2), tolerance=0.3).action == PROMOTE


def test_roc_auc_guard_floor_calibration_and_fairness_each_reject():
    assert _decide(roc=(-0.06, -0.09, -0.03)).gates["roc_auc_vs_champion"] is False
    assert _decide(roc=(-0.06, -0.09, -0.03)).action == REJECT
    assert _decide(roc=(-0.015, -0.03, -0.005)).action == PROMOTE  # within its tolerance of 0.02
    floor = _decide(floor_value=0.69)
    assert floor.action == REJECT and "ROC AUC 0.6900 < floor 0.7" in floor.summary
    uncalibrated = _decide(calibrated=False)
    assert uncalibrated.action == REJECT and "calibration FAILED: ECE 0.0900 > 0.05" in uncalibrated.summary
    unfair = _decide(fair=False)
    assert unfair.action == REJECT and "age=5 contacted at half the rate" in unfair.summary


def test_first_model_and_manual_approval():
    first = decide(
        {"roc_auc": 0.71},
        None,
        min_roc_auc=0.70,
        calibration_passed=True,
        calibration_summary="ok",
        fairness_passed=True,
        fairness_reasons=[],
        policy=PromotionPolicy(),
    )
    assert first.action == PROMOTE and "no champion yet" in first.summary
    assert _decide(approval="manual").action == PENDING_APPROVAL
    assert _decide(primary=(-1.1, -1.8, -0.4), approval="manual").action == REJECT


def test_weighted_metrics_with_unit_weights_equal_scikit_learn():
    rng = np.random.default_rng(3)
    labels = (rng.random(3000) < 0.07).astype(int)
    scores = rng.random(3000) + 0.3 * labels
    expected = classification_metrics(labels, scores)
    got = _weighted_metrics(labels, np.argsort(-scores, kind="stable"), np.ones((1, 3000)), scores)
    for metric, values in got.items():
        assert values[0] == pytest.approx(expected[metric], rel=1e-9), metric


def test_paired_bootstrap_interval_covers_the_truth_and_separates_real_differences():
    rng = np.random.default_rng(4)
    labels = (rng.random(2000) < 0.08).astype(int)
    signal = rng.normal(size=2000) + 1.2 * labels
    strong, weak = signal + rng.normal(scale=0.3, size=2000), signal + rng.normal(scale=2.5, size=2000)
    twin = signal + rng.normal(scale=0.3, size=2000)
    metrics = ["top_decile_lift", "roc_auc"]

    def compare(a, b):
        point = {m: (classification_metrics(labels, a)[m], classification_metrics(labels, b)[m]) for m in metrics}
        return paired_bootstrap(labels, a, b, metrics, point, resamples=500)

    better = compare(strong, weak)
    assert better["roc_auc"].low > 0 and better["top_decile_lift"].low > 0
    worse = compare(weak, strong)
    assert worse["roc_auc"].high < 0
    same = compare(strong, twin)  # equally good models: the interval contains 0
    assert same["roc_auc"].low < 0 < same["roc_auc"].high
    assert same["top_decile_lift"].low < 0 < same["top_decile_lift"].high


@pytest.mark.parametrize("approval", ["auto", "manual"])
def test_policy_rejects_unknown_values(approval):
    PromotionPolicy(approval=approval)
    with pytest.raises(ValueError):
        PromotionPolicy(approval="sometimes")
    with pytest.raises(ValueError):
        PromotionPolicy(primary_metric="accuracy")


def test_period_split_is_stable_when_later_periods_arrive():
    from mlops_assets.ml.datasets import assign_splits

    ids = pd.Series([f"C{i}" for i in range(3000)])
    labels = pd.Series((np.arange(3000) % 13 == 0).astype(int))
    first = assign_splits(ids[:2000], labels[:2000], periods=pd.Series(["p1"] * 2000))
    both = assign_splits(ids, labels, periods=pd.Series(["p1"] * 2000 + ["p2"] * 1000))
    assert (first.to_numpy() == both[:2000].to_numpy()).all()
    rates = pd.DataFrame({"split": both[2000:], "label": labels[2000:]}).groupby("split")["label"].mean()
    assert (rates - labels[2000:].mean()).abs().max() < 0.01  # stratified within the new period
