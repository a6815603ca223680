"""NumPy training batches (the path for Keras on JAX without TensorFlow) and a fit on
the JAX backend with TensorFlow hidden, finalised afterwards with TensorFlow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skin_model import REPO_ROOT
from skin_model.data.augmentation import EXPOSURE, Augmentation
from skin_model.data.batches import ArrayBatches, augment_array, hide_array
from skin_model.data.dataset import one_hot
from skin_model.data.metadata import MISSING, encode, parse_context, segment_ids

TO_32 = Augmentation(out_size=32)


def _images(n=10, size=40):
    return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)


def test_augment_array_crops_to_the_input_and_changes_the_image():
    image = _images(1)[0]
    out = augment_array(image, np.random.default_rng(1), out_size=32)
    assert out.shape == (32, 32, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    same = augment_array(image, np.random.default_rng(1), out_size=32)
    np.testing.assert_array_equal(out, same)  # reproducible from the generator
    other = augment_array(image, np.random.default_rng(2), out_size=32)
    assert np.abs(out - other).mean() > 1.0


def test_hide_array_blanks_whole_fields():
    vector = encode(parse_context(60, "female", "back"))
    assert np.array_equal(hide_array(vector, np.random.default_rng(0), 1.0, 0.0), MISSING)
    assert np.array_equal(hide_array(vector, np.random.default_rng(0), 0.0, 0.0), vector)
    seg = segment_ids()
    for seed in range(20):
        out = hide_array(vector, np.random.default_rng(seed), 0.0, 0.5)
        for field in range(3):
            part = out[seg == field]
            assert np.array_equal(part, vector[seg == field]) or np.array_equal(
                part, MISSING[seg == field]
            )


def test_array_batches_cover_the_data_and_feed_two_inputs():
    images = _images(10)
    labels = one_hot(["mel", "nv"] * 5)
    metas = np.repeat(encode(parse_context(50, "male", "face"))[None], 10, axis=0)
    plain = ArrayBatches(images, labels, 4, training=False)
    assert len(plain) == 3
    x, y = plain[0]
    np.testing.assert_array_equal(x, images[:4].astype(np.float32))
    np.testing.assert_array_equal(y, labels[:4])
    train = ArrayBatches(images, labels, 4, True, augmentation=TO_32, metadata=metas)
    inputs, _ = train[1]
    assert inputs["image"].shape == (4, 32, 32, 3) and inputs["metadata"].shape == (4, 20)
    again = ArrayBatches(images, labels, 4, True, augmentation=TO_32, metadata=metas)[1]
    np.testing.assert_array_equal(inputs["image"], again[0]["image"])  # reproducible
    first = train.order.copy()
    train.on_epoch_end()
    assert sorted(train.order) == list(range(10)) and not np.array_equal(first, train.order)


JAX_FIT = """
import importlib.abc, os, sys
os.environ["KERAS_BACKEND"] = "jax"

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}")

