"""Classify page: upload or photograph lesions, see diagnosis, risk and Grad-CAM."""

import dataclasses

import altair as alt
import pandas as pd
import streamlit as st

from app_common import NOT_A_DEVICE, PRIVACY, get_bundle, get_metrics
from skin_model import CLASSES, display_name
from skin_model.advice import operating_point_text
from skin_model.explain import METHODS
from skin_model.metadata import SEXES, SITES, PatientContext, site_label
from skin_model.service import (
    NOT_DERMOSCOPIC,
    SUSPICIOUS,
    case_report,
    csv_text,
    decode_uploads,
    digest,
    explanation,
    flag,
    overlay_image,
    predict_cases,
    summary_row,
    top3_table,
)

NOT_GIVEN = "not given"

st.title("Classify a skin lesion")
st.warning(NOT_A_DEVICE, icon=":material/warning:")
st.caption(PRIVACY)

bundle = get_bundle()
if bundle is None:
    st.stop()
metrics = get_metrics()
takes_context = bundle.uses_context
trained_share = bundle.malignant_share

with st.expander("Your clinic's malignant share (prevalence)", expanded=False):
    default_pct = round(100 * trained_share, 1) if trained_share else 20.0
    pct = st.number_input(
        "Share of malignant lesions among the patients you see (%)",
        min_value=0.1,
        max_value=99.9,
        value=default_pct,
        step=0.5,
        key="prevalence_pct",
        disabled=not trained_share,
        help="Probabilities and the malignant risk are re-weighted to this share by Bayes' "
        f"rule. Default: the training data's share ({default_pct}%). The referral flag keeps "
        "the same cases (and so the measured sensitivity); its threshold moves with the risk.",
    )
prevalence = None if not trained_share or abs(pct - default_pct) < 1e-9 else pct / 100

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

# Decoded images and their predictions are kept for this session only, keyed by content
# hash, and dropped when the upload is removed; widgets are keyed by the same hash (with
# a count for a file uploaded twice), so removing one upload moves nothing onto another.
state = st.session_state.setdefault("cases", {})
cases, keys, seen = [], [], {}
for name, data in uploads:
    h = digest(data)
    if h not in state:
        state[h] = decode_uploads([(name, data)])[0]
    cases.append(dataclasses.replace(state[h], name=name))
    seen[h] = seen.get(h, 0) + 1
    keys.append(h if seen[h] == 1 else f"{h}-{seen[h]}")
for h in [k for k in state if k not in seen]:
    del state[h]
cams = st.session_state.setdefault("cams", {})
for k in [k for k in cams if k[0].split("-")[0] not in seen]:
    del cams[k]


def context_of(key: str) -> PatientContext | None:
    """The patient context entered for a case (None when the model takes none)."""
    if not takes_context:
        return None
    age = st.session_state.get(f"age_{key}")
    sex = st.session_state.get(f"sex_{key}", NOT_GIVEN)
    site = st.session_state.get(f"site_{key}", NOT_GIVEN)
    return PatientContext(
        None if age is None else float(age),
        None if sex == NOT_GIVEN else sex,
        None if site == NOT_GIVEN else site,
    )


contexts = [context_of(k) for k in keys]
with st.spinner(f"Classifying {len(cases)} image(s)…"):
    preds = predict_cases(bundle, cases, contexts, prevalence)

st.subheader("Summary")
st.dataframe(
    pd.DataFrame([summary_row(c, p) for c, p in zip(cases, preds, strict=True)]),
    hide_index=True,
    column_config={
        "its probability": st.column_config.ProgressColumn(
            format="percent", min_value=0, max_value=1
        ),
        "malignant risk": st.column_config.ProgressColumn(
            format="percent", min_value=0, max_value=1
        ),
    },
)
st.download_button(
    "Download results (CSV)", csv_text(cases, preds), file_name="results.csv", mime="text/csv"
)
at = (
    f"at your prevalence of {prevalence:.1%}"
    if prevalence is not None
    else "at HAM10000's class frequencies"
)
st.caption(
    f"**Probabilities** are {at}: how often lesions like this one are each class. The "
    "**suggested diagnosis** uses the balanced rule (the network's output before it is "
    "re-weighted by class frequencies), which keeps rare classes such as melanoma visible; "
    "it can differ from the most probable class."
)

for case, pred, ctx, key in zip(cases, preds, contexts, keys, strict=True):
    st.divider()
    st.subheader(case.name)
    if pred is None:
        st.error(f"{case.name}: {case.error}")
        continue
    if takes_context:
        a, s, b = st.columns(3)
        a.number_input("Age (years)", 0, 120, value=None, step=1, key=f"age_{key}")
        s.selectbox("Sex", [NOT_GIVEN, *SEXES], key=f"sex_{key}")
        b.selectbox(
            "Body site",
            [NOT_GIVEN, *SITES],
            format_func=lambda v: v if v == NOT_GIVEN else site_label(v),
            key=f"site_{key}",
        )
    threshold = pred.threshold
    left, right = st.columns(2)
    with left:
        share = pred.probabilities[CLASSES.index(pred.suggested_class)]
        st.markdown(f"**Suggested diagnosis: {display_name(pred.suggested_class)}** ({share:.0%})")
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
        expected = operating_point_text(metrics, bool(ctx and ctx.given))
        st.metric(
            "Malignant risk (mel + bcc + akiec)",
            f"{risk:.0%}",
            help=f"Probability that a lesion like this is malignant, {at}. Referral "
            f"threshold {threshold:.0%}. {expected}",
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
                f"above the threshold {threshold:.0%}. {expected}"
            )
        else:
            st.success(
                f"**Below the referral threshold.** Risk {risk:.0%} < {threshold:.0%}. {expected}"
            )
        if pred.unsure:
            st.info(
                "The model is unsure about this image (low top probability or spread-out "
                "probabilities). Weigh the differential, not the top answer."
            )
        if takes_context:
            st.caption(f"Patient context used: {pred.context_used}.")
    with right:
        c1, c2, c3 = st.columns(3)
        cls = c1.selectbox(
            "Explain class",
            CLASSES,
            index=CLASSES.index(pred.suggested_class),
            format_func=display_name,
            key=f"cls_{key}",
        )
        method = c2.radio("Method", METHODS, key=f"method_{key}")
        alpha = c3.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key=f"alpha_{key}")
        cam_key = (key, cls, method, ctx)
        if cam_key not in cams:
            cams[cam_key] = explanation(bundle, case, cls, method, ctx)
        i1, i2 = st.columns(2)
        i1.image(case.image, caption="Original", width="stretch")
        i2.image(
            overlay_image(case, cams[cam_key], alpha),
            caption=f"{method}: {display_name(cls)}",
            width="stretch",
        )

    def make_report(case=case, pred=pred, cam=cams[cam_key], cls=cls, method=method, a=alpha):
        """Render this case's PNG report when the button is clicked."""
        return case_report(bundle, case, pred, cam, cls, method, a)

    st.download_button(
        "Download report (PNG)",
        make_report,
        file_name=f"report_{case.name.rsplit('.', 1)[0]}.png",
        mime="image/png",
        key=f"report_{key}",
    )
