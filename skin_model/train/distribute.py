"""Data-parallel training through the engines' own machinery (no loop of ours).

- **TensorFlow**: ``tf.distribute.MirroredStrategy`` over this host's devices, or
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` names several workers.
- **JAX**: Keras 3's ``keras.distribution.DataParallel`` over the local devices, after
  ``jax.distributed.initialize()`` when the usual coordinator variables are set
  (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``), for several hosts.

Several processes (hosts) are one :class:`Cluster`, read from the environment once by
:func:`read_cluster`, which refuses contradictory settings with a one-line reason. Every
process draws the same stateless permutation of the training images; on TensorFlow the
strategy hands each worker its part of every global batch, on JAX each process feeds its
own slice (:class:`skin_model.data.batches.ArrayBatches` ``shard``). Only the chief (process 0)
writes the model directory and the attempts row; the others keep their checkpoints in a
directory of their own beside it (:func:`work_dir`) and delete it when the run ends. A
process that dies makes the others stop with :class:`PeerLost` within
:data:`PEER_TIMEOUT_S` seconds instead of waiting for it for ever.

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
from pathlib import Path


class DistributionError(ValueError):
    """Devices asked for that this machine cannot give, or contradictory cluster
    settings, with the reason in one line.
    """


class PeerLost(RuntimeError):
    """Another process of a several-process run stopped answering."""


PEER_TIMEOUT_S = 60
"""Seconds a collective operation (or JAX's heartbeat) waits for a silent peer before the
run stops with :class:`PeerLost`."""

JAX_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclass(frozen=True)
class Cluster:
    """The processes of one run, as the environment describes them.

    Attributes:
        source: ``"none"`` (one process), ``"TF_CONFIG"`` or ``"JAX"``.
        processes: How many processes (hosts) take part.
        index: This process's place among them (0 is the chief).
    """

    source: str = "none"
    processes: int = 1
    index: int = 0

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the model directory."""
        return self.index == 0


def _fail(reason: str):
    raise DistributionError(reason)


def _tf_config_cluster(raw: str) -> Cluster:
    """The cluster a ``TF_CONFIG`` value names (``chief`` and ``worker`` tasks)."""
    try:
        conf = json.loads(raw)
    except json.JSONDecodeError as exc:
        _fail(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})")
    if not isinstance(conf, dict):
        _fail("TF_CONFIG must be a JSON object with 'cluster' and 'task'")
    cluster, task = conf.get("cluster") or {}, conf.get("task") or {}
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        _fail(f"TF_CONFIG names {', '.join(other)} tasks; only 'chief' and 'worker' train")
    chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    if len(chiefs) > 1:
        _fail("TF_CONFIG names more than one chief")
    if not chiefs and not workers:
        _fail("TF_CONFIG names no workers: set cluster.worker to a list of host:port")
    kind, index = task.get("type"), task.get("index", 0)
    if kind not in ("chief", "worker"):
        _fail(
            "TF_CONFIG task.type must be 'worker' (or 'chief'), e.g. "
            '{"type": "worker", "index": 0}'
        )
    pool = chiefs if kind == "chief" else workers
    if not isinstance(index, int) or not 0 <= index < len(pool):
        _fail(f"TF_CONFIG task.index {index!r} is not one of the {len(pool)} {kind} addresses")
    addresses = chiefs + workers
    if len(set(addresses)) != len(addresses):
        _fail("TF_CONFIG names one address twice; each process needs its own host:port")
    return Cluster("TF_CONFIG", len(addresses), index + (len(chiefs) if kind == "worker" else 0))


def _jax_cluster(env) -> Cluster:
    """The cluster the JAX coordinator variables name."""
    given = [v for v in JAX_VARIABLES if env.get(v)]
    if len(given) != len(JAX_VARIABLES):
        missing = ", ".join(v for v in JAX_VARIABLES if v not in given)
        _fail(f"{', '.join(given)} set but {missing} not: set all three for a JAX cluster")
    try:
        count, index = int(env["JAX_NUM_PROCESSES"]), int(env["JAX_PROCESS_ID"])
    except ValueError:
        _fail("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be whole numbers")
    if count < 1 or not 0 <= index < count:
        _fail(f"JAX_PROCESS_ID {index} is not in 0..{count - 1} (JAX_NUM_PROCESSES {count})")
    if ":" not in env["JAX_COORDINATOR_ADDRESS"]:
        _fail("JAX_COORDINATOR_ADDRESS must be host:port (the process 0 host)")
    return Cluster("JAX", count, index)


def read_cluster(backend: str, env=None) -> Cluster:
    """The processes of this run, from ``TF_CONFIG`` or the JAX coordinator variables.

    Args:
        backend: The Keras backend (``tensorflow`` or ``jax``).
        env: The environment (default ``os.environ``).

    Raises:
        DistributionError: For settings that contradict each other or the backend.
    """
    env = os.environ if env is None else env
    tf_config = env.get("TF_CONFIG", "").strip()
    jax_given = any(env.get(v) for v in JAX_VARIABLES)
    if tf_config and jax_given:
        _fail(
            "TF_CONFIG and JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID are "
            "both set; set the one of your backend"
        )
    if tf_config and backend != "tensorflow":
        _fail(
            f"TF_CONFIG is read on the TensorFlow backend only (KERAS_BACKEND={backend}); "
            "use the JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/JAX_PROCESS_ID variables"
        )
    if jax_given and backend != "jax":
        _fail(
            f"the JAX coordinator variables are read with KERAS_BACKEND=jax only (it is "
            f"{backend}); use TF_CONFIG on TensorFlow"
        )
    if tf_config:
        return _tf_config_cluster(tf_config)
    if jax_given:
        return _jax_cluster(env)
    return Cluster()


