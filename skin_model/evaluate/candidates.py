"""Candidates for the shipped model, side by side on the figures that chose between them.

Every candidate was trained on the shipped model's lesion split and judged, under a rule
written before its run, on the validation and calibration parts pooled (image only, its
own test-time views): :func:`score_candidates` recomputes those figures from the model
directories and puts beside them the test figures each run wrote once (``metrics.json``)
and what its recipe changed against the first directory's (the shipped model's).
:func:`pair_rows` scores the first model averaged with each other one on the same images (a
two-network ensemble's case, before anything is built for it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from skin_model.data.dataset import class_indices, load_images, read_metadata
from skin_model.evaluate.ensemble import decided, figures, member_outputs, shared_split
from skin_model.evaluate.metrics import headline_values, paired_differences
from skin_model.model.artifacts import METRICS_FILE, read_json
from skin_model.runtime.inference import load_bundle

POOLED_PARTS = ("val", "calib")
"""The parts a ship rule reads: they chose epochs, views, temperature and thresholds, never
the recipe's weights."""

TEST_FIGURES = ("balanced_accuracy", "malignant_auc", "mel_auc", "mel_sensitivity")
"""The test figures shown beside the choosing figures."""

_NOT_RECIPE = {"name", "verbose", "limit", "second_look", "second_look_band"}
"""Settings that are not the recipe of the weights compared here (the second look near the
threshold changes the verdicts of the same weights; these figures are taken without it)."""


def recipe_changes(settings: dict, reference: dict) -> str:
    """What ``settings`` change against ``reference`` (training settings), in a few words.

    Args:
        settings: A run's training settings (``metrics.json`` ``training.settings``).
        reference: The shipped run's settings.

    Returns:
        ``"key value; ..."`` for every differing setting (teachers by name; a setting a run
        predates counts at its default), or ``"(the shipped recipe)"``.
    """
    from dataclasses import asdict

    from skin_model.model.settings import TrainConfig, comma_paths

    defaults = asdict(TrainConfig())
    parts = []
    for key in sorted(set(settings) | set(reference)):
        new, old = (s.get(key, defaults.get(key)) for s in (settings, reference))
        if key in _NOT_RECIPE or new == old:
            continue
        if key in ("teachers", "members"):
            names = [Path(t).name for t in comma_paths(new)]
            new = f"{len(names)} ({', '.join(names)})" if names else "none"
        parts.append(f"{key} {new}")
    return "; ".join(parts) or "(the shipped recipe)"


def score_candidates(
    model_dirs: list[Path], data_dir: Path, parts: tuple[str, ...] = POOLED_PARTS
) -> dict:
    """Each finalised model on the pooled ``parts`` (image only) beside its test figures.

    Args:
        model_dirs: Finalised model directories on one split; the first is the reference
            (the shipped model) the recipes are compared with.
        data_dir: The HAM10000-layout folder they were trained from.
        parts: Split parts pooled for the choosing figures.

    Returns:
        ``{"parts", "n_images", "rows": [{"model", "changes", "chosen_on", "against_first",
        "test", "train_minutes"}], "pairs": pair_rows(...)}``; ``chosen_on`` holds
        :func:`~skin_model.evaluate.ensemble.figures`, ``against_first`` the paired
        lesion-bootstrap difference from the first model on the same images
        (:func:`~skin_model.evaluate.metrics.paired_differences`; ``None`` in the first row).

    Raises:
        ValueError: If the directories were trained on different splits.
    """
    model_dirs = [Path(d) for d in model_dirs]
    split = shared_split(model_dirs)
    df = read_metadata(data_dir).merge(split[["image_id", "split"]], on="image_id")
    rows = df[df["split"].isin(parts)]
    y = class_indices(rows["dx"])
    lesions = rows["lesion_id"].to_numpy()
    images: dict[int, np.ndarray] = {}
    metrics = [read_json(d / METRICS_FILE) for d in model_dirs]
    reference = metrics[0]["training"]["settings"]
    out = {"parts": list(parts), "n_images": len(rows), "rows": []}
    first, raws = None, []
    for d, m in zip(model_dirs, metrics, strict=True):
        bundle = load_bundle(d)
        size = bundle.input_shape
        if size not in images:
            images[size] = load_images(rows["path"].tolist(), size)
        raw, prior = member_outputs(bundle, images[size]), bundle.posthoc.class_prior
        weights = bundle.posthoc.decision_weights
        raws.append(raw)
        outputs = decided(raw, prior, weights)
        if first is None:
            first, first_prior, against = outputs, prior, None
        else:
            against = paired_differences(y, first, outputs, lesions)
        test = headline_values(m)
        out["rows"].append(
            {
                "model": d.name,
                "changes": recipe_changes(m["training"]["settings"], reference),
                "chosen_on": figures(raw, y, prior, weights),
                "against_first": against,
                "test": {k: None if test[k] is None else round(test[k], 4) for k in TEST_FIGURES},
                "train_minutes": round(m["training"]["train_seconds"] / 60),
            }
        )
    names = [d.name for d in model_dirs]
    out["pairs"] = pair_rows(names, raws, y, lesions, first_prior)
    return out


def pair_rows(
    names: list[str], raws: list[np.ndarray], y: np.ndarray, lesions: np.ndarray, prior
) -> list[dict]:
    """The first model averaged with each other one, on the same images as the rows.

    Args:
        names: Model names, the first the reference.
        raws: Each model's (N, K) balanced-prior outputs on the pooled images.
        y: (N,) true class indices.
        lesions: (N,) lesion id of each image.
        prior: The class prior the balanced rule decides with (the first model's).

    Returns:
        ``[{"model": "first + other", "chosen_on", "against_first"}]``: the pair's
        :func:`~skin_model.evaluate.ensemble.figures` and its paired difference from the
        first model alone (no test figures: a pair is read on the test split only once
        chosen and built).
    """
    reference = decided(raws[0], prior)
    rows = []
    for name, raw in zip(names[1:], raws[1:], strict=True):
        mean = np.mean([raws[0], raw], axis=0)
        rows.append(
            {
                "model": f"{names[0]} + {name}",
                "chosen_on": figures(mean, y, prior),
                "against_first": paired_differences(y, reference, decided(mean, prior), lesions),
            }
        )
    return rows
