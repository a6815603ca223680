"""Shared Streamlit helpers for the pages: cached model and metrics loaders, notices."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st

from skin_model import DEFAULT_MODEL_DIR
from skin_model.artifacts import METRICS_FILE, ArtifactError, ModelLoadError, read_metrics
from skin_model.inference import load_bundle, predict_images

NOT_A_DEVICE = (
    "**Not a medical device.** This research tool does not diagnose and must not replace a "
    "clinician's examination, dermoscopy expertise or histopathology."
)
PRIVACY = (
    "Images are processed in memory only: nothing you upload is written to disk, logged or "
    "kept after you leave this page."
)


def model_dir() -> Path:
    """The model directory: ``$SKIN_MODEL_DIR`` or the shipped default."""
    return Path(os.environ.get("SKIN_MODEL_DIR", DEFAULT_MODEL_DIR))


@st.cache_resource(show_spinner="Loading the model…")
def _load(path: str):
    """Load and warm up the model once per process (predict and Grad-CAM)."""
    from skin_model.explain import explain

    bundle = load_bundle(Path(path))
    blank = np.full((bundle.input_size, bundle.input_size, 3), 128, dtype=np.uint8)
    predict_images(bundle, [blank])
    explain(bundle, blank, 0)
    return bundle


def get_bundle():
    """The cached model bundle, or ``None`` after showing why it cannot be loaded."""
    try:
        return _load(str(model_dir()))
    except ModelLoadError as exc:
        st.error(f"The model could not be loaded. {exc}")
        return None


@st.cache_data(show_spinner=False)
def _metrics(path: str, mtime: float) -> dict:
    """Read metrics.json (keyed on its modification time)."""
    return read_metrics(Path(path))


def get_metrics():
    """The model's metrics, or ``None`` after showing why they cannot be read."""
    directory = model_dir()
    mtime = (directory / METRICS_FILE).stat().st_mtime if (directory / METRICS_FILE).exists() else 0
    try:
        return _metrics(str(directory), mtime)
    except ArtifactError as exc:
        st.error(str(exc))
        return None
