"""About this model: what it is for and not for first; the figures, the data and licence
next; provenance and file digests last.
"""

import streamlit as st

from app_common import NOT_A_DEVICE, model_dir
from skin_model.model.artifacts import ArtifactError, ModelLoadError
from skin_model.reports.card import card_sections

st.title("About this model")
st.warning(NOT_A_DEVICE, icon=":material/warning:")
try:
    sections = card_sections(model_dir())
except (OSError, KeyError, ValueError, ArtifactError, ModelLoadError) as exc:
    st.error(f"The model's files in {model_dir()} cannot be read ({exc}). Restore them with git.")
    st.stop()
st.markdown(sections["use"])
st.markdown(
    "## Data and licence\n\nHAM10000 (Tschandl, Rosendahl & Kittler, *Scientific Data* 5, "
    "180161, 2018): dermoscopic images of pigmented lesions, licensed CC BY-NC 4.0 "
    "(non-commercial use with attribution). Images of fair-skinned patients from two centres "
    "dominate; darker skin types are under-represented and performance on them is unknown."
)
st.markdown(sections["model"])
with st.expander("Test figures in full (the Model metrics page explains them)"):
    st.markdown(sections["numbers"])
with st.expander("Provenance of the weights and file digests"):
    st.markdown(sections["provenance"])
st.caption("Every training attempt and cross-validation is on the Training curves page.")