def work_dir(out_dir: Path, cluster: Cluster) -> Path:
    """Where this process writes: the model directory for the chief, a directory of its
    own beside it for every other process (its checkpoints, so it can resume).
    """
    out_dir = Path(out_dir)
    if cluster.is_chief:
        return out_dir
    return out_dir.parent / f".{out_dir.name}.worker-{cluster.index}"


_STRATEGY = None
"""The multi-worker strategy: TensorFlow wants it made before any other TensorFlow op."""


def _multiworker_strategy():
    """``MultiWorkerMirroredStrategy`` for ``TF_CONFIG``, made once, first thing."""
    global _STRATEGY
    if _STRATEGY is None:
        import tensorflow as tf

        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=PEER_TIMEOUT_S)
        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return _STRATEGY


def start_jax(cluster: Cluster) -> None:
    """Join the JAX cluster (once per process), with CPU collectives and a heartbeat
    that notices a dead peer within :data:`PEER_TIMEOUT_S` seconds.
    """
    if cluster.source != "JAX" or _JAX_STARTED:
        return
    _start_jax(cluster)


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


_JAX_STARTED = False


def _start_jax(cluster: Cluster) -> None:
    global _JAX_STARTED
    import jax

    with contextlib.suppress(AttributeError, ValueError):  # a jax without the option
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=cluster.processes,
        process_id=cluster.index,
        initialization_timeout=PEER_TIMEOUT_S * 5,
        heartbeat_timeout_seconds=PEER_TIMEOUT_S,
        shutdown_timeout_seconds=PEER_TIMEOUT_S,
    )
    _JAX_STARTED = True


def _tf_devices() -> tuple[str, list[str]]:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return "GPU", [d.name for d in gpus]
    return "CPU", [d.name for d in tf.config.list_logical_devices("CPU")]


def _jax_devices() -> tuple[str, list]:
    import jax

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


def make_plan(requested: str, batch_size: int, cluster: Cluster | None = None) -> Plan:
    """The plan for ``--devices N|all`` with a global batch of ``batch_size``; joins the
    cluster of several processes first (TensorFlow wants that before any other op).

    Raises:
        DistributionError: When fewer devices exist than asked for, or the global batch
            does not split evenly over them.
    """
    import keras

    backend = keras.backend.backend()
    cluster = cluster or read_cluster(backend)
    if cluster.processes > 1 and backend == "tensorflow":
        _multiworker_strategy()
    elif cluster.processes > 1:
        start_jax(cluster)
    kind, found = _tf_devices() if backend == "tensorflow" else _jax_devices()
    hosts = cluster.processes
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
                strategy = _multiworker_strategy()
            else:
                strategy = tf.distribute.MirroredStrategy(devices=_tf_devices()[1][:n_local])
            with strategy.scope():
                yield
        else:
            import jax

            devices = jax.devices() if plan.hosts > 1 else _jax_devices()[1][:n_local]
            distribution = keras.distribution.DataParallel(devices=devices)
            if plan.hosts > 1:
                # each process feeds its own slice of every global batch (ArrayBatches shard)
                distribution.auto_shard_dataset = False
            keras.distribution.set_distribution(distribution)
            try:
                yield
            finally:
                keras.distribution.set_distribution(None)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def build_before_fit(model, sample_batch, plan: Plan) -> None:
    """Ready a compiled model for ``fit`` under ``MultiWorkerMirroredStrategy``: build its
    loss, metrics and optimizer from a plain ``(x, y)`` batch, and give each step's logs
    a batch axis.

    Keras 3.15 and this strategy disagree twice (tensorflow#72388): ``fit`` builds the
    model's state from the first *distributed* batch by ``strategy.reduce`` of the
    ``(x, y)`` structure (``ValueError: Attempt to convert a value (PerReplica...)``), so
    it is built here and that step is skipped for this model; and it averages each step's
    scalar logs over the workers along an axis 0 they do not have (``Invalid reduction
    dimension 0``), so the steps return them with that axis (one value per worker, whose
    mean is the log). A no-op for every other plan.
    """
    if plan.backend != "tensorflow" or plan.hosts < 2:
        return
    import tensorflow as tf

    model._symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def with_axis(data, step=step):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}

        setattr(model, name, with_axis)


def _local(value):
    """A variable's value as a NumPy array this process can read (a replicated JAX array
    spread over several processes: this process's copy).
    """
    import numpy as np

    if getattr(value, "is_fully_addressable", True):
        return np.asarray(value)
    return np.asarray(value.addressable_data(0))


@contextlib.contextmanager
def no_distribution():
    """Run Keras on this process alone inside (the distribution is restored after)."""
    import keras

    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


class HostView:
    """The network being fitted as this process can read and save it.

    On JAX with several processes the variables are global arrays that no process can
    read whole (``Fetching value for jax.Array that spans non-addressable devices``);
    callbacks then work on a one-process twin, built once by ``build`` outside the
    distribution, with the weights and optimizer state copied in. Everywhere else the
    view is the model itself. Use the twin inside :func:`no_distribution`.
    """

    def __init__(self, build):
        self.build, self.twin = build, None

    def __call__(self, model):
        """The model, or its twin holding the model's current values."""
        if all(getattr(v.value, "is_fully_addressable", True) for v in model.variables):
            return model
        if self.twin is None:
            with no_distribution():
                self.twin = self.build()
                self.twin.optimizer.build(self.twin.trainable_variables)
        self.twin.set_weights([_local(v.value) for v in model.weights])
        pairs = zip(self.twin.optimizer.variables, model.optimizer.variables, strict=True)
        for mine, theirs in pairs:
            mine.assign(_local(theirs.value))
        return self.twin
