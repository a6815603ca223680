"""Shared Streamlit helpers for the pages: cached model and metrics loaders, the clinic
setting (prevalence) kept for the whole session, plain-text rendering and notices.
"""

from __future__ import annotations

import os
import re
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

import numpy as np
import streamlit as st

from skin_model import DEFAULT_MODEL_DIR
from skin_model.model.artifacts import (
    METRICS_FILE,
    ArtifactError,
    ModelLoadError,
    check_model_files,
)
from skin_model.model.metrics_file import Metrics, read_metrics
from skin_model.runtime.advice import DEFAULT_PRESET, PRESETS, pct
from skin_model.runtime.clinic import FALLBACK_SHARE
from skin_model.runtime.inference import load_bundle, predict_images

NOT_A_DEVICE = (
    "**Not a medical device.** This research tool does not diagnose and must not replace a "
    "clinician's examination, dermoscopy expertise or histopathology."
)
PRIVACY = (
    "Images are processed in memory only: nothing you upload is written to disk, logged or "
    "kept after you close this tab."
)
LOADING = (
    "Loading the model (only after the server has just started: it began loading when this "
    "page opened; later visits are instant)…"
)


def model_dir() -> Path:
    """The model directory: ``$SKIN_MODEL_DIR`` or the shipped default."""
    return Path(os.environ.get("SKIN_MODEL_DIR", DEFAULT_MODEL_DIR))


def _load(path: str):
    """Load and warm up the model (predict and its heatmap; and matplotlib's font cache, which
    the first PDF report would otherwise wait for on a fresh machine).
    """
    import matplotlib.font_manager  # noqa: F401

    from skin_model.runtime.explain import explain

    bundle = load_bundle(Path(path))
    blank = np.full((*bundle.input_shape, 3), 128, dtype=np.uint8)
    predict_images(bundle, [blank])
    explain(bundle, blank, 0)
    return bundle


_LOADS: dict[str, Future] = {}
_LOADS_LOCK = threading.Lock()
_LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")


def start_loading() -> str | None:
    """Start loading the model in the background, once per process and model directory, so
    that a first visit can upload while TensorFlow starts; a failed load is tried again.

    Returns:
        Why the model cannot be loaded, found by the quick file check now (missing,
        damaged, a Git LFS pointer), else None.
    """
    path = str(model_dir())
    with _LOADS_LOCK:
        load = _LOADS.get(path)
        if load is None or (load.done() and load.exception() is not None):
            try:
                check_model_files(Path(path))
            except ModelLoadError as exc:
                return str(exc)
            _LOADS[path] = _LOADER.submit(_load, path)
    return None


def get_bundle():
    """The loaded model bundle (waiting for the background load, with a spinner), or
    ``None`` after showing why it cannot be loaded.
    """
    problem = start_loading()
    if problem is None:
        load = _LOADS[str(model_dir())]
        if not load.done():
            with st.spinner(LOADING):
                wait([load])
        try:
            return load.result()
        except ModelLoadError as exc:
            problem = str(exc)
        except Exception as exc:  # a model that loads but cannot run: say so, no traceback
            problem = f"It could not be run ({type(exc).__name__}: {exc})."
    st.error(f"The model could not be loaded. {problem}")
    return None


@st.cache_data(show_spinner=False)
def _metrics(path: str, mtime: float) -> Metrics:
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


def _keep(name: str) -> None:
    """Copy a widget's value to a session key of its own (widget state is dropped when
    the user moves to another page; this copy is not).
    """
    st.session_state[f"kept_{name}"] = st.session_state[name]


def kept(name: str, default):
    """The value a widget had the last time it was shown in this session."""
    return st.session_state.get(f"kept_{name}", default)


@st.cache_data(show_spinner=False)
def _training_share(path: str) -> float:
    """The model's training malignant share from its ``config.json`` (no Keras needed)."""
    from skin_model.model.config import read_model_config

    try:
        return read_model_config(Path(path)).malignant_share or FALLBACK_SHARE
    except (ModelLoadError, OSError, ValueError):
        return FALLBACK_SHARE


