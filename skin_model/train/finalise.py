"""Finalising a trained network into a model directory, one step per job.

1. **Choose on validation** the test-time augmentation (:func:`choose_tta`, whose outputs
   are kept for the validation figures) and, after step 2, the Grad-CAM layer.
2. **Fit the post-hoc layer** (:class:`~skin_model.model.posthoc.PostHoc`) and the "not
   dermoscopic" detector (:class:`~skin_model.model.ood.Detector`) on the calibration part,
   which chose nothing.
3. **Write the model directory once** (model, config, detector statistics, integrity).
4. **Evaluate the test split once** (and once more with the patient context), keeping the
   detector features of that pass for the detector's own figures.
5. **Explanation checks**: Grad-CAM energy in the lesion boxes, each image decoded and
   predicted once for every candidate layer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skin_model import CLASSES, __version__
from skin_model.data.dataset import class_indices
from skin_model.data.metadata import ContextModel
from skin_model.evaluate.evaluation import (
    cam_ratios,
    detector_separation,
    evaluate_split,
    metadata_only_baseline,
    write_predictions,
)
from skin_model.evaluate.metrics import (
    binary_operating_point,
    calibration_bins,
    lesion_level,
    risk_tiers,
    target_status,
)
from skin_model.model.architectures import spec_for
from skin_model.model.artifacts import (
    METRICS_FILE,
    MODEL_FILE,
    OOD_FILE,
    PREDICTIONS_FILE,
    sha256_file,
    write_integrity,
    write_json,
)
from skin_model.model.calibration import (
    ARGMAX_RULE,
    DECISION_RULE,
    binary_calibration,
    class_frequencies,
    class_weights,
    is_malignant,
    malignant_probability,
    weighted_rule,
)
from skin_model.model.config import ModelConfig, write_model_config
from skin_model.model.ood import Detector
from skin_model.model.posthoc import PostHoc
from skin_model.model.settings import config_dict
from skin_model.runtime.advice import HIGH_RISK
from skin_model.runtime.explain import COMPILED, bundle_cam_layer, bundle_cam_method
from skin_model.runtime.inference import (
    ModelBundle,
    network_outputs,
    second_look,
    takes_metadata,
)

TTA_CHOICES = (1, 4, 8)
"""Test-time augmentation views tried on validation (none, the 4 rotations, all 8)."""


@dataclass
class Parts:
    """The split parts of a finalisation, as the steps need them.

    Attributes:
        images: ``{part: (N, S, S, 3) float32 at the input size}``.
        codes: ``{part: class codes}``.
        y: ``{part: class indices}``.
        contexts: ``{part: (N, DIM) encoded patient contexts}`` or None.
        rows: ``{"calib"|"test": frame of image_id, lesion_id}`` in part order.
        boxes: ``{"val"|"test": rows with lesion boxes}`` (None without boxes).
    """

    images: dict
    codes: dict
    y: dict
    contexts: dict | None
    rows: dict
    boxes: dict

    @classmethod
    def build(cls, parts: dict, rows: dict, boxes: dict | None, metas: dict | None) -> Parts:
        """From ``{part: (uint8 images, codes)}`` and the per-part rows, boxes, contexts."""
        return cls(
            images={s: x.astype(np.float32) for s, (x, _) in parts.items()},
            codes={s: list(codes) for s, (_, codes) in parts.items()},
            y={s: class_indices(codes) for s, (_, codes) in parts.items()},
            contexts=metas,
            rows=rows,
            boxes=boxes or {},
        )


def choose_tta(
    bundle: ModelBundle, x_val: np.ndarray, y_val: np.ndarray, min_gain: float, views: int = 0
) -> tuple[int, dict, np.ndarray]:
    """Views to average at test time, with the validation balanced accuracy of each choice.

    ``views`` 1, 2, 4 or 8 is the recipe's choice (made on cross-validation; 8 makes the
    verdict the same for every quarter turn and flip of an image; 2, the image and its
    half turn, costs two passes and, with the landscape turn, gives every quarter turn of a
    file the same pair). ``views`` 0 chooses on
    validation: the fewest views within 0.005 of the best, and more than one only when
    that beats a single view by more than ``min_gain`` (each view costs a forward pass).

    Returns:
        ``(views, {"balanced_accuracy_views_<n>": score, ...}, outputs of those views)``.
    """
    from skin_model.runtime.inference import views_of

    available = len(views_of(x_val.shape[1:3]))  # 4 for an input of the images' own aspect
    choices = tuple(n for n in TTA_CHOICES if n <= available)
    scores, outputs = {}, {}
    for n in sorted({*choices, int(views or 1)}):
        outputs[n], _ = network_outputs(bundle, x_val, n)
        scores[n] = float(balanced_accuracy_score(y_val, outputs[n].argmax(1)))
    if views:
        chosen = int(views)
    else:
        best = max(scores.values())
        chosen = min(n for n in choices if scores[n] >= best - 0.005)
        if chosen > 1 and scores[chosen] <= scores[1] + min_gain:
            chosen = 1
    return chosen, {f"balanced_accuracy_views_{n}": v for n, v in scores.items()}, outputs[chosen]


def context_fusion(cfg, context_model: ContextModel | None) -> dict | None:
    """How the patient context is used: the late-fusion settings of ``cfg`` with its
    context model (fitted on the training part). None when the context only feeds the
    network (no late fusion) or there is none; ``power`` 0 with ``feed_network`` false
    means the context is recorded but changes nothing.
    """
    feed = bool(cfg.context_fusion_feed_network and cfg.metadata)
    if context_model is None or (cfg.context_fusion_power <= 0 and feed):
        return None
    return {
        "power": float(cfg.context_fusion_power),
        "feed_network": feed,
        "model": "class-balanced logistic regression on the encoded age, sex and site, "
        "fitted on the training part",
        **context_model.to_config(),
    }


def fusion_text(fusion: dict | None) -> str:
    """How a model uses the patient context, in words."""
    if not fusion:
        return "network input"
    if not fusion["feed_network"] and not fusion["power"]:
        return "not used"
    how = "network input and " if fusion["feed_network"] else ""
    return f"{how}late fusion (age/sex/site posterior^{fusion['power']:g})"


def output_prior(cfg, train_codes) -> list[float] | None:
    """The class prior the balanced-prior outputs are re-weighted by to reach the training
    frequencies.

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


