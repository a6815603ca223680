"""Metadata cleaning, the lesion-grouped split, class weights and the input pipeline."""

import numpy as np
import pandas as pd
import pytest

from skin_model import CLASSES
from skin_model.data import (
    DataError,
    augment,
    class_weights,
    clean_metadata,
    make_dataset,
    one_hot,
    read_metadata,
    split_by_lesion,
)


def _meta(tiny_data):
    return pd.read_csv(tiny_data / "HAM10000_metadata.csv")


def test_read_metadata_adds_paths(tiny_data):
    df = read_metadata(tiny_data)
    assert len(df) == 7 * 8 * 2 and df["path"].str.endswith(".jpg").all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.assign(dx=d["dx"].where(d.index != 0, "melanoma")), "unknown class"),
        (lambda d: d.drop(columns=["lesion_id"]), "lacks column"),
        (lambda d: pd.concat([d, d.iloc[[0]]]), "duplicate image_id"),
        (lambda d: d.assign(dx=d["dx"].where(d.index != 1, "bcc")), "conflicting dx"),
        (lambda d: d.assign(image_id=d["image_id"].where(d.index != 2, "ISIC_missing")), "missing"),
        (lambda d: d.assign(dx=d["dx"].where(d.index != 3, "")), "empty"),
    ],
    ids=["unknown", "column", "duplicate", "conflict", "missing-file", "empty"],
)
def test_clean_metadata_errors(tiny_data, change, message):
    with pytest.raises(DataError, match=message):
        clean_metadata(change(_meta(tiny_data)), tiny_data / "images")


def test_clean_metadata_normalises_case(tiny_data):
    df = _meta(tiny_data).assign(dx=lambda d: " " + d["dx"].str.upper())
    assert set(clean_metadata(df, tiny_data / "images")["dx"]) == set(CLASSES)


def test_read_metadata_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_metadata(tmp_path)


def test_split_groups_lesions_and_is_deterministic(tiny_data):
    df = read_metadata(tiny_data)
    split = split_by_lesion(df, seed=1)
    assert (df.assign(s=split).groupby("lesion_id")["s"].nunique() == 1).all()
    assert split.equals(split_by_lesion(df, seed=1))
    assert not split.equals(split_by_lesion(df, seed=2))


def test_real_split_groups_by_lesion_and_stratifies(real_data_dir):
    df = read_metadata(real_data_dir)
    df["split"] = split_by_lesion(df)
    assert (df.groupby("lesion_id")["split"].nunique() == 1).all()
    lesions = df.drop_duplicates("lesion_id")
    share = pd.crosstab(lesions["dx"], lesions["split"], normalize="index")
    assert ((share["test"] - 0.15).abs() < 0.02).all()
    assert ((share["val"] - 0.15).abs() < 0.02).all()


def test_shipped_split_file_matches_recomputed_split(real_data_dir, shipped_model_dir):
    shipped = pd.read_csv(shipped_model_dir / "split.csv", dtype=str)
    df = read_metadata(real_data_dir)
    df["split"] = split_by_lesion(df)
    merged = shipped.merge(df[["image_id", "split"]], on="image_id", suffixes=("", "_now"))
    assert len(merged) == len(df) and (merged["split"] == merged["split_now"]).all()
    assert (shipped.groupby("lesion_id")["split"].nunique() == 1).all()


def test_class_weights_balance_counts():
    labels = ["nv"] * 6 + ["mel"] * 2 + ["df"] * 1 + list(CLASSES)
    w = class_weights(labels)
    counts = pd.Series(labels).value_counts()
    n, k = len(labels), len(CLASSES)
    assert w[CLASSES.index("nv")] == pytest.approx(n / (k * counts["nv"]))
    assert w[CLASSES.index("df")] == pytest.approx(n / (k * counts["df"]))
    assert class_weights(labels, power=0)[0] == 1.0


def test_one_hot():
    out = one_hot(["akiec", "vasc"])
    assert out.shape == (2, 7) and out[0, 0] == 1 and out[1, 6] == 1 and out.sum() == 2


def test_augment_keeps_shape_and_range():
    import tensorflow as tf

    img = tf.constant(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    out = augment(img, tf.constant([1, 2], dtype=tf.int64)).numpy()
    assert out.shape == (32, 32, 3) and out.min() >= 0 and out.max() <= 255


def test_make_dataset_only_augments_training():
    images = np.random.default_rng(0).integers(0, 255, (10, 16, 16, 3), dtype=np.uint8)
    labels = one_hot(["nv"] * 10)
    x_eval, _ = next(iter(make_dataset(images, labels, 10, training=False)))
    assert np.array_equal(x_eval.numpy(), images.astype(np.float32))
    x_train, y_train = next(iter(make_dataset(images, labels, 10, training=True)))
    assert x_train.shape == (10, 16, 16, 3) and y_train.shape == (10, 7)
