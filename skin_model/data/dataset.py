"""Reading a HAM10000-layout folder, cleaning labels, the lesion-grouped split and
the input pipeline.

A data folder holds ``HAM10000_metadata.csv`` (columns ``lesion_id``, ``image_id``,
``dx``, ...) and ``images/<image_id>.jpg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from skin_model import CLASSES
from skin_model.data.augmentation import EXPOSURE, Augmentation
from skin_model.data.imaging import Size, decode_image, input_hw, jpeg_round_trip, resize_for_model

METADATA_FILE = "HAM10000_metadata.csv"
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
SPLITS = ("train", "val", "calib", "test")


class DataError(ValueError):
    """A data folder or metadata table that cannot be used, with the reason."""


def read_metadata(data_dir: Path) -> pd.DataFrame:
    """Read and clean the metadata table of a HAM10000-layout folder.

    Args:
        data_dir: Folder holding the metadata CSV and ``images/``.

    Returns:
        The cleaned table with an added ``path`` column.

    Raises:
        DataError: If the folder, columns, labels or image files are not usable.
    """
    data_dir = Path(data_dir)
    csv = data_dir / METADATA_FILE
    if not csv.is_file():
        raise DataError(f"{csv} not found: is {data_dir} a HAM10000-layout folder?")
    return clean_metadata(pd.read_csv(csv), data_dir / "images")


def clean_metadata(df: pd.DataFrame, image_dir: Path) -> pd.DataFrame:
    """Validate labels and files; fail with a clear message on any problem.

    Args:
        df: Raw metadata with at least ``lesion_id``, ``image_id`` and ``dx``.
        image_dir: Folder holding ``<image_id>.jpg``.

    Returns:
        A copy with stripped, lower-case ``dx`` and a ``path`` column.

    Raises:
        DataError: On missing columns, empty ids, unknown classes, duplicate images,
            lesions with conflicting diagnoses, or missing image files.
    """
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing_cols:
        raise DataError(f"metadata lacks column(s): {', '.join(missing_cols)}")
    df = df.copy()
    for col in REQUIRED_COLUMNS:
        df[col] = df[col].astype("string").str.strip()
    empty = df[list(REQUIRED_COLUMNS)].isna().any(axis=1) | (df[list(REQUIRED_COLUMNS)] == "").any(
        axis=1
    )
    if empty.any():
        raise DataError(f"{int(empty.sum())} row(s) have an empty lesion_id, image_id or dx")
    df["dx"] = df["dx"].str.lower()
    unknown = sorted(set(df["dx"]) - set(CLASSES))
    if unknown:
        raise DataError(f"unknown class(es) in dx: {', '.join(unknown)}; expected {CLASSES}")
    dupes = df["image_id"][df["image_id"].duplicated()].unique()
    if len(dupes):
        raise DataError(f"duplicate image_id(s): {', '.join(map(str, dupes[:5]))}")
    per_lesion = df.groupby("lesion_id")["dx"].nunique()
    conflicting = per_lesion[per_lesion > 1].index.tolist()
    if conflicting:
        raise DataError(f"lesion(s) with conflicting dx: {', '.join(conflicting[:5])}")
    df["path"] = [str(Path(image_dir) / f"{i}.jpg") for i in df["image_id"]]
    missing = [p for p in df["path"] if not Path(p).is_file()]
    if missing:
        raise DataError(f"{len(missing)} image file(s) missing, e.g. {missing[0]}")
    return df.reset_index(drop=True)


def split_by_lesion(
    df: pd.DataFrame, val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 42
) -> pd.Series:
    """Assign each image to train/val/test, grouped by lesion and stratified by dx.

    Within each class the lesions are shuffled with ``seed`` and cut into parts, so
    every image of a lesion lands in the same part and each part keeps the class mix.

    Args:
        df: Cleaned metadata (``lesion_id``, ``dx``).
        val_frac: Share of each class's lesions for validation.
        test_frac: Share of each class's lesions for test.
        seed: Seed of the shuffle; the same seed gives the same split.

    Returns:
        A Series of ``"train"``/``"val"``/``"test"`` aligned with ``df``.
    """
    rng = np.random.default_rng(seed)
    lesions = df.drop_duplicates("lesion_id")[["lesion_id", "dx"]].sort_values("lesion_id")
    part: dict[str, str] = {}
    for dx in sorted(lesions["dx"].unique()):
        ids = lesions.loc[lesions["dx"] == dx, "lesion_id"].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n_test = round(len(ids) * test_frac)
        n_val = round(len(ids) * val_frac)
        for i, lesion in enumerate(ids):
            part[lesion] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return df["lesion_id"].map(part).rename("split")


def one_hot(labels: Sequence[str]) -> np.ndarray:
    """Return a float32 one-hot matrix of class codes in :data:`CLASSES` order."""
    index = {c: i for i, c in enumerate(CLASSES)}
    out = np.zeros((len(labels), len(CLASSES)), dtype=np.float32)
    out[np.arange(len(labels)), [index[c] for c in labels]] = 1.0
    return out


def class_indices(codes: Sequence[str]) -> np.ndarray:
    """Class codes to indices in :data:`CLASSES` order."""
    return np.array([CLASSES.index(c) for c in codes], dtype=int)


def load_images(paths: Sequence[str], size: Size) -> np.ndarray:
    """Decode and resize image files into one uint8 array of shape (N, height, width, 3)."""
    return load_images_at(paths, (size,))[0]


def load_images_at(paths: Sequence[str], sizes: Sequence[Size]) -> list[np.ndarray]:
    """Decode each file once and resize it to every size in ``sizes`` (a side or
    ``(height, width)`` each, :func:`~skin_model.data.imaging.resize_for_model`).

    Returns:
        One uint8 array (N, height, width, 3) per size, in ``sizes`` order.
    """
    out = [np.empty((len(paths), *input_hw(s), 3), dtype=np.uint8) for s in sizes]
    for i, path in enumerate(paths):
        image = decode_image(Path(path).read_bytes())
        for arr, size in zip(out, sizes, strict=True):
            arr[i] = resize_for_model(image, size)
    return out


def resaved_copies(paths: Sequence[str], size: Size, seed: int) -> np.ndarray:
    """Each file as it comes back when saved again as a JPEG at its own size and 8x8 grid
    (quality drawn from :data:`CAPTURE_CHANGES` ``resave_quality`` per file), resized to
    ``size`` as :func:`load_images_at` resizes the original.

    A file saved again on its own grid re-quantises its own blocks; the shipped model loses
    far more balanced accuracy to that than to the same quality on a shifted grid
    (docs/ship_rule_jpeg_as_file.txt).

    Returns:
        uint8 array (N, height, width, 3), row ``i`` from ``paths[i]``.
    """
    low, high = CAPTURE_CHANGES["resave_quality"]
    qualities = np.random.default_rng(seed).integers(low, high + 1, len(paths))
    out = np.empty((len(paths), *input_hw(size), 3), dtype=np.uint8)
    for i, (path, quality) in enumerate(zip(paths, qualities, strict=True)):
        image = jpeg_round_trip(decode_image(Path(path).read_bytes()), int(quality))
        out[i] = resize_for_model(image, size)
    return out


def carve_calibration(df: pd.DataFrame, share: float = 0.5, seed: int = 7) -> pd.Series:
    """Move ``share`` of the validation lesions (per class) to a ``calib`` part.

    Validation then chooses (epochs, attempts, test-time augmentation) and the
    calibration part, which chose nothing, fits the temperature, the threshold and the
    out-of-distribution limit.

    Args:
        df: Metadata with ``lesion_id``, ``dx`` and ``split``.
        share: Share of each class's validation lesions to move.
        seed: Seed of the choice.

    Returns:
        The new ``split`` Series (``train``/``val``/``calib``/``test``).
    """
    split = df["split"].copy()
    if share <= 0:
        return split
    val = df[split == "val"]
    moved = split_by_lesion(val, val_frac=0.0, test_frac=share, seed=seed)
    split.loc[moved.index[moved == "test"]] = "calib"
    return split


def class_weights(labels: Sequence[str], power: float = 1.0) -> dict[int, float]:
    """Class weights ``(N / (K * n_c)) ** power`` (scikit-learn's "balanced") from the
    training labels; classes absent from them get weight 1.

    Args:
        labels: Class codes of the training images.
        power: 1.0 balances classes fully, 0.5 halfway (in log space), 0 not at all.

    Returns:
        Mapping from class index to weight, for ``keras.Model.fit(class_weight=...)``.
    """
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(list(labels))
    present = np.unique(y)
    balanced = compute_class_weight("balanced", classes=present, y=y)
    # scikit-learn divides by the number of classes present; HAM10000 has all of them
    scale = len(present) / len(CLASSES)
    weights = dict(zip(present.tolist(), balanced * scale, strict=True))
    return {i: float(weights.get(c, 1.0) ** power) for i, c in enumerate(CLASSES)}


COLOUR_JITTER = {"brightness": 0.1, "contrast": (0.8, 1.2), "saturation": (0.8, 1.2), "hue": 0.03}
"""The colour augmentation both twins apply (this TensorFlow one and
:func:`skin_model.data.batches.augment_array`): brightness shift (share of full scale), contrast
and saturation factors, hue shift (share of the colour circle)."""


CAPTURE_CHANGES = {
    "fov_radius": (0.42, 0.75),
    "fov_offset": 0.06,
    "jpeg_quality": (30, 95),
    "low_resolution": (0.35, 0.8),
    "file_side": (0.5, 1.0),
    "resave_quality": (30, 90),
}
"""The capture and export changes both twins apply with probability ``robust`` each:
a black round or elliptical field of view (radii as a share of the side, centre offset),
an exposure gain (its half-width is :data:`~skin_model.data.augmentation.EXPOSURE` or a
run's ``--exposure``), JPEG re-compression (quality range) and a lower-resolution
file scaled back up (share of the side). With ``jpeg_as_file`` the re-compression is of a
saved file instead: the stored image at a file's own height and width (each a share
``file_side`` of the stored side; 200x150 against 256 is 0.78 x 0.59), compressed and read
back at the stored side before the crop, so its 8-pixel blocks reach the network enlarged
and stretched as an exported file's do in the app. ``resave_quality`` is the JPEG quality
range of a file saved again at its own size (:func:`resaved_copies`, ``--resaved-files``)."""


def field_of_view_mask(hw, radii, centre, softness):
    """A (height, width, 1) float mask: 1 inside an ellipse, 0 outside (tf ops).

    Args:
        hw: The image's ``(height, width)`` (ints or an int tensor).
        radii: (ry, rx) as shares of the height and the width.
        centre: (cy, cx) as shares of the height and the width.
        softness: Width of the edge as a share of the side (0 = hard).
    """
    import tensorflow as tf

    rows, columns = (
        (tf.cast(tf.range(n), tf.float32) + 0.5) / tf.cast(n, tf.float32) for n in (hw[0], hw[1])
    )
    yy, xx = tf.meshgrid(rows, columns, indexing="ij")
    r = tf.sqrt(((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2)
    edge = tf.maximum(softness, 1e-3)
    return tf.clip_by_value((1.0 - r) / edge + 0.5, 0.0, 1.0)[:, :, None]


def saved_file(x, seed, robust: float):
    """With probability ``robust``, one float image in [0, 1] (tf ops) as it comes back
    from a JPEG file saved at its own size (:data:`CAPTURE_CHANGES` ``file_side``).
    """
    import tensorflow as tf

    c = CAPTURE_CHANGES
    seeds = tf.random.experimental.stateless_split(seed, num=3)
    hw = tf.shape(x)[:2]
    shares = tf.random.stateless_uniform([2], seeds[0], *c["file_side"])
    file_hw = tf.maximum(tf.cast(tf.cast(hw, tf.float32) * shares, tf.int32), 16)
    small = tf.clip_by_value(tf.image.resize(x, file_hw, antialias=True), 0.0, 1.0)
    jpeg = tf.image.stateless_random_jpeg_quality(small, *c["jpeg_quality"], seeds[1])
    back = tf.reshape(tf.image.resize(jpeg, hw), tf.shape(x))
    return tf.where(tf.random.stateless_uniform([], seeds[2]) < robust, back, x)


def capture_change(x, seed, robust: float, jpeg: bool = True, exposure: float = EXPOSURE):
    """Other dermatoscopes and export paths on one float image in [0, 1] (tf ops): each of
    a black field of view, exposure, JPEG re-compression (at the network input; ``jpeg``
    False leaves it to :func:`saved_file`) and low resolution with probability ``robust``
    (:data:`CAPTURE_CHANGES`; ``exposure``: the gain's half-width).
    """
    import tensorflow as tf

    c = CAPTURE_CHANGES
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    u = tf.random.stateless_uniform([4], seeds[0])
    hw = tf.shape(x)[:2]
    # a lower-resolution file, scaled up again by the app
    scale = tf.random.stateless_uniform([], seeds[1], *c["low_resolution"])
    small = tf.maximum(tf.cast(tf.cast(hw, tf.float32) * scale, tf.int32), 16)
    lowres = tf.image.resize(tf.image.resize(x, small, antialias=True), hw)
    x = tf.where(u[0] < robust, lowres, x)
    gain = tf.random.stateless_uniform([], seeds[2], 1.0 - exposure, 1.0 + exposure)
    x = tf.where(u[1] < robust, tf.clip_by_value(x * gain, 0.0, 1.0), x)
    radii = tf.random.stateless_uniform([2], seeds[3], *c["fov_radius"])
    centre = 0.5 + tf.random.stateless_uniform([2], seeds[4], -c["fov_offset"], c["fov_offset"])
    soft = tf.random.stateless_uniform([], seeds[5], 0.0, 0.08)
    x = tf.where(u[2] < robust, x * field_of_view_mask(hw, radii, centre, soft), x)
    if jpeg:
        compressed = tf.image.stateless_random_jpeg_quality(
            tf.clip_by_value(x, 0.0, 1.0), *c["jpeg_quality"], seeds[6]
        )
        x = tf.where(u[3] < robust, tf.reshape(compressed, tf.shape(x)), x)
    return x


def turned_by(x, degrees):
    """One float image (tf ops) turned by ``degrees`` about its centre, bilinear, its
    corners filled by reflection (no black wedges the network could learn as a cue).
    """
    import tensorflow as tf

    theta = degrees * (np.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    hw = tf.cast(tf.shape(x)[:2], tf.float32)
    cy, cx = (hw[0] - 1.0) / 2.0, (hw[1] - 1.0) / 2.0
    # output (col, row) -> input: the inverse turn about the centre
    transform = tf.stack(
        [cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0]
    )
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x[None],
        transforms=transform[None],
        output_shape=tf.shape(x)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return tf.reshape(out[0], tf.shape(x))


def augment(
    image,
    seed,
    out_size: Size | None = None,
    min_scale: float = 0.75,
    white_balance: float = 0.0,
    robust: float = 0.0,
    jpeg_as_file: bool = False,
    exposure: float = EXPOSURE,
    rotation: float = 0.0,
):
    """Random dihedral transform, turn by any angle, crop and colour jitter of one uint8
    image (tf ops).

    Images cached larger than the model input (``out_size``) are cropped down, so the
    zoom keeps detail instead of upsampling a blurred crop. A square image turns by any
    quarter turn; one of its own aspect (H != W) by a half turn or none, so with the flip
    it still meets every transform that keeps its shape.

    Args:
        image: A (H, W, 3) uint8 tensor (static H and W).
        seed: A shape-(2,) int tensor for the stateless random ops.
        out_size: Side or ``(height, width)`` of the output; ``None`` keeps (H, W).
        min_scale: Smallest crop side as a share of the image's side (each side).
        white_balance: Half-width of a random gain per colour channel (another
            dermatoscope's white balance); 0 = none.
        robust: Probability of each capture change (:func:`capture_change`); 0 = none.
        jpeg_as_file: Re-compress as a saved file before the crop (:func:`saved_file`)
            instead of at the network input.
        exposure: Half-width of the capture changes' exposure gain.
        rotation: Largest angle (degrees) of a turn by any angle after the quarter turns
            (:func:`turned_by`); 0 = none.

    Returns:
        The augmented (height, width, 3) float32 tensor in [0, 255].
    """
    import tensorflow as tf

    hw = tf.shape(image)[:2]
    out = hw if out_size is None else tf.constant(input_hw(out_size))
    square = image.shape[0] == image.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, num=8)
    x = tf.image.convert_image_dtype(image, tf.float32)
    if robust > 0 and jpeg_as_file:
        x = saved_file(x, tf.random.experimental.stateless_fold_in(seed, 13), robust)
    x = tf.image.stateless_random_flip_left_right(x, seeds[0])
    k = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
    x = tf.image.rot90(x, k if square else 2 * (k % 2))
    if rotation > 0:
        angle_seed = tf.random.experimental.stateless_fold_in(seed, 17)
        x = turned_by(x, tf.random.stateless_uniform([], angle_seed, -rotation, rotation))
    scale = tf.random.stateless_uniform([], seeds[2], min_scale, 1.0)
    crop = tf.cast(tf.cast(hw, tf.float32) * scale, tf.int32)
    x = tf.image.stateless_random_crop(x, tf.concat([crop, [3]], 0), seeds[3])
    x = tf.image.resize(x, out, antialias=True)
    jitter = COLOUR_JITTER
    x = tf.image.stateless_random_brightness(x, jitter["brightness"], seeds[4])
    x = tf.image.stateless_random_contrast(x, *jitter["contrast"], seeds[5])
    x = tf.image.stateless_random_saturation(x, *jitter["saturation"], seeds[6])
    x = tf.image.stateless_random_hue(x, jitter["hue"], seeds[7])
    if white_balance > 0:
        gain_seed = tf.random.experimental.stateless_fold_in(seed, 7)
        x = x * tf.random.stateless_uniform(
            [3], gain_seed, 1.0 - white_balance, 1.0 + white_balance
        )
    x = tf.clip_by_value(x, 0.0, 1.0)
    if robust > 0:
        x = capture_change(
            x,
            tf.random.experimental.stateless_fold_in(seed, 11),
            robust,
            not jpeg_as_file,
            exposure,
        )
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def hide_metadata(vector, seed, p_all: float, p_field: float):
    """Randomly blank the patient context of one sample (tf ops), so the model also learns
    to predict from the image alone and from any subset of fields.

    Args:
        vector: (DIM,) float32 metadata vector.
        seed: A shape-(2,) int tensor.
        p_all: Probability of hiding every field.
        p_field: Probability of hiding each remaining field independently.

    Returns:
        The vector with hidden fields replaced by their "not given" encoding.
    """
    import tensorflow as tf

    from skin_model.data.metadata import MISSING, segment_ids

    u = tf.random.stateless_uniform([4], tf.random.experimental.stateless_fold_in(seed, 99))
    field_hidden = tf.logical_or(u[1:] < p_field, u[0] < p_all)
    mask = tf.gather(field_hidden, tf.constant(segment_ids(), tf.int32))
    return tf.where(mask, tf.constant(MISSING), vector)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one pass over ``n`` images."""
    return int(np.ceil(n / batch_size))


def _source(data: tuple, again, share: float, i, seed) -> tuple:
    """Row ``i`` of ``data`` (tf tensors, the images first), its image replaced with
    probability ``share`` by row ``i`` of ``again`` (the re-saved copies; None: never).
    """
    import tensorflow as tf

    x = tuple(tf.gather(a, i) for a in data)
    if again is None:
        return x
    coin = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 29))
    return (tf.where(coin < share, tf.gather(again, i), x[0]), *x[1:])


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    training: bool,
    seed: int = 42,
    augmentation: Augmentation | None = None,
    metadata: np.ndarray | None = None,
    resaved: np.ndarray | None = None,
):
    """Build a ``tf.data`` pipeline; only ``training=True`` shuffles and augments.

    Args:
        images: uint8 array (N, S, S, 3).
        labels: one-hot float32 array (N, K).
        batch_size: Images per batch.
        training: Shuffle and augment when True.
        seed: Seed of the shuffle and augmentation.
        augmentation: How a training view is drawn (:func:`augment`, metadata hiding,
            the re-saved share; None: the defaults of :class:`Augmentation`).
        metadata: (N, DIM) patient-context vectors for a two-input model, or None.
        resaved: ``images`` saved again on their own grid (:func:`resaved_copies`), or None.

    Returns:
        A ``tf.data.Dataset`` of (inputs, labels) batches; inputs are float32 images in
        [0, 255], or ``{"image", "metadata"}`` with ``metadata``. With ``training`` it never
        ends: pass ``steps_per_epoch`` (:func:`steps_per_epoch`) to ``fit``.
    """
    import tensorflow as tf

    x_src = images if metadata is None else (images, metadata.astype(np.float32))

    augmentation = augmentation or Augmentation()
    changes, hide = augmentation.image_args, augmentation.hide

    def inputs(x, s):
        if metadata is None:
            return augment(x, s, *changes) if training else tf.cast(x, tf.float32)
        image = augment(x[0], s, *changes) if training else tf.cast(x[0], tf.float32)
        meta = hide_metadata(x[1], s, *hide) if training else x[1]
        return {"image": image, "metadata": meta}

    if not training:
        ds = tf.data.Dataset.from_tensor_slices((x_src, labels))
        ds = ds.map(lambda x, y: (inputs(x, None), y)).batch(batch_size)
    else:
        # An endless stream of epochs, each a stateless permutation of the images (seeded by
        # ``seed`` and the epoch) cut into batches, with augmentation seeds from the epoch
        # and position: the same batches on one device or split over several (a tf.data
        # shuffle is reseeded when a strategy distributes the dataset). Fit with
        # ``steps_per_epoch``; each epoch is drawn in one pass.
        n = len(images)
        data = tuple(tf.constant(a) for a in (x_src if metadata is not None else (x_src,)))
        y_all = tf.constant(labels)
        share = augmentation.resaved_share
        again = None if resaved is None or share <= 0 else tf.constant(resaved)

        def epoch(e):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), e])
            )
            items = tf.data.Dataset.from_tensor_slices(order).enumerate()

            def element(position, i):
                s = tf.stack([e * 1_000_003 + position, tf.constant(seed, tf.int64)])
                x = _source(data, again, share, i, s)
                return inputs(x if metadata is not None else x[0], s), tf.gather(y_all, i)

            return items.map(element, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)

        ds = tf.data.Dataset.range(1 << 30).flat_map(epoch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)
