"""Model builders and the layers, loss and optimizer they use.

Every model is a flat Functional Keras model that takes float images in [0, 255] (input
``image``), rescales them itself, and ends in ``Dense(softmax)`` named ``predictions`` so
that tf-keras-vis Grad-CAM can use it directly. The layer names below are the contract the
rest of the package relies on; :mod:`skin_model.model.architectures` says, per architecture,
which further layers Grad-CAM, the "not dermoscopic" detector and the optimizer use.
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
from keras import layers

from skin_model import CLASSES
from skin_model.data.imaging import Size, input_hw

IMAGE_INPUT = "image"
"""The image input: float RGB in [0, 255], square, at the model's input size."""
CONTEXT_INPUT = "metadata"
"""The optional second input: the encoded patient context (:mod:`skin_model.data.metadata`)."""
CONTEXT_DENSE = "meta_dense"
"""The dense layer that encodes the patient context."""
FEATURES = "features"
"""The pooled image features (global average pooling of the last feature map)."""
PREDICTIONS = "predictions"
"""The final ``Dense(softmax)`` layer."""
COLOUR_CONSTANCY = "colour_constancy"
"""The optional Shades-of-Gray layer right after the image input."""

BN_MOMENTUM = 0.9
"""Batch-norm moving-average momentum; 0.9 tracks the weights of short CPU runs closely."""


@keras.saving.register_keras_serializable(package="skin_model")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Cross-entropy on ``log p + log prior`` (logit adjustment, Menon et al., 2021).

    Trained with it, the model's softmax estimates the class posterior under a *uniform*
    prior: its argmax is a balanced decision, and ``p * prior`` renormalised is the
    posterior at the training frequencies (see :mod:`skin_model.model.calibration`).

    Args:
        prior: (K,) training class frequencies.
        label_smoothing: Share of each target spread evenly over the classes (0 = none).
    """

    def __init__(
        self,
        prior,
        label_smoothing: float = 0.0,
        name: str = "logit_adjusted_crossentropy",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Per-sample loss."""
        ops = keras.ops
        log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        logits = log_p + ops.log(ops.convert_to_tensor(self.prior, "float32"))
        return keras.losses.categorical_crossentropy(
            y_true, logits, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self) -> dict:
        """Serialisable settings."""
        return {
            **super().get_config(),
            "prior": self.prior,
            "label_smoothing": self.label_smoothing,
        }


