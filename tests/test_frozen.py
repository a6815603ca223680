"""Training the top on cached outputs of frozen early stages (``--freeze-stages``)."""

import json
from dataclasses import replace

import numpy as np
import pytest

from skin_model.model.architectures import spec_for
from skin_model.model.settings import ConfigError, TrainConfig


@pytest.mark.model
def test_stage_ends_cut_the_lite_network_where_its_stages_end():
    from skin_model.model.networks import make_efficientnet_lite

    model = make_efficientnet_lite(64)
    ends = spec_for("efficientnet_lite0").stage_ends
    sides = [model.get_layer(name).output.shape[1] for name in ends]
    assert sides == [32, 32, 16, 8, 4, 4, 2, 2]  # the stem, then strides 1, 2, 2, 2, 1, 2, 1


@pytest.mark.model
def test_the_top_after_the_bottom_is_the_whole_network():
    from skin_model.model.networks import make_efficientnet_lite
    from skin_model.train.frozen import split_at

    model = make_efficientnet_lite(64, metadata_dim=4)
    bottom, top = split_at(model, spec_for("efficientnet_lite0").stage_ends[3])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    m = rng.normal(size=(3, 4)).astype(np.float32)
    whole = model.predict([x, m], verbose=0)
    staged = top.predict([bottom.predict(x, verbose=0), m], verbose=0)
    np.testing.assert_allclose(staged, whole, atol=1e-5)
    assert not any(layer.trainable for layer in bottom.layers)
    assert model.get_layer("top_conv").trainable


def test_freezing_more_stages_than_there_are_is_a_clear_error():
    with pytest.raises(ConfigError, match="stages that can be frozen"):
        TrainConfig(freeze_stages=8).validate()


