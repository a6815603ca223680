"""Training: from a HAM10000-layout folder to a complete model directory.

``train_model`` runs the recipe of a :class:`~skin_model.model.settings.TrainConfig`:
lesion-grouped split, images decoded once into memory, AdamW with warmup + cosine decay on
a logit-adjusted loss (label smoothing, class weights and restoring the best epoch exist
as options, off by default), a checkpoint after every epoch (resumable), then
:func:`skin_model.train.finalise.finalise_model` for the post-hoc layer, the detector and the one
read of the test split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model.data.batches import make_batches
from skin_model.data.dataset import (
    DataError,
    carve_calibration,
    class_indices,
    class_weights,
    load_images_at,
    one_hot,
    read_metadata,
    resaved_copies,
    split_by_lesion,
)
from skin_model.model.artifacts import (
    ATTEMPT_COLUMNS,
    ATTEMPTS_FILE,
    BEST_WEIGHTS_FILE,
    CHECKPOINT_FILE,
    EMA_FILE,
    FITTED_WEIGHTS_FILE,
    HISTORY_FILE,
    RUN_CONFIG_FILE,
    SPLIT_FILE,
    STATE_FILE,
    read_json,
    write_json,
)
from skin_model.model.calibration import class_frequencies
from skin_model.model.settings import TrainConfig, changed_settings, config_dict
from skin_model.reports.card import write_model_card
from skin_model.train import frozen
from skin_model.train.distribute import HostView, build_before_fit, no_distribution
from skin_model.train.finalise import finalise_model


def subsample_lesions(df: pd.DataFrame, limit: int, seed: int) -> pd.DataFrame:
    """Keep about ``limit`` images, sampling whole lesions with every class kept.

    Args:
        df: Cleaned metadata.
        limit: Target image count.
        seed: Seed of the sample.

    Returns:
        The subset, in the original order.
    """
    rng = np.random.default_rng(seed)
    lesions = df.drop_duplicates("lesion_id")[["lesion_id", "dx"]]
    share = min(1.0, limit / len(df))
    keep = []
    for _, group in lesions.groupby("dx"):
        n = max(3, round(len(group) * share))
        keep.extend(group["lesion_id"].to_numpy()[rng.permutation(len(group))[:n]])
    return df[df["lesion_id"].isin(keep)].reset_index(drop=True)


def describe_device() -> str:
    """A short description of where training runs (backend, accelerator, CPU count)."""
    import keras

    backend = keras.backend.backend()
    gpus = _gpus()
    where = f"{len(gpus)} GPU ({', '.join(gpus)})" if gpus else f"CPU x{os.cpu_count()}"
    return f"{where}, {platform.machine()}, keras {keras.__version__} / {backend}"


def _gpus() -> list[str]:
    """Names of the visible GPUs for the active backend."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return [g.name for g in tf.config.list_physical_devices("GPU")]
    if keras.backend.backend() == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    return []


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int):
    """Linear warmup to ``cfg.learning_rate`` then cosine decay to zero."""
    import keras

    warmup = max(1, cfg.warmup_epochs * steps_per_epoch)
    total = max(warmup + 1, cfg.epochs * steps_per_epoch)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.learning_rate * 0.05,
        decay_steps=total - warmup,
        warmup_target=cfg.learning_rate,
        warmup_steps=warmup,
    )


def make_balanced_accuracy_callback(
    x_val: np.ndarray,
    y_val: np.ndarray,
    batch_size: int,
    meta_val: np.ndarray | None = None,
    view=None,
):
    """A callback that logs ``val_balanced_accuracy`` (with the patient context where the
    model takes it, and ``val_balanced_accuracy_image_only`` then) and ``learning_rate``
    each epoch, and keeps the weights of the best epoch (restored only when asked).

    Args:
        x_val: Validation images, uint8 (N, S, S, 3).
        y_val: Validation class indices (N,).
        batch_size: Prediction batch size.
        meta_val: (N, DIM) metadata vectors for a two-input model, or None.
        view: ``model -> model`` this process can read (:class:`HostView`); None: itself.

    Returns:
        A ``keras.callbacks.Callback``; place it before ``CSVLogger`` and ``EarlyStopping``.
    """
    import keras
    from sklearn.metrics import balanced_accuracy_score

    from skin_model.runtime.inference import batch_inputs

    class BalancedAccuracy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.best_weights = -1.0, 0, None

        def score(self, model, meta) -> float:
            x = batch_inputs(model, x_val, meta)
            probs = model.predict(x, batch_size, verbose=0)
            return float(balanced_accuracy_score(y_val, probs.argmax(axis=1)))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            model = (view or _itself)(self.model)
            with no_distribution() if model is not self.model else contextlib.nullcontext():
                score = self.score(model, meta_val)
                logs["val_balanced_accuracy"] = score
                if meta_val is not None:
                    logs["val_balanced_accuracy_image_only"] = self.score(model, None)
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            if score > self.best:
                self.best, self.best_epoch = score, epoch + 1
                self.best_weights = model.get_weights()

    return BalancedAccuracy()


