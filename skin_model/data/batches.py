"""Training batches without TensorFlow: the same augmentation as
:func:`skin_model.data.dataset.augment` in NumPy/Pillow, served by a ``keras.utils.PyDataset``.

Keras on the JAX (or PyTorch) backend trains from it, e.g. on a GPU machine that has
JAX but no TensorFlow; with the TensorFlow backend ``tf.data`` is used instead
(:func:`skin_model.data.dataset.make_dataset`). Batches are reproducible from the seed, the
epoch and the batch index, whatever the order the workers finish in.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from PIL import Image

from skin_model.data.augmentation import EXPOSURE, Augmentation
from skin_model.data.imaging import Size, input_hw, jpeg_round_trip


def augment_array(
    image: np.ndarray,
    rng: np.random.Generator,
    out_size: Size | None = None,
    min_scale: float = 0.75,
    white_balance: float = 0.0,
    robust: float = 0.0,
    jpeg_as_file: bool = False,
    exposure: float = EXPOSURE,
    rotation: float = 0.0,
    changes_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Random flip, rotation by quarter turns (half turns when H != W), crop, brightness,
    contrast, saturation, hue and white balance of one uint8 image (the NumPy twin of
    :func:`skin_model.data.dataset.augment`).

    Args:
        image: (H, W, 3) uint8.
        rng: Random generator.
        out_size: Output side or ``(height, width)`` (crops are resized to it); ``None``
            keeps (H, W).
        min_scale: Smallest crop side as a share of the image's side (each side).
        white_balance: Half-width of a random gain per colour channel; 0 = none.
        robust: Probability of each capture change (:func:`capture_change_array`).
        jpeg_as_file: Re-compress as a saved file before the crop
            (:func:`saved_file_array`) instead of at the output.
        exposure: Half-width of the capture changes' exposure gain.
        rotation: Largest angle (degrees) of a turn by any angle after the quarter turns
            (:func:`turned_by_array`); 0 = none (and nothing drawn for it).
        changes_rng: Generator of the white balance and the capture changes (None:
            ``rng``); kept apart, the same view drawn without them has the same crop.

    Returns:
        (height, width, 3) float32 in [0, 255].
    """
    height, width = image.shape[:2]
    out = (height, width) if out_size is None else input_hw(out_size)
    changes_rng = rng if changes_rng is None else changes_rng
    if robust > 0 and jpeg_as_file:
        image = saved_file_array(image, changes_rng, robust)
    x = image[:, ::-1] if rng.random() < 0.5 else image
    turns = int(rng.integers(0, 4))
    x = np.rot90(x, turns if height == width else 2 * (turns % 2))
    if rotation > 0:
        x = turned_by_array(x, rng.uniform(-rotation, rotation))
    scale = rng.uniform(min_scale, 1.0)
    crop = (int(height * scale), int(width * scale))
    top, left = rng.integers(0, (height - crop[0] + 1, width - crop[1] + 1))
    x = np.ascontiguousarray(x[top : top + crop[0], left : left + crop[1]])
    if crop != out:
        x = np.asarray(Image.fromarray(x).resize(out[::-1], Image.Resampling.BILINEAR))
    from skin_model.data.dataset import COLOUR_JITTER as jitter

    x = x.astype(np.float32) / 255.0
    x = x + rng.uniform(-jitter["brightness"], jitter["brightness"])
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * rng.uniform(*jitter["contrast"]) + mean, 0.0, 1.0)
    x = scale_saturation_shift_hue(
        x, rng.uniform(*jitter["saturation"]), rng.uniform(-jitter["hue"], jitter["hue"])
    )
    if white_balance > 0:
        x = x * changes_rng.uniform(1.0 - white_balance, 1.0 + white_balance, 3)
    x = np.clip(x, 0.0, 1.0)
    if robust > 0:
        x = capture_change_array(x, changes_rng, robust, not jpeg_as_file, exposure)
    return (np.clip(x, 0.0, 1.0) * 255.0).astype(np.float32)


def turned_by_array(image: np.ndarray, degrees: float) -> np.ndarray:
    """The NumPy twin of :func:`skin_model.data.dataset.turned_by` on a uint8 image."""
    from scipy.ndimage import rotate

    turned = rotate(
        image.astype(np.float32), degrees, axes=(1, 0), reshape=False, order=1, mode="reflect"
    )
    return np.clip(np.rint(turned), 0, 255).astype(np.uint8)


