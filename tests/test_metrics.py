"""Metrics against hand-computed values; calibration; the operating point."""

import numpy as np
import pytest

from skin_model import CLASSES
from skin_model.evaluate.metrics import (
    binary_operating_point,
    bootstrap_intervals,
    calibration_bins,
    compute_metrics,
    operating_point_from_roc,
    target_status,
)
from skin_model.model.calibration import apply_temperature, fit_temperature, malignant_probability

# Classes: akiec=0 bcc=1 bkl=2 df=3 mel=4 nv=5 vasc=6
Y = np.array([5, 5, 5, 4, 4, 1])


def _probs(pred):
    p = np.full((len(pred), 7), 0.05)
    p[np.arange(len(pred)), pred] = 0.7
    return p


def test_balanced_accuracy_and_confusion_by_hand():
    pred = np.array([5, 5, 4, 4, 5, 1])  # nv 2/3, mel 1/2, bcc 1/1
    m = compute_metrics(Y, _probs(pred), threshold=0.5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"]["counts"][4][5] == 1
    mel = m["per_class"]["mel"]
    assert mel["sensitivity"] == pytest.approx(0.5)
    assert mel["specificity"] == pytest.approx(3 / 4)  # one nv predicted mel among 4 non-mel
    assert mel["precision"] == pytest.approx(0.5)
    assert m["per_class"]["df"]["auc"] is None and m["per_class"]["df"]["support"] == 0


def test_malignant_view_by_hand():
    pred = np.array([5, 5, 4, 4, 5, 1])
    m = compute_metrics(Y, _probs(pred), threshold=0.5)
    # malignant probability: 0.05*3 others + 0.7 if predicted malignant -> 0.8 or 0.15
    op = m["malignant"]["operating_point"]
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (2, 1, 1, 2)
    assert op["sensitivity"] == pytest.approx(2 / 3) and op["specificity"] == pytest.approx(2 / 3)
    assert m["malignant"]["prevalence"] == pytest.approx(0.5)


def test_malignant_probability_sums_three_classes():
    p = np.array([[0.1, 0.2, 0.1, 0.1, 0.3, 0.1, 0.1]])
    assert malignant_probability(p)[0] == pytest.approx(0.6)


def test_temperature_one_is_identity_and_sharpening_reverses():
    p = np.array([[0.6, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05]])
    assert np.allclose(apply_temperature(p, 1.0), p)
    assert apply_temperature(p, 2.0)[0, 0] < 0.6 < apply_temperature(p, 0.5)[0, 0]


def test_fit_temperature_softens_overconfident_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    pred = np.where(rng.random(500) < 0.5, y, rng.integers(0, 7, 500))
    p = np.full((500, 7), 0.01 / 6)
    p[np.arange(500), pred] = 0.99  # 99% confident, ~57% right
    t = fit_temperature(p, y)
    assert t > 1.5
    assert calibration_bins(apply_temperature(p, t), y)["ece"] < calibration_bins(p, y)["ece"]


def test_ece_by_hand():
    p = np.array([[0.9, 0.1] + [0] * 5, [0.9, 0.1] + [0] * 5, [0.6, 0.4] + [0] * 5])
    y = np.array([0, 1, 0])
    cal = calibration_bins(p, y, n_bins=10)
    # bin (0.8, 0.9]: conf 0.9 acc 0.5 (2 imgs); bin (0.5, 0.6]: conf 0.6 acc 1 (1 img)
    assert cal["ece"] == pytest.approx(2 / 3 * 0.4 + 1 / 3 * 0.4)
    assert sum(b["count"] for b in cal["bins"]) == 3


def test_operating_point_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.3, 0.2, 0.5, 0.1])
    op = binary_operating_point(y, s, 0.3)
    assert op["sensitivity"] == pytest.approx(0.75) and op["specificity"] == pytest.approx(0.5)


def test_decisions_override_argmax():
    p = _probs(np.array([5, 5, 5, 5, 5, 5]))
    m = compute_metrics(Y, p, 0.5, decisions=Y)  # every decision right despite nv argmax
    assert m["balanced_accuracy"] == 1.0
    assert m["per_class"]["mel"]["sensitivity"] == 1.0


def test_operating_point_from_roc():
    roc = {
        "fpr": [0.0, 0.1, 0.5, 1.0],
        "tpr": [0.0, 0.6, 0.9, 1.0],
        "thresholds": [1.0, 0.7, 0.3, 0.0],
    }
    pt = operating_point_from_roc(roc, prevalence=0.2, threshold=0.3)
    assert pt["sensitivity"] == 0.9 and pt["specificity"] == 0.5
    assert pt["referred_per_1000"] == pytest.approx(1000 * (0.2 * 0.9 + 0.8 * 0.5))
    assert operating_point_from_roc(roc, 0.2, 0.5)["sensitivity"] == 0.6


