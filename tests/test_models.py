"""Model builders: flat Functional models ending in Dense(softmax), no downloads."""

import keras
import numpy as np
import pytest

from skin_model.models import build_model


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
