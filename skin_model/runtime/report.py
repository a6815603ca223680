"""The printable case report: one A4 PDF page for the patient file (matplotlib's PDF
backend, text kept as text so it can be searched and read back).

Everything a user typed or named (file names, case reference, notes) is drawn as plain
text: never parsed as mathtext or markup.
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

import numpy as np

from skin_model import CLASSES, display_name

DISCLAIMER = (
    "Not a medical device. A research and teaching aid trained on HAM10000 (dermoscopic "
    "images of pigmented lesions); it does not diagnose, and it must not decide on biopsy, "
    "referral or treatment by itself. Decisions belong to a qualified clinician."
)


@dataclass
class ReportRecord:
    """What one case's report shows.

    Attributes:
        created: Date and time the report was made (text).
        case_reference: Optional reference typed by the user.
        notes: Optional notes typed by the user.
        files: The case's file names (as uploaded).
        model: Model version line.
        title: The verdict's title, e.g. "Raised risk: refer".
        refer: The verdict's referral flag (it decides the title's colour).
        lines: Verdict details in order (action, evidence, risk line, threshold, ...).
        warnings: Quality, "not dermoscopic" and "unsure" warnings.
        probabilities: (K,) class probabilities as shown.
        images: The case's images (RGB uint8).
        overlay: Explanation overlay of the first image (RGB uint8), or None.
        overlay_title: What the overlay shows.
        context: Patient context used, in words.
    """

    created: str
    case_reference: str
    notes: str
    files: list[str]
    model: str
    title: str
    refer: bool
    lines: list[str]
    warnings: list[str]
    probabilities: np.ndarray
    images: list[np.ndarray]
    overlay: np.ndarray | None
    overlay_title: str
    context: str = "none given"
    extra: dict = field(default_factory=dict)


def _wrap(text: str, width: int = 100) -> str:
    return "\n".join(textwrap.wrap(text, width)) or ""


def _text(fig, x: float, y: float, text: str, **kw):
    """Plain text on the page (no mathtext), returning the next y below it."""
    size = kw.pop("fontsize", 9)
    wrapped = _wrap(text, kw.pop("width", 105))
    fig.text(x, y, wrapped, fontsize=size, va="top", parse_math=False, **kw)
    return y - (wrapped.count("\n") + 1) * size * 1.45 / 842


def render_pdf(record: ReportRecord) -> bytes:
    """The report as PDF bytes (in memory: nothing is written to disk)."""
    import matplotlib as mpl

    with mpl.rc_context({"pdf.fonttype": 42, "text.usetex": False}):
        fig = report_figure(record)
        buf = io.BytesIO()
        fig.savefig(buf, format="pdf")
    return buf.getvalue()


def report_figure(record: ReportRecord):
    """The report's A4 page as a matplotlib figure: the case record (reference, notes,
    images' names) first, the verdict, the images, the differential, then the disclaimer
    below the chart's measured extent, so that nothing overlaps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))
    FigureCanvasAgg(fig)  # measures the blocks; savefig writes the PDF
    y = _record_block(fig, record, 0.965)
    y = _verdict_block(fig, record, y - 0.01)
    y = _images_block(fig, record, y - 0.01)
    ax = _differential(fig, record.probabilities, y - 0.06)
    below = ax.get_tightbbox(fig.canvas.get_renderer()).transformed(fig.transFigure.inverted())
    _text(fig, 0.06, min(below.y0 - 0.015, 0.09), DISCLAIMER, fontsize=8, color="#444444")
    return fig


def _record_block(fig, record: ReportRecord, y: float) -> float:
    """Title, date, the case's reference and notes, its images' names, the model."""
    y = _text(fig, 0.06, y, "Skin-lesion classifier: case report", fontsize=15, weight="bold")
    y = _text(fig, 0.06, y - 0.004, f"Date: {record.created}", fontsize=9)
    if record.case_reference:
        y = _text(fig, 0.06, y, f"Case reference: {record.case_reference}", fontsize=9)
    if record.notes:
        y = _text(fig, 0.06, y, f"Notes: {record.notes}", fontsize=9)
    y = _text(fig, 0.06, y, f"Image(s): {', '.join(record.files)}", fontsize=9)
    return _text(fig, 0.06, y, f"Model: {record.model}", fontsize=8, color="#444444")


def _verdict_block(fig, record: ReportRecord, y: float) -> float:
    """The verdict in its colour, its lines, the details used and the warnings."""
    colour = "#b00020" if record.refer else "#1b5e20"
    y = _text(fig, 0.06, y, record.title, fontsize=14, weight="bold", color=colour)
    for line in record.lines:
        y = _text(fig, 0.06, y, line, fontsize=9.5)
    y = _text(fig, 0.06, y, f"Patient details used: {record.context}", fontsize=9)
    for w in record.warnings:
        y = _text(fig, 0.06, y, f"Warning: {w}", fontsize=9, color="#8a4b00")
    return y


def _images_block(fig, record: ReportRecord, y: float, img_h: float = 0.2) -> float:
    """Up to two images and the explanation overlay with its colour scale."""
    shown = [*record.images[:2], *([record.overlay] if record.overlay is not None else [])]
    titles = [f"Image {i + 1}" for i in range(len(record.images[:2]))]
    titles += [record.overlay_title] if record.overlay is not None else []
    width = min(0.28, 0.88 / max(len(shown), 1) - 0.02)
    for i, (im, title) in enumerate(zip(shown, titles, strict=True)):
        ax = fig.add_axes([0.06 + i * (width + 0.02), y - img_h, width, img_h])
        ax.imshow(im)
        ax.set_title(_wrap(title, 40), fontsize=8, parse_math=False)
        ax.axis("off")
    if record.overlay is not None:
        from matplotlib import colormaps
        from matplotlib.colorbar import ColorbarBase
        from matplotlib.colors import Normalize

        i = len(shown) - 1
        cax = fig.add_axes([0.06 + i * (width + 0.02), y - img_h - 0.018, width, 0.008])
        bar = ColorbarBase(
            cax, cmap=colormaps["jet"], norm=Normalize(0, 1), orientation="horizontal"
        )
        bar.set_ticks([0, 1], labels=["little attention", "most attention"])
        bar.ax.tick_params(labelsize=7)
    return y - img_h


def _differential(fig, probabilities: np.ndarray, top: float):
    """The seven probabilities as shown in the app, highest on top; returns the axes."""
    ax = fig.add_axes([0.36, top - 0.17, 0.56, 0.17])
    order = np.argsort(probabilities)
    ax.barh([display_name(CLASSES[i]) for i in order], probabilities[order], color="#4472c4")
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability (as shown in the app)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title("Differential", fontsize=9)
    return ax
