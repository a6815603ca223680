"""Class activation heatmaps (Grad-CAM, Grad-CAM++, LayerCAM; tf-keras-vis) and their
overlays.

Which method and layer a model's map uses by default is chosen at finalisation on the
validation lesion boxes and stored in ``config.json`` (``cam_method``, ``cam_layers``).
The explainer clones the model once (``clone=True``) and is cached on the bundle, so
explaining another class or changing the overlay never rebuilds it. tf-keras-vis runs its
gradient tape eagerly and rebuilds a sub-model per call (~100 ms here); for Grad-CAM and
LayerCAM (:data:`COMPILED`), :func:`explain` uses a compiled ``tf.function`` that computes
the same map (tests hold it to tf-keras-vis' output) in a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from skin_model.data.imaging import Size, from_landscape, input_hw, resize_for_model

METHODS = ("Grad-CAM", "Grad-CAM++", "LayerCAM")
"""Every heatmap method; LayerCAM (Jiang et al., 2021) weights each location by its own
positive gradients instead of one spatial mean per channel, so it keeps the detail of
layers below the last one."""
COMPILED = ("Grad-CAM", "LayerCAM")
"""Methods :func:`compiled_cam` computes (the ones finalisation chooses among)."""
CAM_LAYER = "last_conv"


def make_explainer(model, method: str = "Grad-CAM"):
    """Build a tf-keras-vis explainer for a flat model ending in Dense(softmax).

    Args:
        model: The Keras model.
        method: One of :data:`METHODS`.

    Returns:
        A ``Gradcam``, ``GradcamPlusPlus`` or ``Layercam`` object.
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    classes = {"Grad-CAM": Gradcam, "Grad-CAM++": GradcamPlusPlus, "LayerCAM": Layercam}
    if method not in classes:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    return classes[method](model, model_modifier=ReplaceToLinear(), clone=True)


def cam_layer(model, configured: str | None = None, candidates: tuple[str, ...] = ()) -> str:
    """The layer a heatmap reads: ``configured`` (chosen at finalisation and stored in
    ``config.json``), else the first of the architecture's ``candidates`` (its spec's
    ``cam_layers``) that the model has, else ``last_conv``.
    """
    names = [layer.name for layer in model.layers]
    for name in (configured, *candidates, CAM_LAYER):
        if name and name in names:
            return name
    raise ValueError("the model has no layer to explain; name one in config.json cam_layer")


def bundle_cam_method(bundle, method: str | None = None) -> str:
    """The method to explain with: ``method``, else the model's chosen one."""
    return method or bundle.config.cam_method


def bundle_cam_layer(bundle, layer: str | None = None, method: str | None = None) -> str:
    """The layer to explain for a loaded model: ``layer``, else the one its config chose
    for ``method`` (default: its chosen method), else its spec's default.
    """
    from skin_model.model.architectures import REGISTRY

    config = bundle.config
    method = bundle_cam_method(bundle, method)
    chosen = (config.cam_layers or {}).get(method)
    if chosen is None and method == bundle_cam_method(bundle):
        chosen = config.cam_layer
    spec = REGISTRY.get(config.architecture)
    candidates = spec.cam_layers if spec else ()
    return cam_layer(bundle.model, layer or chosen, candidates)


def model_inputs(model, image: np.ndarray, input_size: Size, metadata: np.ndarray | None):
    """The model's input for one image (and its metadata vector for a two-input model)."""
    from skin_model.runtime.inference import batch_inputs

    meta = None if metadata is None else np.asarray(metadata, dtype=np.float32)[None]
    return batch_inputs(model, resize_for_model(image, input_size)[None], meta)


