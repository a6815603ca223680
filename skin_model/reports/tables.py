"""The presentation layer: every table the card, the README and the app show, as a
DataFrame built from the files evaluation wrote (``metrics.json``, ``cv.json``,
``ensemble.json``, ``attempts.csv``, the load test), and one Markdown writer.

The card and the README render these frames with :func:`markdown`; the pages pass the
same frames to ``st.dataframe``. No figure is computed here, only read and arranged.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from skin_model import CLASSES, display_name
from skin_model.data.augmentation import EXPOSURE
from skin_model.evaluate.metrics import PAIRED, target_status
from skin_model.evaluate.robustness import CHANGED_COPY_TARGETS, cost_text, largest_costs
from skin_model.model.artifacts import ATTEMPT_COLUMNS
from skin_model.model.metrics_file import Metrics, Scores


def interval_text(m: Scores, key: str) -> str:
    """``"0.571–0.697"`` for a stored bootstrap interval, else ``""``."""
    iv = m.interval(key)
    return f"{iv[0]:.3f}–{iv[1]:.3f}" if iv else ""


def markdown(frame: pd.DataFrame, digits: int = 3) -> str:
    """A frame as a Markdown table: floats to ``digits`` decimals, missing values blank.

    Args:
        frame: The table.
        digits: Decimals of float cells.

    Returns:
        The table's lines joined by newlines (no trailing newline).
    """

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _value(x) -> float | None:
    return None if x is None else float(x)


def headline_frame(m: Metrics) -> pd.DataFrame:
    """The headline test figures, one row per figure."""
    op = m.malignant.operating_point
    mel = m.per_class["mel"]
    mal_cal = m.malignant.calibration
    rows = [
        ("balanced accuracy (mean per-class recall)", m.balanced_accuracy, "balanced_accuracy"),
        ("accuracy", m.accuracy, None),
        ("macro one-vs-rest ROC AUC", m.macro_auc, "macro_auc"),
        ("malignant-vs-benign ROC AUC", m.malignant.auc, "malignant_auc"),
        ("melanoma ROC AUC", mel.auc, None),
        ("melanoma sensitivity of the suggested diagnosis", mel.sensitivity, "mel_sensitivity"),
        (
            f"malignant sensitivity at threshold {op.threshold:.3f}",
            op.sensitivity,
            "malignant_sensitivity",
        ),
        (
            f"malignant specificity at threshold {op.threshold:.3f}",
            op.specificity,
            "malignant_specificity",
        ),
    ]
    if mal_cal:
        rows += [
            ("malignant-risk calibration error (ECE)", mal_cal.ece, "malignant_ece"),
            ("mean malignant risk", mal_cal.mean_risk, None),
            ("observed malignant share", mal_cal.observed_share, None),
        ]
    shown = m.calibration.ece
    rows.append(("top-label calibration error (ECE), probabilities shown", shown, "ece"))
    if m.calibration.ece_raw_outputs is not None:
        rows.append(
            (
                "top-label calibration error (ECE), raw network outputs",
                m.calibration.ece_raw_outputs,
                None,
            )
        )
    c = m.cam_localisation
    if c:
        shown = f"{c.get('method', 'Grad-CAM')} (shown by default)"
        rows += [
            (f"{shown} energy in lesion box ÷ box area share, mean", c["mean_ratio"], None),
            (f"{shown} energy in lesion box ÷ box area share, median", c["median_ratio"], None),
        ]
        if "ceiling_mean_ratio" in c:
            rows.append(("(all energy in the box would give, mean)", c["ceiling_mean_ratio"], None))
        for method, other in (c.get("by_method") or {}).items():
            label = f"{method} (also offered) energy in lesion box ÷ box area share, mean"
            rows.append((label, other["mean_ratio"], None))
    frame = pd.DataFrame(
        [
            {
                "metric (test split)": label,
                "value": _value(v),
                "95% interval": interval_text(m, k) if k else "",
            }
            for label, v, k in rows
        ]
    )
    return pd.concat([frame, ood_frame(m.ood)], ignore_index=True)


def ood_frame(ood: dict) -> pd.DataFrame:
    """Rows of the "not dermoscopic" flag's figures (:attr:`Metrics.ood`)."""
    rows = []
    photos, synth = ood.get("photos"), ood.get("synthetic")
    if synth and "n_non_dermoscopic" not in synth:  # before real photographs were tested
        rows.append(("'not dermoscopic' flag: AUROC, synthetic vs HAM10000", synth["auroc"], ""))
        synth = None
    if photos:
        rows += [
            (
                f"'not dermoscopic' flag: share of {photos['n_non_dermoscopic']} real "
                "photographs flagged",
                photos["non_dermoscopic_flagged"],
                "",
            ),
            ("'not dermoscopic' flag: AUROC, real photographs vs HAM10000", photos["auroc"], ""),
        ]
    if synth:
        rows += [
            (
                f"'not dermoscopic' flag: share of {synth['n_non_dermoscopic']} synthetic "
                "patterns flagged",
                synth["non_dermoscopic_flagged"],
                "",
            ),
            (
                f"'not dermoscopic' flag: share of {synth['n_ham10000']} HAM10000 test "
                "images flagged",
                synth["ham10000_flagged"],
                "",
            ),
        ]
    return pd.DataFrame(rows, columns=["metric (test split)", "value", "95% interval"])


