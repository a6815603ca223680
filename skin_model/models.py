"""Model builders. Every model is a flat Functional Keras model that takes float
images in [0, 255], rescales them itself, and ends in ``Dense(softmax)`` named
``predictions`` so that tf-keras-vis Grad-CAM can use it directly.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from skin_model import CLASSES

ARCHITECTURES = ("skinnet", "mobilenetv2", "custom_cnn", "resnet50")
BN_MOMENTUM = 0.9
"""Batch-norm moving-average momentum; 0.9 tracks the weights of short CPU runs closely."""


@keras.saving.register_keras_serializable(package="skin_model")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Cross-entropy on ``log p + log prior`` (logit adjustment, Menon et al., 2021).

    Trained with it, the model's softmax estimates the class posterior under a *uniform*
    prior: its argmax is a balanced decision, and ``p * prior`` renormalised is the
    posterior at the training frequencies (see :mod:`skin_model.calibration`).

    Args:
        prior: (K,) training class frequencies.
    """

    def __init__(self, prior, name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.prior = [float(p) for p in prior]

    def call(self, y_true, y_pred):
        """Per-sample loss."""
        ops = keras.ops
        log_p = ops.log(ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0))
        logits = log_p + ops.log(ops.convert_to_tensor(self.prior, "float32"))
        return keras.losses.categorical_crossentropy(y_true, logits, from_logits=True)

    def get_config(self) -> dict:
        """Serialisable settings."""
        return {**super().get_config(), "prior": self.prior}


HEAD_LAYERS = ("predictions", "meta_dense", "fc")
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
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def make_skinnet(
    input_size: int = 128,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks_per_stage: int = 2,
    dropout: float = 0.3,
    num_classes: int = len(CLASSES),
    width: float = 1.0,
) -> keras.Model:
    """The shipped design: a small residual depthwise-separable CNN for CPU inference.

    Args:
        input_size: Side of the square input image.
        widths: Channels of each stage; each stage halves the resolution.
        blocks_per_stage: Residual blocks per stage.
        dropout: Dropout before the classifier.
        num_classes: Number of output classes.
        width: Multiplier of every stage's channels (rounded to a multiple of 8).

    Returns:
        An uncompiled flat Functional model.
    """
    widths = tuple(max(8, round(w * width / 8) * 8) for w in widths)
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = _conv_bn(x, widths[0], 3, 2, "stem")
    for s, width in enumerate(widths):
        for b in range(blocks_per_stage):
            x = _residual_block(x, width, 2 if (b == 0 and s > 0) else 1, f"stage{s}_block{b}")
    x = _conv_bn(x, widths[-1] * 2, 1, 1, "last_conv")
    return keras.Model(inputs, _head(x, dropout, num_classes), name="skinnet")


def make_custom_cnn(
    input_size: int = 128, dropout: float = 0.5, num_classes: int = len(CLASSES)
) -> keras.Model:
    """The seed's plain CNN: Conv2D/MaxPooling stacks, Dropout and Dense layers.

    Args:
        input_size: Side of the square input image.
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.

    Returns:
        An uncompiled flat Functional model.
    """
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((32, 64, 128)):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = layers.MaxPooling2D(name=f"pool{i}")(x)
        x = layers.Dropout(0.25, name=f"drop{i}")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Dense(256, activation="relu", name="fc")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model(inputs, outputs, name="custom_cnn")


def make_resnet50(
    input_size: int = 224,
    weights: str | Path | None = None,
    dropout: float = 0.3,
    num_classes: int = len(CLASSES),
) -> keras.Model:
    """ResNet-50 backbone, inlined into one flat Functional model.

    Args:
        input_size: Side of the square input image.
        weights: ``None`` (random init), ``"imagenet"`` (downloads; needs a network)
            or the path of a local ``*_notop.h5`` weights file.
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.

    Returns:
        An uncompiled flat Functional model.
    """
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(f"ResNet-50 weights file not found: {weights}")
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = keras.applications.resnet50.preprocess_input(inputs)
    base = keras.applications.ResNet50(
        include_top=False, weights=None if weights is None else str(weights), input_tensor=x
    )
    return keras.Model(inputs, _head(base.output, dropout, num_classes), name="resnet50")


def make_mobilenetv2(
    input_size: int = 128,
    weights: str | Path | None = None,
    dropout: float = 0.2,
    num_classes: int = len(CLASSES),
    bn_momentum: float = BN_MOMENTUM,
    metadata_dim: int = 0,
) -> keras.Model:
    """MobileNetV2 (alpha 1.0), inlined into one flat Functional model.

    Args:
        input_size: Side of the square input image.
        weights: ``None`` (random init), ``"imagenet"`` (Keras' download; needs a network)
            or a local ``.weights.h5`` file such as the one
            :func:`skin_model.backbones.fetch_mobilenetv2` writes (no network).
        dropout: Dropout rate before the classifier.
        num_classes: Number of output classes.
        bn_momentum: Batch-norm momentum; Keras' 0.999 keeps ImageNet's statistics for
            short fine-tuning runs and validation collapses.
        metadata_dim: Length of an optional second input ``metadata`` (patient context,
            see :mod:`skin_model.metadata`), encoded by a small dense layer and joined to
            the pooled image features before the classifier; 0 = image only.

    Returns:
        An uncompiled flat Functional model; ``out_relu`` is its last post-activation
        feature map and ``features`` the pooled image features.
    """
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"MobileNetV2 weights file not found: {weights}; "
            "run `python -m skin_model.backbones fetch mobilenetv2`"
        )
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inputs)
    base = keras.applications.MobileNetV2(
        include_top=False,
        weights=None if weights is None else str(weights),
        input_tensor=x,
        alpha=1.0,
    )
    for layer in base.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    if not metadata_dim:
        return keras.Model(inputs, _head(base.output, dropout, num_classes), name="mobilenetv2")
    meta = keras.Input((metadata_dim,), name="metadata")
    m = layers.Dense(32, activation="relu", name="meta_dense")(meta)
    x = layers.GlobalAveragePooling2D(name="features")(base.output)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    x = layers.Concatenate(name="fusion")([x, m])
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(
        x
    )
    return keras.Model([inputs, meta], outputs, name="mobilenetv2_meta")


def inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights without loss and optimizer state (a third the size)."""
    copy = keras.Model.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


def build_model(architecture: str, input_size: int, **kwargs) -> keras.Model:
    """Build one of :data:`ARCHITECTURES` by name."""
    builders = {
        "skinnet": make_skinnet,
        "mobilenetv2": make_mobilenetv2,
        "custom_cnn": make_custom_cnn,
        "resnet50": make_resnet50,
    }
    if architecture not in builders:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    return builders[architecture](input_size=input_size, **kwargs)
