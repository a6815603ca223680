"""The model card: written from a model directory's own files, never by hand."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pandas as pd

from skin_model import CLASSES, display_name
from skin_model.evaluate import target_status
from skin_model.inference import CARD_FILE, MODEL_FILE, sha256_file
from skin_model.training import ATTEMPT_COLUMNS, TrainConfig

INTENDED_USE = """\
## Intended use
A research and teaching aid that shows how a small convolutional network trained on
HAM10000 sorts a dermoscopic image into 7 diagnostic classes, how sure it is, and where
it looked. It may support a trained clinician's own judgement when reviewing dermoscopic
images of pigmented lesions.

## Not for
- **It is not a medical device** and has no regulatory clearance. It must not be used to
  diagnose, to rule out malignancy, or to decide on treatment or referral by itself.
- Clinical (non-dermoscopic) photographs, non-skin images, mucosa, nails, or lesion types
  outside the 7 classes: the model will still answer, and the answer means nothing.
- Patients under-represented in HAM10000 (mostly fair-skinned European patients from two
  centres): performance on darker skin types is unknown.

## Known weaknesses
- Rare classes (dermatofibroma, vascular lesions, actinic keratosis) have few test images,
  so their figures are uncertain; see the per-class table.
- Evaluated retrospectively on a held-out part of the same collection, never prospectively
  nor on another clinic's images. Use `python -m skin_model evaluate --data-dir DIR` to
  validate it on your own labelled images first.
- Images are downscaled to the model's input size; fine structures visible at full
  resolution are lost.
