"""Lesion-grouped k-fold cross-validation on the training and validation lesions.

The calibration part and the test split are left out: the folds are drawn from the
lesions that train and choose. Each fold trains the recipe of a
:class:`~skin_model.model.settings.TrainConfig` on the other folds and predicts its own
images; the out-of-fold predictions of every fold together cover the whole pool, so a
choice (weight average or last epoch, how to fuse the patient context) is judged on
about 7,000 images instead of one validation split of 665.

Variants scored from the same runs, at no extra training:

- ``image``: last-epoch weights, patient context hidden;
- ``context``: last-epoch weights with age/sex/site fed to the model (early fusion);
- ``ema_image`` / ``ema_context``: the same with the weight average (``ema_half_life``);
- ``metadata_only``: a class-balanced logistic regression on age/sex/site alone;
- ``image_wb``: last-epoch weights, image only, on copies of the held-out images with a
  few percent of white-balance shift (:func:`skin_model.data.imaging.shift_white_balance`);
- ``image_views8``: last-epoch weights, image only, the mean over the 8 quarter turns
  and flips of each image (what a model shipped with ``--views 8`` does);
- ``late_fusion`` (in the summary): an image variant times the metadata-only
  posterior to a power chosen on the pooled out-of-fold predictions.

Runs are resumable: a finished fold is skipped, an interrupted one continues from its
checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model import CLASSES
from skin_model.data.dataset import class_indices
from skin_model.data.metadata import ContextModel
from skin_model.evaluate.metrics import HEADLINES, compute_metrics, headline_values
from skin_model.model.artifacts import (
    BEST_WEIGHTS_FILE,
    CHECKPOINT_FILE,
    CV_FILE,
    CV_TABLE_FILE,
    EMA_FILE,
    FOLD_FILE,
    FOLD_MODEL_FILE,
    OOF_FILE,
    RUN_CONFIG_FILE,
    read_json,
    write_json,
)
from skin_model.model.calibration import late_fusion, normalise_rows
from skin_model.model.settings import TrainConfig, config_dict, read_run_record

FUSION_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)

VIEWS_VARIANT = "image_views8"
"""The variant scored over all 8 dihedral views of every held-out image."""


def assign_folds(df: pd.DataFrame, n_folds: int, seed: int) -> np.ndarray:
    """Fold index of every row: whole lesions per fold, class mix kept per fold.

    Args:
        df: Rows with ``lesion_id`` and ``dx``.
        n_folds: Number of folds.
        seed: Seed of the shuffle.

    Returns:
        (N,) int array of fold indices in ``0..n_folds-1``.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    folds = np.full(len(df), -1, dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held) in enumerate(splitter.split(np.zeros(len(df)), df["dx"], df["lesion_id"])):
        folds[held] = k
    return folds


