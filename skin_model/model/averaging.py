"""Trained networks averaged into one flat Functional network (a small ensemble in one file).

Each member keeps its own layers (the first under its own names, member ``i`` under
``m{i}_`` + its names) and shares the inputs; every layer a member computes exactly as the
first does (same settings, same values, same inputs: the ImageNet stages that
``--freeze-stages`` kept frozen in every member) is computed once. The members' classifiers
become one ``Dense(softmax)`` on their joined features whose kernel and bias are the
members' averaged, so its logits are the members' mean logits. The result is a network
like any other: the post-hoc layer, the detector, Grad-CAM (tf-keras-vis wants a flat model
ending in ``Dense(softmax)``) and the app read it unchanged; named layers (the heatmap and
detector layers) are the first member's.
"""

from __future__ import annotations

import numpy as np

from skin_model.model.networks import PREDICTIONS

JOINED = "members_joined"
"""The layer that joins the members' classifier inputs."""


def member_prefix(index: int) -> str:
    """The prefix of member ``index``'s layer names (none for the first)."""
    return "" if index == 0 else f"m{index}_"


def _renamed(obj, names: dict[str, str]):
    """A copy of a config structure with every ``keras_history`` layer in ``names`` renamed."""
    if isinstance(obj, list | tuple):
        return type(obj)(_renamed(v, names) for v in obj)
    if not isinstance(obj, dict):
        return obj
    out = {k: _renamed(v, names) for k, v in obj.items()}
    history = out.get("keras_history")
    if isinstance(history, list | tuple) and history and history[0] in names:
        out["keras_history"] = type(history)([names[history[0]], *history[1:]])
    return out


def _input_names(config: dict) -> list[str]:
    """The input layers' names of a Functional config (one input is stored unnested)."""
    found = config["input_layers"]
    return [found[0]] if found and isinstance(found[0], str) else [x[0] for x in found]


def _classifier_input(config: dict) -> str:
    """The name of the layer whose output the classifier (:data:`PREDICTIONS`) reads."""
    layer = next(x for x in config["layers"] if x["name"] == PREDICTIONS)
    (node,) = layer["inbound_nodes"]
    return node["args"][0]["config"]["keras_history"][0]


def _inbound(layer: dict) -> set[str]:
    """The names of the layers whose outputs ``layer`` reads."""
    found: set[str] = set()

    def walk(obj) -> None:
        if isinstance(obj, list | tuple):
            for v in obj:
                walk(v)
        elif isinstance(obj, dict):
            history = obj.get("keras_history")
            if isinstance(history, list | tuple) and history:
                found.add(history[0])
            for v in obj.values():
                walk(v)

    walk(layer["inbound_nodes"])
    return found


def _settings(layer: dict) -> dict:
    """A layer config without what may differ between equal layers (its name, trainability)."""
    config = {k: v for k, v in layer["config"].items() if k not in ("name", "trainable")}
    return {**{k: v for k, v in layer.items() if k not in ("name", "config")}, "config": config}


def shared_layers(first, member) -> set[str]:
    """The layers ``member`` computes exactly as ``first`` does: the same settings and
    values, reading only inputs or other shared layers (a common frozen trunk).

    Args:
        first: The first member network.
        member: Another member with the same inputs.

    Returns:
        The names (the same in both networks) of the layers ``member`` can take from ``first``.
    """
    mine = {x["name"]: x for x in first.get_config()["layers"]}
    inputs = {n for n, x in mine.items() if x["class_name"] == "InputLayer"}
    shared: set[str] = set()
    for layer in member.get_config()["layers"]:
        name, theirs = layer["name"], mine.get(layer["name"])
        if theirs is None or name in inputs or name == PREDICTIONS:
            continue
        if _settings(layer) != _settings(theirs) or not _inbound(layer) <= shared | inputs:
            continue
        values = member.get_layer(name).get_weights(), first.get_layer(name).get_weights()
        if all(np.array_equal(a, b) for a, b in zip(*values, strict=True)):
            shared.add(name)
    return shared


def _trunk_layers(config: dict, prefix: str, kept: set[str]) -> tuple[list[dict], str]:
    """A member's layer configs without its classifier, renamed with ``prefix`` (the
    ``kept`` layers, the inputs and those shared with the first member, keep their names and
    are left out), and the renamed name of its classifier's input.
    """
    names = {x["name"]: prefix + x["name"] for x in config["layers"] if x["name"] not in kept}
    layers = []
    for layer in config["layers"]:
        if layer["name"] == PREDICTIONS or (prefix and layer["name"] in kept):
            continue
        layer = _renamed(layer, names)
        layer["name"] = names.get(layer["name"], layer["name"])
        layer["config"]["name"] = layer["name"]
        layers.append(layer)
    return layers, names.get(_classifier_input(config), _classifier_input(config))


def layers_taken_from_first(model, members: list) -> list[int]:
    """How many layers of each later member ``model`` (their :func:`average_networks`)
    computes with the first member's (no ``m{i}_`` copy of its own).
    """
    own = {layer.name for layer in model.layers}
    inputs = {t.name for t in model.inputs}
    return [
        sum(
            member_prefix(i) + layer.name not in own
            for layer in member.layers
            if layer.name not in inputs and layer.name != PREDICTIONS
        )
        for i, member in enumerate(members[1:], start=1)
    ]


def average_networks(members: list):
    """One network whose output is the softmax of the members' mean logits.

    Args:
        members: Trained Functional networks with the same inputs, each ending in a
            ``Dense(softmax)`` named :data:`PREDICTIONS` (two or more).

    Returns:
        An uncompiled flat Functional model with the first member's inputs.

    Raises:
        ValueError: With fewer than two members, or members whose inputs differ.
    """
    import keras
    from keras import layers

    if len(members) < 2:
        raise ValueError("averaging needs at least two networks")
    configs = [m.get_config() for m in members]
    inputs = [_input_names(c) for c in configs]
    shapes = [[tuple(t.shape) for t in m.inputs] for m in members]
    if any(i != inputs[0] for i in inputs) or any(s != shapes[0] for s in shapes):
        raise ValueError(f"the networks' inputs differ: {inputs} {shapes}")
    merged, ends = [], []
    shared = [set()] + [shared_layers(members[0], m) for m in members[1:]]
    for i, config in enumerate(configs):
        trunk, end = _trunk_layers(config, member_prefix(i), set(inputs[0]) | shared[i])
        merged += trunk
        ends.append([end, 0, 0])
    trunk_config = {**configs[0], "layers": merged, "output_layers": ends}
    trunk = keras.Model.from_config(trunk_config)
    joined = layers.Concatenate(name=JOINED)(trunk.outputs)
    head = members[0].get_layer(PREDICTIONS)
    dense = layers.Dense(head.units, activation="softmax", dtype="float32", name=PREDICTIONS)
    model = keras.Model(trunk.inputs, dense(joined), name="averaged_" + configs[0]["name"])
    for i, member in enumerate(members):
        for layer in member.layers:
            if layer.weights and layer.name != PREDICTIONS and layer.name not in shared[i]:
                model.get_layer(member_prefix(i) + layer.name).set_weights(layer.get_weights())
    heads = [m.get_layer(PREDICTIONS).get_weights() for m in members]
    kernel = np.concatenate([k for k, _ in heads], axis=0) / len(members)
    dense.set_weights([kernel, np.mean([b for _, b in heads], axis=0)])
    return model
