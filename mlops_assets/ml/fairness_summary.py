"""One sentence for a model's fairness result, the same in the CLI, the review pages and the model card.

Plain Python with no imports, so `mlops audit` stays light (it imports neither pandas nor numpy).
"""


def fairness_summary(fairness: dict) -> str:
    """Passed, failed or not evaluated, and each ratio with whether it is gated (and its bound) or only
    reported. A gated ratio without a value (fewer than two groups large enough, see the notes) did not
    judge the model: the verdict then says "not evaluated", never "passed"."""
    if not fairness:
        return "no fairness gate"
    bounds = fairness.get("bounds") or {}
    parts, evaluated, gated = [], 0, 0
    for label, key, bound in (
        ("true-positive-rate ratio", "equal_opportunity_ratio", "min_tpr_ratio"),
        ("selection-rate ratio", "demographic_parity_ratio", "min_selection_rate_ratio"),
    ):
        value = fairness.get(key)
        known = value is not None and value == value
        shown = f"{value:.2f}" if known else "n/a"
        if bounds.get(bound) is not None:
            gated += 1
            evaluated += known
            gate = f"gated, bound {bounds[bound]}" + ("" if known else ": not evaluated, too few groups qualify")
        else:
            gate = "reported, not gated"
        parts.append(f"{label} {shown} ({gate})")
    if not fairness.get("passed"):
        verdict = "FAILED"
    elif not gated:
        verdict = "reported only (no ratio is gated)"
    elif not evaluated:
        verdict = "not evaluated (no gated ratio could be computed)"
    else:
        verdict = "passed"
    return f"{verdict} on {fairness.get('attribute')}: " + "; ".join(parts)


def fairness_verdict(fairness: dict) -> str:
    """The verdict alone: passed, FAILED, not evaluated (...), reported only (...), or no fairness gate."""
    return fairness_summary(fairness).split(" on ", 1)[0]
