"""The model card: written from a model directory's own files, never by hand."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pandas as pd

from skin_model import CLASSES, display_name
from skin_model.artifacts import (
    ATTEMPT_COLUMNS,
    ATTEMPTS_FILE,
    CARD_FILE,
    CV_FILE,
    METRICS_FILE,
    MODEL_FILE,
    find_cv_dirs,
    read_json,
    sha256_file,
)
from skin_model.metrics import target_status
from skin_model.model_config import read_model_config
from skin_model.settings import TrainConfig

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


def _span(m: dict, key: str) -> str:
    """`` (low–high)`` of a bootstrap interval, or nothing."""
    iv = (m.get("intervals") or {}).get(key)
    return f" ({iv[0]:.3f}–{iv[1]:.3f})" if iv else ""


def ood_rows(ood: dict) -> list[str]:
    """Markdown rows of the "not dermoscopic" flag's figures (old and new layouts)."""
    if "auroc" in ood:  # models finalised before real photographs were tested
        return [
            f"| 'not dermoscopic' flag: AUROC; flagged synthetic / HAM10000 test | "
            f"{ood['auroc']:.3f}; {ood['non_dermoscopic_flagged']:.0%} / "
            f"{ood['ham10000_flagged']:.1%} |"
        ]
    rows = []
    photos, synth = ood.get("photos"), ood["synthetic"]
    if photos:
        rows.append(
            f"| 'not dermoscopic' flag: real photographs flagged (AUROC) | "
            f"{photos['non_dermoscopic_flagged']:.1%} of {photos['n_non_dermoscopic']} "
            f"({photos['auroc']:.3f}) |"
        )
    rows += [
        f"| 'not dermoscopic' flag: synthetic patterns flagged | "
        f"{synth['non_dermoscopic_flagged']:.0%} of {synth['n_non_dermoscopic']} |",
        f"| 'not dermoscopic' flag: HAM10000 test images flagged | "
        f"{synth['ham10000_flagged']:.1%} of {synth['n_ham10000']} |",
    ]
    return rows


def operating_point_text(m: dict | None, with_context: bool = False) -> str:
    """What the referral flag achieved on the test split, for the help text beside it.

    Args:
        m: A ``metrics.json`` dict (None: nothing to say).
        with_context: Use the figures measured with the patient context given.

    Returns:
        E.g. ``"On new test lesions this threshold found 92% of malignant lesions (95%
        interval 88–95%) at 61% specificity (57–65%)."``
    """
    if not m:
        return ""
    src = m.get("with_metadata", m) if with_context else m
    op, iv = src["malignant"]["operating_point"], src.get("intervals") or {}

    def pct(key: str, value) -> str:
        span = iv.get(key)
        inner = f" (95% interval {span[0]:.0%}–{span[1]:.0%})" if span else ""
        return f"{value:.0%}{inner}"

    if op.get("sensitivity") is None or op.get("specificity") is None:
        return ""
    return (
        f"On new test lesions{' with patient context' if with_context else ''} this "
        f"threshold found {pct('malignant_sensitivity', op['sensitivity'])} of malignant "
        f"lesions at {pct('malignant_specificity', op['specificity'])} specificity."
    )


def headline_table(m: dict) -> list[str]:
    """Markdown rows of the headline test figures of a ``metrics.json`` dict."""
    op = m["malignant"]["operating_point"]
    cal = m["calibration"]
    mal_cal = m["malignant"].get("calibration")
    mel = m["per_class"]["mel"]
    lines = [
        "| metric (test split) | value (95% lesion-bootstrap interval) |",
        "|---|---|",
        f"| balanced accuracy (mean per-class recall) | {_fmt(m['balanced_accuracy'])}"
        f"{_span(m, 'balanced_accuracy')} |",
        f"| accuracy | {_fmt(m['accuracy'])} |",
        f"| macro one-vs-rest ROC AUC | {_fmt(m['macro_auc'])}{_span(m, 'macro_auc')} |",
        f"| malignant-vs-benign ROC AUC | {_fmt(m['malignant']['auc'])}"
        f"{_span(m, 'malignant_auc')} |",
        f"| melanoma ROC AUC / sensitivity of the suggested diagnosis | {_fmt(mel['auc'])} / "
        f"{_fmt(mel['sensitivity'])}{_span(m, 'mel_sensitivity')} |",
        f"| malignant sensitivity at threshold {op['threshold']:.3f} | "
        f"{_fmt(op['sensitivity'])}{_span(m, 'malignant_sensitivity')} |",
        f"| malignant specificity at threshold {op['threshold']:.3f} | "
        f"{_fmt(op['specificity'])}{_span(m, 'malignant_specificity')} |",
    ]
    if mal_cal:
        lines += [
            f"| malignant-risk calibration error (ECE) | {_fmt(mal_cal['ece'])}"
            f"{_span(m, 'malignant_ece')} |",
            f"| mean malignant risk / observed malignant share | {_fmt(mal_cal['mean_risk'])} / "
            f"{_fmt(mal_cal['observed_share'])} |",
        ]
    raw = cal.get("ece_raw_outputs", cal.get("ece_before_temperature"))
    lines.append(
        f"| top-label calibration error (ECE) shown / raw network outputs | "
        f"{_fmt(cal['ece'])}{_span(m, 'ece')} / {_fmt(raw)} |"
    )
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
        lines += ood_rows(m["ood"])
    return lines


