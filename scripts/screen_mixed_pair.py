"""Screen of a mixed-shape pair against the shipped pair (docs/screen_rule_mixed_pair.txt).

Each member's balanced-prior outputs on the validation and calibration parts pooled (image
only) at 1, 2 and 4 of its own views; pairs combined as the averaged network does (mean of
logits, softmax) and decided by the shipped decision weights. The test split is not read.

Usage: ``PYTHONPATH=. python scripts/screen_mixed_pair.py OUT_JSON FIRST=DIR REPLACED=DIR
CANDIDATE=DIR [--rule TXT] [--recipe-of NAME] [--facts-only]``: each member scored alone and
the first paired with each other; the file also records the screen (its rule, the members'
roles and recorded settings, the bar) for the README's table of screens
(:func:`skin_model.reports.readme.screens_section`). ``--recipe-of`` names the member whose
command the candidate changed (default: the one it replaces); ``--facts-only`` adds that
record to an existing file without scoring again.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model.data.dataset import class_indices, load_images, read_metadata
from skin_model.evaluate.ensemble import decided
from skin_model.evaluate.metrics import compute_metrics, headline_values
from skin_model.model.artifacts import read_json
from skin_model.model.settings import read_run_record
from skin_model.runtime.inference import load_bundle, network_outputs

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


BAR = {"balanced_accuracy_gain": 0.015, "malignant_auc_loss": 0.005}
"""The screen passes a candidate whose pair gains this much balanced accuracy and loses at
most this much malignant AUC against the shipped pair, at the largest of :data:`VIEWS`."""


def member_facts(model_dir: Path) -> dict:
    """A member's directory, its recorded training settings (defaults filled in) and the
    training time its ``metrics.json`` recorded, in minutes (no test figure is read).
    """
    seconds = read_json(model_dir / "metrics.json")["training"].get("train_seconds")
    return {
        "dir": str(model_dir),
        "settings": asdict(read_run_record(model_dir).config),
        "train_minutes": None if seconds is None else round(seconds / 60, 1),
    }


def screen_record(members: dict[str, Path], rule: str | None, recipe_of: str | None) -> dict:
    """What a screen compared: the first member, the one replaced, the candidate, whose
    command the candidate changed, the rule file and :data:`BAR`.
    """
    first, replaced, candidate = list(members)[:3]
    return {
        "rule": rule,
        "first": first,
        "replaced": replaced,
        "candidate": candidate,
        "recipe_of": recipe_of or replaced,
        "decided_at_views": max(VIEWS),
        "bar": BAR,
        "members": {name: member_facts(d) for name, d in members.items()},
    }


def scores(members: dict[str, Path]) -> dict:
    """Figures of each member alone and the first with each other at :data:`VIEWS`."""
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
    return out


def main(args: argparse.Namespace) -> None:
    """Score the members (or keep the file's figures with ``--facts-only``) and write them
    with the screen's record to ``args.out``.
    """
    members = {k: Path(v) for k, v in (m.split("=", 1) for m in args.members)}
    out = json.loads(args.out.read_text()) if args.facts_only else scores(members)
    out["screen"] = screen_record(members, args.rule, args.recipe_of)
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("members", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--rule", help="the screen's rule file")
    parser.add_argument("--recipe-of", help="the member whose command the candidate changed")
    parser.add_argument("--facts-only", action="store_true")
    parsed = parser.parse_args()
    if len(parsed.members) < 3:
        parser.error("name the first member, the one replaced and the candidate")
    main(parsed)
