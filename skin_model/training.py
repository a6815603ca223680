"""Training: from a HAM10000-layout folder to a complete model directory.

``train_model`` runs the whole recipe: lesion-grouped split, in-memory images,
AdamW with warmup + cosine decay, label smoothing, class weights, early stopping on
validation balanced accuracy with best-epoch restore, then calibration, the
test-time-augmentation choice, the malignant threshold and the out-of-distribution
check, all fitted on validation, and one read of the test split for ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model import CLASSES
from skin_model.data import (
    class_weights,
    load_images,
    make_dataset,
    one_hot,
    read_metadata,
    split_by_lesion,
)

HISTORY_FILE = "history.csv"
SPLIT_FILE = "split.csv"
METRICS_FILE = "metrics.json"
ATTEMPTS_FILE = "attempts.csv"
ATTEMPT_COLUMNS = (
    "name",
    "architecture",
    "input_size",
    "epochs_run",
    "best_epoch",
    "train_seconds",
    "device",
    "settings",
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "test_malignant_auc",
    "test_macro_auc",
    "test_ece",
)


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in ``config.json``)."""

    architecture: str = "skinnet"
    input_size: int = 96
    width: float = 1.0
    epochs: int = 75
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 2
    label_smoothing: float = 0.1
    class_weight_power: float = 1.0
    patience: int = 25
    seed: int = 42
    val_frac: float = 0.15
    test_frac: float = 0.15
    target_sensitivity: float = 0.90
    tta_min_gain: float = 0.01
    ood_quantile: float = 0.99
    limit: int | None = None
    weights: str | None = None
    name: str = ""
    verbose: int = 2


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


def distribution_scope(use_gpu_features: bool = True):
    """Mixed precision and a multi-GPU strategy on GPUs; nothing on a CPU.

    Args:
        use_gpu_features: Allow mixed precision / MirroredStrategy when GPUs exist.

    Returns:
        A context manager to build and compile the model in.
    """
    import keras

    gpus = _gpus() if use_gpu_features else []
    if not gpus:
        return contextlib.nullcontext()
    keras.mixed_precision.set_global_policy("mixed_float16")
    if keras.backend.backend() == "tensorflow" and len(gpus) > 1:
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


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


def make_balanced_accuracy_callback(x_val: np.ndarray, y_val: np.ndarray, batch_size: int):
    """A callback that logs ``val_balanced_accuracy`` and ``learning_rate`` each epoch and
    restores the weights of the best epoch when training ends.

    Args:
        x_val: Validation images, uint8 (N, S, S, 3).
        y_val: Validation class indices (N,).
        batch_size: Prediction batch size.

    Returns:
        A ``keras.callbacks.Callback``; place it before ``CSVLogger`` and ``EarlyStopping``.
    """
    import keras
    from sklearn.metrics import balanced_accuracy_score

    class BalancedAccuracy(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.best, self.best_epoch, self.best_weights = -1.0, 0, None

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = self.model.predict(x_val.astype(np.float32), batch_size, verbose=0)
            score = float(balanced_accuracy_score(y_val, probs.argmax(axis=1)))
            logs["val_balanced_accuracy"] = score
            lr = self.model.optimizer.learning_rate
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            if score > self.best:
                self.best, self.best_epoch = score, epoch + 1
                self.best_weights = self.model.get_weights()

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

    return BalancedAccuracy()


def prepare_data(data_dir: Path, cfg: TrainConfig) -> pd.DataFrame:
    """Read, clean, optionally subsample and split the data folder.

    Returns:
        Metadata with ``split`` (train/val/test) and ``path`` columns.
    """
    df = read_metadata(Path(data_dir))
    if cfg.limit:
        df = subsample_lesions(df, cfg.limit, cfg.seed)
    df["split"] = split_by_lesion(df, cfg.val_frac, cfg.test_frac, cfg.seed)
    return df


def fit_model(cfg: TrainConfig, parts: dict, history_csv: Path):
    """Build, compile and fit the model; return it with the fit summary.

    Args:
        cfg: Training settings.
        parts: ``{"train"|"val": (uint8 images, class codes)}``.
        history_csv: Where the per-epoch log goes.

    Returns:
        ``(model, {"epochs_run", "best_epoch", "train_seconds"})``.
    """
    import keras

    from skin_model.models import build_model

    keras.utils.set_random_seed(cfg.seed)
    x_tr, y_tr = parts["train"]
    x_va, y_va = parts["val"]
    steps = int(np.ceil(len(x_tr) / cfg.batch_size))
    kwargs = {
        "resnet50": {"weights": cfg.weights},
        "skinnet": {"width": cfg.width},
    }.get(cfg.architecture, {})
    with distribution_scope():
        model = build_model(cfg.architecture, cfg.input_size, **kwargs)
        model.compile(
            optimizer=keras.optimizers.AdamW(
                lr_schedule(cfg, steps), weight_decay=cfg.weight_decay
            ),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
            metrics=["accuracy"],
        )
    train_ds = make_dataset(x_tr, one_hot(y_tr), cfg.batch_size, training=True, seed=cfg.seed)
    val_ds = make_dataset(x_va, one_hot(y_va), cfg.batch_size, training=False)
    y_va_idx = np.array([CLASSES.index(c) for c in y_va])
    best = make_balanced_accuracy_callback(x_va, y_va_idx, cfg.batch_size * 2)
    callbacks = [
        best,
        keras.callbacks.CSVLogger(str(history_csv)),
        keras.callbacks.EarlyStopping(
            monitor="val_balanced_accuracy", mode="max", patience=cfg.patience
        ),
    ]
    start = time.perf_counter()
    hist = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=cfg.epochs,
        class_weight=class_weights(y_tr, cfg.class_weight_power),
        callbacks=callbacks,
        verbose=cfg.verbose,
    )
    seconds = time.perf_counter() - start
    return model, {
        "epochs_run": len(hist.history.get("loss", [])),
        "best_epoch": best.best_epoch,
        "train_seconds": round(seconds, 1),
    }


