"""skin_model: data, models, training, evaluation, inference and explanations for
dermoscopic skin-lesion classification on the 7 HAM10000 classes.

The package holds no Streamlit code; the app and the CLI are thin layers over it. Its
folders are the stages, each importing only from those above it in this list:

- ``data``: decoding, the quality gate, patient context, the split and input pipeline;
- ``model``: networks, backbones, the post-hoc layer and detector, the model files;
- ``runtime``: inference, the one pipeline to a verdict, Grad-CAM, CSV, PDF, exports;
- ``evaluate``: metrics, evaluation, robustness, ensembles, the benchmark;
- ``reports``: tables, the model card, the README's generated sections;
- ``train``: training, several processes, finalising, cross-validation.

``cli`` (``python -m skin_model``) sits on top of them all.
"""

from pathlib import Path

__version__ = "1.0.0"

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
"""HAM10000 diagnosis codes, in the order of the model's outputs."""

CLASS_NAMES: dict[str, str] = {
    "akiec": "Actinic keratosis / Bowen's disease",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
"""Full clinical names for each diagnosis code."""

MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")
"""Malignant or pre-malignant classes; the rest are benign."""

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ham10000"


def display_name(code: str) -> str:
    """Return a label such as ``"Melanoma (mel)"`` for a class code."""
    return f"{CLASS_NAMES[code]} ({code})"
