"""The one path from pixels to a case result, shared by the app, the CLI and the load test:
decode and quality gate (:func:`decode_upload`), the network over every image of each case
(a case of several images: the mean of their outputs), the post-hoc layer at the clinic's
prevalence, the "not dermoscopic" detector, the verdict (:func:`assess`), and the heatmap of
a stated class with the details the result used (:func:`case_heatmap`).

Nothing here writes or logs an image or a patient's details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from skin_model import CLASSES
from skin_model.data.imaging import ImageError, decode_image
from skin_model.data.metadata import PatientContext, encode
from skin_model.data.quality import check
from skin_model.runtime.advice import Verdict, verdict
from skin_model.runtime.clinic import FALLBACK_SHARE
from skin_model.runtime.inference import ModelBundle, Prediction, display_threshold, predict_images


@dataclass
class Upload:
    """One uploaded file and what became of it.

    Attributes:
        key: Its identity (content digest, plus a count for the same file uploaded twice).
        name: The file name as given (untrusted text: shown and written as plain text).
        image: The decoded image (None when it could not be decoded).
        error: Why it could not be decoded.
        quality: What the quality gate found (keys of :data:`skin_model.data.quality.MESSAGES`).
    """

    key: str
    name: str
    image: np.ndarray | None = None
    error: str = ""
    quality: list[str] = field(default_factory=list)


def decode_upload(key: str, name: str, data: bytes) -> Upload:
    """Decode one file's bytes and run the quality gate; a bad file gets its own error."""
    try:
        image = decode_image(data)
    except ImageError as exc:
        return Upload(key, name, error=str(exc))
    return Upload(key, name, image, quality=check(image))


@dataclass(frozen=True)
class CaseInput:
    """One lesion to classify: its images and the patient details given for it."""

    uploads: tuple[Upload, ...]
    context: PatientContext | None = None

    @property
    def good(self) -> list[Upload]:
        """Its images that could be decoded."""
        return [u for u in self.uploads if u.image is not None]


@dataclass(frozen=True)
class Assessment:
    """A case's result at the clinic's prevalence.

    Attributes:
        prediction: Probabilities, risk and threshold at that prevalence (None: no image
            of the case could be decoded).
        verdict: The decision (``refer``, ``tier``, ``risk``) and its wording.
        quality: What the quality gate found in its images (each once).
    """

    prediction: Prediction | None
    verdict: Verdict | None
    quality: tuple[str, ...] = ()


def network_predictions(
    bundle: ModelBundle, cases: Sequence[CaseInput], chunk: int = 16
) -> list[Prediction | None]:
    """Each case's prediction at the training prevalence (the part worth caching): one
    batch over every decoded image, a case's images pooled.
    """
    images, contexts, groups, owners = [], [], [], []
    for i, case in enumerate(cases):
        if case.good:
            owners.append(i)
        for upload in case.good:
            images.append(upload.image)
            contexts.append(case.context)
            groups.append(len(owners) - 1)
    out: list[Prediction | None] = [None] * len(cases)
    if images:
        preds = predict_images(bundle, images, None, contexts, chunk, groups)
        for i, pred in zip(owners, preds, strict=True):
            out[i] = pred
    return out


def judge(
    bundle: ModelBundle,
    prediction: Prediction | None,
    prevalence: float | None,
    quality: Sequence[str] = (),
) -> Assessment:
    """A training-prevalence prediction at the clinic's ``prevalence`` with its verdict.

    Args:
        bundle: The loaded model.
        prediction: From :func:`network_predictions` (None: nothing decoded).
        prevalence: The clinic's malignant share (None: the training data's).
        quality: The quality gate's findings for the case's images.
    """
    quality = tuple(dict.fromkeys(quality))
    if prediction is None:
        return Assessment(None, None, quality)
    shown = prediction.at_prevalence(bundle.posthoc, prevalence)
    shown_at = prevalence if prevalence is not None else bundle.malignant_share
    v = verdict(
        shown,
        prediction.base_risk,
        prediction.base_threshold,
        bundle.tiers,
        shown_at or FALLBACK_SHARE,
        display_threshold(bundle, prevalence),
        list(quality),
        int(bundle.config.tta),
    )
    return Assessment(shown, v, quality)


def assess(
    bundle: ModelBundle,
    cases: Sequence[CaseInput],
    prevalence: float | None,
    chunk: int = 16,
    predictions: Sequence[Prediction | None] | None = None,
) -> list[Assessment]:
    """Every case's result at ``prevalence``: network, post-hoc layer, detector, verdict.

    Args:
        bundle: The loaded model.
        cases: The cases.
        prevalence: The clinic's malignant share (None: the training data's).
        chunk: Images per network call.
        predictions: Their training-prevalence predictions if already known (a cache).
    """
    if predictions is None:
        predictions = network_predictions(bundle, cases, chunk)
    return [
        judge(bundle, pred, prevalence, [q for u in case.good for q in u.quality])
        for case, pred in zip(cases, predictions, strict=True)
    ]


def explained_class(prediction: Prediction) -> str:
    """The class a heatmap explains unless the user picks another: the headline (most
    probable) class, the first bar of the chart.
    """
    return prediction.most_probable_class


def case_heatmap(
    bundle: ModelBundle,
    image: np.ndarray,
    context: PatientContext | None,
    class_code: str,
    method: str | None = None,
    views: int | None = None,
) -> np.ndarray:
    """Where the model looked for ``class_code`` in one image, with the patient details
    the result used when the network reads them, averaged over the ``views`` its result
    took (``Prediction.views``; None: the model's test-time views).

    Returns:
        A float heatmap in [0, 1] of the image's size.
    """
    from skin_model.runtime.explain import explain

    meta = encode(context) if bundle.feeds_context else None
    return explain(bundle, image, CLASSES.index(class_code), method, meta, views=views)