def clinic_setting() -> float:
    """The sidebar's clinic setting on every page (the router draws it, so it is there on
    every page and keeps its value): the malignant share the app shows figures at.

    Returns:
        The malignant share (0-1); pages read it with :func:`prevalence`.
    """
    share = _clinic_widget(_training_share(str(model_dir())))
    st.session_state["prevalence_shown"] = share
    return share


def prevalence() -> float:
    """The clinic's malignant share set in the sidebar for this run."""
    return float(st.session_state.get("prevalence_shown", FALLBACK_SHARE))


def _clinic_widget(training_share: float | None) -> float:
    """The clinic radio (and its own value), kept for the whole session."""
    share_default = training_share or FALLBACK_SHARE
    with st.sidebar:
        st.markdown("**Your clinic**")
        preset = st.radio(
            "Where do you see these patients?",
            list(PRESETS),
            index=list(PRESETS).index(kept("clinic", DEFAULT_PRESET)),
            format_func=lambda k: PRESETS[k][0],
            key="clinic",
            on_change=_keep,
            args=("clinic",),
            help="How common malignant lesions are among the lesions you examine changes "
            "what a result means. Every risk and figure is re-weighted to it (Bayes' rule); "
            "the referral flag keeps the same cases, so its tested sensitivity still holds.",
        )
        if preset == "custom":
            value = st.number_input(
                "Malignant lesions per 100 you examine",
                min_value=0.1,
                max_value=99.0,
                value=float(kept("custom_pct", round(100 * share_default, 1))),
                step=0.5,
                key="custom_pct",
                on_change=_keep,
                args=("custom_pct",),
            )
            share = value / 100
        else:
            share = PRESETS[preset][1] or share_default
        st.caption(
            f"Figures are shown for a clinic where about {pct(share)} of examined lesions "
            "are malignant (melanoma, basal cell carcinoma, actinic keratosis / Bowen's)."
        )
    return float(share)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:=&])")


def plain(text: str) -> str:
    """User-supplied text made safe to place inside Streamlit Markdown: every character
    Markdown, Streamlit's ``:color[...]`` directives or LaTeX (``$``) would act on is
    escaped, so it shows exactly as typed.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


RESPONSIVE_CSS = """<style>
@media (min-width: 641px) { [class*="st-key-narrow_"] { display: none !important; } }
@media (max-width: 640px) { [class*="st-key-wide_"] { display: none !important; } }
</style>"""
"""Tables on wide screens, cards on a phone (640 px: where Streamlit stacks columns)."""


def sent_name(name: str) -> str:
    """A file's name as the user named it: browsers send ``"``, CR and LF in a multipart
    file name as ``%22``, ``%0D`` and ``%0A`` (HTML's form encoding), which would otherwise
    show on the page, the report and the CSV.
    """
    return name.replace("%22", '"').replace("%0D", " ").replace("%0A", " ")


def responsive_table(rows: list[dict], key: str) -> None:
    """Rows of plain text as a table on a wide screen and as one card per row on a phone
    (no sideways scrolling there). The first column heads each card.

    Args:
        rows: Same-keyed dicts of text cells.
        key: A name unique on the page.
    """
    import pandas as pd

    st.html(RESPONSIVE_CSS)
    with st.container(key=f"wide_{key}"):
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    with st.container(key=f"narrow_{key}"):
        for row in rows:
            with st.container(border=True):
                st.markdown(card_text(row))


def card_text(row: dict) -> str:
    """One row as a few lines of plain text: its first cell in bold, then ``label: value``."""
    (_, first), *rest = row.items()
    lines = [f"{plain(k.capitalize())}: {plain(v)}" for k, v in rest]
    return "  \n".join([f"**{plain(first)}**", *lines])


def table(frame, digits: int = 3) -> None:
    """A presentation-layer frame as a read-only table: numbers to ``digits`` decimals,
    missing values blank (never "None"), text as plain text.
    """
    import math

    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v).replace("**", "")

    st.dataframe(frame.map(cell) if len(frame) else frame, hide_index=True)
