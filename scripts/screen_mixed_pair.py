"""Screen of a mixed-shape pair against the shipped pair (docs/screen_rule_mixed_pair.txt).

Each member's balanced-prior outputs on the validation and calibration parts pooled (image
only) at 1, 2 and 4 of its own views; pairs combined as the averaged network does (mean of
logits, softmax) and decided by the shipped decision weights. The test split is not read.

Usage: ``PYTHONPATH=. python scripts/screen_mixed_pair.py [OUT_JSON [NAME=DIR ...]]``: the
members (default :data:`MEMBERS`), each scored alone and the first paired with each other.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model.data.dataset import class_indices, load_images, read_metadata
from skin_model.evaluate.ensemble import decided
from skin_model.evaluate.metrics import compute_metrics, headline_values
from skin_model.runtime.inference import load_bundle, network_outputs

MEMBERS = {
    "A": Path("models/efficientnet_lite0-192-e6-frozen3-robust-sog-kd-resaved-clean"),
    "B": Path("models/efficientnet_lite0-192-e12-frozen3-robust-sog-kd-mixup02"),
    "N": Path("runs/m1-native-aspect"),
}
VIEWS = (1, 2, 4)


def member_logits(model_dir: Path, paths: list[str]) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Log balanced-prior outputs of one member at each of :data:`VIEWS`, and its prior."""
    bundle = load_bundle(model_dir)
    images = load_images(paths, bundle.input_shape).astype(np.float32)
    out = {v: np.log(np.clip(network_outputs(bundle, images, v)[0], 1e-7, 1)) for v in VIEWS}
    return out, bundle.posthoc.class_prior


def figures(probs: np.ndarray, y: np.ndarray, prior, weights) -> dict:
    """Headline figures of balanced-prior probabilities ``probs`` decided with ``weights``."""
    decided_probs, decisions = decided(probs, prior, weights)
    values = headline_values(compute_metrics(y, decided_probs, 0.5, decisions=decisions))
    return {k: None if v is None else round(float(v), 4) for k, v in values.items()}


def pair_figures(logits: np.ndarray, y: np.ndarray, prior, weights) -> dict:
    """Headline figures of mean logits ``logits`` decided with ``weights``."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return figures(z / z.sum(axis=1, keepdims=True), y, prior, weights)


def valcalib_rows(model_dir: Path) -> pd.DataFrame:
    """The metadata rows of ``model_dir``'s validation and calibration parts, pooled."""
    split = pd.read_csv(model_dir / "split.csv")
    df = read_metadata(Path("../shared/data/ham10000"))
    df = df.merge(split[["image_id", "split"]], on="image_id")
    return df[df["split"].isin(["val", "calib"])]


def main(out_path: Path, members: dict[str, Path]) -> None:
    """Score each member alone and the first with each other at :data:`VIEWS`; write them
    to ``out_path``.
    """
    names = list(members)
    combinations = [(n,) for n in names] + [(names[0], n) for n in names[1:]]
    rows = valcalib_rows(members[names[0]])
    y = class_indices(rows["dx"])
    weights = json.loads(Path("models/default/config.json").read_text())["decision_weights"]
    logits, prior = {}, None
    for name, model_dir in members.items():
        logits[name], prior = member_logits(model_dir, rows["path"].tolist())
    out = {}
    for v in VIEWS:
        for combo in combinations:
            key = f"{''.join(combo)}@{v}"
            mean = np.mean([logits[c][v] for c in combo], axis=0)
            out[key] = pair_figures(mean, y, prior, weights)
            print(key, out[key], flush=True)
    out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    args = sys.argv[1:]
    named = dict(a.split("=", 1) for a in args[1:])
    main(
        Path(args[0]) if args else Path("docs/screen_mixed_pair_valcalib.json"),
        {k: Path(v) for k, v in named.items()} or MEMBERS,
    )
