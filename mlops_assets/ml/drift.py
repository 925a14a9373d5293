"""Data and score drift against a stored reference profile: plain functions, no Dagster.

A *reference profile* summarises a model's training data once (bin edges and shares for the
population stability index, a quantile sketch for the Kolmogorov-Smirnov statistic, means and
missing shares). It is a small JSON-serializable dict stored next to the model, so a new batch is
compared against the profile without keeping or re-reading the training data.

Numeric columns are sorted once per column; everything after that is np.searchsorted of a few dozen
or a few hundred points into the sorted values, so a million rows cost one sort per feature.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlops_assets.ml.training import FeatureSpec

PROFILE_FORMAT_VERSION = 1

# Bin shares are floored at this value before the PSI log ratio, so an empty bin gives a large but
# finite term: 1% of a batch in a bin the reference never filled adds 0.01 * ln(0.01 / 1e-4) = 0.046,
# 10% adds 0.69 (an alert). Same floor as Evidently's default.
PSI_EPSILON = 1e-4

# Name of the bucket that gathers categories the reference profile does not list.
OTHER_CATEGORY = "other/unseen"

SCORE_COLUMN = "score"

REPORT_COLUMNS = [
    "feature",
    "type",
    "psi",
    "ks_statistic",
    "reference_mean",
    "current_mean",
    "reference_missing_share",
    "current_missing_share",
    "drifted",
    "severity",
    "reason",
]


class DriftThresholds(BaseModel):
    """When a feature's change is worth a warning or an alert. A feature has drifted on an alert."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    psi_warn: float = Field(0.1, ge=0, description="PSI above this is a warning.")
    psi_alert: float = Field(0.25, ge=0, description="PSI above this is an alert.")
    ks_alert: float = Field(0.15, ge=0, le=1, description="KS statistic above this is an alert (numeric).")
    missing_share_alert: float = Field(
        0.2, ge=0, le=1, description="Alert when the missing share rises by more than this (absolute)."
    )

    @model_validator(mode="after")
    def _warn_below_alert(self) -> DriftThresholds:
        if self.psi_warn > self.psi_alert:
            raise ValueError(f"psi_warn {self.psi_warn} must not exceed psi_alert {self.psi_alert}")
        return self


# ---------------------------------------------------------------------------------------------------
# Building the reference profile


def build_reference_profile(
    frame: pd.DataFrame,
    features: list[FeatureSpec],
    bins: int = 10,
    sketch_size: int = 200,
    max_categories: int = 50,
) -> dict:
    """Summarise the reference (training) data of a model as a JSON-serializable dict.

    Numeric features get PSI bin edges and shares, a quantile sketch for KS, mean/std and the missing
    share; categorical features get category shares (the `max_categories` most frequent, the rest
    pooled into one share) and the missing share. NaN and +-inf count as missing; so do values of a
    numeric column that are not numbers.
    """
    if bins < 2 or sketch_size < 2:
        raise ValueError("bins and sketch_size must be at least 2")
    _require_columns(frame, [f.name for f in features])
    profiled = []
    for feature in features:
        column = frame[feature.name]
        if feature.type == "categorical":
            profiled.append(_categorical_profile(feature.name, column, max_categories))
        else:
            profiled.append(_numeric_profile(feature.name, column, bins, sketch_size))
    return {
        "format_version": PROFILE_FORMAT_VERSION,
        "reference_rows": len(frame),
        "bins": bins,
        "sketch_size": sketch_size,
        "features": profiled,
    }


def build_score_profile(scores: np.ndarray, bins: int = 10, sketch_size: int = 200) -> dict:
    """Reference profile of a model's score distribution (one numeric column named `score`)."""
    frame = pd.DataFrame({SCORE_COLUMN: np.asarray(scores, dtype=np.float64)})
    return build_reference_profile(frame, [FeatureSpec(name=SCORE_COLUMN)], bins, sketch_size)


