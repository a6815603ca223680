"""Ensembles of finalised models: same split enforced, figures as the members' path."""

import shutil

import numpy as np
import pandas as pd
import pytest

from skin_model import CLASSES
from skin_model.cli import main
from skin_model.evaluate.ensemble import evaluate_ensemble, figures
from skin_model.evaluate.metrics import HEADLINES
from tests.conftest import on_another_split


def test_figures_of_perfect_outputs():
    y = np.repeat(np.arange(len(CLASSES)), 3)
    raw = np.full((len(y), len(CLASSES)), 0.01)
    raw[np.arange(len(y)), y] = 0.94
    values = figures(raw, y, None)
    assert values == dict.fromkeys(HEADLINES, 1.0)


def test_two_copies_of_one_model_score_as_the_model(trained_dir, tiny_data, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(trained_dir, twin)
    result = evaluate_ensemble([trained_dir, twin], tiny_data)
    for block in result["parts"].values():
        member, _, ensemble = block["rows"]
        assert {k: v for k, v in ensemble.items() if k != "model"} == pytest.approx(
            {k: v for k, v in member.items() if k != "model"}, abs=1e-3
        )
        assert block["n_images"] > 0
    assert set(result["images_per_second"]) == {trained_dir.name, "twin", "ensemble"}


def test_members_on_another_split_are_refused(trained_dir, tiny_data, tmp_path, capsys):
    other = on_another_split(trained_dir, tmp_path / "other")
    rc = main(["ensemble", str(trained_dir), str(other), "--data-dir", str(tiny_data)])
    assert rc == 2
    assert "another split" in capsys.readouterr().err


def test_recipe_changes_name_what_differs_from_the_shipped_recipe():
    from skin_model.evaluate.candidates import recipe_changes

    shipped = {"architecture": "lite0", "mixup": 0.0, "teachers": "m/a,m/b", "name": ""}
    assert recipe_changes(dict(shipped, name="x"), shipped) == "(the shipped recipe)"
    changed = dict(shipped, mixup=0.2, teachers="m/a, m/b, models/default")
    assert recipe_changes(changed, shipped) == "mixup 0.2; teachers 3 (a, b, default)"
    assert recipe_changes(dict(shipped, teachers=""), shipped) == "teachers none"
    averaged = dict(shipped, members="models/a, models/b")
    assert recipe_changes(shipped, averaged) == "members none"  # one network of the recipe
    older = {k: v for k, v in shipped.items() if k != "mixup"}  # predates the setting
    assert recipe_changes(older, shipped) == "(the shipped recipe)"  # = its default, 0


def test_candidates_are_scored_on_the_pooled_parts_beside_their_test(
    trained_dir, tiny_data, tmp_path, capsys
):
    import json

    from skin_model.evaluate.candidates import score_candidates

    twin = tmp_path / "twin"
    shutil.copytree(trained_dir, twin)
    metrics = json.loads((twin / "metrics.json").read_text())
    metrics["training"]["settings"]["ema_half_life"] = 1.0
    metrics["balanced_accuracy"] = 0.123  # the test figure comes from the file
    (twin / "metrics.json").write_text(json.dumps(metrics))
    result = score_candidates([trained_dir, twin], tiny_data)
    split = pd.read_csv(trained_dir / "split.csv")
    assert result["n_images"] == split["split"].isin(["val", "calib"]).sum() > 0
    first, second = result["rows"]
    assert first["changes"] == "(the shipped recipe)" and second["changes"] == "ema_half_life 1.0"
    assert first["chosen_on"] == second["chosen_on"]  # the same weights, the same figures
    assert first["against_first"] is None
    assert second["against_first"]["balanced_accuracy"]["difference"] == 0
    assert second["test"]["balanced_accuracy"] == 0.123 != first["test"]["balanced_accuracy"]
    (pair,) = result["pairs"]  # the first averaged with each other one
    assert pair["model"] == f"{trained_dir.name} + twin" and "test" not in pair
    assert pair["chosen_on"] == first["chosen_on"]  # a network averaged with itself
    assert pair["against_first"]["mel_auc"]["difference"] == 0
    out = tmp_path / "candidates.json"
    assert main(["candidates", str(trained_dir), str(twin), "--data-dir", str(tiny_data),
                 "--out", str(out)]) == 0  # fmt: skip
    from skin_model.reports.readme import candidates_section

    table = candidates_section(out)
    assert "| twin | ema_half_life 1.0 |" in table and "val + calib: balanced accuracy" in table
    assert "+0.000 (+0.000 to +0.000)" in table  # the twin against the first row
    assert f"| {trained_dir.name} + twin |" in table and "first model alone" in table
    gone = str(tmp_path / "gone")
    rc = main(["candidates", str(trained_dir), gone, "--data-dir", str(tiny_data)])
    assert rc == 2 and "gone" in capsys.readouterr().err
