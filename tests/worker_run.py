"""One worker of a multi-process training run, for the two-process tests: the caller sets
``TF_CONFIG`` (TensorFlow) or ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID`` (JAX) and ``KERAS_BACKEND``. Runs ``train.py`` on the tiny parity
architecture of :mod:`tests.distributed_run`. With ``SKIN_TEST_DIE_AFTER_EPOCH=K`` this
worker exits abruptly after epoch K (a crashed host).

    python -m tests.worker_run DATA OUT [train.py options]
"""

from __future__ import annotations

import os
import sys

import tests.tiny_architecture  # noqa: F401  (registers the "tiny" architecture)


def _die_after_epoch() -> None:
    """Make the checkpoint callback end this process after the chosen epoch."""
    import skin_model.train.training as training

    after = int(os.environ["SKIN_TEST_DIE_AFTER_EPOCH"])
    original = training.make_checkpoint_callback

    def dying(*args, **kwargs):
        callback = original(*args, **kwargs)
        save = callback.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            save(epoch, logs)
            if epoch + 1 >= after:
                os._exit(17)

        callback.on_epoch_end = on_epoch_end
        return callback

    training.make_checkpoint_callback = dying


def main(argv: list[str]) -> int:
    import train

    if os.environ.get("SKIN_TEST_DIE_AFTER_EPOCH"):
        _die_after_epoch()
    data, out, *rest = argv
    options = [
        "--data-dir", data, "--out", out, "--architecture", "tiny", "--metadata", "false",
        "--weights", "none", "--input-size", "32", "--batch-size", "16",
        "--learning-rate", "0.003", "--name", "tiny", "--verbose", "0", "--epochs", "2", *rest,
    ]  # fmt: skip
    return train.main(options)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
