import math
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.evaluation import decile_of_rank
from mlops_assets.ml.explanations import (
    explain_top_share,
    reason_columns,
    reasons_of_matrix,
    shap_contributions,
    top_k_indices,
    top_reasons,
)
from mlops_assets.ml.scoring import score_table
from mlops_assets.ml.training import (
    FeatureSpec,
    TrainingParams,
    predict_proba,
    prepare_features,
    train_propensity_model,
)
from mlops_assets.use_cases import get_use_case

# Caravan feature names, so readable labels come from the real data dictionary; total_policies is
# built in dbt and has no dictionary entry.
FEATURES = [
    FeatureSpec(name="contribution_car", type="numeric"),
    FeatureSpec(name="customer_subtype", type="categorical"),
    FeatureSpec(name="purchasing_power_class", type="numeric"),
    FeatureSpec(name="pct_home_owners", type="numeric"),
    FeatureSpec(name="total_policies", type="numeric"),
]
SUBTYPES = ["family", "farmer", "retired", "student"]


def customers(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    contribution_car = rng.integers(0, 10, n).astype(float)
    contribution_car[rng.random(n) < 0.05] = np.nan  # LightGBM's missing values get a reason too
    subtype = rng.choice(SUBTYPES, n)
    power = rng.normal(4, 2, n)
    owners = rng.uniform(0, 9, n)
    logit = (
        -3.0
        + 0.35 * np.nan_to_num(contribution_car - 5)
        + 1.2 * (subtype == "family")
        - 0.8 * (subtype == "student")
        + 0.3 * (power - 4)
        + 0.1 * owners
    )
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(n)],
            "contribution_car": contribution_car,
            "customer_subtype": subtype,  # plain strings: prepare_features makes them categories
            "purchasing_power_class": power,
            "pct_home_owners": owners,
            "total_policies": rng.integers(0, 6, n),
            "bought": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        },
        index=pd.RangeIndex(1000, 1000 + n),  # not 0..n-1, to catch positional/label mix-ups
    )


@pytest.fixture(scope="module")
def model():
    params = TrainingParams(num_leaves=15, min_child_samples=20, max_rounds=150, early_stopping_rounds=150)
    return train_propensity_model(customers(4000, 1), customers(1000, 2), FEATURES, "bought", params)


@pytest.fixture(scope="module")
def names() -> dict[str, str]:
    return get_use_case("caravan").readable_names()


@pytest.fixture(scope="module")
def scored():
    return customers(600, 3)


def test_contributions_add_up_to_the_raw_score(model, scored):
    contributions = shap_contributions(model.booster, scored, FEATURES, chunk_size=128)
    assert list(contributions.columns) == [f.name for f in FEATURES] + ["expected_value"]
    assert contributions.index.equals(scored.index)
    raw = model.booster.predict(prepare_features(scored, FEATURES), raw_score=True)
    np.testing.assert_allclose(contributions.sum(axis=1).to_numpy(), raw, rtol=0, atol=1e-6)
    # ... and so, with the class-weighting offset, to the published score.
    probability = 1 / (1 + np.exp(-(contributions.sum(axis=1) + model.score_offset)))
    np.testing.assert_allclose(probability, predict_proba(model.booster, scored, FEATURES, model.score_offset))
    assert (contributions["customer_subtype"] != 0).any()  # the categorical feature is explained


def brute_force(contributions: pd.DataFrame, k: int, only_positive: bool) -> list[list[tuple[str, float]]]:
    expected = []
    for _, row in contributions.drop(columns="expected_value").iterrows():
        ranked = sorted(row.items(), key=lambda item: -item[1])
        expected.append([(f, c) for f, c in ranked if c > 0 or not only_positive][:k])
    return expected


@pytest.mark.parametrize("only_positive", [True, False])
def test_reasons_are_the_largest_contributions(model, scored, names, only_positive):
    reasons = top_reasons(model.booster, scored, FEATURES, names, k=3, only_positive=only_positive)
    contributions = shap_contributions(model.booster, scored, FEATURES)
    expected = brute_force(contributions, 3, only_positive)
    assert reasons.index.equals(scored.index)
    assert list(reasons.columns) == reason_columns(3)
    for position, want in enumerate(expected):
        row = reasons.iloc[position]
        got_values = [row[f"reason_{i}_contribution"] for i in range(1, len(want) + 1)]
        np.testing.assert_allclose(got_values, [c for _, c in want])
        for i, (feature, value) in enumerate(want, start=1):
            others = contributions.drop(columns="expected_value").iloc[position]
            if (others == value).sum() == 1:  # a tie would make the feature choice arbitrary
                assert row[f"reason_{i}_feature"] == feature
        for i in range(len(want) + 1, 4):  # fewer than three features raised the score
            assert row[f"reason_{i}_feature"] is None and math.isnan(row[f"reason_{i}_contribution"])
    if only_positive:
        assert (reasons.filter(like="_contribution").fillna(1) > 0).all().all()
    else:
        assert reasons.filter(like="_contribution").notna().all().all()
        assert (reasons["reason_1_contribution"] >= reasons["reason_2_contribution"]).all()
        assert (reasons["reason_2_contribution"] >= reasons["reason_3_contribution"]).all()


