"""Skin-lesion classifier: the Streamlit router. Pages live in ``pages/``."""

import streamlit as st

st.set_page_config(page_title="Skin-lesion classifier", page_icon="🔬", layout="wide")

pages = [
    st.Page("pages/classify.py", title="Classify", icon="🔬", default=True),
    st.Page("pages/metrics.py", title="Model metrics", icon="📊"),
    st.Page("pages/training.py", title="Training curves", icon="📈"),
    st.Page("pages/about.py", title="About this model", icon="ℹ️"),
]
st.navigation(pages).run()