SECOND_LOOK_FITS = 3
"""Fits of the post-hoc layer with a second look: each on the calibration part's outputs
with the second look its previous fit's threshold makes (the first on the plain outputs),
so the threshold is fitted on the outputs it is then applied to."""


def fit_posthoc(
    bundle: ModelBundle, cfg, data: Parts, context_model: ContextModel | None
) -> tuple[PostHoc, dict]:
    """The post-hoc layer: prior and fusion from the training part, temperature and
    thresholds fitted on the calibration part (on its second-look outputs where the
    model has a second look; ``bundle.posthoc`` is set to it).

    Returns:
        ``(posthoc, {"outputs", "features", "outputs_context"})`` of the calibration part.
    """
    prior = output_prior(cfg, data.codes["train"])
    weights = class_weights({"mel": float(cfg.melanoma_weight)})
    posthoc = PostHoc(
        class_prior=prior,
        malignant_share=round(float(is_malignant(data.y["train"]).mean()), 6),
        context_fusion=context_fusion(cfg, context_model),
        target_sensitivity=cfg.target_sensitivity,
        decision_rule=weighted_rule(DECISION_RULE if prior else ARGMAX_RULE, weights),
        decision_weights=weights,
    )
    tta, images = bundle.config.tta, data.images["calib"]
    network, feats = network_outputs(bundle, images, tta)
    m = data.contexts["calib"] if data.contexts else None
    with_ctx = None if m is None else network_outputs(bundle, images, tta, metadata=m)[0]
    groups = data.rows["calib"]["lesion_id"].to_numpy()

    def fit(outputs: np.ndarray, outputs_ctx: np.ndarray | None) -> dict:
        cal = {
            "outputs": posthoc.fuse(outputs, None),
            "features": feats,
            "outputs_context": None if m is None else posthoc.fuse(outputs_ctx, m),
        }
        posthoc.fit(cal["outputs"], data.y["calib"], groups, cal["outputs_context"])
        return cal

    cal = fit(network, with_ctx)
    bundle.posthoc = posthoc
    for _ in range(SECOND_LOOK_FITS - 1 if bundle.config.looks_again else 0):
        looked = second_look(bundle, images, network)[0]
        looked_ctx = (
            None
            if m is None
            else second_look(bundle, images, with_ctx, m, np.ones(len(m), bool))[0]
        )
        cal = fit(looked, looked_ctx)
    return posthoc, cal