def context_table(m: dict) -> list[str]:
    """Markdown rows comparing the same test images with and without the patient context,
    and what the context alone predicts (empty for a model without the metadata input).
    """
    wm = m.get("with_metadata")
    if not wm:
        return []

    def row(name: str, x: dict) -> str:
        cal = x["malignant"].get("calibration") or {}
        return (
            f"| {name} | {_fmt(x['balanced_accuracy'])}{_span(x, 'balanced_accuracy')} | "
            f"{_fmt(x['malignant']['auc'])} | {_fmt(x['per_class']['mel']['auc'])} | "
            f"{_fmt(x['per_class']['mel']['sensitivity'])} | "
            f"{_fmt(x['malignant']['operating_point']['sensitivity'])} | {_fmt(cal.get('ece'))} |"
        )

    lines = [
        "| test split | balanced accuracy (95% interval) | malignant AUC | melanoma AUC "
        "| melanoma sensitivity | malignant sensitivity at threshold | malignant-risk ECE |",
        "|---|---|---|---|---|---|---|",
        row("image only", m),
        row(f"image + age, sex, body site ({wm.get('fusion', 'network input')})", wm),
    ]
    base = m.get("metadata_only_baseline")
    if base:
        lines.append(
            f"| age, sex, body site only ({base['model']}) | {_fmt(base['balanced_accuracy'])} "
            f"| {_fmt(base['malignant_auc'])} | {_fmt(base['mel_auc'])} | | | |"
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
        f"--{f.name.replace('_', '-')} {'none' if training[f.name] is None else training[f.name]}"
        for f in fields(TrainConfig)
        if f.name in training
        and f.name != "verbose"
        and training[f.name] != getattr(defaults, f.name)
    ]
    return " ".join(["python train.py --data-dir ../shared/data/ham10000", f"--out {out}", *flags])


VARIANT_TEXT = {
    "image": "last epoch, image only",
    "context": "last epoch, with age/sex/site (early fusion)",
    "ema_image": "weight average, image only",
    "ema_context": "weight average, with age/sex/site (early fusion)",
    "metadata_only": "age/sex/site alone (logistic regression)",
}


def variant_text(name: str, cv: dict) -> str:
    """Readable name of a cross-validation variant (late fusion names its power)."""
    if name.startswith("late_fusion_"):
        base = name.removeprefix("late_fusion_")
        power = cv["late_fusion"][base]["power"]
        how = (
            f"p chosen on the other folds; on all folds: {power:g}"
            if cv["folds_done"] > 1
            else f"p = {power:g} chosen on this fold itself: optimistic"
        )
        return f"{VARIANT_TEXT.get(base, base)} x age/sex/site posterior^p (late fusion; {how})"
    return VARIANT_TEXT.get(name, name)