@keras.saving.register_keras_serializable(package="skin_model")
class BalancedAccuracy(keras.metrics.Metric):
    """Balanced accuracy (the mean per-class recall) of one-hot labels over an epoch, so
    the training batches' figure can be read beside the held-out one.

    Args:
        num_classes: Number of classes.
    """

    def __init__(self, num_classes: int = len(CLASSES), name: str = "balanced_accuracy", **kw):
        super().__init__(name=name, **kw)
        self.num_classes = int(num_classes)
        self.hits = self.add_variable((self.num_classes,), "zeros", name="hits")
        self.counts = self.add_variable((self.num_classes,), "zeros", name="counts")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch (``sample_weight`` is ignored: every image counts once)."""
        ops = keras.ops
        truth = ops.argmax(y_true, axis=-1)
        right = ops.cast(ops.equal(truth, ops.argmax(y_pred, axis=-1)), "float32")
        onehot = ops.one_hot(truth, self.num_classes)
        self.hits.assign_add(ops.sum(onehot * right[:, None], axis=0))
        self.counts.assign_add(ops.sum(onehot, axis=0))

    def result(self):
        """Mean recall over the classes seen."""
        ops = keras.ops
        seen = ops.cast(self.counts > 0, "float32")
        recall = self.hits / ops.maximum(self.counts, 1.0)
        return ops.sum(recall * seen) / ops.maximum(ops.sum(seen), 1.0)

    def reset_state(self):
        """Start a new epoch."""
        for v in (self.hits, self.counts):
            v.assign(keras.ops.zeros(v.shape, v.dtype))

    def get_config(self) -> dict:
        """Serialisable settings."""
        return {**super().get_config(), "num_classes": self.num_classes}


HEAD_LAYERS = (PREDICTIONS, CONTEXT_DENSE, "fc")
"""Layers that :class:`BackboneScaledAdamW` trains at the full learning rate."""


@keras.saving.register_keras_serializable(package="skin_model")
class BackboneScaledAdamW(keras.optimizers.AdamW):
    """AdamW that trains the backbone slower than the head.

    Variables of the layers named in ``head_layers`` learn at the schedule's rate; all
    others (the pretrained backbone) at ``backbone_lr_scale`` times it, and not at all
    during the first ``head_warmup_steps`` steps (a head-only warm-up). The decoupled
    weight decay stays at the schedule's rate for every variable.

    Args:
        backbone_lr_scale: Factor on the backbone's learning rate.
        head_warmup_steps: Steps during which only the head learns.
        head_layers: Names of the layers trained at the full rate.
        **kwargs: Passed to ``keras.optimizers.AdamW``.
    """

    def __init__(
        self,
        backbone_lr_scale: float = 1.0,
        head_warmup_steps: int = 0,
        head_layers: tuple[str, ...] | list[str] = HEAD_LAYERS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.head_warmup_steps = int(head_warmup_steps)
        self.head_layers = tuple(head_layers)

    def build(self, var_list):
        """Create the slots and note which variables belong to the head."""
        super().build(var_list)
        self._in_head = [v.path.split("/")[0] in self.head_layers for v in var_list]

    def update_step(self, gradient, variable, learning_rate):
        """One AdamW step with the backbone's rate scaled (zero during the warm-up)."""
        if not self._in_head[self._get_variable_index(variable)]:
            warm = keras.ops.less(self.iterations, self.head_warmup_steps)
            scale = keras.ops.where(warm, 0.0, self.backbone_lr_scale)
            learning_rate = learning_rate * keras.ops.cast(scale, learning_rate.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        """Serialisable settings (the checkpoint restores this optimizer)."""
        return {
            **super().get_config(),
            "backbone_lr_scale": self.backbone_lr_scale,
            "head_warmup_steps": self.head_warmup_steps,
            "head_layers": list(self.head_layers),
        }


@keras.saving.register_keras_serializable(package="skin_model")
class ShadesOfGray(layers.Layer):
    """Shades-of-Gray colour constancy (Finlayson & Trezzi, 2004) inside the model.

    The illuminant of each image is estimated per channel as the Minkowski ``power``-mean
    of its pixels; every channel is divided by its estimate, so the same lesion under another
    dermatoscope's white balance reaches the network with about the same colours. Being a
    layer, the app, the CLI, training and any exported model share it.

    Args:
        power: Minkowski norm (1 = grey world, large = max-RGB; 6 as in ISIC 2018 entries).
        brightness: 0 keeps each image's brightness (the estimate is normalised to unit RMS,
            so a grey illuminant leaves the image unchanged); > 0 scales every image so that
            its estimate's RMS is this level (0-1), so a file saved darker or brighter as a
            whole reaches the network the same (up to 8-bit rounding and clipped highlights).
    """

    def __init__(self, power: float = 6.0, brightness: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)
        self.brightness = float(brightness)

    def call(self, images):
        """(B, H, W, 3) float in [0, 255] -> the same, white-balanced."""
        ops = keras.ops
        x = ops.cast(images, "float32") / 255.0
        e = ops.mean(ops.power(x + 1e-6, self.power), axis=(1, 2), keepdims=True)
        e = ops.power(e, 1.0 / self.power)
        if self.brightness > 0:
            e = e / self.brightness
        else:
            e = e / ops.sqrt(ops.sum(e * e, axis=-1, keepdims=True) / 3.0)
        return ops.clip(x / ops.maximum(e, 1e-3), 0.0, 1.0) * 255.0

    def get_config(self) -> dict:
        """Serialisable settings."""
        return {**super().get_config(), "power": self.power, "brightness": self.brightness}


def illuminant_level(images: np.ndarray, power: float) -> np.ndarray:
    """The RMS over channels of each image's Shades-of-Gray illuminant estimate (0-1): the
    level :class:`ShadesOfGray` with ``brightness`` scales every image to.

    Args:
        images: (N, H, W, 3) uint8 (or float in [0, 255]) network inputs.
        power: The layer's Minkowski norm.

    Returns:
        (N,) levels.
    """
    x = np.asarray(images, dtype=np.float64) / 255.0 + 1e-6
    e = np.mean(x**power, axis=(1, 2)) ** (1.0 / power)
    return np.sqrt(np.mean(e * e, axis=-1))


def _colour_constancy(inputs, power: float, brightness: float = 0.0):
    """``inputs`` through :class:`ShadesOfGray` when ``power`` > 0, else unchanged."""
    if power <= 0:
        return inputs
    return ShadesOfGray(power, brightness, name=COLOUR_CONSTANCY)(inputs)


def _conv_bn(x, filters: int, kernel: int, strides: int, name: str):
    """Conv2D + BatchNorm + ReLU."""
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(
        x
    )
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _residual_block(x, filters: int, strides: int, name: str):
    """Depthwise-separable residual block (two separable 3x3 convs, projection shortcut)."""
    shortcut = x
    y = layers.SeparableConv2D(
        filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_sep1"
    )(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.SeparableConv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_sep2")(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
    if strides != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{name}_proj")(
            shortcut
        )
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _head(x, dropout: float, num_classes: int):
    """Global pooling, dropout and the softmax classifier."""
    x = layers.GlobalAveragePooling2D(name=FEATURES)(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name=PREDICTIONS)(x)


def _finish(inputs, feature_map, dropout: float, num_classes: int, metadata_dim: int, name: str):
    """The classifier on a backbone's last feature map, with the patient context joined to
    the pooled features when ``metadata_dim`` > 0 (a second input named ``metadata``).
    """
    if not metadata_dim:
        return keras.Model(inputs, _head(feature_map, dropout, num_classes), name=name)
    meta = keras.Input((metadata_dim,), name=CONTEXT_INPUT)
    m = layers.Dense(32, activation="relu", name=CONTEXT_DENSE)(meta)
    x = layers.GlobalAveragePooling2D(name=FEATURES)(feature_map)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Concatenate(name="fusion")([x, m])
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name=PREDICTIONS)(x)
    return keras.Model([inputs, meta], outputs, name=f"{name}_meta")


