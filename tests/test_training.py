"""A training smoke run on tiny synthetic data writes every artifact, consistently."""

import json
import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from skin_model.model.artifacts import (
    best_epoch,
    find_model_dirs,
    read_history,
    read_integrity,
    sha256_file,
)
from skin_model.model.metrics_file import read_metrics
from skin_model.model.settings import TrainConfig
from skin_model.runtime.inference import load_bundle
from skin_model.train.training import append_attempt, settings_summary

pytestmark = pytest.mark.slow

ARTIFACTS = (
    "model.keras",
    "config.json",
    "ood.npz",
    "metrics.json",
    "history.csv",
    "split.csv",
    "MODEL_CARD.md",
    "test_predictions.csv",
)


def test_smoke_run_writes_every_artifact(trained_dir):
    for name in ARTIFACTS:
        assert (trained_dir / name).is_file(), name
    assert (trained_dir.parent / "attempts.csv").is_file()


def test_history_logs_learning_rate_and_balanced_accuracy(trained_dir):
    history = read_history(trained_dir)
    assert len(history) == 2
    for col in (
        "loss",
        "val_loss",
        "accuracy",
        "val_accuracy",
        "balanced_accuracy",  # of the training batches, beside the held-out one
        "val_balanced_accuracy",
        "learning_rate",
    ):
        assert col in history.columns
    assert ((history["balanced_accuracy"] >= 0) & (history["balanced_accuracy"] <= 1)).all()
    assert history["learning_rate"].iloc[0] > history["learning_rate"].iloc[-1] >= 0
    assert best_epoch(history) == int(history["val_balanced_accuracy"].to_numpy().argmax()) + 1
    assert "val_balanced_accuracy_image_only" in history.columns  # the model takes metadata
    assert np.isfinite(history["loss"]).all()
    assert (history["step_seconds"] > 0).all()  # what a training step cost, per epoch
    assert find_model_dirs(trained_dir.parent) == [trained_dir]


def test_training_moved_the_weights_away_from_their_start(trained_dir):
    """Two epochs from random weights on the tiny data: no real learning to expect, but
    every trainable layer must have been updated (the optimizer ran on real gradients)."""
    import keras

    from skin_model.model.settings import read_run_config
    from skin_model.train.training import compile_model

    cfg = read_run_config(trained_dir)
    keras.utils.set_random_seed(cfg.seed)
    start = compile_model(cfg, np.full(7, 1 / 7), steps=1)
    trained = keras.models.load_model(trained_dir / "model.keras", compile=False)
    moved = [
        float(np.abs(np.asarray(a) - np.asarray(b)).mean())
        for layer in trained.layers
        for a, b in zip(
            layer.trainable_weights, start.get_layer(layer.name).trainable_weights, strict=True
        )
    ]
    assert np.mean(np.array(moved) > 1e-6) > 0.9


def test_split_is_grouped_and_saved(trained_dir):
    split = pd.read_csv(trained_dir / "split.csv")
    assert set(split["split"]) == {"train", "val", "calib", "test"}
    assert (split.groupby("lesion_id")["split"].nunique() == 1).all()


def test_metrics_and_config_are_complete(trained_dir):
    m = read_metrics(trained_dir).raw  # the file as evaluation wrote it
    for key in (
        "balanced_accuracy",
        "accuracy",
        "macro_auc",
        "per_class",
        "confusion_matrix",
        "calibration",
        "malignant",
        "validation",
        "model",
        "training",
        "split",
        "ood",
        "cam_localisation",
        "intervals",
        "targets",
        "calibration_fit",
        "with_metadata",
        "metadata_only_baseline",
        "cam_layer_choice",
    ):
        assert key in m, key
    assert m["ood"]["photos"]["n_non_dermoscopic"] >= 100  # real photographs were tested
    fit = m["calibration_fit"]
    shipped = m["model"]["malignant_threshold"]
    assert fit["threshold"]["threshold"] == pytest.approx(shipped, abs=1e-6)
    mal = m["malignant"]["calibration"]
    assert mal["observed_share"] == pytest.approx(m["malignant"]["prevalence"])
    assert [r["key"] for r in m["targets"]][:2] == ["balanced_accuracy", "malignant_auc"]
    low, high = m["intervals"]["balanced_accuracy"]
    assert low <= m["balanced_accuracy"] <= high
    assert m["malignant"]["operating_point"]["threshold"] == m["model"]["malignant_threshold"]
    cfg = json.loads((trained_dir / "config.json").read_text())
    for key in (
        "input_size",
        "temperature",
        "tta",
        "malignant_threshold",
        "malignant_threshold_metadata",
        "ood_threshold",
        "class_prior",
        "malignant_share",
        "cam_layer",
    ):
        assert key in cfg
    assert sum(cfg["class_prior"]) == pytest.approx(1.0)


