from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mlops_assets.synthetic import swiss_bank
from mlops_assets.synthetic.swiss_bank import (
    BLOCK_SIZE,
    CANTONS,
    COLUMNS,
    SCHEMA,
    SETTLEMENTS,
    iter_customers,
    true_propensity,
    write_parquet,
)

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = ROOT / "dbt_project" / "seeds" / "swiss_bank" / "swiss_bank_data_dictionary.csv"
LARGE = 200_000  # buyer-rate standard error ~0.0006: far below every margin tested here


def customers(n: int, **kwargs) -> pd.DataFrame:
    return pd.concat(iter_customers(n, **kwargs), ignore_index=True)


@pytest.fixture(scope="module")
def worlds() -> dict[float, pd.DataFrame]:
    return {shift: customers(LARGE, seed=3, persona_shift=shift) for shift in (0.0, 0.5, 1.0)}


def test_data_does_not_depend_on_chunk_size():
    n = 2 * BLOCK_SIZE + 1_234  # spans a partial block
    reference = customers(n, seed=11, persona_shift=0.3)
    for chunk_size in (BLOCK_SIZE, 7_777, 250_000):
        chunks = list(iter_customers(n, seed=11, persona_shift=0.3, chunk_size=chunk_size))
        assert [len(c) for c in chunks[:-1]] == [chunk_size] * (len(chunks) - 1)
        pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), reference)


def test_id_offset_selects_rows_of_the_same_population():
    full = customers(90_000, seed=5)
    part = customers(30_000, seed=5, id_offset=45_000, chunk_size=8_000)
    pd.testing.assert_frame_equal(part, full.iloc[45_000:75_000].reset_index(drop=True))


def test_seed_changes_the_data_and_shift_reuses_the_random_numbers():
    first, other_seed = customers(5_000, seed=1), customers(5_000, seed=2)
    assert not first["age"].equals(other_seed["age"])
    shifted = customers(5_000, seed=1, persona_shift=1.0)
    # Same seed, other shift: same draws, so the canton (untouched by the shift) is identical.
    assert first["canton"].equals(shifted["canton"])
    assert shifted["age"].mean() < first["age"].mean()


def test_dtypes_and_value_ranges(worlds):
    frame = worlds[0.5]
    assert tuple(frame.columns) == COLUMNS
    assert frame["customer_id"].tolist() == list(range(1, LARGE + 1))
    expected = {
        "customer_id": "int64",
        "age": "int8",
        "relationship_years": "int8",
        "products_held": "int8",
        "balance_chf": "float32",
        "digital_logins_per_month": "int16",
        "has_mortgage": "bool",
        "has_investment_account": "bool",
        "salary_account": "bool",
        "bought_product_a": "bool",
    }
    assert {c: str(frame[c].dtype) for c in expected} == expected
    assert list(frame["settlement"].cat.categories) == list(SETTLEMENTS)
    assert list(frame["canton"].cat.categories) == list(CANTONS) and len(CANTONS) == 26
    assert frame["age"].between(18, 95).all()
    assert (frame["relationship_years"] >= 0).all()
    assert (frame["relationship_years"] <= frame["age"] - 18).all()
    assert frame["products_held"].between(1, 10).all()
    assert (frame["balance_chf"] > 0).all()
    assert frame["digital_logins_per_month"].between(0, 300).all()
    assert frame[["settlement", "canton"]].notna().all().all()
    # Canton mix follows population: Zurich about 18%, Appenzell Innerrhoden about 0.2%.
    shares = frame["canton"].value_counts(normalize=True)
    assert 0.16 < shares["ZH"] < 0.20 and shares["AI"] < 0.005


def test_buyer_rate_and_labels_follow_the_ground_truth(worlds):
    for shift, frame in worlds.items():
        rate = frame["bought_product_a"].mean()
        assert 0.05 <= rate <= 0.10, shift
        # Labels are Bernoulli draws of the ground truth: 4 standard errors of a mean of LARGE draws.
        assert abs(rate - true_propensity(frame, shift).mean()) < 4 * np.sqrt(rate * (1 - rate) / LARGE)


