"""Skin-lesion classifier: the Streamlit router.

Pages live in ``app_pages/``, not ``pages/``: Streamlit would also serve files there on
their own, without this router (and its page setup), at their URLs.
"""

import streamlit as st

from app_commit import commit_guard
from app_common import clinic_setting

st.set_page_config(
    page_title="Skin-lesion classifier", page_icon=":material/biotech:", layout="wide"
)

pages = [
    st.Page("app_pages/classify.py", title="Classify", icon=":material/biotech:", default=True),
    st.Page("app_pages/metrics.py", title="Model metrics", icon=":material/monitoring:"),
    st.Page("app_pages/training.py", title="Training curves", icon=":material/show_chart:"),
    st.Page("app_pages/about.py", title="About this model", icon=":material/info:"),
]
page = st.navigation(pages)
commit_guard()
clinic_setting()  # every page shows figures at the clinic's prevalence
page.run()
