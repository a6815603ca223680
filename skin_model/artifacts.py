"""Reading what training and evaluation wrote: model directories, histories, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from skin_model.training import HISTORY_FILE, METRICS_FILE


class ArtifactError(RuntimeError):
    """A missing or unreadable artifact file, with a message for the user."""


def find_model_dirs(root: Path) -> list[Path]:
    """Model directories under ``root`` that hold a ``history.csv``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.glob(f"*/{HISTORY_FILE}"))


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


def read_metrics(model_dir: Path) -> dict:
    """A model directory's ``metrics.json``.

    Raises:
        ArtifactError: If the file is missing or not valid JSON with the expected keys.
    """
    path = Path(model_dir) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"No metrics file at {path}; run `python train.py` or "
            "`python -m skin_model evaluate --out`."
        ) from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is damaged ({exc}); restore it with git.") from exc
    missing = [
        k
        for k in ("balanced_accuracy", "per_class", "malignant", "calibration")
        if k not in metrics
    ]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}; it was not written by evaluation.")
    return metrics
