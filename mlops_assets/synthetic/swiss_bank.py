"""Synthetic customers of a Swiss retail bank and their purchases of "product A".

The story: the typical buyer of product A used to be 40-50, urban and a long-time customer; now many
buyers are under 30, digital and new to the bank. `persona_shift` in [0, 1] moves between the two
worlds (0 = old, 1 = new). It acts twice, like real drift does:

- population: more customers are young (a young age component grows from 18% to 48% of the mix),
  more are recent joiners, and everyone logs in a bit more often;
- behaviour: the ground-truth probability of buying, `true_propensity`, mixes the old buyer
  persona's and the new one's, with weights 1 - persona_shift and persona_shift.

An economic *regime change* (`regime` in [0, 1], 0 = the old economy) acts like the macro
indicators of a real campaign data set: the policy interest rate, the unemployment rate and consumer
confidence recorded with each customer (the values at the contact date) move together for every
customer of the later periods, and the buyer changes with them: in the new regime product A sells to
older savers with high balances and an investment account and without a mortgage, the opposite of
the old 45-year-old urban persona. Calendar features are part of the data too: `contact_month`
(spread over the year, or one month for a batch of that month: `month`) and `contact_weekday`;
buying is a little likelier in the winter months (a seasonal effect a model learns from a year of data).

Reproducibility: row r of the population defined by `seed` always has the same values, however the
rows are chunked. Rows are grouped in fixed blocks of BLOCK_SIZE; block b draws from its own
generator, `SeedSequence(seed, spawn_key=(b,))`, which is exactly `SeedSequence(seed).spawn(b + 1)[b]`,
so any block is reachable without generating the ones before it. `chunk_size` only decides how rows
are handed out, and `id_offset` selects rows id_offset .. id_offset + n - 1 of the same population.
The random numbers do not depend on `persona_shift`: the same seed at two shifts gives the same
customers moved by the shift, not unrelated ones.

Column types are compact (int8/int16/float32/bool; `customer_id` int64 = row number + 1); the
canton and settlement type are pandas categoricals, written to Parquet as dictionary-encoded strings:
one byte per row in memory instead of a Python string, and DuckDB reads them as plain VARCHAR.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BLOCK_SIZE = 50_000  # rows per random stream; fixed, part of the data's definition (250k chunks = 5 blocks)

# Canton, population in thousands (FSO, end of 2023, rounded), share of customers living in a city
# and in a rural municipality (rough, for a plausible mix; the rest is suburban/agglomeration).
CANTON_TABLE = (
    ("ZH", 1605, 0.55, 0.08),
    ("BE", 1063, 0.35, 0.25),
    ("VD", 845, 0.45, 0.15),
    ("AG", 728, 0.20, 0.25),
    ("SG", 533, 0.30, 0.25),
    ("GE", 515, 0.80, 0.02),
    ("LU", 424, 0.35, 0.20),
    ("TI", 358, 0.40, 0.20),
    ("VS", 357, 0.20, 0.40),
    ("FR", 334, 0.20, 0.35),
    ("BL", 294, 0.30, 0.10),
    ("TG", 289, 0.15, 0.40),
    ("SO", 284, 0.20, 0.25),
    ("GR", 203, 0.20, 0.45),
    ("BS", 200, 0.95, 0.00),
    ("NE", 177, 0.40, 0.20),
    ("SZ", 166, 0.15, 0.35),
    ("ZG", 131, 0.45, 0.10),
    ("SH", 85, 0.40, 0.20),
    ("JU", 74, 0.15, 0.50),
    ("AR", 56, 0.10, 0.50),
    ("NW", 44, 0.10, 0.40),
    ("GL", 42, 0.05, 0.55),
    ("OW", 39, 0.05, 0.55),
    ("UR", 38, 0.05, 0.60),
    ("AI", 16, 0.00, 0.80),
)
CANTONS = tuple(row[0] for row in CANTON_TABLE)
CANTON_WEIGHTS = np.array([row[1] for row in CANTON_TABLE], dtype=float) / sum(row[1] for row in CANTON_TABLE)
URBAN_SHARE = np.array([row[2] for row in CANTON_TABLE])
RURAL_SHARE = np.array([row[3] for row in CANTON_TABLE])
SETTLEMENTS = ("urban", "suburban", "rural")

MIN_AGE, MAX_AGE = 18, 95
MAX_PRODUCTS = 10
MAX_LOGINS = 300

# Macro indicators at the contact date: (old-regime level, new-regime level, spread between customers).
# The spread is within-period variation (contact dates differ); the regime moves every level at once
# by several spreads.
MACRO = {
    "interest_rate": (1.0, 3.5, 0.3),  # policy rate, percent
    "unemployment_rate": (2.4, 4.6, 0.3),  # percent
    "consumer_confidence": (0.0, -35.0, 6.0),  # index, 0 = long-run average
}
SEASONAL_AMPLITUDE = 0.25  # buying is up to 25% likelier in December than on average, 25% less in June

COLUMNS = (
    "customer_id",
    "age",
    "settlement",
    "canton",
    "relationship_years",
    "products_held",
    "balance_chf",
    "digital_logins_per_month",
    "has_mortgage",
    "has_investment_account",
    "salary_account",
    "interest_rate",
    "unemployment_rate",
    "consumer_confidence",
    "contact_month",
    "contact_weekday",
    "bought_product_a",
)
SCHEMA = pa.schema(
    [
        ("customer_id", pa.int64()),
        ("age", pa.int8()),
        ("settlement", pa.dictionary(pa.int8(), pa.string())),
        ("canton", pa.dictionary(pa.int8(), pa.string())),
        ("relationship_years", pa.int8()),
        ("products_held", pa.int8()),
        ("balance_chf", pa.float32()),
        ("digital_logins_per_month", pa.int16()),
        ("has_mortgage", pa.bool_()),
        ("has_investment_account", pa.bool_()),
        ("salary_account", pa.bool_()),
        ("interest_rate", pa.float32()),
        ("unemployment_rate", pa.float32()),
        ("consumer_confidence", pa.float32()),
        ("contact_month", pa.int8()),
        ("contact_weekday", pa.int8()),
        ("bought_product_a", pa.bool_()),
    ]
)


def _check_shift(persona_shift: float, name: str = "persona_shift") -> float:
    if not 0.0 <= persona_shift <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {persona_shift}")
    return float(persona_shift)


def _check_month(month: int | None) -> int | None:
    if month is not None and not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12 or None (the whole year), got {month}")
    return month


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def true_propensity(frame: pd.DataFrame, persona_shift: float, regime: float = 0.0) -> np.ndarray:
    """Ground-truth probability that each customer buys product A, at the given shift.

    A mixture of two buyer personas, each a logistic model: the old one (peaks at 40-50, urban, long
    relationship, salary account) with weight 1 - persona_shift, the new one (under 30, frequent
    digital user, new to the bank) with weight persona_shift. Mixing probabilities rather than
    log-odds keeps the buyer rate near 8% all along the shift instead of dipping in the middle.

    `regime` mixes in, the same way, the new economy's buyer (older saver, high balance, investment
    account, no mortgage). Frames with `contact_month` get the seasonal factor on top.
    """
    shift = _check_shift(persona_shift)
    regime = _check_shift(regime, "regime")
    age = frame["age"].to_numpy(dtype=np.float64)
    years = np.minimum(frame["relationship_years"].to_numpy(dtype=np.float64), 25.0)
    logins = frame["digital_logins_per_month"].to_numpy(dtype=np.float64)
    urban = (frame["settlement"] == "urban").to_numpy(dtype=np.float64)
    salary = frame["salary_account"].to_numpy(dtype=np.float64)

    old_world = (
        -5.0
        + 2.0 * np.exp(-0.5 * ((age - 45.0) / 5.0) ** 2)  # peaks at 45, faint outside 35-55
        + 0.8 * urban
        + 0.09 * years
        + 0.4 * salary
    )
    new_world = (
        -4.6
        + 2.2 * _logistic((30.0 - age) / 2.5)  # under 30
        + 0.45 * np.log1p(logins)
        - 0.08 * years
        + 0.3 * urban
    )
    persona = (1.0 - shift) * _logistic(old_world) + shift * _logistic(new_world)
    if regime > 0:
        balance = np.log(np.maximum(frame["balance_chf"].to_numpy(dtype=np.float64), 1.0))
        saver = (
            -3.5
            + 2.0 * _logistic((age - 58.0) / 4.0)  # 55 and older
            + 0.6 * (balance - 10.0)
            + 0.7 * frame["has_investment_account"].to_numpy(dtype=np.float64)
            - 0.8 * frame["has_mortgage"].to_numpy(dtype=np.float64)
            - 0.5 * urban
        )
        persona = (1.0 - regime) * persona + regime * _logistic(saver)
    if "contact_month" in frame.columns:
        month = frame["contact_month"].to_numpy(dtype=np.float64)
        persona = np.minimum(persona * (1.0 + SEASONAL_AMPLITUDE * np.cos(2 * np.pi * month / 12.0)), 1.0)
    return persona


def _block_columns(
    seed: int, block: int, persona_shift: float, regime: float = 0.0, month: int | None = None
) -> dict[str, np.ndarray]:
    """All columns of rows block * BLOCK_SIZE ... (block + 1) * BLOCK_SIZE - 1.

    Every random draw happens in a fixed order and size regardless of persona_shift, so the shift
    only changes how the same random numbers are turned into customers. The macro and calendar columns
    draw after the purchase's random number, so they leave the older columns as they were.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    n, shift = BLOCK_SIZE, persona_shift

    canton = rng.choice(len(CANTONS), size=n, p=CANTON_WEIGHTS).astype(np.int8)
    place = rng.random(n)
    settlement = np.where(place < URBAN_SHARE[canton], 0, np.where(place >= 1.0 - RURAL_SHARE[canton], 2, 1)).astype(
        np.int8
    )

    # Age: a young component (mostly 20-35) mixed with an adult one; the shift grows the young one.
    young = rng.random(n) < 0.18 + 0.30 * shift
    young_age = MIN_AGE + rng.gamma(2.5, 3.5, n)
    adult_age = rng.normal(52.0, 15.0, n)
    age = np.clip(np.rint(np.where(young, young_age, adult_age)), MIN_AGE, MAX_AGE)

    # Relationship: a share of the years since 18, except recent joiners (digital onboarding).
    recent = rng.random(n) < 0.10 + 0.25 * shift
    tenure_share = rng.beta(2.0, 2.0, n)
    recent_years = rng.exponential(1.5, n)
    years = np.floor(np.where(recent, recent_years, (age - MIN_AGE) * tenure_share))
    years = np.minimum(years, age - MIN_AGE)

    urban = settlement == 0
    login_rate = np.exp(2.3 - 0.035 * (age - MIN_AGE) + 0.5 * shift + 0.3 * urban)
    logins = np.minimum(rng.poisson(login_rate * rng.gamma(2.0, 0.5, n)), MAX_LOGINS)

    salary = rng.random(n) < np.where(age < 65, 0.62, 0.20) + 0.10 * (years > 5)
    products = np.minimum(1 + rng.poisson(0.3 + 0.05 * np.minimum(years, 30) + 0.6 * salary), MAX_PRODUCTS)
    mortgage_age = np.exp(-0.5 * ((age - 50.0) / 12.0) ** 2)
    mortgage = rng.random(n) < _logistic(-2.6 + 2.2 * mortgage_age + 0.6 * ~urban + 0.4 * salary)
    log_balance = 8.4 + 0.025 * (age - MIN_AGE) + 0.15 * products + 0.4 * salary + rng.normal(0.0, 1.2, n)
    balance = np.round(np.exp(log_balance), 2)
    investment = rng.random(n) < _logistic(-1.9 + 0.5 * (log_balance - 9.5) + 0.02 * (age - MIN_AGE))

    columns = {
        "customer_id": block * BLOCK_SIZE + np.arange(1, n + 1, dtype=np.int64),
        "age": age.astype(np.int8),
        "settlement": settlement,
        "canton": canton,
        "relationship_years": years.astype(np.int8),
        "products_held": products.astype(np.int8),
        "balance_chf": balance.astype(np.float32),
        "digital_logins_per_month": logins.astype(np.int16),
        "has_mortgage": mortgage,
        "has_investment_account": investment,
        "salary_account": salary,
    }
    purchase_draw = rng.random(n)
    for name, (old, new, spread) in MACRO.items():
        columns[name] = np.round(old + regime * (new - old) + rng.normal(0.0, spread, n), 2).astype(np.float32)
    months = rng.integers(1, 13, n) if month is None else np.full(n, month)
    columns["contact_month"] = months.astype(np.int8)
    columns["contact_weekday"] = rng.integers(1, 6, n).astype(np.int8)
    columns["bought_product_a"] = purchase_draw < true_propensity(_to_frame(columns), shift, regime)
    return columns