def _numeric_profile(name: str, column: pd.Series, bins: int, sketch_size: int) -> dict:
    ordered, missing = _sorted_finite(_float_values(column))
    entry = {"name": name, "type": "numeric", "missing_share": _share(missing, len(column))}
    if len(ordered) == 0:
        # Nothing to bin: drift of this column can only show up as a change in the missing share.
        no_values = {"mean": None, "std": None, "bin_edges": [], "bin_shares": []}
        return entry | no_values | {"sketch": {"values": [], "cdf": [], "cdf_left": []}}
    edges = _bin_edges(ordered, bins)
    points = _sketch_points(ordered, sketch_size)
    cdf, cdf_left = _ecdf_at(ordered, points)
    return entry | {
        "mean": float(ordered.mean()),
        "std": float(ordered.std()),
        "bin_edges": edges.tolist(),
        "bin_shares": _bin_shares(ordered, edges).tolist(),
        "sketch": {"values": points.tolist(), "cdf": cdf.tolist(), "cdf_left": cdf_left.tolist()},
    }


def _categorical_profile(name: str, column: pd.Series, max_categories: int) -> dict:
    counts, missing = _category_counts(column)
    present = sum(counts.values())
    most_frequent = sorted(counts.items(), key=lambda item: item[1], reverse=True)[:max_categories]
    shares = {label: count / present for label, count in most_frequent}
    pooled = present - sum(count for _, count in most_frequent)
    return {
        "name": name,
        "type": "categorical",
        "missing_share": _share(missing, len(column)),
        "categories": shares,
        # Share of the rarer categories left out of `categories`; they compare as OTHER_CATEGORY.
        "other_share": _share(pooled, present),
    }


