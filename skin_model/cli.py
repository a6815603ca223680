"""Command line: ``python -m skin_model predict | evaluate | bench | ensemble | candidates |
quality | export | robustness | cam | targets``.

Exit codes: 0 every file succeeded, 1 some files failed (their rows say why),
2 usage errors (bad options, no inputs, unusable model or data folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from skin_model import CLASSES, DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR
from skin_model.model.artifacts import SPLIT_FILE
from skin_model.runtime.predict import CHUNK, expand_paths, predict_files


class UsageError(Exception):
    """A command-line problem: exit code 2."""


def progress_bar(stream=sys.stderr, width: int = 30) -> Callable[[int, int], None]:
    """A text progress bar on ``stream`` (stderr, so CSV on stdout stays clean)."""
    start = time.perf_counter()

    def show(done: int, total: int) -> None:
        filled = int(width * done / max(total, 1))
        rate = done / max(time.perf_counter() - start, 1e-9)
        end = "\n" if done >= total else ""
        stream.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {rate:.0f} img/s{end}"
        )
        stream.flush()

    return show


def load_model_or_exit(model_dir: Path):
    """Load a model directory; turn a load failure into a usage error with its message."""
    from skin_model.model.artifacts import ModelLoadError
    from skin_model.runtime.inference import load_bundle

    try:
        return load_bundle(model_dir)
    except ModelLoadError as exc:
        raise UsageError(str(exc)) from exc


def cmd_predict(args: argparse.Namespace) -> int:
    """``predict``: classify files/folders into a results CSV."""
    files = expand_paths(args.paths)
    if not files:
        raise UsageError("no JPEG/PNG images found in the given folder(s)")
    if args.cam_dir:
        args.cam_dir.mkdir(parents=True, exist_ok=True)
    bundle = load_model_or_exit(args.model)
    show = progress_bar() if (len(files) > CHUNK and not args.quiet) else None
    from skin_model.runtime.results import write_rows

    contexts = None
    if args.metadata is not None:
        from skin_model.data.metadata import MetadataError, read_metadata_csv

        try:
            contexts = read_metadata_csv(args.metadata)
        except MetadataError as exc:
            raise UsageError(str(exc)) from exc
    rows = predict_files(bundle, files, args.cam_dir, show, args.prevalence, contexts)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            write_rows(rows, fh)
    else:
        write_rows(rows, sys.stdout)
    failed = sum(bool(r["error"]) for r in rows)
    if failed:
        print(
            f"{failed} of {len(rows)} file(s) could not be classified; see the error column",
            file=sys.stderr,
        )
    return 1 if failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``evaluate``: metrics of the model on a labelled HAM10000-layout folder."""
    import pandas as pd

    from skin_model.data.dataset import DataError, read_metadata
    from skin_model.evaluate.evaluation import evaluate_frame

    try:
        df = read_metadata(args.data_dir)
    except DataError as exc:
        raise UsageError(str(exc)) from exc
    if args.split != "all":
        split_csv = Path(args.model) / SPLIT_FILE
        if not split_csv.is_file():
            raise UsageError(f"{split_csv} not found; use --split all for external data")
        split = pd.read_csv(split_csv, dtype=str)
        ids = set(split.loc[split["split"] == args.split, "image_id"])
        df = df[df["image_id"].isin(ids)].reset_index(drop=True)
        if df.empty:
            raise UsageError(f"no images of split {args.split!r} in {args.data_dir}")
    bundle = load_model_or_exit(args.model)
    metrics = evaluate_frame(bundle, df, use_metadata=not args.no_metadata)
    metrics.pop("probabilities")
    metrics["evaluated_on"] = f"{args.data_dir} ({args.split})"
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    op = metrics["malignant"]["operating_point"]
    print(f"images: {metrics['n_images']}; patient context: {metrics['patient_context']}")
    print(f"balanced accuracy: {metrics['balanced_accuracy']:.4f}")
    print(f"accuracy: {metrics['accuracy']:.4f}")
    print(f"macro AUC: {_f(metrics['macro_auc'])}")
    print(
        f"malignant AUC: {_f(metrics['malignant']['auc'])}; at threshold {op['threshold']:.3f} "
        f"sensitivity {_f(op['sensitivity'])}, specificity {_f(op['specificity'])}"
    )
    print(f"ECE: {metrics['calibration']['ece']:.4f}")
    for c in CLASSES:
        p = metrics["per_class"][c]
        print(
            f"  {c:6s} sens {_f(p['sensitivity'])} spec {_f(p['specificity'])} "
            f"AUC {_f(p['auc'])} n={p['support']}"
        )
    return 0


