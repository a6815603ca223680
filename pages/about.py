"""About this model: the model card, intended use and limits, data and licence."""

import streamlit as st

from app_common import NOT_A_DEVICE, model_dir
from skin_model.artifacts import CARD_FILE

st.title("About this model")
st.warning(NOT_A_DEVICE, icon=":material/warning:")
st.markdown(
    "**Data.** HAM10000 (Tschandl, Rosendahl & Kittler, *Scientific Data* 5, 180161, 2018), "
    "dermoscopic images of pigmented lesions, licensed CC BY-NC 4.0: non-commercial use with "
    "attribution. Images of fair-skinned patients from two centres dominate; darker skin types "
    "are under-represented and performance on them is unknown."
)
card = model_dir() / CARD_FILE
try:
    st.markdown(card.read_text(encoding="utf-8"))
except (OSError, UnicodeDecodeError) as exc:
    st.error(f"The model card {card} cannot be read ({exc}). Restore it with git.")
