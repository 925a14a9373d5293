"""Champion/challenger decisions on plain metrics, including a challenger trained on shuffled labels."""

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.datasets import assign_splits
from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.ml.promotion import PENDING_APPROVAL, PROMOTE, REJECT, PromotionPolicy, decide
from mlops_assets.ml.training import predict_proba, train_propensity_model

CHAMPION = {"roc_auc": 0.76, "top_decile_lift": 4.0}


def _decide(challenger, champion=CHAMPION, fairness=True, **policy):
    return decide(
        challenger,
        champion,
        min_roc_auc=0.70,
        fairness_passed=fairness,
        fairness_reasons=[] if fairness else ["age=5 contacted at half the rate of age=3"],
        policy=PromotionPolicy(**policy),
    )


def test_better_or_slightly_worse_within_tolerance_is_promoted():
    assert _decide({"roc_auc": 0.78, "top_decile_lift": 4.2}).action == PROMOTE
    assert _decide({"roc_auc": 0.755, "top_decile_lift": 3.9}, tolerance=0.01).action == PROMOTE


def test_worse_beyond_tolerance_is_rejected_with_the_reason():
    decision = _decide({"roc_auc": 0.74, "top_decile_lift": 4.5}, tolerance=0.01)
    assert decision.action == REJECT
    assert not decision.gates["not_worse_than_champion"]
    assert "roc_auc 0.7400 vs champion 0.7600 (-0.0200, tolerance 0.01)" in decision.summary


def test_primary_metric_is_configurable():
    challenger = {"roc_auc": 0.74, "top_decile_lift": 4.5}
    assert _decide(challenger, primary_metric="top_decile_lift").action == PROMOTE
    assert _decide({"roc_auc": 0.77, "top_decile_lift": 3.0}, primary_metric="top_decile_lift").action == REJECT


def test_floor_and_fairness_gates():
    assert _decide({"roc_auc": 0.69, "top_decile_lift": 4.0}, champion=None).action == REJECT
    first = _decide({"roc_auc": 0.71, "top_decile_lift": 3.0}, champion=None)
    assert first.action == PROMOTE and "no champion yet" in first.summary
    unfair = _decide({"roc_auc": 0.80, "top_decile_lift": 5.0}, fairness=False)
    assert unfair.action == REJECT and "age=5 contacted at half the rate" in unfair.summary


def test_manual_approval_waits_only_when_the_gates_pass():
    assert _decide({"roc_auc": 0.78, "top_decile_lift": 4.2}, approval="manual").action == PENDING_APPROVAL
    assert _decide({"roc_auc": 0.60, "top_decile_lift": 1.0}, approval="manual").action == REJECT


def test_a_challenger_trained_on_shuffled_labels_is_rejected(caravan):
    dictionary = caravan.load_data_dictionary()
    frame = pd.read_csv(caravan.source_path).rename(
        columns=dict(zip(dictionary["source_column"], dictionary["feature_name"], strict=True))
    )
    frame[caravan.target] = (frame[caravan.target] == "Yes").astype(int)
    features = [f for f in caravan.features if f.name in frame.columns]
    frame["customer_id"] = [f"C{i}" for i in range(len(frame))]
    frame["split"] = assign_splits(frame["customer_id"], frame[caravan.target], seed=1)
    parts = {name: part for name, part in frame.groupby("split")}

    def fit(train):
        model = train_propensity_model(train, parts["validation"], features, caravan.target, caravan.training)
        scores = predict_proba(model.booster, parts["test"], features, model.score_offset)
        return classification_metrics(parts["test"][caravan.target], scores)

    champion = fit(parts["train"])
    shuffled = parts["train"].assign(
        **{caravan.target: np.random.default_rng(0).permutation(parts["train"][caravan.target].to_numpy())}
    )
    challenger = fit(shuffled)
    assert champion["roc_auc"] > 0.72
    assert challenger["roc_auc"] < champion["roc_auc"] - 0.05
    decision = _decide(challenger, champion)
    assert decision.action == REJECT and not decision.gates["not_worse_than_champion"]


@pytest.mark.parametrize("approval", ["auto", "manual"])
def test_policy_rejects_unknown_values(approval):
    PromotionPolicy(approval=approval)
    with pytest.raises(ValueError):
        PromotionPolicy(approval="sometimes")
