"""The model directory: every file name in it, reading and writing its JSON and CSV files,
the integrity check of the files a prediction depends on, and the errors for the user.

A model directory holds ``model.keras``, ``config.json`` (read through
:mod:`skin_model.model.config`), ``ood.npz``, ``integrity.json`` (SHA-256 of those three),
``metrics.json``, ``history.csv``, ``split.csv``, ``test_predictions.csv`` and
``MODEL_CARD.md``; ``attempts.csv`` beside the directories lists every training run.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pandas as pd

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
OOD_FILE = "ood.npz"
CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SPLIT_FILE = "split.csv"
PREDICTIONS_FILE = "test_predictions.csv"
ATTEMPTS_FILE = "attempts.csv"
CHECKPOINT_FILE = "checkpoint.keras"
BEST_WEIGHTS_FILE = "best.weights.h5"
STATE_FILE = "train_state.json"
RUN_CONFIG_FILE = "run_config.json"
EMA_FILE = "ema_weights.npz"
FITTED_WEIGHTS_FILE = "fitted_weights.npz"
FOLD_FILE = "fold.json"
FOLD_MODEL_FILE = "fold_model.keras"
OOF_FILE = "oof_predictions.csv"
CV_FILE = "cv.json"
CV_TABLE_FILE = "cross_validation.csv"
INTEGRITY_FILE = "integrity.json"
ATTEMPT_COLUMNS = (
    "directory",
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
    "test_mel_auc",
    "test_mel_sensitivity",
    "test_malignant_sensitivity",
    "test_malignant_ece",
    "val_balanced_accuracy_with_metadata",
    "test_balanced_accuracy_with_metadata",
)
"""Columns of ``attempts.csv`` (rows written before a column existed leave it empty)."""


class ArtifactError(RuntimeError):
    """A missing or unreadable artifact file, with a message for the user."""


class ModelLoadError(RuntimeError):
    """A model directory that cannot be used, with a message for the user."""


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON (no NaN: they are not JSON)."""
    Path(path).write_text(json.dumps(data, indent=1, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: Path) -> dict:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


INTEGRITY_FILES = (MODEL_FILE, CONFIG_FILE, OOD_FILE)
"""Files whose SHA-256 ``integrity.json`` records (those that change a prediction)."""


def deflate_zip(path: Path) -> int:
    """Re-pack a zip file (such as a ``.keras`` model) with every member deflated.

    Keras stores its members uncompressed; deflated, a trained network's float32 weights
    take about a tenth less room, and every byte read back is the same (so the network
    computes exactly what it did). The file is replaced only once the new one is whole.

    Args:
        path: The zip file; rewritten in place.

    Returns:
        The new size in bytes.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".deflating")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w") as out:
        for info in src.infolist():
            member = zipfile.ZipInfo(info.filename, info.date_time)
            member.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(member, src.read(info.filename), compresslevel=9)
    os.replace(tmp, path)
    return path.stat().st_size


def write_integrity(model_dir: Path) -> dict[str, str]:
    """Record the SHA-256 of the model directory's :data:`INTEGRITY_FILES` that exist.

    Returns:
        ``{file name: hex digest}`` as written to ``integrity.json``.
    """
    model_dir = Path(model_dir)
    digests = {n: sha256_file(model_dir / n) for n in INTEGRITY_FILES if (model_dir / n).is_file()}
    write_json(model_dir / INTEGRITY_FILE, digests)
    return digests


def read_integrity(model_dir: Path) -> dict[str, str]:
    """The digests a model directory recorded (empty if it has no ``integrity.json``)."""
    path = Path(model_dir) / INTEGRITY_FILE
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def check_model_files(model_dir: Path) -> Path:
    """Check the model file is present and real (not a Git LFS pointer), and that it, the
    config and the detector statistics match the digests in ``integrity.json``.

    Args:
        model_dir: The model directory.

    Returns:
        The path of the model file.

    Raises:
        ModelLoadError: With what is wrong and how to fix it.
    """
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"No model file at {path}. Restore it with `git checkout -- {path}` or train one "
            "with `python train.py`."
        )
    with open(path, "rb") as fh:
        head = fh.read(200)
    if head.startswith(b"version https://git-lfs"):
        raise ModelLoadError(
            f"{path} is a Git LFS pointer, not the model. Run `git lfs pull` to fetch it."
        )
    expected = read_integrity(model_dir)
    if MODEL_FILE not in expected:
        raise ModelLoadError(
            f"{Path(model_dir) / INTEGRITY_FILE} is missing or records no SHA-256 of the "
            "model file."
        )
    for name, digest in expected.items():
        actual = sha256_file(Path(model_dir) / name) if (Path(model_dir) / name).is_file() else ""
        if actual != digest:
            target = Path(model_dir) / name
            raise ModelLoadError(
                f"{target} is damaged or not the file its model directory recorded (SHA-256 "
                f"{actual[:12] or 'missing'}... expected {digest[:12]}...). Restore it with "
                f"`git checkout -- {target}`."
            )
    return path


def find_model_dirs(root: Path) -> list[Path]:
    """Model directories under ``root`` that hold a ``history.csv``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{HISTORY_FILE}"))


def find_cv_dirs(root: Path) -> list[Path]:
    """Cross-validation directories under ``root`` (they hold a ``cv.json``), by name."""
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/{CV_FILE}")) if root.is_dir() else []


def read_history(model_dir: Path) -> pd.DataFrame:
    """The per-epoch log, with epochs counted from 1.

    Raises:
        ArtifactError: If the file is missing, empty or malformed.
    """
    path = Path(model_dir) / HISTORY_FILE
    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ArtifactError(f"Cannot read {path}: {exc}") from exc
    if "epoch" not in df.columns or "loss" not in df.columns or df.empty:
        raise ArtifactError(f"{path} is not a training history (no epoch/loss columns).")
    df["epoch"] = df["epoch"] + 1
    return df


def best_epoch(history: pd.DataFrame) -> int:
    """Epoch (from 1) with the best validation balanced accuracy, else lowest val loss."""
    if "val_balanced_accuracy" in history:
        return int(history.loc[history["val_balanced_accuracy"].idxmax(), "epoch"])
    return int(history.loc[history["val_loss"].idxmin(), "epoch"])
