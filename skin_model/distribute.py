"""Data-parallel training through the engines' own machinery (no loop of ours).

- **TensorFlow**: ``tf.distribute.MirroredStrategy`` over this host's devices, or
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers.
- **JAX**: Keras 3's ``keras.distribution.DataParallel`` over the local devices, after
  ``jax.distributed.initialize()`` when the usual coordinator variables are set
  (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), for several hosts.

The batch size of a run is the **global** batch: each of the ``n`` devices gets
``batch_size / n`` images per step and the learning rate is kept, so a run on several
devices takes the same steps as on one. Mixed precision is used only on GPUs that support
it (compute capability 7.0 or newer) and reset to float32 when training ends.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass


class DistributionError(ValueError):
    """Devices asked for that this machine cannot give, with the reason."""


@dataclass
class Plan:
    """How a run is spread over devices (recorded in ``run_config.json``).

    Attributes:
        backend: Keras backend.
        strategy: ``single device``, ``MirroredStrategy``, ``MultiWorkerMirroredStrategy``
            or ``keras.distribution.DataParallel``.
        devices: Devices taking part (all hosts).
        hosts: Hosts taking part.
        device_kind: ``GPU``, ``TPU`` or ``CPU``.
        global_batch: Images per step over all devices.
        per_replica_batch: Images per step on each device.
        learning_rate_scale: Factor on the learning rate (1: the global batch is the run's).
        mixed_precision: Whether float16 compute is used.
    """

    backend: str
    strategy: str
    devices: int
    hosts: int
    device_kind: str
    global_batch: int
    per_replica_batch: int
    learning_rate_scale: float
    mixed_precision: bool

    def record(self) -> dict:
        """The plan as a JSON-ready dict."""
        return asdict(self)


def _multiworker() -> int:
    """Workers named in ``TF_CONFIG`` (1 when unset)."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return 1
    return len(json.loads(raw).get("cluster", {}).get("worker", [])) or 1


def _tf_devices() -> tuple[str, list[str]]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return "GPU", [d.name for d in gpus]
    return "CPU", [d.name for d in tf.config.list_logical_devices("CPU")]


def _jax_devices() -> tuple[str, list]:
    import jax

    if os.environ.get("JAX_COORDINATOR_ADDRESS") and jax.process_count() == 1:
        jax.distributed.initialize()
    devices = jax.local_devices()
    return devices[0].platform.upper(), devices


def _mixed_precision_supported(backend: str, kind: str) -> bool:
    """float16 compute pays on GPUs of compute capability 7.0+ (and TPUs)."""
    if kind == "TPU":
        return True
    if kind != "GPU":
        return False
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        details = [tf.config.experimental.get_device_details(g) for g in gpus]
        return all((d.get("compute_capability") or (0, 0)) >= (7, 0) for d in details)
    return True


def make_plan(requested: str, batch_size: int) -> Plan:
    """The plan for ``--devices N|all`` with a global batch of ``batch_size``.

    Raises:
        DistributionError: When fewer devices exist than asked for, or the global batch
            does not split evenly over them.
    """
    import keras

    backend = keras.backend.backend()
    kind, found = _tf_devices() if backend == "tensorflow" else _jax_devices()
    hosts = _multiworker() if backend == "tensorflow" else _jax_process_count(backend)
    n_local = len(found) if requested == "all" else int(requested)
    if n_local < 1 or n_local > len(found):
        raise DistributionError(
            f"--devices {requested}: this machine has {len(found)} {kind} device(s)"
        )
    n = n_local * hosts
    if batch_size % n:
        raise DistributionError(f"--batch-size {batch_size} does not split over {n} devices")
    if n == 1:
        strategy = "single device"
    elif backend == "tensorflow":
        strategy = "MultiWorkerMirroredStrategy" if hosts > 1 else "MirroredStrategy"
    else:
        strategy = "keras.distribution.DataParallel"
    return Plan(
        backend=backend,
        strategy=strategy,
        devices=n,
        hosts=hosts,
        device_kind=kind,
        global_batch=batch_size,
        per_replica_batch=batch_size // n,
        learning_rate_scale=1.0,
        mixed_precision=_mixed_precision_supported(backend, kind),
    )


def _jax_process_count(backend: str) -> int:
    if backend != "jax":
        return 1
    import jax

    return jax.process_count()


@contextlib.contextmanager
def session(plan: Plan, local_devices: int | None = None):
    """Build, compile and fit inside this: the strategy or distribution of ``plan`` and
    its precision policy, both undone on leaving (also after an error).

    Args:
        plan: From :func:`make_plan`.
        local_devices: Devices of this host to use (default: ``plan.devices / hosts``).
    """
    import keras

    n_local = local_devices or plan.devices // plan.hosts
    previous = keras.mixed_precision.global_policy().name
    if plan.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        if plan.devices == 1:
            yield
        elif plan.backend == "tensorflow":
            import tensorflow as tf

            if plan.hosts > 1:
                strategy = tf.distribute.MultiWorkerMirroredStrategy()
            else:
                strategy = tf.distribute.MirroredStrategy(devices=_tf_devices()[1][:n_local])
            with strategy.scope():
                yield
        else:
            import jax

            devices = jax.devices() if plan.hosts > 1 else _jax_devices()[1][:n_local]
            keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
            try:
                yield
            finally:
                keras.distribution.set_distribution(None)
    finally:
        keras.mixed_precision.set_global_policy(previous)
