"""Classify page: upload or photograph lesions; see the referral verdict, what it means,
the differential and where the model looked; print a report for the patient file.
"""

import altair as alt
import pandas as pd
import streamlit as st

from app_common import (
    NOT_A_DEVICE,
    PRIVACY,
    get_bundle,
    get_metrics,
    plain,
    prevalence,
    responsive_table,
    sent_name,
    start_loading,
)
from skin_model import CLASSES, display_name
from skin_model.data.metadata import SEXES, SITES, PatientContext, site_label
from skin_model.runtime.advice import headline, operating_point_text, pct
from skin_model.runtime.explain import METHODS, bundle_cam_method, legend_image
from skin_model.runtime.inference import display_threshold
from skin_model.runtime.service import (
    CaseStore,
    case_report,
    csv_text,
    digest,
    overlay_image,
    results,
    summary_row,
    top_table,
)

NOT_GIVEN = "not given"


def case_store() -> CaseStore:
    """This session's cases (kept when the user visits another page)."""
    return st.session_state.setdefault("case_store", CaseStore())


def _uploaded(store: CaseStore, widget: str) -> None:
    """Add the files just dropped on the uploader as cases, then empty it: the cases below
    are the one list of this patient's images (the uploader's own list would empty itself
    on a page change while the cases remain), each with its "Remove this case" button.
    """
    files = st.session_state.get(widget) or []
    store.add([(sent_name(f.name), f.getvalue()) for f in files])
    _fresh_uploader()


def _fresh_uploader() -> None:
    st.session_state["uploader_round"] = st.session_state.get("uploader_round", 0) + 1


def _photographed(store: CaseStore) -> None:
    """Add a camera photo as a new case."""
    photo = st.session_state.get("camera")
    if photo is not None:
        store.add([(f"camera-{digest(photo.getvalue())[:6]}.jpg", photo.getvalue())])


# Prefixes of the per-case widgets (their state is dropped with the patient).
CASE_WIDGETS = ("ref_", "notes_", "age_", "sex_", "site_", "cls_", "method_", "alpha_")


def _new_patient(store: CaseStore) -> None:
    store.clear()
    for key in [k for k in st.session_state if str(k).startswith(CASE_WIDGETS)]:
        del st.session_state[key]
    _fresh_uploader()


def uploader(store: CaseStore) -> None:
    """The uploader: empty again after each drop (the cases list the images)."""
    widget = f"uploader_{st.session_state.get('uploader_round', 0)}"
    # the browser's own "100MB per file" is the server's ceiling, not the app's 20 MB limit
    st.html(
        "<style>.st-key-uploader_box [data-testid=stFileUploaderDropzoneInstructions]"
        " { display: none; }</style>"
    )
    st.container(key="uploader_box").file_uploader(
        "Add dermoscopic images (JPEG or PNG, up to 20 MB each)",
        accept_multiple_files=True,
        key=widget,
        on_change=_uploaded,
        args=(store, widget),
        help="Any file is accepted here so that each unusable one gets its own explanation. "
        "On a phone, 'Browse files' also offers the phone's own (rear) camera. " + PRIVACY,
    )


def camera(store: CaseStore) -> None:
    """The device's camera, off until asked for."""
    if st.toggle("Take a photo with this device's camera", key="use_camera"):
        st.camera_input(
            "Photograph through the dermatoscope (switch to the rear camera with the "
            "camera's switch button if your device shows the front one)",
            key="camera",
            on_change=_photographed,
            args=(store,),
        )


def record_fields(store: CaseStore, lesion) -> None:
    """The case's own reference and notes (printed on its report and in the CSV)."""
    key = lesion.key

    def changed():
        store.set_record(
            lesion.key,
            st.session_state.get(f"ref_{key}", ""),
            st.session_state.get(f"notes_{key}", ""),
        )

    seed(store, f"ref_{key}", lesion.record.reference)
    seed(store, f"notes_{key}", lesion.record.notes)
    left, right = st.columns([1, 2])
    left.text_input(
        "Case reference (optional, printed on the report)", key=f"ref_{key}", on_change=changed
    )
    right.text_input(
        "Notes (optional, printed on the report)", key=f"notes_{key}", on_change=changed
    )


def seed(store: CaseStore, key: str, value) -> None:
    """Give a widget the value the store kept (its own state is dropped on leaving the
    page; the store's is not).
    """
    if key not in st.session_state:
        st.session_state[key] = value