def _bin_edges(ordered: np.ndarray, bins: int) -> np.ndarray:
    """Cut points of equal-frequency bins, robust to ties; bin k holds edges[k-1] <= x < edges[k].

    Cut points are the order statistics at ranks i * n / bins, so each bin below a cut point holds
    about n / bins values. With ties several ranks hit the same value: the cut points are deduplicated,
    and a value that alone holds at least one bin's share also gets the next larger value as a cut
    point, so it sits in a bin of its own (otherwise a coded column with 70% zeros would pool 0 and 1,
    and a shift from 0 to 1 would be invisible). The outer bins are open-ended; when the lowest cut
    point is the reference minimum, the lowest bin is empty in the reference and catches new values
    below the reference range.
    """
    n = len(ordered)
    edges = np.unique(ordered[np.arange(1, bins) * n // bins])
    after = np.searchsorted(ordered, edges, side="right")
    tie_count = after - np.searchsorted(ordered, edges, side="left")
    # The next larger value; past the reference maximum the next float up, so the maximum is isolated too.
    following = np.where(after < n, ordered[np.minimum(after, n - 1)], np.nextafter(edges, np.inf))
    return np.unique(np.concatenate([edges, following[tie_count * bins >= n]]))


def _sketch_points(ordered: np.ndarray, sketch_size: int) -> np.ndarray:
    """Order statistics at sketch_size evenly spaced ranks, from the minimum to the maximum."""
    n = len(ordered)
    ranks = np.minimum(np.arange(sketch_size) * n // (sketch_size - 1), n - 1)
    return np.unique(ordered[ranks])


# ---------------------------------------------------------------------------------------------------
# Comparing a batch to the profile


def compare_to_reference(profile: dict, frame: pd.DataFrame, thresholds: DriftThresholds | None = None) -> pd.DataFrame:
    """One row per profiled feature: PSI, KS, means, missing shares, severity and a short reason.

    PSI is computed on the non-missing values over the profile's bins (categories plus an
    OTHER_CATEGORY bucket for categoricals); a change in missing values is judged by the missing
    share alone. KS is approximated from the profile's quantile sketch (see `ks_statistic_from_sketch`).
    """
    thresholds = thresholds or DriftThresholds()
    if profile.get("format_version") != PROFILE_FORMAT_VERSION:
        raise ValueError(f"unsupported drift profile format {profile.get('format_version')!r}")
    if len(frame) == 0:
        raise ValueError("cannot compare an empty batch to the reference profile")
    _require_columns(frame, [entry["name"] for entry in profile["features"]])
    rows = []
    for entry in profile["features"]:
        column = frame[entry["name"]]
        if entry["type"] == "categorical":
            measured = _compare_categorical(entry, column)
        else:
            measured = _compare_numeric(entry, column)
        severity, reason = _judge(measured, thresholds)
        rows.append(
            {
                "feature": entry["name"],
                "type": entry["type"],
                **{key: value for key, value in measured.items() if key != "detail"},
                "drifted": severity == "alert",
                "severity": severity,
                "reason": reason,
            }
        )
    return pd.DataFrame(rows, columns=REPORT_COLUMNS)


def score_drift(profile: dict, scores: np.ndarray, thresholds: DriftThresholds | None = None) -> dict:
    """Drift of a model's score distribution against its `build_score_profile` profile."""
    frame = pd.DataFrame({SCORE_COLUMN: np.asarray(scores, dtype=np.float64)})
    row = compare_to_reference(profile, frame, thresholds).iloc[0]
    return {
        "psi": _json_float(row["psi"]),
        "ks_statistic": _json_float(row["ks_statistic"]),
        "severity": row["severity"],
        "drifted": bool(row["drifted"]),
        "reason": row["reason"],
    }


def summarize_drift(report: pd.DataFrame) -> dict:
    """Headline figures of a `compare_to_reference` report, JSON-friendly for run metadata."""
    drifted = report.loc[report["drifted"], "feature"].tolist()
    warned = report.loc[report["severity"] == "warn", "feature"].tolist()
    psi = report["psi"].dropna()
    return {
        "drifted_features": drifted,
        "drifted_count": len(drifted),
        "feature_count": len(report),
        "drifted_share": len(drifted) / len(report) if len(report) else 0.0,
        "warned_features": warned,
        "max_psi": float(psi.max()) if len(psi) else None,
        "max_psi_feature": report.loc[psi.idxmax(), "feature"] if len(psi) else None,
    }


def population_stability_index(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    """PSI = sum((cur - ref) * ln(cur / ref)) over bins, with shares floored at PSI_EPSILON."""
    reference = np.maximum(np.asarray(reference_shares, dtype=np.float64), PSI_EPSILON)
    current = np.maximum(np.asarray(current_shares, dtype=np.float64), PSI_EPSILON)
    return float(np.sum((current - reference) * np.log(current / reference)))


def ks_statistic_from_sketch(sketch: dict, ordered_current: np.ndarray) -> float:
    """Two-sample KS statistic max|F_ref(x) - F_cur(x)|, evaluated at the sketch points only.

    The profile stores the reference ECDF exactly at each sketch point, both F(x) and its left limit
    F(x-) (which matters for tied values), and F_cur is exact too (np.searchsorted on the sorted batch).
    The only approximation is looking at sketch points instead of every x. Between two neighbouring
    points F_ref rises by at most 1/(sketch_size - 1) (they are order statistics at evenly spaced
    ranks), so the result is a lower bound of the exact statistic and at most 1/(sketch_size - 1),
    about 0.005 with 200 points, below it.
    """
    points = np.asarray(sketch["values"], dtype=np.float64)
    if len(points) == 0 or len(ordered_current) == 0:
        return math.nan
    current_cdf, current_cdf_left = _ecdf_at(ordered_current, points)
    return float(
        max(
            np.max(np.abs(np.asarray(sketch["cdf"]) - current_cdf)),
            np.max(np.abs(np.asarray(sketch["cdf_left"]) - current_cdf_left)),
        )
    )


def _compare_numeric(entry: dict, column: pd.Series) -> dict:
    ordered, missing = _sorted_finite(_float_values(column))
    measured = {
        "psi": math.nan,
        "ks_statistic": math.nan,
        "reference_mean": _nan_if_none(entry["mean"]),
        "current_mean": float(ordered.mean()) if len(ordered) else math.nan,
        "reference_missing_share": entry["missing_share"],
        "current_missing_share": _share(missing, len(column)),
        "detail": "",
    }
    if len(ordered) and entry["bin_shares"]:
        current_shares = _bin_shares(ordered, np.asarray(entry["bin_edges"], dtype=np.float64))
        measured["psi"] = population_stability_index(entry["bin_shares"], current_shares)
        measured["ks_statistic"] = ks_statistic_from_sketch(entry["sketch"], ordered)
    return measured


def _compare_categorical(entry: dict, column: pd.Series) -> dict:
    counts, missing = _category_counts(column)
    present = sum(counts.values())
    reference = entry["categories"]
    measured = {
        "psi": math.nan,
        "ks_statistic": math.nan,
        "reference_mean": math.nan,
        "current_mean": math.nan,
        "reference_missing_share": entry["missing_share"],
        "current_missing_share": _share(missing, len(column)),
        "detail": "",
    }
    if present and reference:
        known = [counts.get(label, 0) for label in reference]
        current_other = (present - sum(known)) / present
        measured["psi"] = population_stability_index(
            [*reference.values(), entry["other_share"]], [*(np.array(known) / present), current_other]
        )
        if current_other > entry["other_share"]:
            measured["detail"] = f"{OTHER_CATEGORY} {current_other:.1%} vs {entry['other_share']:.1%}"
    return measured


def _judge(measured: dict, thresholds: DriftThresholds) -> tuple[str, str]:
    """Severity and a short reason; NaN measures (nothing to compare) never trigger."""
    psi, ks = measured["psi"], measured["ks_statistic"]
    reference_missing = measured["reference_missing_share"]
    current_missing = measured["current_missing_share"]
    alerts = []
    if current_missing - reference_missing > thresholds.missing_share_alert:
        alerts.append(f"missing share {current_missing:.0%} vs {reference_missing:.0%}")
    if psi > thresholds.psi_alert:
        alerts.append(f"PSI {psi:.2f} > {thresholds.psi_alert:g}")
    if ks > thresholds.ks_alert:
        alerts.append(f"KS {ks:.2f} > {thresholds.ks_alert:g}")
    detail = [measured["detail"]] if measured["detail"] else []
    if alerts:
        return "alert", "; ".join(alerts + detail)
    if psi > thresholds.psi_warn:
        return "warn", "; ".join([f"PSI {psi:.2f} > {thresholds.psi_warn:g}", *detail])
    if math.isnan(psi):
        return "none", "no values to compare"
    return "none", "within thresholds"


# ---------------------------------------------------------------------------------------------------
# Shared helpers


def _float_values(column: pd.Series) -> np.ndarray:
    """float64 values with NaN for missing; text that is not a number becomes NaN (reported as missing)."""
    if not pd.api.types.is_numeric_dtype(column.dtype):
        column = pd.to_numeric(column, errors="coerce")
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _sorted_finite(values: np.ndarray) -> tuple[np.ndarray, int]:
    """The finite values sorted ascending, and how many values were NaN or +-inf.

    np.sort puts -inf first and +inf then NaN last, so the finite values are one slice of the sort.
    """
    ordered = np.sort(values)
    start = np.searchsorted(ordered, -np.inf, side="right")
    stop = np.searchsorted(ordered, np.inf, side="left")
    return ordered[start:stop], len(values) - int(stop - start)


def _bin_shares(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of sorted values per bin, bins edges[k-1] <= x < edges[k] with open-ended outer bins."""
    below_each_edge = np.searchsorted(ordered, edges, side="left")
    counts = np.diff(np.concatenate([[0], below_each_edge, [len(ordered)]]))
    return counts / len(ordered)


def _ecdf_at(ordered: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF F(x) = share <= x and its left limit F(x-) = share < x at each point."""
    n = len(ordered)
    return (
        np.searchsorted(ordered, points, side="right") / n,
        np.searchsorted(ordered, points, side="left") / n,
    )


def _category_counts(column: pd.Series) -> tuple[dict[str, int], int]:
    """Count per category label (hash-based value_counts) and the count of missing values."""
    counts: dict[str, int] = {}
    for value, count in column.value_counts(dropna=True).items():
        if count:
            label = _category_label(value)
            counts[label] = counts.get(label, 0) + int(count)
    return counts, int(column.isna().sum())


def _category_label(value: object) -> str:
    """Categories are compared as text; 3 and 3.0 are the same code whichever way a file was read."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _require_columns(frame: pd.DataFrame, names: list[str]) -> None:
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing from the input data: {', '.join(missing)}")


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else value


def _json_float(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


# ---------------------------------------------------------------------------------------------------
# Likely causes of a batch's drift

# Cause classes, in the order a batch's primary cause is chosen. The first two are broken data (the
# staging checks normally stop such a batch before it gets here); seasonal drift is expected.
CAUSES = (
    "unit_scale_change",
    "missing_values",
    "new_categories",
    "co_moving_group",
    "single_feature_shift",
    "score_only_shift",
    "target_rate_change",
    "seasonal",
)
# Causes that call for retraining on the new data. Broken data never does (a retrain would learn
# the bug), seasonal drift is expected, and a changed buyer rate alone does not change the ranking
# (the realized-performance check judges that once outcomes arrive).
RETRAIN_CAUSES = frozenset({"new_categories", "co_moving_group", "single_feature_shift", "score_only_shift"})
# A numeric feature "moved for everyone" when its KS statistic reaches this: most customers now lie
# on the other side of where they used to be (a macro indicator in a new regime, not a tail).
WHOLE_POPULATION_KS = 0.5
UNIT_LOG10_TOLERANCE = 0.1


def _unit_jump(row) -> bool:
    reference, current = row["reference_mean"], row["current_mean"]
    if row["type"] != "numeric" or not (reference > 0 and current > 0):
        return False
    exponent = math.log10(current / reference)
    return round(exponent) != 0 and abs(exponent - round(exponent)) <= UNIT_LOG10_TOLERANCE


def feature_causes(
    report: pd.DataFrame, seasonal: set[str] | frozenset[str] = frozenset(), co_moving_min: int = 3
) -> pd.Series:
    """Likely cause per drifted feature of a `compare_to_reference` report ("" where none drifted).

    Hand-written rules on the report's own measures (no library classifies drift causes):
    a mean that is the reference's x10^k is a unit change; a missing share up by the alert margin is
    missing values; unseen categories gaining share are new categories; features declared seasonal
    are seasonal; `co_moving_min` or more numeric features moving for the whole population at once
    (KS >= WHOLE_POPULATION_KS) are a co-moving group (e.g. macro indicators in a new economic
    regime); any other drifted feature is a single-feature shift.
    """
    causes = pd.Series("", index=report.index, dtype=object)
    drifted = report["drifted"].astype(bool)
    for index, row in report[drifted].iterrows():
        if row["feature"] in seasonal:
            causes[index] = "seasonal"
        elif _unit_jump(row):
            causes[index] = "unit_scale_change"
        elif row["current_missing_share"] - row["reference_missing_share"] > 0 and "missing share" in row["reason"]:
            causes[index] = "missing_values"
        elif row["type"] == "categorical" and OTHER_CATEGORY in row["reason"]:
            causes[index] = "new_categories"
        else:
            causes[index] = "shift"
    moving = (causes == "shift") & (report["type"] == "numeric") & (report["ks_statistic"] >= WHOLE_POPULATION_KS)
    group = moving.sum() >= co_moving_min
    causes[causes == "shift"] = "single_feature_shift"
    if group:
        causes[moving] = "co_moving_group"
    return causes


def target_rate_change(
    batch_buyers: int, batch_outcomes: int, reference_buyers: int, reference_outcomes: int, z_alert: float = 4.0
) -> dict | None:
    """The batch's buyer rate against the reference's (two-proportion z-test), once outcomes arrived.

    None when either side has no outcomes; `changed` when |z| >= z_alert (a strict bar: with monthly
    batches a seasonal rate difference should not count as a change).
    """
    if batch_outcomes == 0 or reference_outcomes == 0:
        return None
    batch_rate, reference_rate = batch_buyers / batch_outcomes, reference_buyers / reference_outcomes
    pooled = (batch_buyers + reference_buyers) / (batch_outcomes + reference_outcomes)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / batch_outcomes + 1 / reference_outcomes))
    z = (batch_rate - reference_rate) / spread if spread > 0 else 0.0
    return {"batch_rate": batch_rate, "reference_rate": reference_rate, "z": z, "changed": abs(z) >= z_alert}


def classify_batch(
    report: pd.DataFrame,
    *,
    score_drifted: bool,
    seasonal: set[str] | frozenset[str] = frozenset(),
    co_moving_min: int = 3,
    target_rate: dict | None = None,
) -> dict:
    """The batch's causes of drift: per feature, the set of causes, the primary one, and whether they
    call for retraining (`requests_retrain`), with a one-line explanation for the UI and alerts."""
    per_feature = feature_causes(report, seasonal, co_moving_min)
    found = {cause: report.loc[per_feature == cause, "feature"].tolist() for cause in CAUSES}
    explained_by_features = any(found[c] for c in CAUSES if c != "seasonal")
    if score_drifted and not explained_by_features and not found["seasonal"]:
        found["score_only_shift"] = ["model_score"]
    if target_rate is not None and target_rate["changed"]:
        found["target_rate_change"] = ["target"]
    causes = [cause for cause in CAUSES if found[cause]]
    retrain = [cause for cause in causes if cause in RETRAIN_CAUSES]
    return {
        "per_feature": per_feature,
        "causes": causes,
        "primary_cause": causes[0] if causes else "none",
        "features_by_cause": {cause: found[cause] for cause in causes},
        "requests_retrain": bool(retrain),
        "retrain_causes": retrain,
        "target_rate": target_rate,
        "explanation": "; ".join(f"{cause}: {', '.join(found[cause][:6])}" for cause in causes) or "no drift",
    }
