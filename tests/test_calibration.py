"""Calibration maths on hand-computed cases: prior shift, prevalence, risk reliability,
the threshold whose sensitivity holds, the temperature check and the OOD report."""

import numpy as np
import pytest

from skin_model.model.calibration import (
    adjust_prevalence,
    binary_calibration,
    calibrated_probabilities,
    choose_temperature,
    class_frequencies,
    class_weights,
    decide,
    lesion_resample_weights,
    malignant_probability,
    prior_shift,
    shift_malignant_prevalence,
    threshold_for_sensitivity,
    weighted_rule,
)

PRIOR = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])


def test_prior_shift_by_hand():
    # two classes, uniform-prior posterior 0.5/0.5, prior 0.8/0.2 -> 0.8/0.2
    out = prior_shift(np.array([[0.5, 0.5]]), [0.5, 0.5], [0.8, 0.2])
    assert out[0] == pytest.approx([0.8, 0.2])
    # posterior 0.2/0.8 under uniform, to prior 0.9/0.1: 0.18 / (0.18 + 0.08)
    out = prior_shift(np.array([[0.2, 0.8]]), [0.5, 0.5], [0.9, 0.1])
    assert out[0, 0] == pytest.approx(0.18 / 0.26)


def test_calibrated_probabilities_reweight_by_prior_and_keep_balanced_decision():
    raw = np.full((1, 7), 1 / 7)
    q = calibrated_probabilities(raw, PRIOR)
    assert q[0] == pytest.approx(PRIOR / PRIOR.sum())
    raw = np.array([[0.05, 0.05, 0.05, 0.05, 0.5, 0.25, 0.05]])
    q = calibrated_probabilities(raw, PRIOR)
    assert q.argmax() == 5  # nv is the most probable at the data's frequencies
    assert decide(raw, q, PRIOR)[0] == 4  # the balanced rule suggests mel
    assert decide(raw, calibrated_probabilities(raw, PRIOR, 2.5), PRIOR)[0] == 4  # any T
    assert decide(raw, q, None)[0] == 5  # a model without a prior: most probable class
    assert calibrated_probabilities(raw, None) is raw


def test_decision_weights_by_hand():
    raw = np.array([[0.05, 0.05, 0.05, 0.05, 0.35, 0.40, 0.05]])
    q = calibrated_probabilities(raw, PRIOR)
    assert decide(raw, q, PRIOR)[0] == 5  # nv a hair ahead under the balanced rule
    weights = class_weights({"mel": 1.5})
    assert weights == [1.0, 1.0, 1.0, 1.0, 1.5, 1.0, 1.0]
    assert decide(raw, q, PRIOR, weights)[0] == 4  # 0.35 x 1.5 > 0.40
    assert decide(raw, q, None, weights)[0] == 5  # without a prior: 0.35 x 1.5 < q's nv
    assert class_weights({"mel": 1.0}) is None
    for bad in ({"melanoma": 2.0}, {"mel": 0.0}):
        with pytest.raises(ValueError):
            class_weights(bad)
    assert weighted_rule("balanced", None) == "balanced"
    assert "mel 1.5x" in weighted_rule("balanced", weights)


def test_class_frequencies_count_every_class():
    f = class_frequencies(["nv", "nv", "nv", "mel"])
    assert f.sum() == pytest.approx(1.0)
    # 3 nv, 1 mel, and one pseudo-count for each of the 5 absent classes: 9 in all
    assert f[5] == pytest.approx(3 / 9) and f[4] == pytest.approx(1 / 9)
    assert f[0] == pytest.approx(1 / 9)


def test_adjust_prevalence_by_hand():
    # risk 0.5 at share 0.2 -> odds x (0.05/0.95)/(0.2/0.8)
    odds = 1.0 * (0.05 / 0.95) / (0.2 / 0.8)
    assert adjust_prevalence(0.5, 0.2, 0.05) == pytest.approx(odds / (1 + odds))
    assert adjust_prevalence(0.3, 0.2, 0.2) == pytest.approx(0.3)
    assert adjust_prevalence(np.array([0.0, 1.0]), 0.2, 0.5).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        adjust_prevalence(0.5, 0.2, 0.0)


def test_class_shift_agrees_with_risk_shift():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), 20)
    shifted = shift_malignant_prevalence(p, 0.2, 0.05)
    assert shifted.sum(axis=1) == pytest.approx(np.ones(20))
    assert malignant_probability(shifted) == pytest.approx(
        adjust_prevalence(malignant_probability(p), 0.2, 0.05)
    )


