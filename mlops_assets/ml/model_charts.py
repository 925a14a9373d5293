"""Charts of how a model was trained and how well its probabilities hold: PNGs for the Dagster UI."""

from __future__ import annotations

import pandas as pd

from mlops_assets.ml.plots import _png, pyplot


def validation_curve_chart(
    cv_curve: list[float], validation_curve: list[float], chosen_rounds: int, metric: str, title: str
) -> bytes:
    """Metric per boosting round: the cross-validated fold mean (which chose the rounds) and the
    validation split, with the chosen number of rounds marked."""
    figure, axis = pyplot().subplots(figsize=(7, 3.2))
    if cv_curve:
        axis.plot(range(1, len(cv_curve) + 1), cv_curve, color="#3b6ea5", label="CV fold mean (training split)")
    if validation_curve:
        axis.plot(range(1, len(validation_curve) + 1), validation_curve, color="#e67e22", label="validation split")
    axis.axvline(chosen_rounds, color="#c0392b", linestyle="--", label=f"chosen: {chosen_rounds} rounds")
    axis.set_xlabel("boosting round")
    axis.set_ylabel(metric)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=9)
    return _png(figure)


def reliability_chart(tables: dict[str, pd.DataFrame], title: str) -> bytes:
    """Mean predicted score against observed buyer rate per bin, one line per evaluation set."""
    figure, axis = pyplot().subplots(figsize=(4.6, 4))
    top = 0.0
    for (label, table), color in zip(tables.items(), ("#3b6ea5", "#e67e22", "#27ae60", "#8e44ad"), strict=False):
        axis.plot(table["mean_score"], table["observed_rate"], marker="o", color=color, label=label)
        top = max(top, table["mean_score"].max(), table["observed_rate"].max())
    top = top * 1.1 or 1.0
    axis.plot([0, top], [0, top], color="#999999", linestyle=":", label="perfect calibration")
    axis.set_xlabel("mean predicted score (bins of equal size)")
    axis.set_ylabel("observed buyer rate")
    axis.legend(fontsize=7)
    axis.set_title(title, fontsize=9)
    return _png(figure)
