import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from mlops_assets.ml.drift import (
    OTHER_CATEGORY,
    PSI_EPSILON,
    DriftThresholds,
    build_reference_profile,
    build_score_profile,
    compare_to_reference,
    score_drift,
    summarize_drift,
)
from mlops_assets.ml.training import FeatureSpec
from mlops_assets.settings import resolve_project_path
from mlops_assets.use_cases import get_use_case

NUMERIC = [FeatureSpec(name="x")]
# Thresholds that only look at one measure, to test each threshold on its own.
PSI_ONLY = {"ks_alert": 1.0, "missing_share_alert": 1.0}


def normal_frame(n: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame({"x": np.random.default_rng(seed).normal(shift, scale, n)})


def row_of(report: pd.DataFrame, feature: str) -> pd.Series:
    return report.set_index("feature").loc[feature]


# --- numeric features ---------------------------------------------------------------------------------


def test_identical_distributions_do_not_drift():
    profile = build_reference_profile(normal_frame(20_000, 1), NUMERIC)
    same_sample = row_of(compare_to_reference(profile, normal_frame(20_000, 1)), "x")
    assert same_sample["psi"] == 0.0
    assert same_sample["ks_statistic"] == 0.0
    new_sample = row_of(compare_to_reference(profile, normal_frame(20_000, 2)), "x")
    assert new_sample["psi"] < 0.01
    assert new_sample["ks_statistic"] < 0.03
    assert new_sample["severity"] == "none"
    assert not new_sample["drifted"]
    assert new_sample["reason"] == "within thresholds"


def test_a_mean_shift_of_one_std_is_an_alert():
    profile = build_reference_profile(normal_frame(20_000, 1), NUMERIC)
    row = row_of(compare_to_reference(profile, normal_frame(20_000, 2, shift=1.0)), "x")
    assert row["psi"] > 0.25
    assert row["ks_statistic"] == pytest.approx(0.38, abs=0.02)  # 2 * Phi(0.5) - 1
    assert row["severity"] == "alert"
    assert row["drifted"]
    assert "PSI" in row["reason"] and "KS" in row["reason"]
    assert row["current_mean"] - row["reference_mean"] == pytest.approx(1.0, abs=0.05)


def test_psi_matches_a_hand_computed_value_with_the_empty_bin_epsilon():
    # Reference 0..7 in 4 equal-frequency bins: [<2], [2, 4), [4, 6), [>=6], a quarter each.
    profile = build_reference_profile(pd.DataFrame({"x": np.arange(8.0)}), NUMERIC, bins=4)
    assert profile["features"][0]["bin_edges"] == [2.0, 4.0, 6.0]
    assert profile["features"][0]["bin_shares"] == [0.25] * 4
    current = pd.DataFrame({"x": [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})  # shares 1/2, 1/4, 1/4, 0
    expected = (0.5 - 0.25) * math.log(0.5 / 0.25) + (PSI_EPSILON - 0.25) * math.log(PSI_EPSILON / 0.25)
    row = row_of(compare_to_reference(profile, current), "x")
    assert row["psi"] == pytest.approx(expected, rel=1e-12)
    assert row["ks_statistic"] == pytest.approx(0.25)  # F_cur(1) = 1/2 against F_ref(1) = 1/4


@pytest.mark.parametrize("sketch_size", [200, 20])
@pytest.mark.parametrize("kind", ["continuous", "integer_coded"])
def test_ks_from_the_sketch_is_a_close_lower_bound_of_the_exact_statistic(kind, sketch_size):
    rng = np.random.default_rng(5)
    if kind == "continuous":
        reference, current = rng.normal(0, 1, 30_000), rng.normal(0.1, 1.2, 20_000)
    else:
        reference, current = rng.poisson(2.0, 30_000), rng.poisson(2.3, 20_000)
    profile = build_reference_profile(pd.DataFrame({"x": reference}), NUMERIC, sketch_size=sketch_size)
    approximate = row_of(compare_to_reference(profile, pd.DataFrame({"x": current})), "x")["ks_statistic"]
    exact = ks_2samp(reference, current).statistic
    assert approximate <= exact + 1e-12
    assert exact - approximate <= 1 / (sketch_size - 1)
    if sketch_size == 200:
        assert approximate == pytest.approx(exact, abs=0.02)


def test_heavily_tied_coded_column_isolates_the_dominant_value():
    # A 0..9 coded column where 70% are 0: 0 must get a bin of its own, else 0 -> 1 shifts hide.
    rng = np.random.default_rng(3)
    n = 20_000
    coded = np.where(rng.random(n) < 0.7, 0, rng.integers(1, 10, n))
    profile = build_reference_profile(pd.DataFrame({"x": coded}), NUMERIC)
    entry = profile["features"][0]
    edges = entry["bin_edges"]
    assert edges[:2] == [0.0, 1.0]
    assert edges == sorted(set(edges))
    assert entry["bin_shares"][0] == 0.0  # below the reference range
    assert entry["bin_shares"][1] == pytest.approx(0.7, abs=0.01)  # the zeros alone

    unchanged = pd.DataFrame({"x": np.where(rng.random(n) < 0.7, 0, rng.integers(1, 10, n))})
    assert row_of(compare_to_reference(profile, unchanged), "x")["severity"] == "none"
    zeros_become_ones = coded.copy()
    zeros_become_ones[(coded == 0) & (rng.random(n) < 0.3)] = 1  # 21% of all rows move from 0 to 1
    row = row_of(compare_to_reference(profile, pd.DataFrame({"x": zeros_become_ones})), "x")
    assert row["severity"] == "alert"
    assert row["psi"] > 0.25


def test_constant_reference_column_still_detects_new_values():
    profile = build_reference_profile(pd.DataFrame({"x": np.full(1000, 5.0)}), NUMERIC)
    assert row_of(compare_to_reference(profile, pd.DataFrame({"x": np.full(1000, 5.0)})), "x")["psi"] == 0.0
    for new_value in (4.0, 6.0):  # below and above the reference range each have a bin
        row = row_of(compare_to_reference(profile, pd.DataFrame({"x": np.full(1000, new_value)})), "x")
        assert row["severity"] == "alert"
        assert row["ks_statistic"] == 1.0


# --- missing values -------------------------------------------------------------------------------------


def test_a_column_that_becomes_all_null_is_an_alert_naming_the_missing_share():
    profile = build_reference_profile(normal_frame(5000, 1), NUMERIC)
    row = row_of(compare_to_reference(profile, pd.DataFrame({"x": [np.nan] * 5000})), "x")
    assert row["drifted"]
    assert row["severity"] == "alert"
    assert row["reason"] == "missing share 100% vs 0%"
    assert row["current_missing_share"] == 1.0
    assert math.isnan(row["psi"]) and math.isnan(row["ks_statistic"])


def test_missing_share_threshold_is_an_absolute_increase():
    reference = normal_frame(10_000, 1)
    reference.loc[:999, "x"] = np.nan  # 10% missing in training
    profile = build_reference_profile(reference, NUMERIC)
    assert profile["features"][0]["missing_share"] == pytest.approx(0.1)

    def with_missing(share: float) -> pd.DataFrame:
        frame = normal_frame(10_000, 2)
        frame.loc[: int(share * 10_000) - 1, "x"] = np.nan
        return frame

    below = row_of(compare_to_reference(profile, with_missing(0.25)), "x")  # +15 points
    assert below["severity"] == "none"
    above = row_of(compare_to_reference(profile, with_missing(0.35)), "x")  # +25 points
    assert above["severity"] == "alert"
    assert above["reason"] == "missing share 35% vs 10%"
    fewer = row_of(compare_to_reference(profile, with_missing(0.01)), "x")  # fewer gaps is no alert
    assert fewer["severity"] == "none"


def test_infinite_and_non_numeric_values_count_as_missing():
    profile = build_reference_profile(pd.DataFrame({"x": [1.0, 2.0, np.inf, -np.inf]}), NUMERIC)
    assert profile["features"][0]["missing_share"] == 0.5
    assert profile["features"][0]["mean"] == 1.5
    text = pd.DataFrame({"x": ["1", "2", "n/a", "unknown"]})
    row = row_of(compare_to_reference(profile, text), "x")
    assert row["current_missing_share"] == 0.5
    assert row["psi"] == 0.0


def test_nullable_integer_columns_are_profiled_like_floats():
    values = pd.Series([1, 2, None, 4] * 50, dtype="Int64")
    profile = build_reference_profile(pd.DataFrame({"x": values}), NUMERIC)
    row = row_of(compare_to_reference(profile, pd.DataFrame({"x": values.astype("float64")})), "x")
    assert profile["features"][0]["missing_share"] == 0.25
    assert row["psi"] == 0.0 and row["ks_statistic"] == 0.0


def test_a_reference_column_without_values_only_watches_the_missing_share():
    features = [*NUMERIC, FeatureSpec(name="region", type="categorical")]
    empty = pd.DataFrame({"x": [np.nan] * 10, "region": [None] * 10})
    profile = build_reference_profile(empty, features)
    json.dumps(profile, allow_nan=False)
    filled = pd.DataFrame({"x": np.arange(10.0), "region": ["A"] * 10})
    report = compare_to_reference(profile, filled)
    assert report["severity"].tolist() == ["none", "none"]
    assert report["reason"].tolist() == ["no values to compare"] * 2
    assert report["psi"].isna().all()


# --- categorical features -----------------------------------------------------------------------------

REGION = [FeatureSpec(name="region", type="categorical")]


def regions(n: int, shares: list[float], seed: int, labels=("A", "B", "C")) -> pd.DataFrame:
    return pd.DataFrame({"region": np.random.default_rng(seed).choice(list(labels), n, p=shares)})


def test_categorical_shift_and_stable_mix():
    profile = build_reference_profile(regions(10_000, [0.5, 0.3, 0.2], 1), REGION)
    assert profile["features"][0]["categories"] == pytest.approx({"A": 0.5, "B": 0.3, "C": 0.2}, abs=0.02)
    stable = row_of(compare_to_reference(profile, regions(10_000, [0.5, 0.3, 0.2], 2)), "region")
    assert stable["severity"] == "none"
    assert math.isnan(stable["ks_statistic"]) and math.isnan(stable["reference_mean"])
    shifted = row_of(compare_to_reference(profile, regions(10_000, [0.2, 0.3, 0.5], 3)), "region")
    assert shifted["severity"] == "alert"
    assert shifted["reason"].startswith("PSI")


def test_unseen_categories_count_into_the_other_bucket():
    profile = build_reference_profile(regions(10_000, [0.5, 0.3, 0.2], 1), REGION)
    many_new = regions(10_000, [0.45, 0.25, 0.2, 0.1], 2, labels=("A", "B", "C", "D"))
    row = row_of(compare_to_reference(profile, many_new), "region")
    assert row["severity"] == "alert"
    assert f"{OTHER_CATEGORY} 10" in row["reason"]
    few_new = regions(10_000, [0.5, 0.295, 0.2, 0.005], 2, labels=("A", "B", "C", "D"))
    assert row_of(compare_to_reference(profile, few_new), "region")["severity"] == "none"


def test_rare_categories_beyond_the_limit_are_pooled():
    frame = pd.DataFrame({"region": ["A"] * 60 + ["B"] * 30 + ["C"] * 6 + ["D"] * 4})
    profile = build_reference_profile(frame, REGION, max_categories=2)
    assert profile["features"][0]["categories"] == {"A": 0.6, "B": 0.3}
    assert profile["features"][0]["other_share"] == pytest.approx(0.1)
    row = row_of(compare_to_reference(profile, frame), "region")
    assert row["psi"] == pytest.approx(0.0, abs=1e-12)


def test_category_codes_match_whether_read_as_int_or_float():
    profile = build_reference_profile(pd.DataFrame({"region": [1, 2, 3, 3]}), REGION)
    as_floats = pd.DataFrame({"region": [1.0, 2.0, 3.0, 3.0]})
    assert row_of(compare_to_reference(profile, as_floats), "region")["psi"] == 0.0


# --- thresholds -----------------------------------------------------------------------------------------


def test_each_threshold_on_both_sides():
    profile = build_reference_profile(normal_frame(20_000, 1), NUMERIC)
    batch = normal_frame(20_000, 2, shift=0.3)
    measured = row_of(compare_to_reference(profile, batch), "x")
    psi, ks = measured["psi"], measured["ks_statistic"]
    assert 0.05 < psi < 0.2 and 0.05 < ks < 0.2

    def severity(**thresholds) -> str:
        return row_of(compare_to_reference(profile, batch, DriftThresholds(**thresholds)), "x")["severity"]

    assert severity(psi_warn=psi + 0.01, psi_alert=psi + 0.02, **PSI_ONLY) == "none"
    assert severity(psi_warn=psi - 0.01, psi_alert=psi + 0.01, **PSI_ONLY) == "warn"
    assert severity(psi_warn=psi - 0.02, psi_alert=psi - 0.01, **PSI_ONLY) == "alert"
    assert severity(psi_warn=1.0, psi_alert=1.0, ks_alert=ks + 0.01) == "none"
    assert severity(psi_warn=1.0, psi_alert=1.0, ks_alert=ks - 0.01) == "alert"


def test_warn_is_not_drift_and_thresholds_are_validated():
    profile = build_reference_profile(normal_frame(20_000, 1), NUMERIC)
    report = compare_to_reference(profile, normal_frame(20_000, 2, shift=0.3), DriftThresholds(psi_warn=0.05))
    assert report["severity"].tolist() == ["warn"]
    assert report["drifted"].tolist() == [False]
    assert report["reason"].iloc[0].startswith("PSI 0.")
    with pytest.raises(ValueError, match="psi_warn"):
        DriftThresholds(psi_warn=0.3, psi_alert=0.2)


# --- profiles, scores, summaries ------------------------------------------------------------------------


def test_profile_survives_a_json_round_trip_with_identical_results():
    rng = np.random.default_rng(4)
    features = [*NUMERIC, FeatureSpec(name="coded"), *REGION]
    reference = pd.DataFrame(
        {
            "x": rng.normal(size=5000),
            "coded": rng.integers(0, 4, 5000),
            "region": rng.choice(["A", "B"], 5000),
        }
    )
    reference.loc[:99, "x"] = np.nan
    current = reference.assign(x=reference["x"] * 1.3, region=rng.choice(["A", "B", "Z"], 5000))
    profile = build_reference_profile(reference, features)
    stored = json.loads(json.dumps(profile, allow_nan=False))
    pd.testing.assert_frame_equal(compare_to_reference(stored, current), compare_to_reference(profile, current))


def test_score_drift():
    rng = np.random.default_rng(6)
    profile = build_score_profile(rng.beta(2, 20, 20_000))
    json.dumps(profile, allow_nan=False)
    stable = score_drift(profile, rng.beta(2, 20, 20_000))
    assert stable["severity"] == "none" and stable["psi"] < 0.01
    inflated = score_drift(profile, rng.beta(2, 20, 20_000) * 1.5)
    assert inflated["severity"] == "alert" and inflated["drifted"]
    assert inflated["ks_statistic"] > 0.15
    assert set(stable) == {"psi", "ks_statistic", "severity", "drifted", "reason"}


def test_summary_of_a_report():
    rng = np.random.default_rng(7)
    features = [FeatureSpec(name=name) for name in ("a", "b", "c", "d")]
    reference = pd.DataFrame({name: rng.normal(size=5000) for name in "abcd"})
    current = pd.DataFrame({name: rng.normal(size=5000) for name in "abcd"}).assign(a=lambda f: f["a"] + 2)
    current["d"] = np.nan
    summary = summarize_drift(compare_to_reference(build_reference_profile(reference, features), current))
    assert summary["drifted_features"] == ["a", "d"]
    assert summary["drifted_count"] == 2
    assert summary["drifted_share"] == 0.5
    assert summary["max_psi_feature"] == "a" and summary["max_psi"] > 1
    json.dumps(summary)


def test_missing_columns_and_bad_inputs_are_errors():
    profile = build_reference_profile(normal_frame(100, 1), NUMERIC)
    with pytest.raises(KeyError, match="x"):
        compare_to_reference(profile, pd.DataFrame({"y": [1.0]}))
    with pytest.raises(ValueError, match="empty"):
        compare_to_reference(profile, normal_frame(0, 1))
    with pytest.raises(ValueError, match="format"):
        compare_to_reference({**profile, "format_version": 99}, normal_frame(10, 1))
    with pytest.raises(ValueError, match="bins"):
        build_reference_profile(normal_frame(100, 1), NUMERIC, bins=1)


# --- the bundled caravan data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caravan_features():
    """The bundled caravan export under the use case's readable feature names.

    Features the use case derives in dbt (such as portfolio totals) are not in the export; they are left out.
    """
    use_case = get_use_case("caravan")
    dictionary = use_case.load_data_dictionary()
    raw = pd.read_csv(resolve_project_path(use_case.source.path))
    frame = raw.rename(columns=dict(zip(dictionary["source_column"], dictionary["feature_name"], strict=True)))
    exported = [feature for feature in use_case.features if feature.name in frame.columns]
    assert "avg_age_class" in {feature.name for feature in exported}
    assert len(exported) > 0.8 * len(use_case.features)
    return frame, exported


def test_caravan_data_against_itself_does_not_drift(caravan_features):
    frame, features = caravan_features
    profile = build_reference_profile(frame, features)
    report = compare_to_reference(profile, frame)
    assert len(report) == len(features)
    assert set(report["type"]) == {"numeric", "categorical"}
    assert (report["severity"] == "none").all()
    assert (report["psi"] == 0).all()
    for entry in profile["features"]:
        if entry["type"] == "numeric":
            assert entry["bin_edges"] == sorted(set(entry["bin_edges"]))  # ties deduplicated
            assert sum(entry["bin_shares"]) == pytest.approx(1.0)


def test_caravan_younger_age_classes_drift_and_nothing_else(caravan_features):
    frame, features = caravan_features
    profile = build_reference_profile(frame, features)
    younger = frame.assign(avg_age_class=(frame["avg_age_class"] - 1).clip(lower=1))  # 3 -> 2, 2 -> 1, ...
    report = compare_to_reference(profile, younger).set_index("feature")
    assert report.loc["avg_age_class", "severity"] == "alert"
    assert report.loc["avg_age_class", "current_mean"] < report.loc["avg_age_class", "reference_mean"]
    others = report.drop(index="avg_age_class")
    assert (others["severity"] == "none").all()
    assert summarize_drift(report.reset_index())["drifted_features"] == ["avg_age_class"]