def _to_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            **columns,
            "settlement": pd.Categorical.from_codes(columns["settlement"], categories=list(SETTLEMENTS)),
            "canton": pd.Categorical.from_codes(columns["canton"], categories=list(CANTONS)),
        }
    )
    return frame[[c for c in COLUMNS if c in frame.columns]]


def iter_customers(
    n_customers: int,
    *,
    seed: int = 0,
    chunk_size: int = 250_000,
    persona_shift: float = 0.0,
    id_offset: int = 0,
    regime: float = 0.0,
    month: int | None = None,
) -> Iterator[pd.DataFrame]:
    """Customers id_offset + 1 ... id_offset + n_customers, in DataFrames of chunk_size rows (the last
    may be shorter). Their concatenation depends only on seed, persona_shift, regime, month,
    id_offset and n."""
    shift = _check_shift(persona_shift)
    regime = _check_shift(regime, "regime")
    month = _check_month(month)
    if n_customers < 0 or id_offset < 0 or chunk_size < 1:
        raise ValueError("n_customers and id_offset must be >= 0 and chunk_size >= 1")
    start, end = id_offset, id_offset + n_customers
    pending: list[dict[str, np.ndarray]] = []
    pending_rows = 0
    for block in range(start // BLOCK_SIZE, -(-end // BLOCK_SIZE)):
        block_start = block * BLOCK_SIZE
        rows = slice(max(start, block_start) - block_start, min(end, block_start + BLOCK_SIZE) - block_start)
        columns = _block_columns(seed, block, shift, regime, month)
        pending.append({name: values[rows] for name, values in columns.items()})
        pending_rows += rows.stop - rows.start
        # Memory stays within one chunk plus one block, whatever n_customers is.
        while pending_rows >= chunk_size:
            merged = {name: np.concatenate([part[name] for part in pending]) for name in COLUMNS}
            yield _to_frame({name: values[:chunk_size] for name, values in merged.items()})
            pending = [{name: values[chunk_size:] for name, values in merged.items()}]
            pending_rows -= chunk_size
    if pending_rows:
        yield _to_frame({name: np.concatenate([part[name] for part in pending]) for name in COLUMNS})


def write_parquet(
    path: Path | str,
    n_customers: int,
    *,
    seed: int = 0,
    chunk_size: int = 250_000,
    persona_shift: float = 0.0,
) -> Path:
    """Stream n_customers to a Parquet file, one row group per chunk, with bounded memory.

    Written under a hidden temporary name in the target folder and renamed when complete, so
    readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(temporary, SCHEMA, compression="zstd") as writer:
            for chunk in iter_customers(n_customers, seed=seed, chunk_size=chunk_size, persona_shift=persona_shift):
                writer.write_table(pa.Table.from_pandas(chunk, schema=SCHEMA, preserve_index=False))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic Swiss bank customers to a Parquet file.")
    parser.add_argument("--customers", type=int, required=True, help="number of customers")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--persona-shift", type=float, default=0.0, help="0 = old buyer profile, 1 = new")
    parser.add_argument("--chunk-size", type=int, default=250_000, help="rows per row group")
    args = parser.parse_args(argv)
    path = write_parquet(
        args.out, args.customers, seed=args.seed, chunk_size=args.chunk_size, persona_shift=args.persona_shift
    )
    print(f"wrote {args.customers:,} customers to {path}")


if __name__ == "__main__":
    main()
