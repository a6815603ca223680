"""Plain-language results for clinicians, derived from what evaluation measured
(``metrics.json``): the referral verdict, risk tiers with what to do next, the headline
diagnosis, risks written with sensible precision, and the clinic prevalence presets.

Nothing here hides a verdict: warnings (not dermoscopic, poor quality, model unsure) are
returned beside it, never instead of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from skin_model import MALIGNANT, display_name
from skin_model.model.metrics_file import Metrics, RiskTier

PRESETS = {
    "primary": ("Primary care / general practice", 0.05),
    "specialist": ("Dermatology clinic (like the training data)", None),
    "custom": ("Other: enter your own", None),
}
"""Clinic settings and their malignant share (None: the training data's share for the
specialist preset, the user's own figure for ``custom``)."""
DEFAULT_PRESET = "primary"

HIGH_RISK = 0.5
"""Training-scale risk at or above which a case is in the high tier (more likely malignant
than not among HAM10000's lesions)."""

TIER_TEXT = {
    "high": (
        "High risk",
        "Refer urgently to a dermatologist; consider excision biopsy.",
    ),
    "raised": (
        "Raised risk",
        "At or above the referral threshold: refer for specialist assessment or biopsy.",
    ),
    "low": (
        "Low risk",
        "A low result does not rule out melanoma: examine the lesion and the rest of the "
        "skin, and review or refer if it is new, changing, "
        "symptomatic or you are concerned. If in doubt, photograph it and compare in about "
        "3 months.",
    ),
}
"""Name and what to do next, per tier."""


def pct(x: float | None) -> str:
    """A probability as text with sensible precision: ``"< 0.1%"``, ``"0.4%"``, ``"4.2%"``,
    ``"23%"``, ``"> 99%"``; ``"n/a"`` for None.
    """
    if x is None:
        return "n/a"
    if x < 0.001:
        return "< 0.1%"
    if x < 0.1:
        return f"{100 * x:.1f}%"
    if x > 0.995:
        return "> 99%"
    return f"{100 * x:.0f}%"


def tier_key(risk_training_scale: float, threshold_training_scale: float) -> str:
    """``high``, ``raised`` or ``low`` for a risk at the training prevalence."""
    if risk_training_scale >= max(HIGH_RISK, threshold_training_scale):
        return "high"
    return "raised" if risk_training_scale >= threshold_training_scale else "low"


def share_at(tier: RiskTier, prevalence: float) -> float | None:
    """Share of malignant lesions among those in a tier at a clinic's prevalence (Bayes'
    rule on the tier's rates among malignant and benign test lesions).
    """
    a, b = tier.rate_malignant, tier.rate_benign
    if a + b == 0:
        return None
    return prevalence * a / (prevalence * a + (1 - prevalence) * b)


@dataclass(frozen=True)
class Verdict:
    """What a case's result means, in words.

    The decision travels as data (``refer``, ``tier``, ``risk``, ``threshold``): the page,
    the PDF, the CSV and the summary read these fields, never the wording.

    Attributes:
        refer: The referral flag (risk at or above the threshold), whatever the warnings.
        tier: ``high``, ``raised`` or ``low``.
        risk: The case's malignant risk as shown (at the page's prevalence).
        threshold: The referral threshold it was compared with (same scale).
        title: E.g. ``"Raised risk: refer"``.
        action: What to do next.
        evidence: The tier's average, said to be one, after the case's own risk:
            ``"Tier average: about 31 of 100 lesions in the raised-risk tier were malignant
            in testing (at a prevalence of 5.0%); this case's own risk is 12%."`` (empty
            without tier figures).
        risk_line: Risk against the threshold, e.g. ``"Malignant risk 12% (referral
            threshold 9.2%)"``.
        threshold_reason: Why this case's threshold differs from the image-only one, or "".
        details: Which patient details the result used when only some were given, or "".
        second_look: That the risk was near the threshold and more turns of the image
            were averaged (:func:`skin_model.runtime.inference.second_look`), or "".
        warnings: ``(short label, what it means and what to do)`` shown beside the verdict.
    """

    refer: bool
    tier: str
    risk: float
    threshold: float
    title: str
    action: str
    evidence: str
    risk_line: str
    threshold_reason: str
    warnings: tuple[tuple[str, str], ...]
    details: str = ""
    second_look: str = ""

    @property
    def tier_name(self) -> str:
        """The tier in words, e.g. ``"Raised risk"``."""
        return TIER_TEXT[self.tier][0]

    @property
    def labels(self) -> str:
        """The warnings' short labels, e.g. ``"not dermoscopic, blurred"`` (or ``"none"``)."""
        return ", ".join(label for label, _ in self.warnings) or "none"


def verdict(
    prediction,
    training_risk: float,
    training_threshold: float,
    tiers: Sequence[RiskTier] | None,
    prevalence: float,
    image_only_threshold: float | None = None,
    quality: list[str] | tuple[str, ...] = (),
    base_views: int = 1,
) -> Verdict:
    """The plain-language verdict of one prediction.

    Args:
        prediction: A :class:`skin_model.runtime.inference.Prediction` at the shown prevalence.
        training_risk: Its malignant risk at the training prevalence (tiers are defined
            there, so the same cases fall in a tier whatever the prevalence).
        training_threshold: Its referral threshold at the training prevalence.
        tiers: The model's risk tiers (:attr:`Metrics.malignant`; None: no tier figures).
        prevalence: The malignant share the figures are shown at.
        image_only_threshold: The page's image-only threshold at ``prevalence`` (to say
            why a case with patient details has another).
        quality: Problems the quality gate found (keys of
            :data:`skin_model.data.quality.MESSAGES`).
        base_views: The model's usual test-time views (more: a second look was taken).

    Returns:
        The :class:`Verdict`.
    """
    key = tier_key(training_risk, training_threshold)
    name, action = TIER_TEXT[key]
    title = f"{name}: refer" if prediction.suspicious else f"{name}: below the referral threshold"
    evidence = ""
    tier = next((t for t in tiers or () if t.key == key), None)
    share = share_at(tier, prevalence) if tier else None
    if share is not None:
        among = f"lesions in the {name.lower().replace(' ', '-')} tier"
        own = f"this case's own risk is {pct(prediction.malignant_probability)}"
        evidence = (
            f"Tier average: about {max(share * 100, 0.1):.0f} of 100 {among} were malignant "
            f"in testing (at a prevalence of {pct(prevalence)}); {own}."
            if share >= 0.01
            else f"Tier average: fewer than 1 in 100 {among} were malignant in testing (at a "
            f"prevalence of {pct(prevalence)}); {own}."
        )
    reason = ""
    if image_only_threshold is not None and abs(prediction.threshold - image_only_threshold) > 1e-9:
        reason = (
            f"This case's threshold ({pct(prediction.threshold)}) differs from the image-only "
            f"{pct(image_only_threshold)} because patient details were given: it was chosen on "
            "calibration cases with their details so that the same sensitivity holds."
        )
    from skin_model.data.quality import LABELS, MESSAGES

    warnings = []
    if not prediction.looks_dermoscopic:
        warnings.append(
            (
                "not dermoscopic",
                "This does not look like a dermoscopic image of a skin lesion, so the result "
                "may mean nothing. Check that the right image was uploaded.",
            )
        )
    warnings.extend((LABELS[q], MESSAGES[q]) for q in quality)
    if prediction.unsure:
        warnings.append(
            (
                "model unsure",
                "The model is unsure about this image (its answer is spread over several "
                "classes). Weigh the whole differential, not the first line.",
            )
        )
    return Verdict(
        refer=bool(prediction.suspicious),
        tier=key,
        risk=float(prediction.malignant_probability),
        threshold=float(prediction.threshold),
        title=title,
        action=action,
        evidence=evidence,
        risk_line=(
            f"Malignant risk {pct(prediction.malignant_probability)} "
            f"(referral threshold {pct(prediction.threshold)})"
        ),
        threshold_reason=reason,
        warnings=tuple(warnings),
        details=details_used(getattr(prediction, "context", None)),
        second_look=second_look_text(getattr(prediction, "views", 1), base_views),
    )


def second_look_text(views: int, base_views: int) -> str:
    """Why a result averaged more turns of its image than the model's usual ``base_views``
    (a second look near the threshold), in plain words; "" when it did not.
    """
    if views <= base_views:
        return ""
    return (
        "The risk was close to the referral threshold, so the model looked again: this result "
        f"averages the image turned {views} ways (a decision this close is the one a re-saved "
        "or turned copy of the file could otherwise change)."
    )


def details_used(context) -> str:
    """Which patient details a result used, said when only some were given (they move
    the risk, so a half-filled form must not pass unnoticed); ``""`` for all or none.

    Args:
        context: The :class:`~skin_model.data.metadata.PatientContext` the result used (None:
            none, or a model that uses none).
    """
    if context is None:
        return ""
    given = context.given
    if not given or len(given) == 3:
        return ""
    missing = [f for f in ("age", "sex", "site") if f not in given]
    return (
        f"Patient details: {' and '.join(given)} given, {' and '.join(missing)} not given; "
        f"the result uses {' and '.join(given)} only."
    )


def headline(prediction) -> tuple[str, str]:
    """The headline diagnosis and, where the balanced rule picks another class, the line
    that names it.

    The headline is the most probable class, so it is the first bar of the chart and its
    number is its probability. The suggestion rule (the one the accuracy figures measure:
    balanced, with the model's decision weights) suggests the class that is most likely
    *relative to how rare it is*; when that differs it is named too, as "do not miss" for a
    malignant class.

    Returns:
        ``("Most likely: Melanocytic nevus (nv), 72%", "Do not miss: Melanoma (mel), 25% ...")``
        (the second is ``""`` when both rules agree).
    """
    most = prediction.most_probable_class
    probs = dict(prediction.top_k(len(prediction.probabilities)))
    first = f"Most likely: {display_name(most)}, {pct(probs[most])}"
    suggested = prediction.suggested_class
    if suggested == most:
        return first, ""
    lead = "Do not miss" if suggested in MALIGNANT else "Also consider"
    return first, (
        f"{lead}: {display_name(suggested)}, {pct(probs[suggested])}. That is high for a class "
        "this rare; the rule the accuracy figures use suggests it."
    )


def operating_point_text(m: Metrics | None, with_context: bool = False) -> str:
    """What the referral threshold achieved on new test lesions, in one sentence.

    Args:
        m: The model's metrics (None: nothing to say).
        with_context: Use the figures measured with the patient context given.

    Returns:
        E.g. ``"In testing on new lesions, this threshold referred 95 of every 100
        malignant lesions (95% interval 91–98) and 35 of every 100 benign ones."``
    """
    if not m:
        return ""
    src = (m.with_metadata or m) if with_context else m
    op = src.malignant.operating_point
    if op.sensitivity is None or op.specificity is None:
        return ""
    span = src.interval("malignant_sensitivity")
    inner = f" (95% interval {span[0] * 100:.0f}–{span[1] * 100:.0f})" if span else ""
    details = " with patient details" if with_context else ""
    return (
        f"In testing on new lesions{details}, this threshold referred "
        f"{op.sensitivity * 100:.0f} of every 100 malignant lesions{inner} and "
        f"{(1 - op.specificity) * 100:.0f} of every 100 benign ones."
    )
