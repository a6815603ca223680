"""BatchNorm folding: the folded network computes what the saved one does."""

import keras
import numpy as np
import pytest

from skin_model.model.folding import fold_batch_norm, foldable_pairs


def _bn(x, name: str, rng):
    """A BatchNorm with statistics far from the identity, so folding it is visible."""
    layer = keras.layers.BatchNormalization(name=name)
    y = layer(x)
    c = layer.moving_mean.shape[-1]
    layer.set_weights(
        [rng.uniform(0.5, 2, c), rng.normal(0, 1, c), rng.normal(0, 1, c), rng.uniform(0.2, 3, c)]
    )
    return y


def _tiny(rng) -> keras.Model:
    """Every case: conv with and without bias, depthwise with a multiplier, a conv whose
    output is read twice, a conv with an activation and a BatchNorm after a Dense."""
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="a")(inputs)
    x = keras.layers.ReLU(6.0, name="a_relu")(_bn(a, "a_bn", rng))
    b = keras.layers.Conv2D(8, 1, name="b")(x)  # own bias
    x = _bn(b, "b_bn", rng)
    d = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, use_bias=False)
    x = _bn(d(x), "d_bn", rng)
    shared = keras.layers.Conv2D(4, 1, name="shared")(x)  # read by BN and Add: kept
    x = keras.layers.Add()([_bn(shared, "shared_bn", rng), shared])
    act = keras.layers.Conv2D(4, 1, activation="relu", name="act")(x)  # activation: kept
    x = keras.layers.GlobalAveragePooling2D()(_bn(act, "act_bn", rng))
    x = _bn(keras.layers.Dense(5, name="dense")(x), "dense_bn", rng)  # not a conv: kept
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="out")(x))
    for w in model.weights:  # kernels away from their initial values
        if "kernel" in w.path:
            w.assign(rng.normal(0, 0.5, w.shape))
    return model


def test_folding_keeps_the_outputs_and_the_layer_names():
    rng = np.random.default_rng(0)
    model = _tiny(rng)
    pairs = foldable_pairs(model)
    assert set(pairs) == {"a_bn", "b_bn", "d_bn"}
    folded = fold_batch_norm(model)
    x = rng.uniform(-1, 1, (4, 12, 12, 3)).astype("float32")
    before = model(x, training=False)
    after = folded(x, training=False)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert [layer.name for layer in folded.layers] == [layer.name for layer in model.layers]
    kinds = {layer.name: type(layer).__name__ for layer in folded.layers}
    assert [kinds[n] for n in ("a_bn", "b_bn", "d_bn")] == ["Identity"] * 3
    assert [kinds[n] for n in ("shared_bn", "act_bn", "dense_bn")] == ["BatchNormalization"] * 3
    # the saved model is untouched: its BatchNorms still train
    assert type(model.get_layer("a_bn")).__name__ == "BatchNormalization"


def test_a_model_with_nothing_to_fold_is_returned_as_it_is():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert fold_batch_norm(model) is model


def test_the_loaded_bundle_runs_folded_and_agrees_with_its_saved_network(trained_bundle):
    from skin_model.runtime.inference import batch_inputs

    saved = keras.models.load_model(trained_bundle.model_dir / "model.keras", compile=False)
    names = {type(layer).__name__ for layer in trained_bundle.model.layers}
    assert "BatchNormalization" in {type(layer).__name__ for layer in saved.layers}
    assert foldable_pairs(saved) and "Identity" in names
    size = trained_bundle.input_size
    x = batch_inputs(saved, np.random.default_rng(1).uniform(0, 255, (3, size, size, 3)))
    np.testing.assert_allclose(
        trained_bundle.model(x, training=False), saved(x, training=False), atol=1e-5
    )


@pytest.mark.parametrize("scale,center", [(False, True), (True, False)])
def test_a_batchnorm_without_scale_or_offset_folds_too(scale, center):
    rng = np.random.default_rng(2)
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(3, 3, use_bias=False)(inputs)
    bn = keras.layers.BatchNormalization(scale=scale, center=center)
    model = keras.Model(inputs, bn(conv))
    bn.moving_mean.assign(rng.normal(0, 1, 3))
    bn.moving_variance.assign(rng.uniform(0.5, 2, 3))
    x = rng.uniform(-1, 1, (2, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(fold_batch_norm(model)(x), model(x, training=False), atol=1e-5)
