"""Model metrics dashboard, read from the shipped model's metrics.json."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_common import get_metrics
from skin_model import CLASSES, display_name
from skin_model.evaluate import operating_point_from_roc, target_status

st.title("Model metrics")
metrics = get_metrics()
if metrics is None:
    st.stop()

mal = metrics["malignant"]
op = mal["operating_point"]
st.caption(
    f"{metrics.get('evaluated_on', 'evaluation')}: {metrics['n_images']} images. "
    "Every figure on this page is read from the model's metrics.json."
)

c = st.columns(5)
c[0].metric(
    "Balanced accuracy",
    f"{metrics['balanced_accuracy']:.3f}",
    help="Mean per-class recall (the ISIC ranking metric).",
)
c[1].metric(
    "Malignant sensitivity",
    f"{op['sensitivity']:.3f}",
    help=f"At the shipped threshold {op['threshold']:.3f}.",
)
c[2].metric("Malignant specificity", f"{op['specificity']:.3f}")
c[3].metric("Malignant AUC", f"{mal['auc']:.3f}" if mal["auc"] is not None else "n/a")
c[4].metric("Macro AUC", f"{metrics['macro_auc']:.3f}" if metrics["macro_auc"] else "n/a")

st.subheader("Against the quality targets")
targets = pd.DataFrame(
    [
        {
            "target": r["label"],
            "goal": f"{r['direction']} {r['goal']:g}",
            "achieved": r["achieved"],
            "95% interval": "–".join(f"{v:.3f}" for v in r["interval"]) if r["interval"] else "",
            "met": {True: "yes", False: "no", None: "n/a"}[r["met"]],
        }
        for r in target_status(metrics)
    ]
)
st.dataframe(
    targets,
    hide_index=True,
    column_config={"achieved": st.column_config.NumberColumn(format="%.3f")},
)
st.caption(metrics.get("intervals_method", "No intervals were computed for this model."))

st.subheader("Confusion matrix")
counts = np.array(metrics["confusion_matrix"]["counts"])
labels = metrics["confusion_matrix"]["labels"]
normalise = st.toggle("Row-normalised (share of each true class)", value=True)
matrix = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
cm = pd.DataFrame(
    [
        (t, p, float(matrix[i, j]), int(counts[i, j]))
        for i, t in enumerate(labels)
        for j, p in enumerate(labels)
    ],
    columns=["true", "predicted", "value", "count"],
)
base = alt.Chart(cm).encode(x=alt.X("predicted:N", sort=labels), y=alt.Y("true:N", sort=labels))
heat = base.mark_rect().encode(
    color=alt.Color("value:Q", scale=alt.Scale(scheme="blues")),
    tooltip=["true", "predicted", "count", "value"],
)
text = base.mark_text().encode(
    text=alt.Text("value:Q", format=".2f" if normalise else "d"),
    color=alt.condition(alt.datum.value > matrix.max() / 2, alt.value("white"), alt.value("black")),
)
st.altair_chart(heat + text, width="stretch")

st.subheader("Per class")
rows = [
    {
        "class": display_name(k),
        **{m: v[m] for m in ("sensitivity", "specificity", "precision", "f1", "auc", "support")},
    }
    for k, v in metrics["per_class"].items()
]
st.dataframe(
    pd.DataFrame(rows),
    hide_index=True,
    column_config={
        m: st.column_config.NumberColumn(format="%.3f")
        for m in ("sensitivity", "specificity", "precision", "f1", "auc")
    },
)

st.subheader("ROC curves")
roc_rows = []
for k in CLASSES:
    roc = metrics["per_class"][k]["roc"]
    if roc:
        roc_rows += [
            {"curve": k, "fpr": x, "tpr": y} for x, y in zip(roc["fpr"], roc["tpr"], strict=False)
        ]
if mal["roc"]:
    roc_rows += [
        {"curve": "malignant vs benign", "fpr": x, "tpr": y}
        for x, y in zip(mal["roc"]["fpr"], mal["roc"]["tpr"], strict=False)
    ]
st.altair_chart(
    alt.Chart(pd.DataFrame(roc_rows))
    .mark_line()
    .encode(
        x=alt.X("fpr:Q", title="1 − specificity"),
        y=alt.Y("tpr:Q", title="sensitivity"),
        color="curve:N",
    ),
    width="stretch",
)

st.subheader("Calibration")
cal = metrics["calibration"]
st.markdown(
    f"Expected calibration error **{cal['ece']:.3f}** after temperature scaling"
    + (
        f" ({cal['ece_before_temperature']:.3f} before)."
        if "ece_before_temperature" in cal
        else "."
    )
)
bins = pd.DataFrame([b for b in cal["bins"] if b["count"]])
if not bins.empty:
    bars = (
        alt.Chart(bins)
        .mark_bar(opacity=0.7)
        .encode(
            x=alt.X("confidence:Q", scale=alt.Scale(domain=[0, 1]), title="mean confidence"),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
            tooltip=["lower", "upper", "count", "confidence", "accuracy"],
        )
    )
    diag = (
        alt.Chart(pd.DataFrame({"x": [0, 1], "y": [0, 1]}))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="x", y="y")
    )
    st.altair_chart(bars + diag, width="stretch")

st.subheader("Operating-point explorer (malignant vs benign)")
if mal["roc"]:
    prevalence = st.slider(
        "Malignant prevalence in your population",
        0.01,
        0.5,
        float(round(mal["prevalence"], 2)),
        0.01,
    )
    thr = st.slider("Malignant threshold", 0.0, 1.0, float(round(op["threshold"], 2)), 0.01)
    point = operating_point_from_roc(mal["roc"], prevalence, thr)
    e = st.columns(4)
    e[0].metric("Sensitivity", f"{point['sensitivity']:.3f}")
    e[1].metric("Specificity", f"{point['specificity']:.3f}")
    e[2].metric("Referred per 1,000 patients", f"{point['referred_per_1000']:.0f}")
    e[3].metric("Malignant cases missed per 1,000", f"{point['missed_per_1000']:.1f}")
    st.caption(
        f"The shipped threshold is {op['threshold']:.3f}. Figures come from the stored "
        "test ROC points; nothing is recomputed."
    )