"""


def _fmt(x) -> str:
    """Format a metric for a table cell."""
    return "n/a" if x is None else f"{x:.3f}"


def headline_table(m: dict) -> list[str]:
    """Markdown rows of the headline test figures of a ``metrics.json`` dict."""
    op = m["malignant"]["operating_point"]
    cal = m["calibration"]
    lines = [
        "| metric | value |",
        "|---|---|",
        f"| balanced accuracy (mean per-class recall) | {_fmt(m['balanced_accuracy'])} |",
        f"| accuracy | {_fmt(m['accuracy'])} |",
        f"| macro one-vs-rest ROC AUC | {_fmt(m['macro_auc'])} |",
        f"| malignant-vs-benign ROC AUC | {_fmt(m['malignant']['auc'])} |",
        f"| malignant sensitivity / specificity at threshold {op['threshold']:.3f} | "
        f"{_fmt(op['sensitivity'])} / {_fmt(op['specificity'])} |",
        f"| expected calibration error after / before temperature scaling | "
        f"{_fmt(cal['ece'])} / {_fmt(cal.get('ece_before_temperature'))} |",
    ]
    if m.get("cam_localisation"):
        c = m["cam_localisation"]
        best = (
            f" (all energy in the box would give {c['ceiling_mean_ratio']:.2f} / "
            f"{c['ceiling_median_ratio']:.2f})"
            if "ceiling_mean_ratio" in c
            else ""
        )
        lines.append(
            f"| Grad-CAM energy in lesion box ÷ box area share (mean / median) | "
            f"{c['mean_ratio']:.2f} / {c['median_ratio']:.2f}{best} |"
        )
    if m.get("ood"):
        o = m["ood"]
        lines.append(
            f"| 'not dermoscopic' flag: AUROC; flagged synthetic / HAM10000 test | "
            f"{o['auroc']:.3f}; {o['non_dermoscopic_flagged']:.0%} / "
            f"{o['ham10000_flagged']:.1%} |"
        )
    return lines


def targets_table(m: dict) -> list[str]:
    """Markdown rows: each quality target, the achieved value with its interval, met or not."""
    lines = ["| target | goal | achieved (95% interval) | met |", "|---|---|---|---|"]
    for r in target_status(m):
        interval = r["interval"]
        span = f" ({interval[0]:.3f}–{interval[1]:.3f})" if interval else ""
        met = {True: "yes", False: "**no**", None: "n/a"}[r["met"]]
        lines.append(
            f"| {r['label']} | {r['direction']} {r['goal']:g} | {_fmt(r['achieved'])}{span} "
            f"| {met} |"
        )
    return lines


def per_class_table(m: dict) -> list[str]:
    """Markdown rows of the per-class test figures of a ``metrics.json`` dict."""
    lines = [
        "| class | sensitivity | specificity | precision | F1 | AUC | test images |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CLASSES:
        p = m["per_class"][c]
        lines.append(
            f"| {display_name(c)} | {_fmt(p['sensitivity'])} | {_fmt(p['specificity'])} "
            f"| {_fmt(p['precision'])} | {_fmt(p['f1'])} | {_fmt(p['auc'])} | {p['support']} |"
        )
    return lines


def reproduce_command(training: dict, out: str = "models/default") -> str:
    """The ``train.py`` command that reproduces a model from its recorded settings.

    Args:
        training: The ``training`` settings of a ``config.json``.
        out: Model directory the command writes.

    Returns:
        One shell line with every setting that differs from the defaults.
    """
    defaults = TrainConfig()
    flags = [
        f"--{f.name.replace('_', '-')} {training[f.name]}"
        for f in fields(TrainConfig)
        if f.name in training
        and f.name != "verbose"
        and training[f.name] is not None
        and training[f.name] != getattr(defaults, f.name)
    ]
    return " ".join(["python train.py --data-dir ../shared/data/ham10000", f"--out {out}", *flags])


def _attempts_table(path: Path) -> str:
    """Markdown table of every recorded training attempt."""
    if not path.is_file():
        return "_No attempts recorded._\n"
    df = pd.read_csv(path)
    cols = ATTEMPT_COLUMNS
    df = df[[c for c in cols if c in df.columns]]
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    rows = "".join(
        "| " + " | ".join(str(v) for v in r) + " |\n" for r in df.itertuples(index=False)
    )
    return head + rows


def render_model_card(model_dir: Path) -> str:
    """Markdown model card built from ``config.json``, ``metrics.json`` and attempts."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    m = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    tr = m["training"]
    counts = {s: sum(v.values()) for s, v in m["split"].items()}
    lines = [
        f"# Model card: {model_dir.name}",
        "",
        f"- Architecture: `{config['architecture']}`, input {config['input_size']}x"
        f"{config['input_size']} RGB, {m['model']['parameters']:,} parameters, "
        f"{m['model']['file_bytes'] / 1e6:.1f} MB.",
        f"- Model file `{MODEL_FILE}` SHA-256: `{sha256_file(model_dir / MODEL_FILE)}`",
        f"- Trained {config['trained_on']} on {tr['device']} in {tr['train_seconds'] / 60:.1f} "
        f"min ({tr['epochs_run']} epochs, best epoch {tr['best_epoch']} restored).",
        f"- Data: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), {sum(counts.values())} images "
        f"split by `lesion_id` into train {counts['train']} / validation {counts['val']} / "
        f"test {counts['test']}, stratified by diagnosis (`split.csv`).",
        f"- Calibration: temperature {config['temperature']:.3f} fitted on validation; "
        f"test-time augmentation over 8 flips/rotations: {'on' if config['tta'] else 'off'}.",
        f"- Malignant threshold {config['malignant_threshold']:.3f}, chosen on validation for "
        f"malignant sensitivity >= {config['target_sensitivity']:.2f}.",
        f"- Reproduce: `{reproduce_command(config['training'], f'models/{model_dir.name}')}`",
        "",
        f"## Headline numbers (test split, {m['n_images']} images)",
        "",
        *headline_table(m),
        "",
        "## Against the quality targets (test)",
        "",
        *targets_table(m),
        "",
        "## Per class (test)",
        "",
        *per_class_table(m),
    ]
    lines += [
        "",
        INTENDED_USE,
        "## What was tried",
        "Every `train.py` run appends a row to `models/attempts.csv`; validation decided, "
        "the test split was read once per run.",
        "",
        _attempts_table(model_dir.parent / "attempts.csv"),
    ]
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path) -> Path:
    """Write ``MODEL_CARD.md`` into the model directory and return its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_model_card(model_dir), encoding="utf-8")
    return path
