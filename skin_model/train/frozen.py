"""Training the top of a network on cached outputs of its frozen early stages.

``--freeze-stages N`` keeps the stem and the first ``N`` stages at their ImageNet weights
(BatchNorm in inference mode) and trains the rest on their outputs, computed once per
augmented view: ``--cached-views V`` (default: one per epoch, so every epoch still sees a
fresh augmentation of every image) views of each training image are drawn by the same
augmentation as a full run (:func:`skin_model.data.batches.make_batches`), passed through
the frozen part and kept in memory as float16. An epoch then costs only the top's forward
and backward pass. The views are drawn from the run's seed, so a resumed run rebuilds the
same cache; the optimizer state is saved beside the checkpoint after every epoch.

With ``--teachers`` (trained networks: a shipped model, fold models) the teachers see the
same augmented views when they are cached; their averaged outputs are kept beside the
views and the top learns a mix of the label and the teachers' distribution
(``--distill-weight``): one network takes in an ensemble's knowledge at the cost of one
teacher pass per cached view. With ``--clean-teacher`` the teachers see each view as it was
before the white balance, the capture changes and the re-saved copy (the same crop and
jitter): the network learns, from the changed view, what they say of the clean one.

Regularisers work on the cache too: ``--mixup ALPHA`` mixes every batch's views, targets
and patient context with partners of the same batch (:func:`mix`), ``--cutmix ALPHA`` pastes
a box of a partner's stage outputs into each view (:func:`cut`), and ``--ema-half-life``
keeps a weight average of the whole network (the twin below) beside the checkpoint.

The top is cut from a twin of the network (cutting a graph at an inner tensor changes the
layers' own graph records, and Keras could then no longer save a two-input network); after
every epoch :func:`copy_weights` brings the twin's values into the network, so validation,
checkpoints, finalisation and the exports see one ordinary model.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPTIMIZER_FILE = "frozen_optimizer.npz"
"""The top's optimizer state after the last finished epoch (resumable; not shipped)."""


@dataclass
class ViewCache:
    """Frozen-stage outputs of augmented training views.

    Attributes:
        features: (V, N, H, W, C) float16 outputs of the frozen part, view by view.
        labels: (V, N, K) one-hot labels in the same order.
        metadata: (V, N, DIM) patient-context vectors as augmented (hidden fields), or None.
        teacher: (V, N, K) the teachers' averaged class probabilities of each view, or None.
    """

    features: np.ndarray
    labels: np.ndarray
    metadata: np.ndarray | None = None
    teacher: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        """Memory the cache holds."""
        extras = (a.nbytes for a in (self.metadata, self.teacher) if a is not None)
        return self.features.nbytes + self.labels.nbytes + sum(extras)


def split_at(model, layer: str):
    """The frozen bottom and the trainable top of ``model``, cut after ``layer``.

    Both share ``model``'s layers: training the top trains ``model``. The bottom's layers
    are made non-trainable (BatchNorm then runs in inference mode).

    Returns:
        ``(bottom, top)``: ``bottom`` maps the image to ``layer``'s output; ``top`` maps
        that output (and the patient context, for a two-input model) to the predictions.
    """
    import keras

    from skin_model.model.networks import IMAGE_INPUT

    image = next(t for t in model.inputs if _input_name(t) == IMAGE_INPUT)
    others = [t for t in model.inputs if t is not image]
    feature = model.get_layer(layer).output
    bottom = keras.Model(image, feature, name="frozen_stages")
    for lyr in bottom.layers:
        lyr.trainable = False
    top = keras.Model([feature, *others] if others else feature, model.output, name="top")
    return bottom, top


def twin_of(model):
    """A copy of ``model`` (same graph and values, its own layers) to cut and train."""
    import keras

    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def copy_weights(source, target) -> None:
    """Set every layer of ``target`` to the values of ``source``'s layer of the same name."""
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def _input_name(tensor) -> str:
    """The name of the Input layer that made ``tensor``."""
    return tensor._keras_history.operation.name


def _one_epoch(batches, steps: int):
    """The first ``steps`` batches of a training stream (``tf.data`` or a PyDataset) as
    NumPy ``(inputs, labels)``.
    """
    if hasattr(batches, "take"):
        yield from batches.take(steps).as_numpy_iterator()
    else:
        for i in range(steps):
            yield batches[i]


def _inputs_of(x) -> tuple:
    """A batch's inputs as ``(image, metadata or None)``."""
    return (x["image"], x["metadata"]) if isinstance(x, dict) else (x, None)


def load_teachers(paths: list[str]) -> list:
    """The teacher networks: a model directory's ``model.keras`` or a ``.keras`` file each."""
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the custom layers)
    from skin_model.model.artifacts import MODEL_FILE

    files = [Path(p) / MODEL_FILE if Path(p).is_dir() else Path(p) for p in paths]
    return [keras.models.load_model(f, compile=False) for f in files]