sys.meta_path.insert(0, NoTensorFlow())
import train
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_fit_on_jax_without_tensorflow_then_finalise_with_tensorflow(tiny_data, tmp_path):
    """The GPU path: ``KERAS_BACKEND=jax train.py --fit-only`` on a machine without
    TensorFlow, then only the small files copied back and ``--resume`` finalises them."""
    import shutil

    import keras

    import train
    from skin_model.model.artifacts import read_json
    from skin_model.model.metrics_file import read_metrics
    from skin_model.train.training import read_weight_list
    from tests.conftest import skip_or_fail

    site = Path(os.environ.get("SKIN_JAX_SITE", REPO_ROOT / ".jax-site"))
    if not (site / "jax").is_dir():
        skip_or_fail(f"jax not found in {site} (scripts/test.sh installs requirements-jax.txt)")
    run, back = tmp_path / "run", tmp_path / "back"
    args = ["--data-dir", str(tiny_data), "--out", str(run), "--weights", "none"]
    args += ["--input-size", "32", "--epochs", "1", "--batch-size", "16", "--fit-only"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO_ROOT)])}
    done = subprocess.run(
        [sys.executable, "-c", JAX_FIT, *args], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "keras" in read_json(run / "train_state.json")["device"]
    assert read_json(run / "train_state.json")["device"].endswith("/ jax")
    back.mkdir()
    for name in ("fitted_weights.npz", "train_state.json", "history.csv", "run_config.json"):
        shutil.copy(run / name, back / name)
    assert train.main(["--data-dir", str(tiny_data), "--resume", str(back)]) == 0
    fitted = read_weight_list(run / "fitted_weights.npz")
    size = (run / "fitted_weights.npz").stat().st_size
    assert size < (run / "checkpoint.keras").stat().st_size / 2  # no optimizer state
    final = keras.models.load_model(back / "model.keras").get_weights()
    total = sum(float(np.abs(w).sum()) for w in fitted)
    assert total == pytest.approx(sum(float(np.abs(w).sum()) for w in final), rel=1e-6)
    metrics = read_metrics(back)
    assert metrics.training["device"].endswith("/ jax")  # where the epochs ran
    assert np.isfinite(metrics.balanced_accuracy)


def test_tensorflow_and_numpy_twins_augment_alike():
    """Same parameters, same distributions: over many seeds the two twins shift a test
    image's brightness and each channel's gain by the same amounts (within noise)."""
    import tensorflow as tf

    from skin_model.data.batches import augment_array
    from skin_model.data.dataset import augment

    image = np.zeros((40, 40, 3), np.uint8)
    image[:] = (150, 110, 90)  # skin-like, away from clipping
    n = 300
    rng = np.random.default_rng(0)
    ours = np.stack([augment_array(image, rng, 32, 0.75, 0.1) for _ in range(n)])
    theirs = np.stack(
        [
            augment(tf.constant(image), tf.constant([i, 7], tf.int64), 32, 0.75, 0.1).numpy()
            for i in range(n)
        ]
    )
    assert ours.shape == theirs.shape == (n, 32, 32, 3)
    for stat in (lambda a: a.mean(axis=(1, 2, 3)), lambda a: a[..., 0].mean(axis=(1, 2))):
        a, b = stat(ours), stat(theirs)
        assert abs(a.mean() - b.mean()) < 3.0  # grey levels
        assert abs(a.std() - b.std()) < 0.25 * max(a.std(), b.std())


def test_saturation_and_hue_match_the_hsv_round_trip():
    """The float32 shortcut equals matplotlib's HSV round trip, greys, black and channel
    ties included, for saturation factors that clip and hue turns of either sign."""
    from skin_model.data.batches import scale_saturation_shift_hue
    from skin_model.evaluate.bench_augment import hsv_round_trip

    x = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    x[:3] = 0.5  # grey
    x[3:6] = 0.0  # black
    x[6:9, :, 2] = x[6:9, :, 1]  # green-blue ties
    x[9:12, :, 0] = x[9:12, :, 1]  # red-green ties
    for saturation, hue in ((1.3, 0.05), (0.6, -0.08), (3.0, 0.49), (1.0, 0.0)):
        ours = scale_saturation_shift_hue(x, saturation, hue)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, hsv_round_trip(x, saturation, hue), atol=2e-6)


def test_augmentation_benchmark_prints_its_figures(tmp_path, capsys):
    from skin_model.evaluate import bench_augment

    out = tmp_path / "bench_augment.json"
    assert bench_augment.main(["--sizes", "32", "--n", "2", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())["32"]
    assert figures["augment_array_ms"] > 0 and figures["array_batches_images_per_s"] > 0
    assert figures["saturation_hue_speedup"] == pytest.approx(
        figures["saturation_hue_matplotlib_ms"] / figures["saturation_hue_ms"], rel=0.02
    )
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())


def _high_frequency(a: np.ndarray) -> float:
    """Mean absolute difference between neighbouring pixels (a blur or a JPEG lowers it)."""
    a = np.asarray(a, np.float32)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_saved_file_twins_read_back_a_smaller_jpeg():
    """Both twins' "saved file" (``--jpeg-as-file``) return the stored size, lose detail as a
    file of a smaller height and width compressed would, and leave the image alone at 0."""
    import tensorflow as tf

    from skin_model.data.batches import saved_file_array
    from skin_model.data.dataset import saved_file

    image = _images(1, 64)[0]
    x = tf.image.convert_image_dtype(tf.constant(image), tf.float32)
    seed = tf.constant([3, 5], tf.int64)
    filed = saved_file(x, seed, 1.0).numpy()
    assert filed.shape == image.shape
    assert np.array_equal(saved_file(x, seed, 1.0).numpy(), filed)  # stateless
    theirs = filed * 255
    assert np.array_equal(saved_file(x, seed, 0.0).numpy(), x.numpy())
    ours = saved_file_array(image, np.random.default_rng(0), 1.0)
    assert ours.shape == image.shape and ours.dtype == np.uint8
    assert saved_file_array(image, np.random.default_rng(0), 0.0) is image
    for out in (ours, theirs):
        assert _high_frequency(out) < 0.7 * _high_frequency(image)
        assert 10 < np.abs(np.asarray(out, np.float32) - image).mean() < 80


