"""Skin-lesion classifier: the Streamlit router. Pages live in ``pages/``."""

import streamlit as st

st.set_page_config(
    page_title="Skin-lesion classifier", page_icon=":material/biotech:", layout="wide"
)

pages = [
    st.Page("pages/classify.py", title="Classify", icon=":material/biotech:", default=True),
    st.Page("pages/metrics.py", title="Model metrics", icon=":material/monitoring:"),
    st.Page("pages/training.py", title="Training curves", icon=":material/show_chart:"),
    st.Page("pages/about.py", title="About this model", icon=":material/info:"),
]
st.navigation(pages).run()
