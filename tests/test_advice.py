"""The verdict's wording rules, fast: the case's own risk leads and a tier figure says it is
the tier's average; partly given patient details are named; the decision is data."""

from dataclasses import replace

import numpy as np

from skin_model.advice import details_used, verdict
from skin_model.inference import Prediction
from skin_model.metadata import PatientContext

TIERS = [
    {"key": "low", "rate_malignant": 0.1, "rate_benign": 0.7},
    {"key": "raised", "rate_malignant": 0.3, "rate_benign": 0.25},
    {"key": "high", "rate_malignant": 0.6, "rate_benign": 0.05},
]


def _pred(risk: float, threshold: float = 0.3, context=None) -> Prediction:
    p = np.zeros(7)
    p[4], p[5] = risk, 1 - risk
    return Prediction(
        probabilities=p,
        malignant_probability=risk,
        suspicious=risk >= threshold,
        unsure=False,
        ood_score=1.0,
        looks_dermoscopic=True,
        decision=int(np.argmax(p)),
        threshold=threshold,
        context=context,
    )


def test_a_high_own_risk_is_not_contradicted_by_the_tier_average():
    v = verdict(_pred(0.96), 0.96, 0.3, TIERS, 0.05)
    # the case's risk comes first; the tier figure names itself an average, and repeats it
    assert v.risk_line.startswith("Malignant risk 96%")
    assert v.evidence.startswith("Tier average: about 39 of 100 lesions in the high-risk tier")
    assert v.evidence.endswith("this case's own risk is 96%.")


def test_partly_given_details_are_named_and_all_or_none_say_nothing():
    assert details_used(PatientContext(age=63)) == (
        "Patient details: age given, sex and site not given; the result uses age only."
    )
    assert "sex and site given, age not given" in details_used(
        PatientContext(sex="male", site="back")
    )
    assert details_used(PatientContext(63, "male", "back")) == ""
    assert details_used(PatientContext()) == ""
    assert details_used(None) == ""
    v = verdict(_pred(0.4, context=PatientContext(age=70)), 0.4, 0.3, TIERS, 0.05)
    assert v.details.endswith("the result uses age only.")


def test_the_decision_is_carried_as_data():
    v = verdict(_pred(0.4), 0.4, 0.3, TIERS, 0.05)
    assert (v.refer, v.tier, v.risk, v.threshold) == (True, "raised", 0.4, 0.3)
    assert v.tier_name == "Raised risk"
    # the wording may change; the decision fields do not depend on it
    assert replace(v, title="anything").refer is True
    low = verdict(_pred(0.1), 0.1, 0.3, TIERS, 0.05)
    assert (low.refer, low.tier, low.tier_name) == (False, "low", "Low risk")
