"""A case end to end, for the app: decode, predict (with optional patient context and a
clinic's prevalence), explain, report.

All in memory: nothing here writes or logs an image or a patient's details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from skin_model import CLASSES, display_name
from skin_model.explain import explain, overlay
from skin_model.imaging import ImageError, decode_image
from skin_model.inference import ModelBundle, Prediction, predict_images
from skin_model.metadata import PatientContext, encode
from skin_model.report import render_report
from skin_model.results import result_row, rows_to_csv_text

SUSPICIOUS = "suspicious — consider biopsy/referral"
BENIGN = "below the referral threshold"
NOT_DERMOSCOPIC = "does not look like a dermoscopic image"


@dataclass
class Case:
    """One uploaded file and what became of it.

    ``predictions`` caches the model's result per patient context, at the training
    prevalence, so changing the context or the prevalence never re-decodes the image.
    """

    name: str
    digest: str
    image: np.ndarray | None = None
    error: str = ""
    predictions: dict = field(default_factory=dict)


def digest(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (the cache key of an upload)."""
    return hashlib.sha256(data).hexdigest()


def decode_uploads(uploads: Sequence[tuple[str, bytes]]) -> list[Case]:
    """Decode uploads; a file that cannot be used gets its own error, the rest go on."""
    cases = []
    for name, data in uploads:
        case = Case(name=name, digest=digest(data))
        try:
            case.image = decode_image(data)
        except ImageError as exc:
            case.error = str(exc)
        cases.append(case)
    return cases


APP_CHUNK = 4
"""Images per model call in the app: a few uploads at a time, so peak memory matters more
than batch speed (16, the CLI's, used about 17 MB more for 10 uploads)."""


def predict_cases(
    bundle: ModelBundle,
    cases: Sequence[Case],
    contexts: Sequence[PatientContext | None] | None = None,
    prevalence: float | None = None,
) -> list[Prediction | None]:
    """Each case's prediction for its context, at ``prevalence``; uncached ones in one batch.

    Args:
        bundle: Loaded model.
        cases: Decoded cases (failed ones give None).
        contexts: Patient context per case (None: not given).
        prevalence: Malignant share to show probabilities at (None: the training data's).

    Returns:
        One prediction (or None for a failed case) per case, in order.
    """
    contexts = list(contexts) if contexts is not None else [None] * len(cases)
    todo = [
        (c, ctx)
        for c, ctx in zip(cases, contexts, strict=True)
        if c.image is not None and ctx not in c.predictions
    ]
    if todo:
        images, ctxs = [c.image for c, _ in todo], [x for _, x in todo]
        preds = predict_images(bundle, images, None, ctxs, chunk=APP_CHUNK)
        for (case, ctx), pred in zip(todo, preds, strict=True):
            case.predictions[ctx] = pred
    return [
        None if c.image is None else c.predictions[ctx].at_prevalence(bundle.posthoc, prevalence)
        for c, ctx in zip(cases, contexts, strict=True)
    ]


def flag(prediction: Prediction) -> str:
    """Plain-language flag of a prediction."""
    if not prediction.looks_dermoscopic:
        return NOT_DERMOSCOPIC
    return SUSPICIOUS if prediction.suspicious else BENIGN


def summary_row(case: Case, prediction: Prediction | None) -> dict:
    """One row of the batch summary table."""
    if prediction is None:
        return {
            "file": case.name,
            "suggested diagnosis": "—",
            "its probability": None,
            "malignant risk": None,
            "flag": f"error: {case.error}",
            "patient context used": "—",
        }
    return {
        "file": case.name,
        "suggested diagnosis": display_name(prediction.suggested_class),
        "its probability": float(prediction.probabilities[prediction.decision]),
        "malignant risk": prediction.malignant_probability,
        "flag": flag(prediction) + (" (model unsure)" if prediction.unsure else ""),
        "patient context used": prediction.context_used,
    }


def csv_text(cases: Sequence[Case], predictions: Sequence[Prediction | None]) -> str:
    """The CLI's CSV for a batch of cases (same columns)."""
    rows = [result_row(c.name, p, c.error) for c, p in zip(cases, predictions, strict=True)]
    return rows_to_csv_text(rows)


def top3_table(prediction: Prediction) -> dict[str, float]:
    """The three most probable classes as ``{"Melanoma (mel)": 0.61, ...}``."""
    return {display_name(c): p for c, p in prediction.top_k(3)}


def explanation(
    bundle: ModelBundle,
    case: Case,
    class_code: str,
    method: str,
    context: PatientContext | None = None,
) -> np.ndarray:
    """The heatmap of ``class_code`` for a decoded case (image path; context held fixed)."""
    meta = encode(context) if bundle.feeds_context else None
    return explain(bundle, case.image, CLASSES.index(class_code), method, meta)


def overlay_image(case: Case, cam: np.ndarray, alpha: float) -> np.ndarray:
    """The case's image with the heatmap blended in at opacity ``alpha``."""
    return overlay(case.image, cam, alpha)


def case_report(
    bundle: ModelBundle,
    case: Case,
    prediction: Prediction,
    cam: np.ndarray,
    class_code: str,
    method: str,
    alpha: float,
) -> bytes:
    """The one-page PNG report of a case, naming the method and class the overlay shows."""
    version = bundle.config.describe()
    return render_report(
        case.name,
        case.image,
        overlay(case.image, cam, alpha),
        prediction,
        prediction.threshold,
        flag(prediction),
        version,
        f"{method} for {display_name(class_code)}",
    )