def test_labels_and_values_are_readable(model, scored, names):
    names = {k: v for k, v in names.items() if k != "total_policies"}  # a feature without a readable name
    reasons = top_reasons(model.booster, scored, FEATURES, names, k=5, only_positive=False)
    for i in range(1, 6):
        features, labels = reasons[f"reason_{i}_feature"], reasons[f"reason_{i}_label"]
        values = reasons[f"reason_{i}_value"]
        for feature in FEATURES:
            hits = features == feature.name
            if not hits.any():
                continue
            # Labels come from the data dictionary; a feature it lacks keeps its own name.
            assert set(labels[hits]) == {names.get(feature.name, feature.name)}
            raw = scored.loc[hits, feature.name]
            if feature.name == "contribution_car":
                expected = raw.map(lambda v: "missing" if np.isnan(v) else str(int(v)))
            elif feature.name in ("customer_subtype", "total_policies"):
                expected = raw.astype(str)
            else:
                expected = raw.round(4).astype(str)
            assert values[hits].tolist() == expected.tolist()
    assert names["contribution_car"].startswith("Contribution class for car policies")
    assert set(reasons["reason_1_label"]) >= {names["contribution_car"]}
    assert "total_policies" not in names
    assert (reasons["reason_1_value"] == "missing").any()  # NaN contribution_car is a reason


def test_categorical_reasons_do_not_depend_on_chunking(model, scored, names):
    # Each small chunk holds only some subtypes, so its pandas categories differ from the training data;
    # LightGBM maps them by label (the model keeps its categories), so nothing may change.
    whole = top_reasons(model.booster, scored, FEATURES, names, chunk_size=100_000)
    chunked = top_reasons(model.booster, scored, FEATURES, names, chunk_size=7)
    pd.testing.assert_frame_equal(whole, chunked)
    subtype = whole["reason_1_feature"] == "customer_subtype"
    assert subtype.any() and set(whole.loc[subtype, "reason_1_value"]) <= set(SUBTYPES)
    only_families = scored[scored["customer_subtype"] == "family"]
    pd.testing.assert_frame_equal(
        top_reasons(model.booster, only_families, FEATURES, names), whole.loc[only_families.index]
    )


def test_k_handling(model, scored, names):
    one = top_reasons(model.booster, scored, FEATURES, names, k=1)
    assert list(one.columns) == reason_columns(1)
    three = top_reasons(model.booster, scored, FEATURES, names, k=3)
    pd.testing.assert_frame_equal(one, three[reason_columns(1)])
    # More reasons than features: the extra slots exist and are empty.
    many = top_reasons(model.booster, scored, FEATURES, names, k=7, only_positive=False)
    assert list(many.columns) == reason_columns(7)
    assert many["reason_5_feature"].notna().all()
    assert many["reason_6_feature"].isna().all() and many["reason_7_contribution"].isna().all()
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_reasons(model.booster, scored, FEATURES, names, k=0)


def test_top_k_indices_matches_a_full_sort():
    matrix = np.random.default_rng(0).normal(size=(500, 50))
    expected = np.argsort(-matrix, axis=1)[:, :3]
    np.testing.assert_array_equal(top_k_indices(matrix, 3), expected)
    np.testing.assert_array_equal(top_k_indices(matrix[:, :2], 3), np.argsort(-matrix[:, :2], axis=1))


