"""Model builders: flat Functional models ending in Dense(softmax), no downloads."""

import keras
import numpy as np
import pytest

from skin_model.model.architectures import build_model
from skin_model.model.networks import BackboneScaledAdamW


@pytest.mark.parametrize(("arch", "size"), [("skinnet", 64), ("custom_cnn", 64), ("resnet50", 64)])
def test_models_are_flat_and_end_in_dense_softmax(arch, size):
    model = build_model(arch, size, **({"weights": None} if arch == "resnet50" else {}))
    out = model(np.zeros((2, size, size, 3), dtype=np.float32))
    assert out.shape == (2, 7)
    assert np.allclose(np.asarray(out).sum(axis=1), 1, atol=1e-5)
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.name == "predictions"
    assert last.activation is keras.activations.softmax
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.get_layer("features") is not None


def test_resnet50_missing_local_weights_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_model("resnet50", 64, weights=tmp_path / "absent.h5")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg", 64)


def test_skinnet_width_multiplier_scales_channels():
    narrow, wide = build_model("skinnet", 32), build_model("skinnet", 32, width=1.5)
    assert wide.get_layer("last_conv").output.shape[-1] == 768
    assert narrow.get_layer("last_conv").output.shape[-1] == 512


def _tiny_two_layer_model() -> keras.Model:
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name="body")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(hidden)
    return keras.Model(inputs, outputs)


def _kernel_changes(**optimizer_kwargs) -> tuple[float, float]:
    """Largest change of the backbone and head kernels over 8 steps."""
    keras.utils.set_random_seed(0)
    model = _tiny_two_layer_model()
    before = [model.get_layer(n).kernel.numpy().copy() for n in ("body", "predictions")]
    model.compile(
        optimizer=BackboneScaledAdamW(learning_rate=1e-2, weight_decay=0.0, **optimizer_kwargs),
        loss="categorical_crossentropy",
    )
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = [model.get_layer(n).kernel.numpy() for n in ("body", "predictions")]
    return tuple(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))


def test_head_warmup_freezes_the_backbone_only():
    backbone, head = _kernel_changes(head_warmup_steps=100)
    assert backbone == 0.0 and head > 1e-3


def test_backbone_learning_rate_scale_slows_the_backbone_only():
    full_backbone, full_head = _kernel_changes()
    slow_backbone, slow_head = _kernel_changes(backbone_lr_scale=0.1)
    assert slow_backbone < 0.3 * full_backbone
    assert slow_head > 0.5 * full_head


def test_backbone_scaled_optimizer_survives_a_checkpoint(tmp_path):
    model = _tiny_two_layer_model()
    model.compile(
        optimizer=BackboneScaledAdamW(backbone_lr_scale=0.25, head_warmup_steps=3),
        loss="categorical_crossentropy",
    )
    model.fit(np.zeros((8, 4)), keras.utils.to_categorical(np.arange(8) % 2, 2), verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(loaded.optimizer, BackboneScaledAdamW)
    assert (loaded.optimizer.backbone_lr_scale, loaded.optimizer.head_warmup_steps) == (0.25, 3)
    assert int(loaded.optimizer.iterations) == 1


def test_training_settings_choose_the_optimizer():
    from skin_model.model.settings import TrainConfig
    from skin_model.train.training import make_optimizer

    assert type(make_optimizer(TrainConfig(), 10)) is keras.optimizers.AdamW
    slow = make_optimizer(TrainConfig(backbone_lr_scale=0.3, head_warmup_epochs=2), 10)
    assert isinstance(slow, BackboneScaledAdamW)
    assert (slow.backbone_lr_scale, slow.head_warmup_steps) == (0.3, 20)


def test_a_run_recorded_before_views_existed_chose_them_on_validation(tmp_path):
    import json

    from skin_model.model.settings import TrainConfig, config_dict, read_run_record

    old = config_dict(TrainConfig())
    del old["views"]  # written before the setting existed
    (tmp_path / "run_config.json").write_text(json.dumps(old))
    assert read_run_record(tmp_path).config.views == 0
    (tmp_path / "run_config.json").write_text(json.dumps(config_dict(TrainConfig(views=4))))
    assert read_run_record(tmp_path).config.views == 4
    assert TrainConfig().views == 0  # the shipped recipe: 8 views cost the speed floor


def test_views_are_none_chosen_or_a_leading_run_of_the_dihedral_views():
    from skin_model.model.settings import ConfigError, TrainConfig

    assert TrainConfig(views=2).validate().views == 2  # the image and its half turn
    with pytest.raises(ConfigError, match="--views must be 0"):
        TrainConfig(views=3).validate()


@pytest.mark.parametrize("loss", ["logit_adjusted", "crossentropy"])
def test_label_smoothing_reaches_the_training_loss(loss):
    from skin_model.model.settings import TrainConfig
    from skin_model.train.training import make_loss

    prior = np.array([0.1, 0.2, 0.7])
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], np.float32)
    values = [
        float(make_loss(TrainConfig(loss=loss, label_smoothing=s), prior)(y, p)) for s in (0, 0.3)
    ]
    logits = np.log(p) + (np.log(prior) if loss == "logit_adjusted" else 0.0)
    log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    for smoothing, value in zip((0, 0.3), values, strict=True):
        target = y * (1 - smoothing) + smoothing / 3
        np.testing.assert_allclose(value, -(target * log_q).sum(axis=1).mean(), rtol=1e-5)
    restored = type(make_loss(TrainConfig(loss=loss, label_smoothing=0.3), prior))
    config = make_loss(TrainConfig(loss=loss, label_smoothing=0.3), prior).get_config()
    assert restored.from_config(config).get_config()["label_smoothing"] == 0.3
