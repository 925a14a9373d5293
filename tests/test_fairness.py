import math

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.evaluation import decile_of_rank
from mlops_assets.ml.fairness import FairnessBounds, evaluate_fairness, fairness_table, top_share_mask


def customers_with(groups: dict[str, tuple[int, int, int, int]], seed: int = 0):
    """Customers whose top-share selection is fixed per group: (customers, selected, buyers, buyers selected).

    Selected customers score in (1, 2), the others in (0, 1), so the top share (returned) is exactly them.
    """
    rng = np.random.default_rng(seed)
    y, selected, group = [], [], []
    for name, (customers, chosen, buyers, buyers_chosen) in groups.items():
        y += [1] * buyers_chosen + [0] * (chosen - buyers_chosen)
        y += [1] * (buyers - buyers_chosen) + [0] * (customers - chosen - (buyers - buyers_chosen))
        selected += [1] * chosen + [0] * (customers - chosen)
        group += [name] * customers
    selected = np.array(selected)
    scores = rng.random(len(selected)) + selected
    return np.array(y), scores, np.array(group), selected.sum() / len(selected)


def test_top_share_mask_is_decile_one():
    rng = np.random.default_rng(0)
    for n in (10, 99, 1000, 1005, 5822):
        scores = rng.random(n).round(2)  # with ties
        mask = top_share_mask(scores, 0.1)
        assert mask.sum() == math.floor(n / 10)
        assert (mask == (decile_of_rank(scores) == 1)).all()
    assert top_share_mask(np.arange(10.0), 0.3).tolist() == [False] * 7 + [True] * 3
    with pytest.raises(ValueError, match="top_share"):
        top_share_mask(np.arange(10.0), 0)


def test_table_agrees_with_a_hand_computation():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    groups = np.array(["a", "b"] * 5)
    y_true = np.array([1, 0, 0, 1, 1, 0, 0, 0, 0, 1])
    # Top 30% = the first three rows: a (row 0, a buyer), b (row 1), a (row 2).
    table = fairness_table(y_true, scores, groups, top_share=0.3, min_group_size=1).set_index("group")
    assert table.loc["a", ["customers", "buyers", "selected", "buyers_selected"]].tolist() == [5, 2, 2, 1]
    assert table.loc["b", ["customers", "buyers", "selected", "buyers_selected"]].tolist() == [5, 2, 1, 0]
    assert table.loc["a", "selection_rate"] == pytest.approx(0.4)
    assert table.loc["b", "selection_rate"] == pytest.approx(0.2)
    assert table.loc["a", "true_positive_rate"] == pytest.approx(0.5)
    assert table.loc["b", "true_positive_rate"] == pytest.approx(0.0)
    assert table.loc["a", "buyer_rate"] == pytest.approx(0.4)

    result = evaluate_fairness(
        y_true, scores, groups, FairnessBounds(top_share=0.3, min_group_size=1, min_group_buyers=1)
    )
    assert result.demographic_parity_ratio == pytest.approx(0.5)
    assert result.equal_opportunity_ratio == pytest.approx(0.0)


def test_fair_selection_passes():
    rng = np.random.default_rng(1)
    n = 20_000
    groups = rng.choice(["north", "south", "east"], n)
    y_true = (rng.random(n) < 0.06).astype(int)
    scores = rng.random(n) + y_true  # buyers score higher, whatever their group
    result = evaluate_fairness(y_true, scores, groups, FairnessBounds(min_tpr_ratio=0.8))
    assert result.passed, result.reasons
    assert result.reasons == []
    assert result.demographic_parity_ratio > 0.9
    assert result.equal_opportunity_ratio > 0.9
    assert result.table["gated"].all()


def test_a_model_selecting_one_group_fails_naming_the_groups():
    rng = np.random.default_rng(2)
    groups = np.repeat(["young", "old"], 1000)
    y_true = (rng.random(2000) < 0.1).astype(int)
    scores = rng.random(2000) + (groups == "young")  # every contacted customer is young
    result = evaluate_fairness(y_true, scores, groups, FairnessBounds(min_tpr_ratio=0.5), attribute="age")
    assert not result.passed
    assert result.demographic_parity_ratio == 0.0
    assert result.equal_opportunity_ratio == 0.0
    selection_reason, tpr_reason = result.reasons
    assert "selection-rate ratio 0.00 < 0.80" in selection_reason
    assert "age=old has 0.0%" in selection_reason and "age=young has 20.0%" in selection_reason
    assert "true-positive-rate ratio 0.00 < 0.50" in tpr_reason and "age=old" in tpr_reason


