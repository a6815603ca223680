"""The "tiny" architecture of the parity tests: no batch norm, no dropout, so the maths is
the same on one device, split over two, or over two processes. Importing this module
registers it."""

from __future__ import annotations

import keras
from keras import layers

from skin_model.model.architectures import REGISTRY, ArchitectureSpec


def make_tiny(input_size: int):
    """A one-convolution classifier of the seven classes."""
    inputs = keras.Input((input_size, input_size, 3), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    out = layers.Dense(7, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, out, name="tiny")


REGISTRY["tiny"] = ArchitectureSpec(
    name="tiny", builder=make_tiny, summary="parity test", cam_layers=("last_conv",)
)
