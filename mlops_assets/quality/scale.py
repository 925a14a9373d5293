"""Unit changes: a column whose scale jumps by a power of ten while the shape of its distribution stays.

Hand-written because Great Expectations has no expectation that compares a batch with a reference up
to a scale factor: its median/quantile expectations test fixed bands, and any band wide enough to let
a real regime change through (an interest rate rising from 1% to 3.5%) would also let a x10 through.
The rule here: the batch's quartiles and median are each the reference's times the same power of
ten 10^k (k != 0), within `tolerance` in log10 units. A real shift changes the quantiles by different
factors (its shape moves) and is judged as drift, not as a broken export.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUANTILES = (0.25, 0.5, 0.75)
# The name under which unit-change results appear in reports and `validation_results`.
EXPECTATION = "expect_column_scale_to_match_reference"


def _reference_of(quartiles: dict[str, list[float] | None]) -> dict[str, list[float]]:
    """Columns whose quartiles are all positive (a ratio of scales is not defined for the others)."""
    return {
        name: [round(float(q), 6) for q in values]
        for name, values in quartiles.items()
        if values is not None and all(q > 0 for q in values)
    }


def scale_reference(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[float]]:
    """Per numeric column, the quartiles and median of the reference data (columns whose quartiles
    are not all positive are left out)."""
    quartiles = {}
    for name in columns:
        values = pd.to_numeric(frame[name], errors="coerce").astype(float).dropna()
        quartiles[name] = None if values.empty else [float(q) for q in np.quantile(values, QUANTILES)]
    return _reference_of(quartiles)


def table_quartiles(connection, table: str, columns: list[str]) -> dict[str, list[float] | None]:
    """The same quartiles computed in DuckDB (`quantile_cont` interpolates linearly, as np.quantile),
    without copying the table into pandas: one scan for every column."""
    if not columns:
        return {}
    quantiles = ", ".join(str(q) for q in QUANTILES)
    select = ", ".join(f'quantile_cont(try_cast("{c}" as double), [{quantiles}])' for c in columns)
    row = connection.execute(f"select {select} from {table}").fetchall()[0]
    return dict(zip(columns, row, strict=True))


def table_scale_reference(connection, table: str, columns: list[str]) -> dict[str, list[float]]:
    return _reference_of(table_quartiles(connection, table, columns))


def scale_jump(reference: list[float], values: pd.Series, tolerance: float) -> tuple[int, str]:
    """(k, observed): k != 0 when the column looks multiplied by 10^k; observed describes the ratios."""
    values = pd.to_numeric(values, errors="coerce").astype(float).dropna()
    return quartile_jump(reference, None if values.empty else list(np.quantile(values, QUANTILES)), tolerance)


def quartile_jump(reference: list[float], quartiles: list[float] | None, tolerance: float) -> tuple[int, str]:
    """scale_jump from the batch's quartiles."""
    if quartiles is None:
        return 0, "no values"
    current = np.asarray(quartiles, dtype=float)
    if not (current > 0).all():
        return 0, "quartiles not all positive"
    exponents = np.log10(current / np.asarray(reference))
    k = round(float(np.median(exponents)))
    observed = "quartile ratios " + ", ".join(f"{10**e:.3g}" for e in exponents)
    if k != 0 and bool(np.all(np.abs(exponents - k) <= tolerance)):
        return k, observed
    return 0, observed


def unit_change_results(
    reference: dict[str, list[float]], current: dict[str, list[float] | None], tolerance: float
) -> list[tuple[str, bool, str, str]]:
    """(column, passed, observed, expected) per referenced column with current quartiles
    (`table_quartiles` of the batch)."""
    results = []
    for name, quartiles in reference.items():
        if name not in current:
            continue
        k, observed = quartile_jump(quartiles, current[name], tolerance)
        expected = f"quartiles not all x10^k of the reference {quartiles} (k != 0, tolerance {tolerance} log10)"
        if k:
            observed = f"scale x{10.0**k:g} ({observed})"
        results.append((name, k == 0, observed, expected))
    return results