def teacher_outputs(teachers: list, image: np.ndarray, meta: np.ndarray | None) -> np.ndarray:
    """The teachers' class probabilities of a batch, averaged (each at its own input size:
    a view of another size or aspect is resized to it, as the app resizes a file).
    """
    from skin_model.runtime.inference import batch_inputs

    outs = []
    for t in teachers:
        hw = tuple(int(d) for d in t.inputs[0].shape[1:3])
        x = image
        if tuple(x.shape[1:3]) != hw:
            import tensorflow as tf

            x = tf.image.resize(x, hw, antialias=True).numpy()
        outs.append(np.asarray(t.predict_on_batch(batch_inputs(t, x, meta))))
    return np.mean(outs, axis=0)


def cache_views(
    bottom,
    make_stream,
    n_images: int,
    batch_size: int,
    views: int,
    teachers: list = (),
    make_teacher_stream=None,
) -> ViewCache:
    """Run ``views`` augmented epochs of the training images through the frozen part.

    Args:
        bottom: The frozen part (:func:`split_at`).
        make_stream: ``seed offset -> training batches`` (each image once per epoch).
        n_images: Training images.
        batch_size: Images per batch of the stream.
        views: Views of every image to keep.
        teachers: Networks whose averaged outputs on the same views are kept too.
        make_teacher_stream: Like ``make_stream``, the same views as the teachers should
            see them (the clean twin, :meth:`Augmentation.clean`); None: as cached.

    Returns:
        The :class:`ViewCache`.
    """
    steps = int(np.ceil(n_images / batch_size))
    shape = tuple(int(d) for d in bottom.output.shape[1:])
    features = np.empty((views, n_images, *shape), np.float16)
    arrays: dict[str, np.ndarray] = {}

    def keep(name: str, v: int, at: int, values: np.ndarray) -> None:
        if name not in arrays:
            arrays[name] = np.empty((views, n_images, values.shape[1]), np.float32)
        arrays[name][v, at : at + len(values)] = values

    start = time.perf_counter()
    for v in range(views):
        at = 0
        seen = _one_epoch(make_stream(v), steps)
        taught = _one_epoch(make_teacher_stream(v), steps) if make_teacher_stream else None
        for x, y in seen:
            image, meta = _inputs_of(x)
            n = min(len(y), n_images - at)
            features[v, at : at + n] = bottom.predict_on_batch(image[:n])
            keep("labels", v, at, y[:n])
            if meta is not None:
                keep("metadata", v, at, meta[:n])
            if teachers:
                shown = image if taught is None else _inputs_of(next(taught)[0])[0]
                m = None if meta is None else meta[:n]
                keep("teacher", v, at, teacher_outputs(teachers, shown[:n], m))
            at += n
        # a tf.data stream sits in reference cycles that hold copies of the training
        # images; the view's iterators are dropped and the cycles collected here, or each
        # view's copies stay in memory (measured: 23 GB gone in 5 views; with the iterators
        # still named, a clean-teacher run was killed at 18 GB in its fourth view)
        del seen, taught
        gc.collect()
        print(f"cached view {v + 1}/{views} ({time.perf_counter() - start:.0f}s)", flush=True)
    cache = ViewCache(features, arrays["labels"], arrays.get("metadata"), arrays.get("teacher"))
    print(f"view cache: {cache.nbytes / 2**30:.2f} GiB", flush=True)
    return cache


def distilled_targets(
    labels: np.ndarray, teacher: np.ndarray, prior: np.ndarray, weight: float
) -> np.ndarray:
    """Training targets mixing one-hot ``labels`` with the teachers' distribution.

    The teachers' outputs are balanced-prior probabilities (logit-adjusted training); the
    loss compares against the data's distribution, so they are taken back to the training
    prior before mixing.

    Args:
        labels: (N, K) one-hot labels.
        teacher: (N, K) the teachers' averaged outputs.
        prior: (K,) class shares of the training images.
        weight: Share of the target taken from the teachers.
    """
    at_prior = np.asarray(teacher, np.float64) * np.asarray(prior)[None]
    at_prior /= at_prior.sum(axis=1, keepdims=True)
    return ((1.0 - weight) * labels + weight * at_prior).astype(np.float32)


def mix(
    arrays: list[np.ndarray | None], alpha: float, rng: np.random.Generator
) -> list[np.ndarray | None]:
    """Mixup of one batch: every example becomes ``lam * itself + (1 - lam) * a partner``
    (a permutation of the batch), ``lam ~ Beta(alpha, alpha)`` per example, the same
    ``lam`` and partner for each array (features, targets, patient context; None stays
    None). On cached stage outputs this is manifold mixup: the top sees mixed features and
    learns the same mix of the targets.
    """
    n = len(next(a for a in arrays if a is not None))
    lam = rng.beta(alpha, alpha, n).astype(np.float32)
    partner = rng.permutation(n)
    return [None if a is None else blended(a, lam, partner) for a in arrays]


