"""Averaging finalised models: the ensemble's figures beside its members', and its cost.

Members must share one lesion split (``split.csv``), so the ensemble is scored on the
same validation half and test split as each of them. The ensemble averages the members'
balanced-prior outputs (each with its own test-time augmentation) and decides by the same
balanced rule; image only (no patient context).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model.data.dataset import class_indices, load_images, read_metadata
from skin_model.evaluate.metrics import HEADLINES, compute_metrics, headline_values
from skin_model.model.artifacts import SPLIT_FILE
from skin_model.model.calibration import calibrated_probabilities, decide
from skin_model.runtime.inference import ModelBundle, load_bundle, network_outputs


def shared_split(model_dirs: list[Path]) -> pd.DataFrame:
    """The lesion split all ``model_dirs`` were trained on.

    Raises:
        ValueError: If the members' ``split.csv`` differ.
    """
    splits = [pd.read_csv(Path(d) / SPLIT_FILE) for d in model_dirs]
    for d, s in zip(model_dirs[1:], splits[1:], strict=True):
        if not s.equals(splits[0]):
            raise ValueError(f"{d} was trained on another split than {model_dirs[0]}")
    return splits[0]


def member_outputs(bundle: ModelBundle, images: np.ndarray) -> np.ndarray:
    """(N, K) image-only balanced-prior outputs of one member with its own TTA."""
    return network_outputs(bundle, images.astype(np.float32), bundle.config.tta)[0]


def decided(
    raw: np.ndarray, prior, weights: Sequence[float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, decisions)`` of balanced-prior outputs ``raw``: the probabilities at the
    training frequencies (no temperature) and the suggested classes by the balanced rule
    (with a model's decision ``weights``, if any).
    """
    probs = calibrated_probabilities(raw, prior, 1.0)
    return probs, decide(raw, probs, prior, weights)


def figures(
    raw: np.ndarray, y: np.ndarray, prior, weights: Sequence[float] | None = None
) -> dict[str, float | None]:
    """The threshold-free :data:`~skin_model.evaluate.metrics.HEADLINES` of balanced-prior outputs
    ``raw`` against labels ``y`` (the members' thresholds do not apply to their mean;
    ``weights``: the model's decision weights).
    """
    probs, decisions = decided(raw, prior, weights)
    metrics = compute_metrics(y, probs, 0.5, decisions=decisions)
    values = headline_values(metrics)
    return {k: None if values[k] is None else round(float(values[k]), 4) for k in HEADLINES}


def images_per_second(bundles: list[ModelBundle], images: np.ndarray) -> float:
    """Images per second of running every member on ``images`` (one warm-up pass first)."""
    for b in bundles:
        member_outputs(b, images[:16])
    start = time.perf_counter()
    for b in bundles:
        member_outputs(b, images)
    return round(len(images) / (time.perf_counter() - start), 1)


def evaluate_ensemble(
    model_dirs: list[Path], data_dir: Path, parts: tuple[str, ...] = ("val", "test")
) -> dict:
    """Figures of each member and of their average on the split's ``parts``, and speed.

    Args:
        model_dirs: Finalised model directories trained on the same split.
        data_dir: The HAM10000-layout folder they were trained from.
        parts: Split parts to score (``val`` is the half that chose epochs and TTA).

    Returns:
        ``{"members": [names], "parts": {part: {"n_images", "rows": [{"model", ...}]}},
        "images_per_second": {name | "ensemble": float}}``.
    """
    model_dirs = [Path(d) for d in model_dirs]
    split = shared_split(model_dirs)
    bundles = [load_bundle(d) for d in model_dirs]
    sizes = {b.input_shape for b in bundles}
    if len(sizes) != 1:
        raise ValueError(f"members have different input sizes: {sorted(sizes)}")
    size = sizes.pop()
    df = read_metadata(data_dir)
    df = df.merge(split[["image_id", "split"]], on="image_id")
    names = [d.name for d in model_dirs]
    out = {"members": names, "combination": "mean of balanced-prior outputs", "parts": {}}
    prior = bundles[0].posthoc.class_prior
    for part in parts:
        rows = df[df["split"] == part]
        images = load_images(rows["path"].tolist(), size)
        y = class_indices(rows["dx"])
        raws = [member_outputs(b, images) for b in bundles]
        table = [{"model": n, **figures(r, y, prior)} for n, r in zip(names, raws, strict=True)]
        table.append({"model": "ensemble", **figures(np.mean(raws, axis=0), y, prior)})
        out["parts"][part] = {"n_images": len(rows), "rows": table}
    sample = load_images(df["path"].iloc[:256].tolist(), size)
    speed = {n: images_per_second([b], sample) for n, b in zip(names, bundles, strict=True)}
    speed["ensemble"] = images_per_second(bundles, sample)
    out["images_per_second"] = speed
    return out