def scale_saturation_shift_hue(x: np.ndarray, saturation: float, hue: float) -> np.ndarray:
    """Multiply HSV saturation (clipped to 1) and turn the hue, value kept: the round trip
    through matplotlib's ``rgb_to_hsv``/``hsv_to_rgb`` (equal within 2e-6) in float32 and
    without the HSV image, about 2x faster (the largest part of :func:`augment_array`).

    Args:
        x: (..., 3) float32 RGB in [0, 1].
        saturation: Factor on the saturation.
        hue: Turn of the hue, in turns (any sign).

    Returns:
        An array of ``x``'s shape and dtype.
    """
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v = x.max(axis=-1)
    delta = v - x.min(axis=-1)
    grey = delta <= 0
    d = np.where(grey, 1.0, delta)
    # matplotlib's precedence where two channels tie for the maximum: blue, green, red
    h = np.where(b == v, 4.0 + (r - g) / d, np.where(g == v, 2.0 + (b - r) / d, (g - b) / d))
    h = np.where(grey, 0.0, h)
    sextant = (((h / 6.0) % 1.0 + hue) % 1.0 * 6.0).astype(x.dtype)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1.0), 0.0)
    chroma = v * np.clip(s * saturation, 0.0, 1.0)
    out = np.empty_like(x)
    for channel, n in enumerate((5.0, 3.0, 1.0)):  # r, g, b of the hexcone
        k = (n + sextant) % 6.0
        out[..., channel] = v - chroma * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return out


