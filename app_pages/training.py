"""Training curves: one chart per metric with the chosen runs overlaid, a marker at the
epoch whose weights each run kept; cross-validation, ensemble and attempts tables.
"""

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from app_common import model_dir, table
from skin_model import REPO_ROOT
from skin_model.model.artifacts import (
    ATTEMPTS_FILE,
    CV_FILE,
    ArtifactError,
    find_cv_dirs,
    find_model_dirs,
    read_history,
    read_json,
)
from skin_model.model.metrics_file import read_metrics
from skin_model.reports.card import cv_summary_text
from skin_model.reports.tables import attempts_frame, cv_frame, ensemble_frame

PANELS = [
    ("loss", "Loss"),
    ("accuracy", "Accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("learning_rate", "Learning rate"),
]


def kept_epoch(directory, history: pd.DataFrame) -> int:
    """The epoch whose weights the run kept (metrics.json), else its last."""
    try:
        best = read_metrics(directory).best_epoch
    except ArtifactError:
        best = None
    return int(history["epoch"].max()) if best is None else best


def shipped_runs(names: list[str]) -> list[str]:
    """The shipped model's run among ``names``, or the runs its averaged network is made of."""
    try:
        members = [Path(m).name for m in read_metrics(model_dir()).members]
    except ArtifactError:
        members = []
    return [n for n in members or [model_dir().name] if n in names] or names[:1]


def long_history(dirs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every chosen run's history in long form, and each run's kept epoch."""
    frames, kept = [], []
    for d in dirs:
        try:
            h = read_history(d)
        except ArtifactError as exc:
            st.error(str(exc))
            continue
        for key, _ in PANELS:
            for part, col in (("training", key), ("validation", f"val_{key}")):
                if col in h:
                    frames.append(
                        pd.DataFrame(
                            {
                                "run": d.name,
                                "metric": key,
                                "part": part,
                                "epoch": h["epoch"],
                                "value": h[col],
                            }
                        )
                    )
        kept.append({"run": d.name, "epoch": kept_epoch(d, h)})
    return (pd.concat(frames) if frames else pd.DataFrame()), pd.DataFrame(kept)


def curves(data: pd.DataFrame, kept: pd.DataFrame) -> None:
    """One chart per metric, runs by colour, training solid and validation dashed."""
    cols = st.columns(2)
    for i, (key, title) in enumerate(PANELS):
        part = data[data["metric"] == key] if not data.empty else data
        if part.empty:
            continue
        lines = (
            alt.Chart(part)
            .mark_line(point=True)
            .encode(
                x="epoch:Q",
                y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
                color=alt.Color("run:N", legend=alt.Legend(orient="bottom", columns=3)),
                strokeDash=alt.StrokeDash("part:N", legend=alt.Legend(orient="bottom")),
                tooltip=["run", "part", "epoch", "value"],
            )
        )
        marks = alt.Chart(kept).mark_rule(strokeDash=[2, 2]).encode(x="epoch:Q", color="run:N")
        chart = alt.layer(lines, marks).properties(title=title, height=220)
        cols[i % 2].altair_chart(chart, width="stretch", height=380)
    st.caption("Dotted vertical line: the epoch whose weights each run kept.")


st.title("Training curves")
root = model_dir().parent
dirs = find_model_dirs(root)
if not dirs:
    st.error(f"No model directory with a history.csv was found under {root}.")
    st.stop()
names = [d.name for d in dirs]
chosen = st.multiselect("Runs to compare", names, default=shipped_runs(names))
data, kept = long_history([d for d in dirs if d.name in chosen])
curves(data, kept)

with st.expander("Every training attempt"):
    table(attempts_frame(root / ATTEMPTS_FILE), digits=4)

for cv_dir in find_cv_dirs(root):
    with st.expander(f"Cross-validation: {cv_dir.name}"):
        try:
            cv = read_json(cv_dir / CV_FILE)
            st.caption(cv_summary_text(cv))
            table(cv_frame(cv))
        except (OSError, ValueError, KeyError) as exc:
            st.error(f"{cv_dir.name}: cv.json could not be read ({exc}).")

ENSEMBLE = REPO_ROOT / "docs" / "ensemble.json"
if ENSEMBLE.is_file():
    with st.expander("Ensemble"):
        try:
            result = read_json(ENSEMBLE)
            st.caption(f"{' + '.join(result['members'])}, {result['combination']}.")
            table(ensemble_frame(result))
        except (OSError, ValueError, KeyError) as exc:
            st.error(f"docs/ensemble.json could not be read ({exc}).")
