"""The offline ImageNet weight import: JS-literal parsing, TF.js module decoding,
dequantisation and assignment by name, on a tiny TF.js layers model written here
(no network, no npm)."""

import base64
import json

import keras
import numpy as np
import pytest
from keras import layers

from skin_model.backbones import (
    BackboneError,
    decode_tfjs_modules,
    mobilenetv2_weights_from_tarball,
    parse_js_literal,
)
from skin_model.models import assign_by_name


def js(value) -> str:
    """Serialise like a JS minifier: bare keys, !0/!1, numbers without a leading 0."""
    if isinstance(value, bool):
        return "!0" if value else "!1"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ",".join(js(v) for v in value) + "]"
    return "{" + ",".join(f"{k}:{js(v)}" for k, v in value.items()) + "}"


def module(value: str, var: str = "a") -> str:
    """A browserified module exporting ``value``, as nsfwjs ships them."""
    return (
        '!function(e){"object"==typeof exports?module.exports=e():this.m=e()}(function(){'
        "return function e(a,n,i){return a}({1:[function(e,"
        + var
        + ",n){"
        + var
        + ".exports="
        + value
        + "},{}]},{},[1])(1)});"
    )


def tiny_model():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    return keras.Model(inputs, x)


def test_parse_js_literal():
    text = 'x={a:!0,b:[1,.5,-.25e1,-3],"c":"q\\"r",d:null,e:{f:!1}};'
    value, end = parse_js_literal(text, 2)
    assert value == {"a": True, "b": [1, 0.5, -2.5, -3], "c": 'q"r', "d": None, "e": {"f": False}}
    assert text[end] == ";"
    with pytest.raises(BackboneError):
        parse_js_literal("{a:window}")


def test_decode_dequantise_and_assign_by_name():
    rng = np.random.default_rng(0)
    source = tiny_model()
    manifest, chunks, expected = [], [], {}
    for layer in source.layers:
        for var in layer.weights:
            short = var.path.split("/")[-1]
            name = f"{layer.name}/{'depthwise_kernel' if layer.name == 'dw' else short}"
            shape = list(var.shape)
            if layer.name == "bn":  # stored as float32
                arr = rng.normal(size=shape).astype(np.float32) + 1.0
                chunks.append(arr.tobytes())
                manifest.append({"name": name, "shape": shape, "dtype": "float32"})
            else:  # uint8-quantised: value = min + scale * byte
                q = rng.integers(0, 256, size=shape, dtype=np.uint8)
                lo, scale = -0.5, 0.004
                arr = (lo + scale * q.astype(np.float32)).astype(np.float32)
                chunks.append(q.tobytes())
                manifest.append(
                    {
                        "name": name,
                        "shape": shape,
                        "dtype": "float32",
                        "quantization": {"min": lo, "scale": scale, "dtype": "uint8"},
                    }
                )
            expected[f"{layer.name}/{short}"] = arr
    model_js = module(
        js(
            {
                "modelTopology": {"a": [1]},
                "weightsManifest": [{"paths": ["group1-shard1of1"], "weights": manifest}],
            }
        )
    )
    shard_js = module(json.dumps(base64.b64encode(b"".join(chunks)).decode()), var="h")
    topology, weights = decode_tfjs_modules(model_js, shard_js)
    assert topology["modelTopology"] == {"a": [1]}
    assert weights["dw/depthwise_kernel"] == pytest.approx(expected["dw/kernel"])
    target = tiny_model()
    assert assign_by_name(target, weights) == len(target.weights)
    for layer in target.layers:
        for var in layer.weights:
            key = f"{layer.name}/{var.path.split('/')[-1]}"
            np.testing.assert_allclose(np.asarray(var), expected[key], rtol=1e-6)


def test_manifest_longer_than_shard_is_an_error():
    manifest = [{"weights": [{"name": "w", "shape": [4], "dtype": "float32"}]}]
    model_js = module(js({"weightsManifest": manifest}))
    shard_js = module(json.dumps(base64.b64encode(b"\0" * 20).decode()))
    with pytest.raises(BackboneError, match="covers"):
        decode_tfjs_modules(model_js, shard_js)


def test_wrong_tarball_is_refused_before_decoding(tmp_path):
    with pytest.raises(BackboneError, match="SHA-256"):
        mobilenetv2_weights_from_tarball(b"not the package", tmp_path / "w.weights.h5")
