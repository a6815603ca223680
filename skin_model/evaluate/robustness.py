"""The same lesions saved or captured another way: changed copies of held-out images, each
scored beside the plain images through the app's own path (file bytes → decoder →
pipeline), with what the change costs in balanced accuracy and malignant AUC and how many
referral decisions it flips.

The changes are what other dermatoscopes and export paths do: a black round field of view
(contact dermatoscopes), a PNG with transparent corners (a round field of view exported
with alpha), warm and cool colour casts of 10 % per channel, a darker exposure, rotation by
a quarter turn each way (Pillow's 90 degrees is counter-clockwise, 270 clockwise) and by 15
degrees, JPEG re-compression at quality 60, and a half-size file.

    python -m skin_model robustness models/default --split val --out robustness.json
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from skin_model import CLASSES, MALIGNANT


def jpeg_file(image: np.ndarray, quality: int = 95) -> bytes:
    """The image saved as a JPEG file (at 95: the plain copy each change is scored against)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def round_mask(h: int, w: int, radius: float = 0.42) -> np.ndarray:
    """True inside a centred circle of ``radius`` x the diagonal (it cuts the corners)."""
    yy, xx = np.ogrid[:h, :w]
    r = radius * float(np.hypot(h, w))
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r


def round_field(image: np.ndarray) -> bytes:
    """Black outside a centred circle that cuts the corners."""
    inside = round_mask(*image.shape[:2])
    return jpeg_file(np.where(inside[..., None], image, 0).astype(np.uint8))


