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


def _metrics_table(metrics: dict, champion_metrics: dict | None) -> pd.DataFrame:
    rows = []
    for name in (
        "roc_auc",
        "pr_auc",
        "top_decile_lift",
        "top_decile_capture_rate",
        "brier_score",
        "base_rate",
    ):
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
) -> str:
    feature_list = ", ".join(f"{f['name']} ({f['type']})" for f in features)
    events = status_events[["changed_at", "status", "actor", "reason"]] if not status_events.empty else None
    recent = (
        f"Most recent labelled data ({recent_metrics.get('customers', 0):.0f} customers): ROC AUC "
        f"{recent_metrics['roc_auc']:.4f}, top-decile lift {recent_metrics['top_decile_lift']:.2f}."
        if recent_metrics
        else "Most recent labelled data: not available separately (see limitations)."
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

## Metrics (test split, compared with champion {champion_version or "none"} on the same customers)
{_table(_metrics_table(metrics, champion_metrics))}

{recent}

## Lift by score decile (test split)
{_table(deciles, DECILE_COLUMNS)}

## Calibration (test split)
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