def _noisy_set(n_per_class=12, seed=0):
    """A labelled set where the true class gets a random boost (imperfect predictions)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(7), n_per_class)
    logits = rng.normal(size=(len(y), 7))
    logits[np.arange(len(y)), y] += 1.5
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


def test_bootstrap_intervals_are_one_for_perfect_predictions():
    y = np.repeat(np.arange(7), 4)
    iv = bootstrap_intervals(y, _probs(y), [str(i) for i in range(len(y))], 0.5, n_boot=50)
    for key in ("balanced_accuracy", "malignant_auc", "mel_auc", "macro_auc"):
        assert iv[key] == [1.0, 1.0], key
    assert iv["malignant_sensitivity"] == [1.0, 1.0]


def test_bootstrap_interval_brackets_the_estimate():
    y, p = _noisy_set()
    iv = bootstrap_intervals(y, p, np.arange(len(y)).astype(str), 0.5, n_boot=200)
    point = compute_metrics(y, p, 0.5)
    low, high = iv["balanced_accuracy"]
    assert low < point["balanced_accuracy"] < high
    assert iv["malignant_auc"][0] < point["malignant"]["auc"] < iv["malignant_auc"][1]


def test_bootstrap_resamples_whole_lesions():
    # Five identical images per lesion carry the information of one: grouped by lesion the
    # interval stays as wide as for one image per lesion; treated as separate it shrinks.
    y, p = _noisy_set()
    ids = np.arange(len(y)).astype(str)
    y5, p5, ids5 = np.repeat(y, 5), np.repeat(p, 5, axis=0), np.repeat(ids, 5)
    one = np.diff(bootstrap_intervals(y, p, ids, 0.5, n_boot=300)["balanced_accuracy"])[0]
    grouped = np.diff(bootstrap_intervals(y5, p5, ids5, 0.5, n_boot=300)["balanced_accuracy"])[0]
    naive = np.diff(
        bootstrap_intervals(y5, p5, np.arange(len(y5)).astype(str), 0.5, n_boot=300)[
            "balanced_accuracy"
        ]
    )[0]
    assert grouped == pytest.approx(one, rel=0.25)
    assert naive < 0.7 * grouped


def test_target_status_by_hand():
    m = compute_metrics(Y, _probs(np.array([5, 5, 4, 4, 5, 1])), threshold=0.5)
    m["malignant"]["calibration"]["ece"] = 0.08
    m["intervals"] = {"balanced_accuracy": [0.5, 0.9]}
    m["robustness"] = {"white_balance_cost": 0.04}
    rows = {r["key"]: r for r in target_status(m)}
    assert rows["balanced_accuracy"]["met"] is False  # 0.722 < 0.75
    assert rows["balanced_accuracy"]["interval"] == [0.5, 0.9]
    assert rows["malignant_ece"]["met"] is False  # 0.08 > 0.05
    assert rows["white_balance_cost"]["met"] is False  # 0.04 > 0.03
    assert rows["cam_ratio"]["met"] is None and rows["context_gain"]["met"] is None


def test_certain_predictions_score_without_warnings():
    import warnings

    y = np.arange(14) % len(CLASSES)
    probs = np.eye(len(CLASSES))[y]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(y, probs, 0.5)
    assert m["balanced_accuracy"] == 1.0 and 0 < m["log_loss"] < 1e-5


def test_paired_differences_of_one_model_with_itself_are_zero():
    from skin_model.evaluate.metrics import paired_differences

    y, p = _noisy_set()
    ids = np.arange(len(y)).astype(str)
    same = (p, p.argmax(axis=1))
    for key, block in paired_differences(y, same, same, ids, n_boot=50).items():
        assert block["difference"] == 0 and block["interval"] == [0.0, 0.0], key
        assert block["share_above"] == 0.0


def test_paired_differences_by_hand_and_their_sign():
    from skin_model.evaluate.metrics import paired_differences

    y, p = _noisy_set()
    ids = np.arange(len(y)).astype(str)
    noisy, perfect = (p, p.argmax(axis=1)), (_probs(y), y)
    point = compute_metrics(y, p, 0.5)
    up = paired_differences(y, noisy, perfect, ids, n_boot=200)
    ba = up["balanced_accuracy"]
    assert ba["difference"] == pytest.approx(1 - point["balanced_accuracy"], abs=1e-4)
    assert 0 < ba["interval"][0] <= ba["difference"] <= ba["interval"][1]
    assert ba["interval"][1] - ba["interval"][0] > 0.02  # the resamples were weighted
    assert ba["share_above"] == 1.0
    auc = up["malignant_auc"]
    assert auc["difference"] == pytest.approx(1 - point["malignant"]["auc"], abs=1e-4)
    down = paired_differences(y, perfect, noisy, ids, n_boot=200)["balanced_accuracy"]
    assert down["difference"] == -ba["difference"] and down["interval"][1] < 0
