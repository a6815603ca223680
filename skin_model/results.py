"""The prediction CSV: its columns, one row per file, and the writer (CLI and app)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from skin_model import CLASSES
from skin_model.inference import Prediction

CSV_COLUMNS = (
    "file",
    "prediction",
    "malignant_probability",
    *CLASSES,
    "looks_dermoscopic",
    "ood_score",
    "patient_context",
    "error",
)
"""``prediction`` is the suggested diagnosis (balanced rule); the class columns and
``malignant_probability`` are probabilities at the training class frequencies (or at the
``--prevalence`` given); ``looks_dermoscopic`` is ``true``/``false``; ``patient_context``
says which of age, sex and body site the prediction used."""


def result_row(file: str, prediction: Prediction | None, error: str = "") -> dict:
    """One results-CSV row (:data:`CSV_COLUMNS`) for a prediction or an error."""
    row = {c: "" for c in CSV_COLUMNS}
    row["file"], row["error"] = file, error
    if prediction is not None:
        row["prediction"] = prediction.suggested_class
        row["malignant_probability"] = round(prediction.malignant_probability, 6)
        for c, p in zip(CLASSES, prediction.probabilities, strict=True):
            row[c] = round(float(p), 6)
        row["looks_dermoscopic"] = str(prediction.looks_dermoscopic).lower()
        if prediction.ood_score is not None:
            row["ood_score"] = round(prediction.ood_score, 3)
        row["patient_context"] = prediction.context_used
    return row


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