def test_jpeg_as_file_moves_the_compression_before_the_crop():
    """With ``jpeg_as_file`` the augmentation still draws the same view for a seed (both
    twins), and it is another view than the one compressed at the network input."""
    import tensorflow as tf

    from skin_model.data.dataset import augment

    image = _images(1, 43)[0]
    seed = tf.constant([1, 2], tf.int64)
    views = [augment(tf.constant(image), seed, 32, robust=1.0, jpeg_as_file=f) for f in (1, 1, 0)]
    assert np.array_equal(views[0].numpy(), views[1].numpy())
    assert np.abs(views[0].numpy() - views[2].numpy()).mean() > 1
    arrays = [
        augment_array(image, np.random.default_rng(4), 32, robust=1.0, jpeg_as_file=f)
        for f in (True, True, False)
    ]
    assert np.array_equal(arrays[0], arrays[1]) and np.abs(arrays[0] - arrays[2]).mean() > 1
    changed = [Augmentation(robust=1.0, jpeg_as_file=f) for f in (False, True)]
    batches, filed = (
        ArrayBatches(_images(4, 43), one_hot(["nv"] * 4), 4, True, 42, a) for a in changed
    )
    assert np.abs(batches[0][0] - filed[0][0]).mean() > 1


def test_training_passes_jpeg_as_file_to_its_batches(monkeypatch):
    """``train.py --jpeg-as-file true`` reaches the batches the run trains on."""
    from skin_model.model.settings import TrainConfig
    from skin_model.train import training

    seen = {}
    monkeypatch.setattr(training, "make_batches", lambda *a, **k: seen.update(k))
    cfg = TrainConfig(robust=0.35, jpeg_as_file=True, resaved_files=0.4, metadata_hide_all=0.3)
    again = _images(2)
    training._stream_maker(cfg, _images(2), ["nv", "mel"], None, (0, 1), again)(0)
    assert seen["augmentation"] == cfg.augmentation()
    assert seen["augmentation"].jpeg_as_file is True and seen["augmentation"].robust == 0.35
    assert seen["resaved"] is again


def test_a_run_s_augmentation_names_each_of_its_settings():
    """``TrainConfig.augmentation`` carries every training-view setting, each to its field."""
    from skin_model.model.settings import ConfigError, TrainConfig

    settings = {
        "input_size": 64,
        "crop_min_scale": 0.5,
        "white_balance": 0.1,
        "robust": 0.2,
        "jpeg_as_file": True,
        "exposure": 0.3,
        "rotation": 30.0,
        "resaved_files": 0.3,
    }
    fields = (
        "out_size",
        "min_scale",
        "white_balance",
        "robust",
        "jpeg_as_file",
        "exposure",
        "rotation",
        "resaved_share",
    )
    cfg = TrainConfig(**settings, metadata_hide_all=0.4, metadata_hide_field=0.6)
    values = {**settings, "input_size": (64, 64)}
    expected = Augmentation(**dict(zip(fields, values.values(), strict=True)), hide=(0.4, 0.6))
    assert cfg.augmentation() == expected
    assert cfg.augmentation().image_args == ((64, 64), 0.5, 0.1, 0.2, True, 0.3, 30.0)
    assert TrainConfig().augmentation().exposure == EXPOSURE
    assert TrainConfig().augmentation().rotation == 0.0
    with pytest.raises(ConfigError, match="--exposure"):
        TrainConfig(exposure=1.0).validate()
    with pytest.raises(ConfigError, match="--rotation"):
        TrainConfig(rotation=60.0).validate()


def test_an_input_of_the_images_own_aspect_is_height_by_width_and_cached_larger_alike():
    """``--input-height`` gives a landscape input: the views, the cache and the refusals."""
    from skin_model.model.settings import ConfigError, TrainConfig

    cfg = TrainConfig(input_size=64, input_height=48, crop_min_scale=0.75).validate()
    assert cfg.input_shape() == (48, 64) and cfg.augmentation().out_size == (48, 64)
    assert cfg.cache_size() == (64, 86)
    assert TrainConfig(input_size=64).input_shape() == (64, 64)
    for height in (16, 80):
        with pytest.raises(ConfigError, match="--input-height"):
            TrainConfig(input_size=64, input_height=height).validate()


