"""The model card: written from a model directory's own files, never by hand."""

from __future__ import annotations

import math
from pathlib import Path

from skin_model.model.artifacts import (
    ATTEMPTS_FILE,
    CARD_FILE,
    CV_FILE,
    find_cv_dirs,
    read_integrity,
    read_json,
)
from skin_model.model.config import ModelConfig, read_model_config
from skin_model.model.metrics_file import Metrics, read_metrics
from skin_model.model.settings import changed_settings, comma_paths
from skin_model.reports.tables import (
    attempts_frame,
    context_frame,
    cv_frame,
    headline_frame,
    markdown,
    per_class_frame,
    targets_frame,
)

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


def reproduce_command(training: dict, out: str = "models/default") -> str:
    """The ``train.py`` command that reproduces a model from its recorded settings.

    Args:
        training: The ``training`` settings of a ``config.json``.
        out: Model directory the command writes.

    Returns:
        One shell line with every setting that differs from the defaults.
    """
    flags = [
        f"--{name.replace('_', '-')} {'none' if value is None else value}"
        for name, value in changed_settings(training).items()
    ]
    replace = ["--replace-default"] if out.rstrip("/") == "models/default" else []
    head = ["python train.py --data-dir ../shared/data/ham10000", f"--out {out}", *replace]
    return " ".join([*head, *flags])


def reproduce_commands(training: dict, out: str = "models/default") -> list[str]:
    """:func:`reproduce_command` of a model, preceded by its members' own commands when it
    averages networks (each member's settings from its ``metrics.json``).
    """
    from skin_model import REPO_ROOT

    commands = []
    for member in comma_paths(training.get("members")):
        settings = read_metrics(REPO_ROOT / member).training.get("settings", {})
        commands.append(reproduce_command(settings, member))
    return [*commands, reproduce_command(training, out)]


def cv_summary_text(cv: dict) -> str:
    """One sentence saying what a cross-validation run was."""
    s = cv["settings"]
    minutes = sum(cv["train_seconds"]) / 60
    from skin_model.reports.tables import recipe_text

    return (
        f"{cv['folds_done']} fold{'s' if cv['folds_done'] != 1 else ''} held out, "
        f"{cv['n_images']} images of {cv['n_lesions']} lesions "
        f"({cv['method']}). Recipe: {recipe_text(s)}; {minutes:.0f} min of training on "
        f"{cv['device']}."
    )


def tta_text(value) -> str:
    """``"average of 4 rotations"`` etc. for a config's ``tta`` value (bool or views)."""
    views = 8 if value is True else 1 if not value else int(value)
    return {
        1: "none",
        2: "average of the image and its half turn",
        4: "average of the 4 rotations",
        8: "average of 8 flips/rotations",
    }.get(views, f"{views} views")


def second_look_text(config: dict) -> str:
    """The card's words for a config's second look near the threshold ("" without one)."""
    if not ModelConfig(**config).looks_again:
        return ""
    views, band = int(config["second_look_views"]), float(config["second_look_band"])
    return (
        f"; a second look: an image whose risk lies within {band:g} log-odds of its threshold "
        f"(odds within x{math.exp(band):.2f}) is scored on the {tta_text(views)} "
        "instead, and the threshold and temperature were fitted on the calibration part "
        "scored that way"
    )


def tta_origin(m: Metrics) -> str:
    """Who chose the test-time views: the recipe's ``views`` setting, or validation."""
    views = m.training.get("settings", {}).get("views", 0)
    if not views:
        return "decided on validation"
    return (
        "the recipe's setting, chosen on cross-validation; every quarter turn and flip "
        "of a file gets the same verdict"
        if views == 8
        else "the recipe's setting"
    )


def threshold_line(threshold: float, fit: dict) -> str:
    """How the malignant threshold was chosen, from the calibration fit's ``threshold``."""
    if fit.get("sensitivity") is None:
        return (
            f"- Malignant threshold {threshold:.3f}: not fitted (the calibration part holds "
            "no malignant image); retrain on more data before any clinical use."
        )
    return (
        f"- Malignant threshold {threshold:.3f}: the highest whose calibration-part "
        f"sensitivity has a 95% lesion-bootstrap lower bound >= {fit['target']:.2f} "
        f"(there: {fit['sensitivity']:.3f}, lower bound {fit['sensitivity_lower']:.3f})."
    )


def calibration_lines(config: dict, m: Metrics) -> list[str]:
    """Card bullets saying how probabilities, the threshold and the flag were fitted."""
    fit = m.calibration_fit
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
        threshold_line(config["malignant_threshold"], thr),
        f"- Test-time augmentation: {tta_text(config['tta'])} ({tta_origin(m)})"
        f"{second_look_text(config)}.",
        "- 'Not dermoscopic' flag: Mahalanobis distances of the channel means and standard "
        f"deviations of {', '.join(fit.get('ood_layers', ['features']))} from the training "
        "images, each relative to its limit; flagged above the "
        f"{fit['ood_quantile']:.0%} quantile of the calibration part.",
    ]
    fusion = config.get("context_fusion")
    if fusion and not fusion["feed_network"] and not fusion["power"]:
        lines.append(
            "- Patient context (optional age, sex, body site): recorded on the report but not "
            "used: on the lesion-grouped cross-validation of this recipe neither feeding it to "
            "the network nor fusing it late raised the balanced accuracy of the image alone "
            "(README, cross-validation table)."
        )
    elif config.get("metadata_input"):
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
        details = "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in prov.items())
        lines.append(f"- Initial weights: {details}.")
    return lines