@pytest.mark.parametrize(("bound", "passed"), [(0.84, True), (0.86, False)])
def test_both_sides_of_the_selection_rate_bound(bound, passed):
    # Selection rates 10% and 8.5%: ratio 0.85.
    y, scores, groups, share = customers_with({"a": (1000, 100, 50, 20), "b": (1000, 85, 50, 20)})
    result = evaluate_fairness(
        y,
        scores,
        groups,
        FairnessBounds(min_selection_rate_ratio=bound, top_share=share, require_significance=False),
    )
    assert result.demographic_parity_ratio == pytest.approx(0.85)
    assert result.passed is passed
    if not passed:
        assert "group=b has 8.5% of its customers" in result.reasons[0]
        assert "(85 of 1000)" in result.reasons[0] and "group=a has 10.0%" in result.reasons[0]


@pytest.mark.parametrize(("bound", "passed"), [(0.74, True), (0.76, False), (None, True)])
def test_both_sides_of_the_true_positive_rate_bound(bound, passed):
    # Equal selection rates, but 40% of a's buyers are selected against 30% of b's: ratio 0.75.
    y, scores, groups, share = customers_with({"a": (1000, 100, 50, 20), "b": (1000, 100, 50, 15)})
    bounds = FairnessBounds(min_tpr_ratio=bound, top_share=share, require_significance=False)
    result = evaluate_fairness(y, scores, groups, bounds)
    assert result.demographic_parity_ratio == pytest.approx(1.0)
    assert result.equal_opportunity_ratio == pytest.approx(0.75)  # reported even when not gated
    assert result.passed is passed
    if not passed:
        assert "true-positive-rate ratio 0.75 < 0.76" in result.reasons[0]
        assert "group=b has 30.0% of its buyers" in result.reasons[0] and "(15 of 50)" in result.reasons[0]


def test_small_groups_are_reported_but_not_gated():
    # "tiny" has nobody selected, but only 50 customers.
    y, scores, groups, share = customers_with(
        {"a": (1000, 100, 50, 20), "b": (1000, 100, 50, 20), "tiny": (50, 0, 5, 0)}
    )
    result = evaluate_fairness(y, scores, groups, FairnessBounds(min_tpr_ratio=0.8, top_share=share))
    assert result.passed
    assert result.demographic_parity_ratio == pytest.approx(1.0)
    table = result.table.set_index("group")
    assert not table.loc["tiny", "gated"] and table.loc[["a", "b"], "gated"].all()
    assert table.loc["tiny", "selection_rate"] == 0.0  # still reported
    assert "group=tiny (50)" in result.notes[0]

    gating_it = FairnessBounds(min_group_size=50, min_group_buyers=5, top_share=share, require_significance=False)
    failed = evaluate_fairness(y, scores, groups, gating_it)
    assert not failed.passed and "group=tiny" in failed.reasons[0]


def test_groups_with_few_buyers_are_left_out_of_the_tpr_ratio():
    y, scores, groups, share = customers_with({"a": (1000, 100, 50, 20), "b": (1000, 100, 10, 0)})
    result = evaluate_fairness(y, scores, groups, FairnessBounds(min_tpr_ratio=0.8, top_share=share))
    assert result.passed
    assert math.isnan(result.equal_opportunity_ratio)  # only one group has 20+ buyers
    assert any("group=b (10)" in note for note in result.notes)


def test_true_positive_rate_is_nan_for_a_group_without_buyers():
    y, scores, groups, share = customers_with(
        {"a": (1000, 100, 50, 20), "b": (1000, 100, 50, 20), "c": (1000, 100, 0, 0)}
    )
    result = evaluate_fairness(y, scores, groups, FairnessBounds(min_tpr_ratio=0.8, top_share=share))
    table = result.table.set_index("group")
    assert math.isnan(table.loc["c", "true_positive_rate"])  # fairlearn alone would report 0.0
    assert table.loc["a", "true_positive_rate"] == pytest.approx(0.4)
    assert result.equal_opportunity_ratio == pytest.approx(1.0)  # c is not a zero in the ratio
    assert result.passed