def _share(text: str) -> float:
    """Parse a share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1, got {text!r}")
    return value


def _f(x) -> str:
    """Format an optional float."""
    return "n/a" if x is None else f"{x:.4f}"


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench``: speed, memory and quality figures (see :mod:`skin_model.evaluate.bench`)."""
    from skin_model.evaluate.bench import run_bench

    run_bench(model_dir=args.model, data_dir=args.data_dir, quick=args.quick, out=args.out)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    """``ensemble``: members' and their average's figures on validation and test, speed."""
    from skin_model.data.dataset import DataError
    from skin_model.evaluate.ensemble import evaluate_cv_ensemble, evaluate_ensemble
    from skin_model.model.artifacts import ModelLoadError, write_json

    try:
        if args.cv:
            result = evaluate_cv_ensemble(args.cv, args.models[0], args.data_dir)
        else:
            result = evaluate_ensemble(args.models, args.data_dir)
    except (ModelLoadError, DataError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from exc
    if args.out:
        write_json(args.out, result)
    for part, block in result["parts"].items():
        print(f"{part} ({block['n_images']} images)")
        for row in block["rows"]:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
    print("images/s (model only): " + json.dumps(result["images_per_second"]))
    return 0


def cmd_candidates(args: argparse.Namespace) -> int:
    """``candidates``: models of one split on the pooled parts that chose, beside their test."""
    from skin_model.data.dataset import DataError
    from skin_model.evaluate.candidates import score_candidates
    from skin_model.model.artifacts import ModelLoadError, write_json

    try:
        result = score_candidates(args.models, args.data_dir)
    except (ModelLoadError, DataError, ValueError, FileNotFoundError, KeyError) as exc:
        raise UsageError(f"{type(exc).__name__}: {exc}") from exc
    if args.out:
        write_json(args.out, result)
    for row in result["rows"]:
        print(f"{row['model']}: {row['changes']}")
        print(f"  {'+'.join(result['parts'])}: {json.dumps(row['chosen_on'])}")
        print(f"  test: {json.dumps(row['test'])}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """``quality``: choose the image-quality limits on HAM10000 and write them."""
    import pandas as pd

    from skin_model.data.dataset import DataError, read_metadata
    from skin_model.data.imaging import decode_image
    from skin_model.data.quality import LIMITS_FILE, QualityGate

    try:
        df = read_metadata(args.data_dir)
    except DataError as exc:
        raise UsageError(str(exc)) from exc
    split = pd.read_csv(Path(args.model) / SPLIT_FILE, dtype=str)
    ids = set(split.loc[split["split"] == "calib", "image_id"])
    paths = df.loc[df["image_id"].isin(ids), "path"]
    images = [decode_image(Path(p).read_bytes()) for p in paths]
    result = QualityGate(false_alarm=args.false_alarm).fit(images).to_config()
    result["images"] = f"calibration part of {Path(args.model).name}/split.csv"
    out = args.out or LIMITS_FILE
    Path(out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["flagged"]))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``export``: the model as a SavedModel, LiteRT or ONNX file with everything inside."""
    from skin_model.model.artifacts import ModelLoadError
    from skin_model.runtime.serving import ExportError, export

    try:
        out = export(args.model_dir, args.format, args.out)
    except (ExportError, ModelLoadError) as exc:
        raise UsageError(str(exc)) from exc
    print(f"{args.format} written to {out}")
    return 0


def _cv_robustness(args: argparse.Namespace) -> int:
    """``robustness CV_DIR --cv``: changed copies (and the 8-view outputs) of every
    finished fold's held-out images, where the fold lacks them.
    """
    from skin_model.train.crossval import score_missing

    if not (Path(args.model) / "cv.json").is_file():
        raise UsageError(f"{args.model} is not a finished cross-validation run (no cv.json)")
    summary = score_missing(args.model, args.data_dir)
    for fold, result in summary["changed_copies"].items():
        plain = result["plain"]
        print(f"fold {fold}: balanced accuracy {plain['balanced_accuracy']:.3f}")
        _print_changes(result["changes"])
    return 0


def _print_changes(changes: dict) -> None:
    """One line per change: its figures and what it cost against the plain images."""
    for name, c in changes.items():
        print(
            f"  {name}: balanced accuracy {c['balanced_accuracy']:.3f} "
            f"({-c['balanced_accuracy_cost']:+.3f}), AUC {c['malignant_auc']:.3f} "
            f"({-c['auc_cost']:+.3f}), referrals changed {100 * c['referrals_changed']:.1f}%"
        )


def cmd_cam(args: argparse.Namespace) -> int:
    """``cam``: the heatmap lesion-box ratio of a model directory measured again."""
    from skin_model.train.training import remeasure_cam

    if not (Path(args.model_dir) / "metrics.json").is_file():
        raise UsageError(f"{args.model_dir} has no metrics.json (not a finalised model)")
    try:
        block = remeasure_cam(args.model_dir, args.data_dir, choose=args.choose)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from exc
    if block is None:
        raise UsageError("the model's heatmap layer gives no map with a location")
    print(
        f"{block['method']} at {block['layer']} ({block['views']} views, {block['n_images']} "
        f"test images): energy in the lesion box {block['mean_ratio']:.2f}x its area share; "
        "written to metrics.json"
    )
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    """``targets``: a model's recorded figures judged again against the current quality
    targets, written to its ``metrics.json`` and card (nothing is measured again).
    """
    from skin_model.train.training import rejudge_targets

    if not (Path(args.model_dir) / "metrics.json").is_file():
        raise UsageError(f"{args.model_dir} has no metrics.json (not a finalised model)")
    for r in rejudge_targets(args.model_dir):
        met = {True: "met", False: "MISSED", None: "not measured"}[r["met"]]
        achieved = "-" if r["achieved"] is None else f"{r['achieved']:.3f}"
        print(f"{r['label']}: {achieved} ({r['direction']} {r['goal']:g}: {met})")
    return 0


def cmd_deflate(args: argparse.Namespace) -> int:
    """``deflate``: a finalised model's ``model.keras`` re-packed deflated (the same weights),
    its digest and size recorded again.
    """
    from skin_model.train.training import deflate_model_dir

    if not (Path(args.model_dir) / "metrics.json").is_file():
        raise UsageError(f"{args.model_dir} has no metrics.json (not a finalised model)")
    before = (Path(args.model_dir) / "model.keras").stat().st_size
    after = deflate_model_dir(args.model_dir)
    print(f"{args.model_dir}/model.keras: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    """``robustness``: changed copies of a split's images against the plain ones."""
    from skin_model.evaluate.robustness import run

    if args.cv:
        return _cv_robustness(args)
    result = run(args.model, args.data_dir, args.split, args.out, args.limit)
    plain = result["plain"]
    print(
        f"{result['n_images']} {args.split} images: balanced accuracy "
        f"{plain['balanced_accuracy']:.3f}, malignant AUC {plain['malignant_auc']:.3f}"
    )
    _print_changes(result["changes"])
    return 0


def _candidates_options(sub, default_data: Path) -> None:
    """The ``candidates`` subcommand and its options."""
    c = sub.add_parser(
        "candidates",
        help="finalised models of one split on the validation and calibration parts pooled "
        "(what chose between them), beside the test figures each run wrote",
    )
    c.add_argument("models", type=Path, nargs="+", help="the shipped model first, then others")
    c.add_argument("--data-dir", type=Path, default=default_data)
    c.add_argument("--out", type=Path, help="write the figures JSON here")
    c.set_defaults(func=cmd_candidates)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its subcommands."""
    default_data = Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR))
    parser = argparse.ArgumentParser(
        prog="python -m skin_model", description="Skin-lesion classifier (HAM10000, 7 classes)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="classify images or folders into a CSV")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    p.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    p.add_argument("--cam-dir", type=Path, help="write <stem>.npy heatmaps and <stem>.png overlays")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--metadata",
        type=Path,
        default=None,
        metavar="CSV",
        help="patient context: a CSV with column 'image' (file name without extension) and "
        "any of age, sex, localization (HAM10000 values; blank or unknown allowed)",
    )
    p.add_argument(
        "--prevalence",
        type=_share,
        default=None,
        metavar="SHARE",
        help="malignant share of your patients (0-1, e.g. 0.05); probabilities are "
        "re-weighted to it by Bayes' rule (default: the training data's share)",
    )
    p.set_defaults(func=cmd_predict)
    e = sub.add_parser("evaluate", help="metrics on a labelled HAM10000-layout folder")
    e.add_argument("--data-dir", type=Path, default=default_data)
    e.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    e.add_argument(
        "--split",
        choices=("all", "train", "val", "test"),
        default="all",
        help="rows to use; named splits come from the model's split.csv",
    )
    e.add_argument("--out", type=Path, help="write the metrics JSON here")
    e.add_argument(
        "--no-metadata",
        action="store_true",
        help="ignore the folder's age/sex/localization columns (image-only evaluation)",
    )
    e.set_defaults(func=cmd_evaluate)
    b = sub.add_parser("bench", help="speed, memory and quality benchmark")
    b.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    b.add_argument("--data-dir", type=Path, default=default_data)
    b.add_argument("--quick", action="store_true", help="short run (CI)")
    b.add_argument("--out", type=Path, default=Path("bench.json"))
    b.set_defaults(func=cmd_bench)
    n = sub.add_parser(
        "ensemble", help="figures of models trained on one split and of their average"
    )
    n.add_argument("models", type=Path, nargs="+", help="finalised model directories")
    n.add_argument(
        "--cv",
        type=Path,
        default=None,
        metavar="CV_DIR",
        help="average the fold models of this cross-validation run instead, beside the one "
        "model directory given (same split and recipe), on the calibration part and test",
    )
    n.add_argument("--data-dir", type=Path, default=default_data)
    n.add_argument("--out", type=Path, help="write the figures JSON here")
    n.set_defaults(func=cmd_ensemble)
    _candidates_options(sub, default_data)
    q = sub.add_parser("quality", help="choose the image-quality limits on HAM10000")
    q.add_argument("--data-dir", type=Path, default=default_data)
    q.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="whose split to use")
    q.add_argument("--false-alarm", type=float, default=0.005, help="share flagged per measure")
    q.add_argument("--out", type=Path, help="default: skin_model/data/quality.json")
    q.set_defaults(func=cmd_quality)
    x = sub.add_parser(
        "export", help="the model for TF Serving, LiteRT or ONNX Runtime (post-hoc layer inside)"
    )
    x.add_argument("model_dir", type=Path, nargs="?", default=DEFAULT_MODEL_DIR)
    x.add_argument("--format", choices=("saved_model", "litert", "onnx"), required=True)
    x.add_argument("--out", type=Path, required=True, help="folder (saved_model) or file")
    x.set_defaults(func=cmd_export)
    _add_robustness(sub, default_data)
    _add_cam(sub, default_data)
    _add_model_dir_commands(sub)
    return parser


def _add_model_dir_commands(sub) -> None:
    """The subcommands whose one argument is a finalised model directory (default: shipped)."""
    commands: tuple[tuple[str, Callable, str], ...] = (
        (
            "targets",
            cmd_targets,
            "judge a model's recorded figures against the current quality targets again "
            "(metrics.json and the card; nothing is measured)",
        ),
        (
            "deflate",
            cmd_deflate,
            "re-pack a model directory written before models were saved deflated (the same "
            "weights; its digests, metrics.json and card updated)",
        ),
    )
    for name, func, help_text in commands:
        c = sub.add_parser(name, help=help_text)
        c.add_argument("model_dir", type=Path, nargs="?", default=DEFAULT_MODEL_DIR)
        c.set_defaults(func=func)


def _add_cam(sub, default_data: Path) -> None:
    """The ``cam`` subcommand's options."""
    c = sub.add_parser(
        "cam", help="measure the heatmap localisation on the test split again (metrics.json)"
    )
    c.add_argument("model_dir", type=Path, nargs="?", default=DEFAULT_MODEL_DIR)
    c.add_argument("--data-dir", type=Path, default=default_data)
    c.add_argument(
        "--choose",
        action="store_true",
        help="first choose the method and layer again on the validation lesion boxes "
        "(written to config.json)",
    )
    c.set_defaults(func=cmd_cam)


def _add_robustness(sub, default_data: Path) -> None:
    """The ``robustness`` subcommand's options."""
    r = sub.add_parser(
        "robustness", help="changed copies (field of view, casts, rotation...) of a split"
    )
    r.add_argument("model", type=Path, nargs="?", default=DEFAULT_MODEL_DIR)
    r.add_argument("--data-dir", type=Path, default=default_data)
    r.add_argument(
        "--split",
        choices=("val", "calib", "val,calib", "test"),
        default="val",
        help="the part scored (val,calib: both pooled)",
    )
    r.add_argument("--limit", type=int, default=0, help="first N images of the split only")
    r.add_argument("--out", type=Path, help="write the JSON here")
    r.add_argument(
        "--cv", action="store_true", help="MODEL is a cross-validation run: score its folds"
    )
    r.set_defaults(func=cmd_robustness)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
