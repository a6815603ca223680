"""Model metrics dashboard, read from the shipped model's metrics.json."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from app_common import get_metrics
from skin_model import CLASSES, display_name
from skin_model.metrics import operating_point_from_roc, target_status

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
mal_cal = mal.get("calibration")
fit = metrics.get("calibration_fit")
if fit:
    st.markdown(
        f"Probabilities are the network's outputs re-weighted to the training class "
        f"frequencies; temperature **{fit['temperature']:.3f}**, fitted on the calibration "
        f"part ({fit['n_images']} validation images that chose nothing) and kept at 1 unless "
        "held-out lesions showed a gain."
    )


def reliability(bins: list[dict], x: str, y: str, x_title: str, y_title: str):
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


left, right = st.columns(2)
if mal_cal:
    iv = (metrics.get("intervals") or {}).get("malignant_ece")
    span = f" (95% interval {iv[0]:.3f}–{iv[1]:.3f})" if iv else ""
    left.markdown(
        f"**Malignant risk** (P(mel) + P(bcc) + P(akiec) vs malignant truth): ECE "
        f"**{mal_cal['ece']:.3f}**{span}; mean risk {mal_cal['mean_risk']:.3f} vs observed "
        f"malignant share {mal_cal['observed_share']:.3f}."
    )
    chart = reliability(mal_cal["bins"], "mean_risk", "observed", "mean risk", "observed share")
    if chart is not None:
        left.altair_chart(chart, width="stretch")
raw = cal.get("ece_raw_outputs", cal.get("ece_before_temperature"))
right.markdown(
    f"**Top label**: ECE **{cal['ece']:.3f}** as shown"
    + (f" ({raw:.3f} for the raw network outputs)." if raw is not None else ".")
)
chart = reliability(cal["bins"], "confidence", "accuracy", "mean confidence", "accuracy")
if chart is not None:
    right.altair_chart(chart, width="stretch")

if metrics.get("with_metadata"):
    st.subheader("With and without patient context")
    wm, base = metrics["with_metadata"], metrics.get("metadata_only_baseline") or {}

    def row(name: str, m: dict) -> dict:
        """Headline figures of one evaluation."""
        return {
            "evaluation": name,
            "balanced accuracy": m["balanced_accuracy"],
            "malignant AUC": m["malignant"]["auc"],
            "melanoma AUC": m["per_class"]["mel"]["auc"],
            "melanoma sensitivity": m["per_class"]["mel"]["sensitivity"],
            "malignant-risk ECE": (m["malignant"].get("calibration") or {}).get("ece"),
        }

    fusion = wm.get("fusion", "network input")
    table = [row("image only", metrics), row(f"image + age, sex, site ({fusion})", wm)]
    if base:
        table.append(
            {
                "evaluation": "age, sex, site only (logistic regression)",
                "balanced accuracy": base["balanced_accuracy"],
                "malignant AUC": base["malignant_auc"],
                "melanoma AUC": base["mel_auc"],
            }
        )
    st.dataframe(
        pd.DataFrame(table),
        hide_index=True,
        column_config={
            k: st.column_config.NumberColumn(format="%.3f") for k in table[0] if k != "evaluation"
        },
    )
    st.caption("Same test images; the patient context comes from HAM10000's metadata.")

ood = metrics.get("ood") or {}
if ood.get("photos"):
    st.subheader("The 'not dermoscopic' flag")
    photos, synth = ood["photos"], ood["synthetic"]
    o = st.columns(3)
    o[0].metric(
        "Real photographs flagged",
        f"{photos['non_dermoscopic_flagged']:.1%}",
        help=f"{photos['n_non_dermoscopic']} images: {photos['sources']}.",
    )
    o[1].metric("Synthetic patterns flagged", f"{synth['non_dermoscopic_flagged']:.0%}")
    o[2].metric(
        "HAM10000 test images flagged",
        f"{photos['ham10000_flagged']:.1%}",
        help=f"of {photos['n_ham10000']} test images",
    )

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
