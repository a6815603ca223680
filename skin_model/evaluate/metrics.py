"""Metric maths (scikit-learn based): per-class and balanced figures, ROC AUCs, top-label
calibration bins, the malignant operating point, lesion-bootstrap intervals and the
quality targets.

Everything here takes arrays and returns plain numbers or JSON-ready dicts, so it is
tested against hand-computed values without a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn import metrics as skm

from skin_model import CLASSES, MALIGNANT
from skin_model.model.calibration import (
    binary_calibration,
    is_malignant,
    lesion_resample_weights,
    malignant_probability,
    reliability,
)
from skin_model.model.metrics_file import Metrics

EPS = 1e-7


def calibration_bins(probs: np.ndarray, y_idx: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error (top-label) and reliability-diagram bins.

    Args:
        probs: (N, K) probabilities.
        y_idx: (N,) true class indices.
        n_bins: Equal-width confidence bins over [0, 1].

    Returns:
        ``{"ece": float, "bins": [{"lower", "upper", "confidence", "accuracy", "count"}]}``.
    """
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_idx).astype(float)
    ece, bins = reliability(conf, correct, n_bins, ("confidence", "accuracy"))
    return {"ece": float(ece), "bins": bins}


def _roc_points(y: np.ndarray, score: np.ndarray, max_points: int = 101) -> dict:
    """ROC curve thinned to at most ``max_points`` points (fpr, tpr, thresholds)."""
    fpr, tpr, thr = skm.roc_curve(y, score, drop_intermediate=True)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    thr = np.minimum(thr, 1.0)
    return {
        "fpr": fpr.round(5).tolist(),
        "tpr": tpr.round(5).tolist(),
        "thresholds": thr.round(6).tolist(),
    }