def blended(a: np.ndarray, keep: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """``keep * a + (1 - keep) * a[partner]`` per example (``keep``: (N,); integer arrays such
    as one-hot labels come back as float32).
    """
    w = keep.reshape((len(a),) + (1,) * (a.ndim - 1))
    kind = a.dtype if a.dtype.kind == "f" else np.float32
    return (w * a + (1.0 - w) * a[partner]).astype(kind)


def cut_boxes(shape: tuple[int, int], alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """CutMix boxes on a ``(height, width)`` grid: (n, 4) ``[top, bottom, left, right]``.

    Each box's area share is drawn from ``Beta(alpha, alpha)`` (its sides that share's square
    root of the grid's), centred anywhere on the grid and clipped to it, so the share taken
    is at most the one drawn.
    """
    h, w = shape
    side = np.sqrt(rng.beta(alpha, alpha, n))
    bh, bw = np.round(side * h).astype(int), np.round(side * w).astype(int)
    cy, cx = rng.integers(0, h, n), rng.integers(0, w, n)
    top, left = np.clip(cy - bh // 2, 0, h), np.clip(cx - bw // 2, 0, w)
    bottom, right = np.clip(cy - bh // 2 + bh, 0, h), np.clip(cx - bw // 2 + bw, 0, w)
    return np.stack([top, bottom, left, right], axis=1)


def cut(
    arrays: list[np.ndarray | None], alpha: float, rng: np.random.Generator
) -> list[np.ndarray | None]:
    """CutMix of one batch on cached stage outputs: a box of every example's feature map
    (the first array, (N, H, W, C)) is replaced by the same box of a partner's (a
    permutation of the batch); the other arrays (targets, patient context; None stays None)
    mix by the share of the map taken. A stage output's cell sees a small patch of the image,
    so a box of the map is a box of the lesion picture seen by the trained top.
    """
    features, *rest = arrays
    n, h, w = features.shape[:3]
    partner = rng.permutation(n)
    boxes = cut_boxes((h, w), alpha, n, rng)
    out = features.copy()
    for i, (top, bottom, left, right) in enumerate(boxes):
        out[i, top:bottom, left:right] = features[partner[i], top:bottom, left:right]
    kept = 1.0 - (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) / (h * w)
    kept = kept.astype(np.float32)
    return [out, *(None if a is None else blended(a, kept, partner) for a in rest)]


def cached_batches(
    cache: ViewCache,
    batch_size: int,
    seed: int,
    epoch: int = 0,
    distill: tuple[np.ndarray, float] | None = None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
):
    """Training batches from a :class:`ViewCache`: epoch ``e`` reads view ``e % V`` in a
    permutation seeded by ``seed`` and ``e`` (a resumed run passes its next ``epoch``);
    with ``distill=(prior, weight)`` and teachers' outputs in the cache, the targets are
    :func:`distilled_targets`; with ``mixup`` > 0 every batch is :func:`mix`-ed, with
    ``cutmix`` > 0 :func:`cut` (drawn from ``seed``, ``e`` and the batch index, so a resumed
    run mixes the same way).
    """
    import keras

    class CachedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = epoch
            self.order = self._order()

        def _order(self) -> np.ndarray:
            n = cache.features.shape[1]
            return np.random.default_rng([seed, self.epoch]).permutation(n)

        def __len__(self) -> int:
            return int(np.ceil(cache.features.shape[1] / batch_size))

        def __getitem__(self, index: int):
            v = self.epoch % len(cache.features)
            idx = np.sort(self.order[index * batch_size : (index + 1) * batch_size])
            x = cache.features[v, idx].astype(np.float32)
            y = cache.labels[v, idx]
            if distill is not None and cache.teacher is not None:
                y = distilled_targets(y, cache.teacher[v, idx], *distill)
            meta = None if cache.metadata is None else cache.metadata[v, idx]
            if mixup > 0:
                rng = np.random.default_rng([seed, self.epoch, index, 1])
                x, y, meta = mix([x, y, meta], mixup, rng)
            elif cutmix > 0:
                rng = np.random.default_rng([seed, self.epoch, index, 2])
                x, y, meta = cut([x, y, meta], cutmix, rng)
            return (x, y) if meta is None else ((x, meta), y)

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return CachedBatches()


def save_optimizer(top, out_dir: Path) -> None:
    """Save the top's optimizer variables (after an epoch)."""
    values = [np.asarray(v.numpy()) for v in top.optimizer.variables]
    np.savez(Path(out_dir) / OPTIMIZER_FILE, *values)


def restore_optimizer(top, out_dir: Path) -> bool:
    """Restore the optimizer state :func:`save_optimizer` wrote; False when there is none."""
    path = Path(out_dir) / OPTIMIZER_FILE
    if not path.is_file():
        return False
    top.optimizer.build(top.trainable_variables)
    with np.load(path) as data:
        values = [data[f"arr_{i}"] for i in range(len(data.files))]
    for var, value in zip(top.optimizer.variables, values, strict=True):
        var.assign(value)
    return True


def optimizer_callback(top, out_dir: Path):
    """A callback saving the top's optimizer state after every epoch."""
    import keras

    class SaveOptimizer(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            save_optimizer(top, out_dir)

    return SaveOptimizer()
