"""Teacher sets for distillation, scored as the training loop would average them.

Each network's class probabilities on the validation and calibration parts pooled (one
view, patient context where the network reads it, as a teacher sees a cached view), sets
averaged as :func:`skin_model.train.frozen.teacher_outputs` does (mean of probabilities),
decided by the shipped decision weights. The test split is not read.

Usage: ``PYTHONPATH=. python scripts/score_teacher_sets.py OUT_JSON NAME=DIR ... -- SET ...``
where each SET is names joined by ``+`` (``T1+T2``); every network is scored alone too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from screen_mixed_pair import figures, valcalib_rows  # this script's folder

from skin_model.data.dataset import class_indices, load_images
from skin_model.data.metadata import encode_frame
from skin_model.runtime.inference import load_bundle, network_outputs


def main(out_path: Path, members: dict[str, Path], sets: list[str]) -> None:
    """Score each network alone and each set; write the figures to ``out_path``."""
    rows = valcalib_rows(next(iter(members.values())))
    y, meta = class_indices(rows["dx"]), encode_frame(rows)
    weights = json.loads(Path("models/default/config.json").read_text())["decision_weights"]
    probs, images, prior = {}, None, None
    for name, model_dir in members.items():
        bundle = load_bundle(model_dir)
        if images is None:
            images = load_images(rows["path"].tolist(), bundle.input_shape).astype(np.float32)
        probs[name] = network_outputs(bundle, images, 1, metadata=meta)[0]
        prior = bundle.posthoc.class_prior
    out = {}
    for key in list(members) + sets:
        mean = np.mean([probs[n] for n in key.split("+")], axis=0)
        out[key] = figures(mean, y, prior, weights)
        print(key, out[key], flush=True)
    out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    args = sys.argv[2:]
    cut = args.index("--") if "--" in args else len(args)
    named = {k: Path(v) for k, v in (a.split("=", 1) for a in args[:cut])}
    main(Path(sys.argv[1]), named, args[cut + 1 :])