def cv_table(cv: dict) -> list[str]:
    """Markdown rows of a ``cv.json``: mean +- SD over folds and pooled, per variant."""
    table = pd.DataFrame(cv["table"])
    lines = [
        "| variant | balanced accuracy, mean +- SD (pooled) | malignant AUC | melanoma AUC "
        "| melanoma sensitivity | macro AUC |",
        "|---|---|---|---|---|---|",
    ]
    for name, rows in table.groupby("variant", sort=False):
        by = rows.set_index("fold")
        mean, sd, pooled = by.loc["mean"], by.loc["sd"], by.loc["pooled"]

        def cell(key, mean=mean, sd=sd):
            spread = "" if pd.isna(sd[key]) else f" +- {sd[key]:.3f}"
            return f"{mean[key]:.3f}{spread}"

        lines.append(
            f"| {variant_text(name, cv)} | {cell('balanced_accuracy')} "
            f"({pooled['balanced_accuracy']:.3f}) | {cell('malignant_auc')} | {cell('mel_auc')} "
            f"| {cell('mel_sensitivity')} | {cell('macro_auc')} |"
        )
    return lines


def cv_frame(cv: dict) -> pd.DataFrame:
    """One row per cross-validation variant: fold mean, SD and pooled figures."""
    table = pd.DataFrame(cv["table"])
    rows = []
    for name, part in table.groupby("variant", sort=False):
        by = part.set_index("fold")
        rows.append(
            {
                "variant": variant_text(name, cv),
                "balanced accuracy (mean)": by.loc["mean", "balanced_accuracy"],
                "SD over folds": by.loc["sd", "balanced_accuracy"],
                "pooled": by.loc["pooled", "balanced_accuracy"],
                "malignant AUC": by.loc["mean", "malignant_auc"],
                "melanoma AUC": by.loc["mean", "mel_auc"],
                "melanoma sensitivity": by.loc["mean", "mel_sensitivity"],
            }
        )
    return pd.DataFrame(rows)


ENSEMBLE_LABELS = {
    "balanced_accuracy": "balanced accuracy",
    "malignant_auc": "malignant AUC",
    "mel_auc": "melanoma AUC",
    "mel_sensitivity": "melanoma sensitivity",
    "macro_auc": "macro AUC",
}


def ensemble_frame(result: dict) -> pd.DataFrame:
    """One row per part and model of a ``python -m skin_model ensemble`` result."""
    speed = result["images_per_second"]
    rows = []
    for part, block in result["parts"].items():
        name = {"val": "validation half", "test": "test"}.get(part, part)
        for row in block["rows"]:
            rows.append(
                {
                    "part": f"{name} ({block['n_images']})",
                    "model": row["model"],
                    **{label: row[key] for key, label in ENSEMBLE_LABELS.items()},
                    "images/s (network only)": speed.get(row["model"]),
                }
            )
    return pd.DataFrame(rows)


def cv_summary_text(cv: dict) -> str:
    """One sentence saying what a cross-validation run was."""
    s = cv["settings"]
    minutes = sum(cv["train_seconds"]) / 60
    return (
        f"{cv['folds_done']} fold{'s' if cv['folds_done'] != 1 else ''} held out, "
        f"{cv['n_images']} images of {cv['n_lesions']} lesions "
        f"({cv['method']}). Recipe: {s['architecture']} at {s['input_size']} px, "
        f"{s['epochs']} epochs, weight-average half-life {s.get('ema_half_life', 0):g} epochs"
        f"{backbone_text(s)}; {minutes:.0f} min of training on {cv['device']}."
    )


def backbone_text(settings: dict) -> str:
    """``", backbone learning rate x0.3"`` etc. when the backbone trains slower, else ``""``."""
    parts = []
    if settings.get("backbone_lr_scale", 1.0) != 1.0:
        parts.append(f"backbone learning rate x{settings['backbone_lr_scale']:g}")
    if settings.get("head_warmup_epochs", 0):
        parts.append(f"head-only warm-up {settings['head_warmup_epochs']} epoch(s)")
    return "".join(", " + p for p in parts)


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


def tta_text(value) -> str:
    """``"average of 4 rotations"`` etc. for a config's ``tta`` value (bool or views)."""
    views = 8 if value is True else 1 if not value else int(value)
    return {1: "none", 4: "average of the 4 rotations", 8: "average of 8 flips/rotations"}.get(
        views, f"{views} views"
    )


