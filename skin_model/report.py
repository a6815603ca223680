"""A one-page PNG report per case: image, explanation overlay, probabilities, flags."""

from __future__ import annotations

import io

import numpy as np

from skin_model import CLASSES, display_name
from skin_model.inference import Prediction

DISCLAIMER = (
    "Not a medical device. Research/teaching aid trained on HAM10000; it does not diagnose. "
    "Decisions belong to a qualified clinician."
)


def report_text(prediction: Prediction, threshold: float, flag_text: str, model: str) -> str:
    """The report's text block: decision, risk, threshold, flags, context, model."""
    at = (
        f"at a malignant prevalence of {prediction.prevalence:.1%} (set by the user)"
        if prediction.prevalence is not None
        else "at HAM10000's class frequencies"
    )
    looks = "yes" if prediction.looks_dermoscopic else "NO — the result is not meaningful"
    return (
        f"Suggested diagnosis (balanced rule): {display_name(prediction.suggested_class)}\n"
        f"Malignant risk (mel + bcc + akiec), {at}: {prediction.malignant_probability:.1%} "
        f"(referral threshold {threshold:.1%})\n"
        f"Flag: {flag_text}\n"
        f"Looks like a dermoscopic image: {looks}\n"
        f"Patient context used: {prediction.context_used}\n"
        f"Model: {model}\n\n{DISCLAIMER}"
    )


def render_report(
    name: str,
    image: np.ndarray,
    overlay_image: np.ndarray,
    prediction: Prediction,
    threshold: float,
    flag_text: str,
    model_version: str,
    overlay_title: str,
) -> bytes:
    """Render the report as PNG bytes (in memory).

    Args:
        name: File name shown in the title.
        image: Original RGB uint8 image.
        overlay_image: Explanation overlay, RGB uint8.
        prediction: The case's prediction (probabilities as shown in the app).
        threshold: The referral threshold on the shown risk scale.
        flag_text: The plain-language flag.
        model_version: Model identifier (architecture, input size, date).
        overlay_title: What the overlay shows, e.g. ``"Grad-CAM++ for Melanoma (mel)"``.

    Returns:
        PNG file bytes.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69), dpi=100)
    fig.suptitle(f"Skin-lesion classifier report: {name}", fontsize=13)
    ax1, ax2 = fig.add_axes([0.05, 0.58, 0.43, 0.32]), fig.add_axes([0.52, 0.58, 0.43, 0.32])
    for ax, im, title in ((ax1, image, "Image"), (ax2, overlay_image, overlay_title)):
        ax.imshow(im)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    ax3 = fig.add_axes([0.38, 0.30, 0.55, 0.23])
    probs = prediction.probabilities
    order = np.argsort(probs)
    ax3.barh([display_name(CLASSES[i]) for i in order], probs[order], color="#4472c4")
    ax3.set_xlim(0, 1)
    ax3.set_xlabel("probability")
    text = report_text(prediction, threshold, flag_text, model_version)
    fig.text(0.05, 0.04, text, fontsize=9, wrap=True, va="bottom")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
