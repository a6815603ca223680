"""Metrics, calibration and the malignant operating point (scikit-learn based).

Everything here takes arrays and returns plain numbers or JSON-ready dicts, so it is
tested against hand-computed values without a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn import metrics as skm

from skin_model import CLASSES, MALIGNANT

MALIGNANT_IDX = [CLASSES.index(c) for c in MALIGNANT]
EPS = 1e-7


def malignant_probability(probs: np.ndarray) -> np.ndarray:
    """Sum of the malignant classes' probabilities, per row."""
    return probs[:, MALIGNANT_IDX].sum(axis=1)


def is_malignant(y_idx: np.ndarray) -> np.ndarray:
    """1 where the class index is malignant (mel, bcc, akiec), else 0."""
    return np.isin(y_idx, MALIGNANT_IDX).astype(int)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale softmax outputs as if their logits were divided by ``temperature``."""
    logits = np.log(np.clip(probs, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(probs: np.ndarray, y_idx: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood on held-out data (validation)."""

    def nll(t: float) -> float:
        p = apply_temperature(probs, t)[np.arange(len(y_idx)), y_idx]
        return float(-np.log(np.clip(p, EPS, 1.0)).mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


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
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        c = float(conf[mask].mean()) if count else None
        a = float(correct[mask].mean()) if count else None
        if count:
            ece += count / len(conf) * abs(a - c)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "confidence": c,
                "accuracy": a,
                "count": count,
            }
        )
    return {"ece": float(ece), "bins": bins}


def choose_threshold(y_malignant: np.ndarray, p_malignant: np.ndarray, sensitivity: float) -> float:
    """Highest threshold whose malignant sensitivity on these data is at least ``sensitivity``.

    Args:
        y_malignant: 1 for malignant truth, else 0.
        p_malignant: Malignant probabilities.
        sensitivity: Required share of malignant cases at or above the threshold.

    Returns:
        The threshold (a case is flagged when its probability is >= it).
    """
    scores = np.sort(p_malignant[y_malignant == 1])[::-1]
    if len(scores) == 0:
        return 0.5
    k = int(np.ceil(sensitivity * len(scores)))
    return float(scores[max(k, 1) - 1])


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


