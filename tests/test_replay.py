import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.evaluation import classification_metrics
from mlops_assets.ml.training import FeatureSpec, TrainingParams, predict_proba, train_propensity_model
from mlops_assets.replay import CARAVAN_SCENARIOS, DEFAULT_SOURCE, make_batch, read_source, write_batch

LARGE = 20_000  # big enough that sampling error is a fraction of the tolerances below


@pytest.fixture(scope="module")
def source() -> pd.DataFrame:
    return read_source()


def buyer_rate(batch) -> float:
    return float((batch.outcomes["Purchase"] == "Yes").mean())


def young_and_old_buyer_rates(batch) -> tuple[float, float]:
    young = (batch.customers["MGEMLEEF"] <= 2).to_numpy()
    bought = (batch.outcomes["Purchase"] == "Yes").to_numpy()
    return float(bought[young].mean()), float(bought[~young].mean())


@pytest.mark.parametrize("scenario", CARAVAN_SCENARIOS)
def test_same_arguments_give_identical_batches(source, scenario):
    first = make_batch(source, scenario, batch_number=3, seed=7, strength=0.6, size=500)
    second = make_batch(source, scenario, batch_number=3, seed=7, strength=0.6, size=500)
    pd.testing.assert_frame_equal(first.customers, second.customers)
    pd.testing.assert_frame_equal(first.outcomes, second.outcomes)
    other = make_batch(source, scenario, batch_number=4, seed=7, strength=0.6, size=500)
    assert not first.customers.drop(columns="customer_id").equals(other.customers.drop(columns="customer_id"))


def test_customer_ids_are_unique_across_batches(source):
    batches = [make_batch(source, "stationary", batch_number=n, size=1000) for n in range(3)]
    ids = pd.concat([b.customers["customer_id"] for b in batches])
    assert ids.is_unique
    for batch in batches:
        assert batch.outcomes["customer_id"].tolist() == batch.customers["customer_id"].tolist()


