"""Grad-CAM and Grad-CAM++ heatmaps (tf-keras-vis) and their overlays.

The explainer clones the model once (``clone=True``) and is cached on the bundle, so
explaining another class or changing the overlay never rebuilds it. tf-keras-vis runs its
gradient tape eagerly and rebuilds a sub-model per call (~100 ms here); for plain Grad-CAM
on models with a ``last_conv`` layer, :func:`explain` uses a compiled ``tf.function`` that
computes the same map (tests hold it to tf-keras-vis' output) in a few milliseconds.
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
    return (inside / total) / box_area_share(box, cam.shape)


def box_area_share(box: tuple[int, int, int, int], shape: tuple[int, ...]) -> float:
    """Share of an image of ``shape`` (H, W, ...) covered by an inclusive ``box``.

    Its inverse is the best :func:`box_energy_ratio` any map can reach (all energy inside).
    """
    top, bottom, left, right = box
    return (bottom - top + 1) * (right - left + 1) / (shape[0] * shape[1])


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


def compiled_gradcam(model):
    """A compiled Grad-CAM of ``model``'s ``last_conv`` layer (TensorFlow backend).

    Same maths as tf-keras-vis ``Gradcam`` with ``ReplaceToLinear``: gradients of the
    pre-softmax score with respect to the layer output, averaged over space as channel
    weights, weighted sum of the activations, ReLU.

    Args:
        model: A flat model whose layers after ``last_conv`` form a chain ending in the
            ``predictions`` Dense layer.

    Returns:
        ``fn(x (1, S, S, 3) float32, class_index int32) -> cam (1, h, w)`` or ``None`` when
        the model or backend does not allow it.
    """
    import keras

    names = [layer.name for layer in model.layers]
    if keras.backend.backend() != "tensorflow" or CAM_LAYER not in names:
        return None
    import tensorflow as tf

    start = names.index(CAM_LAYER)
    conv_model = keras.Model(model.inputs, model.layers[start].output)
    tail, dense = model.layers[start + 1 : -1], model.layers[-1]

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, None, None, 3], tf.float32),
            tf.TensorSpec([], tf.int32),
        ],
        reduce_retracing=True,
    )
    def fn(x, class_index):
        conv = conv_model(x, training=False)
        with tf.GradientTape() as tape:
            tape.watch(conv)
            h = conv
            for layer in tail:
                h = layer(h, training=False)
            score = (keras.ops.matmul(h, dense.kernel) + dense.bias)[:, class_index]
        weights = tf.reduce_mean(tape.gradient(score, conv), axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1))

    return fn


def _fast_heatmap(fn, image: np.ndarray, class_index: int, input_size: int) -> np.ndarray:
    """Heatmap from :func:`compiled_gradcam`, post-processed like tf-keras-vis."""
    from scipy.ndimage import zoom
    from tf_keras_vis.utils import normalize, zoom_factor

    x = resize_for_model(image, input_size).astype(np.float32)[None]
    cam = np.asarray(fn(x, np.int32(class_index)))
    cam = normalize(zoom(cam, zoom_factor(cam.shape, x.shape), order=1))
    return resize_heatmap(np.asarray(cam[0], dtype=np.float32), image.shape[:2])


def explain(bundle, image: np.ndarray, class_index: int, method: str = "Grad-CAM") -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of ``class_index`` for one decoded image, thread-safe."""
    if method == "Grad-CAM":
        with bundle.lock:
            if "compiled" not in bundle._explainers:
                bundle._explainers["compiled"] = compiled_gradcam(bundle.model)
            fn = bundle._explainers["compiled"]
            if fn is not None:
                return _fast_heatmap(fn, image, class_index, bundle.input_size)
    explainer = get_explainer(bundle, method)
    with bundle.lock:
        return heatmap(explainer, bundle.model, image, class_index, bundle.input_size)
