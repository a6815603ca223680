"""Evaluating a loaded model on labelled data: metrics with lesion-bootstrap intervals,
heatmap energy in the lesion boxes, the metadata-only baseline, per-image predictions,
and ``evaluate`` on a folder. Finalising a trained network is :mod:`skin_model.train.finalise`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model import CLASSES
from skin_model.data.dataset import class_indices
from skin_model.data.imaging import decode_image
from skin_model.data.metadata import ContextModel
from skin_model.evaluate.metrics import bootstrap_intervals, compute_metrics
from skin_model.runtime.inference import ModelBundle, model_outputs, predict_images


def cam_ratios(
    bundle: ModelBundle,
    boxes: pd.DataFrame,
    n: int = 150,
    seed: int = 0,
    maps: Sequence[tuple[str, str]] = (),
) -> dict:
    """Heatmap energy inside the lesion box over the box's area share, on ``n`` images,
    for each ``(method, layer)`` of ``maps``; every image is decoded and predicted once.

    Args:
        bundle: Loaded model.
        boxes: Rows with ``path``, ``top``, ``bottom``, ``left``, ``right``.
        n: Number of images sampled.
        seed: Sample seed.
        maps: ``(method, layer)`` pairs to read.

    Returns:
        ``{(method, layer): figures or None}``: mean and median ratio (1.0 = chance), the
        share of images above 1, and the ceiling (mean and median of 1 / box share: all
        energy inside the box); None where no map had a location (e.g. a 1x1 feature map).
    """
    from skin_model.runtime.explain import box_area_share, box_energy_ratio, explain

    rows = boxes.sample(min(n, len(boxes)), random_state=seed)
    images = [decode_image(Path(p).read_bytes()) for p in rows["path"]]
    preds = predict_images(bundle, images)
    box_list = [(int(r.top), int(r.bottom), int(r.left), int(r.right)) for r in rows.itertuples()]
    out = {}
    for method, layer in maps:
        ratios, ceilings = [], []
        for image, pred, box in zip(images, preds, box_list, strict=True):
            cam = explain(bundle, image, pred.decision, method, layer=layer, views=pred.views)
            ratios.append(box_energy_ratio(cam, box))
            ceilings.append(1 / box_area_share(box, cam.shape))
        ok = np.isfinite(ratios)
        r, best = np.array(ratios)[ok], np.array(ceilings)[ok]
        out[(method, layer)] = (
            {
                "method": method,
                "layer": layer,
                "n_images": len(r),
                "mean_ratio": float(r.mean()),
                "median_ratio": float(np.median(r)),
                "share_above_1": float(np.mean(r > 1)),
                "ceiling_mean_ratio": float(best.mean()),
                "ceiling_median_ratio": float(np.median(best)),
            }
            if ok.any()
            else None
        )
    return out


def image_scores(bundle, images: list[np.ndarray]) -> np.ndarray:
    """The detector score of each decoded image (batches of 64)."""
    out = []
    for start in range(0, len(images), 64):
        out += [p.ood_score for p in predict_images(bundle, images[start : start + 64])]
    return np.array(out, dtype=float)


def detector_separation(bundle, in_scores: np.ndarray, n_synthetic: int = 100) -> dict:
    """How well the flag separates held-out HAM10000 images from synthetic patterns and
    from real photographs that are not dermoscopy.

    Args:
        bundle: Loaded model with its detector.
        in_scores: Scores of HAM10000 test images that fitted nothing.
        n_synthetic: Number of synthetic non-dermoscopic images.

    Returns:
        ``{"synthetic": report, "photos": report + sources and misses}``; ``photos`` is
        None where scikit-image (a dev requirement) is missing.
    """
    limit = float(bundle.detector.threshold_)
    from skin_model.model.ood import ood_report, synthetic_non_dermoscopic

    d_fake = image_scores(bundle, synthetic_non_dermoscopic(n_synthetic))
    out = {
        "synthetic": {
            **ood_report(in_scores, d_fake, limit),
            "kinds": ["flat colour", "text document", "noise", "stripes", "gradient"],
        },
        "photos": None,
    }
    try:
        from skin_model.data.photos import reference_photos
    except ModuleNotFoundError:
        return out
    photos = reference_photos()
    d_photo = image_scores(bundle, [im for _, im in photos])
    missed = [label for (label, _), d in zip(photos, d_photo, strict=True) if d <= limit]
    out["photos"] = {
        **ood_report(in_scores, d_photo, limit),
        "sources": "scikit-image, matplotlib and scikit-learn sample photographs (whole and "
        "quadrant crops) and scikit-image's 100 LFW face photographs",
        "not_flagged": missed,
    }
    return out


def evaluate_split(
    bundle: ModelBundle,
    images: np.ndarray,
    y: np.ndarray,
    lesions: np.ndarray,
    threshold: float,
    metadata: np.ndarray | None = None,
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, list]:
    """Metrics with lesion-bootstrap intervals of a finalised bundle on labelled images.

    Args:
        bundle: The model with its post-hoc layer (prior, temperature) and TTA.
        images: (N, S, S, 3) float32 images at the input size.
        y: (N,) true class indices.
        lesions: (N,) lesion ids (for the intervals).
        threshold: Malignant threshold to report the operating point at.
        metadata: (N, DIM) patient-context vectors, or None (image only).

    Returns:
        ``(metrics, probabilities, decisions, fused outputs, detector features)``.
    """
    given = None if metadata is None else np.ones(len(images), bool)  # every context given
    network, feats, _ = model_outputs(bundle, images, metadata, given)
    out = bundle.posthoc.apply(network, metadata)
    probs, decisions = out.probabilities, out.decisions
    metrics = compute_metrics(y, probs, threshold, decisions=decisions)
    metrics["intervals"] = bootstrap_intervals(y, probs, lesions, threshold, decisions=decisions)
    metrics["intervals_method"] = (
        "95% percentile bootstrap over test lesions (500 resamples of whole lesions)"
    )
    return metrics, probs, decisions, out.fused, feats


def metadata_only_baseline(
    context_model: ContextModel, m_test: np.ndarray, y_test: np.ndarray
) -> dict:
    """What the patient context predicts without the image (so the fused model is seen not
    to lean on it): the class-balanced logistic regression on age, sex and site alone.

    Args:
        context_model: The :class:`~skin_model.data.metadata.ContextModel` of the training part.
        m_test: (N, DIM) encoded test contexts.
        y_test: (N,) test class indices.

    Returns:
        Test balanced accuracy, macro AUC, malignant AUC and melanoma AUC.
    """
    probs = context_model.predict_proba(m_test, len(CLASSES))
    m = compute_metrics(y_test, probs, 0.5)
    return {
        "model": "logistic regression (class-balanced) on the encoded age, sex and site",
        "balanced_accuracy": m["balanced_accuracy"],
        "macro_auc": m["macro_auc"],
        "malignant_auc": m["malignant"]["auc"],
        "mel_auc": m["per_class"]["mel"]["auc"],
    }


def write_predictions(
    path: Path, truth, probs: np.ndarray, image_ids, decisions: np.ndarray | None = None
) -> None:
    """Write per-image test probabilities and decisions (so anyone can re-check the
    metrics).
    """
    df = pd.DataFrame(probs.round(6), columns=list(CLASSES))
    df.insert(
        0, "decision", [CLASSES[i] for i in (probs.argmax(1) if decisions is None else decisions)]
    )
    df.insert(0, "dx", list(truth))
    df.insert(0, "image_id", list(image_ids))
    df.to_csv(path, index=False)


def evaluate_frame(
    bundle: ModelBundle, df: pd.DataFrame, batch: int = 256, use_metadata: bool = True
) -> dict:
    """Metrics of a loaded model on labelled rows (``path``, ``dx``).

    Args:
        bundle: Loaded model with its config (temperature, TTA, threshold).
        df: Cleaned metadata rows to evaluate.
        batch: Images decoded per step.
        use_metadata: Feed the rows' ``age``/``sex``/``localization`` to a model that
            takes patient context (invalid or absent values count as not given).

    Returns:
        The :func:`skin_model.evaluate.metrics.compute_metrics` dict plus ``probabilities``.
    """
    from skin_model.data.metadata import frame_contexts

    cols = [c for c in ("age", "sex", "localization") if c in df.columns]
    use = use_metadata and bool(cols) and bundle.uses_context
    contexts = frame_contexts(df) if use else [None] * len(df)
    probs, decisions = [], []
    for start in range(0, len(df), batch):
        paths = df["path"].iloc[start : start + batch]
        images = [decode_image(Path(p).read_bytes()) for p in paths]
        preds = predict_images(bundle, images, None, contexts[start : start + batch])
        probs.extend(p.probabilities for p in preds)
        decisions.extend(p.decision for p in preds)
    probs = np.array(probs)
    metrics = compute_metrics(
        class_indices(df["dx"]), probs, bundle.posthoc.threshold_, decisions=np.array(decisions)
    )
    metrics["probabilities"] = probs
    metrics["patient_context"] = f"used ({', '.join(cols)})" if use else "not used"
    return metrics
