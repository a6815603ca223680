"""Training curves: loss, accuracy and learning rate per epoch for every model directory."""

import altair as alt
import pandas as pd
import streamlit as st

from skin_model import REPO_ROOT
from skin_model.artifacts import (
    CV_FILE,
    ArtifactError,
    best_epoch,
    find_cv_dirs,
    find_model_dirs,
    read_history,
    read_json,
)
from skin_model.card import cv_summary_text
from skin_model.tables import cv_frame, ensemble_frame

st.title("Training curves")
dirs = find_model_dirs(REPO_ROOT / "models")
if not dirs:
    st.error("No model directory with a history.csv was found under models/.")
    st.stop()

PANELS = [("loss", "Loss"), ("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy")]
for directory in dirs:
    st.subheader(directory.name)
    try:
        history = read_history(directory)
    except ArtifactError as exc:
        st.error(str(exc))
        continue
    best = best_epoch(history)
    st.caption(
        f"{len(history)} epochs; dashed line: epoch {best}, the highest validation balanced "
        "accuracy (restored only in runs that asked for it; the pretrained runs keep the "
        "last epoch of their cosine schedule)."
    )
    cols = st.columns(len(PANELS) + 1)
    rule = alt.Chart(pd.DataFrame({"epoch": [best]})).mark_rule(strokeDash=[4, 4]).encode(x="epoch")
    for col, (key, title) in zip(cols, PANELS, strict=False):
        series = {"train": key, "validation": f"val_{key}"}
        present = {k: v for k, v in series.items() if v in history}
        if not present:
            continue
        long = history.melt("epoch", list(present.values()), "series", title)
        long["series"] = long["series"].map({v: k for k, v in present.items()})
        chart = (
            alt.Chart(long)
            .mark_line(point=True)
            .encode(x="epoch:Q", y=alt.Y(f"{title}:Q"), color="series:N")
        )
        col.altair_chart((chart + rule).properties(title=title), width="stretch")
    if "learning_rate" in history:
        lr = alt.Chart(history).mark_line().encode(x="epoch:Q", y="learning_rate:Q")
        cols[-1].altair_chart((lr + rule).properties(title="Learning rate"), width="stretch")

for cv_dir in find_cv_dirs(REPO_ROOT / "models"):
    st.subheader(f"Cross-validation: {cv_dir.name}")
    try:
        cv = read_json(cv_dir / CV_FILE)
        frame = cv_frame(cv)
        st.caption(cv_summary_text(cv))
        numbers = {c: st.column_config.NumberColumn(format="%.3f") for c in frame.columns[1:]}
        st.dataframe(frame, hide_index=True, column_config=numbers)
    except (OSError, ValueError, KeyError) as exc:
        st.error(f"{cv_dir.name}: cv.json could not be read ({exc}).")

ENSEMBLE = REPO_ROOT / "docs" / "ensemble.json"
if ENSEMBLE.is_file():
    st.subheader("Ensemble")
    try:
        result = read_json(ENSEMBLE)
        st.caption(
            f"{' + '.join(result['members'])}, {result['combination']}; scored on the same "
            "validation half (which chooses) and test split; network speed on 256 images."
        )
        frame = ensemble_frame(result)
        numbers = {c: st.column_config.NumberColumn(format="%.3f") for c in frame.columns[2:-1]}
        st.dataframe(frame, hide_index=True, column_config=numbers)
    except (OSError, ValueError, KeyError) as exc:
        st.error(f"docs/ensemble.json could not be read ({exc}).")