@pytest.mark.slow
def test_a_frozen_run_trains_only_the_top_and_resumes(tmp_path, monkeypatch):
    """On a two-input network (the image-only top is the simpler case of the same code)."""
    import keras

    from skin_model.data.metadata import DIM
    from skin_model.model.artifacts import STATE_FILE
    from skin_model.model.networks import make_efficientnet_lite
    from skin_model.train import frozen
    from skin_model.train.frozen import OPTIMIZER_FILE, split_at
    from skin_model.train.training import fit_model, read_ema

    rng = np.random.default_rng(1)
    codes = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"] * 6
    parts = {
        "train": (rng.integers(0, 255, (42, 40, 40, 3), dtype=np.uint8), codes),
        "val": (rng.integers(0, 255, (14, 32, 32, 3), dtype=np.uint8), codes[:14]),
    }
    metas = {p: rng.normal(size=(len(parts[p][1]), DIM)).astype(np.float32) for p in parts}
    cfg = TrainConfig(
        weights=None, metadata=True, input_size=32, epochs=2, batch_size=16,
        freeze_stages=3, name="frozen", verbose=0, resaved_files=0.5,
    )  # fmt: skip
    layer = spec_for(cfg.architecture).stage_ends[3]
    keras.utils.set_random_seed(cfg.seed)  # as fit_model does: the same starting weights
    start = make_efficientnet_lite(32, weights=None, metadata_dim=DIM)
    resaved = 255 - parts["train"][0]  # --resaved-files: views drawn from the copies too
    model, info = fit_model(cfg, parts, tmp_path, metas=metas, resaved=resaved)
    assert info["epochs_run"] == 2 and (tmp_path / OPTIMIZER_FILE).is_file()

    def frozen_weights(m):
        return split_at(m, layer)[0].get_weights()

    for before, after in zip(frozen_weights(start), frozen_weights(model), strict=True):
        np.testing.assert_array_equal(before, after)  # BatchNorm statistics included
    top = [m.get_layer("top_conv").get_weights()[0] for m in (start, model)]
    assert not np.allclose(*top)

    again, _ = fit_model(replace(cfg, epochs=3), parts, tmp_path, resume=True, metas=metas)
    assert json.loads((tmp_path / STATE_FILE).read_text())["epochs_done"] == 3
    with np.load(tmp_path / OPTIMIZER_FILE) as saved:  # the optimizer went on counting
        assert int(saved["arr_0"]) == 3 * 3  # 3 epochs of ceil(42 / 16) steps
    for before, after in zip(frozen_weights(start), frozen_weights(again), strict=True):
        np.testing.assert_array_equal(before, after)
    history = (tmp_path / "history.csv").read_text().splitlines()
    assert len(history) == 4 and "val_balanced_accuracy" in history[0]

    def no_caching(*args, **kwargs):
        raise AssertionError("a finished run cached its views again")

    monkeypatch.setattr(frozen, "cache_views", no_caching)
    done, info = fit_model(replace(cfg, epochs=3), parts, tmp_path, resume=True, metas=metas)
    assert info["epochs_run"] == 3  # finished: straight to the fitted weights
    for a, b in zip(done.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()

    teacher = make_efficientnet_lite(32, weights=None, metadata_dim=DIM)  # not cut: savable
    teacher.save(tmp_path / "teacher.keras")  # distilled: the same run learns from a teacher
    taught = replace(cfg, teachers=str(tmp_path / "teacher.keras"), epochs=1).validate()
    taught = replace(taught, ema_half_life=1.0).validate()  # with a weight average
    (tmp_path / "taught").mkdir()
    student, info = fit_model(taught, parts, tmp_path / "taught", metas=metas)
    assert info["epochs_run"] == 1 and not np.allclose(
        student.get_layer("top_conv").get_weights()[0], top[0]
    )
    average = read_ema(tmp_path / "taught")  # the whole network's weights, in its order
    assert [a.shape for a in average] == [w.shape for w in student.get_weights()]
    probe = keras.models.clone_model(student)
    probe.set_weights(average)
    for before, after in zip(frozen_weights(start), frozen_weights(probe), strict=True):
        np.testing.assert_allclose(before, after, rtol=1e-6)  # the frozen part: unchanged
    top_avg = probe.get_layer("top_conv").get_weights()[0]
    top_end = student.get_layer("top_conv").get_weights()[0]
    assert not np.allclose(top_avg, top_end) and not np.allclose(top_avg, top[0])

    seen = {}

    def spy(bottom, make_stream, *args):
        seen["streams"] = make_stream, args[-1]
        return real(bottom, make_stream, *args)

    real = frozen.cache_views
    monkeypatch.setattr(frozen, "cache_views", spy)
    clean = replace(taught, clean_teacher=True, ema_half_life=0.0).validate()
    (tmp_path / "clean").mkdir()
    fit_model(clean, parts, tmp_path / "clean", metas=metas, resaved=resaved)
    student_views, teacher_views = (
        next(frozen._one_epoch(make(0), 1))[0] for make in seen["streams"]
    )
    changed = np.abs(student_views["image"] - teacher_views["image"]).mean(axis=(1, 2, 3)) > 1
    assert 0 < changed.mean() < 1  # the re-saved copies (half) only the network saw
    np.testing.assert_array_equal(student_views["metadata"], teacher_views["metadata"])


def test_distilled_targets_mix_the_label_with_the_teachers_at_the_training_prior():
    from skin_model.train.frozen import distilled_targets

    labels = np.eye(3, dtype=np.float32)[[0, 2]]
    prior = np.array([0.6, 0.3, 0.1])
    sure = distilled_targets(labels, labels, prior, 0.5)  # a teacher that agrees, sure
    np.testing.assert_allclose(sure, labels, atol=1e-6)
    blank = distilled_targets(labels, np.full((2, 3), 1 / 3), prior, 1.0)  # a balanced shrug
    np.testing.assert_allclose(blank, np.tile(prior, (2, 1)), atol=1e-6)  # = the prior
    half = distilled_targets(labels, np.full((2, 3), 1 / 3), prior, 0.25)
    np.testing.assert_allclose(half.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(half[0], 0.75 * labels[0] + 0.25 * prior, atol=1e-6)


def test_teachers_need_frozen_stages_and_an_existing_model(tmp_path):
    with pytest.raises(ConfigError, match="--freeze-stages"):
        TrainConfig(teachers=str(tmp_path)).validate()
    with pytest.raises(ConfigError, match="no model at"):
        TrainConfig(freeze_stages=3, teachers=str(tmp_path / "gone")).validate()
    with pytest.raises(ConfigError, match="distill-weight"):
        TrainConfig(freeze_stages=3, teachers=str(tmp_path), distill_weight=0).validate()
    per_fold = TrainConfig(freeze_stages=3, teachers=str(tmp_path / "cv" / "fold{fold}")).validate()
    (tmp_path / "cv" / "fold1").mkdir(parents=True)
    assert per_fold.for_fold(1).teachers == str(tmp_path / "cv" / "fold1")  # never saw fold 1
    with pytest.raises(ConfigError, match="no model at"):
        per_fold.for_fold(2)
    ok = TrainConfig(freeze_stages=3, teachers=f"{tmp_path}, {tmp_path}").validate()
    assert ok.teacher_paths() == [str(tmp_path)] * 2
    from skin_model.reports.tables import recipe_text

    assert "distilled from 2 teacher(s), weight 0.5" in recipe_text(vars(ok))


@pytest.mark.model
def test_the_teachers_see_the_cached_views_and_set_the_targets(tmp_path):
    """A teacher at another input size sees the same augmented view as the frozen part."""
    import keras

    from skin_model.train.frozen import (
        cache_views,
        cached_batches,
        distilled_targets,
        load_teachers,
    )

    rng = np.random.default_rng(3)
    batches = [
        (rng.uniform(0, 255, (4, 16, 16, 3)).astype(np.float32), np.eye(3)[[0, 1, 2, 0]])
        for _ in range(2)
    ]
    inp = keras.Input((16, 16, 3))
    bottom = keras.Model(inp, keras.layers.AveragePooling2D(4)(inp))
    t_in = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(t_in))
    teacher = keras.Model(t_in, keras.layers.Dense(3, activation="softmax")(pooled))
    teacher.save(tmp_path / "teacher.keras")
    (loaded,) = load_teachers([str(tmp_path / "teacher.keras")])
    cache = cache_views(bottom, lambda v: batches, 8, 4, 2, [loaded])
    assert cache.teacher.shape == (2, 8, 3)
    x0 = keras.ops.image.resize(batches[0][0], (8, 8), antialias=True)
    np.testing.assert_allclose(cache.teacher[0, :4], teacher.predict(x0, verbose=0), atol=1e-4)
    prior = np.array([0.5, 0.25, 0.25])
    stream = cached_batches(cache, 8, seed=0, distill=(prior, 0.5))
    _, y = stream[0]
    idx = np.sort(stream.order)
    expected = distilled_targets(cache.labels[0, idx], cache.teacher[0, idx], prior, 0.5)
    np.testing.assert_allclose(y, expected, atol=1e-6)
    assert (y.max(axis=1) < 1).all() and (y.max(axis=1) >= 0.5).all()  # label and teacher


@pytest.mark.model
def test_each_views_streams_are_released_before_the_next_view_is_drawn():
    """A view's training stream and its teachers' clean twin hold copies of the training
    images; both are gone before the next view's are made, so a cache never holds more
    than one view's (a clean-teacher run was killed for memory in its fourth view)."""
    import gc
    import weakref

    import keras

    from skin_model.train.frozen import cache_views

    class Stream:
        def __init__(self, batches):
            self.batches = batches

        def __getitem__(self, i):
            return self.batches[i]

    rng = np.random.default_rng(4)
    batches = [(rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32), np.eye(3)[[0, 1, 2, 0]])]
    inp = keras.Input((8, 8, 3))
    bottom = keras.Model(inp, keras.layers.AveragePooling2D(4)(inp))
    teacher = keras.Model(
        inp, keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    )
    made: list = []

    def make(v):
        gc.collect()
        alive = [r() is not None for view, r in made if view < v]
        assert not any(alive), f"view {v}: {sum(alive)} earlier view's stream(s) still held"
        stream = Stream(batches)
        made.append((v, weakref.ref(stream)))
        return stream

    cache = cache_views(bottom, make, 4, 4, 3, [teacher], make_teacher_stream=make)
    assert cache.features.shape[0] == 3 and len(made) == 6


