"""Small PNG charts for the Dagster UI (rendered from markdown) and model cards."""

from __future__ import annotations

import io
from functools import cache

import pandas as pd


@cache
def pyplot():
    """matplotlib.pyplot on the Agg backend, imported with the first chart: the import took 2.8 s of a
    31.7 s code-location load (python -X importtime, loaded machine), which `dagster dev`, the
    scoring service and read-only commands do not need."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=80)
    pyplot().close(figure)
    return buffer.getvalue()


def lift_and_calibration_chart(deciles: pd.DataFrame, calibration: pd.DataFrame, title: str) -> bytes:
    """Left: buyer rate per score decile against the base rate. Right: predicted vs observed rate."""
    figure, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3.2))
    base_rate = deciles["buyers"].sum() / deciles["customers"].sum()
    left.bar(deciles["decile"], deciles["response_rate"], color="#3b6ea5")
    left.axhline(base_rate, color="#c0392b", linestyle="--", label=f"base rate {base_rate:.1%}")
    left.set_xlabel("score decile (1 = highest scores)")
    left.set_ylabel("buyer rate")
    left.set_xticks(deciles["decile"])
    left.legend(fontsize=8)
    left.set_title("Buyers per decile", fontsize=10)
    top = max(calibration["mean_score"].max(), calibration["observed_rate"].max()) * 1.1 or 1.0
    right.plot([0, top], [0, top], color="#999999", linestyle=":")
    right.plot(calibration["mean_score"], calibration["observed_rate"], marker="o", color="#3b6ea5")
    right.set_xlabel("mean predicted score")
    right.set_ylabel("observed buyer rate")
    right.set_title("Calibration", fontsize=10)
    figure.suptitle(title, fontsize=10)
    return _png(figure)


def drift_chart(report: pd.DataFrame, psi_warn: float, psi_alert: float, title: str, top: int = 20) -> bytes:
    """PSI per feature (largest first) against the warn and alert thresholds."""
    shown = report.sort_values("psi", ascending=False).head(top).iloc[::-1]
    colors = ["#c0392b" if d else "#3b6ea5" for d in shown["drifted"]]
    figure, axis = pyplot().subplots(figsize=(7, 0.28 * len(shown) + 1.2))
    axis.barh(shown["feature"], shown["psi"], color=colors)
    axis.axvline(psi_warn, color="#e67e22", linestyle=":", label=f"warn {psi_warn}")
    axis.axvline(psi_alert, color="#c0392b", linestyle="--", label=f"alert {psi_alert}")
    axis.set_xlabel("population stability index (red: drift alert)")
    axis.tick_params(axis="y", labelsize=7)
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(title, fontsize=9)
    return _png(figure)
