"""The results CSV of the CLI and the app: its columns, one row per file, and the writer.

Cells are safe to open in a spreadsheet: text that a spreadsheet would run as a formula
(starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with
``'``, and numbers are written in plain decimals (no exponents).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from skin_model import CLASSES, display_name
from skin_model.runtime.advice import TIER_TEXT, Verdict, pct, tier_key
from skin_model.runtime.inference import Prediction

CSV_COLUMNS = (
    "file",
    "case",
    "created",
    "model",
    "reference",
    "notes",
    "refer",
    "risk_tier",
    "malignant_risk_shown",
    "malignant_risk",
    "referral_threshold_shown",
    "referral_threshold",
    "prevalence",
    "most_likely",
    "most_likely_probability",
    "suggested_diagnosis",
    *CLASSES,
    "looks_dermoscopic",
    "not_dermoscopic_score",
    "quality_warnings",
    "model_unsure",
    "views",
    "patient_context",
    "error",
)
"""``case`` is the case's label as the page shows it (``Case 2``; images of one lesion share
it), ``created`` the date and time, ``model`` the model version, ``reference`` and ``notes``
what the clinician typed for the case. ``refer`` is the referral flag (``yes`` when
``malignant_risk`` reaches ``referral_threshold``), whatever the warnings say; ``risk_tier``
its plain-language tier.
``malignant_risk``, the class columns and ``referral_threshold`` are at ``prevalence``
(the malignant share the figures are shown at), as decimals; the ``_shown`` columns are the
same two figures as the page shows them (``"23%"``). ``most_likely`` is the most probable class;
``suggested_diagnosis`` the balanced rule's choice (the one balanced accuracy measures).
``not_dermoscopic_score`` is above 1 where the "not dermoscopic" detector's limit is
passed; ``quality_warnings`` lists the image-quality gate's findings. ``views`` is how many
turns of the image the result averaged (more than the model's usual views: its risk was near
the threshold and the model looked again)."""

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value):
    """A cell a spreadsheet shows as text: formula-like strings get a leading ``'``."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def number(x: float | None, digits: int = 4) -> str:
    """A plain decimal (``"0.0001"``, never ``"1e-04"``); ``""`` for None."""
    return "" if x is None else f"{float(x):.{digits}f}"


def result_row(
    file: str,
    prediction: Prediction | None,
    error: str = "",
    quality: Sequence[str] = (),
    prevalence: float | None = None,
    verdict: Verdict | None = None,
    record: dict | None = None,
) -> dict:
    """One results-CSV row (:data:`CSV_COLUMNS`) for a prediction or an error.

    Args:
        file: The file's name or path, as given.
        prediction: Its prediction (None: it failed, see ``error``).
        error: Why it could not be classified.
        quality: The problems the quality gate found (keys of
            :data:`skin_model.data.quality.LABELS`).
        prevalence: The malignant share the prediction is shown at (None: the training
            data's, taken from the prediction when it was re-weighted).
        verdict: The case's verdict (its ``refer`` and ``tier`` are written); None: from
            the prediction's own flag and tier.
        record: Values of the case columns (``case``, ``created``, ``model``,
            ``reference``, ``notes``) where known.
    """
    row = {c: "" for c in CSV_COLUMNS}
    row.update({k: v for k, v in (record or {}).items() if k in row})
    row["file"], row["error"] = file, error
    from skin_model.data.quality import LABELS

    row["quality_warnings"] = ", ".join(LABELS[q] for q in quality)
    if prediction is not None:
        probs = prediction.probabilities
        most = prediction.most_probable_class
        refer = verdict.refer if verdict else prediction.suspicious
        tier = (
            verdict.tier if verdict else tier_key(prediction.base_risk, prediction.base_threshold)
        )
        row.update(
            refer="yes" if refer else "no",
            risk_tier=TIER_TEXT[tier][0],
            malignant_risk=number(prediction.malignant_probability),
            malignant_risk_shown=pct(prediction.malignant_probability),
            referral_threshold=number(prediction.threshold),
            referral_threshold_shown=pct(prediction.threshold),
            prevalence=number(prediction.prevalence if prediction.prevalence else prevalence),
            most_likely=display_name(most),
            most_likely_probability=number(probs[CLASSES.index(most)]),
            suggested_diagnosis=display_name(prediction.suggested_class),
            looks_dermoscopic="yes" if prediction.looks_dermoscopic else "no",
            not_dermoscopic_score=number(prediction.ood_score, 3),
            model_unsure="yes" if prediction.unsure else "no",
            views=prediction.views,
            patient_context=prediction.context_used,
        )
        for c, p in zip(CLASSES, probs, strict=True):
            row[c] = number(p)
    return {k: safe_cell(v) for k, v in row.items()}


def write_rows(rows: Iterable[dict], out) -> None:
    """Write result rows as CSV to an open text stream."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def rows_to_csv_text(rows: Sequence[dict]) -> str:
    """Result rows as CSV text."""
    buf = io.StringIO()
    write_rows(rows, buf)
    return buf.getvalue()