def test_persona_shift_turns_the_buyer_profile_around(worlds):
    def segment_rates(frame: pd.DataFrame) -> tuple[float, float]:
        bought = frame["bought_product_a"]
        classic = frame["age"].between(40, 50) & (frame["settlement"] == "urban")
        classic &= frame["relationship_years"] >= 10
        return bought[classic].mean(), bought[frame["age"] < 30].mean()

    classic_old, young_old = segment_rates(worlds[0.0])
    classic_new, young_new = segment_rates(worlds[1.0])
    assert classic_old > 3 * young_old  # measured ~0.32 vs ~0.02
    assert young_new > 3 * classic_new  # measured ~0.18 vs ~0.01
    # The population moves younger and the buyers with it.
    assert (worlds[1.0]["age"] < 30).mean() > (worlds[0.0]["age"] < 30).mean() + 0.1
    buyers_old, buyers_new = (w[w["bought_product_a"]] for w in (worlds[0.0], worlds[1.0]))
    assert (buyers_old["age"] < 30).mean() < 0.1 and (buyers_new["age"] < 30).mean() > 0.5


def test_true_propensity_is_a_probability_and_rejects_bad_shifts(worlds):
    truth = true_propensity(worlds[0.5], 0.5)
    assert truth.shape == (LARGE,) and ((truth > 0) & (truth < 1)).all()
    with pytest.raises(ValueError, match="persona_shift"):
        true_propensity(worlds[0.5], 1.5)
    with pytest.raises(ValueError, match="persona_shift"):
        next(iter_customers(10, persona_shift=-0.1))


def test_write_parquet_round_trip(tmp_path):
    path = write_parquet(tmp_path / "out" / "customers.parquet", 50_000, seed=4, chunk_size=20_000)
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_rows == 50_000 and metadata.num_row_groups == 3
    assert pq.read_schema(path).remove_metadata() == SCHEMA
    written = pq.read_table(path).to_pandas()
    pd.testing.assert_frame_equal(written, customers(50_000, seed=4))
    assert [p.name for p in path.parent.iterdir()] == ["customers.parquet"]  # no temporary left behind


def test_command_line_writes_the_file(tmp_path, capsys):
    out = tmp_path / "cli.parquet"
    swiss_bank.main(["--customers", "1000", "--out", str(out), "--seed", "2", "--persona-shift", "0.5"])
    assert pq.ParquetFile(out).metadata.num_rows == 1000
    assert "1,000 customers" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pq.read_table(out).to_pandas(), customers(1000, seed=2, persona_shift=0.5))


def test_data_dictionary_lists_exactly_the_generated_columns(worlds):
    dictionary = pd.read_csv(DICTIONARY)
    caravan = pd.read_csv(ROOT / "dbt_project" / "seeds" / "caravan" / "caravan_data_dictionary.csv", nrows=0)
    assert list(dictionary.columns) == list(caravan.columns)
    assert tuple(dictionary["source_column"]) == COLUMNS
    assert (dictionary["feature_name"] == dictionary["source_column"]).all()
    assert dictionary.set_index("source_column").loc["bought_product_a", "value_type"] == "target"
    # The documented ranges and allowed values hold for generated data at both ends of the shift.
    for frame in (worlds[0.0], worlds[1.0]):
        for row in dictionary.itertuples(index=False):
            column = frame[row.source_column]
            if not pd.isna(row.min_value):
                assert column.min() >= row.min_value, row.source_column
            if not pd.isna(row.max_value):
                assert column.max() <= row.max_value, row.source_column
            if isinstance(row.allowed_values, str):
                # as ingestion sees them: DuckDB writes booleans as true/false
                values = column.astype(str).str.lower() if row.data_type == "boolean" else column.astype(str)
                assert set(values) <= set(row.allowed_values.split("|")), row.source_column