def make_skinnet(
    input_size: Size = 128,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks_per_stage: int = 2,
    dropout: float = 0.3,
    num_classes: int = len(CLASSES),
    width: float = 1.0,
) -> keras.Model:
    """A small residual depthwise-separable CNN for CPU inference (trained from scratch; the
    shipped models before ImageNet initialisation).

    Args:
        input_size: Side of the square input, or its ``(height, width)``.
        widths: Channels of each stage; each stage halves the resolution.
        blocks_per_stage: Residual blocks per stage.
        dropout: Dropout before the classifier.
        num_classes: Number of output classes.
        width: Multiplier of every stage's channels (rounded to a multiple of 8).

    Returns:
        An uncompiled flat Functional model.
    """
    widths = tuple(max(8, round(w * width / 8) * 8) for w in widths)
    inputs = keras.Input((*input_hw(input_size), 3), name=IMAGE_INPUT)
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = _conv_bn(x, widths[0], 3, 2, "stem")
    for s, width in enumerate(widths):
        for b in range(blocks_per_stage):
            x = _residual_block(x, width, 2 if (b == 0 and s > 0) else 1, f"stage{s}_block{b}")
    x = _conv_bn(x, widths[-1] * 2, 1, 1, "last_conv")
    return keras.Model(inputs, _head(x, dropout, num_classes), name="skinnet")


def make_custom_cnn(
    input_size: Size = 128, dropout: float = 0.5, num_classes: int = len(CLASSES)
) -> keras.Model:
    """The seed's plain CNN: Conv2D/MaxPooling stacks, Dropout and Dense layers.

    Args:
        input_size: Side of the square input, or its ``(height, width)``.
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.

    Returns:
        An uncompiled flat Functional model.
    """
    inputs = keras.Input((*input_hw(input_size), 3), name=IMAGE_INPUT)
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
        x = layers.Dropout(0.25, name=f"drop{i}")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name=FEATURES)(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name="custom_cnn")