def _exposure_gains(twin: str, exposure: float, n: int = 120) -> np.ndarray:
    """The gains one capture-change twin multiplies a mid-grey image by (every change on;
    the centre pixel stays inside any field of view, and a flat image keeps its level through
    the lower resolution and the JPEG)."""
    grey = np.full((32, 32, 3), 0.5, np.float32)
    if twin == "numpy":
        from skin_model.data.batches import capture_change_array

        outs = [
            capture_change_array(grey, np.random.default_rng(i), 1.0, True, exposure)
            for i in range(n)
        ]
    else:
        import tensorflow as tf

        from skin_model.data.dataset import capture_change

        outs = [
            capture_change(tf.constant(grey), tf.constant([i, 5], tf.int64), 1.0, True, exposure)
            for i in range(n)
        ]
    return np.array([float(np.asarray(o)[16, 16].mean()) / 0.5 for o in outs])


@pytest.mark.parametrize("twin", ["tf", "numpy"])
def test_exposure_sets_the_half_width_of_the_capture_changes_gain(twin):
    """``--exposure``: both twins draw the exposure gain from [1 - x, 1 + x], so a wider
    setting reaches the -15% exposure the robustness table scores well inside its range."""
    shipped, wide = _exposure_gains(twin, EXPOSURE), _exposure_gains(twin, 0.3)
    tol = 0.02  # 8-bit rounding and the JPEG of a flat image
    assert shipped.min() > 1 - EXPOSURE - tol and shipped.max() < 1 + EXPOSURE + tol
    assert wide.min() < 0.8 and wide.max() > 1.2
    assert wide.min() > 0.7 - tol and wide.max() < 1.3 + tol


def test_resaved_copies_save_each_file_again_at_its_own_size(tiny_data):
    """``--resaved-files``: each file is saved again as a JPEG of its own height and width
    (the quality drawn per file from the seed) and only then resized like the original."""
    from skin_model.data.dataset import CAPTURE_CHANGES, load_images, resaved_copies
    from skin_model.data.imaging import decode_image, jpeg_round_trip, resize_for_model

    paths = sorted(str(p) for p in tiny_data.rglob("*.jpg"))[:3]
    copies = resaved_copies(paths, 48, seed=5)
    assert copies.shape == (3, 48, 48, 3) and copies.dtype == np.uint8
    assert np.array_equal(resaved_copies(paths, 48, seed=5), copies)
    assert 0.2 < np.abs(copies.astype(float) - load_images(paths, 48)).mean() < 20
    image = decode_image(Path(paths[0]).read_bytes())
    low, high = CAPTURE_CHANGES["resave_quality"]
    assert any(
        np.array_equal(resize_for_model(jpeg_round_trip(image, q), 48), copies[0])
        for q in range(low, high + 1)
    )


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_both_twins_draw_the_resaved_copy_with_its_share(share):
    """A training view starts from the re-saved copy with probability ``resaved_share``."""
    from skin_model.data.dataset import make_dataset

    n = 64
    dark, light = np.zeros((n, 24, 24, 3), np.uint8), np.full((n, 24, 24, 3), 255, np.uint8)
    y = one_hot(["nv"] * n)
    kwargs = {"augmentation": Augmentation(min_scale=1.0, resaved_share=share), "resaved": light}
    (x_tf, _) = next(iter(make_dataset(dark, y, n, True, **kwargs)))
    x_np, _ = ArrayBatches(dark, y, n, True, **kwargs)[0]
    for x in (np.asarray(x_tf), x_np):
        light_share = (x.mean(axis=(1, 2, 3)) > 128).mean()
        assert abs(light_share - share) < (0.2 if 0 < share < 1 else 1e-9)


def test_re_saved_copies_are_made_only_for_a_run_that_fits(monkeypatch):
    """``--resaved-files`` makes the copies for a fitted run; 0 or a members average: none."""
    from skin_model.model.settings import TrainConfig
    from skin_model.train import training

    monkeypatch.setattr(training, "resaved_copies", lambda paths, size, seed: (paths, size, seed))
    cfg = TrainConfig(resaved_files=0.35, input_size=32)
    assert training._resaved_for(cfg, ["a.jpg"]) == (["a.jpg"], cfg.cache_size(), cfg.seed)
    assert training._resaved_for(TrainConfig(), ["a.jpg"]) is None
    assert training._resaved_for(TrainConfig(resaved_files=0.35, members="x,y"), ["a"]) is None


