"""Loading a model directory (see :mod:`skin_model.model.artifacts`) and classifying decoded
images: the network's outputs, then the post-hoc layer (:mod:`skin_model.model.posthoc`:
probabilities, the balanced decision, the malignant risk and referral flag) and the
"not dermoscopic" detector (:mod:`skin_model.model.ood`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skin_model import CLASSES
from skin_model.data.imaging import resize_for_model
from skin_model.data.metadata import PatientContext, encode
from skin_model.model.artifacts import (
    MODEL_FILE,
    OOD_FILE,
    ArtifactError,
    ModelLoadError,
    check_model_files,
)
from skin_model.model.calibration import malignant_probability
from skin_model.model.config import ModelConfig, read_model_config
from skin_model.model.metrics_file import RiskTier, read_metrics
from skin_model.model.ood import Detector, feature_tensors
from skin_model.model.posthoc import PostHoc

UNSURE_TOP_PROBABILITY = 0.5
"""Below this top balanced-prior output a prediction is marked unsure."""
UNSURE_ENTROPY = 0.6
"""Above this normalised entropy (0 = certain, 1 = uniform) a prediction is marked unsure."""


@dataclass
class ModelBundle:
    """A loaded model with its config, post-hoc layer, detector and the risk tiers its
    test figures define (for the verdicts' wording); calls are serialised by ``lock``.
    """

    model: object
    config: ModelConfig
    model_dir: Path
    posthoc: PostHoc = field(default_factory=PostHoc)
    detector: Detector | None = None
    tiers: tuple[RiskTier, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)
    _infer: object = None
    _explainers: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """Side of the square model input (its width for one of the images' own aspect)."""
        return int(self.config.input_size)

    @property
    def input_shape(self) -> tuple[int, int]:
        """The model input's ``(height, width)``."""
        return self.config.input_shape

    def explainer(self, key, build):
        """The cached explainer under ``key``, built by ``build()`` on first use."""
        with self.lock:
            if key not in self._explainers:
                self._explainers[key] = build()
            return self._explainers[key]

    @property
    def uses_context(self) -> bool:
        """Whether a patient context changes the predictions (network input or late fusion)."""
        fusion = self.posthoc.context_fusion or {}
        return self.feeds_context or bool(fusion.get("power"))

    @property
    def feeds_context(self) -> bool:
        """Whether the network itself reads the patient context (else it sees none)."""
        fusion = self.posthoc.context_fusion or {}
        return takes_metadata(self.model) and bool(fusion.get("feed_network", True))

    @property
    def malignant_share(self) -> float | None:
        """Malignant share of the training data (the risk's default prevalence)."""
        return self.posthoc.malignant_share


@dataclass
class Prediction:
    """One image's result.

    ``probabilities`` are class probabilities at the training data's class frequencies
    (or re-weighted to a chosen malignant prevalence, see :meth:`at_prevalence`);
    ``decision`` is the class chosen by the balanced rule (see
    :mod:`skin_model.model.calibration`), which is not always the most probable class: a rare
    class is suggested when its probability is high for it. ``threshold`` is the referral
    threshold on the same scale as ``malignant_probability``; ``suspicious`` is the
    referral flag (risk at or above it), whatever the warnings say. ``base_risk`` and
    ``base_threshold`` are both at the training prevalence, where the risk tiers are set.
    ``views`` is how many turns of the image the outputs average (more near the threshold:
    :func:`second_look`).
    """

    probabilities: np.ndarray
    malignant_probability: float
    suspicious: bool
    unsure: bool
    ood_score: float | None
    looks_dermoscopic: bool
    decision: int
    threshold: float
    prevalence: float | None = None
    context: PatientContext | None = None
    base_risk: float | None = None
    base_threshold: float | None = None
    views: int = 1

    def __post_init__(self):
        if self.base_risk is None:  # created at the training prevalence
            self.base_risk, self.base_threshold = self.malignant_probability, self.threshold

    @property
    def context_used(self) -> str:
        """Which patient-context fields the prediction used, as text."""
        return self.context.describe() if self.context is not None else "none given"

    @property
    def suggested_class(self) -> str:
        """Code of the suggested diagnosis (the balanced decision)."""
        return CLASSES[self.decision]

    @property
    def most_probable_class(self) -> str:
        """Code of the class with the highest probability."""
        return CLASSES[int(np.argmax(self.probabilities))]

    def at_prevalence(self, posthoc: PostHoc, share: float | None) -> Prediction:
        """This prediction (at the training prevalence) re-weighted to a malignant share:
        probabilities, risk and the referral threshold move together, so the referral flag
        and the sensitivity measured for it stay as they are.
        """
        if share is None or not posthoc.malignant_share:
            return self
        probs, threshold = posthoc.at_prevalence(self.probabilities[None], self.threshold, share)
        return replace(
            self,
            probabilities=probs[0],
            malignant_probability=float(malignant_probability(probs)[0]),
            threshold=threshold,
            prevalence=share,
        )

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable classes with their probabilities."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(CLASSES[i], float(self.probabilities[i])) for i in order]


def load_bundle(model_dir: Path, verify: bool = True) -> ModelBundle:
    """Load a model directory for inference, its network's BatchNorms folded into the
    convolutions before them (:func:`skin_model.model.folding.fold_batch_norm`: the same
    function, about 1.5x faster).

    Args:
        model_dir: Folder written by training.
        verify: Check the model, config and detector files against ``integrity.json``.

    Returns:
        The loaded :class:`ModelBundle`.

    Raises:
        ModelLoadError: If anything is missing, damaged or unreadable.
    """
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the custom layers)
    from skin_model.model.folding import fold_batch_norm

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model directory {model_dir} does not exist.")
    path = check_model_files(model_dir) if verify else model_dir / MODEL_FILE
    config = read_model_config(model_dir)
    try:
        model = fold_batch_norm(keras.models.load_model(path, compile=False))
    except Exception as exc:
        raise ModelLoadError(f"{path} could not be loaded ({type(exc).__name__}: {exc}).") from exc
    ood = model_dir / OOD_FILE
    detector = Detector.from_config(config, ood) if ood.is_file() and config.ood_threshold else None
    return ModelBundle(
        model=model,
        config=config,
        model_dir=model_dir,
        posthoc=PostHoc.from_config(config),
        detector=detector,
        tiers=_tiers(model_dir),
    )


def _tiers(model_dir: Path) -> tuple[RiskTier, ...]:
    """The risk tiers of a model directory's test figures (none without ``metrics.json``:
    a model being finalised, or one evaluated elsewhere).
    """
    try:
        return read_metrics(model_dir).malignant.tiers
    except ArtifactError:
        return ()


def takes_metadata(model) -> bool:
    """Whether the model has the second, patient-context input."""
    return len(model.inputs) > 1


def batch_inputs(model, images: np.ndarray, metadata: np.ndarray | None = None):
    """The model's input for a batch of images: the float32 array, or ``[images,
    metadata]`` for a two-input model (no patient context where ``metadata`` is None).
    """
    x = np.asarray(images, dtype=np.float32)
    if not takes_metadata(model):
        return x
    from skin_model.data.metadata import MISSING

    m = np.repeat(MISSING[None], len(x), axis=0) if metadata is None else metadata
    return [x, np.asarray(m, dtype=np.float32)]


def _infer_fn(bundle: ModelBundle):
    """A compiled function mapping (images, metadata) to (detector features..., probs)."""
    if bundle._infer is None:
        import keras

        model = bundle.model
        layers = bundle.config.ood_layers
        two = keras.Model(model.inputs, [*feature_tensors(model, layers), model.output])
        meta = takes_metadata(model)
        call = (
            (lambda x, m: two([x, m], training=False))
            if meta
            else (lambda x, m: two(x, training=False))
        )
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            from skin_model.data.metadata import DIM

            spec = tf.TensorSpec([None, *bundle.input_shape, 3], tf.float32)
            mspec = tf.TensorSpec([None, DIM], tf.float32)
            bundle._infer = tf.function(call, input_signature=[spec, mspec])
        else:
            bundle._infer = call
    return bundle._infer


VIEWS: tuple[tuple[int, bool], ...] = tuple(
    (turns, mirrored) for mirrored in (False, True) for turns in (0, 2, 1, 3)
)
"""The 8 dihedral views in the order test-time augmentation takes them: (counter-clockwise
quarter turns, mirrored left to right first). The half turn comes second, so with the
landscape turn of :func:`skin_model.data.imaging.resize_for_model` two views give the
same pair for a file saved at any quarter turn; four give the rotations, eight all."""

SHAPE_VIEWS: tuple[tuple[int, bool], ...] = tuple(v for v in VIEWS if v[0] % 2 == 0)
"""The 4 views that keep a non-square input's shape (no turn, the half turn, each mirrored),
in :data:`VIEWS` order: the views of a model input of the images' own aspect."""


def views_of(hw: tuple[int, int]) -> tuple[tuple[int, bool], ...]:
    """The views an input of ``(height, width)`` takes: :data:`VIEWS` when square, else
    :data:`SHAPE_VIEWS`.
    """
    return VIEWS if hw[0] == hw[1] else SHAPE_VIEWS


def dihedral_views(batch: np.ndarray, n: int = 8, first: int = 0) -> np.ndarray:
    """Views ``first`` to ``n - 1`` (:func:`views_of` the batch's images) of each image,
    view-major: (N, H, W, C) -> ((n - first) * N, H, W, C).

    Raises:
        ValueError: If a non-square batch is asked for more than its 4 views.
    """
    order = views_of(batch.shape[1:3])
    if n > len(order):
        raise ValueError(f"an input of {batch.shape[1]}x{batch.shape[2]} has {len(order)} views")
    views = [
        np.rot90(batch[:, :, ::-1] if mirrored else batch, turns, axes=(1, 2))
        for turns, mirrored in order[first:n]
    ]
    return np.ascontiguousarray(np.concatenate(views, axis=0))


def mean_over_views(outputs: np.ndarray, views: int) -> np.ndarray:
    """The per-image mean of view-major outputs (:func:`dihedral_views` order):
    (views * N, K) -> (N, K).
    """
    outputs = np.asarray(outputs)
    return outputs.reshape(views, -1, outputs.shape[-1]).mean(axis=0)


def network_outputs(
    bundle: ModelBundle,
    batch: np.ndarray,
    tta: int,
    chunk: int = 16,
    metadata: np.ndarray | None = None,
    first: int = 0,
):
    """The network's softmax outputs (TTA-averaged) and identity-view features of the
    detector's layers (``config.ood_layers``).

    Args:
        bundle: The loaded model.
        batch: (N, S, S, 3) float32 in [0, 255].
        tta: Views to average over (1 = none, 4 = rotations, 8 = rotations and flips).
        first: The first of the :data:`VIEWS` to take (0; a second look takes the views
            after those already averaged; the features are then of view ``first``).
        chunk: Images per model call (16 keeps peak memory under 1 GB on the CPU; larger
            batches gained little speed).
        metadata: (N, DIM) patient-context vectors (None: none given); only a network
            that reads the context sees them (late fusion is the post-hoc layer's).

    Returns:
        ``(outputs (N, K), [feature group (N, F_g) of the identity view, ...])``.
    """
    from skin_model.data.metadata import MISSING

    infer = _infer_fn(bundle)
    if metadata is None or not bundle.feeds_context:
        metadata = np.repeat(MISSING[None], len(batch), axis=0)
    metadata = np.asarray(metadata, dtype=np.float32)
    probs_out, groups_out = [], []
    views = int(tta) - int(first)
    step = max(1, chunk // views)  # same memory per call whatever the views
    for start in range(0, len(batch), step):
        part = batch[start : start + step]
        x = dihedral_views(part, int(tta), int(first)) if int(tta) > 1 else part
        m = metadata[start : start + step]
        m = np.tile(m, (views, 1)) if views > 1 else m
        with bundle.lock:
            result = infer(x.astype(np.float32), m)
        *groups, probs = result if isinstance(result, list | tuple) else [result]
        n = len(part)
        probs_out.append(mean_over_views(probs, views))
        groups_out.append([np.asarray(g)[:n] for g in groups])
    if not probs_out:
        raise ValueError("network_outputs needs at least one image")
    groups = [np.concatenate([chunk[i] for chunk in groups_out]) for i in range(len(groups_out[0]))]
    return np.concatenate(probs_out), groups


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), with p kept inside (1e-6, 1 - 1e-6)."""
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def near_threshold(risk: np.ndarray, thresholds: np.ndarray, band: float) -> np.ndarray:
    """True where a malignant risk lies within ``band`` log-odds of its referral threshold
    (the images a second look averages more views for).
    """
    return np.abs(log_odds(risk) - log_odds(thresholds)) < band


def second_look(
    bundle: ModelBundle,
    batch: np.ndarray,
    network: np.ndarray,
    metadata: np.ndarray | None = None,
    given: np.ndarray | None = None,
    chunk: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """The outputs of the images whose risk is near its referral threshold averaged over
    the model's second-look views (``config.second_look_views`` of :data:`VIEWS`, within
    ``config.second_look_band`` log-odds); the others as they are.

    A decision near the threshold is the one a re-saved, re-sized or turned file can flip;
    averaging the image's turns there steadies it at a fraction of the cost of averaging
    every image.

    Args:
        bundle: The loaded model with its post-hoc layer.
        batch: (N, S, S, 3) float32 model inputs.
        network: (N, K) their outputs at the model's ``tta`` views.
        metadata: (N, DIM) patient-context vectors as :func:`network_outputs` and the
            post-hoc layer take them, or None.
        given: (N,) True where a case's context was given (its threshold is the context one).
        chunk: Images per model call.

    Returns:
        ``(outputs (N, K), views (N,) int)``: the outputs and how many views each averages.
    """
    cfg = bundle.config
    base, total = int(cfg.tta), int(cfg.second_look_views)
    views = np.full(len(network), base, dtype=int)
    if not cfg.looks_again or not len(network):
        return network, views
    out = bundle.posthoc.apply(network, metadata, given)
    near = near_threshold(out.risk, out.thresholds, cfg.second_look_band)
    if near.any():
        meta = None if metadata is None else np.asarray(metadata)[near]
        more, _ = network_outputs(bundle, batch[near], total, chunk, meta, first=base)
        network = np.array(network, copy=True)
        network[near] = (base * network[near] + (total - base) * more) / total
        views[near] = total
    return network, views


def model_outputs(
    bundle: ModelBundle,
    batch: np.ndarray,
    metadata: np.ndarray | None = None,
    given: np.ndarray | None = None,
    chunk: int = 16,
):
    """The outputs every verdict is made from: :func:`network_outputs` at the model's
    views, then its :func:`second_look` near the referral threshold.

    Returns:
        ``(outputs (N, K), detector features, views (N,) int)``.
    """
    network, feats = network_outputs(bundle, batch, bundle.config.tta, chunk, metadata)
    network, views = second_look(bundle, batch, network, metadata, given, chunk)
    return network, feats, views


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of each probability row divided by log(K): 0 certain, 1 uniform."""
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def predict_images(
    bundle: ModelBundle,
    images: Sequence[np.ndarray],
    prevalence: float | None = None,
    contexts: Sequence[PatientContext | None] | None = None,
    chunk: int = 16,
    groups: Sequence[int] | None = None,
) -> list[Prediction]:
    """Classify decoded RGB uint8 images: network, post-hoc layer, detector.

    Args:
        bundle: The loaded model.
        images: Decoded images of any size (see :func:`skin_model.data.imaging.decode_image`).
        prevalence: Malignant share of the population seen; probabilities, the risk and
            the threshold are re-weighted to it (Bayes' rule). ``None``: the training
            data's share.
        contexts: Optional patient context per image (ignored by a model that uses none).
        chunk: Images per model call (see :func:`network_outputs`; smaller = less memory).
        groups: Lesion index of each image: images of one lesion share one result, from
            the mean of their network outputs (the context of the group's first image is
            used; a group looks dermoscopic only if all its images do). None: one result
            per image.

    Returns:
        One :class:`Prediction` per image (per group with ``groups``, in order of first
        appearance).
    """
    if not images:
        return []
    size = bundle.input_shape
    batch = np.stack([resize_for_model(im, size) for im in images]).astype(np.float32)
    contexts = list(contexts) if contexts is not None else [None] * len(images)
    use_meta = bundle.uses_context
    meta = np.stack([encode(c) for c in contexts]) if use_meta else None
    given = np.array([use_meta and c is not None and bool(c.given) for c in contexts], bool)
    network, feats, views = model_outputs(bundle, batch, meta, given, chunk)
    detector = bundle.detector
    scores = detector.score(feats) if detector is not None else None
    if groups is not None:
        network, meta, contexts, scores, views = _pool_groups(
            groups, network, meta, contexts, scores, views
        )
        given = np.array([use_meta and c is not None and bool(c.given) for c in contexts], bool)
    out = bundle.posthoc.apply(network, meta, given)
    entropy = normalised_entropy(out.fused)
    return [
        Prediction(
            probabilities=out.probabilities[i],
            malignant_probability=float(out.risk[i]),
            suspicious=bool(out.flagged[i]),
            unsure=bool(out.fused[i].max() < UNSURE_TOP_PROBABILITY or entropy[i] > UNSURE_ENTROPY),
            ood_score=None if scores is None else float(scores[i]),
            looks_dermoscopic=scores is None or not bool(detector.flagged(scores[i])),
            decision=int(out.decisions[i]),
            threshold=float(out.thresholds[i]),
            context=contexts[i] if use_meta else None,
            views=int(views[i]),
        ).at_prevalence(bundle.posthoc, prevalence)
        for i in range(len(network))
    ]


def _pool_groups(groups, network, meta, contexts, scores, views):
    """Per-group mean outputs, the first image's context, the highest detector score and
    the most views any of the group's images took.
    """
    groups = np.asarray(groups)
    order = list(dict.fromkeys(groups.tolist()))
    first = [int(np.flatnonzero(groups == g)[0]) for g in order]
    pooled = np.stack([network[groups == g].mean(axis=0) for g in order])
    worst = None if scores is None else np.array([scores[groups == g].max() for g in order])
    return (
        pooled,
        None if meta is None else meta[first],
        [contexts[i] for i in first],
        worst,
        np.array([views[groups == g].max() for g in order]),
    )


def display_threshold(bundle: ModelBundle, prevalence: float | None = None) -> float:
    """The image-only referral threshold on the risk scale shown at ``prevalence``."""
    return bundle.posthoc.threshold_at(bundle.posthoc.threshold_, prevalence)