def test_export_has_the_source_columns_and_a_customer_id(source, tmp_path):
    batch = make_batch(source, "persona_shift", batch_number=12, size=300)
    expected = ["customer_id"] + [c for c in source.columns if c != "Purchase"]
    assert list(batch.customers.columns) == expected
    assert list(batch.outcomes.columns) == ["customer_id", "Purchase"]
    assert set(batch.outcomes["Purchase"]) <= {"Yes", "No"}

    paths = write_batch(batch, tmp_path)
    assert {p.name for p in paths.values()} == {"customers_0012.csv", "outcomes_0012.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["customers_0012.csv", "outcomes_0012.csv"]
    pd.testing.assert_frame_equal(pd.read_csv(paths["customers"]), batch.customers)
    pd.testing.assert_frame_equal(pd.read_csv(paths["outcomes"]), batch.outcomes)
    # Same CSV dialect as the bundled export: plain commas, unquoted integers, \n line ends.
    bundled_header = DEFAULT_SOURCE.read_text().splitlines()[0]
    header, first_row = paths["customers"].read_bytes().split(b"\n")[:2]
    assert header.decode() == "customer_id," + bundled_header.removesuffix(",Purchase")
    assert first_row.decode().split(",")[1:] == [str(v) for v in batch.customers.iloc[0, 1:]]


def test_stationary_keeps_the_age_mix_and_buyer_rate(source):
    batch = make_batch(source, "stationary", batch_number=1, size=LARGE)
    # Tolerance: 4 binomial standard errors of a proportion estimated from LARGE draws.
    source_rate = float((source["Purchase"] == "Yes").mean())
    assert abs(buyer_rate(batch) - source_rate) < 4 * np.sqrt(source_rate * (1 - source_rate) / LARGE)
    source_mix = source["MGEMLEEF"].value_counts(normalize=True)
    batch_mix = batch.customers["MGEMLEEF"].value_counts(normalize=True).reindex(source_mix.index, fill_value=0)
    tolerance = 4 * np.sqrt(source_mix * (1 - source_mix) / LARGE)
    assert (abs(batch_mix - source_mix) < tolerance).all()


def test_persona_shift_moves_age_and_buyers_toward_the_young(source):
    source_young_share = float((source["MGEMLEEF"] <= 2).mean())
    young_shares, rate_gaps = [], []
    for strength in (0.3, 0.9):
        batch = make_batch(source, "persona_shift", batch_number=1, size=LARGE, strength=strength)
        young_shares.append(float((batch.customers["MGEMLEEF"] <= 2).mean()))
        young_rate, old_rate = young_and_old_buyer_rates(batch)
        assert young_rate > old_rate
        rate_gaps.append(young_rate - old_rate)
        assert 0.04 <= buyer_rate(batch) <= 0.15
    # Differences far beyond sampling error (~0.004 on shares, ~0.006 on rates at this size).
    assert source_young_share + 0.1 < young_shares[0] < young_shares[1] - 0.1
    assert rate_gaps[0] + 0.05 < rate_gaps[1]
    # The extremes stay within the intended buyer-rate band too.
    assert 0.04 <= buyer_rate(make_batch(source, "persona_shift", batch_number=2, size=LARGE, strength=1.0)) <= 0.15


def test_data_bug_empty_column_blanks_the_column(source, tmp_path):
    clean = make_batch(source, "stationary", batch_number=5, size=400)
    broken = make_batch(source, "data_bug", batch_number=5, size=400, bug="empty_column")
    assert broken.customers["MGEMLEEF"].isna().all()
    other = make_batch(source, "data_bug", batch_number=5, size=400, bug="empty_column", bug_column="MOSTYPE")
    assert other.customers["MOSTYPE"].isna().all() and other.customers["MGEMLEEF"].notna().all()
    # Everything else is an ordinary batch; the blank column is written as empty CSV fields.
    assert broken.customers.drop(columns="MGEMLEEF").notna().all().all()
    assert set(broken.outcomes["Purchase"]) <= {"Yes", "No"}
    path = write_batch(broken, tmp_path)["customers"]
    assert pd.read_csv(path)["MGEMLEEF"].isna().all()
    assert len(clean.customers) == len(broken.customers)


def test_data_bug_unit_change_multiplies_by_ten(source):
    broken = make_batch(source, "data_bug", batch_number=6, size=2000, bug="unit_change")
    rows = make_batch(source, "data_bug", batch_number=6, size=2000, bug="empty_column", bug_column="MOSTYPE")
    # Same draw (same scenario, batch and seed), so the untouched column shows the original values.
    assert (broken.customers["PPERSAUT"] == rows.customers["PPERSAUT"] * 10).all()
    assert broken.customers["PPERSAUT"].max() > 9
    other = make_batch(source, "data_bug", batch_number=6, size=2000, bug="unit_change", bug_column="MKOOPKLA")
    assert (other.customers["MKOOPKLA"] == rows.customers["MKOOPKLA"] * 10).all()


def test_invalid_arguments_are_rejected(source):
    with pytest.raises(ValueError, match="unknown scenario"):
        make_batch(source, "drift", batch_number=0)
    with pytest.raises(ValueError, match="strength"):
        make_batch(source, "persona_shift", batch_number=0, strength=1.5)
    with pytest.raises(ValueError, match="unknown bug"):
        make_batch(source, "data_bug", batch_number=0, bug="typo")
    with pytest.raises(KeyError, match="bug column"):
        make_batch(source, "data_bug", batch_number=0, bug_column="Purchase")


FAST = TrainingParams(
    learning_rate=0.05,
    num_leaves=7,
    min_child_samples=50,
    max_rounds=300,
    early_stopping_rounds=50,
    num_threads=1,  # two OpenMP threads slow down 20x when the CPUs are busy (other tests, pipelines)
)


def labelled(batch) -> pd.DataFrame:
    frame = batch.customers.merge(batch.outcomes, on="customer_id")
    return frame.assign(bought=(frame.pop("Purchase") == "Yes").astype(int))


def test_persona_shift_hurts_the_old_model_and_retraining_helps(source):
    # Three disjoint customer pools, so no evaluated customer was ever seen in training:
    # A trains the original model, B feeds the shifted training batches, C the evaluation batches.
    order = np.random.default_rng(0).permutation(len(source))
    pool_a, pool_b, pool_c = (source.iloc[part].reset_index(drop=True) for part in np.split(order, [2900, 4400]))
    features = [FeatureSpec(name=c) for c in source.columns if c != "Purchase"]
    original = pool_a.assign(bought=(pool_a.pop("Purchase") == "Yes").astype(int))

    def auc_on(model, batch) -> float:
        frame = labelled(batch)
        scores = predict_proba(model.booster, frame, features, model.score_offset)
        return classification_metrics(frame["bought"].to_numpy(), scores)["roc_auc"]

    old_model = train_propensity_model(original.iloc[:2200], original.iloc[2200:], features, "bought", FAST)
    stationary = make_batch(pool_c, "stationary", batch_number=100, size=3000)
    shifted = make_batch(pool_c, "persona_shift", batch_number=101, size=3000, strength=0.8)
    old_on_stationary, old_on_shifted = auc_on(old_model, stationary), auc_on(old_model, shifted)
    # Over six different pool splits: 0.69-0.80 on stationary vs 0.49-0.58 on shifted.
    assert old_on_stationary > 0.68
    assert old_on_shifted < old_on_stationary - 0.1

    retrain = pd.concat(
        [original, labelled(make_batch(pool_b, "persona_shift", batch_number=1, size=3000, strength=0.8))]
    )
    validation = labelled(make_batch(pool_b, "persona_shift", batch_number=2, size=1500, strength=0.8))
    new_model = train_propensity_model(retrain, validation, features, "bought", FAST)
    # The retrained model scored 0.68-0.72 on the fresh shifted batch over the same six splits.
    assert auc_on(new_model, shifted) > old_on_shifted + 0.08