def binary_operating_point(y: np.ndarray, score: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV and referral rate at ``threshold``."""
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    div = lambda a, b: float(a / b) if b else None
    return {
        "threshold": float(threshold),
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": div(tp, tp + fp),
        "npv": div(tn, tn + fn),
        "referral_rate": div(tp + fp, len(y)),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def _clip_rows(probs: np.ndarray) -> np.ndarray:
    """Probabilities kept off 0 (by :data:`EPS`) whose rows still sum to one."""
    clipped = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1)
    return clipped / clipped.sum(axis=1, keepdims=True)


def compute_metrics(
    y_idx: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    classes: Sequence[str] = CLASSES,
    decisions: np.ndarray | None = None,
) -> dict:
    """All reported metrics for one set of predictions.

    Args:
        y_idx: (N,) true class indices.
        probs: (N, K) calibrated probabilities.
        threshold: Malignant operating threshold on the summed malignant probability.
        classes: Class codes in output order.
        decisions: (N,) decided class indices (default: argmax of ``probs``).

    Returns:
        A JSON-ready dict: balanced accuracy, accuracy, macro AUC, per-class figures with
        ROC points, confusion matrix, calibration, and the malignant-vs-benign view.
    """
    k = len(classes)
    pred = probs.argmax(axis=1) if decisions is None else np.asarray(decisions)
    labels = list(range(k))
    cm = skm.confusion_matrix(y_idx, pred, labels=labels)
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        y_idx, pred, labels=labels, zero_division=0
    )
    per_class, aucs = {}, []
    for i, c in enumerate(classes):
        y_bin = (y_idx == i).astype(int)
        tn = cm.sum() - cm[i].sum() - cm[:, i].sum() + cm[i, i]
        fp = cm[:, i].sum() - cm[i, i]
        both = 0 < y_bin.sum() < len(y_bin)
        auc = float(skm.roc_auc_score(y_bin, probs[:, i])) if both else None
        if auc is not None:
            aucs.append(auc)
        per_class[c] = {
            "precision": float(prec[i]),
            "sensitivity": float(rec[i]),
            "specificity": float(tn / (tn + fp)) if tn + fp else None,
            "f1": float(f1[i]),
            "auc": auc,
            "support": int(support[i]),
            "roc": _roc_points(y_bin, probs[:, i]) if both else None,
        }
    y_mal, p_mal = is_malignant(y_idx), malignant_probability(probs)
    mal_both = 0 < y_mal.sum() < len(y_mal)
    return {
        "n_images": len(y_idx),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_idx, pred)),
        "accuracy": float(skm.accuracy_score(y_idx, pred)),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "log_loss": float(skm.log_loss(y_idx, _clip_rows(probs), labels=labels)),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(classes), "counts": cm.tolist()},
        "calibration": calibration_bins(probs, y_idx),
        "malignant": {
            "classes": list(MALIGNANT),
            "auc": float(skm.roc_auc_score(y_mal, p_mal)) if mal_both else None,
            "prevalence": float(y_mal.mean()),
            "operating_point": binary_operating_point(y_mal, p_mal, threshold),
            "roc": _roc_points(y_mal, p_mal) if mal_both else None,
            "calibration": binary_calibration(p_mal, y_mal),
        },
    }


def operating_point_from_roc(roc: dict, prevalence: float, threshold: float) -> dict:
    """Sensitivity, specificity and referrals per 1,000 at a threshold, from stored ROC points.

    Uses the stored point with the smallest threshold at or above ``threshold`` (the
    curve is stepwise between stored points), so no predictions are recomputed.

    Args:
        roc: ``{"fpr", "tpr", "thresholds"}`` as written in ``metrics.json``.
        prevalence: Share of malignant cases the referral count assumes.
        threshold: Malignant-probability threshold.

    Returns:
        ``{"threshold", "sensitivity", "specificity", "referred_per_1000",
        "missed_per_1000"}``.
    """
    thr = np.asarray(roc["thresholds"], dtype=float)
    fpr, tpr = np.asarray(roc["fpr"], dtype=float), np.asarray(roc["tpr"], dtype=float)
    at_or_above = np.where(thr >= threshold)[0]
    i = int(at_or_above[-1]) if len(at_or_above) else 0
    sens, spec = float(tpr[i]), float(1.0 - fpr[i])
    referred = 1000.0 * (prevalence * sens + (1.0 - prevalence) * (1.0 - spec))
    return {
        "threshold": float(threshold),
        "sensitivity": sens,
        "specificity": spec,
        "referred_per_1000": referred,
        "missed_per_1000": 1000.0 * prevalence * (1 - sens),
    }


# (key, label, goal, direction): the quality goals the shipped model is measured against
# (the latest model-quality issue's targets; test split). The changed-copy targets are
# :data:`skin_model.evaluate.robustness.CHANGED_COPY_TARGETS`.
QUALITY_TARGETS = (
    ("balanced_accuracy", "balanced accuracy", 0.75, ">="),
    ("malignant_auc", "malignant-vs-benign ROC AUC", 0.93, ">="),
    ("mel_auc", "melanoma ROC AUC", 0.92, ">="),
    ("mel_sensitivity", "melanoma sensitivity (suggested diagnosis)", 0.65, ">="),
    ("context_gain", "balanced accuracy with patient context minus without", 0.0, ">="),
    ("white_balance_cost", "balanced accuracy lost to a few % of white-balance shift", 0.03, "<="),
    ("malignant_sensitivity", "malignant sensitivity at the shipped threshold", 0.90, ">="),
    ("malignant_ece", "malignant-risk calibration error (ECE)", 0.05, "<="),
    ("ood_photos_flagged", "real non-dermoscopic photos flagged", 0.95, ">="),
    ("ood_ham_flagged", "HAM10000 test images flagged as not dermoscopic", 0.02, "<="),
    ("cam_ratio", "heatmap energy in lesion box ÷ box area share (method shown)", 2.0, ">="),
)


def _interval_stats(
    y_idx: np.ndarray, probs: np.ndarray, threshold: float, pred: np.ndarray
) -> dict[str, float]:
    """The statistics that get bootstrap intervals, for one (re)sample."""
    y_mal = is_malignant(y_idx)
    mel = (y_idx == CLASSES.index("mel")).astype(int)
    aucs = [
        skm.roc_auc_score((y_idx == i).astype(int), probs[:, i])
        for i in range(probs.shape[1])
        if 0 < (y_idx == i).sum() < len(y_idx)
    ]
    p_mal = malignant_probability(probs)
    return {
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_idx, pred)),
        "malignant_auc": float(skm.roc_auc_score(y_mal, p_mal)),
        "malignant_sensitivity": float(np.mean(p_mal[y_mal == 1] >= threshold)),
        "malignant_specificity": float(np.mean(p_mal[y_mal == 0] < threshold)),
        "ece": calibration_bins(probs, y_idx)["ece"],
        "malignant_ece": binary_calibration(p_mal, y_mal)["ece"],
        "malignant_mean_risk": float(p_mal.mean()),
        "mel_sensitivity": float(np.mean(pred[mel == 1] == CLASSES.index("mel"))),
        "mel_auc": float(skm.roc_auc_score(mel, probs[:, CLASSES.index("mel")])),
        "macro_auc": float(np.mean(aucs)),
    }


def bootstrap_intervals(
    y_idx: np.ndarray,
    probs: np.ndarray,
    groups: Sequence[str],
    threshold: float,
    n_boot: int = 500,
    level: float = 0.95,
    seed: int = 0,
    decisions: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals, resampling whole lesions (images of one lesion are
    correlated, so resampling images would give intervals that are too narrow).

    Args:
        y_idx: (N,) true class indices.
        probs: (N, K) probabilities.
        groups: (N,) lesion id of each image.
        threshold: Malignant operating threshold (for sensitivity and specificity).
        n_boot: Resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling.
        decisions: (N,) decided class indices (default: argmax of ``probs``).

    Returns:
        ``{statistic: [low, high]}`` for balanced accuracy, malignant, melanoma and macro
        AUC, malignant sensitivity and specificity at ``threshold``, melanoma
        sensitivity, top-label ECE, malignant-risk ECE and mean malignant risk.
    """
    pred = probs.argmax(axis=1) if decisions is None else np.asarray(decisions)
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(codes))]
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(codes), len(codes))])
        y = y_idx[idx]
        if len(np.unique(is_malignant(y))) < 2 or not (y == CLASSES.index("mel")).any():
            continue
        for key, value in _interval_stats(y, probs[idx], threshold, pred[idx]).items():
            samples.setdefault(key, []).append(value)
    tail = (1 - level) / 2 * 100
    return {k: np.percentile(v, [tail, 100 - tail]).round(4).tolist() for k, v in samples.items()}


