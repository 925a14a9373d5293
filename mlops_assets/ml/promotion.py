"""Champion/challenger: may a newly trained model replace the model in production?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROMOTE, PENDING_APPROVAL, REJECT = "promote", "pending_approval", "reject"


class PromotionPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    primary_metric: Literal["roc_auc", "top_decile_lift"] = Field(
        "roc_auc", description="Metric on which a challenger must not be worse than the champion."
    )
    tolerance: float = Field(
        0.01,
        ge=0,
        description="How much worse than the champion (absolute, on the primary metric) is still accepted.",
    )
    approval: Literal["auto", "manual"] = Field(
        "auto", description="manual: a challenger that passes the gates waits for a person's approval."
    )


@dataclass
class Decision:
    action: str  # promote | pending_approval | reject
    reasons: list[str] = field(default_factory=list)
    gates: dict[str, bool] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return f"{self.action}: " + "; ".join(self.reasons)


def decide(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    *,
    min_roc_auc: float,
    fairness_passed: bool,
    fairness_reasons: list[str],
    policy: PromotionPolicy,
) -> Decision:
    """Gates: the absolute quality floor, fairness, and not worse than the champion beyond the
    tolerance on the primary metric, both measured on the same evaluation data. Passing every gate
    promotes (auto) or waits for approval (manual); failing any rejects, with the reasons."""
    gates, reasons = {}, []
    gates["quality_floor"] = challenger["roc_auc"] >= min_roc_auc
    reasons.append(f"ROC AUC {challenger['roc_auc']:.4f} {'>=' if gates['quality_floor'] else '<'} floor {min_roc_auc}")
    gates["fairness"] = fairness_passed
    reasons.append("fairness check passed" if fairness_passed else "fairness: " + "; ".join(fairness_reasons))
    metric = policy.primary_metric
    if champion is None:
        gates["not_worse_than_champion"] = True
        reasons.append("no champion yet")
    else:
        difference = challenger[metric] - champion[metric]
        gates["not_worse_than_champion"] = difference >= -policy.tolerance
        reasons.append(
            f"{metric} {challenger[metric]:.4f} vs champion {champion[metric]:.4f} "
            f"({difference:+.4f}, tolerance {policy.tolerance})"
        )
    if not all(gates.values()):
        failed = [name for name, passed in gates.items() if not passed]
        return Decision(REJECT, [f"failed gate(s): {', '.join(failed)}", *reasons], gates)
    if policy.approval == "manual":
        return Decision(PENDING_APPROVAL, ["passed all gates, waiting for approval", *reasons], gates)
    return Decision(PROMOTE, ["passed all gates", *reasons], gates)