def prepare_data(data_dir: Path, cfg: TrainConfig) -> pd.DataFrame:
    """Read, clean, optionally subsample and split the data folder.

    Returns:
        Metadata with ``split`` (train/val/calib/test) and ``path`` columns.
    """
    df = read_metadata(Path(data_dir))
    if cfg.limit:
        df = subsample_lesions(df, cfg.limit, cfg.lesion_seed())
    df["split"] = split_by_lesion(df, cfg.val_frac, cfg.test_frac, cfg.lesion_seed())
    df["split"] = carve_calibration(df, cfg.calib_share)
    empty = [s for s in ("train", "val", "calib", "test") if not (df["split"] == s).any()]
    if empty:
        raise DataError(
            f"too few lesions for a {'/'.join(empty)} part; use more data (or a larger --limit)"
        )
    return df


def _itself(model):
    return model


def make_checkpoint_callback(out_dir: Path, best, seconds_before: float = 0.0, view=None):
    """A callback that saves the model with its optimizer state and the run's progress
    after every epoch, so ``train.py --resume`` can continue an interrupted run.

    Args:
        out_dir: The model directory being written.
        best: The balanced-accuracy callback (its best score and epoch are saved too).
        seconds_before: Training seconds of the run before a resume.
        view: ``model -> model`` this process can read and save; None: itself.

    Returns:
        A ``keras.callbacks.Callback``.
    """
    import keras

    class Checkpoint(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            model = (view or _itself)(self.model)
            with no_distribution() if model is not self.model else contextlib.nullcontext():
                model.save(out_dir / CHECKPOINT_FILE)
                if best.best_epoch == epoch + 1:
                    model.save_weights(out_dir / BEST_WEIGHTS_FILE)
            state = {
                "epochs_done": epoch + 1,
                "best": best.best,
                "best_epoch": best.best_epoch,
                "seconds": round(seconds_before + time.perf_counter() - self.start, 1),
                "device": describe_device(),
            }
            write_json(out_dir / STATE_FILE, state)

    return Checkpoint()


def ema_decay(half_life_epochs: float, steps_per_epoch: int) -> float:
    """Per-step decay of a weight average whose half-life is ``half_life_epochs``."""
    return float(0.5 ** (1.0 / max(1.0, half_life_epochs * steps_per_epoch)))


def make_step_timer():
    """A callback that adds ``step_seconds`` to every epoch's logs: the mean wall time of
    one training step (from the epoch's start to its last batch: the held-out scoring and
    the checkpoint after it are left out), so the history shows what a lever costs.
    """
    import keras

    class StepTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.last, self.steps = time.perf_counter(), None, 0

        def on_train_batch_end(self, batch, logs=None):
            self.last, self.steps = time.perf_counter(), self.steps + 1

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None and self.steps:
                logs["step_seconds"] = round((self.last - self.start) / self.steps, 3)

    return StepTimer()


def make_ema_callback(out_dir: Path, decay: float, source=None):
    """A callback that keeps an exponential moving average of all the model's weights
    (BatchNorm statistics included) after every step and saves it after every epoch,
    so a resumed run continues the same average.

    Args:
        out_dir: The model directory (``ema_weights.npz`` goes there).
        decay: Per-step decay (see :func:`ema_decay`).
        source: The model whose weights are averaged (None: the one being fitted). A
            frozen run fits the top of a twin and averages the whole twin, so the file
            holds the network's weights in the network's order.

    Returns:
        A ``keras.callbacks.Callback`` whose ``average`` holds the averaged weights.
    """
    import keras

    class WeightAverage(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.average = None

        def averaged(self):
            return self.model if source is None else source

        def on_train_begin(self, logs=None):
            path = out_dir / EMA_FILE
            if path.is_file():
                self.average = read_ema(out_dir)
            else:
                weights = self.averaged().get_weights()
                self.average = [np.array(w, dtype=np.float64) for w in weights]

        def on_train_batch_end(self, batch, logs=None):
            for avg, w in zip(self.average, self.averaged().get_weights(), strict=True):
                avg *= decay
                avg += (1.0 - decay) * w

        def on_epoch_end(self, epoch, logs=None):
            np.savez(out_dir / EMA_FILE, *self.average)

    return WeightAverage()


def read_ema(out_dir: Path) -> list[np.ndarray]:
    """The weight average a run saved in ``out_dir`` (float64 arrays in model order)."""
    return read_weight_list(Path(out_dir) / EMA_FILE)


def read_weight_list(path: Path) -> list[np.ndarray]:
    """Arrays saved by ``np.savez(path, *model.get_weights())``, in model order."""
    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int):
    """AdamW on :func:`lr_schedule`; with ``backbone_lr_scale`` != 1 or
    ``head_warmup_epochs`` the backbone (all but the spec's head layers) learns slower (or
    first not at all) than the head.
    """
    import keras

    from skin_model.model.architectures import spec_for
    from skin_model.model.networks import BackboneScaledAdamW

    kwargs = {"learning_rate": lr_schedule(cfg, steps_per_epoch), "weight_decay": cfg.weight_decay}
    if cfg.backbone_lr_scale == 1.0 and cfg.head_warmup_epochs == 0:
        return keras.optimizers.AdamW(**kwargs)
    return BackboneScaledAdamW(
        backbone_lr_scale=cfg.backbone_lr_scale,
        head_warmup_steps=cfg.head_warmup_epochs * steps_per_epoch,
        head_layers=spec_for(cfg.architecture).head_layers,
        **kwargs,
    )


def compile_model(cfg: TrainConfig, prior: np.ndarray, steps: int):
    """Build and compile the model of ``cfg`` (weights resolved by its spec, loss chosen)."""
    from skin_model.data.metadata import DIM
    from skin_model.model.architectures import spec_for

    cfg.validate()
    spec = spec_for(cfg.architecture)
    weights = spec.resolve_weights(cfg.weights) if spec.takes_weights else None
    kwargs = spec.builder_kwargs(cfg, weights, DIM if cfg.metadata else 0)
    height, width = cfg.input_shape()  # a side for a square input (every builder takes it)
    model = spec.build(width if height == width else (height, width), **kwargs)
    model.compile(
        optimizer=make_optimizer(cfg, steps), loss=make_loss(cfg, prior), metrics=train_metrics()
    )
    return model


def train_metrics() -> list:
    """What every epoch logs of the training batches: accuracy and balanced accuracy
    (the held-out balanced accuracy comes from :func:`make_balanced_accuracy_callback`).
    """
    from skin_model.model.networks import BalancedAccuracy

    return ["accuracy", BalancedAccuracy()]


def make_loss(cfg: TrainConfig, prior: np.ndarray):
    """The training loss of ``cfg``: logit-adjusted for ``prior``, or cross-entropy; either
    with ``cfg.label_smoothing``.
    """
    import keras

    from skin_model.model.networks import LogitAdjustedCrossentropy

    if cfg.loss == "logit_adjusted":
        return LogitAdjustedCrossentropy(prior, label_smoothing=cfg.label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)


def _start_or_resume(cfg: TrainConfig, prior: np.ndarray, steps: int, out_dir: Path, resume: bool):
    """A compiled model and the run's progress: new, from the directory's checkpoint
    (optimizer state included), or from weights fitted elsewhere (to finalise them).

    Returns:
        ``(model, {"epochs_done", "best", "best_epoch", "seconds"})``.
    """
    import keras

    state = {"epochs_done": 0, "best": -1.0, "best_epoch": 0, "seconds": 0.0}
    if resume and (out_dir / CHECKPOINT_FILE).is_file():
        import skin_model.model.networks  # noqa: F401  (registers the custom loss)

        state.update(read_json(out_dir / STATE_FILE))
        model = keras.models.load_model(out_dir / CHECKPOINT_FILE)
        print(f"resuming after epoch {state['epochs_done']}")
    elif resume and (out_dir / FITTED_WEIGHTS_FILE).is_file():
        state.update(read_json(out_dir / STATE_FILE))
        model = compile_model(cfg, prior, steps)
        model.set_weights(read_weight_list(out_dir / FITTED_WEIGHTS_FILE))
        print(f"finalising the weights fitted elsewhere ({state['epochs_done']} epochs)")
    else:
        model = compile_model(cfg, prior, steps)
    return model, state


def _callbacks(
    cfg: TrainConfig, out_dir: Path, resume: bool, steps: int, best, view, state, averaged=None
):
    """The epoch callbacks: held-out balanced accuracy (``best``), the history file, the
    per-epoch checkpoint, early stopping and, with ``ema_half_life``, the weight average
    (of ``averaged``, None: the model being fitted).
    """
    import keras

    callbacks = [
        make_step_timer(),
        best,
        keras.callbacks.CSVLogger(str(out_dir / HISTORY_FILE), append=resume),
        make_checkpoint_callback(out_dir, best, float(state.get("seconds", 0.0)), view),
        keras.callbacks.EarlyStopping(
            monitor="val_balanced_accuracy", mode="max", patience=cfg.patience
        ),
    ]
    if cfg.ema_half_life > 0:
        if not resume:
            (out_dir / EMA_FILE).unlink(missing_ok=True)
        decay = ema_decay(cfg.ema_half_life, steps)
        callbacks.insert(0, make_ema_callback(out_dir, decay, averaged))
    return callbacks


def fit_model(
    cfg: TrainConfig,
    parts: dict,
    out_dir: Path,
    resume: bool = False,
    metas: dict | None = None,
    shard: tuple[int, int] = (0, 1),
    plan=None,
    resaved: np.ndarray | None = None,
):
    """Build (or resume), compile and fit the model; return it with the fit summary.

    Args:
        cfg: Training settings.
        parts: ``{"train": (uint8 images cached at the crop size, codes), "val": (uint8
            images at the input size, codes)}``.
        out_dir: The model directory (history, checkpoint and progress go there).
        resume: Continue from the directory's checkpoint (optimizer state included).
        metas: ``{"train"|"val": (N, DIM) metadata vectors}`` for a two-input model.
        shard: ``(process, processes)``: on JAX with several processes, each feeds its own
            slice of every global batch.
        plan: The :class:`~skin_model.train.distribute.Plan` it runs under (None: one device).
        resaved: The training images saved again on their own grid (``--resaved-files``).

    Returns:
        ``(model, {"epochs_run", "best_epoch", "train_seconds"})`` (a model this process
        can read: :class:`~skin_model.train.distribute.HostView`); the model holds the
        last (or, with ``restore_best``, the best) epoch's weights; with
        ``ema_half_life`` the weight average is in the directory (:func:`read_ema`).
    """
    import keras

    keras.utils.set_random_seed(cfg.seed)
    x_tr, y_tr = parts["train"]
    x_va, y_va = parts["val"]
    steps = int(np.ceil(len(x_tr) / cfg.batch_size))
    model, state = _start_or_resume(cfg, class_frequencies(y_tr), steps, out_dir, resume)
    if state["epochs_done"] >= cfg.epochs:  # finished: no views to cache, no epoch to run
        print(f"all {cfg.epochs} epochs done: scoring the fitted weights")
        return _fit_summary(cfg, model, out_dir, float(state.get("seconds", 0.0)), state)

    train_stream = _stream_maker(cfg, x_tr, y_tr, metas, shard, resaved)
    meta_va = metas["val"] if metas else None
    val_ds = make_batches(x_va, one_hot(y_va), cfg.batch_size, training=False, metadata=meta_va)
    if cfg.freeze_stages:
        if plan is not None and plan.devices > 1:
            raise ValueError("--freeze-stages trains on one device; leave --devices at 1")
        prior = class_frequencies(y_tr)
        teacher_stream = (  # validate() allows --clean-teacher only with teachers
            _stream_maker(cfg, x_tr, y_tr, metas, shard, resaved, clean=True)
            if cfg.clean_teacher
            else None
        )
        fit_on, train_ds, view, averaged = _frozen_top(
            cfg, model, prior, train_stream, len(x_tr), out_dir, state, teacher_stream
        )
        validation = None  # the top takes cached features, not images
    else:
        fit_on, train_ds, validation = model, train_stream(state["epochs_done"]), val_ds
        view = HostView(lambda: compile_model(cfg, class_frequencies(y_tr), steps))
        averaged = None
    best = make_balanced_accuracy_callback(
        x_va, class_indices(y_va), cfg.batch_size * 2, meta_va, view
    )
    best.best, best.best_epoch = state["best"], state["best_epoch"]
    callbacks = _callbacks(cfg, out_dir, resume, steps, best, view, state, averaged)
    if cfg.freeze_stages:
        callbacks.append(frozen.optimizer_callback(fit_on, out_dir))
    weights = class_weights(y_tr, cfg.class_weight_power) if cfg.class_weight_power else None
    if plan is not None and not cfg.freeze_stages:
        build_before_fit(model, _sample_batch(y_va, meta_va, cfg.input_shape()), plan)
    start = time.perf_counter()
    with peers_watched(out_dir):
        fit_on.fit(
            train_ds,
            steps_per_epoch=steps,
            validation_data=validation,
            epochs=cfg.epochs,
            initial_epoch=state["epochs_done"],
            class_weight=weights,
            callbacks=callbacks,
            verbose=cfg.verbose,
            # the batches are already a stateless permutation per epoch; Keras would
            # otherwise shuffle a PyDataset's batch order from Python's global random
            # state, which building any other model in the same process advances
            shuffle=False,
        )
    seconds = time.perf_counter() - start + float(state.get("seconds", 0.0))
    return _fit_summary(cfg, view(fit_on), out_dir, seconds, {"best_epoch": best.best_epoch})


def _fit_summary(cfg: TrainConfig, fitted, out_dir: Path, seconds: float, state: dict):
    """The fitted model (its best epoch's weights with ``restore_best``) and the fit summary."""
    if cfg.restore_best and (out_dir / BEST_WEIGHTS_FILE).is_file():
        fitted.load_weights(out_dir / BEST_WEIGHTS_FILE)
    history = pd.read_csv(out_dir / HISTORY_FILE)
    return fitted, {
        "epochs_run": len(history),
        "best_epoch": state["best_epoch"] if cfg.restore_best else len(history),
        "train_seconds": round(seconds, 1),
    }


def _stream_maker(
    cfg: TrainConfig,
    x_tr,
    y_tr,
    metas: dict | None,
    shard: tuple[int, int],
    resaved: np.ndarray | None = None,
    clean: bool = False,
):
    """``seed offset -> training batches`` of the run's images and augmentation (``resaved``:
    the images saved again on their own grid, drawn with ``cfg.resaved_files``; ``clean``:
    the same views without the capture changes, :meth:`Augmentation.clean`).
    """
    augmentation = cfg.augmentation().clean() if clean else cfg.augmentation()

    def train_stream(seed_offset: int):
        return make_batches(
            x_tr,
            one_hot(y_tr),
            cfg.batch_size,
            training=True,
            seed=cfg.seed + seed_offset,
            augmentation=augmentation,
            metadata=metas["train"] if metas else None,
            resaved=resaved,
            **({"shard": shard} if shard[1] > 1 else {}),
        )

    return train_stream


def _frozen_top(
    cfg: TrainConfig,
    model,
    prior,
    train_stream,
    n_images: int,
    out_dir: Path,
    state,
    teacher_stream=None,
):
    """The compiled top above the first ``cfg.freeze_stages`` stages of a twin of ``model``,
    its batches of cached views (:mod:`skin_model.train.frozen`; the teachers see
    ``teacher_stream``'s views where given), the view that brings the twin's values into
    ``model`` and the twin itself (what a weight average averages: the network's layers in
    the network's order); a resumed run gets its optimizer state back and continues at its
    next epoch.
    """
    from skin_model.model.architectures import spec_for

    twin = frozen.twin_of(model)
    layer = spec_for(cfg.architecture).stage_ends[cfg.freeze_stages]
    bottom, top = frozen.split_at(twin, layer)
    top.compile(
        optimizer=make_optimizer(cfg, int(np.ceil(n_images / cfg.batch_size))),
        loss=make_loss(cfg, prior),
        metrics=train_metrics(),
    )
    if state["epochs_done"] and not frozen.restore_optimizer(top, out_dir):
        print("no optimizer state beside the checkpoint: the optimizer starts afresh")
    views = cfg.cached_views or cfg.epochs
    teachers = frozen.load_teachers(cfg.teacher_paths()) if cfg.teachers else []
    cache = frozen.cache_views(
        bottom, train_stream, n_images, cfg.batch_size, views, teachers, teacher_stream
    )
    distill = (prior, cfg.distill_weight) if teachers else None

    def view(_top):  # the twin's top was trained: the network takes its values
        frozen.copy_weights(twin, model)
        return model

    batches = frozen.cached_batches(
        cache, cfg.batch_size, cfg.seed, state["epochs_done"], distill, cfg.mixup, cfg.cutmix
    )
    return top, batches, view, twin


def _sample_batch(codes, meta: np.ndarray | None, hw: tuple[int, int]):
    """One plain ``(inputs, labels)`` batch of the training inputs' shapes."""
    image = np.zeros((1, *hw, 3), np.float32)
    y = one_hot(codes[:1])
    if meta is None:
        return image, y
    return {"image": image, "metadata": meta[:1].astype(np.float32)}, y


@contextlib.contextmanager
def peers_watched(out_dir: Path):
    """Turn a collective operation that gave up on a silent peer into :class:`PeerLost`,
    saying how far the run got and how to continue it.
    """
    from skin_model.train.distribute import PEER_TIMEOUT_S, PeerLost

    try:
        yield
    except Exception as exc:
        name = type(exc).__name__
        if name not in (
            "DeadlineExceededError",
            "UnavailableError",
            "AbortedError",
            "CancelledError",
            "InternalError",
            "XlaRuntimeError",
        ):
            raise
        done = (
            read_json(out_dir / STATE_FILE).get("epochs_done", 0)
            if (out_dir / STATE_FILE).is_file()
            else 0
        )
        raise PeerLost(
            f"another process of this run stopped answering for {PEER_TIMEOUT_S} s "
            f"({name}); stopped after epoch {done}: start every process again with "
            "--resume and the same output directory"
        ) from exc


def local_copy(model, cfg: TrainConfig, prior: np.ndarray):
    """The fitted network as a one-process model (the chief finalises it alone: no
    collective operation may wait for the other processes).
    """
    copy = compile_model(cfg, prior, 1)
    copy.set_weights([np.asarray(w) for w in model.get_weights()])
    return copy


def _resaved_for(cfg: TrainConfig, train_paths: list[str]) -> np.ndarray | None:
    """The training files saved again on their own grid when ``--resaved-files`` asks for
    them (a run that averages members fits nothing and gets none).
    """
    if cfg.resaved_files <= 0 or cfg.members:
        return None
    return resaved_copies(train_paths, cfg.cache_size(), cfg.seed)


def load_parts(df: pd.DataFrame, cfg: TrainConfig) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Decode every image of the split table once.

    Returns:
        ``({part: (uint8 images, codes)}`` with the training images at the cached size,
        the training images at the input size, their re-saved copies or None``)``.
    """
    t0 = time.perf_counter()
    is_train = (df["split"] == "train").to_numpy()
    train_paths = df.loc[is_train, "path"].tolist()
    shape = cfg.input_shape()
    train_images, train_at_input = load_images_at(train_paths, (cfg.cache_size(), shape))
    (images,) = load_images_at(df.loc[~is_train, "path"].tolist(), (shape,))
    resaved = _resaved_for(cfg, train_paths)
    print(f"loaded {len(df)} images in {time.perf_counter() - t0:.1f}s")
    rest = df[~is_train]
    parts = {"train": (train_images, df.loc[is_train, "dx"].tolist())}
    for s in ("val", "calib", "test"):
        mask = (rest["split"] == s).to_numpy()
        parts[s] = (images[mask], rest.loc[mask, "dx"].tolist())
    print({s: len(p[1]) for s, p in parts.items()})
    return parts, train_at_input, resaved


def train_model(
    data_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    resume: bool = False,
    fit_only: bool = False,
    devices: str = "1",
) -> dict | None:
    """Train, calibrate, evaluate and write a complete model directory.

    Args:
        data_dir: HAM10000-layout folder.
        out_dir: Model directory to write (created if needed).
        cfg: Training settings.
        resume: Continue an interrupted run in ``out_dir`` from its last checkpoint (or
            finalise the weights a ``fit_only`` run left there).
        fit_only: Stop after fitting and write ``fitted_weights.npz`` (small enough to
            copy off a GPU machine); ``resume`` later finalises it where TensorFlow is.
        devices: ``N`` or ``all``: data-parallel training over that many devices
            (:mod:`skin_model.train.distribute`); finalisation runs on one.

    Returns:
        The metrics written to ``metrics.json`` (None with ``fit_only``).
    """
    import keras

    from skin_model.train.distribute import make_plan, read_cluster, session, work_dir

    cluster = read_cluster(keras.backend.backend())
    plan = make_plan(devices, cfg.batch_size, cluster)
    final_dir, out_dir = Path(out_dir), work_dir(Path(out_dir), cluster)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        record = {**config_dict(cfg), "distribution": plan.record()}
        write_json(out_dir / RUN_CONFIG_FILE, record)
    df = prepare_data(data_dir, cfg)
    df[["image_id", "lesion_id", "dx", "split"]].to_csv(out_dir / SPLIT_FILE, index=False)
    parts, train_at_input, resaved = load_parts(df, cfg)
    is_train = (df["split"] == "train").to_numpy()
    rest = df[~is_train]
    metas = None
    if cfg.metadata or cfg.context_fusion_power > 0:
        from skin_model.data.metadata import encode_frame

        metas = {"train": encode_frame(df[is_train])}
        metas.update({s: encode_frame(rest[rest["split"] == s]) for s in ("val", "calib", "test")})
    net_metas = metas if cfg.metadata else None
    shard = (cluster.index, cluster.processes) if cluster.source == "JAX" else (0, 1)
    with session(plan):
        if cfg.members:
            from skin_model.train.averaged import averaged_fit

            model, fit_info = averaged_fit(cfg, out_dir)
        else:
            model, fit_info = fit_model(
                cfg, parts, out_dir, resume, net_metas, shard, plan, resaved
            )
    if not cluster.is_chief:
        shutil.rmtree(out_dir, ignore_errors=True)
        print(f"process {cluster.index}: done; process 0 writes {final_dir}")
        return None
    if plan.hosts > 1:
        model = local_copy(model, cfg, class_frequencies(parts["train"][1]))
    if cfg.ema_half_life > 0 and (out_dir / EMA_FILE).is_file():
        model.set_weights(read_ema(out_dir))
    if fit_only:
        # the weights alone (no optimizer state): 9 MB for the shipped network
        np.savez(out_dir / FITTED_WEIGHTS_FILE, *model.get_weights())
        return None
    # where the epochs ran (a run fitted on a GPU machine is finalised elsewhere)
    state_file = out_dir / STATE_FILE
    state = read_json(state_file) if state_file.is_file() else {}
    fit_info["device"] = state.get("device") or describe_device()
    parts["train"] = (train_at_input, parts["train"][1])
    boxes = {s: lesion_boxes(Path(data_dir), df[df["split"] == s]) for s in ("val", "test")}
    rows = {s: df.loc[df["split"] == s, ["image_id", "lesion_id"]] for s in ("calib", "test")}
    metrics = finalise_model(model, cfg, parts, out_dir, fit_info, boxes, rows, metas)
    append_attempt(out_dir.parent / ATTEMPTS_FILE, out_dir.name, cfg, fit_info, metrics)
    write_model_card(out_dir)
    return metrics


def lesion_boxes(data_dir: Path, test_df: pd.DataFrame) -> pd.DataFrame | None:
    """The rows of ``test_df`` with their lesion bounding boxes (None when the folder lacks
    the extended metadata).
    """
    ext = data_dir / "HAM10000_metadata_ext.csv"
    if not ext.is_file():
        return None
    boxes = pd.read_csv(ext, usecols=["image_id", "top", "bottom", "left", "right"])
    return test_df.merge(boxes, on="image_id", how="inner")


def remeasure_cam(model_dir: Path, data_dir: Path, n: int = 150, choose: bool = False) -> dict:
    """Measure the model's heatmap localisation on its test split again (the same sample,
    its configured method, layer and views) after a change to how maps are made, and write
    it to ``metrics.json`` with the targets and the model card.

    With ``choose``, the method and layer are first chosen again on the validation lesion
    boxes (:func:`~skin_model.train.finalise.choose_cam`) and written to ``config.json``
    (and its digest); nothing else is re-read and no prediction changes.

    Returns:
        The new ``cam_localisation`` block.

    Raises:
        FileNotFoundError: If the folder has no lesion boxes.
    """
    from skin_model.model.artifacts import METRICS_FILE, write_integrity
    from skin_model.model.config import write_model_config
    from skin_model.model.settings import read_run_record
    from skin_model.runtime.inference import load_bundle
    from skin_model.train.finalise import cam_fields, cam_localisation, choose_cam

    model_dir = Path(model_dir)
    df = prepare_data(Path(data_dir), read_run_record(model_dir).config)
    parts = ("val", "test") if choose else ("test",)
    boxes = {part: lesion_boxes(Path(data_dir), df[df["split"] == part]) for part in parts}
    if boxes["test"] is None or boxes["test"].empty:
        raise FileNotFoundError(f"{data_dir} has no lesion boxes (HAM10000_metadata_ext.csv)")
    bundle = load_bundle(model_dir)
    metrics = read_json(model_dir / METRICS_FILE)
    if choose:
        choice = choose_cam(bundle, boxes["val"])
        bundle.config = dataclasses.replace(bundle.config, **cam_fields(choice))
        write_model_config(model_dir, bundle.config)
        write_integrity(model_dir)
        metrics["cam_layer_choice"] = {**choice, "chosen_on": "validation lesion boxes"}
    block = cam_localisation(bundle, boxes["test"], n)
    metrics["cam_localisation"] = block
    write_json(model_dir / METRICS_FILE, metrics)
    rejudge_targets(model_dir)
    return block


def rejudge_targets(model_dir: Path) -> list[dict]:
    """Judge a model directory's recorded figures against the current quality targets
    (:data:`~skin_model.evaluate.metrics.QUALITY_TARGETS`) and write them into its
    ``metrics.json`` and model card; nothing is measured again.

    Returns:
        The rows of :func:`~skin_model.evaluate.metrics.target_status`.
    """
    from skin_model.evaluate.metrics import target_status
    from skin_model.model.artifacts import METRICS_FILE

    metrics = read_json(Path(model_dir) / METRICS_FILE)
    metrics["targets"] = target_status(metrics)
    write_json(Path(model_dir) / METRICS_FILE, metrics)
    write_model_card(Path(model_dir))
    return metrics["targets"]


def deflate_model_dir(model_dir: Path) -> int:
    """Re-pack a finalised model directory's ``model.keras`` with its members deflated
    (:func:`~skin_model.model.artifacts.deflate_zip`: the same weights, byte for byte), then
    record its new digest and size in ``integrity.json``, ``metrics.json`` and the card.

    Returns:
        The model file's new size in bytes.
    """
    from skin_model.model.artifacts import (
        METRICS_FILE,
        MODEL_FILE,
        deflate_zip,
        sha256_file,
        write_integrity,
    )

    model_dir = Path(model_dir)
    size = deflate_zip(model_dir / MODEL_FILE)
    write_integrity(model_dir)
    metrics = read_json(model_dir / METRICS_FILE)
    metrics["model"].update(file_bytes=size, sha256=sha256_file(model_dir / MODEL_FILE))
    write_json(model_dir / METRICS_FILE, metrics)
    write_model_card(model_dir)
    return size


def settings_summary(cfg: TrainConfig) -> str:
    """A run's settings as one short string: a fixed set first (every row has them), then any
    other recipe setting that differs from its default (e.g. ``robust=0.35``).
    """
    keys = (
        "weights",
        "loss",
        "metadata",
        "crop_min_scale",
        "freeze_stages",
        "teachers",
        "members",
        "mixup",
        "ema_half_life",
        "context_fusion_power",
        "width",
        "batch_size",
        "learning_rate",
        "weight_decay",
        "label_smoothing",
        "class_weight_power",
        "epochs",
        "patience",
        "limit",
        "seed",
        "split_seed",
    )
    others = [k for k in changed_settings(config_dict(cfg)) if k not in keys and k != "name"]
    return " ".join(f"{k}={getattr(cfg, k)}" for k in (*keys, *others))


def append_attempt(
    path: Path, directory: str, cfg: TrainConfig, fit_info: dict, metrics: dict
) -> None:
    """Record this run in the attempts table beside the model directories, keyed by its
    output directory (a directory finalised again with the same settings, e.g. after
    ``--resume``, replaces its earlier row; another run written into the same directory,
    such as ``models/default`` replaced, keeps the earlier row under
    ``"<directory> (replaced <date>)"``; another directory of the same name setting gets its
    own).
    """
    wm = metrics.get("with_metadata") or {}
    val = metrics["validation"]

    def r4(x):
        return None if x is None else round(float(x), 4)

    row = {
        "directory": directory,
        "name": cfg.name or f"{cfg.architecture}-{cfg.input_size}",
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "epochs_run": fit_info["epochs_run"],
        "best_epoch": fit_info["best_epoch"],
        "train_seconds": fit_info["train_seconds"],
        "device": fit_info["device"],
        "settings": settings_summary(cfg),
        "val_balanced_accuracy": r4(val["balanced_accuracy"]),
        "test_balanced_accuracy": r4(metrics["balanced_accuracy"]),
        "test_malignant_auc": r4(metrics["malignant"]["auc"]),
        "test_macro_auc": r4(metrics["macro_auc"]),
        "test_ece": r4(metrics["calibration"]["ece"]),
        "test_mel_auc": r4(metrics["per_class"]["mel"]["auc"]),
        "test_mel_sensitivity": r4(metrics["per_class"]["mel"]["sensitivity"]),
        "test_malignant_sensitivity": r4(metrics["malignant"]["operating_point"]["sensitivity"]),
        "test_malignant_ece": r4((metrics["malignant"].get("calibration") or {}).get("ece")),
        "val_balanced_accuracy_with_metadata": r4(val.get("balanced_accuracy_with_metadata")),
        "test_balanced_accuracy_with_metadata": r4(wm.get("balanced_accuracy")),
    }
    old = pd.read_csv(path) if Path(path).is_file() else pd.DataFrame(columns=ATTEMPT_COLUMNS)
    if "directory" not in old.columns:
        old.insert(0, "directory", old["name"])
    same = old["directory"] == directory
    another_run = same & (old["settings"] != row["settings"])
    old.loc[another_run, "directory"] = f"{directory} (replaced {time.strftime('%Y-%m-%d')})"
    old = old[~(same & ~another_run)]
    table = pd.concat([old, pd.DataFrame([row])], ignore_index=True)
    table.reindex(columns=list(ATTEMPT_COLUMNS)).to_csv(path, index=False)
