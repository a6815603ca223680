"""BatchNorm folded into the convolution before it, for inference.

In inference mode a BatchNormalization layer is a per-channel affine map of its input,
so after a convolution with no activation it can be absorbed into that convolution's
kernel and bias. The folded network computes the same function (to float rounding) with
one pass over each activation map fewer: on this CPU the shipped EfficientNet-Lite pair
runs about 1.5x faster. Training never sees a folded network; the saved ``model.keras``
keeps its BatchNorm layers.
"""

from __future__ import annotations

import copy

import numpy as np

FOLDABLE = ("Conv2D", "DepthwiseConv2D")
"""Layer classes a following BatchNorm is folded into."""


def _histories(value) -> list[str]:
    """The names of the layers whose outputs a node's arguments refer to."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value["config"]["keras_history"][0]]
        return [n for v in value.values() for n in _histories(v)]
    if isinstance(value, list | tuple):
        return [n for v in value for n in _histories(v)]
    return []


def _output_names(value) -> list[str]:
    """The layer names in a config's ``output_layers`` (``[name, node, tensor]`` lists)."""
    if isinstance(value, list | tuple) and len(value) == 3 and isinstance(value[0], str):
        return [value[0]]
    if isinstance(value, list | tuple | dict):
        items = value.values() if isinstance(value, dict) else value
        return [n for v in items for n in _output_names(v)]
    return []


def foldable_pairs(model) -> dict[str, str]:
    """Each BatchNorm that can be folded, mapped to the convolution feeding it.

    A pair qualifies when the BatchNorm normalises the last axis and is called once, on
    the output of a channels-last :data:`FOLDABLE` layer with no activation that is called
    once and whose output nothing else reads (nor is a model output).

    Args:
        model: A Functional Keras model.

    Returns:
        ``{batchnorm name: convolution name}``.
    """
    config = model.get_config()
    readers: dict[str, int] = {}
    for layer in config["layers"]:
        for name in _histories(layer.get("inbound_nodes", [])):
            readers[name] = readers.get(name, 0) + 1
    outputs = set(_output_names(config.get("output_layers", [])))
    by_name = {layer["name"]: layer for layer in config["layers"]}
    pairs = {}
    for layer in config["layers"]:
        nodes = layer.get("inbound_nodes", [])
        if layer["class_name"] != "BatchNormalization" or len(nodes) != 1:
            continue
        if layer["config"].get("axis", -1) not in (-1, [-1], [3], 3):
            continue
        sources = _histories(nodes[0])
        source = by_name.get(sources[0]) if len(sources) == 1 else None
        if (
            source is not None
            and source["class_name"] in FOLDABLE
            and source["config"].get("activation", "linear") == "linear"
            and source["config"].get("data_format") in (None, "channels_last")
            and len(source.get("inbound_nodes", [])) == 1
            and readers.get(source["name"]) == 1
            and source["name"] not in outputs
        ):
            pairs[layer["name"]] = source["name"]
    return pairs


def folded_weights(conv, bn) -> list[np.ndarray]:
    """The kernel and bias of ``conv`` followed by ``bn`` (inference mode) as one layer."""
    from keras import ops

    weights = conv.get_weights()
    kernel = weights[0]
    channels = int(bn.moving_mean.shape[-1])

    def value(variable) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(variable), dtype=np.float64)

    mean, var = value(bn.moving_mean), value(bn.moving_variance)
    gamma = value(bn.gamma) if bn.scale else np.ones(channels)
    beta = value(bn.beta) if bn.center else np.zeros(channels)
    bias = np.asarray(weights[1], dtype=np.float64) if len(weights) > 1 else np.zeros(channels)
    scale = gamma / np.sqrt(var + bn.epsilon)
    if conv.__class__.__name__ == "DepthwiseConv2D":  # (h, w, in, multiplier)
        folded = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])[None, None]
    else:  # (h, w, in, out)
        folded = kernel * scale
    return [folded.astype(kernel.dtype), ((bias - mean) * scale + beta).astype(kernel.dtype)]


def fold_batch_norm(model):
    """``model`` with every :func:`foldable_pairs` BatchNorm folded into its convolution.

    The BatchNorm layers become ``Identity`` layers of the same name, so every layer the
    heatmaps, the detector or a report names is still there.

    Args:
        model: A Functional Keras model (any other model is returned as it is).

    Returns:
        A new model computing the same function in inference mode, or ``model`` itself
        when nothing can be folded.
    """
    import keras

    config = copy.deepcopy(model.get_config()) if isinstance(model, keras.Model) else {}
    if not any("inbound_nodes" in layer for layer in config.get("layers", [])):
        return model  # not a Functional model
    pairs = foldable_pairs(model)
    if not pairs:
        return model
    convs = set(pairs.values())
    for layer in config["layers"]:
        if layer["name"] in pairs:
            layer["class_name"], layer["module"] = "Identity", "keras.layers"
            layer.pop("registered_name", None)
            layer["config"] = {"name": layer["name"], "dtype": layer["config"].get("dtype")}
            for node in layer["inbound_nodes"]:
                node["kwargs"] = {}
        elif layer["name"] in convs:
            layer["config"]["use_bias"] = True
    folded = keras.Model.from_config(config)
    for layer in model.layers:
        if layer.weights and layer.name not in pairs and layer.name not in convs:
            folded.get_layer(layer.name).set_weights(layer.get_weights())
    for bn, conv in pairs.items():
        weights = folded_weights(model.get_layer(conv), model.get_layer(bn))
        folded.get_layer(conv).set_weights(weights)
    return folded