def test_integrity_file_records_the_files_and_the_card_shows_it(trained_dir):
    digests = read_integrity(trained_dir)
    for name in ("model.keras", "config.json", "ood.npz"):
        assert digests[name] == sha256_file(trained_dir / name)
    card = (trained_dir / "MODEL_CARD.md").read_text()
    assert digests["model.keras"] in card
    assert "not a medical device" in card.lower()
    m = read_metrics(trained_dir)
    mel, refer = m.per_class["mel"].sensitivity, m.malignant.operating_point.sensitivity
    assert f"named {mel:.0%} of the test melanomas" in card  # a weakness, from the file
    assert f"caught {refer:.0%} of the malignant lesions" in card
    assert load_bundle(trained_dir).input_size == 32


def test_the_model_file_is_deflated_and_re_packing_keeps_every_weight(
    trained_dir, tmp_path, capsys
):
    import zipfile

    from skin_model.cli import main as cli
    from skin_model.model.artifacts import check_model_files

    with zipfile.ZipFile(trained_dir / "model.keras") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    copy = tmp_path / "stored"
    shutil.copytree(trained_dir, copy)
    with zipfile.ZipFile(copy / "model.keras", "w", zipfile.ZIP_STORED) as zf:  # as Keras saves
        for name, data in members.items():
            zf.writestr(name, data)
    stored = (copy / "model.keras").stat().st_size
    assert cli(["deflate", str(copy)]) == 0
    size = (copy / "model.keras").stat().st_size
    assert size < stored
    assert f"{size / 1e6:.2f} MB" in capsys.readouterr().out
    with zipfile.ZipFile(copy / "model.keras") as zf:
        assert {i.filename: zf.read(i.filename) for i in zf.infolist()} == members
    check_model_files(copy)  # the digests were recorded again
    model = json.loads((copy / "metrics.json").read_text())["model"]
    assert model["file_bytes"] == size
    assert model["sha256"] == sha256_file(copy / "model.keras")
    assert model["sha256"] in (copy / "MODEL_CARD.md").read_text()
    assert cli(["deflate", str(tmp_path)]) == 2  # no metrics.json


def test_train_script_rejects_bad_data_folder(tmp_path, capsys):
    import train

    assert train.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "m")]) == 2
    assert "not found" in capsys.readouterr().err


def test_reproduce_command_round_trips_through_train_py(trained_dir):
    import shlex
    from dataclasses import asdict, fields

    import train
    from skin_model.model.settings import TrainConfig
    from skin_model.reports.card import reproduce_command

    recorded = json.loads((trained_dir / "config.json").read_text())["training"]
    args = train.parse_args(shlex.split(reproduce_command(recorded))[2:])
    again = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    assert {k: v for k, v in asdict(again).items() if k != "verbose"} == {
        k: v for k, v in recorded.items() if k != "verbose"
    }


def test_resume_continues_an_interrupted_run(trained_dir, tiny_data, tmp_path, capsys):
    import keras

    import skin_model.model.networks  # noqa: F401  (registers the training loss)
    import train

    run = tmp_path / "run"
    shutil.copytree(trained_dir, run)
    before = keras.models.load_model(run / "checkpoint.keras")
    steps = int(before.optimizer.iterations.numpy())
    config = json.loads((run / "run_config.json").read_text())
    config["epochs"] = 3  # as if the run had been stopped after 2 of 3 epochs
    (run / "run_config.json").write_text(json.dumps(config))
    assert train.main(["--data-dir", str(tiny_data), "--resume", str(run)]) == 0
    history = read_history(run)
    assert history["epoch"].tolist() == [1, 2, 3]
    after = keras.models.load_model(run / "checkpoint.keras")
    assert int(after.optimizer.iterations.numpy()) == steps * 3 // 2  # optimizer state kept
    state = json.loads((run / "train_state.json").read_text())
    assert state["epochs_done"] == 3 and state["seconds"] > 0
    assert np.isfinite(read_metrics(run).balanced_accuracy)
    # the log names the validation figures, never the test split's (read once, on purpose)
    said = capsys.readouterr().out.splitlines()[-1]
    assert said.startswith("validation balanced accuracy") and "metrics.json" in said
    assert "test balanced accuracy" not in said


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    import train

    assert train.main(["--resume", str(tmp_path)]) == 2
    assert "no interrupted run" in capsys.readouterr().err


