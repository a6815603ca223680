"""The maths that turns the network's outputs into numbers a clinician can read: class
priors, late fusion of the patient context, temperature, the malignant risk and its
prevalence adjustment, the referral threshold and reliability figures. The object that
holds the fitted values and applies them is :class:`skin_model.model.posthoc.PostHoc`; the
"not dermoscopic" detector is :mod:`skin_model.model.ood`.

The shipped model is trained with a logit-adjusted loss, so its softmax is the class
posterior under a *uniform* prior. Two numbers follow from it:

- the **decision** (suggested diagnosis): the argmax of that output, i.e. the balanced
  rule that maximises mean per-class recall (balanced accuracy);
- the **probabilities**: the output re-weighted by the training class frequencies
  (Bayes' rule, prior shift), so they estimate how often a case is each class at
  HAM10000's own frequencies. The malignant risk is their sum over mel, bcc and akiec.

Everything here takes arrays and returns arrays or JSON-ready dicts (no model).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from skin_model import CLASSES, MALIGNANT

MALIGNANT_IDX = [CLASSES.index(c) for c in MALIGNANT]
EPS = 1e-7


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """Divide each row by its sum."""
    return x / x.sum(axis=1, keepdims=True)


def prior_shift(probs: np.ndarray, prior_from: Sequence[float], prior_to: Sequence[float]):
    """Re-weight class posteriors from one class prior to another (Bayes' rule).

    Args:
        probs: (N, K) posteriors under ``prior_from``.
        prior_from: (K,) prior the posteriors assume.
        prior_to: (K,) prior wanted.

    Returns:
        (N, K) posteriors under ``prior_to``.
    """
    ratio = np.asarray(prior_to, dtype=np.float64) / np.asarray(prior_from, dtype=np.float64)
    return normalise_rows(np.asarray(probs, dtype=np.float64) * ratio)


def late_fusion(image_probs: np.ndarray, context_probs: np.ndarray, power: float) -> np.ndarray:
    """Image posterior times the patient-context posterior to ``power``, renormalised.

    Both are balanced-prior posteriors (logit-adjusted network, class-balanced logistic
    regression), so their product is the posterior given both if image and context are
    independent given the class; ``power`` < 1 shrinks the context's say.
    """
    return normalise_rows(np.asarray(image_probs) * np.clip(context_probs, EPS, 1.0) ** power)


def fuse_context(raw: np.ndarray, vectors: np.ndarray, fusion: dict | None) -> np.ndarray:
    """Late-fuse the stored context model into the rows of ``raw`` that give a context.

    Args:
        raw: (N, K) balanced-prior outputs of the network.
        vectors: (N, DIM) encoded patient contexts (:data:`metadata.MISSING` = none).
        fusion: ``config["context_fusion"]`` (``power`` and the context model), or None.

    Returns:
        (N, K); rows without a context, or no ``fusion``, unchanged.
    """
    from skin_model.data.metadata import ContextModel, has_context

    if not fusion or not fusion.get("power"):
        return raw
    rows = has_context(vectors)
    if not rows.any():
        return raw
    out = np.array(raw, dtype=np.float64)
    context = ContextModel.from_config(fusion)
    post = context.predict_proba(np.asarray(vectors)[rows], raw.shape[1])
    out[rows] = late_fusion(out[rows], post, float(fusion["power"]))
    return out


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale softmax outputs as if their logits were divided by ``temperature``."""
    logits = np.log(np.clip(probs, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    return normalise_rows(np.exp(logits))


def calibrated_probabilities(
    raw: np.ndarray, class_prior: Sequence[float] | None, temperature: float = 1.0
) -> np.ndarray:
    """Class probabilities at the training frequencies from the model's raw outputs.

    Args:
        raw: (N, K) softmax outputs (uniform-prior posteriors for a logit-adjusted model).
        class_prior: (K,) training class frequencies, or ``None`` for a model whose
            outputs already carry its priors (then only the temperature applies).
        temperature: Temperature applied after the prior shift.

    Returns:
        (N, K) probabilities.
    """
    probs = raw if class_prior is None else prior_shift(raw, np.ones(len(class_prior)), class_prior)
    return apply_temperature(probs, temperature) if temperature != 1.0 else probs


DECISION_RULE = (
    "balanced: argmax of the network's uniform-prior output (before the re-weighting by "
    "class frequencies and the temperature)"
)
"""How the suggested diagnosis is chosen from a model with a ``class_prior``."""

ARGMAX_RULE = "argmax of the probabilities"
"""How it is chosen from a model whose outputs already carry the class frequencies."""


def class_frequencies(codes: Sequence[str]) -> np.ndarray:
    """(K,) share of each class in ``codes``, in :data:`CLASSES` order (at least one count
    each, so no class gets probability zero).
    """
    codes = list(codes)
    counts = np.array([max(1, codes.count(c)) for c in CLASSES], dtype=np.float64)
    return counts / counts.sum()


def decide(
    raw: np.ndarray,
    probs: np.ndarray,
    class_prior: Sequence[float] | None,
    weights: Sequence[float] | None = None,
):
    """(N,) suggested class per row: the balanced rule (:data:`DECISION_RULE`) for a model
    whose outputs are re-weighted by ``class_prior``, else the most probable class.

    Args:
        raw: (N, K) the network's softmax outputs.
        probs: (N, K) the probabilities shown (after prior and temperature).
        class_prior: The bundle's ``class_prior`` (None: outputs used as they are).
        weights: (K,) how much each class's miss counts (None: all 1); a class's column
            is multiplied by its weight before the argmax.
    """
    base = np.asarray(raw if class_prior is not None else probs, dtype=np.float64)
    if weights is not None:
        base = base * np.asarray(weights, dtype=np.float64)
    return base.argmax(axis=1)


def class_weights(weights_by_class: dict[str, float]) -> list[float] | None:
    """(K,) decision weights in :data:`CLASSES` order from ``{code: weight}`` (others 1);
    None when every weight is 1.

    Raises:
        ValueError: For an unknown class code or a weight that is not positive.
    """
    for code, w in weights_by_class.items():
        if code not in CLASSES or not w > 0:
            raise ValueError(f"decision weight {code}={w}: need a class of {CLASSES} and w > 0")
    out = [float(weights_by_class.get(c, 1.0)) for c in CLASSES]
    return None if all(w == 1.0 for w in out) else out


def weighted_rule(rule: str, weights: Sequence[float] | None) -> str:
    """A decision rule's words with its class weights (``rule`` itself without any)."""
    if weights is None:
        return rule
    named = [f"{c} {w:g}x" for c, w in zip(CLASSES, weights, strict=True) if w != 1.0]
    return (
        f"{rule}; a missed class counts more where weighted ({', '.join(named)}: the "
        "class's output is multiplied by its weight before the argmax)"
    )


def fit_temperature(probs: np.ndarray, y_idx: np.ndarray) -> float:
    """Temperature minimising the negative log-likelihood on ``probs``."""
    return float(minimize_scalar(lambda t: nll(probs, y_idx, t), bounds=(0.05, 20.0)).x)


def nll(probs: np.ndarray, y_idx: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes after a temperature."""
    p = apply_temperature(probs, temperature)[np.arange(len(y_idx)), y_idx]
    return float(-np.log(np.clip(p, EPS, 1.0)).mean())


def choose_temperature(
    probs: np.ndarray, y_idx: np.ndarray, groups: Sequence[str], seed: int = 0
) -> tuple[float, dict]:
    """Keep temperature 1 unless fitting one helps on held-out lesions.

    The lesions are cut in two halves; a temperature fitted on each half is scored on
    the other. Only if that held-out NLL beats temperature 1 is a temperature (fitted on
    all of ``probs``) used.

    Args:
        probs: (N, K) probabilities of the calibration part.
        y_idx: (N,) true class indices.
        groups: (N,) lesion ids.
        seed: Seed of the halving.

    Returns:
        ``(temperature, {"held_out_nll_t1", "held_out_nll_fitted", "fitted"})``.
    """
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    half = rng.permutation(len(codes)) < len(codes) // 2
    masks = [half[inverse], ~half[inverse]]
    plain, fitted = [], []
    for fit_mask, score_mask in (masks, masks[::-1]):
        t = fit_temperature(probs[fit_mask], y_idx[fit_mask])
        plain.append(nll(probs[score_mask], y_idx[score_mask]))
        fitted.append(nll(probs[score_mask], y_idx[score_mask], t))
    t_all = fit_temperature(probs, y_idx)
    info = {
        "held_out_nll_t1": float(np.mean(plain)),
        "held_out_nll_fitted": float(np.mean(fitted)),
        "fitted": round(t_all, 4),
    }
    return (round(t_all, 6) if info["held_out_nll_fitted"] < info["held_out_nll_t1"] else 1.0), info


def malignant_probability(probs: np.ndarray) -> np.ndarray:
    """Sum of the malignant classes' probabilities, per row."""
    return np.asarray(probs)[:, MALIGNANT_IDX].sum(axis=1)


def is_malignant(y_idx: np.ndarray) -> np.ndarray:
    """1 where the class index is malignant (mel, bcc, akiec), else 0."""
    return np.isin(y_idx, MALIGNANT_IDX).astype(int)


def adjust_prevalence(risk, trained_share: float, new_share: float):
    """Re-weight a malignant risk from the training data's malignant share to another
    population's (Bayes' rule on the odds).

    Args:
        risk: Malignant risk(s) at ``trained_share``.
        trained_share: Malignant share the risk is calibrated to.
        new_share: Malignant share of the population the clinician sees (0 < s < 1).

    Returns:
        The risk(s) at ``new_share`` (same shape as ``risk``).
    """
    if not 0.0 < new_share < 1.0:
        raise ValueError(f"prevalence must be between 0 and 1 (exclusive), got {new_share}")
    r = np.clip(np.asarray(risk, dtype=np.float64), 0.0, 1.0)
    up = r * new_share / trained_share
    down = (1.0 - r) * (1.0 - new_share) / (1.0 - trained_share)
    out = np.where(up + down > 0, up / np.maximum(up + down, 1e-300), 0.0)
    return float(out) if np.ndim(out) == 0 else out


def shift_malignant_prevalence(probs: np.ndarray, trained_share: float, new_share: float):
    """Re-weight class probabilities so their malignant sum moves from ``trained_share``
    to ``new_share`` (malignant classes scaled together, benign classes together).

    Args:
        probs: (N, K) probabilities at the training frequencies.
        trained_share: Malignant share of the training data.
        new_share: Malignant share of the population seen (0 < s < 1).

    Returns:
        (N, K) probabilities; their malignant sum equals :func:`adjust_prevalence` of the
        original sum.
    """
    if not 0.0 < new_share < 1.0:
        raise ValueError(f"prevalence must be between 0 and 1 (exclusive), got {new_share}")
    w = np.full(np.shape(probs)[1], (1.0 - new_share) / (1.0 - trained_share))
    w[MALIGNANT_IDX] = new_share / trained_share
    return normalise_rows(np.asarray(probs, dtype=np.float64) * w)


def reliability(
    predicted: np.ndarray, outcome: np.ndarray, n_bins: int, names: tuple[str, str]
) -> tuple[float, list[dict]]:
    """Expected calibration error and equal-width reliability bins over [0, 1].

    Args:
        predicted: (N,) predicted probabilities (a risk, or the top-label confidence).
        outcome: (N,) 1 where the predicted event happened, else 0.
        n_bins: Number of bins.
        names: Keys for each bin's mean prediction and observed rate.

    Returns:
        ``(ece, [{"lower", "upper", names[0], names[1], "count"}, ...])``.
    """
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        mean = float(predicted[mask].mean()) if count else None
        rate = float(outcome[mask].mean()) if count else None
        if count:
            ece += count / len(predicted) * abs(rate - mean)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                names[0]: mean,
                names[1]: rate,
                "count": count,
            }
        )
    return float(ece), bins


def binary_calibration(risk: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability of a binary risk: ECE, mean risk vs observed share, diagram bins.

    Args:
        risk: (N,) predicted probabilities of the positive class.
        y: (N,) 1 for positive truth, else 0.
        n_bins: Equal-width bins over [0, 1].

    Returns:
        ``{"ece", "mean_risk", "observed_share", "bins": [{"lower", "upper",
        "mean_risk", "observed", "count"}]}``.
    """
    risk, y = np.asarray(risk, dtype=float), np.asarray(y, dtype=float)
    ece, bins = reliability(risk, y, n_bins, ("mean_risk", "observed"))
    return {
        "ece": float(ece),
        "mean_risk": float(risk.mean()),
        "observed_share": float(y.mean()),
        "bins": bins,
    }


def lesion_resample_weights(groups: Sequence[str], n_boot: int, seed: int = 0) -> np.ndarray:
    """Per-image weights of a lesion bootstrap: how often each image's lesion is drawn.

    Args:
        groups: (N,) lesion id of each image.
        n_boot: Number of resamples.
        seed: Seed.

    Returns:
        (n_boot, N) integer weights.
    """
    rng = np.random.default_rng(seed)
    codes, inverse = np.unique(np.asarray(groups), return_inverse=True)
    draws = rng.integers(0, len(codes), (n_boot, len(codes)))
    counts = np.stack([np.bincount(d, minlength=len(codes)) for d in draws])
    return counts[:, inverse]


def threshold_for_sensitivity(
    risk: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    target: float = 0.90,
    level: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The highest threshold whose malignant sensitivity has its lower interval bound at
    or above ``target`` (lesion bootstrap), so the sensitivity holds on new lesions.

    Args:
        risk: (N,) malignant risks of data that chose nothing else.
        y: (N,) 1 malignant, 0 benign.
        groups: (N,) lesion ids.
        target: Required lower bound of sensitivity.
        level: Two-sided coverage of the interval (0.95: the 2.5th percentile is used).
        n_boot: Resamples.
        seed: Seed.

    Returns:
        ``{"threshold", "sensitivity", "sensitivity_lower", "target", "level"}``; the
        lowest candidate (flag everything malignant-looking) when none reaches ``target``;
        0.5 with no sensitivity when ``y`` holds no malignant image.
    """
    risk, y = np.asarray(risk, dtype=float), np.asarray(y).astype(int)
    pos = np.flatnonzero(y == 1)
    if len(pos) == 0:
        no_fit = {"threshold": 0.5, "sensitivity": None, "sensitivity_lower": None}
        return no_fit | {"target": target, "level": level}
    order = pos[np.argsort(-risk[pos], kind="stable")]
    w = lesion_resample_weights(np.asarray(groups)[order], n_boot, seed).astype(float)
    sens = np.cumsum(w, axis=1) / np.maximum(w.sum(axis=1, keepdims=True), 1)
    lower = np.percentile(sens, (1 - level) / 2 * 100, axis=0)
    point = np.arange(1, len(order) + 1) / len(order)
    ok = np.flatnonzero(lower >= target)
    k = int(ok[0]) if len(ok) else len(order) - 1
    return {
        "threshold": float(risk[order[k]]),
        "sensitivity": float(point[k]),
        "sensitivity_lower": float(lower[k]),
        "target": target,
        "level": level,
    }