def test_mixup_blends_features_targets_and_context_with_one_weight_per_example():
    from skin_model.train.frozen import mix

    rng = np.random.default_rng(0)
    x = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1) * np.ones((8, 2, 2, 3), np.float32)
    y = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0, 1, 2, 3]]
    meta = np.arange(8, dtype=np.float32)[:, None] * np.ones((8, 5), np.float32)
    mx, my, mm = mix([x, y, meta], 0.4, np.random.default_rng(1))
    lam = np.random.default_rng(1).beta(0.4, 0.4, 8)
    partner = np.random.default_rng(1)
    partner.beta(0.4, 0.4, 8)
    partner = partner.permutation(8)
    expected = lam * np.arange(8) + (1 - lam) * partner
    np.testing.assert_allclose(mx[:, 0, 0, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(mm[:, 0], expected, rtol=1e-5)  # the same mix of the context
    np.testing.assert_allclose(my.sum(axis=1), 1.0, atol=1e-6)  # targets stay distributions
    own = y.argmax(axis=1)
    np.testing.assert_allclose(my[np.arange(8), own] >= lam - 1e-6, True)
    assert not np.allclose(mx, x) and mix([None, y], 0.4, rng)[0] is None


@pytest.mark.model
@pytest.mark.parametrize(
    ("option", "alpha", "recipe"),
    [("mixup", 0.4, "mixup of cached views, alpha 0.4"), ("cutmix", 1.0, "CutMix of cached views")],
)
def test_mixed_cached_batches_are_the_same_when_a_run_resumes(option, alpha, recipe):
    from skin_model.reports.tables import recipe_text
    from skin_model.train.frozen import ViewCache, cached_batches

    rng = np.random.default_rng(2)
    cache = ViewCache(
        features=rng.normal(size=(2, 10, 4, 4, 3)).astype(np.float16),
        labels=np.tile(np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4] * 2], (2, 1, 1)),
    )
    plain = cached_batches(cache, 4, seed=0, epoch=1)
    mixed = cached_batches(cache, 4, seed=0, epoch=1, **{option: alpha})
    resumed = cached_batches(cache, 4, seed=0, epoch=1, **{option: alpha})
    (x0, y0), (x1, y1), (x2, y2) = plain[1], mixed[1], resumed[1]
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(x0, x1) and (y1.max(axis=1) < 1).any()
    assert (y0.max(axis=1) == 1).all()  # without mixing: the labels as they are
    with pytest.raises(ConfigError, match=f"--{option} needs --freeze-stages"):
        TrainConfig(**{option: alpha}).validate()
    with pytest.raises(ConfigError, match="choose one"):
        TrainConfig(freeze_stages=3, cutmix=1.0, mixup=0.2).validate()
    cfg = TrainConfig(freeze_stages=3, **{option: alpha}).validate()
    assert recipe in recipe_text(vars(cfg))


