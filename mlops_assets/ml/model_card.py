"""Model cards: one markdown page per model version, for the Dagster UI, DuckDB and auditors."""

from __future__ import annotations

import json

import pandas as pd


def _table(frame: pd.DataFrame | None, columns: list[str] | None = None, float_format: str = ".4f") -> str:
    if frame is None or frame.empty:
        return "_none_"
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    frame = frame.copy()
    for name in frame.columns:  # counts read back from JSON as floats: show them as counts
        values = frame[name]
        if values.dtype.kind == "f" and values.notna().all() and (values % 1 == 0).all():
            frame[name] = values.astype("int64")
    # object dtype: tabulate would otherwise upcast each row to float and print counts as 116.0000
    return frame.astype(object).to_markdown(index=False, floatfmt=float_format)


DECILE_COLUMNS = [
    "decile",
    "customers",
    "buyers",
    "response_rate",
    "lift",
    "cumulative_capture",
    "min_score",
    "max_score",
]
FAIRNESS_COLUMNS = [
    "group",
    "customers",
    "buyers",
    "buyer_rate",
    "selected",
    "selection_rate",
    "true_positive_rate",
    "gated",
]


METRIC_NAMES = (
    "top_decile_lift",
    "top_decile_capture_rate",
    "top_20pct_capture_rate",
    "pr_auc",
    "roc_auc",
    "brier_score",
    "base_rate_brier",
    "ece",
    "mean_score",
    "realized_rate",
    "customers",
    "buyers",
)


def _metrics_table(metrics: dict, champion_metrics: dict | None) -> pd.DataFrame:
    rows = []
    for name in METRIC_NAMES:
        if name in metrics:
            rows.append(
                {
                    "metric": name,
                    "this model": metrics[name],
                    "champion": (champion_metrics or {}).get(name),
                }
            )
    return pd.DataFrame(rows)


def render_model_card(
    *,
    use_case_title: str,
    use_case_description: str,
    model_version: str,
    status: str,
    lineage: dict,
    features: list[dict],
    params: dict,
    metrics: dict,
    champion_version: str | None,
    champion_metrics: dict | None,
    recent_metrics: dict | None,
    deciles: pd.DataFrame,
    calibration: pd.DataFrame,
    fairness_table: pd.DataFrame | None,
    fairness_summary: str,
    decision: str,
    status_events: pd.DataFrame,
    limitations: list[str],
    comparison: dict | None = None,
    calibration_map: dict | None = None,
) -> str:
    feature_list = ", ".join(f"{f['name']} ({f['type']})" for f in features)
    events = status_events[["changed_at", "status", "actor", "reason"]] if not status_events.empty else None
    comparison = comparison or {}
    decided_on = comparison.get("description", "the test split")
    paired = comparison.get("paired") or {}
    intervals = "\n".join(
        f"- {d['metric']}: {d['challenger']:.4f} vs champion {d['champion']:.4f}, difference "
        f"{d['difference']:+.4f} [{d['confidence']:.0%} bootstrap CI {d['low']:+.4f}, {d['high']:+.4f}] "
        f"({d['resamples']} paired resamples)"
        for d in paired.values()
    )
    decision_metrics = comparison.get("challenger") or recent_metrics or {}
    calibration_text = _calibration_text(decision_metrics, comparison.get("champion"), calibration_map or {})
    second_view = (
        "The decision set is the random test split (a single period, or too few recent customers)."
        if comparison.get("set", "random_split") == "random_split"
        else "Second view, the random test split (all periods):\n\n" + _table(_metrics_table(metrics, champion_metrics))
    )
    search = lineage.get("search") or {}
    search_text = (
        f"{search['trials']} trial(s) of {search['folds']}-fold cross-validation on {search['search_rows']} training "
        f"rows ({search['seconds']:.1f} s{', stopped by the time budget' if search.get('stopped_by_time') else ''}); "
        f"best CV {search['cv_metric']} {search['best_cv_mean']:.4f} +/- {search['best_cv_std']:.4f} "
        f"(configured parameters: {search['configured_params_cv_mean']:.4f}), {search['best_rounds']} rounds; "
        f"best parameters `{json.dumps(search['best_params'], sort_keys=True)}`"
        if search
        else "no search recorded"
    )
    refit = (
        "The model was refit on all labelled data after selection."
        if lineage.get("refit_on_all_data")
        else "The model is the one that was evaluated (trained on the training split only; not refit on all data)."
    )
    return f"""# Model card: {model_version}

**Use case:** {use_case_title}. {use_case_description}
**Status:** {status}

## Intended use
Rank existing customers by purchase propensity so that advisors and marketing contact the most likely
buyers first (the top decile by default). Scores are probabilities, calibrated on the training
population. Not for decisions about credit, pricing or eligibility.

## Training data
- Training window: {lineage.get("training_window", "n/a")}; {lineage.get("training_rows", "n/a")} labelled customers
  (train / validation / test: {lineage.get("split_sizes", "n/a")})
- Training-set fingerprint (sha256): `{lineage.get("training_set_fingerprint", "n/a")}`
- Loads: {", ".join(lineage.get("load_ids", [])) or "n/a"}
- Source files: {", ".join(lineage.get("source_files", [])) or "n/a"}
- Trigger: {lineage.get("trigger", "n/a")} {json.dumps(lineage.get("trigger_reason") or {})}
- Code version: {lineage.get("code_version", "n/a")}; Dagster run: {lineage.get("dagster_run_id", "n/a")}

## Features ({len(features)})
{feature_list}

## Parameters
`{json.dumps(params, sort_keys=True)}`

Search: {search_text}. {refit}

## Metrics on the decision set, against champion {champion_version or "none"} on the same customers
Decision set: {decided_on}.

{_table(_metrics_table(decision_metrics, comparison.get("champion")))}

{intervals or "No paired comparison (no champion)."}

{second_view}

## Lift by score decile (decision set)
{_table(deciles, DECILE_COLUMNS)}

## Calibration (decision set)
{calibration_text}

{_table(calibration, ["bin", "customers", "mean_score", "observed_rate"])}

## Fairness
{fairness_summary}

{_table(fairness_table, FAIRNESS_COLUMNS)}

## Validation decision
{decision}

## Approval record
{_table(events)}

## Known limitations
{chr(10).join(f"- {item}" for item in limitations)}
"""


def _calibration_text(metrics: dict, champion: dict | None, calibration: dict) -> str:
    """Brier vs the base rate's, ECE, mean score vs realized rate, and how scores were calibrated."""
    if not metrics or "ece" not in metrics:
        return "_no calibration figures recorded_"
    method = (
        f"Scores are calibrated with {calibration['method']} calibration fitted on the validation split "
        f"({calibration.get('rows', 'n/a')} customers, {calibration.get('buyers', 'n/a')} buyers). "
        if calibration
        else "No calibration map stored (a model from before calibration). "
    )
    text = (
        f"{method}This model: Brier score {metrics['brier_score']:.4f} against {metrics['base_rate_brier']:.4f} for "
        f"predicting the base rate for everyone; expected calibration error {metrics['ece']:.4f}; mean score "
        f"{metrics['mean_score']:.4f} against a realized buyer rate of {metrics['realized_rate']:.4f}."
    )
    if champion and "ece" in champion:
        text += (
            f" Champion on the same customers: Brier {champion['brier_score']:.4f}, ECE {champion['ece']:.4f}, "
            f"mean score {champion['mean_score']:.4f}."
        )
    return text
