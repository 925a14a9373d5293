"""Replaying customers as batches over time, for the monitoring and retraining loop (drills, tests,
benchmarks). Two generators: `caravan` resamples the bundled customers; `swiss_bank` draws new
customers from the synthetic bank (mlops_assets/synthetic/swiss_bank.py), which has macro indicators
and calendar features.

Each batch is a customer export (the 85 source columns plus a `customer_id`) and, separately, the
campaign outcomes for those customers, which in production arrive later and flow back as labels.
Scenarios:

- `stationary`: customers resampled with replacement; each keeps its original outcome.
- `persona_shift`: the age mix moves toward young customers and the buyer profile with it: young
  customers (MGEMLEEF 1-2) become likelier to buy, mostly those without a car policy, while the old
  buyers (40+, car-policy holders) fade. `strength` in [0, 1] sets how far; at 0 the batch has the
  same distribution as `stationary`.
- `data_bug`: a stationary batch with a broken export: one column blank (`empty_column`) or a
  column multiplied by ten (`unit_change`; caravan: a contribution class, swiss_bank: the balance).
- `regime_change` (swiss_bank): from batch `change_batch` on, an economic regime change moves the
  interest rate, unemployment and consumer confidence of every customer together and changes who
  buys (`strength` = how far, reached after `ramp_batches`). Each batch is one calendar month.
- `seasonal` (swiss_bank): stationary customers, but each batch is one calendar month
  (contact_month, batch 1 = January): only the seasonal features shift.

Everything is a function of (scenario, batch_number, seed, strength, bug, size); no Dagster here.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SCENARIOS = ("stationary", "persona_shift", "data_bug", "regime_change", "seasonal")
CARAVAN_SCENARIOS = ("stationary", "persona_shift", "data_bug")
GENERATORS = ("caravan", "swiss_bank")
BUGS = ("empty_column", "unit_change")
DEFAULT_BUG_COLUMNS = {"empty_column": "MGEMLEEF", "unit_change": "PPERSAUT"}
SWISS_BANK_BUG_COLUMNS = {"empty_column": "balance_chf", "unit_change": "balance_chf"}
SWISS_BANK_TARGET = "bought_product_a"
# Batch b's customers are rows b * ID_STRIDE + 1 ... of the synthetic population: new customers,
# ids unique across batches and apart from the initial export's 1 ... n.
ID_STRIDE = 10_000_000

TARGET = "Purchase"
ID_COLUMN = "customer_id"
AGE_COLUMN = "MGEMLEEF"
CAR_COLUMN = "PPERSAUT"
DEFAULT_SOURCE = Path(__file__).resolve().parents[1] / "data" / "caravan" / "caravan.csv"

# persona_shift knobs, all scaled by strength s in [0, 1]. Measured on 200k-row batches: under-40s are
# 26% / 52% / 64% of a batch at s = 0 / 0.5 / 1, and buy at 6% / 13% / 21% while 40+ buy at
# 6% / 4% / 1%; the overall buyer rate is 6% / 9% / 14%.
YOUNG_MAX_AGE_CLASS = 2  # MGEMLEEF 1 = 20-30 years, 2 = 30-40 years
YOUNG_SAMPLING_BOOST = 4.0  # young customers are drawn (1 + 4 s) times as often
OLD_BUYER_FADE = 0.8  # an old buyer stays a buyer with probability 1 - 0.8 s
YOUNG_NEW_BUYER_RATE = 0.16  # a young non-buyer becomes a buyer with probability 0.16 s x tilt
# The new young buyers favour customers without a car policy (about half of all customers), the
# opposite of the old car-owner profile, so a model trained before the shift misranks them.
NEW_BUYER_TILT_NO_CAR, NEW_BUYER_TILT_CAR = 1.4, 0.6


@dataclass(frozen=True)
class ReplayBatch:
    customers: pd.DataFrame  # the export: customer_id, then the source columns in source order
    outcomes: pd.DataFrame  # customer_id, Purchase (Yes/No)
    batch_number: int
    scenario: str


def read_source(path: Path = DEFAULT_SOURCE) -> pd.DataFrame:
    """The bundled customers, as integers plus the Yes/No target."""
    return pd.read_csv(path)


def batch_rng(scenario: str, batch_number: int, seed: int) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process, and batches must replay identically.
    return np.random.default_rng([seed, batch_number, zlib.crc32(scenario.encode())])


def customer_ids(batch_number: int, size: int) -> list[str]:
    """Ids unique across batches: the batch number is part of every id."""
    return [f"B{batch_number:04d}-{i:06d}" for i in range(1, size + 1)]


def persona_shift_weights(age_class: np.ndarray, strength: float) -> np.ndarray:
    """Sampling weight per source customer: young ones drawn (1 + boost * strength) times as often."""
    young = age_class <= YOUNG_MAX_AGE_CLASS
    return np.where(young, 1.0 + YOUNG_SAMPLING_BOOST * strength, 1.0)


def persona_shift_buy_probability(
    age_class: np.ndarray, car_class: np.ndarray, bought: np.ndarray, strength: float
) -> np.ndarray:
    """Probability that a sampled customer buys in the shifted world.

    Starting from the customer's original outcome keeps part of the original relationship between
    the attributes and buying: young buyers stay buyers, old buyers stay with probability
    1 - fade * strength, and young non-buyers become buyers at a rate growing with strength.
    """
    young = age_class <= YOUNG_MAX_AGE_CLASS
    tilt = np.where(car_class == 0, NEW_BUYER_TILT_NO_CAR, NEW_BUYER_TILT_CAR)
    keep = np.where(young, 1.0, 1.0 - OLD_BUYER_FADE * strength)
    new = np.where(young, YOUNG_NEW_BUYER_RATE * strength * tilt, 0.0)
    return np.where(bought, keep, new)


def make_batch(
    source: pd.DataFrame,
    scenario: str,
    *,
    batch_number: int,
    size: int = 2000,
    seed: int = 0,
    strength: float = 0.5,
    bug: str = "empty_column",
    bug_column: str | None = None,
) -> ReplayBatch:
    """The next batch of customers and their outcomes under `scenario`, drawn from `source`.

    `source` is the bundled table (source columns plus Purchase Yes/No); a `customer_id` column in
    it is ignored. `strength` applies to persona_shift, `bug` and `bug_column` to data_bug.
    """
    if scenario not in CARAVAN_SCENARIOS:
        raise ValueError(
            f"unknown scenario {scenario!r} for the caravan replay; expected one of {', '.join(CARAVAN_SCENARIOS)} "
            "(regime_change and seasonal need macro and calendar columns: use the swiss_bank replay)"
        )
    if batch_number < 0 or size < 1:
        raise ValueError("batch_number must be >= 0 and size >= 1")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    missing = {TARGET, AGE_COLUMN, CAR_COLUMN} - set(source.columns)
    if missing:
        raise KeyError(f"source lacks columns: {', '.join(sorted(missing))}")
    labels = source[TARGET].to_numpy()
    if not np.isin(labels, ["Yes", "No"]).all():
        raise ValueError(f"{TARGET} must be Yes or No")
    columns = [c for c in source.columns if c not in (TARGET, ID_COLUMN)]

    rng = batch_rng(scenario, batch_number, seed)
    age_class = source[AGE_COLUMN].to_numpy()
    bought = labels == "Yes"
    if scenario == "persona_shift":
        weights = persona_shift_weights(age_class, strength)
        rows = rng.choice(len(source), size=size, replace=True, p=weights / weights.sum())
        probability = persona_shift_buy_probability(
            age_class[rows], source[CAR_COLUMN].to_numpy()[rows], bought[rows], strength
        )
        bought_now = rng.random(size) < probability
    else:
        rows = rng.integers(0, len(source), size=size)
        bought_now = bought[rows]

    ids = customer_ids(batch_number, size)
    customers = source[columns].iloc[rows].reset_index(drop=True)
    if scenario == "data_bug":
        customers = break_export(customers, bug, bug_column)
    customers.insert(0, ID_COLUMN, ids)
    outcomes = pd.DataFrame({ID_COLUMN: ids, TARGET: np.where(bought_now, "Yes", "No")})
    return ReplayBatch(customers=customers, outcomes=outcomes, batch_number=batch_number, scenario=scenario)


def break_export(customers: pd.DataFrame, bug: str, column: str | None = None) -> pd.DataFrame:
    """A copy of the export with one simulated export bug applied to one column."""
    if bug not in BUGS:
        raise ValueError(f"unknown bug {bug!r}; expected one of {', '.join(BUGS)}")
    column = column or DEFAULT_BUG_COLUMNS[bug]
    if column not in customers.columns:
        raise KeyError(f"bug column {column!r} is not in the export")
    broken = customers.copy()
    if bug == "empty_column":
        # Nullable integers: the column stays integer-typed and is written as empty CSV fields.
        broken[column] = pd.array([pd.NA] * len(broken), dtype="Int64")
    else:
        broken[column] = broken[column] * 10
    return broken


def write_batch(batch: ReplayBatch, directory: Path, customers_format: str = "csv") -> dict[str, Path]:
    """Write `customers_<batch>.csv|parquet` and `outcomes_<batch>.csv` (CSV in the bundled file's format).

    Each file is written under a hidden temporary name and renamed, so a sensor watching the folder
    never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in (("customers", batch.customers), ("outcomes", batch.outcomes)):
        suffix = customers_format if name == "customers" else "csv"
        path = directory / f"{name}_{batch.batch_number:04d}.{suffix}"
        temporary = directory / f".{path.name}.{os.getpid()}.tmp"
        try:
            if suffix == "parquet":
                frame.to_parquet(temporary, index=False)
            else:
                with open(temporary, "w", newline="", encoding="utf-8") as out:
                    frame.to_csv(out, index=False, lineterminator="\n")
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        paths[name] = path
    return paths


def ramped_strength(strength: float, batch_number: int, ramp_batches: int) -> float:
    """persona_shift grows over the first `ramp_batches` batches to `strength` (a gradual change of
    the customer base), so detection delay can be measured; ramp_batches <= 1 shifts at once."""
    if ramp_batches <= 1:
        return strength
    return strength * min(1.0, batch_number / ramp_batches)


def batch_month(batch_number: int) -> int:
    """The calendar month of a batch in the month-by-month scenarios: batch 1 = January."""
    return (batch_number - 1) % 12 + 1


def regime_strength(strength: float, batch_number: int, change_batch: int, ramp_batches: int) -> float:
    """regime_change: 0 before `change_batch`, then growing to `strength` over `ramp_batches` batches."""
    if batch_number < change_batch:
        return 0.0
    return strength * min(1.0, (batch_number - change_batch + 1) / max(ramp_batches, 1))


def make_swiss_bank_batch(
    scenario: str,
    *,
    batch_number: int,
    size: int = 2000,
    seed: int = 0,
    strength: float = 0.5,
    ramp_batches: int = 1,
    change_batch: int = 1,
    bug: str = "empty_column",
    bug_column: str | None = None,
) -> ReplayBatch:
    """The next batch of new synthetic bank customers (export without the target) and their outcomes."""
    from mlops_assets.synthetic.swiss_bank import iter_customers

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if batch_number < 1 or size < 1:
        raise ValueError("batch_number and size must be >= 1")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    month = batch_month(batch_number) if scenario in ("regime_change", "seasonal") else None
    regime = regime_strength(strength, batch_number, change_batch, ramp_batches) if scenario == "regime_change" else 0.0
    persona = ramped_strength(strength, batch_number, ramp_batches) if scenario == "persona_shift" else 0.0
    frame = pd.concat(
        iter_customers(
            size,
            seed=seed,
            chunk_size=size,
            persona_shift=persona,
            id_offset=batch_number * ID_STRIDE,
            regime=regime,
            month=month,
        ),
        ignore_index=True,
    )
    outcomes = pd.DataFrame(
        {ID_COLUMN: frame[ID_COLUMN], SWISS_BANK_TARGET: np.where(frame[SWISS_BANK_TARGET], "true", "false")}
    )
    customers = frame.drop(columns=[SWISS_BANK_TARGET])
    if scenario == "data_bug":
        column = bug_column or SWISS_BANK_BUG_COLUMNS.get(bug)
        customers = break_export(customers, bug, column)
    return ReplayBatch(customers=customers, outcomes=outcomes, batch_number=batch_number, scenario=scenario)


def write_replay_files(
    source_path: Path,
    directory: Path,
    scenario: str,
    *,
    batch_number: int,
    size: int = 2000,
    seed: int = 0,
    strength: float = 0.5,
    ramp_batches: int = 1,
    change_batch: int = 1,
    bug: str = "empty_column",
    bug_column: str | None = None,
    with_outcomes: bool = True,
    generator: str = "caravan",
) -> dict[str, Path]:
    """Write the next batch (and, unless told not to, its outcomes) into an incoming folder.

    `generator`: `caravan` resamples the export at `source_path`; `swiss_bank` draws new synthetic
    customers (`source_path` unused) and writes the export as Parquet, the use case's format.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown replay generator {generator!r}; expected one of {', '.join(GENERATORS)}")
    if generator == "swiss_bank":
        batch = make_swiss_bank_batch(
            scenario,
            batch_number=batch_number,
            size=size,
            seed=seed,
            strength=strength,
            ramp_batches=ramp_batches,
            change_batch=change_batch,
            bug=bug,
            bug_column=bug_column or None,
        )
        paths = write_batch(batch, directory, customers_format="parquet")
    else:
        batch = make_batch(
            read_source(source_path),
            scenario,
            batch_number=batch_number,
            size=size,
            seed=seed,
            strength=ramped_strength(strength, batch_number, ramp_batches),
            bug=bug,
            bug_column=bug_column or None,
        )
        paths = write_batch(batch, directory)
    if not with_outcomes:
        paths.pop("outcomes").unlink()
    return paths