def train_model(data_dir: Path, out_dir: Path, cfg: TrainConfig) -> dict:
    """Train, calibrate, evaluate and write a complete model directory.

    Args:
        data_dir: HAM10000-layout folder.
        out_dir: Model directory to write (created if needed).
        cfg: Training settings.

    Returns:
        The metrics written to ``metrics.json``.
    """
    from skin_model.assessment import finalise_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = prepare_data(data_dir, cfg)
    df[["image_id", "lesion_id", "dx", "split"]].to_csv(out_dir / SPLIT_FILE, index=False)
    t0 = time.perf_counter()
    images = load_images(df["path"].tolist(), cfg.input_size)
    print(f"loaded {len(images)} images at {cfg.input_size}px in {time.perf_counter() - t0:.1f}s")
    parts = {
        s: (images[(df["split"] == s).to_numpy()], df.loc[df["split"] == s, "dx"].tolist())
        for s in ("train", "val", "test")
    }
    print({s: len(p[1]) for s, p in parts.items()})
    model, fit_info = fit_model(cfg, parts, out_dir / HISTORY_FILE)
    fit_info["device"] = describe_device()
    boxes = _boxes_for(Path(data_dir), df[df["split"] == "test"])
    test_rows = df.loc[df["split"] == "test", ["image_id", "lesion_id"]]
    metrics = finalise_model(model, cfg, parts, out_dir, fit_info, boxes, test_rows)
    append_attempt(out_dir.parent / ATTEMPTS_FILE, cfg, fit_info, metrics)
    from skin_model.card import write_model_card

    write_model_card(out_dir)
    return metrics


def _boxes_for(data_dir: Path, test_df: pd.DataFrame) -> pd.DataFrame | None:
    """Test rows with lesion bounding boxes, when the folder has the extended metadata."""
    ext = data_dir / "HAM10000_metadata_ext.csv"
    if not ext.is_file():
        return None
    boxes = pd.read_csv(ext, usecols=["image_id", "top", "bottom", "left", "right"])
    return test_df.merge(boxes, on="image_id", how="inner")


def settings_summary(cfg: TrainConfig) -> str:
    """The non-default-looking settings of a run as one short string."""
    keys = (
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
    )
    return " ".join(f"{k}={getattr(cfg, k)}" for k in keys)


def append_attempt(path: Path, cfg: TrainConfig, fit_info: dict, metrics: dict) -> None:
    """Append one row for this run to the attempts table beside the model directories."""
    row = {
        "name": cfg.name or f"{cfg.architecture}-{cfg.input_size}",
        "architecture": cfg.architecture,
        "input_size": cfg.input_size,
        "epochs_run": fit_info["epochs_run"],
        "best_epoch": fit_info["best_epoch"],
        "train_seconds": fit_info["train_seconds"],
        "device": fit_info["device"],
        "settings": settings_summary(cfg),
        "val_balanced_accuracy": round(metrics["validation"]["balanced_accuracy"], 4),
        "test_balanced_accuracy": round(metrics["balanced_accuracy"], 4),
        "test_malignant_auc": round(metrics["malignant"]["auc"] or float("nan"), 4),
        "test_macro_auc": round(metrics["macro_auc"] or float("nan"), 4),
        "test_ece": round(metrics["calibration"]["ece"], 4),
    }
    new = not Path(path).is_file()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=ATTEMPT_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def config_dict(cfg: TrainConfig) -> dict:
    """The training settings as a JSON-ready dict."""
    return asdict(cfg)


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON."""
    Path(path).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")