@pytest.mark.parametrize("n", [600, 605, 1009])
def test_top_share_explains_exactly_the_contacted_customers(model, names, n):
    frame = customers(n, 4)
    scores = predict_proba(model.booster, frame, FEATURES, model.score_offset)
    explained = explain_top_share(model.booster, frame, FEATURES, scores, names, top_share=0.1)
    assert explained.explained == len(explained.reasons) == n // 10
    assert explained.customers == n and explained.coverage == pytest.approx((n // 10) / n)
    # The same customers as decile 1 of the score table, highest score first.
    decile_one = frame.index[decile_of_rank(scores) == 1]
    assert set(explained.reasons.index) == set(decile_one)
    ordered = pd.Series(scores, index=frame.index).loc[explained.reasons.index]
    assert ordered.is_monotonic_decreasing
    assert ordered.min() >= np.sort(scores)[-(n // 10)]
    pd.testing.assert_frame_equal(
        explained.reasons, top_reasons(model.booster, frame.loc[explained.reasons.index], FEATURES, names)
    )
    # The contacted customers' scores were raised by something: the first reason is always there.
    assert explained.reasons["reason_1_feature"].notna().all()


def test_top_share_checks_its_inputs(model, scored, names):
    scores = predict_proba(model.booster, scored, FEATURES)
    with pytest.raises(ValueError, match="scores for"):
        explain_top_share(model.booster, scored, FEATURES, scores[:-1], names)
    with pytest.raises(ValueError, match="top_share"):
        explain_top_share(model.booster, scored, FEATURES, scores, names, top_share=1.5)


def test_feature_specs_must_match_the_model(model, scored, names):
    with pytest.raises(ValueError, match="do not match the model"):
        top_reasons(model.booster, scored, list(reversed(FEATURES)), names)


@pytest.mark.parametrize("only_positive", [True, False])
def test_reasons_of_a_model_matrix_are_the_reasons_of_the_frame(model, scored, names, only_positive):
    """The scoring service's path (plain values -> model matrix -> reasons) gives exactly the batch
    path's reasons (top_reasons on the DataFrame), labels and value texts included."""
    from mlops_assets.ml.training import matrix_of_values

    rows = scored.head(60).copy()
    rows.loc[rows.index[:3], "customer_subtype"] = ["astronaut", None, "family"]  # unseen and missing
    values = {
        name: [None if pd.isna(v) else v for v in rows[name].astype(object)] for name in [f.name for f in FEATURES]
    }
    matrix = matrix_of_values(model.booster, FEATURES, values.__getitem__)
    found = reasons_of_matrix(
        model.booster, matrix, FEATURES, values.__getitem__, names, k=3, only_positive=only_positive
    )
    table = top_reasons(model.booster, rows, FEATURES, names, k=3, only_positive=only_positive)
    expected = [
        [
            {part: row[f"reason_{i}_{part}"] for part in ("feature", "label", "value", "contribution")}
            for i in range(1, 4)
            if row[f"reason_{i}_feature"] is not None
        ]
        for row in table.to_dict("records")
    ]
    assert found == expected
    # Not vacuous: most rows have reasons, and the categorical feature's value texts are among them.
    assert sum(len(r) for r in found) > 60
    assert {r["value"] for reasons in found for r in reasons if r["feature"] == "customer_subtype"} & set(SUBTYPES)


def test_the_score_table_carries_each_explained_customers_own_reasons(model, names):
    """score_table places reasons by row position (no merge on id): each explained customer gets its
    own reasons, everyone else none, and rows come best first with ties in the given order."""
    frame = customers(1009, 5).set_axis(np.arange(3000, 3000 + 2018, 2))  # an index that is not 0..n-1
    ids = pd.Series([f"C{n:05d}" for n in np.random.default_rng(1).permutation(1009)], index=frame.index)
    scores = np.round(predict_proba(model.booster, frame, FEATURES, model.score_offset), 2)  # many ties
    explained = explain_top_share(model.booster, frame, FEATURES, scores, names, top_share=0.1)
    table = score_table(ids, scores, "m1", datetime(2026, 11, 27), explained.reasons, k=3)

    assert table["rank"].tolist() == list(range(1, 1010)) and table["score"].is_monotonic_decreasing
    expected_order = ids.to_numpy()[np.argsort(-scores, kind="stable")]  # ties: the order of `ids`
    assert table["customer_id"].tolist() == expected_order.tolist()
    by_id = table.set_index("customer_id")
    reasons = explained.reasons.set_axis(ids.loc[explained.reasons.index])
    assert by_id.loc[reasons.index, "reason_1"].tolist() == reasons["reason_1_label"].tolist()
    assert by_id.loc[reasons.index, "reason_2_value"].tolist() == reasons["reason_2_value"].tolist()
    np.testing.assert_array_equal(by_id.loc[reasons.index, "reason_1_contribution"], reasons["reason_1_contribution"])
    others = by_id.drop(index=reasons.index)
    assert len(others) == 1009 - 100 and others[["reason_1", "reason_3_contribution"]].isna().all().all()
    with pytest.raises(ValueError, match="not scored"):
        score_table(ids.iloc[1:], scores[1:], "m1", datetime(2026, 11, 27), explained.reasons.set_axis(range(100)), k=3)