def headline(y_idx: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The figures a cross-validation table shows, decisions by argmax of ``probs``."""
    m = compute_metrics(y_idx, normalise_rows(np.asarray(probs, dtype=float)), 0.5)
    values = headline_values(m)
    return {k: values[k] for k in HEADLINES}


def _columns(prefix: str) -> list[str]:
    return [f"{prefix}:{c}" for c in CLASSES]


def fold_predictions(model, images, metas, cfg: TrainConfig, out_dir: Path) -> dict:
    """Out-of-fold outputs of one fold's model for every variant its run supports."""
    from skin_model.data.imaging import shift_white_balance_batch
    from skin_model.runtime.inference import batch_inputs
    from skin_model.train.training import read_ema

    weight_sets = [("", model.get_weights())]
    if cfg.ema_half_life > 0:
        weight_sets.append(("ema_", read_ema(out_dir)))
    contexts = {"image": None, "context": metas} if cfg.metadata else {"image": None}
    out = {}
    for prefix, weights in weight_sets:
        model.set_weights(weights)
        for name, m in contexts.items():
            x = batch_inputs(model, images, m)
            out[prefix + name] = model.predict(x, batch_size=cfg.batch_size * 2, verbose=0)
    model.set_weights(weight_sets[0][1])
    shifted = batch_inputs(model, shift_white_balance_batch(images), None)
    out["image_wb"] = model.predict(shifted, batch_size=cfg.batch_size * 2, verbose=0)
    out[VIEWS_VARIANT] = views_predictions(model, images, cfg.batch_size * 2)
    return out


def views_predictions(model, images: np.ndarray, batch_size: int, views: int = 8) -> np.ndarray:
    """Image-only outputs averaged over the first ``views`` dihedral views of each image
    (:func:`skin_model.runtime.inference.dihedral_views`; at most the 4 that keep a
    non-square input's shape), a few images at a time.
    """
    from skin_model.runtime.inference import (
        batch_inputs,
        dihedral_views,
        mean_over_views,
        views_of,
    )

    views = min(views, len(views_of(images.shape[1:3])))
    step = max(1, 256 // views)
    out = []
    for start in range(0, len(images), step):
        x = batch_inputs(model, dihedral_views(images[start : start + step], views), None)
        out.append(mean_over_views(model.predict(x, batch_size=batch_size, verbose=0), views))
    return np.concatenate(out)


def changed_copies(model, paths: list[str], codes, cfg: TrainConfig) -> dict:
    """The held-out images of a fold under every change of
    :data:`skin_model.evaluate.robustness.CHANGES` (round field of view, transparent
    corners, casts, exposure, rotations, re-compression, a half-size file), scored by the
    fold's model, image only, beside the plain images.
    """
    from skin_model.data.imaging import decode_image
    from skin_model.evaluate.robustness import network_robustness
    from skin_model.runtime.inference import batch_inputs

    def predict(batch: np.ndarray) -> np.ndarray:
        x = batch_inputs(model, batch, None)
        return model.predict(x, batch_size=cfg.batch_size * 2, verbose=0)

    originals = [decode_image(Path(p).read_bytes()) for p in paths]
    return network_robustness(predict, originals, class_indices(codes), cfg.input_shape())


def score_missing(out_dir: Path, data_dir: Path) -> dict:
    """Add what later code scores (the changed copies, the 8-view outputs) to the
    finished folds of a cross-validation run that lack it, from each fold's saved model,
    then summarise the run again.
    """
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the custom layers)
    from skin_model.data.dataset import load_images_at

    out_dir = Path(out_dir)
    cfg = read_run_record(out_dir).config
    for k in sorted(read_oof(out_dir)["fold"].unique()):
        fold_dir = out_dir / f"fold{k}"
        info, held = read_json(fold_dir / FOLD_FILE), pd.read_csv(fold_dir / OOF_FILE)
        need_views = VIEWS_VARIANT not in variant_names(held)
        has_model = (fold_dir / FOLD_MODEL_FILE).is_file()
        if not has_model or (info.get("changed_copies") and not need_views):
            continue
        model = keras.models.load_model(fold_dir / FOLD_MODEL_FILE, compile=False)
        paths = [str(Path(data_dir) / "images" / f"{i}.jpg") for i in held["image_id"]]
        if not info.get("changed_copies"):
            info["changed_copies"] = changed_copies(model, paths, held["dx"].to_numpy(), cfg)
        if need_views:
            (images,) = load_images_at(paths, (cfg.input_shape(),))
            p = views_predictions(model, images, cfg.batch_size * 2)
            columns = pd.DataFrame(p.round(6), columns=_columns(VIEWS_VARIANT))
            pd.concat([held, columns], axis=1).to_csv(fold_dir / OOF_FILE, index=False)
            info["variants"][VIEWS_VARIANT] = headline(class_indices(held["dx"]), p)
        write_json(fold_dir / FOLD_FILE, info)
    return summarise(out_dir)


def run_fold(pool: pd.DataFrame, k: int, images: dict, cfg: TrainConfig, out_dir: Path) -> dict:
    """Train fold ``k`` (or continue it) and write its out-of-fold predictions.

    Args:
        pool: The cross-validation rows with ``fold``, ``dx``, ``image_id``,
            ``lesion_id`` (and age/sex/localization).
        k: The held-out fold.
        images: ``{"cache": uint8 images at the cache size, "input": at the input
            size}``, both in ``pool`` order.
        cfg: The recipe.
        out_dir: The cross-validation directory (``fold{k}/`` is written in it).

    Returns:
        The fold's summary (also in ``fold{k}/fold.json``).
    """
    from skin_model.data.metadata import encode_frame
    from skin_model.model.calibration import class_frequencies
    from skin_model.model.networks import save_network
    from skin_model.train.training import describe_device, fit_model

    fold_dir = Path(out_dir) / f"fold{k}"
    if (fold_dir / FOLD_FILE).is_file():
        return read_json(fold_dir / FOLD_FILE)
    fold_dir.mkdir(parents=True, exist_ok=True)
    tr = (pool["fold"] != k).to_numpy()
    metas_all = encode_frame(pool)
    codes = pool["dx"].to_numpy()
    parts = {
        "train": (images["cache"][tr], list(codes[tr])),
        "val": (images["input"][~tr], list(codes[~tr])),
    }
    metas = {"train": metas_all[tr], "val": metas_all[~tr]} if cfg.metadata else None
    resume = (fold_dir / CHECKPOINT_FILE).is_file()
    model, fit_info = fit_model(cfg.for_fold(k), parts, fold_dir, resume=resume, metas=metas)
    outputs = fold_predictions(model, images["input"][~tr], metas_all[~tr], cfg, fold_dir)
    changed = changed_copies(model, pool.loc[~tr, "path"].tolist(), codes[~tr], cfg)
    save_network(model, fold_dir / FOLD_MODEL_FILE)  # an ensemble member
    context_model = ContextModel().fit(metas_all[tr], class_indices(codes[tr]))
    outputs["metadata_only"] = context_model.predict_proba(metas_all[~tr])
    held = pool.loc[~tr, ["image_id", "lesion_id", "dx", "fold"]].reset_index(drop=True)
    frames = [held] + [
        pd.DataFrame(p.round(6), columns=_columns(name)) for name, p in outputs.items()
    ]
    pd.concat(frames, axis=1).to_csv(fold_dir / OOF_FILE, index=False)
    y = class_indices(codes[~tr])
    summary = {
        "fold": k,
        "n_train": int(tr.sum()),
        "n_held": int((~tr).sum()),
        "n_held_lesions": int(pool.loc[~tr, "lesion_id"].nunique()),
        "train_prior": class_frequencies(list(codes[tr])).tolist(),
        **fit_info,
        "device": describe_device(),
        "variants": {name: headline(y, p) for name, p in outputs.items()},
        "changed_copies": changed,
    }
    write_json(fold_dir / FOLD_FILE, summary)
    from skin_model.train.frozen import OPTIMIZER_FILE

    for name in (CHECKPOINT_FILE, BEST_WEIGHTS_FILE, EMA_FILE, OPTIMIZER_FILE):  # large, done
        (fold_dir / name).unlink(missing_ok=True)
    return summary


def cv_pool(data_dir: Path, cfg: TrainConfig, n_folds: int) -> pd.DataFrame:
    """The training + validation rows of ``cfg``'s split with a ``fold`` column."""
    from skin_model.train.training import prepare_data

    df = prepare_data(data_dir, cfg)
    pool = df[df["split"].isin(["train", "val"])].reset_index(drop=True)
    pool["fold"] = assign_folds(pool, n_folds, cfg.lesion_seed())
    return pool


def read_oof(out_dir: Path) -> pd.DataFrame:
    """All finished folds' out-of-fold predictions in one frame."""
    files = sorted(Path(out_dir).glob(f"fold*/{OOF_FILE}"))
    if not files:
        raise FileNotFoundError(f"no finished fold in {out_dir}")
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def variant_names(oof: pd.DataFrame) -> list[str]:
    """The variants present in an out-of-fold frame, in column order."""
    names = [c.split(":")[0] for c in oof.columns if ":" in c]
    return list(dict.fromkeys(names))


def choose_fusion_power(oof: pd.DataFrame, image_variant: str) -> dict:
    """The late-fusion power with the best pooled out-of-fold balanced accuracy.

    Returns:
        ``{"variant", "power", "scores": {power: balanced accuracy}}``.
    """
    y = class_indices(oof["dx"])
    img, meta = oof[_columns(image_variant)].to_numpy(), oof[_columns("metadata_only")].to_numpy()
    scores = {p: headline(y, late_fusion(img, meta, p))["balanced_accuracy"] for p in FUSION_POWERS}
    best = max(scores, key=lambda p: (round(scores[p], 4), -p))
    return {
        "variant": image_variant,
        "power": best,
        "scores": {str(p): s for p, s in scores.items()},
    }


def nested_fusion(oof: pd.DataFrame, base: str) -> tuple[np.ndarray, list[float]]:
    """Late-fused out-of-fold probabilities, each fold's power chosen on the other folds
    (so the fused figures are not tuned to the images they are scored on).

    Returns:
        ``(fused (N, K) in ``oof`` order, [power chosen for fold k, ...])``.
    """
    fused = np.zeros((len(oof), len(CLASSES)))
    powers = []
    for k in sorted(oof["fold"].unique()):
        held = (oof["fold"] == k).to_numpy()
        power = choose_fusion_power(oof[~held] if (~held).any() else oof, base)["power"]
        part = oof[held]
        fused[held] = late_fusion(
            part[_columns(base)].to_numpy(), part[_columns("metadata_only")].to_numpy(), power
        )
        powers.append(power)
    return fused, powers


def summarise(out_dir: Path) -> dict:
    """Per-fold, mean and SD figures of every variant, plus the late-fusion choice; write
    ``cv.json`` and ``cross_validation.csv`` in ``out_dir``.

    Returns:
        The dict written to ``cv.json``.
    """
    out_dir = Path(out_dir)
    oof = read_oof(out_dir)
    folds = sorted(oof["fold"].unique())
    variants = variant_names(oof)
    fusion = {}
    for base in ("image", "context", "ema_image", "ema_context"):
        if base in variants and "metadata_only" in variants:
            fusion[base] = choose_fusion_power(oof, base)
            fused, powers = nested_fusion(oof, base)
            fusion[base]["power_per_fold"] = powers
            name = f"late_fusion_{base}"
            oof = pd.concat([oof, pd.DataFrame(fused, columns=_columns(name))], axis=1)
            variants.append(name)
    rows = []
    for name in variants:
        for k in folds:
            part = oof[oof["fold"] == k]
            figs = headline(class_indices(part["dx"]), part[_columns(name)].to_numpy())
            rows.append({"variant": name, "fold": str(k), "n_images": len(part), **figs})
        per_fold = pd.DataFrame([r for r in rows if r["variant"] == name])
        for stat in ("mean", "sd"):
            values = per_fold[list(HEADLINES)].agg(stat if stat == "mean" else "std")
            rows.append({"variant": name, "fold": stat, "n_images": len(oof), **values})
        pooled = headline(class_indices(oof["dx"]), oof[_columns(name)].to_numpy())
        rows.append({"variant": name, "fold": "pooled", "n_images": len(oof), **pooled})
    table = pd.DataFrame(rows)
    table[list(HEADLINES)] = table[list(HEADLINES)].astype(float).round(4)
    table.to_csv(out_dir / CV_TABLE_FILE, index=False)
    fold_info = [read_json(out_dir / f"fold{k}" / FOLD_FILE) for k in folds]
    result = {
        "folds_done": len(folds),
        "n_images": len(oof),
        "n_lesions": int(oof["lesion_id"].nunique()),
        "train_seconds": [f["train_seconds"] for f in fold_info],
        "device": fold_info[0]["device"],
        "settings": read_run_record(out_dir).settings(),
        "late_fusion": fusion,
        "changed_copies": {
            str(k): f["changed_copies"]
            for k, f in zip(folds, fold_info, strict=True)
            if f.get("changed_copies")
        },
        "table": table.astype(object).where(table.notna(), None).to_dict(orient="records"),
        "method": "StratifiedGroupKFold over lesions of the training and validation parts "
        "(calibration part and test split left out); decisions by argmax of the "
        "balanced-prior outputs; one view (image_views8: the mean of 8 quarter turns and "
        "flips); late-fusion power "
        + (
            "of each fold chosen on the other folds"
            if len(folds) > 1
            else "chosen on the same fold (one fold: optimistic)"
        ),
    }
    write_json(out_dir / CV_FILE, result)
    return result


def run_cv(
    data_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    n_folds: int = 5,
    only: list[int] | None = None,
) -> dict:
    """Cross-validate the recipe ``cfg`` (resumable) and summarise it.

    Args:
        data_dir: HAM10000-layout folder.
        out_dir: The cross-validation directory (one ``fold{k}/`` per fold).
        cfg: The recipe; its split seed decides which lesions are in the pool.
        n_folds: Number of folds.
        only: Train just these folds (a cheaper comparison; the summary says how many
            folds it covers).

    Returns:
        The summary of :func:`summarise`.
    """
    from skin_model.data.dataset import load_images_at

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / RUN_CONFIG_FILE).is_file():
        cfg = read_run_record(out_dir).config
    else:
        write_json(out_dir / RUN_CONFIG_FILE, config_dict(cfg.validate()))
    pool = cv_pool(data_dir, cfg, n_folds)
    t0 = time.perf_counter()
    cached, inputs = load_images_at(pool["path"].tolist(), (cfg.cache_size(), cfg.input_shape()))
    images = {"cache": cached, "input": inputs}
    print(f"cross-validation pool: {len(pool)} images; loaded in {time.perf_counter() - t0:.0f}s")
    for k in only if only is not None else range(n_folds):
        summary = run_fold(pool, k, images, cfg, out_dir)
        scores = {v: round(s["balanced_accuracy"], 4) for v, s in summary["variants"].items()}
        print(f"fold {k}: {summary['train_seconds']}s; balanced accuracy {scores}", flush=True)
    return summarise(out_dir)