def field_of_view_array(size: Size, radii, centre, softness: float) -> np.ndarray:
    """The NumPy twin of :func:`skin_model.data.dataset.field_of_view_mask` (``size``: a
    side or ``(height, width)``).
    """
    rows, columns = ((np.arange(n, dtype=np.float32) + 0.5) / n for n in input_hw(size))
    yy, xx = np.meshgrid(rows, columns, indexing="ij")
    r = np.sqrt(((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2)
    return np.clip((1.0 - r) / max(softness, 1e-3) + 0.5, 0.0, 1.0)[:, :, None]


def random_field_of_view(size: Size, rng: np.random.Generator) -> np.ndarray:
    """A (height, width, 1) black round or elliptical field of view drawn as training's capture
    changes draw it (:data:`skin_model.data.dataset.CAPTURE_CHANGES`: radii, centre offset,
    an edge of up to 8% of the side).
    """
    from skin_model.data.dataset import CAPTURE_CHANGES as c

    radii = rng.uniform(*c["fov_radius"], 2)
    centre = 0.5 + rng.uniform(-c["fov_offset"], c["fov_offset"], 2)
    return field_of_view_array(size, radii, centre, rng.uniform(0.0, 0.08))


def saved_file_array(image: np.ndarray, rng: np.random.Generator, robust: float) -> np.ndarray:
    """The NumPy twin of :func:`skin_model.data.dataset.saved_file` on a uint8 image (draws
    nothing from ``rng`` but the coin unless it saves the file).
    """
    from skin_model.data.dataset import CAPTURE_CHANGES as c

    if rng.random() >= robust:
        return image
    height, width = image.shape[:2]
    shares = rng.uniform(*c["file_side"], 2)
    h, w = max(int(height * shares[0]), 16), max(int(width * shares[1]), 16)
    quality = int(rng.integers(c["jpeg_quality"][0], c["jpeg_quality"][1] + 1))
    small = np.asarray(Image.fromarray(image).resize((w, h), Image.LANCZOS))
    back = Image.fromarray(jpeg_round_trip(small, quality)).resize((width, height), Image.BILINEAR)
    return np.asarray(back)


def capture_change_array(
    x: np.ndarray,
    rng: np.random.Generator,
    robust: float,
    jpeg: bool = True,
    exposure: float = EXPOSURE,
) -> np.ndarray:
    """The NumPy twin of :func:`skin_model.data.dataset.capture_change` (float image in [0, 1])."""
    from skin_model.data.dataset import CAPTURE_CHANGES as c

    height, width = x.shape[:2]
    u = rng.random(4)
    if u[0] < robust:
        scale = rng.uniform(*c["low_resolution"])
        small = (max(int(width * scale), 16), max(int(height * scale), 16))
        img = Image.fromarray((x * 255).astype(np.uint8)).resize(small, Image.LANCZOS)
        x = np.asarray(img.resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    if u[1] < robust:
        x = np.clip(x * rng.uniform(1.0 - exposure, 1.0 + exposure), 0.0, 1.0)
    if u[2] < robust:
        x = x * random_field_of_view((height, width), rng)
    if jpeg and u[3] < robust:
        quality = int(rng.integers(c["jpeg_quality"][0], c["jpeg_quality"][1] + 1))
        x = jpeg_round_trip((np.clip(x, 0, 1) * 255).astype(np.uint8), quality)
        x = x.astype(np.float32) / 255.0
    return x


def hide_array(vector: np.ndarray, rng: np.random.Generator, p_all: float, p_field: float):
    """Blank all fields of a metadata vector with ``p_all``, else each with ``p_field``
    (the NumPy twin of :func:`skin_model.data.dataset.hide_metadata`).
    """
    from skin_model.data.metadata import MISSING, segment_ids

    u = rng.random(4)
    hidden = np.logical_or(u[1:] < p_field, u[0] < p_all)[segment_ids()]
    return np.where(hidden, MISSING, vector).astype(np.float32)


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (inputs, one-hot labels) from in-memory uint8 images.

    Args:
        images: (N, S, S, 3) uint8.
        labels: (N, K) one-hot float32.
        batch_size: Images per batch.
        training: Shuffle, augment and hide metadata when True.
        seed: Seed of the shuffle and augmentation.
        augmentation: How a training view is drawn (None: the defaults of
            :class:`skin_model.data.augmentation.Augmentation`).
        metadata: (N, DIM) patient-context vectors for a two-input model, or None.
        resaved: ``images`` saved again on their own grid
            (:func:`skin_model.data.dataset.resaved_copies`), or None.
        shard: ``(process, processes)``: this process yields its slice of every global
            batch (JAX with several processes assembles the global batch from them).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        training: bool,
        seed: int = 42,
        augmentation: Augmentation | None = None,
        metadata: np.ndarray | None = None,
        resaved: np.ndarray | None = None,
        shard: tuple[int, int] = (0, 1),
    ):
        super().__init__(workers=os.cpu_count() or 1, use_multiprocessing=False)
        self.images, self.labels, self.metadata = images, labels, metadata
        self.batch_size, self.training, self.seed = batch_size, training, seed
        self.augmentation = augmentation or Augmentation()
        self.resaved = resaved if self.augmentation.resaved_share > 0 else None
        self.shard = shard
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        n = len(self.images)
        if not self.training:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def __len__(self) -> int:
        return int(np.ceil(len(self.images) / self.batch_size))

    def __getitem__(self, index: int):
        batch = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        process, processes = self.shard
        per = len(batch) // processes
        positions = np.arange(process * per, (process + 1) * per)
        idx = batch[positions]
        if self.training:
            # one generator per image and place in the batch: any process draws the same
            # augmentation for it
            # and another for the white balance, the capture changes and the re-saved coin,
            # so a view drawn without them (Augmentation.clean) keeps its crop and jitter
            rngs = [np.random.default_rng([self.seed, self.epoch, index, p]) for p in positions]
            changes = [
                np.random.default_rng([self.seed, self.epoch, index, p, 11]) for p in positions
            ]
            x = np.stack(
                [
                    augment_array(
                        self._source(i, c), rng, *self.augmentation.image_args, changes_rng=c
                    )
                    for i, rng, c in zip(idx, rngs, changes, strict=True)
                ]
            )
        else:
            x = self.images[idx].astype(np.float32)
        y = self.labels[idx]
        if self.metadata is None:
            return x, y
        m = self.metadata[idx].astype(np.float32)
        if self.training:
            hide = self.augmentation.hide
            m = np.stack([hide_array(v, r, *hide) for v, r in zip(m, rngs, strict=True)])
        return {"image": x, "metadata": m}, y

    def _source(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """Image ``i``, or with probability ``resaved_share`` its re-saved copy."""
        if self.resaved is not None and rng.random() < self.augmentation.resaved_share:
            return self.resaved[i]
        return self.images[i]

    def on_epoch_end(self) -> None:
        """Reshuffle for the next epoch."""
        self.epoch += 1
        self.order = self._order()


def make_batches(*args, **kwargs):
    """Training/validation batches for the active Keras backend: ``tf.data`` with
    TensorFlow, :class:`ArrayBatches` otherwise (same arguments as
    :func:`skin_model.data.dataset.make_dataset`).
    """
    if keras.backend.backend() == "tensorflow":
        from skin_model.data.dataset import make_dataset

        return make_dataset(*args, **kwargs)
    return ArrayBatches(*args, **kwargs)