def make_resnet50(
    input_size: Size = 224,
    weights: str | Path | None = None,
    dropout: float = 0.3,
    num_classes: int = len(CLASSES),
) -> keras.Model:
    """ResNet-50 backbone, inlined into one flat Functional model.

    Args:
        input_size: Side of the square input, or its ``(height, width)``.
        weights: ``None`` (random init), ``"imagenet"`` (downloads; needs a network)
            or the path of a local ``*_notop.h5`` weights file.
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.

    Returns:
        An uncompiled flat Functional model.
    """
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(f"ResNet-50 weights file not found: {weights}")
    inputs = keras.Input((*input_hw(input_size), 3), name=IMAGE_INPUT)
    x = keras.applications.resnet50.preprocess_input(inputs)
    base = keras.applications.ResNet50(
        include_top=False, weights=None if weights is None else str(weights), input_tensor=x
    )
    return keras.Model(inputs, _head(base.output, dropout, num_classes), name="resnet50")


def make_mobilenetv2(
    input_size: Size = 128,
    weights: str | Path | None = None,
    dropout: float = 0.2,
    num_classes: int = len(CLASSES),
    bn_momentum: float = BN_MOMENTUM,
    metadata_dim: int = 0,
    colour_constancy: float = 0.0,
    colour_constancy_brightness: float = 0.0,
) -> keras.Model:
    """MobileNetV2 (alpha 1.0), inlined into one flat Functional model.

    Args:
        input_size: Side of the square input, or its ``(height, width)``.
        weights: ``None`` (random init), ``"imagenet"`` (Keras' download; needs a network)
            or a local ``.weights.h5`` file such as the one
            :func:`skin_model.model.backbones.fetch_mobilenetv2` writes (no network).
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.
        bn_momentum: Batch-norm momentum; Keras' 0.999 keeps ImageNet's statistics for
            short fine-tuning runs and validation collapses.
        metadata_dim: Length of an optional second input ``metadata`` (patient context,
            see :mod:`skin_model.data.metadata`), encoded by a small dense layer and joined to
            the pooled image features before the classifier; 0 = image only.
        colour_constancy: Shades-of-Gray power applied to the input (0 = none).
        colour_constancy_brightness: Its fixed brightness level (0 = each image's own;
            see :class:`ShadesOfGray`).

    Returns:
        An uncompiled flat Functional model; ``out_relu`` is its last post-activation
        feature map and ``features`` the pooled image features.
    """
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"MobileNetV2 weights file not found: {weights}; "
            "run `python -m skin_model.model.backbones fetch mobilenetv2`"
        )
    inputs = keras.Input((*input_hw(input_size), 3), name=IMAGE_INPUT)
    x = _colour_constancy(inputs, colour_constancy, colour_constancy_brightness)
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(x)
    base = keras.applications.MobileNetV2(
        include_top=False,
        weights=None if weights is None else str(weights),
        input_tensor=x,
        alpha=1.0,
    )
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    return _finish(inputs, base.output, dropout, num_classes, metadata_dim, "mobilenetv2")


