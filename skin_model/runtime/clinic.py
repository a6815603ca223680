"""Clinic maths: what a model's test figures mean at a clinic's malignant share (its
prevalence), for the metrics page and the verdicts. Figures come from ``metrics.json``;
the re-weighting itself is :func:`skin_model.model.calibration.adjust_prevalence` (Bayes' rule).
"""

from __future__ import annotations

from collections.abc import Sequence

from skin_model.model.calibration import adjust_prevalence
from skin_model.model.metrics_file import Metrics, RiskTier
from skin_model.runtime.advice import TIER_TEXT, pct, share_at

FALLBACK_SHARE = 0.2
"""The malignant share assumed when neither the model nor its metrics record the training
data's (older model directories)."""


def training_share(bundle_share: float | None, metrics: Metrics | None = None) -> float:
    """The training data's malignant share: the model's, else its metrics', else
    :data:`FALLBACK_SHARE`.
    """
    recorded = metrics.malignant.training_share if metrics else None
    return bundle_share or recorded or FALLBACK_SHARE


def per_thousand(sens: float, spec: float, prevalence: float) -> dict:
    """Referrals, malignant lesions found and missed, and benign referrals per 1,000
    examined lesions at an operating point's sensitivity and specificity.
    """
    malignant = 1000 * prevalence
    return {
        "referred": malignant * sens + (1000 - malignant) * (1 - spec),
        "found": malignant * sens,
        "missed": malignant * (1 - sens),
        "benign_referred": (1000 - malignant) * (1 - spec),
    }


def risk_at(risk: float, trained: float, prevalence: float) -> float:
    """A training-scale risk (or threshold) as shown at the clinic's prevalence."""
    return float(adjust_prevalence(risk, trained, prevalence))


def tier_rows(tiers: Sequence[RiskTier], prevalence: float, trained: float) -> list[dict]:
    """What each risk tier means at the clinic: its risk range as shown, lesions per 1,000
    and the malignant share among them (Bayes' rule on the tier's test rates).
    """
    rows = []
    for t in tiers:
        lo = risk_at(t.lower, trained, prevalence)
        hi = risk_at(min(t.upper, 1.0), trained, prevalence)
        share = share_at(t, prevalence)
        per_1000 = 1000 * (prevalence * t.rate_malignant + (1 - prevalence) * t.rate_benign)
        rows.append(
            {
                "result": TIER_TEXT[t.key][0],
                "risk shown": f"{pct(lo)} to {pct(hi)}",
                "lesions per 1,000": f"{per_1000:.0f}",
                "malignant among them": "" if share is None else f"about {share * 100:.0f} in 100",
                "what to do": TIER_TEXT[t.key][1],
            }
        )
    return rows