def test_fewer_than_two_gated_groups_compare_nothing():
    y, scores, groups, share = customers_with({"a": (1000, 100, 50, 20), "b": (40, 0, 2, 0)})
    result = evaluate_fairness(y, scores, groups, FairnessBounds(top_share=share))
    assert result.passed and math.isnan(result.demographic_parity_ratio)
    assert any("nothing to compare" in note for note in result.notes)


def test_nobody_of_the_gated_groups_selected_fails():
    y, scores, groups, share = customers_with({"a": (1000, 0, 50, 0), "b": (1000, 0, 50, 0), "tiny": (30, 30, 3, 3)})
    result = evaluate_fairness(y, scores, groups, FairnessBounds(top_share=share))
    assert not result.passed and "no customer of any gated group (group=a, group=b)" in result.reasons[0]


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        fairness_table(np.zeros(3), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="no value of the sensitive attribute"):
        fairness_table(np.zeros(3), np.arange(3.0), pd.Series([1.0, None, 2.0]))
    with pytest.raises(ValueError, match="0/1"):
        fairness_table(np.array([0, 2, 1]), np.arange(3.0), np.array([1, 1, 2]))


def test_a_ratio_below_the_bound_fails_only_when_significant():
    # Ratio 0.7 both times; with 70 vs 100 selected customers chance can explain it, with
    # 7,000 vs 10,000 it cannot.
    small = customers_with({"a": (1000, 100, 50, 20), "b": (1000, 70, 50, 20)})
    large = customers_with({"a": (100_000, 10_000, 50, 20), "b": (100_000, 7_000, 50, 20)})
    for (y, scores, groups, share), passed in [(small, True), (large, False)]:
        result = evaluate_fairness(y, scores, groups, FairnessBounds(top_share=share))
        assert result.demographic_parity_ratio == pytest.approx(0.7)
        assert result.passed is passed
        if passed:
            assert any("not significantly" in note and "upper bound" in note for note in result.notes)
        else:
            assert "95% upper bound 0.7" in result.reasons[0]


def test_a_true_positive_rate_ratio_below_the_bound_fails_only_when_significant():
    # TPR 40% vs 20%: with 20 buyers per group chance can explain it, with 2,000 it cannot.
    small = customers_with({"a": (1000, 100, 20, 8), "b": (1000, 100, 20, 4)})
    large = customers_with({"a": (100_000, 10_000, 2_000, 800), "b": (100_000, 10_000, 2_000, 400)})
    for (y, scores, groups, share), passed in [(small, True), (large, False)]:
        bounds = FairnessBounds(min_selection_rate_ratio=None, min_tpr_ratio=0.8, top_share=share)
        result = evaluate_fairness(y, scores, groups, bounds)
        assert result.equal_opportunity_ratio == pytest.approx(0.5)
        assert result.passed is passed
        if passed:
            assert any("true-positive-rate ratio 0.50 is below 0.80 but not significantly" in n for n in result.notes)
        else:
            assert "true-positive-rate ratio 0.50 < 0.80, 95% upper bound" in result.reasons[0]


def test_rates_equal_fairlearns_metric_frame():
    from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate

    rng = np.random.default_rng(5)
    y, scores = (rng.random(5000) < 0.1).astype(int), rng.random(5000)
    groups = rng.choice(["a", "b", "c"], 5000)
    table = fairness_table(y, scores, groups, top_share=0.1).set_index("group")
    reference = MetricFrame(
        metrics={"selection_rate": selection_rate, "true_positive_rate": true_positive_rate},
        y_true=y,
        y_pred=top_share_mask(scores, 0.1).astype(int),
        sensitive_features=groups,
    ).by_group
    assert np.allclose(table["selection_rate"], reference["selection_rate"])
    assert np.allclose(table["true_positive_rate"], reference["true_positive_rate"])