def calibration_lines(config: dict, m: dict) -> list[str]:
    """Card bullets saying how probabilities, the threshold and the flag were fitted."""
    fit = m.get("calibration_fit")
    if not fit:  # models finalised before the calibration part existed
        return [
            f"- Calibration: temperature {config['temperature']:.3f} fitted on validation; "
            f"malignant threshold {config['malignant_threshold']:.3f} chosen on validation for "
            f"malignant sensitivity >= {config['target_sensitivity']:.2f}."
        ]
    thr = fit["threshold"]
    t = fit["temperature_check"]
    prior = (
        "the network's outputs (uniform-prior posteriors from logit-adjusted training) "
        "re-weighted by the training class frequencies"
        if config.get("class_prior")
        else "the network's softmax outputs"
    )
    lines = [
        f"- Suggested diagnosis: {config.get('decision_rule', 'argmax')} (keeps rare classes "
        "visible; the balanced accuracy below is for this rule).",
        f"- Probabilities: {prior}; malignant risk = P(mel) + P(bcc) + P(akiec), at the "
        f"training malignant share {config.get('malignant_share', float('nan')):.3f} "
        "(re-weighted by Bayes' rule where a clinic sets its own share).",
        f"- Temperature {config['temperature']:.3f}: fitted on the calibration part "
        f"({fit['n_images']} images, {fit['n_lesions']} lesions of validation that chose "
        f"nothing), used only if it lowers held-out NLL (half-split: {t['held_out_nll_fitted']:.4f}"
        f" vs {t['held_out_nll_t1']:.4f} at 1).",
        f"- Malignant threshold {config['malignant_threshold']:.3f}: the highest whose "
        f"calibration-part sensitivity has a 95% lesion-bootstrap lower bound >= "
        f"{thr['target']:.2f} (there: {thr['sensitivity']:.3f}, lower bound "
        f"{thr['sensitivity_lower']:.3f}).",
        f"- Test-time augmentation: {tta_text(config['tta'])} (decided on validation).",
        "- 'Not dermoscopic' flag: Mahalanobis distances of the channel means and standard "
        f"deviations of {', '.join(fit.get('ood_layers', ['features']))} from the training "
        "images, each relative to its limit; flagged above the "
        f"{fit['ood_quantile']:.0%} quantile of the calibration part.",
    ]
    if config.get("metadata_input"):
        fusion = config.get("context_fusion")
        lines.append(
            "- Patient context (optional age, sex, body site): "
            + (
                "fed to the network (trained with the fields hidden at random)"
                if not fusion or fusion["feed_network"]
                else "not fed to the network"
            )
            + (
                f"; fused late: the network's output times the posterior of a {fusion['model']},"
                f" to the power {fusion['power']:g} (chosen by lesion-grouped cross-validation)"
                if fusion
                else ""
            )
            + "."
        )
    prov = config.get("weights_provenance")
    if prov:
        lines.append(
            f"- Initial weights: {prov['source']}; tarball SHA-256 `{prov['tarball_sha256']}`. "
            f"ImageNet layers: {prov['imagenet_layers']}; from another task: "
            f"{prov['other_task_layers']}. {prov['quantisation']}."
        )
    return lines


def render_model_card(model_dir: Path) -> str:
    """Markdown model card built from ``config.json``, ``metrics.json`` and attempts."""
    model_dir = Path(model_dir)
    config = read_model_config(model_dir).to_dict()
    m = read_json(model_dir / METRICS_FILE)
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
        f"min ({tr['epochs_run']} epochs; weights of epoch {tr['best_epoch']} kept).",
        f"- Data: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), {sum(counts.values())} images "
        f"split by `lesion_id` into train {counts['train']} / validation {counts['val']} / "
        + (f"calibration {counts['calib']} / " if "calib" in counts else "")
        + f"test {counts['test']}, stratified by diagnosis (`split.csv`).",
        *calibration_lines(config, m),
        f"- Reproduce: `{reproduce_command(config['training'], f'models/{model_dir.name}')}`",
        "",
        f"## Headline numbers (test split, {m['n_images']} images)",
        "",
        *headline_table(m),
        "",
        *(
            [
                "## With and without the patient context (test)",
                "",
                *context_table(m),
                "",
            ]
            if m.get("with_metadata")
            else []
        ),
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
        _attempts_table(model_dir.parent / ATTEMPTS_FILE),
    ]
    for cv_dir in find_cv_dirs(model_dir.parent):
        cv = read_json(cv_dir / CV_FILE)
        lines += ["", f"## Cross-validation: {cv_dir.name}", "", cv_summary_text(cv), ""]
        lines += cv_table(cv)
    return "\n".join(lines) + "\n"


def write_model_card(model_dir: Path) -> Path:
    """Write ``MODEL_CARD.md`` into the model directory and return its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_model_card(model_dir), encoding="utf-8")
    return path
