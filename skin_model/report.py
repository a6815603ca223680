"""A one-page PNG report per case: image, Grad-CAM overlay, probabilities, disclaimer."""

from __future__ import annotations

import io

import numpy as np

from skin_model import CLASSES, display_name

DISCLAIMER = (
    "Not a medical device. Research/teaching aid trained on HAM10000; it does not diagnose. "
    "Decisions belong to a qualified clinician."
)


def render_report(
    name: str,
    image: np.ndarray,
    overlay_image: np.ndarray,
    probabilities: np.ndarray,
    malignant_probability: float,
    threshold: float,
    flag_text: str,
    model_version: str,
) -> bytes:
    """Render the report as PNG bytes (in memory).

    Args:
        name: File name shown in the title.
        image: Original RGB uint8 image.
        overlay_image: Grad-CAM overlay, RGB uint8.
        probabilities: Calibrated class probabilities in :data:`CLASSES` order.
        malignant_probability: Summed malignant probability.
        threshold: The model's malignant operating threshold.
        flag_text: The plain-language flag.
        model_version: Model identifier (e.g. architecture, date and SHA prefix).

    Returns:
        PNG file bytes.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69), dpi=100)
    fig.suptitle(f"Skin-lesion classifier report: {name}", fontsize=13)
    ax1, ax2 = fig.add_axes([0.05, 0.58, 0.43, 0.32]), fig.add_axes([0.52, 0.58, 0.43, 0.32])
    for ax, im, title in ((ax1, image, "Image"), (ax2, overlay_image, "Grad-CAM overlay")):
        ax.imshow(im)
        ax.set_title(title)
        ax.axis("off")
    ax3 = fig.add_axes([0.38, 0.25, 0.55, 0.28])
    order = np.argsort(probabilities)
    ax3.barh([display_name(CLASSES[i]) for i in order], probabilities[order], color="#4472c4")
    ax3.set_xlim(0, 1)
    ax3.set_xlabel("calibrated probability")
    text = (
        f"Malignant risk (mel + bcc + akiec): {malignant_probability:.1%} "
        f"(operating threshold {threshold:.1%})\nFlag: {flag_text}\n"
        f"Model: {model_version}\n\n{DISCLAIMER}"
    )
    fig.text(0.05, 0.05, text, fontsize=9, wrap=True, va="bottom")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