PAIRED = ("balanced_accuracy", "malignant_auc", "mel_auc")
"""The figures :func:`paired_differences` compares two models on."""


def _weighted_paired(
    y_idx: np.ndarray, probs: np.ndarray, pred: np.ndarray, weights: np.ndarray
) -> dict[str, float]:
    """:data:`PAIRED` figures of one model under per-image resample ``weights``."""
    per_class = [
        np.sum(weights * (y_idx == c) * (pred == c)) / np.sum(weights * (y_idx == c))
        for c in np.unique(y_idx[weights > 0])
    ]
    mel, risk = CLASSES.index("mel"), malignant_probability(probs)
    return {
        "balanced_accuracy": float(np.mean(per_class)),
        "malignant_auc": float(skm.roc_auc_score(is_malignant(y_idx), risk, sample_weight=weights)),
        "mel_auc": float(skm.roc_auc_score(y_idx == mel, probs[:, mel], sample_weight=weights)),
    }


def paired_differences(
    y_idx: np.ndarray,
    first: tuple[np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray],
    groups: Sequence[str],
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """How much ``second`` scores above ``first`` on the same images, with a paired
    lesion-bootstrap interval (both models see every resample, so the noise they share
    cancels: the interval says whether a difference is larger than the images' luck).

    Args:
        y_idx: (N,) true class indices.
        first: ``(probs, decisions)`` of the reference model: (N, K) and (N,).
        second: ``(probs, decisions)`` of the model compared with it.
        groups: (N,) lesion id of each image (whole lesions are resampled).
        n_boot: Resamples.
        level: Coverage of the interval.
        seed: Seed of the resampling.

    Returns:
        ``{figure: {"difference": second - first, "interval": [low, high],
        "share_above": share of resamples where second scores higher}}`` for
        :data:`PAIRED`.
    """
    y_idx = np.asarray(y_idx)
    ones = np.ones(len(y_idx))
    a, b = (_weighted_paired(y_idx, p, np.asarray(d), ones) for p, d in (first, second))
    samples: dict[str, list[float]] = {k: [] for k in PAIRED}
    mal, mel = is_malignant(y_idx), y_idx == CLASSES.index("mel")
    for w in lesion_resample_weights(groups, n_boot, seed):
        if not (0 < np.sum(w * mal) < np.sum(w) and np.sum(w * mel) > 0):
            continue
        wa, wb = (_weighted_paired(y_idx, p, np.asarray(d), w) for p, d in (first, second))
        for k in PAIRED:
            samples[k].append(wb[k] - wa[k])
    tail = (1 - level) / 2 * 100
    return {
        k: {
            "difference": round(b[k] - a[k], 4),
            "interval": np.percentile(samples[k], [tail, 100 - tail]).round(4).tolist(),
            "share_above": round(float(np.mean(np.asarray(samples[k]) > 0)), 3),
        }
        for k in PAIRED
    }


HEADLINES = ("balanced_accuracy", "malignant_auc", "mel_auc", "mel_sensitivity", "macro_auc")
"""The threshold-free figures that compare models (cross-validation, ensembles)."""


def headline_values(metrics: Metrics | dict) -> dict[str, float | None]:
    """The figures :data:`QUALITY_TARGETS` refer to.

    Args:
        metrics: Typed metrics, or an evaluation's dict (as :func:`compute_metrics` makes it).
    """
    m = metrics if isinstance(metrics, Metrics) else Metrics.from_dict(metrics)
    mal_cal = m.malignant.calibration
    photos = m.ood.get("photos") or {}
    gap = (
        abs(mal_cal.mean_risk - mal_cal.observed_share)
        if mal_cal and mal_cal.mean_risk is not None and mal_cal.observed_share is not None
        else None
    )
    mel = m.per_class["mel"]
    return {
        "balanced_accuracy": m.balanced_accuracy,
        "malignant_auc": m.malignant.auc,
        "mel_auc": mel.auc,
        "mel_sensitivity": mel.sensitivity,
        "macro_auc": m.macro_auc,
        "malignant_sensitivity": m.malignant.operating_point.sensitivity,
        "malignant_ece": mal_cal.ece if mal_cal else None,
        "malignant_mean_gap": gap,
        "ece": m.calibration.ece,
        "ood_photos_flagged": photos.get("non_dermoscopic_flagged"),
        "ood_ham_flagged": photos.get("ham10000_flagged"),
        "cam_ratio": m.cam_localisation.get("mean_ratio"),
        "context_gain": (
            m.with_metadata.balanced_accuracy - m.balanced_accuracy if m.with_metadata else None
        ),
        "white_balance_cost": m.robustness.get("white_balance_cost"),
    }


def risk_tiers(risk: np.ndarray, y_idx: np.ndarray, threshold: float, high: float) -> list[dict]:
    """How malignant lesions and benign ones fall into the risk tiers (training-scale risk):
    ``low`` below ``threshold``, ``raised`` up to ``high``, ``high`` above.

    The share of malignant lesions in a tier at any prevalence ``p`` follows from the two
    rates: ``p * a / (p * a + (1 - p) * b)``.

    Returns:
        ``[{"key", "lower", "upper", "n", "n_malignant", "rate_malignant" (a),
        "rate_benign" (b), "share_malignant" (at this data's prevalence)}]``.
    """
    risk, mal = np.asarray(risk, dtype=float), is_malignant(np.asarray(y_idx)).astype(bool)
    high = max(high, threshold)
    bounds = {"low": (0.0, threshold), "raised": (threshold, high), "high": (high, 1.0 + 1e-9)}
    out = []
    for key, (lo, hi) in bounds.items():
        inside = (risk >= lo) & (risk < hi)
        n, n_mal = int(inside.sum()), int((inside & mal).sum())
        out.append(
            {
                "key": key,
                "lower": float(lo),
                "upper": float(min(hi, 1.0)),
                "n": n,
                "n_malignant": n_mal,
                "rate_malignant": float(n_mal / max(mal.sum(), 1)),
                "rate_benign": float((n - n_mal) / max((~mal).sum(), 1)),
                "share_malignant": float(n_mal / n) if n else None,
            }
        )
    return out


def lesion_level(
    outputs: np.ndarray, y_idx: np.ndarray, lesions: np.ndarray, decide
) -> dict | None:
    """Balanced accuracy on the images of multi-image lesions, per image and with each
    image given its lesion's result (``decide`` of the mean of the lesion's outputs).

    Args:
        outputs: (N, K) balanced-prior outputs per image.
        y_idx: (N,) true class indices.
        lesions: (N,) lesion ids.
        decide: Maps (M, K) outputs to (M,) decided class indices.

    Returns:
        ``{"n_images", "n_lesions", "per_image", "lesion_mean"}``, or None without
        multi-image lesions.
    """
    lesions = np.asarray(lesions)
    codes, inverse, counts = np.unique(lesions, return_inverse=True, return_counts=True)
    multi = counts[inverse] > 1
    if not multi.any():
        return None
    sums = np.zeros((len(codes), outputs.shape[1]))
    np.add.at(sums, inverse, outputs)
    pooled = (sums / counts[:, None])[inverse]
    per_image = decide(outputs[multi])
    per_lesion = decide(pooled[multi])
    y = np.asarray(y_idx)[multi]
    return {
        "n_images": int(multi.sum()),
        "n_lesions": int((counts > 1).sum()),
        "per_image": float(skm.balanced_accuracy_score(y, per_image)),
        "lesion_mean": float(skm.balanced_accuracy_score(y, per_lesion)),
        "combination": "mean of the lesion's images' balanced-prior outputs, then the balanced "
        "rule; every image of the lesion gets the lesion's result",
    }


def target_status(metrics: Metrics | dict) -> list[dict]:
    """Each quality target with the achieved value, its interval (when known) and whether
    it is met.

    Args:
        metrics: Typed metrics, or an evaluation's dict (``intervals`` optional).

    Returns:
        Rows ``{"key", "label", "goal", "direction", "achieved", "interval", "met"}``.
    """
    m = metrics if isinstance(metrics, Metrics) else Metrics.from_dict(metrics)
    values = headline_values(m)
    rows = []
    for key, label, goal, direction in QUALITY_TARGETS:
        value = values[key]
        met = None if value is None else (value >= goal if direction == ">=" else value <= goal)
        interval = m.interval(key)
        rows.append(
            {
                "key": key,
                "label": label,
                "goal": goal,
                "direction": direction,
                "achieved": value,
                "interval": list(interval) if interval else None,
                "met": met,
            }
        )
    return rows
