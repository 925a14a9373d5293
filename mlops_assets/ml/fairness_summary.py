"""One sentence for a model's fairness result, the same in the CLI, the review pages and the model card.

Plain Python with no imports, so `mlops audit` stays light (it imports neither pandas nor numpy).
"""


def _ratios(fairness: dict) -> tuple[list[str], int, int]:
    """Each ratio as text (value, gated with its bound or reported only), and how many are gated and
    how many of those could be computed."""
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
    return parts, gated, evaluated


def fairness_verdict(fairness: dict) -> str:
    """passed, FAILED, not evaluated (a gated ratio without a value: fewer than two groups large
    enough, see the notes; it did not judge the model, so never "passed"), reported only, or no gate."""
    if not fairness:
        return "no fairness gate"
    _, gated, evaluated = _ratios(fairness)
    if not fairness.get("passed"):
        return "FAILED"
    if not gated:
        return "reported only (no ratio is gated)"
    if not evaluated:
        return "not evaluated (no gated ratio could be computed)"
    return "passed"


def fairness_summary(fairness: dict) -> str:
    """The verdict and each ratio with whether it is gated (and its bound) or only reported."""
    if not fairness:
        return fairness_verdict(fairness)
    parts, _, _ = _ratios(fairness)
    return f"{fairness_verdict(fairness)} on {fairness.get('attribute')}: " + "; ".join(parts)
