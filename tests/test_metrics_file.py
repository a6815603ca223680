"""The typed ``metrics.json`` reader: every reader's figures come through it, earlier
layouts are upgraded in it, and a damaged file is one clear error."""

import json

import pytest

from skin_model.evaluate.metrics import headline_values, target_status
from skin_model.model.artifacts import ArtifactError
from skin_model.model.metrics_file import Metrics, read_metrics


def _minimal() -> dict:
    per_class = {
        c: {"sensitivity": 0.5, "specificity": 0.9, "auc": 0.8, "support": 3}
        for c in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
    }
    return {
        "n_images": 21,
        "balanced_accuracy": 0.5,
        "per_class": per_class,
        "calibration": {"ece": 0.1, "ece_before_temperature": 0.2},
        "malignant": {"auc": 0.9, "operating_point": {"threshold": 0.2, "sensitivity": 0.9}},
        "ood": {"auroc": 0.97},
    }


def test_the_shipped_file_reads_typed_and_unchanged(shipped_model_dir):
    raw = json.loads((shipped_model_dir / "metrics.json").read_text())
    m = read_metrics(shipped_model_dir)
    assert m.balanced_accuracy == raw["balanced_accuracy"]
    assert m.malignant.auc == raw["malignant"]["auc"]
    assert m.per_class["mel"].sensitivity == raw["per_class"]["mel"]["sensitivity"]
    assert [t.key for t in m.malignant.tiers] == [t["key"] for t in raw["malignant"]["tiers"]]
    assert m.interval("balanced_accuracy") == tuple(raw["intervals"]["balanced_accuracy"])
    # the targets the file records are what the typed figures give again
    assert target_status(m) == raw["targets"]
    assert headline_values(m) == headline_values(raw)


def test_an_early_layout_is_upgraded_in_one_place():
    m = Metrics.from_dict(_minimal())
    assert m.calibration.ece_raw_outputs == 0.2  # was ece_before_temperature
    assert m.ood == {"synthetic": {"auroc": 0.97}}  # before real photographs were tested
    assert m.malignant.tiers == () and m.malignant.training_share is None
    assert m.malignant.operating_point.specificity is None
    assert m.with_metadata is None and m.best_epoch is None


@pytest.mark.parametrize(
    "content",
    ["", "{", "[1, 2]", json.dumps({"n_images": 3}), json.dumps({**_minimal(), "per_class": 1})],
)
def test_a_damaged_file_is_one_clear_error(tmp_path, content):
    (tmp_path / "metrics.json").write_text(content)
    with pytest.raises(ArtifactError, match="metrics"):
        read_metrics(tmp_path)


def test_a_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(ArtifactError, match=r"train\.py"):
        read_metrics(tmp_path)
