"""Lesion-grouped cross-validation: folds, late fusion, the weight average, a tiny run."""

import json

import numpy as np
import pandas as pd
import pytest

from skin_model import CLASSES
from skin_model.model.calibration import late_fusion
from skin_model.train.crossval import FUSION_POWERS, assign_folds, choose_fusion_power, read_oof
from skin_model.train.training import ema_decay


def _pool(n_lesions_per_class: int = 10, images_per_lesion: int = 3) -> pd.DataFrame:
    rows = [
        {"lesion_id": f"{dx}_{i}", "dx": dx}
        for dx in CLASSES
        for i in range(n_lesions_per_class)
        for _ in range(images_per_lesion)
    ]
    return pd.DataFrame(rows)


def test_folds_keep_lesions_whole_and_every_class_in_every_fold():
    df = _pool()
    df["fold"] = assign_folds(df, 5, seed=0)
    assert (df.groupby("lesion_id")["fold"].nunique() == 1).all()
    assert sorted(df["fold"].unique()) == [0, 1, 2, 3, 4]
    assert (df.groupby("fold")["dx"].nunique() == len(CLASSES)).all()
    assert (assign_folds(df, 5, seed=0) == df["fold"]).all()  # reproducible


def test_late_fusion_power_zero_is_the_image_and_one_is_the_product():
    image = np.array([[0.6, 0.4] + [0.0] * 5])
    meta = np.array([[0.2, 0.8] + [0.0] * 5])
    np.testing.assert_allclose(late_fusion(image, meta, 0.0), image)
    fused = late_fusion(image, meta, 1.0)
    np.testing.assert_allclose(fused[0, :2], [0.12 / 0.44, 0.32 / 0.44], atol=1e-5)


def _oof(image_right: bool, meta_right: bool, n: int = 140) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.arange(n) % len(CLASSES)
    eye = np.eye(len(CLASSES))

    def probs(right):
        base = rng.dirichlet(np.ones(len(CLASSES)), n)
        return 0.5 * base + 0.5 * eye[y] if right else base

    frame = pd.DataFrame({"dx": [CLASSES[i] for i in y], "fold": 0, "lesion_id": range(n)})
    for name, right in (("image", image_right), ("metadata_only", meta_right)):
        frame[[f"{name}:{c}" for c in CLASSES]] = probs(right)
    return frame


def test_fusion_power_follows_which_source_is_informative():
    assert choose_fusion_power(_oof(True, False), "image")["power"] == 0.0
    chosen = choose_fusion_power(_oof(False, True), "image")
    assert chosen["power"] == max(FUSION_POWERS)
    assert set(chosen["scores"]) == {str(p) for p in FUSION_POWERS}


def test_ema_decay_halves_in_the_half_life():
    decay = ema_decay(2.0, 50)
    assert decay**100 == pytest.approx(0.5)


@pytest.mark.parametrize("decay", [0.0, 1.0])
def test_weight_average_keeps_the_last_or_the_first_weights(tmp_path, decay):
    import keras

    from skin_model.train.training import make_ema_callback, read_ema

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    first = model.get_weights()
    callback = make_ema_callback(tmp_path, decay)
    x, y = np.random.default_rng(0).normal(size=(32, 4)), np.ones((32, 3))
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[callback], verbose=0)
    expected = model.get_weights() if decay == 0.0 else first
    for saved, want in zip(read_ema(tmp_path), expected, strict=True):
        np.testing.assert_allclose(saved, want, atol=1e-6)