LITE_VARIANTS = {"lite0": (1.0, 1.0, 0.2), "lite1": (1.0, 1.1, 0.2), "lite2": (1.1, 1.2, 0.3)}
"""EfficientNet-Lite width and depth coefficients and dropout (TensorFlow's
``efficientnet_lite_builder``)."""
LITE_STAGES = (
    # (repeats, kernel, stride, expansion, output channels) of EfficientNet-B0
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width`` and rounded to a multiple of ``divisor`` (TF rule)."""
    f = filters * width
    new = max(divisor, int(f + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * f else new)


def lite_blocks(variant: str = "lite0") -> list[tuple[int, int, int, int, int]]:
    """Every MBConv block of an EfficientNet-Lite as (kernel, stride, expansion, in, out).

    Lite models keep the stem (32), the head (1280) and the first and last stages' repeats
    fixed while scaling the rest.
    """
    width, depth, _ = LITE_VARIANTS[variant]
    blocks, channels = [], 32
    for s, (repeats, kernel, stride, expand, out) in enumerate(LITE_STAGES):
        if 0 < s < len(LITE_STAGES) - 1:
            repeats = math.ceil(depth * repeats)
        out = _round_filters(out, width)
        for r in range(repeats):
            blocks.append((kernel, stride if r == 0 else 1, expand, channels, out))
            channels = out
    return blocks


def lite_stage_ends(variant: str = "lite0") -> tuple[str, ...]:
    """The layers ending the stem and each stage of an EfficientNet-Lite, in order:
    ``stem_relu``, then each stage's last block output (its ``_add`` when it has a
    shortcut, else its ``_project_bn``).
    """
    ends, block = ["stem_relu"], 0
    for s, (repeats, *_rest) in enumerate(LITE_STAGES):
        if 0 < s < len(LITE_STAGES) - 1:
            repeats = math.ceil(LITE_VARIANTS[variant][1] * repeats)
        block += repeats
        _kernel, stride, _expand, c_in, c_out = lite_blocks(variant)[block - 1]
        residual = stride == 1 and c_in == c_out
        ends.append(f"block{block - 1}_{'add' if residual else 'project_bn'}")
    return tuple(ends)


def _bn(x, name: str, momentum: float):
    return layers.BatchNormalization(momentum=momentum, epsilon=1e-3, name=name)(x)


def _relu6(x, name: str):
    return layers.ReLU(6.0, name=name)(x)


def _skipped_branch(y, rate: float, name: str):
    """``y`` dropped whole per image with chance ``rate`` in training (stochastic depth)."""
    return layers.Dropout(rate, noise_shape=(None, 1, 1, 1), name=name)(y) if rate > 0 else y


def make_efficientnet_lite(
    input_size: Size = 192,
    variant: str = "lite0",
    weights: str | Path | None = None,
    dropout: float | None = None,
    num_classes: int = len(CLASSES),
    bn_momentum: float = BN_MOMENTUM,
    metadata_dim: int = 0,
    colour_constancy: float = 0.0,
    colour_constancy_brightness: float = 0.0,
    stochastic_depth: float = 0.0,
) -> keras.Model:
    """EfficientNet-Lite (no squeeze-excite, ReLU6, fixed stem and head) as one flat
    Functional model, laid out as TensorFlow's reference so ImageNet weights fit.

    Args:
        input_size: Side of the square input, or its ``(height, width)``.
        variant: ``lite0``, ``lite1`` or ``lite2``.
        weights: ``None`` (random init) or a ``.npz`` of ``layer/weight`` arrays such as
            :func:`skin_model.model.backbones.fetch_efficientnet_lite` writes (no network).
        dropout: Dropout before the classifier (default: the variant's).
        num_classes: Number of output classes.
        bn_momentum: Batch-norm momentum.
        metadata_dim: Length of an optional patient-context input (0 = image only).
        colour_constancy: Shades-of-Gray power applied to the input (0 = none).
        colour_constancy_brightness: Its fixed brightness level (0 = each image's own;
            see :class:`ShadesOfGray`).
        stochastic_depth: In training, residual block ``i`` of ``n`` skips its branch for
            an image with chance ``stochastic_depth * i / n`` (EfficientNet's drop-connect;
            a kept branch is scaled up to match); 0 = none (no layer added). Inference is
            unchanged.

    Returns:
        An uncompiled model; ``top_relu`` is its last feature map, ``block{i}_expand_relu``
        the expanded input of block ``i``.
    """
    if weights is not None and not Path(weights).is_file():
        raise FileNotFoundError(
            f"EfficientNet-{variant} weights file not found: {weights}; run "
            f"`python -m skin_model.model.backbones fetch efficientnet_{variant}`"
        )
    inputs = keras.Input((*input_hw(input_size), 3), name=IMAGE_INPUT)
    x = _colour_constancy(inputs, colour_constancy, colour_constancy_brightness)
    x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="rescale")(x)
    x = layers.Conv2D(32, 3, 2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _relu6(_bn(x, "stem_bn", bn_momentum), "stem_relu")
    blocks = lite_blocks(variant)
    for i, (kernel, stride, expand, c_in, c_out) in enumerate(blocks):
        y = x
        if expand != 1:
            y = layers.Conv2D(c_in * expand, 1, use_bias=False, name=f"block{i}_expand_conv")(y)
            y = _relu6(_bn(y, f"block{i}_expand_bn", bn_momentum), f"block{i}_expand_relu")
        y = layers.DepthwiseConv2D(
            kernel, stride, padding="same", use_bias=False, name=f"block{i}_dwconv"
        )(y)
        y = _relu6(_bn(y, f"block{i}_dw_bn", bn_momentum), f"block{i}_dw_relu")
        y = layers.Conv2D(c_out, 1, use_bias=False, name=f"block{i}_project_conv")(y)
        y = _bn(y, f"block{i}_project_bn", bn_momentum)
        if stride == 1 and c_in == c_out:
            y = _skipped_branch(y, stochastic_depth * i / len(blocks), f"block{i}_drop")
            x = layers.Add(name=f"block{i}_add")([x, y])
        else:
            x = y
    x = layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = _relu6(_bn(x, "top_bn", bn_momentum), "top_relu")
    rate = LITE_VARIANTS[variant][2] if dropout is None else dropout
    model = _finish(inputs, x, rate, num_classes, metadata_dim, f"efficientnet_{variant}")
    if weights is not None:
        with np.load(weights) as data:
            assign_by_name(model, {k: data[k] for k in data.files})
    return model


def assign_by_name(model, weights: dict[str, np.ndarray]) -> int:
    """Set every weight of ``model`` whose ``layer/weight`` name is in ``weights``.

    Keras 3 calls a depthwise kernel ``kernel``; TF.js (Keras 2) ``depthwise_kernel``.

    Returns:
        The number of tensors assigned.

    Raises:
        ValueError: If a layer has some but not all of its weights, or a shape differs.
    """
    count = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for var in layer.weights:
            short = var.path.split("/")[-1]
            names = [f"{layer.name}/{short}", f"{layer.name}/depthwise_{short}"]
            found = next((weights[n] for n in names if n in weights), None)
            values.append(found)
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise ValueError(f"layer {layer.name}: only some weights found")
        for var, v in zip(layer.weights, values, strict=True):
            if tuple(var.shape) != v.shape:
                raise ValueError(f"{layer.name}: shape {v.shape} != {tuple(var.shape)}")
        layer.set_weights(values)
        count += len(values)
    return count


def inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights without loss and optimizer state (a third the size)."""
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def save_network(model: keras.Model, path: Path) -> Path:
    """Save :func:`inference_copy` of ``model`` as a ``.keras`` file with its members
    deflated (:func:`skin_model.model.artifacts.deflate_zip`; Keras reads it as it is).

    Returns:
        ``path``.
    """
    from skin_model.model.artifacts import deflate_zip

    inference_copy(model).save(path)
    deflate_zip(path)
    return Path(path)


def with_brightness(model: keras.Model, brightness: float) -> keras.Model:
    """The same network and weights with its :class:`ShadesOfGray` layer set to
    ``brightness`` (0 = each image keeps its own; no weight depends on it).

    Raises:
        ValueError: If ``brightness`` > 0 and the network has no such layer.
    """
    config = model.get_config()
    found = [layer for layer in config["layers"] if layer["name"] == COLOUR_CONSTANCY]
    if not found:
        if brightness > 0:
            raise ValueError("the network has no Shades-of-Gray layer (--colour-constancy 0)")
        return model
    if found[0]["config"].get("brightness", 0.0) == float(brightness):
        return model
    found[0]["config"]["brightness"] = float(brightness)
    changed = keras.Model.from_config(config)
    changed.set_weights(model.get_weights())
    return changed


def at_input_size(model: keras.Model, size: Size) -> keras.Model:
    """The same network and weights taking images of ``size`` (a side or ``(height,
    width)``; a fully convolutional network ending in global pooling runs at any size:
    "FixRes", a network trained on random-scale crops run at a larger input).

    Raises:
        ValueError: If the network's weights depend on its input size.
    """
    config = model.get_config()
    for layer in config["layers"]:
        if layer["name"] == IMAGE_INPUT:
            layer["config"]["batch_shape"] = [None, *input_hw(size), 3]
    resized = keras.Model.from_config(config)
    resized.set_weights(model.get_weights())
    return resized
