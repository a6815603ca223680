"""The things fitted after training follow one convention (scikit-learn's): made with
their settings, ``fit`` returns ``self`` with learned values in trailing-underscore
attributes, and ``to_config``/``from_config`` give the same fitted thing back. Fast: no
network, synthetic numbers."""

import json

import numpy as np
import pytest

from skin_model import CLASSES, MALIGNANT
from skin_model.data.metadata import DIM, ContextModel
from skin_model.data.quality import DEGRADATIONS, QualityGate, degrade, read_limits, shipped_gate
from skin_model.model.config import ModelConfig
from skin_model.model.ood import Detector
from skin_model.model.posthoc import PostHoc
from tests.conftest import lesion_image

MAL = [CLASSES.index(c) for c in MALIGNANT]


def _outputs(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Softmax-like outputs that lean towards the true class, with lesion ids."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(CLASSES), n)
    logits = rng.normal(0, 1, (n, len(CLASSES)))
    logits[np.arange(n), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, y, np.array([f"L{i // 2}" for i in range(n)])


def _config(**keys) -> ModelConfig:
    return ModelConfig(architecture="efficientnet_lite0", input_size=32, **keys)


def test_posthoc_fit_returns_itself_with_learned_values():
    probs, y, groups = _outputs()
    layer = PostHoc(malignant_share=0.2, target_sensitivity=0.9)
    assert (layer.temperature_, layer.threshold_) == (1.0, 0.5)  # before fit: identity
    assert layer.fit(probs, y, groups) is layer
    assert layer.temperature_ > 0 and 0 < layer.threshold_ < 1
    assert layer.fit_report_["threshold"]["threshold"] == pytest.approx(layer.threshold_, abs=1e-6)
    flagged = layer.apply(probs).flagged
    assert flagged[np.isin(y, MAL)].mean() >= 0.9  # the sensitivity it was fitted for


def test_a_stored_threshold_still_refers_the_images_it_was_fitted_on():
    """The threshold is stored rounded down: malignant risks tied just above a 6-decimal
    step (a barely trained network) stay referred."""
    probs, y, groups = _outputs()
    benign = [k for k in range(len(CLASSES)) if k not in MAL]
    for share in np.linspace(0.04, 0.06, 21):  # find a tie that plain rounding would lift
        tied = np.empty_like(probs)
        tied[:, MAL], tied[:, benign] = share / len(MAL), (1 - share) / len(benign)
        layer = PostHoc(malignant_share=0.2).fit(tied, y, groups)
        fitted = layer.fit_report_["threshold"]["threshold"]
        if round(fitted, 6) > fitted:
            break
    assert round(fitted, 6) > fitted >= layer.threshold_ > fitted - 1e-6
    assert layer.apply(tied).flagged[np.isin(y, MAL)].all()


def test_posthoc_survives_its_config_file():
    probs, y, groups = _outputs()
    weights = [1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0]
    layer = PostHoc(class_prior=[1 / 7] * 7, malignant_share=0.2, decision_weights=weights)
    layer.fit(probs, y, groups)
    stored = json.loads(json.dumps(layer.to_config()))
    back = PostHoc.from_config(_config(**stored))
    assert back.to_config() == layer.to_config() and back.decision_weights == weights
    np.testing.assert_array_equal(back.apply(probs).risk, layer.apply(probs).risk)
    np.testing.assert_array_equal(back.apply(probs).flagged, layer.apply(probs).flagged)
    np.testing.assert_array_equal(back.apply(probs).decisions, layer.apply(probs).decisions)


def test_decision_weights_move_suggestions_only():
    """A melanoma weight turns some suggestions to melanoma and leaves the probabilities,
    the risk and the referral as they were."""
    probs, y, groups = _outputs()
    plain = PostHoc(class_prior=[1 / 7] * 7, malignant_share=0.2).fit(probs, y, groups)
    weighted = PostHoc(
        class_prior=[1 / 7] * 7, malignant_share=0.2, decision_weights=[1, 1, 1, 1, 1.5, 1, 1]
    ).fit(probs, y, groups)
    a, b = plain.apply(probs), weighted.apply(probs)
    moved = a.decisions != b.decisions
    assert moved.any() and (b.decisions[moved] == CLASSES.index("mel")).all()
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.flagged, b.flagged)


def test_posthoc_prevalence_moves_risk_and_threshold_together():
    probs, y, groups = _outputs()
    layer = PostHoc(malignant_share=0.2).fit(probs, y, groups)
    out = layer.apply(probs)
    shifted, threshold = layer.at_prevalence(out.probabilities, layer.threshold_, 0.05)
    risk = shifted[:, MAL].sum(axis=1)
    assert threshold < layer.threshold_
    np.testing.assert_array_equal(risk >= threshold - 1e-9, out.flagged)


def test_detector_fit_save_and_read_back(tmp_path):
    rng = np.random.default_rng(0)
    train = [rng.normal(0, 1, (300, 6)), rng.normal(0, 1, (300, 4))]
    calib = [rng.normal(0, 1, (200, 6)), rng.normal(0, 1, (200, 4))]
    detector = Detector(["a", "b"], quantile=0.95)
    assert detector.fit(train, calib) is detector
    assert len(detector.stats_) == 2 and len(detector.group_limits_) == 2
    assert 0.02 <= detector.flagged(detector.score(calib)).mean() <= 0.08
    far = [rng.normal(6, 1, (20, 6)), rng.normal(6, 1, (20, 4))]
    assert detector.flagged(detector.score(far)).all()
    detector.save(tmp_path / "ood.npz")
    stored = json.loads(json.dumps(detector.to_config()))
    back = Detector.from_config(_config(**stored), tmp_path / "ood.npz")
    np.testing.assert_allclose(back.score(calib), detector.score(calib), rtol=1e-6)
    assert back.threshold_ == detector.threshold_


def test_context_model_convention():
    rng = np.random.default_rng(0)
    vectors = rng.normal(0, 1, (120, DIM))
    y = rng.integers(0, 3, 120)  # only three classes seen
    model = ContextModel()
    assert model.fit(vectors, y) is model and model.classes_ == [0, 1, 2]
    probs = model.predict_proba(vectors)
    assert probs.shape == (120, 7) and np.allclose(probs.sum(axis=1), 1)
    assert (probs[:, 3:] == 0).all()
    back = ContextModel.from_config(json.loads(json.dumps(model.to_config())))
    np.testing.assert_allclose(back.predict_proba(vectors), probs)


@pytest.fixture(scope="module")
def good_images() -> list[np.ndarray]:
    return [lesion_image(c, seed, size=(300, 400)) for seed in range(6) for c in CLASSES]


def test_quality_gate_fit_catches_its_own_bad_copies(good_images):
    gate = QualityGate(false_alarm=0.02)
    assert gate.fit(good_images) is gate
    assert set(gate.limits_) == {
        "sharpness_min",
        "brightness_min",
        "brightness_max",
        "clipped_max",
        "edge_asymmetry_max",
    }
    assert gate.n_images_ == len(good_images)
    assert gate.flagged_["original (any problem)"] <= 0.2
    for kind in ("blurred", "too_dark", "too_bright"):
        assert kind in gate.check(degrade(good_images[0], kind)), kind
        assert gate.flagged_[kind] >= 0.9, kind
    assert set(DEGRADATIONS) <= set(gate.flagged_)
    assert "too_small" in gate.check(good_images[0][:80, :90])


def test_quality_gate_survives_its_file(good_images, tmp_path):
    gate = QualityGate().fit(good_images[:14])
    path = tmp_path / "quality.json"
    path.write_text(json.dumps(gate.to_config()))
    back = QualityGate.from_config(read_limits(path))
    assert back.to_config() == gate.to_config()
    assert [back.check(im) for im in good_images] == [gate.check(im) for im in good_images]


def test_the_shipped_gate_is_the_shipped_file():
    stored = read_limits()
    gate = shipped_gate()
    assert gate.limits_ == stored["limits"] and gate.n_images_ == stored["n_images"]
    assert {k: v for k, v in stored.items() if k != "images"} == gate.to_config()