@pytest.mark.slow
def test_tiny_cross_validation_covers_the_pool_once_and_resumes(
    tiny_data, trained_dir, tmp_path, capsys
):
    import train

    out = tmp_path / "cv"
    args = ["--data-dir", str(tiny_data), "--out", str(out), "--cv", "2"]
    args += ["--weights", "none", "--input-size", "32", "--epochs", "1", "--batch-size", "16"]
    args += ["--ema-half-life", "0.5", "--verbose", "0"]
    assert train.main(args) == 0
    oof = read_oof(out)
    split = pd.read_csv(tiny_data / "HAM10000_metadata.csv")
    assert oof["image_id"].is_unique and set(oof["image_id"]) < set(split["image_id"])
    assert (oof.groupby("lesion_id")["fold"].nunique() == 1).all()
    summary = json.loads((out / "cv.json").read_text())
    assert summary["folds_done"] == 2 and summary["n_images"] == len(oof)
    table = pd.read_csv(out / "cross_validation.csv")
    variants = {"image", "context", "ema_image", "ema_context", "metadata_only", "image_wb"}
    assert variants < set(table["variant"])
    fused = {f"late_fusion_{v}" for v in ("image", "context", "ema_image", "ema_context")}
    assert fused < set(table["variant"])
    assert set(table.loc[table["variant"] == "image", "fold"]) == {"0", "1", "mean", "sd", "pooled"}
    assert not list(out.glob("fold*/checkpoint.keras"))  # large files removed once a fold ends
    from skin_model.reports.tables import cv_frame, markdown

    n_variants = table["variant"].nunique()
    frame = cv_frame(summary)
    assert len(frame) == n_variants and len(markdown(frame).splitlines()) == 2 + n_variants
    assert "p chosen on the other folds" in frame["variant"].iloc[-1]
    assert "image_wb" in set(table["variant"])  # the white-balance-shifted copy is scored
    assert "image_views8" in set(table["variant"])  # and the mean of the 8 dihedral views
    assert list(out.glob("fold*/fold_model.keras"))  # fold models kept: ensemble members
    from skin_model.evaluate.ensemble import evaluate_cv_ensemble

    ens = evaluate_cv_ensemble(out, trained_dir, tiny_data)  # same split, fold models averaged
    assert ens["members"] == ["cv/fold0", "cv/fold1"] and set(ens["parts"]) == {"calib", "test"}
    for block in ens["parts"].values():
        assert block["rows"][0]["model"] == "smoke"
        assert all(0 <= r["balanced_accuracy"] <= 1 for r in block["rows"])
    from skin_model.evaluate.robustness import CHANGES
    from skin_model.reports.tables import levers_frame

    assert set(summary["changed_copies"]) == {"0", "1"}  # every fold's changed copies
    assert set(summary["changed_copies"]["0"]["changes"]) == set(CHANGES)
    row = levers_frame([("cv", summary)]).iloc[0]
    assert row["worst share of referrals changed"].endswith(")")  # names the change
    info = json.loads((out / "fold0" / "fold.json").read_text())
    expected = info.pop("changed_copies")
    (out / "fold0" / "fold.json").write_text(json.dumps(info))
    oof0 = pd.read_csv(out / "fold0" / "oof_predictions.csv")
    views = [c for c in oof0.columns if c.startswith("image_views8:")]
    oof0.drop(columns=views).to_csv(out / "fold0" / "oof_predictions.csv", index=False)
    from skin_model.cli import main as cli

    assert cli(["robustness", str(out), "--cv", "--data-dir", str(tiny_data)]) == 0
    rescored = json.loads((out / "fold0" / "fold.json").read_text())["changed_copies"]
    assert rescored["plain"] == pytest.approx(expected["plain"])  # same model, same figures
    again = pd.read_csv(out / "fold0" / "oof_predictions.csv")[views].to_numpy()
    np.testing.assert_allclose(again, oof0[views].to_numpy(), atol=2e-5)  # views re-scored
    assert "fold 0: balanced accuracy" in capsys.readouterr().out
    before = (out / "fold0" / "fold.json").read_text()
    assert train.main(args) == 0  # a finished run is summarised again, not retrained
    assert (out / "fold0" / "fold.json").read_text() == before


def test_recipe_line_names_every_lever():
    from skin_model.reports.tables import recipe_text

    base = {"architecture": "efficientnet_lite0", "input_size": 192, "epochs": 6}
    assert recipe_text(base) == "efficientnet_lite0 @192 px, 6 ep"
    levers = {**base, "backbone_lr_scale": 0.3, "head_warmup_epochs": 1, "colour_constancy": 6}
    text = recipe_text(
        {**levers, "white_balance": 0.1, "learning_rate": 0.002, "robust": 0.35, "freeze_stages": 2}
    )
    for part in (
        "capture changes p=0.35",
        "stem + 2 stages frozen, 6 cached views",
        "backbone lr x0.3",
        "head-only warm-up 1 ep",
        "Shades of Gray p=6",
        "±0.1",
        "lr 0.002",
    ):
        assert part in text
    assert "exposure" not in text  # the capture changes' own half-width goes unsaid
    assert "exposure ±0.3" in recipe_text({**base, "robust": 0.35, "exposure": 0.3})
    assert "rotation ±30°" in recipe_text({**base, "rotation": 30.0})
    own_aspect = {**base, "input_size": 224, "input_height": 168}
    assert recipe_text(own_aspect).startswith("efficientnet_lite0 @168x224 px")
    assert recipe_text({**base, "input_height": 0}) == recipe_text(base)
