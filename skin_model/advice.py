"""Plain-language text for clinicians, derived from what evaluation measured
(``metrics.json``): what the referral threshold achieved on new lesions.
"""

from __future__ import annotations


def operating_point_text(m: dict | None, with_context: bool = False) -> str:
    """What the referral flag achieved on the test split, for the help text beside it.

    Args:
        m: A ``metrics.json`` dict (None: nothing to say).
        with_context: Use the figures measured with the patient context given.

    Returns:
        E.g. ``"On new test lesions this threshold found 92% of malignant lesions (95%
        interval 88–95%) at 61% specificity (57–65%)."``
    """
    if not m:
        return ""
    src = m.get("with_metadata", m) if with_context else m
    op, iv = src["malignant"]["operating_point"], src.get("intervals") or {}

    def pct(key: str, value) -> str:
        span = iv.get(key)
        inner = f" (95% interval {span[0]:.0%}–{span[1]:.0%})" if span else ""
        return f"{value:.0%}{inner}"

    if op.get("sensitivity") is None or op.get("specificity") is None:
        return ""
    return (
        f"On new test lesions{' with patient context' if with_context else ''} this "
        f"threshold found {pct('malignant_sensitivity', op['sensitivity'])} of malignant "
        f"lesions at {pct('malignant_specificity', op['specificity'])} specificity."
    )
