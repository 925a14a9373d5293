"""Model cards: one markdown page per model version, for the Dagster UI, DuckDB and auditors."""

from __future__ import annotations

import json

import pandas as pd


def model_facts(metrics: dict, lineage: dict) -> dict:
    """Facts about a model computed from its own data, for the placeholders of a use case's
    `known_limitations` (e.g. `{test_buyers}`), so that no card repeats a number of another model.

    `roc_auc_standard_error` is Hanley & McNeil's (1982) standard error of the test ROC AUC.
    """
    auc = float(metrics.get("roc_auc", float("nan")))
    positives = float(metrics.get("buyers", 0))
    negatives = float(metrics.get("customers", 0)) - positives
    standard_error = float("nan")
    if positives > 0 and negatives > 0:
        q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
        variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
            positives * negatives
        )
        standard_error = max(variance, 0.0) ** 0.5
    return {
        "labelled_customers": int(lineage.get("training_rows", 0)),
        "split_sizes": lineage.get("split_sizes", "n/a"),
        "test_customers": int(metrics.get("customers", 0)),
        "test_buyers": int(positives),
        "test_roc_auc": auc,
        "roc_auc_standard_error": standard_error,
    }


def fill_limitations(texts: list[str], facts: dict) -> list[str]:
    """`known_limitations` with their `{placeholders}` replaced by the model's facts."""
    return [text.format_map(facts) for text in texts]


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
