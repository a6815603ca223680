"""Everything fitted on validation after training, and evaluation of a model on data.

Validation decides the temperature, whether test-time augmentation is used, the
malignant threshold and the out-of-distribution limit; the test split is read once.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skin_model import CLASSES, __version__
from skin_model.evaluate import (
    apply_temperature,
    binary_operating_point,
    bootstrap_intervals,
    calibration_bins,
    choose_threshold,
    compute_metrics,
    fit_temperature,
    is_malignant,
    malignant_probability,
    target_status,
)
from skin_model.imaging import decode_image
from skin_model.inference import (
    CONFIG_FILE,
    MODEL_FILE,
    OOD_FILE,
    ModelBundle,
    mahalanobis,
    predict_images,
    raw_outputs,
    sha256_file,
)

PREDICTIONS_FILE = "test_predictions.csv"


def class_indices(codes) -> np.ndarray:
    """Class codes to indices in :data:`CLASSES` order."""
    return np.array([CLASSES.index(c) for c in codes], dtype=int)


def fit_ood(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf shrunk precision matrix of the training features."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(train_features.astype(np.float64))
    return lw.location_.astype(np.float32), lw.precision_.astype(np.float32)


def synthetic_non_dermoscopic(n: int, size: int = 160, seed: int = 0) -> list[np.ndarray]:
    """Images that are plainly not dermoscopy: flat colours, documents, noise, stripes.

    Args:
        n: Number of images.
        size: Side of each square image.
        seed: Random seed.

    Returns:
        ``n`` RGB uint8 arrays.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # flat colour
            im = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        elif kind == 1:  # a text document: dark lines on white
            im = np.full((size, size, 3), 245, dtype=np.uint8)
            for row in range(8, size - 8, 12):
                length = int(rng.integers(size // 3, size - 16))
                im[row : row + 3, 8 : 8 + length] = rng.integers(0, 60)
        elif kind == 2:  # noise
            im = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 3:  # stripes
            period = int(rng.integers(4, 24))
            stripe = (np.arange(size) // period % 2).astype(np.uint8) * 255
            im = np.repeat(np.repeat(stripe[None, :, None], size, 0), 3, 2)
        else:  # gradient
            ramp = np.linspace(0, 255, size, dtype=np.float32)
            im = np.stack(
                [
                    ramp[None, :].repeat(size, 0),
                    ramp[:, None].repeat(size, 1),
                    np.full((size, size), rng.integers(0, 256)),
                ],
                -1,
            ).astype(np.uint8)
        out.append(im)
    return out


def ood_separation(bundle: ModelBundle, in_dist: np.ndarray, n_synthetic: int = 100) -> dict:
    """How well the OOD flag separates HAM10000 images from non-dermoscopic ones.

    Args:
        bundle: Loaded model with its OOD statistics and ``ood_threshold``.
        in_dist: HAM10000 images (uint8, model size) not used to fit the statistics.
        n_synthetic: Number of synthetic non-dermoscopic images.

    Returns:
        AUROC of the distance, share of HAM10000 images flagged, share of synthetic
        images flagged.
    """
    fake = synthetic_non_dermoscopic(n_synthetic)
    d_in = [p.ood_distance for p in predict_images(bundle, list(in_dist))]
    d_out = [p.ood_distance for p in predict_images(bundle, fake)]
    limit = float(bundle.config["ood_threshold"])
    y = np.r_[np.zeros(len(d_in)), np.ones(len(d_out))]
    return {
        "threshold": limit,
        "auroc": float(roc_auc_score(y, np.r_[d_in, d_out])),
        "ham10000_flagged": float(np.mean(np.array(d_in) > limit)),
        "non_dermoscopic_flagged": float(np.mean(np.array(d_out) > limit)),
        "n_ham10000": len(d_in),
        "n_non_dermoscopic": len(d_out),
        "non_dermoscopic_kinds": ["flat colour", "text document", "noise", "stripes", "gradient"],
    }


def cam_localisation(bundle: ModelBundle, boxes: pd.DataFrame, n: int = 150, seed: int = 0):
    """Grad-CAM energy inside the lesion box over the box's area share, on ``n`` images.

    Args:
        bundle: Loaded model.
        boxes: Rows with ``path``, ``top``, ``bottom``, ``left``, ``right``.
        n: Number of images sampled.
        seed: Sample seed.

    Returns:
        Mean and median ratio (1.0 = chance), the share of images above 1, and the ceiling
        (mean and median of 1 / box share: all energy inside the box).
    """
    from skin_model.explain import box_area_share, box_energy_ratio, explain

    if boxes is None or boxes.empty:
        return None
    rows = boxes.sample(min(n, len(boxes)), random_state=seed)
    ratios, ceilings = [], []
    for row in rows.itertuples():
        image = decode_image(Path(row.path).read_bytes())
        pred = predict_images(bundle, [image])[0]
        cam = explain(bundle, image, CLASSES.index(pred.top_class))
        box = (int(row.top), int(row.bottom), int(row.left), int(row.right))
        ratios.append(box_energy_ratio(cam, box))
        ceilings.append(1 / box_area_share(box, cam.shape))
    ok = np.isfinite(ratios)
    r, best = np.array(ratios)[ok], np.array(ceilings)[ok]
    return {
        "method": "Grad-CAM",
        "n_images": len(r),
        "mean_ratio": float(r.mean()),
        "median_ratio": float(np.median(r)),
        "share_above_1": float(np.mean(r > 1)),
        "ceiling_mean_ratio": float(best.mean()),
        "ceiling_median_ratio": float(np.median(best)),
    }


def _choose_tta(
    bundle: ModelBundle, x_val: np.ndarray, y_val: np.ndarray, min_gain: float
) -> tuple[bool, dict]:
    """Use test-time augmentation (8x the compute) only when it raises validation balanced
    accuracy by more than ``min_gain``.
    """
    plain, _ = raw_outputs(bundle, x_val, tta=False)
    tta, _ = raw_outputs(bundle, x_val, tta=True)
    scores = {
        "balanced_accuracy_no_tta": float(balanced_accuracy_score(y_val, plain.argmax(1))),
        "balanced_accuracy_tta": float(balanced_accuracy_score(y_val, tta.argmax(1))),
    }
    use = scores["balanced_accuracy_tta"] > scores["balanced_accuracy_no_tta"] + min_gain
    return use, scores


def split_counts(parts: dict) -> dict:
    """Images per class in each split."""
    return {s: {c: int(list(codes).count(c)) for c in CLASSES} for s, (_, codes) in parts.items()}


def finalise_model(
    model, cfg, parts: dict, out_dir: Path, fit_info: dict, boxes, test_rows: pd.DataFrame
) -> dict:
    """Fit calibration/threshold/OOD on validation, evaluate on test, write the artifacts.

    Args:
        model: The trained Keras model (best epoch restored).
        cfg: The :class:`skin_model.training.TrainConfig` used.
        parts: ``{"train"|"val"|"test": (uint8 images, class codes)}``.
        out_dir: Model directory.
        fit_info: Epochs, best epoch, seconds and device of the fit.
        boxes: Test rows with lesion boxes (or None) for the Grad-CAM check.
        test_rows: ``image_id`` and ``lesion_id`` of the test part, in ``parts["test"]`` order.

    Returns:
        The dict written to ``metrics.json``.
    """
    from skin_model.training import METRICS_FILE, config_dict, write_json

    out_dir = Path(out_dir)
    bundle = ModelBundle(model=model, config={"input_size": cfg.input_size}, model_dir=out_dir)
    f32 = {s: x.astype(np.float32) for s, (x, _) in parts.items()}
    y = {s: class_indices(codes) for s, (_, codes) in parts.items()}

    tta, tta_scores = _choose_tta(bundle, f32["val"], y["val"], cfg.tta_min_gain)
    raw_val, feats_val = raw_outputs(bundle, f32["val"], tta=tta)
    temperature = round(fit_temperature(raw_val, y["val"]), 6)
    p_val = apply_temperature(raw_val, temperature)
    threshold = round(
        choose_threshold(
            is_malignant(y["val"]), malignant_probability(p_val), cfg.target_sensitivity
        ),
        6,
    )
    _, feats_train = raw_outputs(bundle, f32["train"], tta=False)
    mean, precision = fit_ood(feats_train)
    d_val = mahalanobis(feats_val, mean, precision)
    ood_threshold = float(np.quantile(d_val, cfg.ood_quantile))

    config = {
        "version": __version__,
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "classes": list(CLASSES),
        "temperature": temperature,
        "tta": bool(tta),
        "malignant_threshold": threshold,
        "target_sensitivity": cfg.target_sensitivity,
        "ood_threshold": round(ood_threshold, 4),
        "trained_on": dt.date.today().isoformat(),
        "training": config_dict(cfg),
    }
    model.save(out_dir / MODEL_FILE)
    write_json(out_dir / CONFIG_FILE, config)
    np.savez(out_dir / OOD_FILE, mean=mean, precision=precision)
    bundle.config = config
    bundle.ood_mean, bundle.ood_precision = mean, precision

    raw_test, _ = raw_outputs(bundle, f32["test"], tta=tta)
    p_test = apply_temperature(raw_test, temperature)
    metrics = compute_metrics(y["test"], p_test, threshold)
    metrics["calibration"]["ece_before_temperature"] = calibration_bins(raw_test, y["test"])["ece"]
    metrics["evaluated_on"] = "test split (lesion-grouped), read once after all choices"
    metrics["validation"] = {
        **tta_scores,
        "balanced_accuracy": float(balanced_accuracy_score(y["val"], p_val.argmax(1))),
        "ece_before_temperature": calibration_bins(raw_val, y["val"])["ece"],
        "ece": calibration_bins(p_val, y["val"])["ece"],
        "malignant_operating_point": binary_operating_point(
            is_malignant(y["val"]), malignant_probability(p_val), threshold
        ),
    }
    metrics["model"] = {
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "parameters": int(model.count_params()),
        "file_bytes": (out_dir / MODEL_FILE).stat().st_size,
        "sha256": sha256_file(out_dir / MODEL_FILE),
        "temperature": config["temperature"],
        "tta": config["tta"],
        "malignant_threshold": config["malignant_threshold"],
    }
    metrics["training"] = {**fit_info, "settings": config_dict(cfg)}
    metrics["split"] = split_counts(parts)
    metrics["ood"] = ood_separation(bundle, parts["test"][0])
    metrics["cam_localisation"] = cam_localisation(bundle, boxes)
    write_predictions(out_dir / PREDICTIONS_FILE, parts["test"][1], p_test, test_rows["image_id"])
    add_intervals(metrics, y["test"], p_test, test_rows["lesion_id"].to_numpy())
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def add_intervals(
    metrics: dict, y_idx: np.ndarray, probs: np.ndarray, lesion_ids: np.ndarray, n_boot: int = 500
) -> dict:
    """Add lesion-bootstrap intervals and the target check to a ``metrics.json`` dict.

    Args:
        metrics: The dict to update in place (its malignant threshold is used).
        y_idx: (N,) true class indices of the evaluated images.
        probs: (N, K) calibrated probabilities.
        lesion_ids: (N,) lesion id of each image.
        n_boot: Bootstrap resamples.

    Returns:
        ``metrics``, with ``intervals``, ``intervals_method`` and ``targets``.
    """
    threshold = metrics["malignant"]["operating_point"]["threshold"]
    metrics["intervals"] = bootstrap_intervals(y_idx, probs, lesion_ids, threshold, n_boot)
    metrics["intervals_method"] = (
        f"95% percentile bootstrap over test lesions ({n_boot} resamples of whole lesions)"
    )
    metrics["targets"] = target_status(metrics)
    return metrics


def write_predictions(path: Path, truth, probs: np.ndarray, image_ids) -> None:
    """Write per-image calibrated test probabilities (so anyone can re-check the metrics)."""
    df = pd.DataFrame(probs.round(6), columns=list(CLASSES))
    df.insert(0, "dx", list(truth))
    df.insert(0, "image_id", list(image_ids))
    df.to_csv(path, index=False)


def evaluate_frame(bundle: ModelBundle, df: pd.DataFrame, batch: int = 256) -> dict:
    """Metrics of a loaded model on labelled rows (``path``, ``dx``).

    Args:
        bundle: Loaded model with its config (temperature, TTA, threshold).
        df: Cleaned metadata rows to evaluate.
        batch: Images decoded per step.

    Returns:
        The :func:`skin_model.evaluate.compute_metrics` dict plus ``probabilities``.
    """
    probs = []
    for start in range(0, len(df), batch):
        paths = df["path"].iloc[start : start + batch]
        images = [decode_image(Path(p).read_bytes()) for p in paths]
        probs.extend(p.probabilities for p in predict_images(bundle, images))
    probs = np.array(probs)
    metrics = compute_metrics(
        class_indices(df["dx"]), probs, float(bundle.config["malignant_threshold"])
    )
    metrics["probabilities"] = probs
    return metrics
