"""Model metrics: what a clinician needs at their clinic's prevalence first (referrals and
missed cancers per 1,000, risk tiers), the machine-learning detail below. Every figure is
read from the model's metrics.json.
"""

from collections.abc import Sequence

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_common import get_bundle, get_metrics, prevalence, responsive_table, table
from skin_model import CLASSES
from skin_model.evaluate.metrics import operating_point_from_roc
from skin_model.model.metrics_file import Metrics
from skin_model.reports.tables import (
    context_frame,
    headline_frame,
    per_class_frame,
    targets_frame,
)
from skin_model.runtime.advice import pct
from skin_model.runtime.clinic import per_thousand, risk_at, tier_rows, training_share


def clinic_view(metrics: Metrics, prevalence: float, trained: float) -> None:
    """The referral threshold's consequences per 1,000 lesions, and the risk tiers."""
    op = metrics.malignant.operating_point
    if op.sensitivity is None or op.specificity is None:
        st.info("The test split had no malignant or no benign lesions: no referral figures.")
        return
    n = per_thousand(op.sensitivity, op.specificity, prevalence)
    st.subheader(f"At your clinic (about {pct(prevalence)} of examined lesions malignant)")
    c = st.columns(3)
    c[0].metric("Referred per 1,000 lesions", f"{n['referred']:.0f}")
    c[1].metric("Malignant lesions found", f"{n['found']:.0f} of {1000 * prevalence:.0f}")
    c[2].metric("Malignant lesions missed", f"{n['missed']:.1f} per 1,000")
    shown = pct(risk_at(op.threshold, trained, prevalence))
    st.markdown(
        f"At the shipped referral threshold ({shown} risk at your prevalence), the model "
        f"referred {op.sensitivity * 100:.1f}% of "
        f"malignant and {(1 - op.specificity) * 100:.1f}% of benign test lesions "
        "(new patients, never seen in training)."
    )
    tiers = metrics.malignant.tiers
    if tiers:
        rows = tier_rows(tiers, prevalence, trained)
        st.markdown("**What each result means** (test lesions, re-weighted to your prevalence)")
        responsive_table(rows, "tiers")


def explorer(metrics: Metrics, prevalence: float, trained: float) -> None:
    """Other thresholds, from the stored test ROC points (the shipped one exactly)."""
    roc, op = metrics.malignant.roc, metrics.malignant.operating_point
    if roc is None or not roc.thresholds or op.sensitivity is None or op.specificity is None:
        return
    with st.expander("What if the threshold were different?"):
        options = sorted({round(float(t), 6) for t in roc.thresholds} | {op.threshold})
        chosen = st.select_slider(
            "Referral threshold (risk at your prevalence)",
            options=options,
            value=op.threshold,
            format_func=lambda t: pct(risk_at(t, trained, prevalence)),
        )
        point = (
            op.as_dict()
            if chosen == op.threshold
            else operating_point_from_roc(roc.as_dict(), prevalence, chosen)
        )
        n = per_thousand(point["sensitivity"], point["specificity"], prevalence)
        e = st.columns(4)
        e[0].metric("Sensitivity", f"{point['sensitivity']:.3f}")
        e[1].metric("Specificity", f"{point['specificity']:.3f}")
        e[2].metric("Referred per 1,000", f"{n['referred']:.0f}")
        e[3].metric("Missed per 1,000", f"{n['missed']:.1f}")
        st.caption(
            "At the shipped threshold these are the headline test figures; at others they come "
            "from the stored test ROC points (nothing is recomputed)."
        )


def confusion(metrics: Metrics) -> None:
    """Row-normalised confusion matrix."""
    counts = np.array(metrics.confusion_counts)
    labels = list(metrics.confusion_labels)
    if not labels:
        return
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    cm = pd.DataFrame(
        [
            (t, p, float(share[i, j]), int(counts[i, j]))
            for i, t in enumerate(labels)
            for j, p in enumerate(labels)
        ],
        columns=["true", "predicted", "share of true class", "count"],
    )
    base = alt.Chart(cm).encode(x=alt.X("predicted:N", sort=labels), y=alt.Y("true:N", sort=labels))
    heat = base.mark_rect().encode(
        color=alt.Color("share of true class:Q", scale=alt.Scale(scheme="blues"), legend=None),
        tooltip=["true", "predicted", "count", "share of true class"],
    )
    text = base.mark_text().encode(text=alt.Text("share of true class:Q", format=".2f"))
    st.altair_chart(heat + text, width="stretch", height=360)