def test_cutmix_pastes_a_partners_box_and_mixes_targets_by_the_area_taken():
    from skin_model.train.frozen import cut, cut_boxes

    n, h, w = 16, 6, 8
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1) * np.ones((n, h, w, 3), np.float32)
    y = np.eye(4, dtype=np.float32)[np.arange(n) % 4]
    meta = np.arange(n, dtype=np.float32)[:, None] * np.ones((n, 5), np.float32)
    cx, cy, cm = cut([x, y, meta], 1.0, np.random.default_rng(3))
    ref = np.random.default_rng(3)
    partner = ref.permutation(n)
    boxes = cut_boxes((h, w), 1.0, n, ref)
    assert (boxes[:, [0, 2]] >= 0).all() and (boxes[:, 1] <= h).all() and (boxes[:, 3] <= w).all()
    for i, (top, bottom, left, right) in enumerate(boxes):
        inside = np.zeros((h, w), bool)
        inside[top:bottom, left:right] = True
        np.testing.assert_array_equal(cx[i, inside, 0], partner[i])  # the partner's box
        np.testing.assert_array_equal(cx[i, ~inside, 0], i)  # the rest its own
        taken = inside.mean()
        np.testing.assert_allclose(cm[i, 0], (1 - taken) * i + taken * partner[i], rtol=1e-5)
        expected = (1 - taken) * y[i] + taken * y[partner[i]]
        np.testing.assert_allclose(cy[i], expected, atol=1e-6)
    np.testing.assert_allclose(cy.sum(axis=1), 1.0, atol=1e-6)
    assert 0 < (cx != x).mean() < 1 and cut([x, y, None], 1.0, ref)[2] is None
    np.testing.assert_array_equal(x[:, 0, 0, 0], np.arange(n))  # the input is not changed


def test_clean_teachers_see_the_clean_twin_of_each_cached_view(tmp_path):
    """With a teacher stream the frozen part caches the changed view and the teachers
    score the clean one; --clean-teacher needs teachers on cached views.
    """
    import keras

    from skin_model.reports.tables import recipe_text
    from skin_model.train.frozen import cache_views

    rng = np.random.default_rng(4)
    clean = [(rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32), np.eye(3)[[0, 1, 2, 0]])]
    changed = [(x * 0.5, y) for x, y in clean]
    inp = keras.Input((8, 8, 3))
    bottom = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(inp))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inp))
    teacher = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(pooled))
    cache = cache_views(bottom, lambda v: changed, 4, 4, 1, [teacher], lambda v: clean)
    np.testing.assert_allclose(cache.features[0], changed[0][0].mean(axis=(1, 2)), rtol=1e-2)
    np.testing.assert_allclose(cache.teacher[0], teacher.predict(clean[0][0], verbose=0), atol=1e-5)
    assert not np.allclose(cache.teacher[0], teacher.predict(changed[0][0], verbose=0), atol=1e-3)
    with pytest.raises(ConfigError, match="--clean-teacher needs"):
        TrainConfig(clean_teacher=True, freeze_stages=3).validate()
    ok = TrainConfig(clean_teacher=True, freeze_stages=3, teachers=str(tmp_path)).validate()
    assert "teachers shown the views without the capture changes" in recipe_text(vars(ok))