def compute_metrics(
    y_idx: np.ndarray, probs: np.ndarray, threshold: float, classes: Sequence[str] = CLASSES
) -> dict:
    """All reported metrics for one set of predictions.

    Args:
        y_idx: (N,) true class indices.
        probs: (N, K) calibrated probabilities.
        threshold: Malignant operating threshold on the summed malignant probability.
        classes: Class codes in output order.

    Returns:
        A JSON-ready dict: balanced accuracy, accuracy, macro AUC, per-class figures with
        ROC points, confusion matrix, calibration, and the malignant-vs-benign view.
    """
    k = len(classes)
    pred = probs.argmax(axis=1)
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
    present = [i for i in labels if support[i] > 0]
    y_mal, p_mal = is_malignant(y_idx), malignant_probability(probs)
    mal_both = 0 < y_mal.sum() < len(y_mal)
    return {
        "n_images": len(y_idx),
        "balanced_accuracy": float(np.mean(rec[present])),
        "accuracy": float(skm.accuracy_score(y_idx, pred)),
        "macro_auc": float(np.mean(aucs)) if aucs else None,
        "log_loss": float(skm.log_loss(y_idx, np.clip(probs, EPS, 1), labels=labels)),
        "per_class": per_class,
        "confusion_matrix": {"labels": list(classes), "counts": cm.tolist()},
        "calibration": calibration_bins(probs, y_idx),
        "malignant": {
            "classes": list(MALIGNANT),
            "auc": float(skm.roc_auc_score(y_mal, p_mal)) if mal_both else None,
            "prevalence": float(y_mal.mean()),
            "operating_point": binary_operating_point(y_mal, p_mal, threshold),
            "roc": _roc_points(y_mal, p_mal) if mal_both else None,
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


# (key, label, goal, direction): the quality goals the shipped model is measured against.
QUALITY_TARGETS = (
    ("balanced_accuracy", "balanced accuracy", 0.80, ">="),
    ("malignant_auc", "malignant-vs-benign ROC AUC", 0.95, ">="),
    ("mel_auc", "melanoma ROC AUC", 0.92, ">="),
    ("macro_auc", "macro ROC AUC", 0.95, ">="),
    ("malignant_sensitivity", "malignant sensitivity at the shipped threshold", 0.90, ">="),
    ("ece", "expected calibration error (after temperature)", 0.03, "<="),
    ("cam_ratio", "Grad-CAM energy in lesion box ÷ box area share", 2.0, ">="),
)


def _interval_stats(y_idx: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    """The statistics that get bootstrap intervals, for one (re)sample."""
    recalls = [np.mean(probs[y_idx == i].argmax(axis=1) == i) for i in np.unique(y_idx).tolist()]
    y_mal = is_malignant(y_idx)
    mel = (y_idx == CLASSES.index("mel")).astype(int)
    aucs = [
        skm.roc_auc_score((y_idx == i).astype(int), probs[:, i])
        for i in range(probs.shape[1])
        if 0 < (y_idx == i).sum() < len(y_idx)
    ]
    p_mal = malignant_probability(probs)
    return {
        "balanced_accuracy": float(np.mean(recalls)),
        "malignant_auc": float(skm.roc_auc_score(y_mal, p_mal)),
        "malignant_sensitivity": float(np.mean(p_mal[y_mal == 1] >= threshold)),
        "malignant_specificity": float(np.mean(p_mal[y_mal == 0] < threshold)),
        "ece": calibration_bins(probs, y_idx)["ece"],
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

    Returns:
        ``{statistic: [low, high]}`` for balanced accuracy, malignant, melanoma and macro
        AUC, malignant sensitivity and specificity at ``threshold``, and ECE.
    """
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(codes))]
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(codes), len(codes))])
        y = y_idx[idx]
        if len(np.unique(is_malignant(y))) < 2 or not (y == CLASSES.index("mel")).any():
            continue
        for key, value in _interval_stats(y, probs[idx], threshold).items():
            samples.setdefault(key, []).append(value)
    tail = (1 - level) / 2 * 100
    return {k: np.percentile(v, [tail, 100 - tail]).round(4).tolist() for k, v in samples.items()}


def headline_values(metrics: dict) -> dict[str, float | None]:
    """The figures :data:`QUALITY_TARGETS` refer to, read from a ``metrics.json`` dict."""
    cam = metrics.get("cam_localisation") or {}
    return {
        "balanced_accuracy": metrics["balanced_accuracy"],
        "malignant_auc": metrics["malignant"]["auc"],
        "mel_auc": metrics["per_class"]["mel"]["auc"],
        "macro_auc": metrics["macro_auc"],
        "malignant_sensitivity": metrics["malignant"]["operating_point"]["sensitivity"],
        "ece": metrics["calibration"]["ece"],
        "cam_ratio": cam.get("mean_ratio"),
    }


def target_status(metrics: dict) -> list[dict]:
    """Each quality target with the achieved value, its interval (when known) and whether
    it is met.

    Args:
        metrics: A ``metrics.json`` dict (``intervals`` optional).

    Returns:
        Rows ``{"key", "label", "goal", "direction", "achieved", "interval", "met"}``.
    """
    values = headline_values(metrics)
    intervals = metrics.get("intervals") or {}
    rows = []
    for key, label, goal, direction in QUALITY_TARGETS:
        value = values[key]
        met = None if value is None else (value >= goal if direction == ">=" else value <= goal)
        rows.append(
            {
                "key": key,
                "label": label,
                "goal": goal,
                "direction": direction,
                "achieved": value,
                "interval": intervals.get(key),
                "met": met,
            }
        )
    return rows
