"""A model directory as one self-contained network that standard runtimes load: TF Serving
(SavedModel), LiteRT (``.tflite``) and ONNX Runtime.

The exported network takes raw RGB pixels (float, any size: the app's own resize,
:class:`PillowResize`, and the colour handling are inside) and returns what the app shows
for an image without patient details: the seven probabilities at the training prevalence,
the malignant risk, the suggested diagnosis (the balanced rule) and the "not dermoscopic"
score, with the post-hoc layer (prior shift, temperature) and the detector baked in.
Exports go through Keras' own ``model.export`` (TensorFlow's converters; ``tf2onnx`` for
ONNX).
"""

from __future__ import annotations

import functools
from pathlib import Path

import keras
import numpy as np

from skin_model import CLASSES, MALIGNANT

FORMATS = {"saved_model": "tf_saved_model", "litert": "litert", "onnx": "onnx"}
OUTPUTS = ("probabilities", "malignant_risk", "suggested_class", "not_dermoscopic_score")
"""Outputs of the exported network, in this order."""


class ExportError(ValueError):
    """A model or input that cannot be exported or served, with the reason."""


class _Dihedral(keras.layers.Layer):
    """View ``view`` of :data:`skin_model.runtime.inference.VIEWS` of an image batch (the
    app's test-time augmentation).
    """

    def __init__(self, view: int, **kwargs):
        super().__init__(**kwargs)
        self.view = view

    def call(self, x):
        from skin_model.runtime.inference import VIEWS

        ops = keras.ops
        turns, mirrored = VIEWS[self.view]
        if mirrored:
            x = ops.flip(x, axis=2)
        for _ in range(turns):  # np.rot90 over (H, W): counter-clockwise
            x = ops.flip(ops.transpose(x, (0, 2, 1, 3)), axis=1)
        return x


def _rounded_share(weight, bits: int):
    """``round(weight / row sum * 2**bits)`` of non-negative integer weights (row sums
    below 2**15), computed exactly in float32 by long division in 8-bit digits: the
    coefficients Pillow's double precision gives (no share lies on a tie).
    """
    import tensorflow as tf

    total = tf.reduce_sum(weight, axis=1, keepdims=True)
    quotient, rest, left = tf.zeros_like(weight), weight, bits
    while left > 0:
        step = min(8, left)
        scaled = rest * float(2**step)
        digit = tf.floor(scaled / total)
        digit -= tf.cast(digit * total > scaled, tf.float32)  # a quotient rounded up
        digit += tf.cast(scaled - digit * total >= total, tf.float32)  # or down
        rest = scaled - digit * total
        quotient = quotient * float(2**step) + digit
        left -= step
    return quotient + tf.cast(2.0 * rest >= total, tf.float32)


