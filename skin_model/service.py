"""Classifying uploaded bytes for the app: decode, batch-predict, explain, report.

All in memory: nothing here writes or logs an image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from skin_model import display_name
from skin_model.imaging import ImageError, decode_image
from skin_model.inference import ModelBundle, Prediction, predict_images, result_row

SUSPICIOUS = "suspicious — consider biopsy/referral"
BENIGN = "likely benign"
NOT_DERMOSCOPIC = "does not look like a dermoscopic image"


@dataclass
class Case:
    """One uploaded file and what became of it."""

    name: str
    digest: str
    image: np.ndarray | None = None
    prediction: Prediction | None = None
    error: str = ""


def digest(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (the cache key of an upload)."""
    return hashlib.sha256(data).hexdigest()


def classify_uploads(bundle: ModelBundle, uploads: Sequence[tuple[str, bytes]]) -> list[Case]:
    """Decode and classify uploads in one batch; bad files get their own error.

    Args:
        bundle: Loaded model.
        uploads: ``(file name, bytes)`` pairs.

    Returns:
        One :class:`Case` per upload, in order.
    """
    cases = []
    for name, data in uploads:
        case = Case(name=name, digest=digest(data))
        try:
            case.image = decode_image(data)
        except ImageError as exc:
            case.error = str(exc)
        cases.append(case)
    good = [c for c in cases if c.image is not None]
    for case, pred in zip(good, predict_images(bundle, [c.image for c in good]), strict=True):
        case.prediction = pred
    return cases


def flag(prediction: Prediction) -> str:
    """Plain-language flag of a prediction."""
    if not prediction.looks_dermoscopic:
        return NOT_DERMOSCOPIC
    return SUSPICIOUS if prediction.suspicious else BENIGN


def summary_row(case: Case) -> dict:
    """One row of the batch summary table."""
    p = case.prediction
    if p is None:
        return {
            "file": case.name,
            "top diagnosis": "—",
            "probability": None,
            "malignant risk": None,
            "flag": f"error: {case.error}",
        }
    return {
        "file": case.name,
        "top diagnosis": display_name(p.top_class),
        "probability": float(p.probabilities.max()),
        "malignant risk": p.malignant_probability,
        "flag": flag(p) + (" (model unsure)" if p.unsure else ""),
    }


def csv_rows(cases: Sequence[Case]) -> list[dict]:
    """The CLI's CSV rows for a batch of cases."""
    return [result_row(c.name, c.prediction, c.error) for c in cases]


def top3_table(prediction: Prediction) -> dict[str, float]:
    """The three most probable classes as ``{"Melanoma (mel)": 0.61, ...}``."""
    return {display_name(c): p for c, p in prediction.top_k(3)}
