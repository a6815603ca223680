"""Heatmap shape and range, the compiled maps against tf-keras-vis, the model's chosen
method and layer, overlays and the box-energy ratio, on tiny named models."""

import keras
import numpy as np
import pytest
from keras import layers

from skin_model.runtime.explain import (
    COMPILED,
    METHODS,
    box_area_share,
    box_energy_ratio,
    heatmap,
    make_explainer,
    overlay,
)


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(7, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("method", METHODS)
def test_heatmap_has_image_shape_and_unit_range(tiny_model, method):
    image = np.random.default_rng(0).integers(0, 255, (45, 60, 3), dtype=np.uint8)
    cam = heatmap(make_explainer(tiny_model, method), tiny_model, image, 2, 32)
    assert cam.shape == (45, 60) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1


def test_a_portrait_images_heatmap_lies_on_it_as_shown(tiny_model):
    """A portrait file's input is turned to landscape; its map is turned back onto it."""
    image = np.random.default_rng(1).integers(0, 255, (45, 60, 3), dtype=np.uint8)
    portrait = np.rot90(image).copy()
    cams = [heatmap(make_explainer(tiny_model), tiny_model, im, 2, 32) for im in (image, portrait)]
    assert cams[1].shape == (60, 45)
    np.testing.assert_allclose(cams[1], np.rot90(cams[0]), atol=0.05)
    assert not np.allclose(cams[0], np.rot90(cams[0], 2), atol=0.05)  # the map has a direction


def test_explainer_does_not_modify_model(tiny_model):
    make_explainer(tiny_model)
    assert tiny_model.layers[-1].activation is keras.activations.softmax


def test_overlay_blends():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    cam = np.ones((10, 10), dtype=np.float32)
    assert overlay(image, cam, 0.0).max() == 0
    assert overlay(image, cam, 1.0).shape == (10, 10, 3)
    assert overlay(image, cam, 1.0)[0, 0, 0] > 100  # jet at 1.0 is dark red
    faint = overlay(np.full((2, 1, 3), 200, np.uint8), np.array([[0.0], [1.0]]), 0.6)
    assert (faint[0] == 200).all()  # no attention: the image is left as it is
    assert (faint[1] != 200).any()


def test_box_energy_ratio_by_hand():
    cam = np.zeros((10, 10))
    cam[0:5, 0:5] = 1.0  # all energy in a box covering a quarter of the image
    assert box_energy_ratio(cam, (0, 4, 0, 4)) == pytest.approx(4.0)
    assert box_energy_ratio(np.ones((10, 10)), (0, 4, 0, 4)) == pytest.approx(1.0)
    assert np.isnan(box_energy_ratio(np.zeros((10, 10)), (0, 4, 0, 4)))


@pytest.fixture(scope="module")
def fusion_bundle():
    """A two-input (image + metadata) MobileNetV2 at 64 px, random weights."""
    from skin_model.data.metadata import DIM
    from skin_model.model.config import ModelConfig
    from skin_model.model.networks import make_mobilenetv2
    from skin_model.runtime.inference import ModelBundle

    keras.utils.set_random_seed(1)
    model = make_mobilenetv2(64, metadata_dim=DIM)
    return ModelBundle(model=model, config=ModelConfig("mobilenetv2", 64), model_dir=None)


@pytest.fixture(scope="module")
def context_bundle():
    """A two-input (image + metadata) plain CNN at 64 px whose random maps are not flat
    (a random MobileNetV2's activations vanish to ~1e-11, so its maps normalise to zero).
    """
    from skin_model.data.metadata import DIM
    from skin_model.model.config import ModelConfig
    from skin_model.runtime.inference import ModelBundle

    keras.utils.set_random_seed(2)
    image = keras.Input((64, 64, 3), name="image")
    meta = keras.Input((DIM,), name="metadata")
    x = layers.Rescaling(1 / 127.5, offset=-1)(image)
    for name, width in (("conv_a", 8), ("conv_b", 16), ("last_conv", 16)):
        x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=name)(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    x = layers.Concatenate()([x, layers.Dense(4, activation="relu", name="meta_dense")(meta)])
    outputs = layers.Dense(7, activation="softmax", name="predictions")(x)
    model = keras.Model([image, meta], outputs)
    return ModelBundle(model=model, config=ModelConfig("skinnet", 64), model_dir=None)


@pytest.mark.parametrize("method", ["Grad-CAM", "LayerCAM"])
@pytest.mark.parametrize("layer", ["last_conv", "conv_b", "conv_a"])
def test_compiled_map_matches_tf_keras_vis_on_a_two_input_model(context_bundle, layer, method):
    from skin_model.data.metadata import PatientContext, encode
    from skin_model.runtime.explain import explain
    from tests.conftest import lesion_image

    bundle = context_bundle
    meta = encode(PatientContext(63, "male", "back"))
    reference_explainer = make_explainer(bundle.model, method)
    for k, dx in enumerate(("mel", "nv")):
        image = lesion_image(dx, k)
        fast = explain(bundle, image, k, method, metadata=meta, layer=layer)
        reference = heatmap(
            reference_explainer, bundle.model, image, k, 64, layer=layer, metadata=meta
        )
        assert fast.shape == reference.shape == image.shape[:2]
        assert reference.max() > 0.5 and reference.std() > 0.05  # a map, not a flat one
        assert np.allclose(fast, reference, atol=2e-3)
    assert bundle._explainers[("compiled", method, layer)] is not None


def test_layercam_differs_from_gradcam_below_the_last_layer(context_bundle):
    from skin_model.runtime.explain import explain
    from tests.conftest import lesion_image

    image = lesion_image("mel", 0)
    maps = [explain(context_bundle, image, 4, m, layer="conv_b") for m in COMPILED]
    assert np.abs(maps[0] - maps[1]).max() > 0.1


def test_the_model_config_names_the_default_method_and_each_methods_layer(context_bundle):
    import dataclasses

    from skin_model.runtime.explain import bundle_cam_layer, bundle_cam_method, explain
    from skin_model.runtime.inference import ModelBundle
    from tests.conftest import lesion_image

    config = dataclasses.replace(
        context_bundle.config,
        cam_method="LayerCAM",
        cam_layer="conv_b",
        cam_layers={"LayerCAM": "conv_b", "Grad-CAM": "conv_a"},
    )
    bundle = ModelBundle(model=context_bundle.model, config=config, model_dir=None)
    assert bundle_cam_method(bundle) == "LayerCAM"
    assert bundle_cam_layer(bundle) == "conv_b"
    assert bundle_cam_layer(bundle, method="Grad-CAM") == "conv_a"
    assert bundle_cam_layer(bundle, method="Grad-CAM++") == "last_conv"  # not chosen: default
    image = lesion_image("nv", 1)
    shown = explain(bundle, image, 3)
    assert np.array_equal(shown, explain(bundle, image, 3, "LayerCAM", layer="conv_b"))
    assert np.abs(shown - explain(bundle, image, 3, "Grad-CAM")).max() > 0.1
    old = ModelBundle(model=context_bundle.model, config=context_bundle.config, model_dir=None)
    assert (bundle_cam_method(old), bundle_cam_layer(old)) == ("Grad-CAM", "last_conv")


def test_choose_cam_takes_the_best_map_and_each_methods_best_layer(fusion_bundle, monkeypatch):
    import pandas as pd

    from skin_model.train import finalise

    ratios = {
        ("Grad-CAM", "out_relu"): 1.6,
        ("Grad-CAM", "block_13_expand_relu"): 1.3,
        ("LayerCAM", "out_relu"): 1.5,
        ("LayerCAM", "block_13_expand_relu"): 2.6,
    }
    monkeypatch.setattr(
        finalise,
        "cam_ratios",
        lambda bundle, boxes, n, maps: {p: {"mean_ratio": ratios.get(p, 1.0)} for p in maps},
    )
    boxes = pd.DataFrame({"path": ["x"], "top": [0], "bottom": [1], "left": [0], "right": [1]})
    choice = finalise.choose_cam(fusion_bundle, boxes)
    assert (choice["method"], choice["layer"]) == ("LayerCAM", "block_13_expand_relu")
    assert choice["layers"] == {"Grad-CAM": "out_relu", "LayerCAM": "block_13_expand_relu"}
    assert choice["mean_ratio_by_map"]["LayerCAM @ block_13_expand_relu"] == 2.6
    none = finalise.choose_cam(fusion_bundle, None)
    assert (none["method"], none["layer"], none["layers"]) == ("Grad-CAM", "out_relu", {})


def test_compiled_cam_reads_the_named_layer(fusion_bundle):
    from skin_model.data.metadata import MISSING
    from skin_model.runtime.explain import compiled_cam, model_inputs
    from tests.conftest import lesion_image

    x = model_inputs(fusion_bundle.model, lesion_image("mel", 0), 64, MISSING)
    shapes = {
        layer: np.asarray(compiled_cam(fusion_bundle.model, layer)(x, np.int32(4))).shape
        for layer in ("out_relu", "block_13_expand_relu", "block_6_expand_relu")
    }
    assert shapes == {
        "out_relu": (1, 2, 2),
        "block_13_expand_relu": (1, 4, 4),
        "block_6_expand_relu": (1, 8, 8),
    }


def test_box_area_share_is_the_ratio_ceiling():
    assert box_area_share((0, 4, 0, 4), (10, 10, 3)) == pytest.approx(0.25)
    assert box_area_share((0, 9, 0, 19), (10, 20)) == pytest.approx(1.0)


def test_late_fusion_without_feeding_the_network(fusion_bundle):
    """``feed_network: false``: the network sees no context; the stored context model's
    posterior is multiplied in, and only where a context is given."""
    from dataclasses import replace

    from skin_model.data.metadata import MISSING, ContextModel, encode, parse_context
    from skin_model.model.calibration import late_fusion
    from skin_model.model.posthoc import PostHoc
    from skin_model.runtime.inference import network_outputs

    rng = np.random.default_rng(0)
    params = {"coef": rng.normal(size=(7, len(MISSING))).tolist(), "intercept": [0.0] * 7}
    params["classes"] = list(range(7))
    fusion = {"power": 1.0, "feed_network": False, **params}
    bundle = replace(fusion_bundle, posthoc=PostHoc(context_fusion=fusion), _infer=None)
    assert bundle.uses_context and not bundle.feeds_context
    images = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    meta = np.stack([encode(parse_context(70, "female", "face")), MISSING])
    network, _ = network_outputs(bundle, images, 1, metadata=meta)
    fused = bundle.posthoc.fuse(network, meta)
    plain, _ = network_outputs(fusion_bundle, images, 1)
    np.testing.assert_allclose(fused[1], plain[1], atol=1e-6)
    want = late_fusion(plain[:1], ContextModel.from_config(params).predict_proba(meta[:1]), 1.0)
    np.testing.assert_allclose(fused[:1], want, atol=1e-5)


def test_views_averaged_cam_turns_with_the_image():
    from skin_model.runtime.explain import views_cam

    # weighs the top and the right less: no turn or flip leaves it as it is
    ramp = np.outer(np.linspace(0.2, 1.0, 8), np.linspace(1.0, 0.1, 8))

    def fn(x, class_index):  # a stand-in for the compiled Grad-CAM: an (1, 8, 8) map
        x = x[0] if isinstance(x, list) else x
        cells = x[0, :, :, int(class_index)].reshape(8, 4, 8, 4).mean(axis=(1, 3))
        return (cells * ramp)[None]

    image = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    cam = views_cam(fn, image, 1, 8)
    for turned, back in (
        (np.rot90(image, 1, axes=(1, 2)), lambda c: np.rot90(c, -1, axes=(1, 2))),
        (np.rot90(image, 2, axes=(1, 2)), lambda c: np.rot90(c, 2, axes=(1, 2))),
        (image[:, :, ::-1], lambda c: c[:, :, ::-1]),
    ):
        np.testing.assert_allclose(back(views_cam(fn, turned, 1, 8)), cam, rtol=1e-6)
        single = views_cam(fn, turned, 1, 1)
        assert not np.allclose(back(single), fn(image, 1), rtol=1e-3)  # one view turns wrong
    meta = np.zeros((1, 4), np.float32)  # a two-input model's context travels with each view
    np.testing.assert_allclose(views_cam(fn, [image, meta], 1, 8), cam, rtol=1e-6)


def test_the_views_map_of_an_input_of_its_own_aspect_is_the_same_for_its_half_turn_and_flips():
    """A 24x32 input averages its 4 shape-keeping views, each turned back first."""
    from skin_model.runtime.explain import views_cam

    ramp = np.outer(np.linspace(0.2, 1.0, 6), np.linspace(1.0, 0.1, 8))

    def fn(x, class_index):  # a stand-in for the compiled map: an (1, 6, 8) map
        cells = x[0, :, :, int(class_index)].reshape(6, 4, 8, 4).mean(axis=(1, 3))
        return (cells * ramp)[None]

    image = np.random.default_rng(1).uniform(0, 255, (1, 24, 32, 3)).astype(np.float32)
    cam = views_cam(fn, image, 1, 4)
    assert cam.shape == (1, 6, 8)
    for turned, back in (
        (np.rot90(image, 2, axes=(1, 2)), lambda c: np.rot90(c, 2, axes=(1, 2))),
        (image[:, :, ::-1], lambda c: c[:, :, ::-1]),
        (image[:, ::-1], lambda c: c[:, ::-1]),
    ):
        np.testing.assert_allclose(back(views_cam(fn, turned, 1, 4)), cam, rtol=1e-6)
