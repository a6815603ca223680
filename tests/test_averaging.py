"""Networks averaged into one: the mean of the members' logits, one flat network, a run
that finalises it like a fitted one."""

import json
import shutil
from dataclasses import replace

import keras
import numpy as np
import pandas as pd
import pytest

from skin_model.model.averaging import (
    JOINED,
    average_networks,
    layers_taken_from_first,
    shared_layers,
)
from skin_model.model.networks import PREDICTIONS, lite_stage_ends, make_efficientnet_lite
from skin_model.model.settings import ConfigError, TrainConfig
from tests.conftest import on_another_split


def _inputs(n: int = 3):
    rng = np.random.default_rng(0)
    return [rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32"), rng.random((n, 4), "float32")]


def test_the_average_is_the_softmax_of_the_members_mean_logits():
    a, b = (make_efficientnet_lite(32, metadata_dim=4, colour_constancy=6) for _ in range(2))
    b.set_weights([w + 0.05 for w in b.get_weights()])  # another network, same shape
    merged = average_networks([a, b])
    x = _inputs()
    logits = [np.log(m.predict(x, verbose=0)) for m in (a, b)]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(np.mean(logits, axis=0)))
    np.testing.assert_allclose(merged.predict(x, verbose=0), expected, rtol=1e-3, atol=1e-4)
    assert not any(isinstance(layer, keras.Model) for layer in merged.layers)  # flat
    assert merged.layers[-1].name == PREDICTIONS and merged.layers[-2].name == JOINED
    assert merged.get_layer("top_relu") is not merged.get_layer("m1_top_relu")  # the first's
    assert [t.name for t in merged.inputs] == [t.name for t in a.inputs]


def test_a_trunk_the_members_share_is_computed_once():
    a, b = (make_efficientnet_lite(32, metadata_dim=4, colour_constancy=6) for _ in range(2))
    b.set_weights(a.get_weights())
    end = lite_stage_ends()[2]
    after = [x.name for x in a.layers][[x.name for x in a.layers].index(end) + 1 :]
    for name in after:  # the top differs, the stem and two stages stay the first's
        layer = b.get_layer(name)
        layer.set_weights([w + 0.05 for w in layer.get_weights()])
    merged = average_networks([a, b])
    x = _inputs()
    logits = [np.log(m.predict(x, verbose=0)) for m in (a, b)]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(np.mean(logits, axis=0)))
    np.testing.assert_allclose(merged.predict(x, verbose=0), expected, rtol=1e-3, atol=1e-4)
    names = {x.name for x in merged.layers}
    assert "stem_conv" in names and "m1_stem_conv" not in names and "m1_" + end not in names
    assert "m1_top_relu" in names and "m1_" + after[0] in names
    assert layers_taken_from_first(merged, [a, b]) == [len(shared_layers(a, b))]
    other = make_efficientnet_lite(32, metadata_dim=4, colour_constancy=6)
    assert not [n for n in shared_layers(a, other) if a.get_layer(n).weights]  # other values


def test_averaging_needs_two_networks_with_the_same_inputs():
    a = make_efficientnet_lite(32, metadata_dim=4)
    with pytest.raises(ValueError, match="at least two"):
        average_networks([a])
    with pytest.raises(ValueError, match="inputs differ"):
        average_networks([a, make_efficientnet_lite(32)])


def test_members_need_two_existing_model_directories(trained_dir, tmp_path):
    with pytest.raises(ConfigError, match="two or more"):
        TrainConfig(members=str(trained_dir)).validate()
    with pytest.raises(ConfigError, match="no model directory"):
        TrainConfig(members=f"{trained_dir},{tmp_path / 'gone'}").validate()


def _fixture_settings(trained_dir) -> TrainConfig:
    """The settings the smoke-trained fixture was trained with."""
    from skin_model.model.settings import read_run_config

    return read_run_config(trained_dir)


