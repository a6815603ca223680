"""A run that averages finalised networks instead of fitting one (``train.py --members A,B``).

The members must have been trained on the lesion split these settings draw, with the same
architecture and inputs; their networks become one
(:func:`skin_model.model.averaging.average_networks`), run at the settings' input size
(:func:`skin_model.model.networks.at_input_size`: members trained at 192 px can be run at
208) with the settings' Shades-of-Gray brightness
(:func:`skin_model.model.networks.with_brightness`), which is then finalised like any
fitted network (views, post-hoc layer and threshold on the parts that chose nothing for it,
detector, heatmap layer, the test split once).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from skin_model.data.dataset import DataError
from skin_model.model.artifacts import CONFIG_FILE, METRICS_FILE, MODEL_FILE, SPLIT_FILE, read_json
from skin_model.model.settings import TrainConfig


def check_member(member: Path, cfg: TrainConfig, split: pd.DataFrame) -> None:
    """Raise :class:`DataError` unless ``member`` fits the run: same split, architecture
    and inputs (its input size may differ: the averaged network is resized).

    Args:
        member: A finalised model directory.
        cfg: The averaging run's settings.
        split: The run's own ``split.csv`` as read back from disk.
    """
    config = read_json(member / CONFIG_FILE)
    found = (config["architecture"], bool(config["metadata_input"]))
    wanted = (cfg.architecture, bool(cfg.metadata))
    if found != wanted:
        raise DataError(
            f"--members: {member} is {found[0]} (patient context {found[1]}); these "
            f"settings ask {wanted[0]} ({wanted[1]})"
        )
    if not pd.read_csv(member / SPLIT_FILE).equals(split):
        raise DataError(
            f"--members: {member} was trained on another lesion split than these settings "
            "draw (--seed / --split-seed, --val-frac, --test-frac, --limit)"
        )


def averaged_fit(cfg: TrainConfig, out_dir: Path):
    """The members of ``cfg`` averaged into one network, and a fit summary of their runs.

    Args:
        cfg: Settings with ``members``; the run's split is already in ``out_dir``.
        out_dir: The averaging run's directory.

    Returns:
        ``(model, {"epochs_run", "best_epoch", "train_seconds", "members",
        "shared_layers", "trained_at"})``: the members' largest epoch counts, their summed
        training seconds, their directories, how many layers each later member takes from
        the first (computed once) and the input sizes they were trained at.
    """
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the custom layers)
    from skin_model.model.averaging import average_networks, layers_taken_from_first
    from skin_model.model.networks import at_input_size, with_brightness

    split = pd.read_csv(Path(out_dir) / SPLIT_FILE)
    members = [Path(m) for m in cfg.member_paths()]
    for member in members:
        check_member(member, cfg, split)
    networks = [keras.models.load_model(m / MODEL_FILE, compile=False) for m in members]
    fits = [read_json(m / METRICS_FILE)["training"] for m in members]
    model = average_networks(networks)
    shapes = sorted({tuple(int(d) for d in n.inputs[0].shape[1:3]) for n in networks})
    trained_at = [h if h == w else [h, w] for h, w in shapes]  # a side, or height and width
    if shapes != [cfg.input_shape()]:
        try:
            model = at_input_size(model, cfg.input_shape())
        except ValueError as exc:
            raise DataError(f"--members: cannot run at {cfg.input_size} px ({exc})") from exc
    try:
        model = with_brightness(model, cfg.colour_constancy_brightness)
    except ValueError as exc:
        raise DataError(f"--members: {exc}") from exc
    return model, {
        "epochs_run": max(f["epochs_run"] for f in fits),
        "best_epoch": max(f["best_epoch"] for f in fits),
        "train_seconds": round(sum(f["train_seconds"] for f in fits), 1),
        "members": [str(m) for m in members],
        "shared_layers": layers_taken_from_first(model, networks),
        "trained_at": trained_at,
    }