def fold_members(cv_dir: Path) -> list[ModelBundle]:
    """The fold models a cross-validation run kept, as bundles (image only, one view)."""
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the custom layers)
    from skin_model.model.artifacts import FOLD_MODEL_FILE
    from skin_model.model.config import ModelConfig
    from skin_model.model.settings import read_run_record

    recipe = read_run_record(cv_dir).config
    files = sorted(Path(cv_dir).glob(f"fold*/{FOLD_MODEL_FILE}"))
    if not files:
        raise FileNotFoundError(f"no fold models in {cv_dir} (they are kept from this version on)")
    config = ModelConfig(
        recipe.architecture, int(recipe.input_size), int(recipe.input_height), ood_layers=[]
    )
    return [ModelBundle(keras.models.load_model(f, compile=False), config, f.parent) for f in files]


def evaluate_cv_ensemble(
    cv_dir: Path, model_dir: Path, data_dir: Path, parts: tuple[str, ...] = ("calib", "test")
) -> dict:
    """A cross-validation run's fold models averaged, beside the model trained on the whole
    training part with the same recipe, on parts of its split that no member saw.

    The folds were drawn from the training and validation lesions, so every member saw
    most of the validation half: only the calibration part and the test split are fair.

    Args:
        cv_dir: A cross-validation directory with ``fold*/fold_model.keras``.
        model_dir: The finalised single model of the same split and recipe.
        data_dir: The HAM10000-layout folder.
        parts: Split parts to score.

    Returns:
        Like :func:`evaluate_ensemble`: ``{"members", "combination", "parts",
        "images_per_second"}``.
    """
    members = fold_members(cv_dir)
    single = load_bundle(model_dir)
    split = pd.read_csv(Path(model_dir) / SPLIT_FILE)
    size = single.input_shape
    df = read_metadata(data_dir).merge(split[["image_id", "split"]], on="image_id")
    prior = single.posthoc.class_prior
    names = [Path(model_dir).name, f"{len(members)}-fold ensemble ({Path(cv_dir).name})"]
    out = {
        "members": [str(b.model_dir.relative_to(Path(cv_dir).parent)) for b in members],
        "combination": "mean of the fold models' balanced-prior outputs, image only, one view",
        "parts": {},
    }
    for part in parts:
        rows = df[df["split"] == part]
        images = load_images(rows["path"].tolist(), size)
        y = class_indices(rows["dx"])
        mean = np.mean([member_outputs(b, images) for b in members], axis=0)
        table = [
            {"model": names[0], **figures(member_outputs(single, images), y, prior)},
            {"model": names[1], **figures(mean, y, prior)},
        ]
        out["parts"][part] = {"n_images": len(rows), "rows": table}
    sample = load_images(df["path"].iloc[:256].tolist(), size)
    out["images_per_second"] = {
        names[0]: images_per_second([single], sample),
        names[1]: images_per_second(members, sample),
    }
    return out