def _smooth_images(n: int, size: int) -> np.ndarray:
    """Images of broad random gradients: a crop or a turn moves them far, a capture change
    (blur, exposure, field of view, JPEG, white balance) only a little.
    """
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(-1, 1, (3, 3))
        img = 128 + 100 * np.stack(
            [np.sin(3 * (a[k] * xx + b[k] * yy) + c[k]) for k in range(3)], -1
        )
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def test_a_clean_twin_draws_the_same_views_without_the_capture_changes():
    """Augmentation.clean keeps each view's crop, turn and jitter (both twins) and drops the
    white balance, the capture changes and the re-saved copy: the teachers of
    --clean-teacher see what the network sees, unchanged.
    """
    from skin_model.data.dataset import make_dataset

    n, size = 32, 40
    images = _smooth_images(n, size)
    y = one_hot(["nv"] * n)
    changed = Augmentation(out_size=32, white_balance=0.1, robust=1.0, resaved_share=1.0)
    clean = changed.clean()
    assert (clean.white_balance, clean.robust, clean.resaved_share) == (0.0, 0.0, 0.0)
    assert clean.out_size == 32 and clean.hide == changed.hide
    resaved = 255 - images  # a copy that cannot pass for the image: never in a clean view

    def correlation(a, b):
        return np.mean([np.corrcoef(u.ravel(), v.ravel())[0, 1] for u, v in zip(a, b, strict=True)])

    for make in (
        lambda aug, seed: np.asarray(
            next(iter(make_dataset(images, y, n, True, seed, aug, resaved=resaved)))[0]
        ),
        lambda aug, seed: ArrayBatches(images, y, n, True, seed, aug, resaved=resaved)[0][0],
    ):
        seen, taught = make(changed, 3), make(clean, 3)
        with_copy = make(Augmentation(out_size=32, resaved_share=1.0), 3)
        plain = make(Augmentation(out_size=32), 3)
        np.testing.assert_allclose(taught, plain, atol=1e-3)  # nothing of the changes
        assert correlation(with_copy, taught) < -0.8  # the copy was drawn, the twin skips it
        # the changed views are the clean views changed, not other crops
        unchanged = make(Augmentation(out_size=32, white_balance=0.1, robust=1.0), 3)
        other_views = make(clean, 4)
        assert correlation(unchanged, taught) > correlation(other_views, taught) + 0.3
        assert np.abs(seen - taught).mean() > 1.0


@pytest.mark.parametrize("twin", ["tf", "numpy"])
def test_a_view_of_its_own_aspect_turns_by_half_turns_and_flips_only(twin):
    """On a 48x64 image with a bright top-left corner every view is 36x48 (every capture
    change on in odd draws); without the changes and the crop the corner lands in one of
    the four corners, each of them seen.
    """
    image = np.full((48, 64, 3), 60, np.uint8)
    image[:8, :8] = 255
    corners = set()
    for i in range(60):
        robust = float(i % 2)
        if twin == "tf":
            import tensorflow as tf

            from skin_model.data.dataset import augment

            seed = tf.constant([i, 3], tf.int64)
            view = augment(tf.constant(image), seed, (36, 48), 1.0, 0.0, robust).numpy()
        else:
            view = augment_array(image, np.random.default_rng(i), (36, 48), 1.0, 0.0, robust)
        assert view.shape == (36, 48, 3)
        if not robust:
            means = [q.mean() for q in (view[:6, :6], view[:6, -6:], view[-6:, :6], view[-6:, -6:])]
            corners.add(int(np.argmax(means)))
    assert corners == {0, 1, 2, 3}


def test_a_turn_by_any_angle_is_the_same_in_both_twins_and_a_quarter_turn_at_90():
    """``turned_by`` (tf) and ``turned_by_array`` (NumPy) turn alike, counter-clockwise for
    a positive angle as ``np.rot90``, corners filled by reflection (never black)."""
    import tensorflow as tf

    from skin_model.data.batches import turned_by_array
    from skin_model.data.dataset import turned_by

    rng = np.random.default_rng(0)
    image = rng.integers(20, 255, (40, 40, 3)).astype(np.uint8)
    image[2:10, 25:38] = 255
    for degrees in (90.0, 25.0, -40.0):
        ours = turned_by_array(image, degrees).astype(np.float32)
        theirs = turned_by(tf.constant(image, tf.float32), tf.constant(degrees)).numpy()
        assert np.abs(ours - theirs).mean() < 0.5  # uint8 rounding apart
        assert theirs.min() >= 19.5  # reflected corners, no black fill
    np.testing.assert_allclose(turned_by_array(image, 90.0), np.rot90(image), atol=1)
    view = augment_array(image, np.random.default_rng(3), None, 1.0, rotation=30.0)
    assert view.shape == image.shape and not np.allclose(
        view, augment_array(image, np.random.default_rng(3), None, 1.0)
    )