def training_sentence(m: Metrics, finalised: str = "") -> str:
    """How the network was trained (or which networks it averages), in one sentence.

    Args:
        m: Its metrics.
        finalised: The finalisation date to name, or ``""``.
    """
    tr = m.training
    when = f" {finalised}" if finalised else ""
    minutes = f"{tr['train_seconds'] / 60:.1f} min"
    if m.members:
        names = ", ".join(f"`{Path(d).name}`" for d in m.members)
        shared = ""
        if any(m.shared_layers):
            counts = "/".join(str(n) for n in m.shared_layers)
            shared = (
                f" Layers a later member computes exactly as the first ({counts}: the same "
                "values on the same inputs, such as ImageNet stages every member kept frozen) "
                "are computed once."
            )
        return (
            f"The average of {len(m.members)} networks ({names}), trained on the same "
            f"lesions: one network whose logits are their mean, averaged and finalised{when} "
            f"on {tr['device']}; {minutes} of their epochs together (each member's own "
            f"command and card say how it was trained).{shared}"
        )
    return (
        f"Trained{when} on {tr['device']} in {minutes} ({tr['epochs_run']} epochs; weights "
        f"of epoch {tr['best_epoch']} kept)."
    )


def card_sections(model_dir: Path) -> dict[str, str]:
    """The model card's sections in reading order, as Markdown: what it is for first, the
    figures next, what was tried, and provenance and file digests last.

    Returns:
        ``{"use", "model", "numbers", "tried", "provenance"}``.
    """
    model_dir = Path(model_dir)
    config = read_model_config(model_dir).to_dict()
    m = read_metrics(model_dir)
    counts = {s: sum(v.values()) for s, v in m.split.items()}
    model = [
        "## The model",
        "",
        f"- Architecture: `{config['architecture']}`, input "
        f"{config.get('input_height') or config['input_size']}x{config['input_size']} RGB, "
        f"{m.model['parameters']:,} parameters, "
        f"{m.model['file_bytes'] / 1e6:.1f} MB.",
        "- " + training_sentence(m, config["trained_on"]),
        f"- Data: HAM10000 (Tschandl et al. 2018, CC BY-NC 4.0), {sum(counts.values())} images "
        f"split by `lesion_id` into train {counts['train']} / validation {counts['val']} / "
        + (f"calibration {counts['calib']} / " if "calib" in counts else "")
        + f"test {counts['test']}, stratified by diagnosis (`split.csv`).",
        *[line for line in calibration_lines(config, m) if "Initial weights" not in line],
        "- Reproduce: "
        + "; then ".join(
            f"`{c}`" for c in reproduce_commands(config["training"], f"models/{model_dir.name}")
        ),
    ]
    numbers = [
        f"## Headline numbers (test split, {m.n_images} images)",
        "",
        markdown(headline_frame(m)),
        "",
    ]
    if m.with_metadata:
        numbers += ["## With and without the patient context (test)", ""]
        numbers += [markdown(context_frame(m)), ""]
    numbers += ["## Against the quality targets (test)", "", markdown(targets_frame(m)), ""]
    numbers += ["## Per class (test)", "", markdown(per_class_frame(m))]
    tried = [
        "## What was tried",
        "Every `train.py` run appends a row to `models/attempts.csv`; validation or "
        "cross-validation decided, the test split was read once per run.",
        "",
        markdown(attempts_frame(model_dir.parent / ATTEMPTS_FILE), digits=4),
    ]
    for cv_dir in find_cv_dirs(model_dir.parent):
        cv = read_json(cv_dir / CV_FILE)
        tried += ["", f"### Cross-validation: {cv_dir.name}", "", cv_summary_text(cv), ""]
        tried.append(markdown(cv_frame(cv)))
    digests = read_integrity(model_dir)
    provenance = ["## Provenance and integrity", ""]
    provenance += [line for line in calibration_lines(config, m) if "Initial weights" in line]
    provenance += [
        f"- `{name}` SHA-256 `{sha}` (`integrity.json`)" for name, sha in digests.items()
    ]
    return {
        "use": "\n".join([INTENDED_USE.rstrip(), *filter(None, [decision_weakness(m)])]),
        "model": "\n".join(model),
        "numbers": "\n".join(numbers),
        "tried": "\n".join(tried),
        "provenance": "\n".join(provenance),
    }


def decision_weakness(m: Metrics) -> str | None:
    """A "known weakness" line: how many test melanomas the suggested diagnosis names,
    beside how many malignant lesions the referral catches (None without both figures).
    """
    mel, op = m.per_class.get("mel"), m.malignant.operating_point
    if mel is None or op.sensitivity is None:
        return None
    return (
        f"- The suggested diagnosis named {mel.sensitivity:.0%} of the test melanomas; the "
        f"referral at its threshold caught {op.sensitivity:.0%} of the malignant lesions. Act "
        "on the referral: the top diagnosis is a second opinion, not a screen."
    )


def render_model_card(model_dir: Path) -> str:
    """Markdown model card built from ``config.json``, ``metrics.json`` and attempts."""
    sections = card_sections(model_dir)
    return f"# Model card: {Path(model_dir).name}\n\n" + "\n\n".join(sections.values()) + "\n"


def write_model_card(model_dir: Path) -> Path:
    """Write ``MODEL_CARD.md`` into the model directory and return its path."""
    path = Path(model_dir) / CARD_FILE
    path.write_text(render_model_card(model_dir), encoding="utf-8")
    return path