def roc_curves(metrics: Metrics) -> None:
    """Per-class and malignant ROC curves, legend below the plot."""
    curves = [(k, metrics.per_class[k].roc) for k in CLASSES if k in metrics.per_class]
    curves.append(("malignant vs benign", metrics.malignant.roc))
    rows = [
        {"curve": name, "fpr": x, "tpr": y}
        for name, roc in curves
        if roc is not None
        for x, y in zip(roc.fpr, roc.tpr, strict=False)
    ]
    if not rows:
        return
    chart = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line()
        .encode(
            x=alt.X("fpr:Q", title="1 − specificity"),
            y=alt.Y("tpr:Q", title="sensitivity"),
            color=alt.Color("curve:N", legend=alt.Legend(orient="bottom", columns=4)),
        )
    )
    st.altair_chart(chart, width="stretch", height=420)


def reliability(bins: Sequence[dict], x: str, y: str, x_title: str, y_title: str):
    """A reliability diagram (bars per bin, the diagonal) from stored bins."""
    frame = pd.DataFrame([b for b in bins if b["count"]])
    if frame.empty:
        return None
    bars = (
        alt.Chart(frame)
        .mark_bar(opacity=0.7)
        .encode(
            x=alt.X(f"{x}:Q", scale=alt.Scale(domain=[0, 1]), title=x_title),
            y=alt.Y(f"{y}:Q", scale=alt.Scale(domain=[0, 1]), title=y_title),
            tooltip=["lower", "upper", "count", x, y],
        )
    )
    diag = (
        alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="x", y="y")
    )
    return bars + diag


def calibration(metrics: Metrics) -> None:
    """The malignant risk's reliability."""
    mal_cal = metrics.malignant.calibration
    if mal_cal and mal_cal.mean_risk is not None and mal_cal.observed_share is not None:
        st.markdown(
            f"Malignant risk against what happened: ECE {mal_cal.ece:.3f}; mean risk "
            f"{mal_cal.mean_risk:.3f} vs observed malignant share "
            f"{mal_cal.observed_share:.3f}."
        )
        chart = reliability(mal_cal.bins, "mean_risk", "observed", "mean risk", "observed share")
        if chart is not None:
            st.altair_chart(chart, width="stretch", height=420)


def ml_detail(metrics: Metrics) -> None:
    """Machine-learning figures, each in its own expander."""
    st.subheader("Machine-learning detail")
    with st.expander("Headline test figures with intervals"):
        table(headline_frame(metrics))
        st.caption(metrics.intervals_method)
    with st.expander("Against the project's quality targets"):
        table(targets_frame(metrics))
    with st.expander("Per class"):
        table(per_class_frame(metrics))
        confusion(metrics)
    with st.expander("ROC curves"):
        roc_curves(metrics)
    with st.expander("Calibration of the malignant risk"):
        calibration(metrics)
    if metrics.with_metadata:
        with st.expander("With and without patient details"):
            table(context_frame(metrics))
    robust = metrics.robustness
    if robust.get("white_balance"):
        with st.expander("Another dermatoscope's colours (white-balance shift)"):
            wb = robust["white_balance"]
            st.markdown(
                f"{wb['shift']}: balanced accuracy {wb['balanced_accuracy']:.3f} "
                f"(cost {robust['white_balance_cost']:+.3f}), malignant AUC "
                f"{wb['malignant_auc']:.3f}."
            )
    grouping = metrics.lesion_grouping
    if grouping:
        with st.expander("Several images of one lesion"):
            st.markdown(
                f"On the {grouping['n_images']} test images of {grouping['n_lesions']} lesions "
                f"with more than one image, balanced accuracy was {grouping['per_image']:.3f} per "
                f"image and {grouping['lesion_mean']:.3f} when each image got its lesion's "
                f"result ({grouping['combination']})."
            )


st.title("Model metrics")
metrics = get_metrics()
if metrics is None:
    st.stop()
bundle = get_bundle()
trained = training_share(bundle.malignant_share if bundle else None, metrics)
shown_at = prevalence()
st.caption(
    f"{metrics.evaluated_on}: {metrics.n_images} images. Every figure "
    "here is read from the model's metrics.json; the clinic setting is in the sidebar."
)
clinic_view(metrics, shown_at, trained)
explorer(metrics, shown_at, trained)
ml_detail(metrics)