def grouping(store: CaseStore, lesions) -> None:
    """Let the user mark images as the same lesion, or split a lesion again."""
    if len(store.uploads) < 2:
        return
    with st.expander("Several images of the same lesion?"):
        names = {u.key: u.name for u in store.uploads.values()}
        chosen = st.multiselect(
            "Images of one lesion", list(names), format_func=names.get, key="group_pick"
        )
        if st.button("Combine into one case", disabled=len(chosen) < 2):
            store.group(chosen)
            st.rerun()
        st.caption(
            "A combined case shows its images side by side, takes one set of patient "
            "details and gives one result, from the mean of the network's outputs over the "
            "images."
        )
        for les in lesions:
            if len(les.uploads) > 1 and st.button(
                f"Split case of {len(les.uploads)} images", key=f"split_{les.key}"
            ):
                store.split(les.key)
                st.rerun()


def summary(outcomes, prevalence: float, model: str) -> None:
    """One row per case (a table; on a phone, one card per case so that nothing needs
    sideways scrolling), and the CSV of every image.
    """
    st.subheader("Summary")
    responsive_table([summary_row(r) for r in outcomes], "summary")
    st.download_button(
        "Download results (CSV)",
        csv_text(outcomes, prevalence, model),
        file_name="results.csv",
        mime="text/csv",
        on_click="ignore",  # a download changes nothing, so it starts no run
    )


def latest(result) -> None:
    """The newest case's verdict right under the uploader, warnings with it, so that it is
    in view after an upload on a laptop or a phone; the whole case follows below.
    """
    les = result.lesion
    with st.container(key="latest", border=True):
        st.markdown(f"**Latest: {plain(les.label)}** · {plain(', '.join(les.names))}")
        if result.prediction is None:
            st.error(plain(result.error))
            return
        v = result.verdict
        box = st.error if v.refer else st.success
        box(f"**{plain(v.title)}.** {plain(v.risk_line)}")
        if v.warnings:  # named here, explained with the case below
            names = "; ".join(label for label, _ in v.warnings)
            st.warning(f"**Check:** {plain(names)} (what to do: with the case below).")


def context_fields(store: CaseStore, lesion) -> None:
    """Age, sex and body site of one lesion, kept in the store."""
    key = lesion.key  # whole: the same image under two names gives keys sharing a prefix
    ctx = lesion.context or PatientContext()
    a, s, b = st.columns(3)

    def changed():
        age = st.session_state.get(f"age_{key}")
        sex = st.session_state.get(f"sex_{key}", NOT_GIVEN)
        site = st.session_state.get(f"site_{key}", NOT_GIVEN)
        context = PatientContext(
            None if age is None else float(age),
            None if sex == NOT_GIVEN else sex,
            None if site == NOT_GIVEN else site,
        )
        store.set_context(lesion.key, context if context.given else None)

    seed(store, f"age_{key}", None if ctx.age is None else int(ctx.age))
    seed(store, f"sex_{key}", ctx.sex or NOT_GIVEN)
    seed(store, f"site_{key}", ctx.site or NOT_GIVEN)
    a.number_input("Age (years)", 0, 120, step=1, key=f"age_{key}", on_change=changed)
    s.selectbox("Sex", [NOT_GIVEN, *SEXES], key=f"sex_{key}", on_change=changed)
    b.selectbox(
        "Body site",
        [NOT_GIVEN, *SITES],
        format_func=lambda v: v if v == NOT_GIVEN else site_label(v),
        key=f"site_{key}",
        on_change=changed,
    )


def verdict_box(result, metrics) -> None:
    """The referral verdict, always shown, with the warnings beside it."""
    v, p = result.verdict, result.prediction
    left, right = st.columns([3, 2]) if v.warnings else (st.container(), None)
    with left:
        box = st.error if v.refer else st.success
        box(f"**{plain(v.title)}.** {plain(v.action)}")
        st.markdown(plain(v.risk_line))
        if v.details:
            st.markdown(plain(v.details))
        if v.evidence:
            st.markdown(plain(v.evidence))
        if v.threshold_reason:
            st.caption(plain(v.threshold_reason))
        if v.second_look:
            st.caption(plain(v.second_look))
        with st.expander("How sure is this threshold?"):
            with_context = p.context is not None and bool(p.context.given)
            st.markdown(operating_point_text(metrics, with_context) or "No test figures.")
    if right is not None:
        with right:
            for label, message in v.warnings:
                st.warning(f"**{plain(label.capitalize())}.** {plain(message)}")