def test_an_averaging_run_finalises_the_members_as_one_network(trained_dir, tiny_data, tmp_path):
    from skin_model.runtime.inference import load_bundle
    from skin_model.train.training import train_model

    twin = tmp_path / "twin"
    shutil.copytree(trained_dir, twin)
    cfg = replace(_fixture_settings(trained_dir), members=f"{trained_dir},{twin}", name="avg")
    out = tmp_path / "models" / "avg"
    metrics = train_model(tiny_data, out, cfg.validate())
    assert metrics["training"]["members"] == [str(trained_dir), str(twin)]
    assert metrics["training"]["settings"]["members"] == cfg.members
    member = json.loads((trained_dir / "metrics.json").read_text())["training"]
    assert metrics["training"]["train_seconds"] == pytest.approx(2 * member["train_seconds"])
    averaged, single = load_bundle(out), load_bundle(trained_dir)
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    meta = np.zeros((4, averaged.model.inputs[1].shape[-1]), "float32")
    np.testing.assert_allclose(  # a network averaged with itself is that network
        averaged.model.predict([images, meta], verbose=0),
        single.model.predict([images, meta], verbose=0),
        atol=1e-5,
    )
    card = (out / "MODEL_CARD.md").read_text()
    assert f"The average of 2 networks (`{trained_dir.name}`, `twin`)" in card
    n_layers = len([x for x in single.model.layers if x.name != PREDICTIONS]) - 2  # inputs
    assert metrics["training"]["shared_layers"] == [n_layers]  # a twin: all but its classifier
    assert f"first ({n_layers}: the same values" in card
    (reproduce,) = [line for line in card.splitlines() if line.startswith("- Reproduce")]
    assert reproduce.count("python train.py") == 3 and "--members" in reproduce  # members first
    attempts = pd.read_csv(out.parent / "attempts.csv")
    assert "members=" in attempts.loc[attempts["directory"] == "avg", "settings"].item()


def test_members_of_another_split_are_refused(trained_dir, tiny_data, tmp_path, capsys):
    import train

    other = on_another_split(trained_dir, tmp_path / "other")
    cfg = _fixture_settings(trained_dir)
    argv = [
        "--data-dir", str(tiny_data), "--out", str(tmp_path / "avg"),
        "--architecture", cfg.architecture, "--input-size", str(cfg.input_size),
        "--weights", "none", "--members", f"{trained_dir},{other}",
    ]  # fmt: skip
    assert train.main(argv) == 2
    assert "another lesion split" in capsys.readouterr().err


def test_a_network_runs_at_another_input_size_with_its_weights():
    from skin_model.model.networks import at_input_size

    net = make_efficientnet_lite(32, metadata_dim=4, colour_constancy=6)
    bigger = at_input_size(net, 48)
    assert bigger.inputs[0].shape[1:3] == (48, 48)
    for a, b in zip(net.get_weights(), bigger.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x = _inputs()
    same = at_input_size(net, 32)  # the same size gives the same outputs
    np.testing.assert_allclose(same.predict(x, verbose=0), net.predict(x, verbose=0), atol=1e-6)
    inputs = keras.Input((8, 8, 3), name="image")
    flat = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError):  # its weights depend on the size
        at_input_size(flat, 12)


def test_an_averaging_run_can_run_its_members_at_a_larger_input(trained_dir, tiny_data, tmp_path):
    from skin_model.runtime.inference import load_bundle
    from skin_model.train.training import train_model

    twin = tmp_path / "twin"
    shutil.copytree(trained_dir, twin)
    base = _fixture_settings(trained_dir)
    cfg = replace(base, members=f"{trained_dir},{twin}", name="avg40", input_size=40)
    out = tmp_path / "models" / "avg40"
    metrics = train_model(tiny_data, out, cfg.validate())
    assert metrics["training"]["trained_at"] == [base.input_size]
    bundle = load_bundle(out)
    assert bundle.input_size == 40 and bundle.model.inputs[0].shape[1:3] == (40, 40)
    assert json.loads((out / "config.json").read_text())["input_size"] == 40