def normalise_cam(cam: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Min-max scale each map of a (B, H, W) batch to [0, 1], as tf-keras-vis' ``normalize``
    does (without importing tf-keras-vis, which the plain Grad-CAM path does not need).
    """
    axes = tuple(range(1, cam.ndim))
    low, high = cam.min(axis=axes, keepdims=True), cam.max(axis=axes, keepdims=True)
    return (cam - low) / (high - low + eps)


def finish_cam(cam: np.ndarray, input_size: Size, shape: tuple[int, int]) -> np.ndarray:
    """Layer-resolution CAM (1, h, w) -> normalised heatmap at the image size, as
    tf-keras-vis does it (linear zoom to the input, min-max normalise), turned back onto a
    portrait image (:func:`skin_model.data.imaging.from_landscape`).
    """
    from scipy.ndimage import zoom

    cam = np.asarray(cam, dtype=np.float32)
    height, width = input_hw(input_size)
    factors = (1, height / cam.shape[1], width / cam.shape[2])
    cam = normalise_cam(zoom(cam, factors, order=1))
    return resize_heatmap(from_landscape(cam[0].astype(np.float32), shape), shape)


def heatmap(
    explainer,
    model,
    image: np.ndarray,
    class_index: int,
    input_size: Size,
    layer: str | None = None,
    metadata: np.ndarray | None = None,
) -> np.ndarray:
    """Class activation map of one image by tf-keras-vis, resized to the image.

    Args:
        explainer: From :func:`make_explainer`.
        model: The model the explainer was built from (to find the CAM layer).
        image: RGB uint8 array (H, W, 3) as decoded.
        class_index: Output index to explain.
        input_size: Side of the square model input, or its ``(height, width)``.
        layer: Layer to read (default :func:`cam_layer`); used as named, never moved.
        metadata: Patient-context vector for a two-input model (None: none given).

    Returns:
        float32 array (H, W) in [0, 1].
    """
    from tf_keras_vis.utils.scores import CategoricalScore

    cam = explainer(
        CategoricalScore([class_index]),
        model_inputs(model, image, input_size, metadata),
        penultimate_layer=cam_layer(model, layer),
        seek_penultimate_conv_layer=False,
        expand_cam=False,
        normalize_cam=False,
    )
    return finish_cam(np.asarray(cam), input_size, image.shape[:2])


def resize_heatmap(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a heatmap to (H, W), clipped to [0, 1], float32."""
    h, w = shape
    out = Image.fromarray(np.nan_to_num(cam).astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a jet-coloured heatmap over the image, strongest where attention is high: each
    pixel's opacity is ``alpha`` times its heatmap value, so regions the model ignored
    stay as they are instead of being tinted blue.

    Args:
        image: RGB uint8 (H, W, 3).
        cam: Heatmap (H, W) in [0, 1].
        alpha: Opacity at the heatmap's maximum, 0 (image only) to 1.

    Returns:
        RGB uint8 (H, W, 3).
    """
    from matplotlib import colormaps

    cam = np.clip(cam, 0, 1)
    colour = colormaps["jet"](cam)[..., :3] * 255.0
    weight = (alpha * cam)[..., None]
    blended = (1.0 - weight) * image.astype(np.float32) + weight * colour
    return np.clip(blended, 0, 255).astype(np.uint8)


def legend_image(width: int = 256, height: int = 14) -> np.ndarray:
    """The heatmap's colour scale as an RGB strip (low attention left, high right)."""
    from matplotlib import colormaps

    ramp = colormaps["jet"](np.linspace(0, 1, width))[:, :3] * 255.0
    return np.repeat(ramp[None], height, axis=0).astype(np.uint8)


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


def compiled_cam(model, layer: str | None = None, method: str = "Grad-CAM"):
    """A compiled Grad-CAM or LayerCAM of one layer (TensorFlow backend).

    Same maths as tf-keras-vis ``Gradcam`` / ``Layercam`` with ``ReplaceToLinear``: the
    gradients of the pre-softmax score with respect to the layer output weight the
    activations (Grad-CAM: their spatial mean per channel; LayerCAM: their positive part
    at each location), summed over channels, ReLU.

    Args:
        model: A flat model ending in the ``predictions`` Dense(softmax) layer (one or two
            inputs).
        layer: Layer to read (default :func:`cam_layer`).
        method: One of :data:`COMPILED`.

    Returns:
        ``fn(inputs, class_index int32) -> cam (1, h, w)`` or ``None`` on another backend.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    if method not in COMPILED:
        raise ValueError(f"{method!r} is not compiled; choose from {COMPILED}")
    import tensorflow as tf

    dense = model.get_layer("predictions")
    two = keras.Model(model.inputs, [model.get_layer(cam_layer(model, layer)).output, dense.input])
    specs = [tf.TensorSpec([1, None, None, 3], tf.float32)]
    from skin_model.runtime.inference import takes_metadata

    if takes_metadata(model):
        specs.append(tf.TensorSpec([1, model.inputs[1].shape[-1]], tf.float32))

    @tf.function(
        input_signature=[specs if len(specs) > 1 else specs[0], tf.TensorSpec([], tf.int32)],
        reduce_retracing=True,
    )
    def fn(inputs, class_index):
        with tf.GradientTape() as tape:
            conv, h = two(inputs, training=False)
            score = (keras.ops.matmul(h, dense.kernel) + dense.bias)[:, class_index]
        grads = tape.gradient(score, conv)
        if method == "LayerCAM":
            weights = tf.nn.relu(grads)
        else:
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1))

    return fn


def undo_view(cam: np.ndarray, view: tuple[int, bool]) -> np.ndarray:
    """Map a (1, h, w) CAM of the view ``(turns, mirrored)`` (one of
    :func:`skin_model.runtime.inference.views_of` the input) back onto the original image.
    """
    turns, mirrored = view
    cam = np.rot90(cam, -turns, axes=(1, 2))
    return cam[:, :, ::-1] if mirrored else cam


def views_cam(fn, inputs, class_index: int, views: int) -> np.ndarray:
    """The compiled map averaged over the first ``views`` dihedral views of one input,
    each map turned back onto the original image before averaging (the explanation of
    the views-averaged verdict; the same map for every quarter turn and flip).
    """
    from skin_model.runtime.inference import dihedral_views, views_of

    image, rest = (
        (inputs[0], list(inputs[1:])) if isinstance(inputs, list | tuple) else (inputs, [])
    )
    image = np.asarray(image)
    cams = []
    for how, view in zip(views_of(image.shape[1:3]), dihedral_views(image, views), strict=False):
        x = [view[None], *rest] if rest else view[None]
        cams.append(undo_view(np.asarray(fn(x, np.int32(class_index))), how))
    return np.mean(cams, axis=0)


def explain(
    bundle,
    image: np.ndarray,
    class_index: int,
    method: str | None = None,
    metadata: np.ndarray | None = None,
    layer: str | None = None,
    views: int | None = None,
) -> np.ndarray:
    """Heatmap (H, W) in [0, 1] of ``class_index`` for one decoded image, thread-safe.

    Args:
        bundle: A :class:`skin_model.runtime.inference.ModelBundle`.
        image: Decoded RGB uint8 image.
        class_index: Output index to explain.
        method: One of :data:`METHODS` (default: the model's ``cam_method``).
        metadata: Patient-context vector for a two-input model (None: none given).
        layer: Layer to read (default: the layer the model chose for ``method``).
        views: Dihedral views the compiled map averages (default: the model's
            test-time views, so the map explains the verdict the views made).

    Returns:
        float32 heatmap at the image's size.
    """
    method = bundle_cam_method(bundle, method)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    layer = bundle_cam_layer(bundle, layer, method)
    if method in COMPILED:
        fn = bundle.explainer(
            ("compiled", method, layer), lambda: compiled_cam(bundle.model, layer, method)
        )
        if fn is not None:
            x = model_inputs(bundle.model, image, bundle.input_shape, metadata)
            n = int(bundle.config.tta if views is None else views)
            with bundle.lock:
                cam = views_cam(fn, x, class_index, n)
            return finish_cam(cam, bundle.input_shape, image.shape[:2])
    explainer = bundle.explainer(method, lambda: make_explainer(bundle.model, method))
    with bundle.lock:
        return heatmap(
            explainer, bundle.model, image, class_index, bundle.input_shape, layer, metadata
        )
