"""The architecture registry: one spec per backbone that every module asks, settings
checked before any image is decoded, and a new backbone as one entry plus its builder."""

import keras
import numpy as np
import pytest
from keras import layers

from skin_model.model.architectures import REGISTRY, ArchitectureSpec, spec_for
from skin_model.model.settings import ConfigError, TrainConfig


def test_every_spec_builds_a_flat_model_with_its_named_layers():
    for name, spec in REGISTRY.items():
        if name in ("resnet50", "efficientnet_lite2", "efficientnet_lite1"):
            continue  # large; their layer names follow the same builders
        model = spec.build(64)
        names = {layer.name for layer in model.layers}
        assert model.layers[-1].name == "predictions" and "features" in names, name
        assert set(spec.cam_layers) <= names and set(spec.ood_layers) <= names, name
        assert not any(isinstance(layer, keras.Model) for layer in model.layers), name


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"architecture": "skinnet"}, "cannot take the patient context; add --metadata false"),
        ({"architecture": "vgg"}, "unknown architecture 'vgg'"),
        ({"input_size": 16}, "--input-size must be at least 32"),
        ({"weights": "/nowhere/w.npz"}, "not a file nor a source"),
        ({"architecture": "skinnet", "metadata": False, "weights": "nsfwjs"}, "takes no --weights"),
        ({"white_balance": 0.7}, "--white-balance"),
        ({"loss": "focal"}, "unknown loss"),
        ({"melanoma_weight": 0.0}, "--melanoma-weight must be > 0"),
        ({"colour_constancy_brightness": 0.6}, "--colour-constancy-brightness .* needs"),
        ({"colour_constancy": 6, "colour_constancy_brightness": 1.5}, "must be in \\[0, 1\\]"),
    ],
)
def test_bad_settings_fail_in_one_line_before_any_image_is_read(settings, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig(**settings).validate()
    assert "\n" not in str(err.value)


def test_train_py_reports_bad_settings_without_reading_data(tmp_path, capsys):
    import train

    args = ["--data-dir", str(tmp_path / "absent"), "--architecture", "skinnet"]
    assert train.main([*args, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "cannot take the patient context" in err and "not found" not in err


def test_train_py_will_not_overwrite_the_shipped_model(tmp_path, capsys):
    import train
    from skin_model import DEFAULT_MODEL_DIR

    assert train.main(["--data-dir", str(tmp_path), "--out", str(DEFAULT_MODEL_DIR)]) == 2
    assert "--replace-default" in capsys.readouterr().err


def test_weight_sources_resolve_by_name_and_name_their_provenance(monkeypatch, tmp_path):
    spec = spec_for("efficientnet_lite0")
    assert spec.provenance("default")["wheel_sha256"].startswith("f2bc3dd0")
    assert spec.provenance("none") is None and spec.resolve_weights("none") is None
    assert spec.resolve_weights(str(tmp_path / "own.npz")) == str(tmp_path / "own.npz")
    assert spec_for("mobilenetv2").provenance("nsfwjs")["source"].startswith("npm package")


def test_a_new_backbone_is_one_spec_entry_and_its_builder(monkeypatch):
    """Everything downstream (builder options, context check, optimizer head, Grad-CAM
    candidates, detector layers) reads the spec: registering one is all it takes."""
    from skin_model.model.config import ModelConfig
    from skin_model.runtime.inference import ModelBundle
    from skin_model.train.finalise import cam_candidates
    from skin_model.train.training import compile_model

    def make_tiny(input_size: int, width: float = 1.0):
        inputs = keras.Input((input_size, input_size, 3), name="image")
        x = layers.Conv2D(max(4, int(8 * width)), 3, name="conv", activation="relu")(inputs)
        x = layers.GlobalAveragePooling2D(name="features")(x)
        out = layers.Dense(7, activation="softmax", name="predictions")(x)
        return keras.Model(inputs, out, name="tiny")

    spec = ArchitectureSpec(
        name="tiny",
        builder=make_tiny,
        summary="a test backbone",
        options=("width",),
        cam_layers=("conv",),
        ood_layers=("conv",),
    )
    monkeypatch.setitem(REGISTRY, "tiny", spec)
    cfg = TrainConfig(architecture="tiny", input_size=32, metadata=False, width=2.0)
    model = compile_model(cfg.validate(), np.full(7, 1 / 7), steps=1)
    assert model.get_layer("conv").filters == 16  # the option reached the builder
    bundle = ModelBundle(model, ModelConfig("tiny", 32, ood_layers=["conv"]), None)
    assert cam_candidates(bundle) == [("Grad-CAM", "conv"), ("LayerCAM", "conv")]
    with pytest.raises(ConfigError, match="cannot take the patient context"):
        TrainConfig(architecture="tiny").validate()


def test_shades_of_gray_undoes_a_colour_cast_and_survives_saving(tmp_path):
    from skin_model.model.networks import ShadesOfGray

    rng = np.random.default_rng(0)
    image = rng.uniform(60, 200, (1, 32, 32, 3)).astype(np.float32)
    cast = np.clip(image * np.array([1.15, 1.0, 0.85], np.float32), 0, 255)
    layer = ShadesOfGray(6.0)
    a, b = np.asarray(layer(image)), np.asarray(layer(cast))
    assert np.abs(a - b).mean() < 0.2 * np.abs(image - cast).mean()
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, ShadesOfGray(6.0, name="colour_constancy")(inputs))
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again(image), model(image), atol=1e-5)


def test_a_fixed_brightness_makes_a_darker_file_the_same_input():
    from skin_model.model.networks import ShadesOfGray, illuminant_level

    rng = np.random.default_rng(1)
    image = rng.uniform(40, 200, (1, 32, 32, 3)).round().astype(np.float32)
    darker = (image * 0.85).round()  # the robustness check's darker exposure, saved as 8 bit
    own = ShadesOfGray(6.0)
    fixed = ShadesOfGray(6.0, brightness=float(illuminant_level(image, 6.0)[0]))
    np.testing.assert_allclose(fixed(image), own(image), atol=1e-3)  # its own level: as before
    assert np.abs(np.asarray(fixed(darker)) - np.asarray(fixed(image))).max() < 1.0
    assert np.abs(np.asarray(own(darker)) - np.asarray(own(image))).mean() > 10


def test_with_brightness_changes_the_layer_only(tmp_path):
    from skin_model.model.networks import (
        COLOUR_CONSTANCY,
        make_efficientnet_lite,
        with_brightness,
    )

    net = make_efficientnet_lite(32, metadata_dim=0, colour_constancy=6)
    image = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    changed = with_brightness(net, 0.5)
    assert changed.get_layer(COLOUR_CONSTANCY).brightness == 0.5
    assert with_brightness(changed, 0.5) is changed
    for a, b in zip(changed.get_weights(), net.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    def seen(model):  # what the layers after it see (the head starts at zero)
        layer = model.get_layer(COLOUR_CONSTANCY)
        return np.asarray(keras.Model(model.inputs, layer.output)(image))

    assert np.abs(seen(changed) - seen(net)).max() > 1.0
    changed.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras", compile=False)
    assert again.get_layer(COLOUR_CONSTANCY).brightness == 0.5
    plain = make_efficientnet_lite(32, metadata_dim=0)
    assert with_brightness(plain, 0.0) is plain
    with pytest.raises(ValueError, match="no Shades-of-Gray layer"):
        with_brightness(plain, 0.5)


def test_stochastic_depth_drops_residual_branches_in_training_only():
    from skin_model.model.networks import make_efficientnet_lite
    from skin_model.model.settings import ConfigError, TrainConfig

    plain = make_efficientnet_lite(32, metadata_dim=0)
    deep = make_efficientnet_lite(32, metadata_dim=0, stochastic_depth=0.5)
    deep.set_weights(plain.get_weights())  # Dropout layers hold no weights: the same list
    assert "block1_drop" not in [x.name for x in plain.layers]
    assert deep.get_layer("block14_drop").rate == pytest.approx(0.5 * 14 / 16)
    image = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    features = [keras.Model(m.inputs, m.get_layer("top_relu").output) for m in (plain, deep)]
    np.testing.assert_allclose(features[1]([image]), features[0]([image]), rtol=1e-5, atol=1e-5)
    keras.utils.set_random_seed(0)
    trained = np.asarray(features[1]([image], training=True))
    assert np.abs(trained - np.asarray(features[0]([image], training=True))).max() > 1e-3
    with pytest.raises(ConfigError, match="stochastic-depth"):
        TrainConfig(stochastic_depth=1.0).validate()
    with pytest.raises(ConfigError, match="EfficientNet-Lite"):
        TrainConfig(architecture="mobilenetv2", stochastic_depth=0.2).validate()