def transparent_corners(image: np.ndarray) -> bytes:
    """A PNG whose corners outside the same circle are transparent."""
    alpha = np.where(round_mask(*image.shape[:2]), 255, 0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.dstack([image, alpha]), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def cast(gains: tuple[float, float, float]) -> Callable[[np.ndarray], bytes]:
    """A colour cast: per-channel gains."""

    def change(image: np.ndarray) -> bytes:
        out = np.clip(image.astype(np.float32) * np.asarray(gains, np.float32), 0, 255)
        return jpeg_file(out.astype(np.uint8))

    return change


def rotated(degrees: float) -> Callable[[np.ndarray], bytes]:
    """Rotated about the centre (corners filled black, the size kept)."""

    def change(image: np.ndarray) -> bytes:
        pil = Image.fromarray(image)
        if degrees % 90 == 0:
            return jpeg_file(np.asarray(pil.rotate(degrees, expand=True)))
        return jpeg_file(np.asarray(pil.rotate(degrees, resample=Image.Resampling.BILINEAR)))

    return change


def recompressed(image: np.ndarray) -> bytes:
    """Saved again as a JPEG of quality 60."""
    return jpeg_file(image, 60)


def half_size(image: np.ndarray) -> bytes:
    """Saved at half the width and height."""
    h, w = image.shape[:2]
    return jpeg_file(np.asarray(Image.fromarray(image).resize((w // 2, h // 2), Image.LANCZOS)))


CHANGES: dict[str, Callable[[np.ndarray], bytes]] = {
    "round field of view": round_field,
    "transparent corners (PNG)": transparent_corners,
    "warm cast +10%": cast((1.1, 1.0, 0.9)),
    "cool cast +10%": cast((0.9, 1.0, 1.1)),
    "darker exposure -15%": cast((0.85, 0.85, 0.85)),
    "rotated 90°": rotated(90),
    "rotated 270°": rotated(270),
    "rotated 15°": rotated(15),
    "JPEG quality 60": recompressed,
    "half-size file": half_size,
}
"""Each change, from the decoded original to the file bytes a clinic would upload."""


def changed_inputs(
    images: list[np.ndarray], size: int | tuple[int, int], change: Callable[[np.ndarray], bytes]
) -> np.ndarray:
    """``images`` saved under ``change``, decoded as the app decodes a file and resized to
    a network's input (a side or ``(height, width)``): (N, height, width, 3) uint8.
    """
    from skin_model.data.imaging import decode_image, resize_for_model

    return np.stack([resize_for_model(decode_image(change(im)), size) for im in images])


def operating_threshold(risk: np.ndarray, malignant: np.ndarray, sensitivity: float) -> float:
    """The highest risk threshold that refers ``sensitivity`` of the malignant rows."""
    return float(np.quantile(risk[malignant], 1.0 - sensitivity, method="lower"))


def network_robustness(
    predict: Callable[[np.ndarray], np.ndarray],
    images: list[np.ndarray],
    labels: np.ndarray,
    size: int | tuple[int, int],
    sensitivity: float = 0.9,
) -> dict:
    """Every change of :data:`CHANGES` scored by a bare network (a cross-validation fold's
    model, no post-hoc layer): decisions by argmax, referral at the plain images' threshold
    of ``sensitivity`` (an operating point to count flips at, not a reported figure).

    Args:
        predict: ``(N, height, width, 3) uint8 -> (N, K)`` class probabilities.
        images: Decoded originals.
        labels: (N,) class indices.
        size: The network's input side, or its ``(height, width)``.
        sensitivity: Malignant sensitivity of the referral operating point.

    Returns:
        ``{"plain": {balanced_accuracy, malignant_auc}, "changes": {name: {...,
        balanced_accuracy_cost, auc_cost, diagnoses_changed, referrals_changed}}}``.
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from skin_model.data.imaging import resize_for_model
    from skin_model.model.calibration import is_malignant, malignant_probability, normalise_rows

    malignant = is_malignant(labels).astype(bool)

    def figures(probs: np.ndarray) -> dict:
        risk = malignant_probability(normalise_rows(np.asarray(probs, dtype=float)))
        return {
            "balanced_accuracy": float(balanced_accuracy_score(labels, probs.argmax(axis=1))),
            "malignant_auc": float(roc_auc_score(malignant, risk)),
            "decision": probs.argmax(axis=1),
            "risk": risk,
        }

    plain = figures(predict(np.stack([resize_for_model(im, size) for im in images])))
    threshold = operating_threshold(plain["risk"], malignant, sensitivity)
    out = {}
    for name, change in CHANGES.items():
        s = figures(predict(changed_inputs(images, size, change)))
        out[name] = {
            "balanced_accuracy": s["balanced_accuracy"],
            "malignant_auc": s["malignant_auc"],
            "balanced_accuracy_cost": plain["balanced_accuracy"] - s["balanced_accuracy"],
            "auc_cost": plain["malignant_auc"] - s["malignant_auc"],
            "diagnoses_changed": float(np.mean(s["decision"] != plain["decision"])),
            "referrals_changed": float(
                np.mean((s["risk"] >= threshold) != (plain["risk"] >= threshold))
            ),
        }
    keep = ("balanced_accuracy", "malignant_auc")
    return {"plain": {k: plain[k] for k in keep}, "changes": out, "threshold": threshold}


def score(bundle, files: list[bytes], labels: np.ndarray) -> dict:
    """Balanced accuracy, malignant AUC and the referral flags of files, through the app's
    decoder and pipeline (image only, the training prevalence).
    """
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from skin_model.runtime.pipeline import CaseInput, assess, decode_upload

    cases = [CaseInput((decode_upload(str(i), str(i), f),)) for i, f in enumerate(files)]
    results = assess(bundle, cases, None, chunk=32)
    decisions = np.array([r.prediction.decision for r in results])
    risk = np.array([r.prediction.malignant_probability for r in results])
    malignant = np.isin(np.asarray(CLASSES)[labels], list(MALIGNANT))
    return {
        "balanced_accuracy": float(balanced_accuracy_score(labels, decisions)),
        "malignant_auc": float(roc_auc_score(malignant, risk)),
        "refer": [bool(r.verdict.refer) for r in results],
    }


def robustness(bundle, images: list[np.ndarray], labels: np.ndarray) -> dict:
    """Every change of :data:`CHANGES` against the plain files (JPEG at quality 95).

    Returns:
        ``{"plain": {...}, "changes": {name: {balanced_accuracy, malignant_auc,
        balanced_accuracy_cost, auc_cost, referrals_changed}}, "n_images"}``.
    """
    plain = score(bundle, [jpeg_file(im) for im in images], labels)
    out = {}
    for name, change in CHANGES.items():
        s = score(bundle, [change(im) for im in images], labels)
        flips = np.mean(np.array(s["refer"]) != np.array(plain["refer"]))
        out[name] = {
            "balanced_accuracy": s["balanced_accuracy"],
            "malignant_auc": s["malignant_auc"],
            "balanced_accuracy_cost": plain["balanced_accuracy"] - s["balanced_accuracy"],
            "auc_cost": plain["malignant_auc"] - s["malignant_auc"],
            "referrals_changed": float(flips),
        }
    plain.pop("refer")
    return {"n_images": len(images), "plain": plain, "changes": out}


# (key, label, ceiling): what a changed copy may cost at the most (the model-quality issue's
# targets); each is judged on the largest cost over all changes of one scored part.
CHANGED_COPY_TARGETS = (
    ("balanced_accuracy_cost", "balanced accuracy lost", 0.03),
    ("auc_cost", "malignant AUC lost", 0.02),
    ("referrals_changed", "referrals changed", 0.05),
)


def cost_text(key: str, value: float) -> str:
    """A changed-copy cost as tables show it: a share of referrals in %, else 3 decimals."""
    return f"{value:.1%}" if key == "referrals_changed" else f"{value:.3f}"


def largest_costs(result: dict) -> dict[str, dict]:
    """The largest of each :data:`CHANGED_COPY_TARGETS` cost over a result's changes.

    Args:
        result: A :func:`robustness` or :func:`run` result.

    Returns:
        ``{key: {"value", "change", "goal", "met"}}``: the largest cost, the change that
        caused it, its ceiling and whether it stays within it.
    """
    out = {}
    for key, _label, goal in CHANGED_COPY_TARGETS:
        change, row = max(result["changes"].items(), key=lambda kv: kv[1][key])
        out[key] = {"value": row[key], "change": change, "goal": goal, "met": row[key] <= goal}
    return out


def run(model_dir: Path, data_dir: Path, split: str, out: Path | None, limit: int = 0) -> dict:
    """Score one part of a model directory's ``split.csv`` (e.g. ``val``: chosen on, never
    test), or parts pooled (``val,calib``: twice the images, so a ship rule written on
    validation is less at the mercy of a rare class's few images), and write the JSON to
    ``out``.
    """
    import pandas as pd

    from skin_model.data.imaging import decode_image
    from skin_model.runtime.inference import load_bundle

    parts = pd.read_csv(Path(model_dir) / "split.csv")
    rows = parts[parts["split"].isin(split.split(","))]
    if limit:
        rows = rows.head(limit)
    images = [
        decode_image((Path(data_dir) / "images" / f"{i}.jpg").read_bytes())
        for i in rows["image_id"]
    ]
    labels = np.array([CLASSES.index(d) for d in rows["dx"]])
    result = {
        "model": str(model_dir),
        "split": split,
        **robustness(load_bundle(model_dir), images, labels),
    }
    if out is not None:
        Path(out).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
