"""Ensembles of finalised models: same split enforced, figures as the members' path."""

import shutil

import numpy as np
import pandas as pd
import pytest

from skin_model import CLASSES
from skin_model.cli import main
from skin_model.evaluate.ensemble import evaluate_ensemble, figures
from skin_model.evaluate.metrics import HEADLINES


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
    other = tmp_path / "other"
    shutil.copytree(trained_dir, other)
    split = pd.read_csv(other / "split.csv")
    split.loc[0, "split"] = "test" if split.loc[0, "split"] != "test" else "train"
    split.to_csv(other / "split.csv", index=False)
    rc = main(["ensemble", str(trained_dir), str(other), "--data-dir", str(tiny_data)])
    assert rc == 2
    assert "another split" in capsys.readouterr().err
