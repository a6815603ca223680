"""The verdict's wording rules, fast: the case's own risk leads and a tier figure says it is
the tier's average; partly given patient details are named; the decision is data."""

from dataclasses import replace

import numpy as np
import pytest

from skin_model.data.metadata import PatientContext
from skin_model.model.metrics_file import RiskTier
from skin_model.runtime.advice import details_used, headline, pct, share_at, verdict
from skin_model.runtime.inference import Prediction
from tests.fakes import prediction as _pred

TIERS = (
    RiskTier("low", 0.0, 0.3, rate_malignant=0.1, rate_benign=0.7),
    RiskTier("raised", 0.3, 0.5, rate_malignant=0.3, rate_benign=0.25),
    RiskTier("high", 0.5, 1.01, rate_malignant=0.6, rate_benign=0.05),
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


def test_a_warning_never_hides_the_referral_verdict():
    v = verdict(_pred(0.9, looks=False), 0.93, 0.3, TIERS, 0.05, 0.3, ["blurred"])
    assert v.refer and v.tier == "high" and v.title == "High risk: refer"
    assert [label for label, _ in v.warnings] == ["not dermoscopic", "blurred"]
    assert "Refer urgently" in v.action and "90%" in v.risk_line
    low = verdict(_pred(0.02), 0.05, 0.3, TIERS, 0.05, 0.3)
    assert not low.refer and low.tier == "low" and "does not rule out melanoma" in low.action


def test_tier_evidence_is_bayes_at_the_clinic_prevalence():
    # high tier at 5% prevalence: 0.05 * 0.6 / (0.05 * 0.6 + 0.95 * 0.05) = 0.387
    assert share_at(TIERS[2], 0.05) == pytest.approx(0.03 / (0.03 + 0.0475))
    v = verdict(_pred(0.9), 0.93, 0.3, TIERS, 0.05)
    assert "about 39 of 100 lesions in the high-risk tier" in v.evidence and "5.0%" in v.evidence
    assert v.evidence.startswith("Tier average") and "this case's own risk is" in v.evidence
    assert "fewer than 1 in 100" in verdict(_pred(0.02), 0.05, 0.3, TIERS, 0.001).evidence


def test_a_case_threshold_that_differs_says_why():
    v = verdict(_pred(0.2, threshold=0.05), 0.2, 0.05, TIERS, 0.05, image_only_threshold=0.09)
    assert "patient details were given" in v.threshold_reason
    assert verdict(_pred(0.2), 0.2, 0.3, TIERS, 0.05, 0.3).threshold_reason == ""


@pytest.mark.parametrize(
    ("x", "text"),
    [(0.00002, "< 0.1%"), (0.004, "0.4%"), (0.042, "4.2%"), (0.234, "23%"), (0.999, "> 99%")],
)
def test_risks_have_sensible_precision(x, text):
    assert pct(x) == text


def test_headline_is_the_chart_first_bar_and_names_the_balanced_choice():
    first, other = headline(_pred(0.6))  # mel 0.6, nv 0.4; the balanced rule agrees
    assert first.startswith("Most likely: Melanoma (mel), 60%") and other == ""
    probs = np.array([0.01, 0.01, 0.02, 0.0, 0.24, 0.71, 0.01])
    q = Prediction(probs, 0.26, False, False, 1.0, True, decision=4, threshold=0.3)
    first, other = headline(q)
    assert "Melanocytic nevus" in first and other.startswith("Do not miss: Melanoma (mel), 24%")
    assert q.top_k(1)[0][0] == "nv"  # the chart's first bar is the headline class


def test_a_second_look_is_said_beside_the_risk_and_only_when_taken():
    looked = verdict(replace(_pred(0.32), views=4), 0.32, 0.3, TIERS, 0.05, base_views=1)
    assert looked.refer and "looked again" in looked.second_look and "4 ways" in looked.second_look
    assert verdict(_pred(0.32), 0.32, 0.3, TIERS, 0.05, base_views=1).second_look == ""
    assert (
        verdict(replace(_pred(0.32), views=4), 0.32, 0.3, TIERS, 0.05, base_views=4).second_look
        == ""
    )
