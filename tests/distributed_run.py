"""One tiny data-parallel fit in a fresh process, for the parity tests: the caller sets
``KERAS_BACKEND`` (and, for JAX, ``XLA_FLAGS`` with two host devices); on TensorFlow two
logical CPU devices are made here before anything else touches TensorFlow. Prints the
epoch losses and the fitted weights' digest as JSON on the last line.

    python -m tests.distributed_run DATA OUT DEVICES [--finalise]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np
import pandas as pd

import tests.tiny_architecture  # noqa: F401  (registers the "tiny" architecture)


def main(argv: list[str]) -> int:
    from skin_model.model.settings import TrainConfig
    from skin_model.train.training import read_weight_list, train_model

    data, out, devices = Path(argv[0]), Path(argv[1]), argv[2]
    cfg = TrainConfig(
        architecture="tiny",
        metadata=False,
        weights=None,
        input_size=32,
        epochs=2,
        batch_size=16,
        learning_rate=3e-3,
        name="tiny",
        verbose=0,
    )
    train_model(data, out, cfg, fit_only="--finalise" not in argv, devices=devices)
    if (out / "fitted_weights.npz").is_file():
        weights = read_weight_list(out / "fitted_weights.npz")
    else:
        weights = keras.models.load_model(out / "model.keras").get_weights()
    losses = pd.read_csv(out / "history.csv")["loss"].tolist()
    print(
        json.dumps({"loss": losses, "weights": [np.asarray(w).ravel().tolist() for w in weights]})
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
