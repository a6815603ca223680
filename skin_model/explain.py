"""Grad-CAM and Grad-CAM++ heatmaps (tf-keras-vis) and their overlays.

The explainer clones the model once (``clone=True``) and is cached on the bundle, so
explaining another class or changing the overlay never rebuilds it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from skin_model.imaging import resize_for_model

METHODS = ("Grad-CAM", "Grad-CAM++")
CAM_LAYER = "last_conv"


def make_explainer(model, method: str = "Grad-CAM"):
    """Build a tf-keras-vis explainer for a flat model ending in Dense(softmax).

    Args:
        model: The Keras model.
        method: One of :data:`METHODS`.

    Returns:
        A ``Gradcam`` or ``GradcamPlusPlus`` object.
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    cls = Gradcam if method == "Grad-CAM" else GradcamPlusPlus
    return cls(model, model_modifier=ReplaceToLinear(), clone=True)


def cam_layer(model) -> str | int:
    """The layer Grad-CAM reads: ``last_conv`` where the model has it, else the last conv."""
    names = {layer.name for layer in model.layers}
    return CAM_LAYER if CAM_LAYER in names else -1


def heatmap(explainer, model, image: np.ndarray, class_index: int, input_size: int) -> np.ndarray:
    """Class activation map of one image, resized to the image.

    Args:
        explainer: From :func:`make_explainer`.
        model: The model the explainer was built from (to find the CAM layer).
        image: RGB uint8 array (H, W, 3) as decoded.
        class_index: Output index to explain.
        input_size: Side of the square model input.

    Returns:
        float32 array (H, W) in [0, 1].
    """
    from tf_keras_vis.utils.scores import CategoricalScore

    x = resize_for_model(image, input_size).astype(np.float32)[None]
    cam = explainer(
        CategoricalScore([class_index]), x, penultimate_layer=cam_layer(model), normalize_cam=True
    )
    return resize_heatmap(np.asarray(cam[0], dtype=np.float32), image.shape[:2])


def resize_heatmap(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a heatmap to (H, W), clipped to [0, 1], float32."""
    h, w = shape
    out = Image.fromarray(np.nan_to_num(cam).astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a jet-coloured heatmap over the image.

    Args:
        image: RGB uint8 (H, W, 3).
        cam: Heatmap (H, W) in [0, 1].
        alpha: Heatmap opacity, 0 (image only) to 1 (heatmap only).

    Returns:
        RGB uint8 (H, W, 3).
    """
    from matplotlib import colormaps

    colour = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255.0
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(blended, 0, 255).astype(np.uint8)


def box_energy_ratio(cam: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of CAM energy inside a box divided by the box's share of the image.

    Args:
        cam: Heatmap (H, W), non-negative.
        box: ``(top, bottom, left, right)`` pixel bounds, inclusive.

    Returns:
        1.0 when the map is no more concentrated in the box than chance; higher is better.
    """
    top, bottom, left, right = box
    total = float(cam.sum())
    if total <= 0:
        return float("nan")
    inside = float(cam[top : bottom + 1, left : right + 1].sum())
    area = (bottom - top + 1) * (right - left + 1) / cam.size
    return (inside / total) / area


def get_explainer(bundle, method: str = "Grad-CAM"):
    """The bundle's cached explainer for ``method``, built on first use.

    Args:
        bundle: A :class:`skin_model.inference.ModelBundle`.
        method: One of :data:`METHODS`.

    Returns:
        The tf-keras-vis explainer; call it under ``bundle.lock``.
    """
    with bundle.lock:
        if method not in bundle._explainers:
            bundle._explainers[method] = make_explainer(bundle.model, method)
        return bundle._explainers[method]


def explain(bundle, image: np.ndarray, class_index: int, method: str = "Grad-CAM") -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of ``class_index`` for one decoded image, thread-safe."""
    explainer = get_explainer(bundle, method)
    with bundle.lock:
        return heatmap(explainer, bundle.model, image, class_index, bundle.input_size)