def context_frame(m: Metrics) -> pd.DataFrame:
    """The same test images with and without the patient context, and what the context
    alone predicts (empty for a model that takes no context).
    """
    wm = m.with_metadata
    if not wm:
        return pd.DataFrame()

    def row(name: str, x: Scores) -> dict:
        cal = x.malignant.calibration
        return {
            "test split": name,
            "balanced accuracy": x.balanced_accuracy,
            "95% interval": interval_text(x, "balanced_accuracy"),
            "malignant AUC": _value(x.malignant.auc),
            "melanoma AUC": _value(x.per_class["mel"].auc),
            "melanoma sensitivity": _value(x.per_class["mel"].sensitivity),
            "malignant sensitivity at threshold": _value(x.malignant.operating_point.sensitivity),
            "malignant-risk ECE": _value(cal.ece if cal else None),
        }

    rows = [row("image only", m), row(f"image + age, sex, site ({wm.fusion})", wm)]
    base = m.metadata_only_baseline
    if base:
        rows.append(
            {
                "test split": f"age, sex, site only ({base['model']})",
                "balanced accuracy": base["balanced_accuracy"],
                "malignant AUC": base["malignant_auc"],
                "melanoma AUC": base["mel_auc"],
            }
        )
    return pd.DataFrame(rows)


def targets_frame(m: Metrics) -> pd.DataFrame:
    """Each quality target: goal, achieved value with its interval, met or not."""
    return pd.DataFrame(
        [
            {
                "target": r["label"],
                "goal": f"{r['direction']} {r['goal']:g}",
                "achieved": _value(r["achieved"]),
                "95% interval": (
                    f"{r['interval'][0]:.3f}–{r['interval'][1]:.3f}" if r["interval"] else ""
                ),
                "met": {True: "yes", False: "**no**", None: "n/a"}[r["met"]],
            }
            for r in target_status(m)
        ]
    )


def per_class_frame(m: Scores) -> pd.DataFrame:
    """Per-class test figures."""
    return pd.DataFrame(
        [
            {
                "class": display_name(c),
                "sensitivity": m.per_class[c].sensitivity,
                "specificity": m.per_class[c].specificity,
                "precision": m.per_class[c].precision,
                "F1": m.per_class[c].f1,
                "AUC": _value(m.per_class[c].auc),
                "test images": m.per_class[c].support,
            }
            for c in CLASSES
        ]
    )


