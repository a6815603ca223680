"""Evaluating a model on data: the finalisation after training and ``evaluate`` on a folder.

Validation decides test-time augmentation and the Grad-CAM layer; the calibration part
(validation lesions that chose nothing) fits the temperature, the malignant thresholds and
the out-of-distribution limit (:mod:`skin_model.calibration` holds the maths); the test
split is read once, with and without the patient context.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skin_model import CLASSES, __version__
from skin_model.artifacts import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    OOD_FILE,
    PREDICTIONS_FILE,
    sha256_file,
    write_json,
)
from skin_model.calibration import (
    DECISION_RULE,
    OOD_LAYERS,
    binary_calibration,
    calibrated_probabilities,
    choose_temperature,
    class_frequencies,
    decide,
    fit_ood_groups,
    fit_ood_limits,
    is_malignant,
    malignant_probability,
    ood_distances,
    ood_report,
    threshold_for_sensitivity,
)
from skin_model.data import class_indices
from skin_model.imaging import decode_image
from skin_model.inference import ModelBundle, predict_images, raw_outputs, write_ood
from skin_model.metadata import fit_context_model
from skin_model.metrics import (
    binary_operating_point,
    bootstrap_intervals,
    calibration_bins,
    compute_metrics,
    target_status,
)
from skin_model.settings import config_dict


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


def ood_scores(bundle: ModelBundle, images: list[np.ndarray]) -> np.ndarray:
    """The "not dermoscopic" score of each decoded image (batches of 64)."""
    out = []
    for start in range(0, len(images), 64):
        out += [p.ood_distance for p in predict_images(bundle, images[start : start + 64])]
    return np.array(out, dtype=float)


def ood_separation(bundle: ModelBundle, in_dist: np.ndarray, n_synthetic: int = 100) -> dict:
    """How well the "not dermoscopic" flag separates held-out HAM10000 images from
    synthetic patterns and from real photographs that are not dermoscopy.

    Args:
        bundle: Loaded model with its OOD statistics and ``ood_threshold``.
        in_dist: HAM10000 test images (uint8, model size) not used to fit anything.
        n_synthetic: Number of synthetic non-dermoscopic images.

    Returns:
        ``{"synthetic": report, "photos": report + sources and misses}``; ``photos`` is
        None where scikit-image (a dev requirement) is missing.
    """
    limit = float(bundle.config["ood_threshold"])
    d_in = ood_scores(bundle, list(in_dist))
    d_fake = ood_scores(bundle, synthetic_non_dermoscopic(n_synthetic))
    out = {
        "synthetic": {
            **ood_report(d_in, d_fake, limit),
            "kinds": ["flat colour", "text document", "noise", "stripes", "gradient"],
        },
        "photos": None,
    }
    try:
        from skin_model.photos import reference_photos
    except ModuleNotFoundError:
        return out
    photos = reference_photos()
    d_photo = ood_scores(bundle, [im for _, im in photos])
    missed = [label for (label, _), d in zip(photos, d_photo, strict=True) if d <= limit]
    out["photos"] = {
        **ood_report(d_in, d_photo, limit),
        "sources": "scikit-image, matplotlib and scikit-learn sample photographs (whole and "
        "quadrant crops) and scikit-image's 100 LFW face photographs",
        "not_flagged": missed,
    }
    return out


CAM_CANDIDATES = {
    "mobilenetv2": ("out_relu", "block_13_expand_relu", "block_6_expand_relu"),
    "skinnet": ("last_conv", "last_conv_relu"),
}
"""Post-activation layers (and the old default) Grad-CAM may read, per architecture."""


def choose_cam_layer(bundle: ModelBundle, boxes: pd.DataFrame | None, n: int = 100) -> dict:
    """The candidate layer whose Grad-CAM puts most energy in the lesion box (validation).

    Returns:
        ``{"layer": name, "mean_ratio_by_layer": {name: ratio}}``.
    """
    names = {layer.name for layer in bundle.model.layers}
    arch = bundle.config.get("architecture", "")
    candidates = [c for c in CAM_CANDIDATES.get(arch, ()) if c in names]
    if boxes is None or boxes.empty or len(candidates) < 2:
        return {"layer": candidates[0] if candidates else None, "mean_ratio_by_layer": {}}
    found = {c: cam_localisation(bundle, boxes, n, layer=c) for c in candidates}
    scores = {c: r["mean_ratio"] for c, r in found.items() if r is not None}
    best = max(scores, key=scores.get) if scores else candidates[0]
    return {"layer": best, "mean_ratio_by_layer": scores}


def cam_localisation(
    bundle: ModelBundle,
    boxes: pd.DataFrame,
    n: int = 150,
    seed: int = 0,
    layer: str | None = None,
):
    """Grad-CAM energy inside the lesion box over the box's area share, on ``n`` images.

    Args:
        bundle: Loaded model.
        boxes: Rows with ``path``, ``top``, ``bottom``, ``left``, ``right``.
        n: Number of images sampled.
        seed: Sample seed.
        layer: Layer to read (default: the bundle's ``cam_layer``).

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
        cam = explain(bundle, image, CLASSES.index(pred.top_class), layer=layer)
        box = (int(row.top), int(row.bottom), int(row.left), int(row.right))
        ratios.append(box_energy_ratio(cam, box))
        ceilings.append(1 / box_area_share(box, cam.shape))
    ok = np.isfinite(ratios)
    r, best = np.array(ratios)[ok], np.array(ceilings)[ok]
    if not ok.any():  # e.g. a 1x1 feature map: a flat heatmap has no location
        return None
    return {
        "method": "Grad-CAM",
        "layer": layer or bundle.config.get("cam_layer"),
        "n_images": len(r),
        "mean_ratio": float(r.mean()),
        "median_ratio": float(np.median(r)),
        "share_above_1": float(np.mean(r > 1)),
        "ceiling_mean_ratio": float(best.mean()),
        "ceiling_median_ratio": float(np.median(best)),
    }


TTA_CHOICES = (1, 4, 8)
"""Test-time augmentation views tried on validation (none, the 4 rotations, all 8)."""


def choose_tta(
    bundle: ModelBundle, x_val: np.ndarray, y_val: np.ndarray, min_gain: float
) -> tuple[int, dict]:
    """Views to average at test time, chosen on validation balanced accuracy: the fewest
    views within 0.005 of the best, and more than one only when that beats a single view
    by more than ``min_gain`` (each view costs a forward pass).

    Returns:
        ``(views, {"balanced_accuracy_views_<n>": score, ...})``.
    """
    scores = {}
    for n in TTA_CHOICES:
        probs, _ = raw_outputs(bundle, x_val, tta=n)
        scores[n] = float(balanced_accuracy_score(y_val, probs.argmax(1)))
    best = max(scores.values())
    views = min(n for n in TTA_CHOICES if scores[n] >= best - 0.005)
    if views > 1 and scores[views] <= scores[1] + min_gain:
        views = 1
    return views, {f"balanced_accuracy_views_{n}": v for n, v in scores.items()}


def context_fusion(cfg, context_model: dict | None) -> dict | None:
    """The late-fusion settings of ``cfg`` with its context model (fitted on the training
    part); None when ``cfg.context_fusion_power`` is 0 or there is no patient context.
    """
    if context_model is None or cfg.context_fusion_power <= 0:
        return None
    return {
        "power": float(cfg.context_fusion_power),
        "feed_network": bool(cfg.context_fusion_feed_network and cfg.metadata),
        "model": "class-balanced logistic regression on the encoded age, sex and site, "
        "fitted on the training part",
        **context_model,
    }


def fusion_text(fusion: dict | None) -> str:
    """How a model uses the patient context, in words."""
    if not fusion:
        return "network input"
    how = "network input and " if fusion["feed_network"] else ""
    return f"{how}late fusion (age/sex/site posterior^{fusion['power']:g})"


def split_counts(parts: dict) -> dict:
    """Images per class in each split."""
    return {s: {c: int(list(codes).count(c)) for c in CLASSES} for s, (_, codes) in parts.items()}


def output_prior(cfg, train_codes) -> list[float] | None:
    """The class prior the raw outputs are re-weighted by to reach the training frequencies.

    A logit-adjusted model's outputs assume a uniform prior: multiply by the training
    frequencies. A model trained with class weights ``w ∝ freq ** -power`` is undone by
    ``freq ** power``. Plain cross-entropy needs nothing (None).
    """
    freq = class_frequencies(train_codes)
    power = 1.0 if cfg.loss == "logit_adjusted" else float(cfg.class_weight_power)
    if power == 0:
        return None
    corr = freq**power
    return (corr / corr.sum()).round(8).tolist()


def finalise_model(
    model,
    cfg,
    parts: dict,
    out_dir: Path,
    fit_info: dict,
    boxes,
    rows: dict,
    metas: dict | None = None,
) -> dict:
    """Fit calibration, threshold and OOD limit on the calibration part, evaluate on test,
    write the artifacts.

    Validation (``val``) chose the epoch, the attempt and test-time augmentation; the
    calibration part (``calib``) chose nothing, so the temperature, the threshold's
    sensitivity interval and the OOD limit are fitted on it; the test split is read once.

    Args:
        model: The trained Keras model.
        cfg: The :class:`skin_model.settings.TrainConfig` used.
        parts: ``{"train"|"val"|"calib"|"test": (uint8 images at input size, codes)}``.
        out_dir: Model directory.
        fit_info: Epochs, best epoch, seconds and device of the fit.
        boxes: ``{"val"|"test": rows with lesion boxes}`` (or None) for choosing and
            checking the Grad-CAM layer.
        rows: ``{"calib"|"test": frame of image_id, lesion_id}`` in ``parts`` order.
        metas: ``{split: (N, DIM) patient-context vectors}`` for a two-input model; the
            test split is then evaluated with and without them.

    Returns:
        The dict written to ``metrics.json``.
    """
    out_dir = Path(out_dir)
    layers = OOD_LAYERS.get(cfg.architecture, ("features",))
    bundle = ModelBundle(
        model=model,
        config={"input_size": cfg.input_size, "ood_layers": list(layers)},
        model_dir=out_dir,
    )
    f32 = {s: x.astype(np.float32) for s, (x, _) in parts.items()}
    y = {s: class_indices(codes) for s, (_, codes) in parts.items()}
    prior = output_prior(cfg, parts["train"][1])
    train_mal = float(is_malignant(y["train"]).mean())
    groups_cal = rows["calib"]["lesion_id"].to_numpy()

    context_model = fit_context_model(metas["train"], y["train"]) if metas else None
    fusion = context_fusion(cfg, context_model)
    if fusion:
        bundle.config["context_fusion"] = fusion
    tta, tta_scores = choose_tta(bundle, f32["val"], y["val"], cfg.tta_min_gain)
    raw_val, _ = raw_outputs(bundle, f32["val"], tta=tta)
    raw_cal, feats_cal = raw_outputs(bundle, f32["calib"], tta=tta)
    y_cal, g_cal = y["calib"], groups_cal
    if metas:
        raw_val_m, _ = raw_outputs(bundle, f32["val"], tta=tta, metadata=metas["val"])
        raw_cal_m, _ = raw_outputs(bundle, f32["calib"], tta=tta, metadata=metas["calib"])
        # one temperature for both modes: fitted on the pooled calibration predictions
        pooled = np.concatenate([raw_cal, raw_cal_m])
        y_cal, g_cal = np.r_[y_cal, y_cal], np.r_[g_cal, g_cal]
    else:
        pooled = raw_cal
    temperature, t_info = choose_temperature(calibrated_probabilities(pooled, prior), y_cal, g_cal)
    q_cal = calibrated_probabilities(raw_cal, prior, temperature)
    thr = threshold_for_sensitivity(
        malignant_probability(q_cal), is_malignant(y["calib"]), groups_cal, cfg.target_sensitivity
    )
    thr_meta = None
    if metas:
        thr_meta = threshold_for_sensitivity(
            malignant_probability(calibrated_probabilities(raw_cal_m, prior, temperature)),
            is_malignant(y["calib"]),
            groups_cal,
            cfg.target_sensitivity,
        )
    _, feats_train = raw_outputs(bundle, f32["train"], tta=False)
    ood_stats = fit_ood_groups(feats_train)
    ood_limits, ood_threshold = fit_ood_limits(
        ood_distances(feats_cal, ood_stats), cfg.ood_quantile
    )

    config = {
        "version": __version__,
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "classes": list(CLASSES),
        "class_prior": prior,
        "malignant_share": round(train_mal, 6),
        "decision_rule": DECISION_RULE,
        "temperature": temperature,
        "tta": int(tta),
        "malignant_threshold": round(thr["threshold"], 6),
        "malignant_threshold_metadata": round(thr_meta["threshold"], 6) if thr_meta else None,
        "metadata_input": bool(metas),
        "context_fusion": fusion,
        "target_sensitivity": cfg.target_sensitivity,
        "ood_layers": bundle.config["ood_layers"],
        "ood_group_limits": [round(v, 4) for v in ood_limits],
        "ood_threshold": round(ood_threshold, 4),
        "trained_on": dt.date.today().isoformat(),
        "training": config_dict(cfg),
    }
    if cfg.architecture == "mobilenetv2" and cfg.weights == "nsfwjs":
        from skin_model.backbones import PROVENANCE

        config["weights_provenance"] = PROVENANCE
    from skin_model.models import inference_copy

    inference_copy(model).save(out_dir / MODEL_FILE)
    write_json(out_dir / CONFIG_FILE, config)
    write_ood(out_dir / OOD_FILE, ood_stats)
    bundle.config = config
    bundle.ood_stats = ood_stats

    test_rows = rows["test"]
    lesions = test_rows["lesion_id"].to_numpy()
    metrics, p_test, dec_test, raw_test = evaluate_split(
        bundle, f32["test"], y["test"], lesions, config["malignant_threshold"]
    )
    metrics["decision_rule"] = config["decision_rule"]
    metrics["calibration"]["ece_raw_outputs"] = calibration_bins(raw_test, y["test"])["ece"]
    metrics["malignant"]["calibration_raw_outputs_ece"] = binary_calibration(
        malignant_probability(raw_test), is_malignant(y["test"])
    )["ece"]
    metrics["malignant"]["training_share"] = train_mal
    metrics["evaluated_on"] = "test split (lesion-grouped), read once after all choices"
    metrics["calibration_fit"] = {
        "data": "calibration part: half of the validation lesions, which chose nothing",
        "n_images": len(y["calib"]),
        "n_lesions": len(np.unique(groups_cal)),
        "temperature": temperature,
        "temperature_check": t_info,
        "threshold": thr,
        "threshold_metadata": thr_meta,
        "ood_quantile": cfg.ood_quantile,
        "ood_layers": list(layers),
    }
    metrics["validation"] = {
        **tta_scores,
        "balanced_accuracy": float(balanced_accuracy_score(y["val"], raw_val.argmax(1))),
        "n_images": len(y["val"]),
        "malignant_auc": float(
            roc_auc_score(is_malignant(y["val"]), malignant_probability(raw_val))
        ),
    }
    metrics["calibration_fit"]["operating_point"] = binary_operating_point(
        is_malignant(y["calib"]), malignant_probability(q_cal), config["malignant_threshold"]
    )
    metrics["model"] = {
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "parameters": int(model.count_params()),
        "file_bytes": (out_dir / MODEL_FILE).stat().st_size,
        "sha256": sha256_file(out_dir / MODEL_FILE),
        "temperature": config["temperature"],
        "tta": config["tta"],
        "malignant_threshold": config["malignant_threshold"],
        "weights_provenance": config.get("weights_provenance"),
    }
    metrics["training"] = {**fit_info, "settings": config_dict(cfg)}
    metrics["split"] = split_counts(parts)
    metrics["ood"] = ood_separation(bundle, parts["test"][0])
    boxes = boxes or {}
    cam_choice = choose_cam_layer(bundle, boxes.get("val"))
    config["cam_layer"] = cam_choice["layer"]
    write_json(out_dir / CONFIG_FILE, config)
    metrics["cam_layer_choice"] = {**cam_choice, "chosen_on": "validation lesion boxes"}
    metrics["cam_localisation"] = cam_localisation(bundle, boxes.get("test"))
    write_predictions(
        out_dir / PREDICTIONS_FILE, parts["test"][1], p_test, test_rows["image_id"], dec_test
    )
    metrics["targets"] = target_status(metrics)
    if metas:
        metrics["validation"]["balanced_accuracy_with_metadata"] = float(
            balanced_accuracy_score(y["val"], raw_val_m.argmax(1))
        )
        with_meta, _, _, _ = evaluate_split(
            bundle,
            f32["test"],
            y["test"],
            lesions,
            config["malignant_threshold_metadata"],
            metas["test"],
        )
        with_meta["fusion"] = fusion_text(fusion)
        metrics["with_metadata"] = with_meta
        metrics["metadata_only_baseline"] = metadata_only_baseline(
            context_model, metas["test"], y["test"]
        )
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def evaluate_split(
    bundle: ModelBundle,
    images: np.ndarray,
    y: np.ndarray,
    lesions: np.ndarray,
    threshold: float,
    metadata: np.ndarray | None = None,
) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Metrics with lesion-bootstrap intervals of a finalised bundle on labelled images.

    Args:
        bundle: The model with its final config (prior, temperature, TTA).
        images: (N, S, S, 3) float32 images at the input size.
        y: (N,) true class indices.
        lesions: (N,) lesion ids (for the intervals).
        threshold: Malignant threshold to report the operating point at.
        metadata: (N, DIM) patient-context vectors, or None (image only).

    Returns:
        ``(metrics, probabilities, decisions, raw outputs)``.
    """
    prior = bundle.class_prior
    raw, _ = raw_outputs(bundle, images, tta=bundle.config["tta"], metadata=metadata)
    probs = calibrated_probabilities(raw, prior, float(bundle.config["temperature"]))
    decisions = decide(raw, probs, prior)
    metrics = compute_metrics(y, probs, threshold, decisions=decisions)
    metrics["intervals"] = bootstrap_intervals(y, probs, lesions, threshold, decisions=decisions)
    metrics["intervals_method"] = (
        "95% percentile bootstrap over test lesions (500 resamples of whole lesions)"
    )
    return metrics, probs, decisions, raw


def metadata_only_baseline(context_model: dict, m_test: np.ndarray, y_test: np.ndarray) -> dict:
    """What the patient context predicts without the image (so the fused model is seen not
    to lean on it): the class-balanced logistic regression on age, sex and site alone.

    Args:
        context_model: :func:`skin_model.metadata.fit_context_model` on the training part.
        m_test: (N, DIM) encoded test contexts.
        y_test: (N,) test class indices.

    Returns:
        Test balanced accuracy, macro AUC, malignant AUC and melanoma AUC.
    """
    from skin_model.metadata import context_posterior

    probs = context_posterior(context_model, m_test, len(CLASSES))
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
        The :func:`skin_model.metrics.compute_metrics` dict plus ``probabilities``.
    """
    from skin_model.metadata import frame_contexts

    cols = [c for c in ("age", "sex", "localization") if c in df.columns]
    use = use_metadata and bool(cols) and bundle.uses_context
    contexts = frame_contexts(df) if use else [None] * len(df)
    probs, decisions = [], []
    for start in range(0, len(df), batch):
        paths = df["path"].iloc[start : start + batch]
        images = [decode_image(Path(p).read_bytes()) for p in paths]
        preds = predict_images(bundle, images, None, contexts[start : start + batch])
        probs.extend(p.probabilities for p in preds)
        decisions.extend(CLASSES.index(p.top_class) for p in preds)
    probs = np.array(probs)
    metrics = compute_metrics(
        class_indices(df["dx"]),
        probs,
        float(bundle.config["malignant_threshold"]),
        decisions=np.array(decisions),
    )
    metrics["probabilities"] = probs
    metrics["patient_context"] = f"used ({', '.join(cols)})" if use else "not used"
    return metrics