def test_binary_calibration_by_hand():
    risk = np.array([0.15, 0.15, 0.85, 0.85])
    y = np.array([0, 1, 1, 1])
    cal = binary_calibration(risk, y, n_bins=10)
    # bin (0.1,0.2]: mean 0.15 observed 0.5; bin (0.8,0.9]: mean 0.85 observed 1.0
    assert cal["ece"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert cal["mean_risk"] == pytest.approx(0.5) and cal["observed_share"] == 0.75


def test_resample_weights_keep_lesions_whole():
    w = lesion_resample_weights(["a", "a", "b", "c"], n_boot=50, seed=1)
    assert w.shape == (50, 4)
    assert (w[:, 0] == w[:, 1]).all()  # both images of lesion a always drawn together
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()  # 3 lesion draws per resample


def test_threshold_lower_bound_reaches_target_and_costs_sensitivity_margin():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.3).astype(int)
    risk = np.clip(rng.normal(0.3 + 0.4 * y, 0.15), 0, 1)
    groups = np.arange(n).astype(str)
    res = threshold_for_sensitivity(risk, y, groups, target=0.9, n_boot=400)
    assert res["sensitivity_lower"] >= 0.9
    assert res["sensitivity"] > res["sensitivity_lower"]  # the point estimate sits above
    point = np.mean(risk[y == 1] >= res["threshold"])
    assert point == pytest.approx(res["sensitivity"])
    # asking only for the point estimate would give a higher threshold
    naive = np.sort(risk[y == 1])[::-1][int(np.ceil(0.9 * (y == 1).sum())) - 1]
    assert res["threshold"] < naive


def test_a_calibration_part_without_malignant_images_leaves_the_threshold_unfitted_and_says_so():
    from skin_model.reports.card import threshold_line

    res = threshold_for_sensitivity(np.array([0.2, 0.7]), np.array([0, 0]), np.array(["a", "b"]))
    assert res["threshold"] == 0.5 and res["sensitivity"] is None and res["target"] == 0.9
    assert "not fitted" in threshold_line(0.5, res)
    fitted = {"sensitivity": 0.95, "sensitivity_lower": 0.91, "target": 0.9}
    assert "lower bound >= 0.90 (there: 0.950, lower bound 0.910)" in threshold_line(0.2, fitted)


def test_temperature_stays_one_on_calibrated_data():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7) * 0.7, 600)
    y = np.array([rng.choice(7, p=row) for row in p])  # labels drawn from the probabilities
    t, info = choose_temperature(p, y, np.arange(600).astype(str))
    assert t == 1.0 and info["held_out_nll_fitted"] >= info["held_out_nll_t1"]


def test_temperature_used_when_overconfident():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 600)
    pred = np.where(rng.random(600) < 0.5, y, rng.integers(0, 7, 600))
    p = np.full((600, 7), 0.01 / 6)
    p[np.arange(600), pred] = 0.99
    t, _ = choose_temperature(p, y, np.arange(600).astype(str))
    assert t > 1.5


def test_ood_report_by_hand():
    from skin_model.model.ood import ood_report

    r = ood_report([1.0, 2.0, 3.0, 10.0], [5.0, 20.0], limit=6.0)
    assert r["ham10000_flagged"] == 0.25 and r["non_dermoscopic_flagged"] == 0.5
    # pairs (in, out) ranked right: 5 beats 1, 2, 3 (not 10); 20 beats all four
    assert r["auroc"] == pytest.approx(7 / 8)


def test_fuse_context_changes_only_rows_with_a_context():
    from skin_model.data.metadata import MISSING, ContextModel, encode, parse_context
    from skin_model.model.calibration import fuse_context, late_fusion

    rng = np.random.default_rng(0)
    raw = rng.dirichlet(np.ones(7), 3)
    vectors = np.stack([MISSING, encode(parse_context(70, "male", "face")), MISSING])
    params = {"coef": rng.normal(size=(7, len(MISSING))).tolist(), "intercept": [0.0] * 7}
    params["classes"] = list(range(7))
    fused = fuse_context(raw, vectors, {"power": 0.5, **params})
    np.testing.assert_allclose(fused[[0, 2]], raw[[0, 2]])
    posterior = ContextModel.from_config(params).predict_proba(vectors[1:2])
    expected = late_fusion(raw[1:2], posterior, 0.5)
    np.testing.assert_allclose(fused[1:2], expected)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert fuse_context(raw, vectors, None) is raw
    np.testing.assert_allclose(fuse_context(raw, vectors, {"power": 0.0, **params}), raw)
