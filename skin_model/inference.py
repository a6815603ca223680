"""Loading a model directory (see :mod:`skin_model.artifacts`) and classifying decoded
images: calibrated probabilities, the balanced decision, the malignant risk and flag, and
the "not dermoscopic" check.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from skin_model import CLASSES
from skin_model.artifacts import (
    MODEL_FILE,
    OOD_FILE,
    ModelLoadError,
    check_model_file,
    read_config,
)
from skin_model.calibration import (
    adjust_prevalence,
    calibrated_probabilities,
    decide,
    fuse_context,
    malignant_probability,
    ood_distances,
    ood_score,
    shift_malignant_prevalence,
)
from skin_model.imaging import resize_for_model
from skin_model.metadata import PatientContext, encode

UNSURE_TOP_PROBABILITY = 0.5
"""Below this top-class probability a prediction is marked unsure."""
UNSURE_ENTROPY = 0.6
"""Above this normalised entropy (0 = certain, 1 = uniform) a prediction is marked unsure."""


@dataclass
class ModelBundle:
    """A loaded model with its settings; calls are serialised by ``lock``."""

    model: object
    config: dict
    model_dir: Path
    ood_stats: list | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _infer: object = None
    _explainers: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        """Side of the square model input."""
        return int(self.config["input_size"])

    def explainer(self, key, build):
        """The cached explainer under ``key``, built by ``build()`` on first use."""
        with self.lock:
            if key not in self._explainers:
                self._explainers[key] = build()
            return self._explainers[key]

    @property
    def uses_context(self) -> bool:
        """Whether a patient context changes the predictions (network input or late fusion)."""
        return takes_metadata(self.model) or bool(self.config.get("context_fusion"))

    @property
    def feeds_context(self) -> bool:
        """Whether the network itself reads the patient context (else it sees none)."""
        fusion = self.config.get("context_fusion") or {}
        return takes_metadata(self.model) and bool(fusion.get("feed_network", True))

    @property
    def class_prior(self) -> list[float] | None:
        """Training class frequencies the outputs are re-weighted by (None: not needed)."""
        return self.config.get("class_prior")

    @property
    def malignant_share(self) -> float | None:
        """Malignant share of the training data (the risk's default prevalence)."""
        return self.config.get("malignant_share")


@dataclass
class Prediction:
    """One image's result.

    ``probabilities`` are class probabilities at the training data's class frequencies
    (or re-weighted to a chosen malignant prevalence); ``decision`` is the class chosen
    by the balanced rule (see :mod:`skin_model.calibration`), which is not always the
    most probable class: a rare class is suggested when its probability is high for it.
    """

    probabilities: np.ndarray
    malignant_probability: float
    suspicious: bool
    unsure: bool
    ood_distance: float | None
    looks_dermoscopic: bool
    decision: int = -1
    prevalence: float | None = None
    context: PatientContext | None = None
    threshold: float | None = None

    @property
    def context_used(self) -> str:
        """Which patient-context fields the prediction used, as text."""
        return self.context.describe() if self.context is not None else "none given"

    @property
    def top_class(self) -> str:
        """Code of the suggested diagnosis (the balanced decision)."""
        i = self.decision if self.decision >= 0 else int(np.argmax(self.probabilities))
        return CLASSES[i]

    def at_prevalence(self, trained_share: float | None, share: float | None) -> Prediction:
        """This prediction with probabilities and risk re-weighted to a malignant share.

        The referral flag is kept: it depends on the risk at the training share, so the
        sensitivity measured for it still holds (the shown threshold moves instead).
        """
        if share is None or not trained_share:
            return self
        probs = shift_malignant_prevalence(self.probabilities[None], trained_share, share)[0]
        return replace(
            self,
            probabilities=probs,
            malignant_probability=float(malignant_probability(probs[None])[0]),
            prevalence=share,
        )

    def top_k(self, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` most probable classes with their probabilities."""
        order = np.argsort(self.probabilities)[::-1][:k]
        return [(CLASSES[i], float(self.probabilities[i])) for i in order]


def load_bundle(model_dir: Path, verify: bool = True) -> ModelBundle:
    """Load a model directory for inference.

    Args:
        model_dir: Folder written by training.
        verify: Check the model file's SHA-256 against the model card first.

    Returns:
        The loaded :class:`ModelBundle`.

    Raises:
        ModelLoadError: If anything is missing, damaged or unreadable.
    """
    import keras

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"Model directory {model_dir} does not exist.")
    path = check_model_file(model_dir) if verify else model_dir / MODEL_FILE
    config = read_config(model_dir)
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as exc:
        raise ModelLoadError(f"{path} could not be loaded ({type(exc).__name__}: {exc}).") from exc
    bundle = ModelBundle(model=model, config=config, model_dir=model_dir)
    ood = model_dir / OOD_FILE
    if ood.is_file():
        bundle.ood_stats = read_ood(ood)
    return bundle


def read_ood(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """The detector's (mean, precision) per feature group from ``ood.npz`` (one group named
    ``mean``/``precision`` in files written before feature groups existed).
    """
    with np.load(path) as data:
        if "mean" in data:
            return [(data["mean"], data["precision"])]
        n = len([k for k in data.files if k.startswith("mean_")])
        return [(data[f"mean_{i}"], data[f"precision_{i}"]) for i in range(n)]


def write_ood(path: Path, stats: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Write the detector's (mean, precision) per feature group."""
    arrays = {}
    for i, (mean, precision) in enumerate(stats):
        arrays[f"mean_{i}"], arrays[f"precision_{i}"] = mean, precision
    np.savez(path, **arrays)


def ood_outputs(model, layers: Sequence[str]) -> list:
    """The detector's feature tensors: channel mean and std of each 4-D layer output, the
    output itself for a pooled (2-D) layer.
    """
    import keras

    outs = []
    for name in layers:
        t = model.get_layer(name).output
        if len(t.shape) == 4:
            outs += [keras.ops.mean(t, axis=(1, 2)), keras.ops.std(t, axis=(1, 2))]
        else:
            outs.append(t)
    return outs


def ood_layers(bundle: ModelBundle) -> list[str]:
    """Layers the bundle's detector reads (``features`` for models finalised before)."""
    return list(bundle.config.get("ood_layers") or ["features"])


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
    from skin_model.metadata import MISSING

    m = np.repeat(MISSING[None], len(x), axis=0) if metadata is None else metadata
    return [x, np.asarray(m, dtype=np.float32)]


def _infer_fn(bundle: ModelBundle):
    """A compiled function mapping (images, metadata) to (OOD feature groups..., probs)."""
    if bundle._infer is None:
        import keras

        model = bundle.model
        two = keras.Model(model.inputs, [*ood_outputs(model, ood_layers(bundle)), model.output])
        meta = takes_metadata(model)
        call = (
            (lambda x, m: two([x, m], training=False))
            if meta
            else (lambda x, m: two(x, training=False))
        )
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            from skin_model.metadata import DIM

            spec = tf.TensorSpec([None, bundle.input_size, bundle.input_size, 3], tf.float32)
            mspec = tf.TensorSpec([None, DIM], tf.float32)
            bundle._infer = tf.function(call, input_signature=[spec, mspec])
        else:
            bundle._infer = call
    return bundle._infer


def dihedral_views(batch: np.ndarray, n: int = 8) -> np.ndarray:
    """The first ``n`` of the 8 rotations/flips of each image (4: the rotations), view-major:
    (N, S, S, C) -> (n * N, S, S, C).
    """
    views = []
    for flip in (False, True):
        base = batch[:, :, ::-1] if flip else batch
        views.extend(np.rot90(base, k, axes=(1, 2)) for k in range(4))
    return np.ascontiguousarray(np.concatenate(views[:n], axis=0))


def tta_views(value) -> int:
    """Views averaged by test-time augmentation: ``True`` = 8 (older configs), ``False`` = 1."""
    if isinstance(value, bool) or value is None:
        return 8 if value else 1
    return int(value)


def raw_outputs(
    bundle: ModelBundle,
    batch: np.ndarray,
    tta: bool | int,
    chunk: int = 16,
    metadata: np.ndarray | None = None,
):
    """Uncalibrated probabilities and identity-view features for a float batch.

    Args:
        bundle: The loaded model.
        batch: (N, S, S, 3) float32 in [0, 255].
        tta: Views to average the probabilities over (1 = none, 4 = rotations, 8 =
            rotations and flips; ``True`` = 8).
        chunk: Images per model call (16 keeps peak memory under 1 GB on the CPU; larger
            batches gained little speed).
        metadata: (N, DIM) patient-context vectors (None: none given). A two-input
            network reads them; a model with ``context_fusion`` in its config also
            multiplies in its context model's posterior (late fusion).

    Returns:
        ``(probs (N, K), [feature group (N, F_g) of the identity view, ...])``.
    """
    from skin_model.metadata import MISSING

    infer = _infer_fn(bundle)
    if metadata is None:
        metadata = np.repeat(MISSING[None], len(batch), axis=0)
    given = np.asarray(metadata, dtype=np.float32)
    fusion = bundle.config.get("context_fusion")
    metadata = given if bundle.feeds_context else np.repeat(MISSING[None], len(batch), axis=0)
    probs_out, groups_out = [], []
    views = tta_views(tta)
    step = max(1, chunk // views)  # same memory per call whatever the views
    for start in range(0, len(batch), step):
        part = batch[start : start + step]
        x = dihedral_views(part, views) if views > 1 else part
        m = metadata[start : start + step]
        m = np.tile(m, (views, 1)) if views > 1 else m
        with bundle.lock:
            *groups, probs = infer(x.astype(np.float32), m)
        probs = np.asarray(probs)
        n = len(part)
        probs_out.append(probs.reshape(-1, n, probs.shape[-1]).mean(axis=0))
        groups_out.append([np.asarray(g)[:n] for g in groups])
    if not probs_out:
        raise ValueError("raw_outputs needs at least one image")
    groups = [np.concatenate([chunk[i] for chunk in groups_out]) for i in range(len(groups_out[0]))]
    return fuse_context(np.concatenate(probs_out), given, fusion), groups


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
) -> list[Prediction]:
    """Classify decoded RGB uint8 images with calibration, TTA and the OOD check.

    Args:
        bundle: The loaded model.
        images: Decoded images of any size (see :func:`skin_model.imaging.decode_image`).
        prevalence: Malignant share of the population seen; probabilities and the risk
            are re-weighted to it (Bayes' rule). ``None``: the training data's share.
        contexts: Optional patient context per image (a model without the metadata
            input ignores it).
        chunk: Images per model call (see :func:`raw_outputs`; smaller = less memory).

    Returns:
        One :class:`Prediction` per image, in order.
    """
    if not images:
        return []
    size = bundle.input_size
    batch = np.stack([resize_for_model(im, size) for im in images]).astype(np.float32)
    contexts = list(contexts) if contexts is not None else [None] * len(images)
    use_meta = bundle.uses_context
    meta = np.stack([encode(c) for c in contexts]) if use_meta else None
    views = tta_views(bundle.config.get("tta", 1))
    raw, feats = raw_outputs(bundle, batch, tta=views, chunk=chunk, metadata=meta)
    prior = bundle.class_prior
    probs = calibrated_probabilities(raw, prior, float(bundle.config.get("temperature", 1.0)))
    decisions = decide(raw, probs, prior)
    p_mal = malignant_probability(probs)
    thresholds = np.array([threshold_for(bundle, c) for c in contexts])
    flagged = p_mal >= thresholds
    entropy = normalised_entropy(raw)
    if bundle.ood_stats is not None:
        limits = bundle.config.get("ood_group_limits") or [1.0] * len(bundle.ood_stats)
        dist = ood_score(ood_distances(feats, bundle.ood_stats), limits)
        ood_limit = float(bundle.config["ood_threshold"])
    else:
        dist, ood_limit = [None] * len(images), float("inf")
    return [
        Prediction(
            probabilities=probs[i],
            malignant_probability=float(p_mal[i]),
            suspicious=bool(flagged[i]),
            unsure=bool(raw[i].max() < UNSURE_TOP_PROBABILITY or entropy[i] > UNSURE_ENTROPY),
            ood_distance=None if dist[i] is None else float(dist[i]),
            looks_dermoscopic=dist[i] is None or bool(dist[i] <= ood_limit),
            decision=int(decisions[i]),
            context=contexts[i] if use_meta else None,
            threshold=float(thresholds[i]),
        ).at_prevalence(bundle.malignant_share, prevalence)
        for i in range(len(images))
    ]


def threshold_for(bundle: ModelBundle, context: PatientContext | None) -> float:
    """The referral threshold for a case: the metadata threshold (chosen on calibration
    data with the patient context) when any field is given to a two-input model, else the
    image-only one.
    """
    with_meta = bundle.config.get("malignant_threshold_metadata")
    if with_meta is not None and context is not None and context.given:
        return float(with_meta)
    return float(bundle.config["malignant_threshold"])


def display_threshold(
    bundle: ModelBundle, prevalence: float | None = None, threshold: float | None = None
) -> float:
    """The referral threshold on the risk scale shown at ``prevalence``.

    A case is flagged when its risk at the training prevalence reaches the shipped
    threshold; at another prevalence the same cases are flagged (so the measured
    sensitivity still holds) and the threshold moves with the risk.
    """
    t = float(bundle.config["malignant_threshold"] if threshold is None else threshold)
    if prevalence is None or not bundle.malignant_share:
        return t
    return float(adjust_prevalence(t, bundle.malignant_share, prevalence))
