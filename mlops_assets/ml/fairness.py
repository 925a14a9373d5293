"""Fairness of the contact list: who lands in the top share of scores, compared across groups.

Marketing contacts the top share of customers by score (the top decile by default), so fairness is
measured on that selection, not on the scores themselves:

* selection rate per group: share of the group's customers in the top share. The demographic-parity
  ratio is min / max over groups (1 = every group is contacted at the same rate).
* true-positive rate per group: share of the group's buyers in the top share. The equal-opportunity
  ratio is min / max over groups (1 = a buyer has the same chance of being contacted whatever the group).

Demographic parity can be legitimately unequal when groups really differ in how often they buy; equal
opportunity compares like with like (buyers with buyers), but needs labels and enough buyers per group.

Groups smaller than `min_group_size` are reported but not gated: a rate over a few dozen customers
(or a handful of buyers) swings by chance, and a ratio takes its min over groups, so the noisiest group
would decide the check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field


class FairnessBounds(BaseModel):
    """Lowest acceptable min/max ratios across the groups of one sensitive attribute."""

    model_config = ConfigDict(extra="forbid")

    min_selection_rate_ratio: float | None = Field(
        0.8,
        ge=0,
        le=1,
        description="Demographic-parity ratio floor (the 'four-fifths rule'); None: report only.",
    )
    min_tpr_ratio: float | None = Field(
        None, ge=0, le=1, description="Equal-opportunity ratio floor; None: report only."
    )
    min_group_size: int = Field(
        100, ge=1, description="Groups with fewer customers are reported but not gated (too noisy)."
    )
    min_group_buyers: int = Field(
        20,
        ge=1,
        description=(
            "Groups with fewer buyers are left out of the equal-opportunity ratio: a true-positive rate "
            "over a handful of buyers is mostly chance."
        ),
    )
    top_share: float = Field(0.1, gt=0, le=1, description="Share of customers contacted, by score.")
    require_significance: bool = Field(
        True,
        description=(
            "Fail a ratio bound only when the ratio is significantly below it: the upper end of its "
            "confidence interval (Katz log method) is under the bound. On a test split of a few thousand "
            "customers the measured ratios swing by +-0.2 from chance alone."
        ),
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence level of that interval.")


@dataclass
class FairnessResult:
    table: pd.DataFrame
    demographic_parity_ratio: float  # NaN when fewer than two gated groups
    equal_opportunity_ratio: float  # NaN when fewer than two gated groups have enough buyers
    passed: bool
    reasons: list[str] = field(default_factory=list)  # why the check failed, naming groups and values
    notes: list[str] = field(default_factory=list)  # what was not gated, and why


def top_share_mask(scores: np.ndarray, top_share: float) -> np.ndarray:
    """True for the top `top_share` of customers by score: the first floor(top_share * n) by rank.

    Ties are broken by position, and the count is rounded down, exactly like decile 1 of
    `evaluation.decile_of_rank` for top_share = 0.1, so "selected" here is the score table's decile 1.
    """
    if not 0 < top_share <= 1:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; cannot rank customers")
    # The tolerance stops float error from dropping a customer: 0.29 * 100 = 28.999999999999996.
    selected = math.floor(top_share * len(scores) + 1e-9)
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:selected]] = True
    return mask


def fairness_table(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | pd.Series,
    top_share: float = 0.1,
    min_group_size: int = 100,
) -> pd.DataFrame:
    """Per group: customers, buyers, how many are selected (top share by score) and the two rates.

    true_positive_rate is NaN for a group without buyers (0 would read as "no buyer of this group is
    contacted"). gated: the group is large enough to take part in the bounds.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    groups = pd.Series(np.asarray(groups), name="group")
    if not len(y_true) == len(scores) == len(groups):
        raise ValueError(f"y_true, scores and groups differ in length ({len(y_true)}, {len(scores)}, {len(groups)})")
    if groups.isna().any():
        raise ValueError(
            f"{int(groups.isna().sum())} customers have no value of the sensitive attribute; "
            "fill it with an explicit 'unknown' group before the fairness check"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ValueError("y_true must hold 0/1 labels")
    selected = top_share_mask(scores, top_share).astype(np.int64)
    # Rates are ratios of counts. fairlearn's MetricFrame gives the same numbers (tests/test_fairness.py
    # checks it) but converts every row to a Python object: 4 s per call at a million customers.
    counts = (
        pd.DataFrame({"group": groups, "buyer": y_true, "selected": selected})
        .assign(buyer_selected=lambda d: d["buyer"] * d["selected"])
        .groupby("group")
        .agg(
            customers=("buyer", "size"),
            buyers=("buyer", "sum"),
            selected=("selected", "sum"),
            buyers_selected=("buyer_selected", "sum"),
        )
    )
    counts["selection_rate"] = counts["selected"] / counts["customers"]
    counts["true_positive_rate"] = counts["buyers_selected"] / counts["buyers"].where(counts["buyers"] > 0)
    table = counts.reset_index()
    table["buyer_rate"] = table["buyers"] / table["customers"]
    table["gated"] = table["customers"] >= min_group_size
    return table[
        [
            "group",
            "customers",
            "buyers",
            "buyer_rate",
            "selected",
            "buyers_selected",
            "selection_rate",
            "true_positive_rate",
            "gated",
        ]
    ]


def ratio_upper_bound(
    low_hits: float, low_total: float, high_hits: float, high_total: float, confidence: float
) -> float:
    """Upper confidence bound of (low_hits/low_total) / (high_hits/high_total): Katz log interval,
    with 0.5 added to an empty count."""
    from scipy.stats import norm

    low_hits, high_hits = max(float(low_hits), 0.5), max(float(high_hits), 0.5)
    rate_low, rate_high = low_hits / low_total, high_hits / high_total
    standard_error = math.sqrt((1 - rate_low) / low_hits + (1 - rate_high) / high_hits)
    z = norm.ppf(0.5 + confidence / 2)
    return float(math.exp(math.log(rate_low / rate_high) + z * standard_error))


def selection_ratio_upper_bound(low: pd.Series, high: pd.Series, confidence: float) -> float:
    return ratio_upper_bound(low["selected"], low["customers"], high["selected"], high["customers"], confidence)


def tpr_ratio_upper_bound(low: pd.Series, high: pd.Series, confidence: float) -> float:
    return ratio_upper_bound(low["buyers_selected"], low["buyers"], high["buyers_selected"], high["buyers"], confidence)


def _names(table: pd.DataFrame, attribute: str) -> str:
    return ", ".join(f"{attribute}={group}" for group in table["group"])


def _min_max_ratio(table: pd.DataFrame, column: str) -> tuple[float, pd.Series | None, pd.Series | None]:
    """min / max of a rate over the table's rows, with the rows holding the min and the max."""
    if len(table) < 2:
        return math.nan, None, None
    low = table.loc[table[column].idxmin()]
    high = table.loc[table[column].idxmax()]
    ratio = low[column] / high[column] if high[column] > 0 else math.nan
    return float(ratio), low, high


def _judge_ratio(
    kind: str,
    ratio: float,
    bound: float,
    upper: float,
    detail: str,
    bounds: FairnessBounds,
    reasons: list[str],
    notes: list[str],
) -> None:
    """A ratio under its bound fails (a reason), or, when only chance may explain it, is a note."""
    if not bounds.require_significance or upper < bound:
        interval = f", {bounds.confidence:.0%} upper bound {upper:.2f}" if bounds.require_significance else ""
        reasons.append(f"{kind} ratio {ratio:.2f} < {bound:.2f}{interval}: {detail}")
    else:
        notes.append(
            f"{kind} ratio {ratio:.2f} is below {bound:.2f} but not significantly "
            f"({bounds.confidence:.0%} upper bound {upper:.2f}): {detail}"
        )


def evaluate_fairness(
    y_true: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray | pd.Series,
    bounds: FairnessBounds | None = None,
    attribute: str = "group",
) -> FairnessResult:
    """Compare selection and true-positive rates in the top share across groups against the bounds.

    `attribute` names the sensitive attribute in the messages (e.g. "avg_age_class").
    """
    bounds = bounds or FairnessBounds()
    table = fairness_table(y_true, scores, groups, bounds.top_share, bounds.min_group_size)
    top = f"top {bounds.top_share * 100:g}%"
    reasons: list[str] = []
    notes: list[str] = []

    small = table[~table["gated"]]
    if len(small):
        listed = ", ".join(f"{attribute}={g} ({n})" for g, n in zip(small["group"], small["customers"], strict=True))
        notes.append(f"not gated, fewer than {bounds.min_group_size} customers: {listed}")
    gated = table[table["gated"]]

    dp_ratio, low, high = _min_max_ratio(gated, "selection_rate")
    if len(gated) < 2:
        notes.append(f"fewer than two groups with {bounds.min_group_size}+ customers: nothing to compare")
    elif high["selection_rate"] == 0:
        if bounds.min_selection_rate_ratio is not None:
            reasons.append(f"no customer of any gated group ({_names(gated, attribute)}) is in the {top}")
    elif bounds.min_selection_rate_ratio is not None and dp_ratio < bounds.min_selection_rate_ratio:
        upper = selection_ratio_upper_bound(low, high, bounds.confidence)
        detail = (
            f"{attribute}={low['group']} has {low['selection_rate']:.1%} of its customers in the {top} "
            f"({low['selected']} of {low['customers']}), {attribute}={high['group']} has "
            f"{high['selection_rate']:.1%} ({high['selected']} of {high['customers']})"
        )
        _judge_ratio("selection-rate", dp_ratio, bounds.min_selection_rate_ratio, upper, detail, bounds, reasons, notes)

    with_buyers = gated[gated["buyers"] >= bounds.min_group_buyers]
    few_buyers = gated[gated["buyers"] < bounds.min_group_buyers]
    if len(few_buyers):
        listed = ", ".join(
            f"{attribute}={g} ({n})" for g, n in zip(few_buyers["group"], few_buyers["buyers"], strict=True)
        )
        notes.append(f"left out of the equal-opportunity ratio, fewer than {bounds.min_group_buyers} buyers: {listed}")
    eo_ratio, low, high = _min_max_ratio(with_buyers, "true_positive_rate")
    if bounds.min_tpr_ratio is not None and low is not None:
        if high["true_positive_rate"] == 0:
            reasons.append(f"no buyer of any gated group ({_names(with_buyers, attribute)}) is in the {top}")
        elif eo_ratio < bounds.min_tpr_ratio:
            upper = tpr_ratio_upper_bound(low, high, bounds.confidence)
            detail = (
                f"{attribute}={low['group']} has {low['true_positive_rate']:.1%} of its buyers in the {top} "
                f"({low['buyers_selected']} of {low['buyers']}), {attribute}={high['group']} has "
                f"{high['true_positive_rate']:.1%} ({high['buyers_selected']} of {high['buyers']})"
            )
            _judge_ratio("true-positive-rate", eo_ratio, bounds.min_tpr_ratio, upper, detail, bounds, reasons, notes)

    return FairnessResult(
        table=table,
        demographic_parity_ratio=dp_ratio,
        equal_opportunity_ratio=eo_ratio,
        passed=not reasons,
        reasons=reasons,
        notes=notes,
    )
