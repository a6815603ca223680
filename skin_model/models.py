"""Model builders. Every model is a flat Functional Keras model that takes float
images in [0, 255], rescales them itself, and ends in ``Dense(softmax)`` named
``predictions`` so that tf-keras-vis Grad-CAM can use it directly.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from skin_model import CLASSES

ARCHITECTURES = ("skinnet", "custom_cnn", "resnet50")
BN_MOMENTUM = 0.9
"""Batch-norm moving-average momentum; 0.9 tracks the weights of short CPU runs closely."""


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


def build_model(architecture: str, input_size: int, **kwargs) -> keras.Model:
    """Build one of :data:`ARCHITECTURES` by name."""
    builders = {"skinnet": make_skinnet, "custom_cnn": make_custom_cnn, "resnet50": make_resnet50}
    if architecture not in builders:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {ARCHITECTURES}")
    return builders[architecture](input_size=input_size, **kwargs)