class PillowResize(keras.layers.Layer):
    """The app's resize (:func:`skin_model.data.imaging.resize_for_model`: Pillow's bilinear
    filter, antialiased, with ``reducing_gap=2``) as graph ops, so the exported network fed
    raw pixels (up to the decoder's 1024 px) sees the pixels the app's network sees.

    Pillow's own arithmetic, step by step: a box reduction by ``floor(in / (2 * out))`` per
    axis (``(sum + n // 2) * (2**24 // n) >> 24`` over the n pixels of each box, edge boxes
    included), then a triangle filter whose support grows with the downscale factor,
    horizontal pass first, with 22-bit integer coefficients and each pass rounded to 8
    bits (``(sum + 2**21) >> 22``). Every product and partial sum is kept an integer below
    2**24 (coefficients split into high and low parts), so float32 gives Pillow's levels
    exactly, ties included. A portrait batch's result is turned a quarter turn clockwise,
    as the app's resize turns it.
    """

    def __init__(self, size: int, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)

    def _axis(self, n):
        """The box-membership and the triangle-filter (22-bit integer) matrices of one axis
        of ``n`` pixels. Distances come from integers, exact in float32 at any size.
        """
        import tensorflow as tf

        out = self.size
        n_f = tf.cast(n, tf.float32)
        factor = tf.maximum(tf.floor(n_f / (out * 2.0)), 1.0)
        f_int = tf.cast(factor, tf.int32)
        reduced = (n + f_int - 1) // f_int
        member = tf.equal(tf.range(n)[None, :] // f_int, tf.range(reduced)[:, None])
        # distance of reduced pixel x from output pixel o's centre, in reduced pixels:
        # (x + 0.5) - (o + 0.5) * n / (f * out) = ((2x + 1) f out - (2o + 1) n) / (2 f out)
        two_x = 2 * tf.range(reduced)[None, :] + 1
        two_o = 2 * tf.range(out)[:, None] + 1
        numerator = tf.cast(tf.abs(two_x * f_int * out - two_o * n), tf.float32)
        upscale = n_f < factor * out  # support 1 pixel (else the scale)
        span = tf.where(upscale, 2.0 * factor * out, 2.0 * n_f)  # numerator / span = t
        weight = tf.maximum(span - numerator, 0.0)  # (1 - t) * span: integers
        return tf.cast(member, tf.float32), _rounded_share(weight, 22)

    @staticmethod
    def _box_mean(sums, count):
        """Pillow's ``(sum + n // 2) * (2**24 // n) >> 24`` in exact float32 steps."""
        import tensorflow as tf

        total = sums + tf.floor(count / 2.0)
        mult = tf.floor(16777216.0 / count)
        high, low = tf.floor(mult / 4096.0), tf.math.floormod(mult, 4096.0)
        carry = tf.floor(total * low / 4096.0)
        return tf.floor((total * high + carry) / 4096.0)

    @staticmethod
    def _filter(coef, x, spec: str):
        """One pass with 22-bit coefficients: ``(sum + 2**21) >> 22``, clipped to 8 bits."""
        import tensorflow as tf

        high, low = tf.floor(coef / 2048.0), tf.math.floormod(coef, 2048.0)
        carry = tf.floor((tf.einsum(spec, low, x) + 2097152.0) / 2048.0)
        return tf.clip_by_value(tf.floor((tf.einsum(spec, high, x) + carry) / 2048.0), 0.0, 255.0)

    def call(self, images):
        """(N, H, W, 3) pixels of any size to (N, size, size, 3), 8-bit levels as floats
        (turned when H > W).
        """
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        shape = tf.shape(x)
        box_y, tri_y = self._axis(shape[1])
        box_x, tri_x = self._axis(shape[2])
        sums = tf.einsum("ph,nhwc->npwc", box_y, tf.einsum("qw,nhwc->nhqc", box_x, x))
        count_y = tf.reshape(tf.reduce_sum(box_y, axis=1), [1, -1, 1, 1])
        count_x = tf.reshape(tf.reduce_sum(box_x, axis=1), [1, 1, -1, 1])
        x = self._box_mean(sums, count_y * count_x)  # pixels in each box
        x = self._filter(tri_x, x, "qw,nhwc->nhqc")
        x = self._filter(tri_y, x, "ph,nhwc->npwc")
        # a portrait image's input turned a quarter turn clockwise (imaging.to_landscape)
        turned = tf.reverse(tf.transpose(x, (0, 2, 1, 3)), axis=[2])
        return tf.where(shape[1] > shape[2], turned, x)

    def compute_output_shape(self, input_shape):
        """Square at the model's input size."""
        return (input_shape[0], self.size, self.size, input_shape[-1])

    def get_config(self):
        """The layer's settings (Keras serialisation)."""
        return {**super().get_config(), "size": self.size}


class _NoContext(keras.layers.Layer):
    """The "no patient details" vector for every image of the batch."""

    def __init__(self, missing: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.missing = np.asarray(missing, np.float32)

    def call(self, images):
        ops = keras.ops
        n = ops.shape(images)[0]
        return ops.tile(ops.convert_to_tensor(self.missing)[None], [n, 1])


class _PostHoc(keras.layers.Layer):
    """Prior shift, temperature, malignant risk, the (weighted) balanced decision and the
    detector's score, as the package computes them (:mod:`skin_model.model.posthoc`,
    :mod:`skin_model.model.ood`).
    """

    def __init__(self, bundle, **kwargs):
        super().__init__(**kwargs)
        post = bundle.posthoc
        self.prior = None if post.class_prior is None else np.asarray(post.class_prior, np.float32)
        self.temperature = float(post.temperature_)
        weights = post.decision_weights
        self.decision_weights = None if weights is None else np.asarray(weights, np.float32)
        self.malignant = np.array([c in MALIGNANT for c in CLASSES])
        det = bundle.detector
        stats = [] if det is None else det.stats_
        self.stats = [(m.astype(np.float32), p.astype(np.float32)) for m, p in stats]
        self.limits = [] if det is None else [float(v) for v in det.group_limits_]

    def call(self, raw, features):
        ops = keras.ops
        raw = ops.cast(raw, "float32")
        probs = raw
        if self.prior is not None:
            probs = raw * ops.convert_to_tensor(self.prior)
            probs = probs / ops.sum(probs, axis=1, keepdims=True)
        if self.temperature != 1.0:
            logits = ops.log(ops.clip(probs, 1e-7, 1.0)) / self.temperature
            probs = ops.softmax(logits, axis=1)
        mask = ops.convert_to_tensor(self.malignant.astype(np.float32))
        risk = ops.sum(probs * mask, axis=1)
        # top_k, not argmax: Keras' argmax uses bit casts that LiteRT and ONNX lack
        base = raw if self.prior is not None else probs
        if self.decision_weights is not None:  # not ``weights``: a Keras Layer property
            base = base * ops.convert_to_tensor(self.decision_weights)
        _, decision = ops.top_k(base, k=1)
        decision = decision[:, 0]
        if self.stats:
            ratios = []
            groups = zip(features, self.stats, self.limits, strict=True)
            for feats, (mean, precision), limit in groups:
                d = ops.cast(feats, "float32") - ops.convert_to_tensor(mean)
                q = ops.sum(ops.matmul(d, ops.convert_to_tensor(precision)) * d, axis=1)
                ratios.append(ops.sqrt(ops.maximum(q, 0.0)) / limit)
            score = ops.max(ops.stack(ratios, axis=1), axis=1)
        else:
            score = ops.zeros_like(risk)
        return probs, risk, ops.cast(decision, "int32"), score


def serving_model(bundle) -> keras.Model:
    """The bundle's network with resizing, test-time augmentation (and its second look near
    the threshold), the post-hoc layer and the detector inside: raw RGB pixels in,
    :data:`OUTPUTS` out.
    """
    from skin_model.data.metadata import MISSING
    from skin_model.model.ood import feature_tensors
    from skin_model.runtime.inference import takes_metadata

    model, size = bundle.model, bundle.input_size
    if bundle.input_shape != (size, size):
        raise ExportError(
            "a model of the images' own aspect (--input-height) cannot be exported yet: "
            "the in-graph resize and views are square"
        )
    layers = list(bundle.detector.layers) if bundle.detector else []
    net = keras.Model(model.inputs, [*feature_tensors(model, layers), model.output])
    image = keras.Input((None, None, 3), name="image", dtype="float32")
    x = PillowResize(size, name="resize")(image)
    context = _NoContext(MISSING, name="no_context")(x) if takes_metadata(model) else None
    cfg = bundle.config
    base = int(cfg.tta)
    total = int(cfg.second_look_views) if cfg.looks_again else base
    outs = []
    for v in range(total):
        view = _Dihedral(v, name=f"view_{v}")(x)
        outs.append(net([view, context] if context is not None else view, training=False))
    features = list(outs[0][:-1])
    post = _PostHoc(bundle, name="posthoc")
    raw = _mean([o[-1] for o in outs[:base]], "tta_mean")
    if total > base:  # every image pays for the second look here; the app's only near it
        _, risk, _, _ = post(raw, features)
        more = _mean([o[-1] for o in outs], "second_look_mean")
        near = _SecondLook(bundle.posthoc.threshold_, cfg.second_look_band, name="second_look")
        raw = near(raw, more, risk)
    probs, risk, decision, score = post(raw, features)
    return keras.Model(image, [probs, risk, decision, score], name="skin_lesion_classifier")


def _mean(tensors: list, name: str):
    """The mean of view outputs (the one tensor itself for one view)."""
    return tensors[0] if len(tensors) == 1 else keras.layers.Average(name=name)(tensors)


class _SecondLook(keras.layers.Layer):
    """The app's second look (:func:`skin_model.runtime.inference.second_look`) for an image
    without patient details: the mean of all its views where the first views' risk lies
    within ``band`` log-odds of the image-only threshold, else the first views' mean.
    """

    def __init__(self, threshold: float, band: float, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.band = float(threshold), float(band)

    def call(self, raw, more, risk):
        ops = keras.ops
        p = ops.clip(ops.cast(risk, "float32"), 1e-6, 1 - 1e-6)
        t = min(max(self.threshold, 1e-6), 1 - 1e-6)
        distance = ops.abs(ops.log(p) - ops.log(1.0 - p) - float(np.log(t) - np.log1p(-t)))
        return ops.where((distance < self.band)[:, None], more, raw)


def export(model_dir: Path, fmt: str, out: Path) -> Path:
    """Export a model directory in one of :data:`FORMATS`.

    Args:
        model_dir: A finalised model directory.
        fmt: ``saved_model``, ``litert`` or ``onnx``.
        out: The SavedModel folder, ``.tflite`` file or ``.onnx`` file to write.

    Returns:
        ``out``.

    Raises:
        ExportError: For an unknown format or a converter that is not installed.
    """
    from skin_model.runtime.inference import load_bundle

    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    bundle = load_bundle(model_dir)
    model = serving_model(bundle)
    size = bundle.input_size
    model(np.zeros((1, size, size, 3), np.float32))  # the ONNX exporter needs one call
    signature = [keras.InputSpec(shape=(None, None, None, 3), dtype="float32")]
    try:
        model.export(str(out), format=FORMATS[fmt], verbose=False, input_signature=signature)
    except ImportError as exc:
        raise ExportError(f"the {fmt} converter is not installed ({exc})") from exc
    return Path(out)


def check_images(images) -> np.ndarray:
    """A batch the exported network accepts: (N, H, W, 3) float32 RGB in [0, 255].

    Raises:
        ExportError: For any other shape, with what was given.
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 1:
        raise ExportError(
            f"expected a batch of RGB images shaped (N, H, W, 3), got {tuple(x.shape)}"
        )
    return x.astype(np.float32)


@functools.cache
def _saved_model(path: str):
    import tensorflow as tf

    return tf.saved_model.load(path)


@functools.cache
def _litert(path: str):
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf.lite's deprecation notice
        return tf.lite.Interpreter(model_path=path)


@functools.cache
def _onnx(path: str):
    import onnxruntime

    return onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_saved_model(path: Path, images) -> dict[str, np.ndarray]:
    """The SavedModel's ``serving_default`` signature on a batch (as TF Serving runs it;
    loaded once per path and process).
    """
    import tensorflow as tf

    fn = _saved_model(str(path)).signatures["serving_default"]
    out = fn(tf.constant(check_images(images)))
    values = [out[k].numpy() for k in sorted(out, key=lambda k: int(k.split("_")[-1] or 0))]
    return dict(zip(OUTPUTS, values, strict=True))


def run_litert(path: Path, images) -> dict[str, np.ndarray]:
    """The LiteRT file's ``serving_default`` signature on a batch of any size (TensorFlow's
    interpreter; the runner resizes its input tensor to the batch).
    """
    x = check_images(images)
    interpreter = _litert(str(path))
    signature = interpreter.get_signature_list()["serving_default"]
    runner = interpreter.get_signature_runner("serving_default")
    out = runner(**{signature["inputs"][0]: x})
    return {name: out[f"output_{i}"] for i, name in enumerate(OUTPUTS)}


def run_onnx(path: Path, images) -> dict[str, np.ndarray]:
    """The ONNX file on a batch with ONNX Runtime."""
    session = _onnx(str(path))
    name = session.get_inputs()[0].name
    return dict(zip(OUTPUTS, session.run(None, {name: check_images(images)}), strict=True))


RUNNERS = {"saved_model": run_saved_model, "litert": run_litert, "onnx": run_onnx}