def as_uint8(images: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Images in [0, 255] rounded to uint8, a chunk at a time (no full-size float temporaries)."""
    out = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = np.clip(np.rint(images[start : start + chunk]), 0, 255)
    return out


def dermoscopy_variants(images: np.ndarray, seed: int = 0) -> Iterator[tuple[str, np.ndarray]]:
    """Ordinary variants of real dermoscopy that must not look "not dermoscopic": a black
    round or elliptical field of view of any depth, off-centre, hard or soft-edged (the
    distribution training's capture changes draw from, so a contact dermatoscope's 4:3
    file, or a transparent-corner PNG flattened to black, is among them), another white
    balance (gains up to 10% per channel) and a quarter turn.

    Each variant is made when it is asked for, as uint8, so a caller holds one at a time
    (on the 6341 training images at 192 px: 2.6 GiB beyond the input, against 12.8 GiB
    for three float32 copies made at once, where a distilled run was OOM-killed).

    Args:
        images: (N, S, S, 3) images in [0, 255].
        seed: Seed of the fields and gains.

    Yields:
        ``(name, (N, S, S, 3) uint8)`` for "round field of view", "white balance" and
        "rotated", in that order.
    """
    from skin_model.data.batches import random_field_of_view
    from skin_model.data.imaging import shift_white_balance_batch

    rng = np.random.default_rng(seed)
    u8 = as_uint8(images)
    fields = np.empty_like(u8)
    for i, image in enumerate(u8):
        fields[i] = np.rint(image * random_field_of_view(u8.shape[1:3], rng))
    yield "round field of view", fields
    del fields
    yield "white balance", shift_white_balance_batch(u8, 0.10, seed)
    turns = 1 if u8.shape[1] == u8.shape[2] else 2  # a non-square input keeps its shape
    yield "rotated", np.ascontiguousarray(np.rot90(u8, turns, axes=(1, 2)))


def with_variant_features(bundle: ModelBundle, images: np.ndarray, features: list | None):
    """Detector features of images and of their :func:`dermoscopy_variants`, groupwise
    (``features``: those of ``images`` when already computed).
    """
    own = features if features is not None else network_outputs(bundle, images, 1)[1]
    feats = [own, *(network_outputs(bundle, x, 1)[1] for _, x in dermoscopy_variants(images))]
    return [np.concatenate([f[g] for f in feats]) for g in range(len(own))]


def fit_detector(bundle: ModelBundle, data: Parts, calib_features, quantile: float) -> Detector:
    """The "not dermoscopic" detector: statistics of the training images and their
    ordinary variants (:func:`dermoscopy_variants`), limits at ``quantile`` of the
    calibration part and its variants, so that a round field of view, another white
    balance or a rotation is not taken for a photograph of something else.
    """
    train = with_variant_features(bundle, data.images["train"], None)
    calib = with_variant_features(bundle, data.images["calib"], calib_features)
    return Detector(list(bundle.config.ood_layers), quantile).fit(train, calib)


def variant_flags(bundle: ModelBundle, images: np.ndarray) -> dict[str, float]:
    """Share of (test) images flagged as not dermoscopic, per ordinary variant."""
    out = {}
    for name, x in dermoscopy_variants(images, seed=1):
        _, feats = network_outputs(bundle, x, 1)
        out[name] = float(bundle.detector.flagged(bundle.detector.score(feats)).mean())
    return out


def robustness(bundle: ModelBundle, data: Parts, base: dict) -> dict:
    """Test figures on a white-balance-shifted copy of the test split (a few percent per
    channel, as another dermatoscope's files differ), and what the shift costs.
    """
    from skin_model.data.imaging import WHITE_BALANCE_SHIFT, shift_white_balance_batch

    u8 = as_uint8(data.images["test"])
    shifted = shift_white_balance_batch(u8).astype(np.float32)
    lesions = data.rows["test"]["lesion_id"].to_numpy()
    m, *_ = evaluate_split(bundle, shifted, data.y["test"], lesions, bundle.posthoc.threshold_)
    return {
        "white_balance": {
            "shift": f"per-image gains uniform in 1 ± {WHITE_BALANCE_SHIFT:g} per channel",
            "balanced_accuracy": m["balanced_accuracy"],
            "malignant_auc": m["malignant"]["auc"],
            "malignant_sensitivity": m["malignant"]["operating_point"]["sensitivity"],
        },
        "white_balance_cost": float(base["balanced_accuracy"] - m["balanced_accuracy"]),
        "white_balance_auc_cost": float(base["malignant"]["auc"] - m["malignant"]["auc"]),
    }


def cam_candidates(bundle: ModelBundle) -> list[tuple[str, str]]:
    """Every compiled heatmap method at each of the architecture's candidate layers that
    the model has, as ``(method, layer)``; the architecture's default layer first.
    """
    names = {layer.name for layer in bundle.model.layers}
    layers = [c for c in spec_for(bundle.config.architecture).cam_layers if c in names]
    return [(method, layer) for method in COMPILED for layer in layers]


def choose_cam(bundle: ModelBundle, boxes: pd.DataFrame | None, n: int = 100) -> dict:
    """The heatmap method and layer that put most energy in the lesion box (validation),
    and the best layer of each method.

    Returns:
        ``{"method", "layer", "layers": {method: layer}, "mean_ratio_by_map": {"method @
        layer": ratio}}``; without boxes, Grad-CAM at the architecture's default layer.
    """
    candidates = cam_candidates(bundle)
    default = candidates[0] if candidates else ("Grad-CAM", None)
    scores = {}
    if boxes is not None and not boxes.empty and len(candidates) > 1:
        found = cam_ratios(bundle, boxes, n, maps=candidates)
        scores = {pair: r["mean_ratio"] for pair, r in found.items() if r is not None}
    if not scores:
        return {"method": default[0], "layer": default[1], "layers": {}, "mean_ratio_by_map": {}}
    method, layer = max(scores, key=scores.get)
    # ascending ratios: each method's best layer is written last
    layers = {m: lay for (m, lay), _ in sorted(scores.items(), key=lambda kv: kv[1])}
    return {
        "method": method,
        "layer": layer,
        "layers": layers,
        "mean_ratio_by_map": {f"{m} @ {lay}": r for (m, lay), r in scores.items()},
    }


def cam_fields(choice: dict) -> dict:
    """The :class:`ModelConfig` fields of a :func:`choose_cam` result."""
    return {
        "cam_layer": choice["layer"],
        "cam_method": choice["method"],
        "cam_layers": dict(choice["layers"]),
    }


def model_config(cfg, bundle: ModelBundle, posthoc: PostHoc, detector: Detector, cam: dict):
    """The :class:`ModelConfig` of the finalised model (``cam``: :func:`choose_cam`'s)."""
    spec = spec_for(cfg.architecture)
    return ModelConfig(
        architecture=cfg.architecture,
        input_size=cfg.input_size,
        input_height=cfg.input_height,
        classes=list(CLASSES),
        tta=int(bundle.config.tta),
        second_look_views=int(bundle.config.second_look_views),
        second_look_band=float(bundle.config.second_look_band),
        **cam_fields(cam),
        metadata_input=takes_metadata(bundle.model),
        **posthoc.to_config(),
        **detector.to_config(),
        weights_provenance=spec.provenance(cfg.weights),
        trained_on=dt.date.today().isoformat(),
        training=config_dict(cfg),
        version=__version__,
    )


def write_model_dir(out_dir: Path, model, config: ModelConfig, detector: Detector) -> None:
    """Write the files a prediction depends on, and their digests, once."""
    from skin_model.model.networks import save_network

    save_network(model, out_dir / MODEL_FILE)
    write_model_config(out_dir, config)
    detector.save(out_dir / OOD_FILE)
    write_integrity(out_dir)


def validation_figures(
    bundle: ModelBundle, data: Parts, tta_scores: dict, val_outputs: np.ndarray
) -> dict:
    """Validation balanced accuracy and malignant AUC of the chosen views (kept outputs),
    and with the patient context where the model takes it.
    """
    y = data.y["val"]
    out = {
        **tta_scores,
        "balanced_accuracy": float(balanced_accuracy_score(y, val_outputs.argmax(1))),
        "n_images": len(y),
        "malignant_auc": float(roc_auc_score(is_malignant(y), malignant_probability(val_outputs))),
    }
    if data.contexts:
        m = data.contexts["val"]
        network, _ = network_outputs(bundle, data.images["val"], bundle.config.tta, metadata=m)
        fused = bundle.posthoc.fuse(network, m)
        out["balanced_accuracy_with_metadata"] = float(balanced_accuracy_score(y, fused.argmax(1)))
    return out


def calibration_figures(cfg, data: Parts, posthoc: PostHoc, cal: dict, detector) -> dict:
    """What was fitted on the calibration part and how it did there."""
    groups = data.rows["calib"]["lesion_id"].to_numpy()
    report = posthoc.fit_report_
    q_cal = posthoc.probabilities(cal["outputs"])
    return {
        "data": "calibration part: half of the validation lesions, which chose nothing",
        "n_images": len(data.y["calib"]),
        "n_lesions": len(np.unique(groups)),
        "temperature": posthoc.temperature_,
        "temperature_check": report["temperature_check"],
        "threshold": report["threshold"],
        "threshold_metadata": report["threshold_ctx"],
        "ood_quantile": cfg.ood_quantile,
        "ood_layers": list(detector.layers),
        "operating_point": binary_operating_point(
            is_malignant(data.y["calib"]), malignant_probability(q_cal), posthoc.threshold_
        ),
    }


def test_figures(bundle: ModelBundle, data: Parts) -> tuple[dict, dict]:
    """Test-split metrics (read once), their raw-output calibration, and the detector's
    test scores from the same pass.

    Returns:
        ``(metrics, {"probabilities", "decisions", "ood_scores"})``.
    """
    lesions = data.rows["test"]["lesion_id"].to_numpy()
    y = data.y["test"]
    metrics, probs, decisions, fused, feats = evaluate_split(
        bundle, data.images["test"], y, lesions, bundle.posthoc.threshold_
    )
    metrics["decision_rule"] = bundle.posthoc.decision_rule
    metrics["calibration"]["ece_raw_outputs"] = calibration_bins(fused, y)["ece"]
    metrics["malignant"]["calibration_raw_outputs_ece"] = binary_calibration(
        malignant_probability(fused), is_malignant(y)
    )["ece"]
    metrics["malignant"]["training_share"] = float(is_malignant(data.y["train"]).mean())
    metrics["evaluated_on"] = "test split (lesion-grouped), read once after all choices"
    scores = bundle.detector.score(feats)
    return metrics, {
        "probabilities": probs,
        "decisions": decisions,
        "fused": fused,
        "ood_scores": scores,
    }


def context_figures(bundle: ModelBundle, data: Parts, context_model: ContextModel) -> dict:
    """Test metrics with the patient context given, and what the context alone predicts."""
    lesions = data.rows["test"]["lesion_id"].to_numpy()
    threshold = bundle.posthoc.threshold_context_
    with_meta, *_ = evaluate_split(
        bundle, data.images["test"], data.y["test"], lesions, threshold, data.contexts["test"]
    )
    with_meta["fusion"] = fusion_text(bundle.posthoc.context_fusion)
    baseline = metadata_only_baseline(context_model, data.contexts["test"], data.y["test"])
    return {"with_metadata": with_meta, "metadata_only_baseline": baseline}


def model_figures(model, config: ModelConfig, out_dir: Path) -> dict:
    """Size, digest and the settings that shape predictions, for ``metrics.json``."""
    return {
        "architecture": config.architecture,
        "input_size": config.input_size,
        "input_height": config.input_height,
        "parameters": int(model.count_params()),
        "file_bytes": (out_dir / MODEL_FILE).stat().st_size,
        "sha256": sha256_file(out_dir / MODEL_FILE),
        "temperature": config.temperature,
        "tta": config.tta,
        "malignant_threshold": config.malignant_threshold,
        "weights_provenance": config.weights_provenance,
    }


def split_counts(codes: dict) -> dict:
    """Images per class in each split."""
    return {s: {c: int(list(v).count(c)) for c in CLASSES} for s, v in codes.items()}


def fitted_bundle(model, cfg, out_dir: Path) -> ModelBundle:
    """The fitted network as a bundle before its post-hoc layer, detector and views."""
    spec = spec_for(cfg.architecture)
    config = ModelConfig(cfg.architecture, cfg.input_size, cfg.input_height)
    config.ood_layers = list(spec.ood_layers)
    return ModelBundle(model=model, config=config, model_dir=out_dir)


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
    """Fit the post-hoc layer and the detector, write the model directory, evaluate on
    test and check the explanations; write ``metrics.json`` and the test predictions.

    Args:
        model: The trained Keras model.
        cfg: The :class:`skin_model.model.settings.TrainConfig` used.
        parts: ``{"train"|"val"|"calib"|"test": (uint8 images at input size, codes)}``.
        out_dir: Model directory.
        fit_info: Epochs, best epoch, seconds and device of the fit.
        boxes: ``{"val"|"test": rows with lesion boxes}`` (or None).
        rows: ``{"calib"|"test": frame of image_id, lesion_id}`` in ``parts`` order.
        metas: ``{split: (N, DIM) patient-context vectors}``, or None; the test split is
            then evaluated with and without them.

    Returns:
        The dict written to ``metrics.json``.
    """
    out_dir = Path(out_dir)
    data = Parts.build(parts, rows, boxes, metas)
    bundle = fitted_bundle(model, cfg, out_dir)
    tta, tta_scores, val_outputs = choose_tta(
        bundle, data.images["val"], data.y["val"], cfg.tta_min_gain, cfg.views
    )
    bundle.config.tta = tta
    bundle.config.second_look_views = max(int(cfg.second_look), tta)
    bundle.config.second_look_band = float(cfg.second_look_band) if cfg.second_look > tta else 0.0
    context_model = ContextModel().fit(metas["train"], data.y["train"]) if metas else None
    bundle.posthoc, cal = fit_posthoc(bundle, cfg, data, context_model)
    bundle.detector = fit_detector(bundle, data, cal["features"], cfg.ood_quantile)
    cam_choice = choose_cam(bundle, data.boxes.get("val"))
    bundle.config = model_config(cfg, bundle, bundle.posthoc, bundle.detector, cam_choice)
    write_model_dir(out_dir, model, bundle.config, bundle.detector)

    metrics, test = test_figures(bundle, data)
    metrics["calibration_fit"] = calibration_figures(
        cfg, data, bundle.posthoc, cal, bundle.detector
    )
    metrics["validation"] = validation_figures(bundle, data, tta_scores, val_outputs)
    metrics["model"] = model_figures(model, bundle.config, out_dir)
    metrics["training"] = {**fit_info, "settings": config_dict(cfg)}
    metrics["split"] = split_counts(data.codes)
    metrics["ood"] = detector_separation(bundle, test["ood_scores"])
    metrics["ood"]["ham10000_variants_flagged"] = variant_flags(bundle, data.images["test"])
    metrics["malignant"]["tiers"] = risk_tiers(
        malignant_probability(test["probabilities"]),
        data.y["test"],
        bundle.posthoc.threshold_,
        HIGH_RISK,
    )
    metrics["lesion_grouping"] = lesion_level(
        test["fused"],
        data.y["test"],
        data.rows["test"]["lesion_id"].to_numpy(),
        lambda outputs: bundle.posthoc.apply(outputs).decisions,
    )
    metrics["robustness"] = robustness(bundle, data, metrics)
    metrics["cam_layer_choice"] = {**cam_choice, "chosen_on": "validation lesion boxes"}
    test_boxes = data.boxes.get("test")
    metrics["cam_localisation"] = (
        cam_localisation(bundle, test_boxes)
        if test_boxes is not None and not test_boxes.empty
        else None
    )
    write_predictions(
        out_dir / PREDICTIONS_FILE,
        data.codes["test"],
        test["probabilities"],
        data.rows["test"]["image_id"],
        test["decisions"],
    )
    if metas:
        metrics.update(context_figures(bundle, data, context_model))
    metrics["targets"] = target_status(metrics)
    write_json(out_dir / METRICS_FILE, metrics)
    return metrics


def cam_localisation(bundle: ModelBundle, boxes: pd.DataFrame, n: int = 150) -> dict | None:
    """Heatmap energy in the lesion box of ``n`` sampled images, with the model's method,
    layer and views (:func:`skin_model.evaluate.evaluation.cam_ratios`), and the same for
    each other method it chose a layer for (``by_method``); None without a map.
    """
    method = bundle_cam_method(bundle)
    methods = [method, *(m for m in bundle.config.cam_layers if m != method)]
    maps = [(m, bundle_cam_layer(bundle, method=m)) for m in methods]
    found = cam_ratios(bundle, boxes, n, maps=maps)
    block = found[maps[0]]
    if block is None:
        return None
    by_method = {
        m: {k: found[(m, lay)][k] for k in ("layer", "mean_ratio", "median_ratio")}
        for m, lay in maps[1:]
        if found[(m, lay)] is not None
    }
    return {**block, "views": int(bundle.config.tta), "by_method": by_method}
