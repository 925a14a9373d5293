"""Turning a booster's raw scores into purchase probabilities, and measuring how well that worked.

Why a separate calibration step: buyers are weighted up in training (`scale_pos_weight`), and
LightGBM starts boosting from the *unweighted* base rate, so the raw score's log-odds are inflated by
an amount that depends on how far boosting went. Subtracting log(weight) is only right once the trees
have absorbed the weight; an early-stopped model (few rounds) then under-predicts badly (measured on
main: mean score 0.024 against a 0.072 buyer rate). A calibration map fitted on held-out customers
(the validation split) is right whatever the weighting and the number of rounds.

The map is fitted with scikit-learn's own `CalibratedClassifierCV` (Platt's sigmoid with its target
smoothing, or isotonic regression) on the booster's raw score, and stored as plain numbers (sigmoid
a, b; isotonic thresholds) so a model artefact stays data: JSON next to the LightGBM text, covered by
the artefact's checksum, never pickle. `apply_calibration` reproduces scikit-learn's predictions
exactly (tests/test_calibration.py).

Default method: sigmoid. It is strictly increasing, so it keeps the model's ranking (deciles and
lift are unchanged, no ties), and it fits two numbers, which ~70 validation buyers support; isotonic
regression makes a step function that ties customers and overfits small validation sets
(benchmarks/model_quality.py prints both).
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import pandas as pd

CalibrationMethod = Literal["sigmoid", "isotonic"]


@functools.cache
def _raw_score_estimator() -> type:
    """The booster's raw score, passed through: lets scikit-learn calibrate a score it did not compute.
    Defined on first use: scikit-learn is imported where a calibration is fitted, not when the code
    location loads (see ml/training.py)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class RawScore(ClassifierMixin, BaseEstimator):
        def fit(self, raw, labels):
            self.classes_ = np.array([0, 1])
            return self

        def decision_function(self, raw):
            return np.asarray(raw, dtype=np.float64)[:, 0]

        def predict(self, raw):
            return (self.decision_function(raw) > 0).astype(np.int64)

    return RawScore


def fit_calibration(raw_scores: np.ndarray, labels: np.ndarray, method: CalibrationMethod = "sigmoid") -> dict:
    """A calibration map from raw scores to probabilities, as JSON-ready data."""
    raw = np.asarray(raw_scores, dtype=np.float64).reshape(-1, 1)
    labels = np.asarray(labels, dtype=np.int64)
    if len(np.unique(labels)) < 2:
        raise ValueError("calibration needs both buyers and non-buyers in the calibration data")
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    frozen = FrozenEstimator(_raw_score_estimator()().fit(raw, labels))
    fitted = CalibratedClassifierCV(frozen, method=method, ensemble=False).fit(raw, labels)
    calibrator = fitted.calibrated_classifiers_[0].calibrators[0]
    summary = {"method": method, "rows": int(len(labels)), "buyers": int(labels.sum())}
    if method == "sigmoid":
        # scikit-learn's _SigmoidCalibration predicts 1 / (1 + exp(a * raw + b)).
        return {**summary, "a": float(calibrator.a_), "b": float(calibrator.b_)}
    return {
        **summary,
        "x_thresholds": [float(x) for x in calibrator.X_thresholds_],
        "y_thresholds": [float(y) for y in calibrator.y_thresholds_],
    }


def apply_calibration(calibration: dict, raw_scores: np.ndarray) -> np.ndarray:
    """Probabilities from raw scores with a stored calibration map."""
    raw = np.asarray(raw_scores, dtype=np.float64)
    method = calibration.get("method")
    if method == "sigmoid":
        return 1.0 / (1.0 + np.exp(calibration["a"] * raw + calibration["b"]))
    if method == "isotonic":
        # IsotonicRegression(out_of_bounds="clip") interpolates linearly and clips at the ends: np.interp.
        return np.interp(raw, calibration["x_thresholds"], calibration["y_thresholds"])
    raise ValueError(f"unknown calibration method {method!r}; expected sigmoid or isotonic")


def expected_calibration_error(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Customer-weighted mean |mean score - buyer rate| over bins of equal customer count.

    Equal-count bins (not equal-width): propensity scores crowd near the base rate, and equal-width
    bins would leave most bins empty and one bin holding nearly everyone.
    """
    table = reliability_table(labels, scores, bins)
    gap = (table["mean_score"] - table["observed_rate"]).abs()
    return float((gap * table["customers"]).sum() / table["customers"].sum())


def reliability_table(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Per bin of equal customer count (ordered by score): customers, mean score, observed buyer rate."""
    frame = pd.DataFrame({"score": np.asarray(scores, float), "buyer": np.asarray(labels, float)})
    bins = max(1, min(bins, len(frame)))
    frame["bin"] = pd.qcut(frame["score"].rank(method="first"), q=bins, labels=False) + 1
    return (
        frame.groupby("bin")
        .agg(customers=("buyer", "size"), mean_score=("score", "mean"), observed_rate=("buyer", "mean"))
        .reset_index()
    )


def calibration_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Brier score against the base rate's Brier score, ECE, mean score against the realized rate."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    base_rate = float(labels.mean())
    brier = float(np.mean((scores - labels) ** 2))
    base_rate_brier = base_rate * (1.0 - base_rate)
    return {
        "brier_score": brier,
        "base_rate_brier": base_rate_brier,
        "brier_skill": 1.0 - brier / base_rate_brier if base_rate_brier > 0 else float("nan"),
        "ece": expected_calibration_error(labels, scores),
        "mean_score": float(scores.mean()),
        "realized_rate": base_rate,
        "customers": float(len(labels)),
    }


def is_calibrated(metrics: dict[str, float], max_ece: float, max_relative_mean_gap: float) -> tuple[bool, str]:
    """The calibration guard: Brier below the base rate's, ECE at most `max_ece`, and the mean score
    within `max_relative_mean_gap` of the realized rate unless the gap is within sampling error
    (|z| < 3 for the realized rate of `customers` customers): small evaluation sets must not fail a
    calibrated model by chance."""
    realized, mean_score = metrics["realized_rate"], metrics["mean_score"]
    relative_gap = abs(mean_score - realized) / max(realized, 1e-12)
    standard_error = np.sqrt(max(realized * (1 - realized), 1e-12) / max(metrics.get("customers", 1.0), 1.0))
    problems = []
    if not metrics["brier_score"] < metrics["base_rate_brier"]:
        problems.append(
            f"Brier {metrics['brier_score']:.4f} not below the base rate's {metrics['base_rate_brier']:.4f}"
        )
    if metrics["ece"] > max_ece:
        problems.append(f"ECE {metrics['ece']:.4f} > {max_ece}")
    if relative_gap > max_relative_mean_gap and abs(mean_score - realized) / standard_error > 3:
        problems.append(
            f"mean score {mean_score:.4f} vs realized rate {realized:.4f} "
            f"({relative_gap:.0%} off, limit {max_relative_mean_gap:.0%})"
        )
    summary = (
        f"Brier {metrics['brier_score']:.4f} (base rate {metrics['base_rate_brier']:.4f}), ECE {metrics['ece']:.4f}, "
        f"mean score {mean_score:.4f} vs realized {realized:.4f}"
    )
    return not problems, summary if not problems else "; ".join(problems)