VARIANT_TEXT = {
    "image": "last epoch, image only",
    "context": "last epoch, with age/sex/site (early fusion)",
    "ema_image": "weight average, image only",
    "ema_context": "weight average, with age/sex/site (early fusion)",
    "metadata_only": "age/sex/site alone (logistic regression)",
    "image_wb": "last epoch, image only, on white-balance-shifted copies",
    "image_views8": "last epoch, image only, mean of the 8 quarter turns and flips",
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


def cv_frame(cv: dict) -> pd.DataFrame:
    """One row per cross-validation variant: fold mean (and SD) and pooled figures."""
    table = pd.DataFrame(cv["table"])
    rows = []
    for name, part in table.groupby("variant", sort=False):
        by = part.set_index("fold")
        sd = by.loc["sd", "balanced_accuracy"]
        rows.append(
            {
                "variant": variant_text(name, cv),
                "balanced accuracy, mean": by.loc["mean", "balanced_accuracy"],
                "SD over folds": None if pd.isna(sd) else float(sd),
                "pooled": by.loc["pooled", "balanced_accuracy"],
                "malignant AUC": by.loc["mean", "malignant_auc"],
                "melanoma AUC": by.loc["mean", "mel_auc"],
                "melanoma sensitivity": by.loc["mean", "mel_sensitivity"],
                "macro AUC": by.loc["mean", "macro_auc"],
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
        name = {"val": "validation half", "calib": "calibration part", "test": "test"}.get(
            part, part
        )
        for row in block["rows"]:
            rows.append(
                {
                    "part": f"{name} ({block['n_images']})",
                    "model": row["model"],
                    **{label: row[key] for key, label in ENSEMBLE_LABELS.items()},
                    "images/s (network only)": str(speed.get(row["model"], "")),
                }
            )
    return pd.DataFrame(rows)


def _paired(against: dict | None, key: str) -> str:
    """``"+0.007 (-0.012 to +0.026)"`` for a paired difference, ``""`` without one."""
    if not against or key not in against:
        return ""
    diff, (low, high) = against[key]["difference"], against[key]["interval"]
    return f"{diff:+.3f} ({low:+.3f} to {high:+.3f})"


_PAIRED_LABELS = {
    "balanced_accuracy": "balanced accuracy",
    "malignant_auc": "malignant AUC",
    "mel_auc": "melanoma AUC",
}


def _pooled(parts: str, chosen: dict, against: dict | None, base: str, paired) -> dict:
    """The pooled-parts columns of a candidates or pairs row: the four figures, then the
    paired differences from ``base`` for the ``paired`` figures.
    """
    columns = {
        f"{parts}: balanced accuracy": chosen["balanced_accuracy"],
        f"{parts}: malignant AUC": chosen["malignant_auc"],
        f"{parts}: melanoma AUC": chosen["mel_auc"],
        f"{parts}: melanoma sensitivity": chosen["mel_sensitivity"],
    }
    for key in paired:
        label = f"{parts}: {_PAIRED_LABELS[key]} − {base} (95% interval)"
        columns[label] = _paired(against, key)
    return columns


def candidates_frame(result: dict) -> pd.DataFrame:
    """One row per candidate of a ``python -m skin_model candidates`` result: the pooled
    figures that chose, then the test figures its run wrote once.
    """
    parts = " + ".join(result["parts"])
    rows = []
    for row in result["rows"]:
        chosen, test = row["chosen_on"], row["test"]
        rows.append(
            {
                "model": row["model"],
                "changed against the shipped recipe": row["changes"],
                **_pooled(parts, chosen, row.get("against_first"), "first row", PAIRED[:2]),
                "test: balanced accuracy": test["balanced_accuracy"],
                "test: malignant AUC": test["malignant_auc"],
                "test: melanoma AUC": test["mel_auc"],
                "test: melanoma sensitivity": test["mel_sensitivity"],
                "minutes of epochs": row["train_minutes"],
            }
        )
    return pd.DataFrame(rows)


def pairs_frame(result: dict) -> pd.DataFrame:
    """One row per two-network average of a ``python -m skin_model candidates`` result:
    the pooled figures and the difference from the first model alone (no test figures).
    """
    parts = " + ".join(result["parts"])
    rows = []
    for row in result.get("pairs", []):
        chosen, against = row["chosen_on"], row["against_first"]
        rows.append(
            {
                "average of": row["model"],
                **_pooled(parts, chosen, against, "first model alone", PAIRED),
            }
        )
    return pd.DataFrame(rows)


def attempts_frame(path: Path) -> pd.DataFrame:
    """Every recorded training attempt (``attempts.csv``), known columns in order."""
    if not Path(path).is_file():
        return pd.DataFrame(columns=list(ATTEMPT_COLUMNS))
    df = pd.read_csv(path)
    return df[[c for c in ATTEMPT_COLUMNS if c in df.columns]]


def load_frame(rows: list[dict]) -> pd.DataFrame:
    """The load test's rows (``scripts/load_test.py``)."""
    return pd.DataFrame(
        [
            {
                "sessions": r["sessions"],
                "latency p50 (s)": str(r["p50_s"]),
                "p95 (s)": str(r["p95_s"]),
                "correct vs CLI": f"{r['correct']}/{r['sessions']}",
                "cross-session leaks": r["cross_session_leaks"],
                "server alive": r["server_alive"],
                "server peak RSS": f"{r['server_peak_mb']} MB",
            }
            for r in rows
        ]
    )


def recipe_text(settings: dict) -> str:
    """A cross-validation run's recipe in a few words."""
    size = settings["input_size"]
    if settings.get("input_height", 0) not in (0, size):
        size = f"{settings['input_height']}x{size}"  # the images' own aspect
    parts = [f"{settings['architecture']} @{size} px", f"{settings['epochs']} ep"]
    if settings.get("colour_constancy"):
        parts.append(f"Shades of Gray p={settings['colour_constancy']:g}")
        if settings.get("colour_constancy_brightness"):
            parts.append(f"brightness {settings['colour_constancy_brightness']:g}")
    if settings.get("white_balance"):
        parts.append(f"white-balance jitter ±{settings['white_balance']:g}")
    if settings.get("rotation"):
        parts.append(f"rotation ±{settings['rotation']:g}°")
    if settings.get("backbone_lr_scale", 1.0) != 1.0:
        parts.append(f"backbone lr x{settings['backbone_lr_scale']:g}")
    if settings.get("head_warmup_epochs"):
        parts.append(f"head-only warm-up {settings['head_warmup_epochs']} ep")
    if settings.get("learning_rate", 1e-3) != 1e-3:
        parts.append(f"lr {settings['learning_rate']:g}")
    if settings.get("ema_half_life"):
        parts.append(f"weight average {settings['ema_half_life']:g} ep")
    if settings.get("robust"):
        parts.append(f"capture changes p={settings['robust']:g}")
        if settings.get("jpeg_as_file"):
            parts.append("JPEG as a saved file")
        if settings.get("exposure", EXPOSURE) != EXPOSURE:
            parts.append(f"exposure ±{settings['exposure']:g}")
    if settings.get("resaved_files"):
        parts.append(f"files saved again on their grid p={settings['resaved_files']:g}")
    if settings.get("freeze_stages"):
        views = settings.get("cached_views") or settings["epochs"]
        parts.append(f"stem + {settings['freeze_stages']} stages frozen, {views} cached views")
    if settings.get("teachers"):
        n = len([t for t in settings["teachers"].split(",") if t.strip()])
        parts.append(f"distilled from {n} teacher(s), weight {settings['distill_weight']:g}")
        if settings.get("clean_teacher"):
            parts.append("teachers shown the views without the capture changes")
    if settings.get("mixup"):
        parts.append(f"mixup of cached views, alpha {settings['mixup']:g}")
    if settings.get("cutmix"):
        parts.append(f"CutMix of cached views, alpha {settings['cutmix']:g}")
    if settings.get("stochastic_depth"):
        parts.append(f"stochastic depth {settings['stochastic_depth']:g}")
    return ", ".join(parts)


def worst_change(changed: dict | None) -> dict[str, str | None]:
    """The largest cost over the changed copies of a fold (``cv.json``'s
    ``changed_copies``): balanced accuracy, malignant AUC and referral flips, each with the
    change that caused it.
    """
    keys = {
        "changed copies: worst balanced-accuracy loss": "balanced_accuracy_cost",
        "worst malignant-AUC loss": "auc_cost",
        "worst share of referrals changed": "referrals_changed",
    }
    if not changed:
        return dict.fromkeys(keys)
    out = {}
    for column, key in keys.items():
        name, c = max(changed["changes"].items(), key=lambda kv: kv[1][key])
        value = f"{c[key]:.1%}" if key == "referrals_changed" else f"{c[key]:.3f}"
        out[column] = f"{value} ({name})"
    return out


def levers_frame(runs: list[tuple[str, dict]]) -> pd.DataFrame:
    """Every recipe lever on the same held-out fold 0: one row per cross-validation run.

    Args:
        runs: ``(directory name, cv.json)`` pairs.

    Returns:
        Image-only fold-0 figures, the same on white-balance-shifted copies and averaged
        over the 8 quarter turns and flips where scored,
        late fusion of the patient context (power chosen on that fold: optimistic), and the
        training minutes of the fold.
    """
    rows = []
    for name, cv in runs:
        by = {(r["variant"], r["fold"]): r for r in cv["table"]}
        image = by.get(("image", "0"))
        if image is None:
            continue
        shifted = by.get(("image_wb", "0"))
        fused = by.get(("late_fusion_image", "0"))
        views = by.get(("image_views8", "0")) or {}
        rows.append(
            {
                "run": name,
                "recipe": recipe_text(cv["settings"]),
                "balanced accuracy": image["balanced_accuracy"],
                "on white-balance-shifted copies": shifted["balanced_accuracy"]
                if shifted
                else None,
                "malignant AUC": image["malignant_auc"],
                "melanoma AUC": image["mel_auc"],
                "melanoma sensitivity": image["mel_sensitivity"],
                "macro AUC": image["macro_auc"],
                "8 views: balanced accuracy": views.get("balanced_accuracy"),
                "8 views: malignant AUC": views.get("malignant_auc"),
                "with age/sex/site, late fusion": fused["balanced_accuracy"] if fused else None,
                **worst_change(cv.get("changed_copies", {}).get("0")),
                "fold 0 training min": f"{cv['train_seconds'][0] / 60:.0f}",
            }
        )
    return pd.DataFrame(rows)


def _value_text(value) -> str:
    """A setting's value as ``train.py`` takes it; paths in a comma list by folder name."""
    if isinstance(value, str) and "/" in value:
        return ",".join(Path(p).name for p in value.split(","))
    return f"{value:g}" if isinstance(value, float) else str(value)


def lever_text(settings: dict, base: dict) -> str:
    """What a run's recorded settings change from those of the run whose command it took:
    ``"--cutmix 1 (was 0), --mixup 0 (was 0.2)"``.
    """
    changed = sorted(k for k in settings if base.get(k) != settings[k])
    return ", ".join(
        f"--{k.replace('_', '-')} {_value_text(settings[k])} "
        f"(was {_value_text(base[k]) if k in base else 'not set'})"
        for k in changed
    )


def _minutes(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def screen_passes(pair: dict, shipped: dict, bar: dict) -> bool:
    """Whether a candidate's pair clears a screen's ``bar`` against the shipped pair."""
    gain = pair["balanced_accuracy"] - shipped["balanced_accuracy"]
    auc_loss = shipped["malignant_auc"] - pair["malignant_auc"]
    return gain >= bar["balanced_accuracy_gain"] - 1e-9 and auc_loss <= bar["malignant_auc_loss"]


def screens_frame(results: list[dict]) -> pd.DataFrame:
    """Every partner screen (``scripts/screen_mixed_pair.py``): one row per candidate, its
    pair against the shipped pair on the same images at the screen's deciding views.

    Args:
        results: The screens' files as read, each with its ``screen`` record.

    Returns:
        The change, the candidate alone at each view count, both pairs and the verdict.
    """
    rows = []
    for result in results:
        s = result["screen"]
        first, candidate, v = s["first"], s["candidate"], s["decided_at_views"]
        members = s["members"]
        shipped = result[f"{first}{s['replaced']}@{v}"]
        pair = result[f"{first}{candidate}@{v}"]
        alone = sorted(
            (int(k.split("@")[1]), r) for k, r in result.items() if k.startswith(f"{candidate}@")
        )
        rows.append(
            {
                "screen (rule file)": f"`{s['rule']}`",
                "what the candidate changed": lever_text(
                    members[candidate]["settings"], members[s["recipe_of"]]["settings"]
                ),
                "in the place of": Path(members[s["replaced"]]["dir"]).name,
                "candidate alone: balanced accuracy at "
                + " / ".join(str(n) for n, _ in alone)
                + " views": " / ".join(f"{r['balanced_accuracy']:.3f}" for _, r in alone),
                f"pair with it: balanced accuracy ({v} views)": pair["balanced_accuracy"],
                "shipped pair: balanced accuracy": shipped["balanced_accuracy"],
                "pair with it: malignant AUC": pair["malignant_auc"],
                "shipped pair: malignant AUC": shipped["malignant_auc"],
                "pair with it: melanoma AUC": pair["mel_auc"],
                "pair with it: melanoma sensitivity": pair["mel_sensitivity"],
                "candidate's training min (recorded)": _minutes(
                    members[candidate]["train_minutes"]
                ),
                "passes": screen_passes(pair, shipped, s["bar"]),
            }
        )
    return pd.DataFrame(rows)


def robustness_summary_frame(results: list[tuple[str, dict]]) -> pd.DataFrame:
    """One row per changed-copies file: the plain figures and the largest cost of any change,
    with the change that caused it, against :data:`CHANGED_COPY_TARGETS`.

    Args:
        results: ``(file name, robustness result)`` pairs.
    """
    rows = []
    for name, r in results:
        worst = largest_costs(r)
        row = {
            "file": f"`{name}`",
            "model": f"{Path(r['model']).name} ({r['split']}, {r['n_images']} images)",
            "balanced accuracy": r["plain"]["balanced_accuracy"],
            "malignant AUC": r["plain"]["malignant_auc"],
        }
        for key, label, _goal in CHANGED_COPY_TARGETS:
            w = worst[key]
            row[f"largest {label}"] = f"{cost_text(key, w['value'])} ({w['change']})"
        row["within targets"] = "yes" if all(w["met"] for w in worst.values()) else "**no**"
        rows.append(row)
    return pd.DataFrame(rows)


def robustness_frame(results: list[dict]) -> pd.DataFrame:
    """Changed copies of held-out images, one row per model and change: the plain figures,
    what each change costs and how many referral decisions it flips
    (``python -m skin_model robustness``).
    """
    rows = []
    for r in results:
        model = f"{Path(r['model']).name} ({r['split']}, {r['n_images']} images)"
        plain = r["plain"]
        rows.append(
            {
                "model": model,
                "copy": "plain (as saved)",
                "balanced accuracy": plain["balanced_accuracy"],
                "cost": None,
                "malignant AUC": plain["malignant_auc"],
                "AUC cost": None,
                "referrals changed": "",
            }
        )
        for name, c in r["changes"].items():
            rows.append(
                {
                    "model": model,
                    "copy": name,
                    "balanced accuracy": c["balanced_accuracy"],
                    "cost": c["balanced_accuracy_cost"],
                    "malignant AUC": c["malignant_auc"],
                    "AUC cost": c["auc_cost"],
                    "referrals changed": cost_text("referrals_changed", c["referrals_changed"]),
                }
            )
    return pd.DataFrame(rows)
