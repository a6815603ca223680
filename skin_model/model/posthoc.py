"""The post-hoc layer: everything between the network's softmax and the numbers a clinician
reads, fitted after training and applied by the app, the CLI, evaluation and ensembles.

:class:`PostHoc` follows scikit-learn's convention: it is made with what the training part
fixes (class prior, malignant share, the late-fusion context model), ``fit`` learns the
temperature and the referral thresholds on the calibration part and returns ``self``, and
``apply`` turns network outputs into :class:`Outputs`. It reads and writes its own
``config.json`` keys. The maths lives in :mod:`skin_model.model.calibration`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skin_model.model.calibration import (
    DECISION_RULE,
    adjust_prevalence,
    calibrated_probabilities,
    choose_temperature,
    decide,
    fuse_context,
    is_malignant,
    malignant_probability,
    shift_malignant_prevalence,
    threshold_for_sensitivity,
)

CONFIG_KEYS = (
    "class_prior",
    "malignant_share",
    "decision_rule",
    "decision_weights",
    "temperature",
    "malignant_threshold",
    "malignant_threshold_metadata",
    "context_fusion",
    "target_sensitivity",
)
"""The ``config.json`` keys this layer owns."""


def floor6(threshold: float) -> float:
    """A fitted threshold stored to 6 decimals, rounded down: the threshold is a malignant
    image's own risk, and rounding it up would stop referring that image (and every image
    tied with it).
    """
    return float(np.floor(float(threshold) * 1e6) / 1e6)


@dataclass
class Outputs:
    """The post-hoc layer's result for a batch.

    Attributes:
        fused: (N, K) balanced-prior outputs after late fusion of the patient context
            (the network's outputs where no context was given or none is fused).
        probabilities: (N, K) class probabilities at the training frequencies.
        decisions: (N,) suggested class indices (the balanced rule).
        risk: (N,) malignant risk (sum of the malignant classes' probabilities).
        thresholds: (N,) referral threshold of each case on the same scale.
        flagged: (N,) True where the risk reaches its threshold.
    """

    fused: np.ndarray
    probabilities: np.ndarray
    decisions: np.ndarray
    risk: np.ndarray
    thresholds: np.ndarray
    flagged: np.ndarray


@dataclass
class PostHoc:
    """Prior shift, temperature, late fusion and referral thresholds of one model.

    Parameters (what the training part fixes, given when it is made):
        class_prior: Training class frequencies the balanced-prior outputs are re-weighted
            by (None: the network's outputs already carry the prior).
        malignant_share: Malignant share of the training part (the risk's prevalence).
        context_fusion: Late fusion of the patient context (power, feed_network and the
            context model), or None.
        target_sensitivity: Lower bound of the sensitivity the thresholds keep.
        decision_rule: How the suggested diagnosis is chosen, in words.
        decision_weights: (K,) how much each class's miss counts in the suggested
            diagnosis (its output is multiplied by it before the argmax), or None (all 1);
            the probabilities, the risk and the referral do not use it.

    Fitted by :meth:`fit` (before it: temperature 1, threshold 0.5):
        temperature_: Temperature applied after the prior shift.
        threshold_: Referral threshold on the risk, image only.
        threshold_context_: Referral threshold when any context field is given.
        fit_report_: What was measured while fitting.
    """

    class_prior: list[float] | None = None
    malignant_share: float | None = None
    context_fusion: dict | None = None
    target_sensitivity: float = 0.90
    decision_rule: str = DECISION_RULE
    decision_weights: list[float] | None = None
    temperature_: float = field(default=1.0, init=False)
    threshold_: float = field(default=0.5, init=False)
    threshold_context_: float | None = field(default=None, init=False)
    fit_report_: dict = field(default_factory=dict, repr=False, init=False)

    def fuse(self, network: np.ndarray, vectors: np.ndarray | None) -> np.ndarray:
        """Late-fuse the context model into the rows of ``network`` that give a context."""
        if vectors is None:
            return np.asarray(network)
        return fuse_context(np.asarray(network), vectors, self.context_fusion)

    def probabilities(self, fused: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """Class probabilities at the training frequencies of balanced-prior outputs."""
        t = self.temperature_ if temperature is None else temperature
        return calibrated_probabilities(fused, self.class_prior, t)

    def thresholds(self, with_context: np.ndarray) -> np.ndarray:
        """(N,) referral threshold per case (the context one where a field is given)."""
        with_context = np.asarray(with_context, dtype=bool)
        ctx = self.threshold_ if self.threshold_context_ is None else self.threshold_context_
        return np.where(with_context, ctx, self.threshold_).astype(float)

    def fit(
        self,
        outputs: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        outputs_context: np.ndarray | None = None,
    ) -> PostHoc:
        """Fit the temperature and the thresholds on data that chose nothing.

        Args:
            outputs: (N, K) image-only (fused) outputs of the calibration part.
            y: (N,) true class indices.
            groups: (N,) lesion ids.
            outputs_context: (N, K) the same images' outputs with their patient context,
                or None; the temperature is then fitted on both pooled and a second
                threshold is chosen on these.

        Returns:
            ``self``; ``fit_report_`` holds what was measured while fitting.
        """
        pooled, y_pool, g_pool = outputs, y, groups
        if outputs_context is not None:
            pooled = np.concatenate([outputs, outputs_context])
            y_pool, g_pool = np.r_[y, y], np.r_[groups, groups]
        temperature, t_info = choose_temperature(self.probabilities(pooled, 1.0), y_pool, g_pool)
        self.temperature_ = temperature
        malignant = is_malignant(y)
        thr = threshold_for_sensitivity(
            malignant_probability(self.probabilities(outputs)),
            malignant,
            groups,
            self.target_sensitivity,
        )
        thr_ctx = None
        if outputs_context is not None:
            thr_ctx = threshold_for_sensitivity(
                malignant_probability(self.probabilities(outputs_context)),
                malignant,
                groups,
                self.target_sensitivity,
            )
        self.threshold_ = floor6(thr["threshold"])
        self.threshold_context_ = floor6(thr_ctx["threshold"]) if thr_ctx else None
        self.fit_report_ = {"temperature_check": t_info, "threshold": thr, "threshold_ctx": thr_ctx}
        return self

    def apply(
        self,
        network: np.ndarray,
        vectors: np.ndarray | None = None,
        with_context: np.ndarray | None = None,
    ) -> Outputs:
        """Turn network outputs into probabilities, decisions, risks and flags.

        Args:
            network: (N, K) the network's (TTA-averaged) outputs.
            vectors: (N, DIM) encoded patient contexts for late fusion, or None.
            with_context: (N,) True where a case's context was given (its threshold is
                the context one); default: none given.

        Returns:
            The :class:`Outputs` at the training prevalence.
        """
        fused = self.fuse(network, vectors)
        probs = self.probabilities(fused)
        risk = malignant_probability(probs)
        given = np.zeros(len(fused), bool) if with_context is None else with_context
        thresholds = self.thresholds(given)
        return Outputs(
            fused=fused,
            probabilities=probs,
            decisions=decide(fused, probs, self.class_prior, self.decision_weights),
            risk=risk,
            thresholds=thresholds,
            flagged=risk >= thresholds,
        )

    def at_prevalence(self, probabilities: np.ndarray, threshold: float, share: float | None):
        """Probabilities and threshold re-weighted to a malignant share (Bayes' rule).

        The flagged cases stay the same: the threshold moves with the risk, so the
        sensitivity measured for it still holds.

        Returns:
            ``(probabilities (N, K), threshold)``; unchanged when ``share`` is None or the
            training share is unknown.
        """
        if share is None or not self.malignant_share:
            return probabilities, threshold
        probs = shift_malignant_prevalence(probabilities, self.malignant_share, share)
        return probs, self.threshold_at(threshold, share)

    def threshold_at(self, threshold: float, share: float | None) -> float:
        """A threshold on the risk at the training share, on the risk scale at ``share``."""
        if share is None or not self.malignant_share:
            return float(threshold)
        return float(adjust_prevalence(threshold, self.malignant_share, share))

    def to_config(self) -> dict:
        """This layer's ``config.json`` keys (:data:`CONFIG_KEYS`)."""
        return {
            "class_prior": self.class_prior,
            "malignant_share": self.malignant_share,
            "decision_rule": self.decision_rule,
            "decision_weights": self.decision_weights,
            "temperature": self.temperature_,
            "malignant_threshold": self.threshold_,
            "malignant_threshold_metadata": self.threshold_context_,
            "context_fusion": self.context_fusion,
            "target_sensitivity": self.target_sensitivity,
        }

    @classmethod
    def from_config(cls, config) -> PostHoc:
        """The fitted layer stored in a :class:`~skin_model.model.config.ModelConfig`."""
        layer = cls(
            class_prior=config.class_prior,
            malignant_share=config.malignant_share,
            context_fusion=config.context_fusion,
            target_sensitivity=float(config.target_sensitivity),
            decision_rule=config.decision_rule,
            decision_weights=config.decision_weights,
        )
        layer.temperature_ = float(config.temperature)
        layer.threshold_ = float(config.malignant_threshold)
        layer.threshold_context_ = config.malignant_threshold_metadata
        return layer