def test_late_context_fusion_is_fitted_on_training_and_used_at_inference(
    trained_dir, tiny_data, tmp_path
):
    """A run whose settings ask for late fusion stores the context model in config.json,
    and predictions with a context multiply its posterior in."""
    import train
    from skin_model.data.metadata import ContextModel, encode, parse_context
    from skin_model.model.calibration import late_fusion
    from skin_model.model.posthoc import PostHoc
    from skin_model.runtime.inference import predict_images
    from tests.conftest import lesion_image

    run = tmp_path / "run"
    shutil.copytree(trained_dir, run)
    config = json.loads((run / "run_config.json").read_text())
    config.update(context_fusion_power=1.0, context_fusion_feed_network=False)
    (run / "run_config.json").write_text(json.dumps(config))
    assert train.main(["--data-dir", str(tiny_data), "--resume", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    fusion = saved["context_fusion"]
    assert fusion["power"] == 1.0 and not fusion["feed_network"]
    assert "late fusion" in read_metrics(run).with_metadata.fusion
    bundle = load_bundle(run)
    assert bundle.uses_context and not bundle.feeds_context
    context = parse_context(70, "male", "face")
    image = lesion_image("mel", 3)
    bare = PostHoc()  # no prior, temperature 1, no fusion: the network's own outputs
    plain = predict_images(replace(bundle, posthoc=bare), [image])[0].probabilities
    unscaled = PostHoc(context_fusion=bundle.posthoc.context_fusion)
    fused = predict_images(replace(bundle, posthoc=unscaled), [image], contexts=[context])[
        0
    ].probabilities
    posterior = ContextModel.from_config(fusion).predict_proba(encode(context)[None])
    want = late_fusion(plain[None], posterior, 1.0)
    np.testing.assert_allclose(fused, want[0], atol=1e-5)


def test_test_time_views_are_the_recipe_s_or_chosen_on_validation(trained_dir, trained_bundle):
    from skin_model.runtime.inference import network_outputs
    from skin_model.train.finalise import choose_tta

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    y = np.arange(6) % 7
    views, scores, outputs = choose_tta(trained_bundle, x, y, min_gain=0.0, views=4)
    assert views == 4 and set(scores) == {f"balanced_accuracy_views_{n}" for n in (1, 4, 8)}
    np.testing.assert_allclose(outputs, network_outputs(trained_bundle, x, 4)[0], atol=1e-6)
    two, scores, outputs = choose_tta(trained_bundle, x, y, min_gain=0.0, views=2)
    assert two == 2 and "balanced_accuracy_views_2" in scores  # the image and its half turn
    np.testing.assert_allclose(outputs, network_outputs(trained_bundle, x, 2)[0], atol=1e-6)
    # chosen on validation: more views only when they gain more than min_gain (>1: never)
    assert choose_tta(trained_bundle, x, y, min_gain=1.0, views=0)[0] == 1


def test_detector_variants_reach_the_corners_a_4_3_dermatoscope_file_blackens():
    """The round fields the detector learns as ordinary are as deep as a circle on a
    decoded 200x150 file (radius 0.40 of its diagonal) once squashed to the square input."""
    from skin_model.data.imaging import dermoscope_vignette, resize_for_model
    from skin_model.train.finalise import dermoscopy_variants

    white = np.full((64, 32, 32, 3), 255.0, np.float32)
    fields = dict(dermoscopy_variants(white))["round field of view"]
    black = (fields.mean(axis=3) < 128).mean(axis=(1, 2))
    file_4_3 = dermoscope_vignette(np.full((150, 200, 3), 255, np.uint8), 0.40)
    squashed = (resize_for_model(file_4_3, 32).mean(axis=2) < 128).mean()
    assert black.max() > squashed > black.min()
    assert len({round(b, 2) for b in black}) > 20  # depths and shapes vary, not one circle


def test_cam_command_measures_the_localisation_again(trained_dir, tiny_data, tmp_path, capsys):
    from skin_model.cli import main as cli

    run = tmp_path / "smoke"
    shutil.copytree(trained_dir, run)
    before = read_metrics(run).cam_localisation
    shown = json.loads((run / "config.json").read_text())["tta"]
    assert before["views"] == shown  # measured with the maps the app shows
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["cam_localisation"] = {"mean_ratio": 0.0}  # as if made by another explainer
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert cli(["cam", str(run), "--data-dir", str(tiny_data)]) == 0
    after = read_metrics(run).cam_localisation
    assert after["mean_ratio"] == pytest.approx(before["mean_ratio"], abs=1e-6)  # same sample
    assert "lesion box" in capsys.readouterr().out
    assert cli(["cam", str(tmp_path), "--data-dir", str(tiny_data)]) == 2  # no metrics.json


def test_targets_command_judges_the_recorded_figures_against_the_current_goals(
    trained_dir, tmp_path, capsys
):
    from skin_model.cli import main as cli
    from skin_model.evaluate.metrics import QUALITY_TARGETS

    run = tmp_path / "smoke"
    shutil.copytree(trained_dir, run)
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["targets"] = [{"key": "balanced_accuracy", "goal": 0.5}]  # an earlier issue's goals
    (run / "metrics.json").write_text(json.dumps(metrics))
    (run / "MODEL_CARD.md").write_text("stale")
    assert cli(["targets", str(run)]) == 0
    after = json.loads((run / "metrics.json").read_text())
    assert [(t["key"], t["goal"]) for t in after["targets"]] == [
        (key, goal) for key, _label, goal, _direction in QUALITY_TARGETS
    ]
    assert after["balanced_accuracy"] == metrics["balanced_accuracy"]  # nothing measured
    assert "quality targets" in (run / "MODEL_CARD.md").read_text()
    assert "balanced accuracy:" in capsys.readouterr().out
    assert cli(["targets", str(tmp_path)]) == 2  # no metrics.json


def test_cam_command_chooses_the_method_and_layer_again(trained_dir, tiny_data, tmp_path):
    from skin_model.cli import main as cli
    from skin_model.runtime.inference import load_bundle
    from tests.conftest import with_config

    # as if chosen another way
    run = with_config(trained_dir, tmp_path / "smoke", cam_method="Grad-CAM++", cam_layers={})
    assert cli(["cam", str(run), "--data-dir", str(tiny_data), "--choose"]) == 0
    config = json.loads((run / "config.json").read_text())
    choice = read_metrics(run).cam_layer_choice
    assert config["cam_method"] == choice["method"] != "Grad-CAM++"
    assert (config["cam_layer"], config["cam_layers"]) == (choice["layer"], choice["layers"])
    scores = choice["mean_ratio_by_map"]
    if scores:
        assert max(scores, key=scores.get) == f"{choice['method']} @ {choice['layer']}"
    shown = read_metrics(run).cam_localisation
    assert shown is None or shown["method"] == config["cam_method"]
    assert load_bundle(run).config.cam_method == config["cam_method"]  # digests match


def test_robustness_command_pools_validation_and_calibration(trained_dir, tiny_data, tmp_path):
    from skin_model.cli import main as cli
    from skin_model.evaluate.robustness import CHANGES

    split = pd.read_csv(trained_dir / "split.csv")["split"]
    out = tmp_path / "pooled.json"
    args = ["robustness", str(trained_dir), "--data-dir", str(tiny_data), "--out", str(out)]
    assert cli([*args, "--split", "val,calib"]) == 0
    pooled = json.loads(out.read_text())
    assert pooled["n_images"] == split.isin(["val", "calib"]).sum() > (split == "val").sum()
    assert pooled["split"] == "val,calib" and set(pooled["changes"]) == set(CHANGES)


def test_a_second_look_is_recorded_and_its_threshold_fitted_on_what_it_makes(
    trained_dir, tiny_data, tmp_path
):
    """``--second-look 4`` (every image near: a 50 log-odds band) records its views and
    band, and the fitted threshold still refers the target share of the calibration
    part's malignant lesions as the second look scores them."""
    import train
    from skin_model.runtime.inference import predict_images
    from tests.conftest import lesion_image

    run = tmp_path / "run"
    shutil.copytree(trained_dir, run)
    config = json.loads((run / "run_config.json").read_text())
    config.update(second_look=4, second_look_band=50.0)
    (run / "run_config.json").write_text(json.dumps(config))
    assert train.main(["--data-dir", str(tiny_data), "--resume", str(run)]) == 0
    bundle = load_bundle(run)
    views = bundle.config.tta
    assert bundle.config.second_look_views == max(4, views)
    images = [lesion_image(dx, 4) for dx in ("mel", "nv", "bcc")]
    looked = predict_images(bundle, images)
    plain = replace(bundle.config, tta=max(4, views), second_look_views=1, second_look_band=0.0)
    four = predict_images(replace(bundle, config=plain), images)
    np.testing.assert_allclose(
        [p.probabilities for p in looked], [p.probabilities for p in four], atol=1e-5
    )
    assert all(p.views == max(4, views) for p in looked)
    fit = read_metrics(run).raw["calibration_fit"]["operating_point"]
    assert fit["sensitivity"] >= bundle.config.target_sensitivity


def test_attempt_settings_name_every_recipe_change():
    plain = settings_summary(TrainConfig())
    changed = settings_summary(TrainConfig(robust=0.35, resaved_files=0.35, verbose=0))
    assert "robust" not in plain and "resaved_files" not in plain
    assert "robust=0.35" in changed and "resaved_files=0.35" in changed
    assert "verbose" not in changed and changed.startswith(plain + " ")


def test_another_run_into_a_directory_keeps_the_earlier_attempts_row(tmp_path):
    mel = {"auc": 0.9, "sensitivity": 0.6}
    malignant = {"auc": 0.9, "operating_point": {"sensitivity": 0.9}, "calibration": {"ece": 0.02}}
    metrics = {"validation": {"balanced_accuracy": 0.7}, "balanced_accuracy": 0.7}
    metrics |= {"malignant": malignant, "macro_auc": 0.95, "calibration": {"ece": 0.02}}
    metrics |= {"per_class": {"mel": mel}}
    fit = {"epochs_run": 6, "best_epoch": 6, "train_seconds": 60.0, "device": "CPU"}
    path = tmp_path / "attempts.csv"
    append_attempt(path, "default", TrainConfig(epochs=6), fit, metrics)
    append_attempt(path, "default", TrainConfig(epochs=6), fit, metrics)  # finalised again
    assert pd.read_csv(path)["directory"].tolist() == ["default"]
    append_attempt(path, "default", TrainConfig(epochs=12), fit, metrics)  # another run
    table = pd.read_csv(path)
    assert table["directory"].str.startswith("default (replaced ").tolist() == [True, False]
    assert table["directory"].iloc[1] == "default"
    assert "epochs=12" in table["settings"].iloc[1]


def test_a_run_of_the_images_own_aspect_trains_finalises_and_runs_the_app_path(tiny_data, tmp_path):
    """``--input-height``: a 48x64 EfficientNet-Lite0 (random init, frozen stages, capture
    changes, a second look of 4 views) is finalised as 48x64; the app path gives a file and
    its quarter-turned copy one verdict and heatmaps at the image's own shape; exporting it
    says why it cannot."""
    from skin_model.runtime.explain import explain
    from skin_model.runtime.inference import predict_images
    from skin_model.runtime.serving import ExportError, serving_model
    from skin_model.train.training import train_model
    from tests.conftest import lesion_image

    cfg = TrainConfig(
        architecture="efficientnet_lite0",
        weights=None,
        input_size=64,
        input_height=48,
        epochs=1,
        batch_size=16,
        freeze_stages=3,
        cached_views=2,
        robust=0.35,
        second_look=4,
        second_look_band=50.0,
        name="aspect",
        verbose=0,
    )
    train_model(tiny_data, tmp_path / "aspect", cfg)
    bundle = load_bundle(tmp_path / "aspect")
    assert bundle.input_shape == (48, 64) and bundle.model.inputs[0].shape[1:3] == (48, 64)
    assert bundle.config.second_look_views == 4 and "48x64" in bundle.config.describe()
    image = lesion_image("mel", 2, (150, 200))
    turned = np.ascontiguousarray(np.rot90(image))
    plain, quarter = predict_images(bundle, [image, turned])
    np.testing.assert_allclose(plain.probabilities, quarter.probabilities, atol=1e-6)
    assert explain(bundle, image, 4).shape == (150, 200)
    assert explain(bundle, turned, 4).shape == (200, 150)
    with pytest.raises(ExportError, match="own aspect"):
        serving_model(bundle)
