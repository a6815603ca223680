"""Classify page: upload or photograph lesions, see diagnosis, risk and Grad-CAM."""

import dataclasses

import altair as alt
import pandas as pd
import streamlit as st

from app_common import NOT_A_DEVICE, PRIVACY, get_bundle
from skin_model import CLASSES, display_name
from skin_model.cli import rows_to_csv_text
from skin_model.explain import METHODS, explain, overlay
from skin_model.report import render_report
from skin_model.service import (
    NOT_DERMOSCOPIC,
    SUSPICIOUS,
    classify_uploads,
    csv_rows,
    digest,
    flag,
    summary_row,
    top3_table,
)

st.title("Classify a skin lesion")
st.warning(NOT_A_DEVICE, icon=":material/warning:")
st.caption(PRIVACY)

bundle = get_bundle()
if bundle is None:
    st.stop()

upload_tab, camera_tab = st.tabs(["Upload images", "Take a photo"])
with upload_tab:
    files = st.file_uploader(
        "Dermoscopic images (JPEG or PNG, up to 20 MB each)",
        accept_multiple_files=True,
        help="Any file is accepted here so that each unusable one gets its own explanation.",
    )
with camera_tab:
    photo = st.camera_input("Photograph through the dermatoscope")

uploads = [(f.name, f.getvalue()) for f in (files or [])]
if photo is not None:
    uploads.append(("camera.jpg", photo.getvalue()))
if not uploads:
    st.info("Upload one or more dermoscopic images to classify them.")
    st.stop()

# Each image is classified once per upload: results are kept for this session only,
# keyed by content hash, and dropped when the upload is removed.
state = st.session_state.setdefault("cases", {})
cams = st.session_state.setdefault("cams", {})
wanted = [(name, data, digest(data)) for name, data in uploads]
new = [(name, data) for name, data, key in wanted if key not in state]
if new:
    with st.spinner(f"Classifying {len(new)} image(s)…"):
        for case in classify_uploads(bundle, new):
            state[case.digest] = case
keys = {key for _, _, key in wanted}
for key in [k for k in state if k not in keys]:
    del state[key]
for key in [k for k in cams if k[0] not in keys]:
    del cams[key]
cases = [dataclasses.replace(state[key], name=name) for name, _, key in wanted]

threshold = float(bundle.config["malignant_threshold"])
version = (
    f"{bundle.config.get('architecture')} {bundle.config.get('input_size')}px, "
    f"trained {bundle.config.get('trained_on')}"
)

st.subheader("Summary")
st.dataframe(
    pd.DataFrame([summary_row(c) for c in cases]),
    hide_index=True,
    column_config={
        "probability": st.column_config.ProgressColumn(format="percent", min_value=0, max_value=1),
        "malignant risk": st.column_config.ProgressColumn(
            format="percent", min_value=0, max_value=1
        ),
    },
)
st.download_button(
    "Download results (CSV)",
    rows_to_csv_text(csv_rows(cases)),
    file_name="results.csv",
    mime="text/csv",
)

for i, case in enumerate(cases):
    st.divider()
    st.subheader(case.name)
    if case.prediction is None:
        st.error(f"{case.name}: {case.error}")
        continue
    pred = case.prediction
    left, right = st.columns(2)
    with left:
        st.markdown(
            f"**Most likely: {display_name(pred.top_class)}** ({pred.probabilities.max():.0%})"
        )
        top3 = pd.DataFrame(list(top3_table(pred).items()), columns=["diagnosis", "probability"])
        st.altair_chart(
            alt.Chart(top3)
            .mark_bar()
            .encode(
                x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
                y=alt.Y(
                    "diagnosis:N",
                    sort="-x",
                    title=None,
                    axis=alt.Axis(labelLimit=260, labelOverlap=False),
                ),
                tooltip=["diagnosis", alt.Tooltip("probability:Q", format=".1%")],
            )
            .properties(height=120),
            width="stretch",
        )
        risk = pred.malignant_probability
        st.metric(
            "Malignant risk (mel + bcc + akiec)",
            f"{risk:.0%}",
            help=f"Operating threshold {threshold:.0%}, chosen on validation for "
            f"{bundle.config.get('target_sensitivity', 0.9):.0%} malignant sensitivity.",
        )
        text = flag(pred)
        if text == NOT_DERMOSCOPIC:
            st.warning(
                "This does not look like a dermoscopic image; the result is not "
                "meaningful. Upload a dermoscopic image of a skin lesion."
            )
        elif text == SUSPICIOUS:
            st.error(
                f"**Suspicious — consider biopsy/referral.** Risk {risk:.0%} is at or "
                f"above the threshold {threshold:.0%}."
            )
        else:
            st.success(
                f"**Likely benign.** Risk {risk:.0%} is below the threshold {threshold:.0%}."
            )
        if pred.unsure:
            st.info(
                "The model is unsure about this image (low top probability or spread-out "
                "probabilities). Weigh the differential, not the top answer."
            )
    with right:
        c1, c2, c3 = st.columns(3)
        cls = c1.selectbox(
            "Explain class",
            CLASSES,
            index=CLASSES.index(pred.top_class),
            format_func=display_name,
            key=f"cls{i}",
        )
        method = c2.radio("Method", METHODS, key=f"method{i}")
        alpha = c3.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key=f"alpha{i}")
        cam_key = (case.digest, cls, method)
        if cam_key not in cams:
            cams[cam_key] = explain(bundle, case.image, CLASSES.index(cls), method)
        blended = overlay(case.image, cams[cam_key], alpha)
        i1, i2 = st.columns(2)
        i1.image(case.image, caption="Original", width="stretch")
        i2.image(blended, caption=f"{method}: {cls}", width="stretch")

    def make_report(case=case, blended=blended):
        """Render this case's PNG report when the button is clicked."""
        return render_report(
            case.name,
            case.image,
            blended,
            case.prediction.probabilities,
            case.prediction.malignant_probability,
            threshold,
            flag(case.prediction),
            version,
        )

    st.download_button(
        "Download report (PNG)",
        make_report,
        file_name=f"report_{i + 1}.png",
        mime="image/png",
        key=f"report{i}",
    )