def differential(prediction) -> None:
    """The headline diagnosis and the differential chart (same order as the headline)."""
    first, other = headline(prediction)
    st.markdown(f"**{plain(first)}**")
    if other:
        st.markdown(plain(other))
    table = pd.DataFrame(top_table(prediction), columns=["diagnosis", "probability"])
    table["shown"] = [pct(x) for x in table["probability"]]
    chart = (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%")),
            y=alt.Y(
                "diagnosis:N",
                sort="-x",  # from the values, never from an earlier chart's order
                title=None,
                axis=alt.Axis(labelLimit=240, labelOverlap=False),
            ),
            tooltip=["diagnosis", "shown"],
        )
        .properties(height=28 * len(table) + 30)
    )
    st.altair_chart(chart, width="stretch", height=28 * len(table) + 90)


@st.fragment
def explanation(bundle, store: CaseStore, result) -> None:
    """Heatmap of one image: class, method and opacity change the overlay only (the
    heatmap is cached; the model is not run again), and the report uses what is shown.
    """
    key = result.lesion.key
    first = result.lesion.good[0]
    p = result.prediction
    c1, c2 = st.columns([3, 2])
    cls = c1.selectbox(
        "Explain class",
        CLASSES,
        index=CLASSES.index(p.most_probable_class),
        format_func=display_name,
        key=f"cls_{key}",
    )
    method = c2.radio(
        "Method",
        METHODS,
        index=METHODS.index(bundle_cam_method(bundle)),
        key=f"method_{key}",
        horizontal=True,
        help="The default was chosen on validation images for putting most of the map "
        "on the lesion.",
    )
    alpha = st.slider("Overlay strength", 0.0, 1.0, 0.6, 0.05, key=f"alpha_{key}")
    cam = store.heatmap(bundle, first, cls, method, result.lesion.context, p.views)
    title = f"{method}: {display_name(cls)}"
    st.image(overlay_image(first.image, cam, alpha), caption=plain(title), width="stretch")
    st.image(legend_image(), caption="colour scale: little attention (left) to most (right)")
    st.download_button(
        "Download report (PDF)",
        lambda: case_report(bundle, store, result, cam, title, alpha),
        file_name="report.pdf",
        mime="application/pdf",
        key=f"report_{key}",
        on_click="ignore",  # a run would replace the file a second click asks for
    )


def lesion_section(bundle, store: CaseStore, result, metrics) -> None:
    """Everything about one case."""
    st.divider()
    st.subheader(plain(", ".join(result.lesion.names)))
    st.caption(plain(result.lesion.label))
    if result.prediction is None:
        st.error(plain(result.error))
        return
    for u in result.lesion.uploads:
        if u.image is None:
            st.error(plain(f"{u.name}: {u.error}"))
    context_fields(store, result.lesion)
    record_fields(store, result.lesion)
    if not bundle.uses_context:
        st.caption(
            "Age, sex and body site are recorded on the report; they do not change this "
            "model's result (the About page says why)."
        )
    verdict_box(result, metrics)
    left, right = st.columns(2)
    with left:
        images = result.lesion.good
        st.image(
            [u.image for u in images], caption=[plain(u.name) for u in images], width="stretch"
        )
        differential(result.prediction)
    with right:
        explanation(bundle, store, result)
    if st.button("Remove this case", key=f"remove_{result.lesion.key}"):
        for u in result.lesion.uploads:
            store.remove(u.key)
        st.rerun()


st.title("Classify a skin lesion")
st.warning(NOT_A_DEVICE, icon=":material/warning:")

problem = start_loading()  # the model loads while the page is shown and files are chosen
if problem:
    st.error(f"The model could not be loaded. {problem}")
    st.stop()
shown_at = prevalence()
store = case_store()
uploader(store)
if not store.uploads:
    camera(store)
    st.info("Upload one or more dermoscopic images to classify them.")
    st.caption(PRIVACY)
    st.stop()
bundle = get_bundle()
if bundle is None:
    st.stop()
metrics = get_metrics()
lesions = store.lesions()
with st.spinner(f"Classifying {len(store.uploads)} image(s)…"):
    outcomes = results(bundle, store, shown_at)
latest(outcomes[-1])
camera(store)
st.button(
    "New patient: clear every image, detail and note",
    on_click=_new_patient,
    args=(store,),
    type="primary",
)
grouping(store, lesions)
summary(outcomes, shown_at, bundle.config.describe())
st.caption(
    f"Referral threshold for images alone: {pct(display_threshold(bundle, shown_at))} "
    f"at your clinic's prevalence ({pct(shown_at)})."
)
for outcome in outcomes:
    lesion_section(bundle, store, outcome, metrics)
st.caption(PRIVACY)
