"""Test-time augmentation views, the detector's file and the config upgrade, without a
trained model."""

import json

import numpy as np
import pytest

from skin_model.model.config import SCHEMA, read_model_config
from skin_model.model.ood import read_stats, write_stats
from skin_model.runtime.inference import dihedral_views, mean_over_views


def test_dihedral_views_half_turn_then_rotations_first():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    four = dihedral_views(x, 4)
    assert four.shape == (8, 3, 3, 1)
    assert (four[:2] == x).all()  # view 0 is the identity, view-major
    assert (four[2:4] == np.rot90(x, 2, axes=(1, 2))).all()  # then the half turn
    assert (four[4:6] == np.rot90(x, 1, axes=(1, 2))).all()
    eight = dihedral_views(x)
    assert eight.shape == (16, 3, 3, 1) and (eight[8:10] == x[:, :, ::-1]).all()


def test_two_views_of_a_file_at_any_quarter_turn_are_the_same_pair():
    from skin_model.data.imaging import resize_for_model

    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)

    def views(im) -> np.ndarray:
        return dihedral_views(resize_for_model(im, 32)[None], 2).astype(int)

    def close(a, b) -> bool:  # Pillow's two passes round in another order when turned
        return np.abs(a - b).max() <= 1

    want = views(image)
    for turns in (1, 2, 3):
        got = views(np.rot90(image, turns).copy())
        same = close(got[0], want[0]) and close(got[1], want[1])
        swapped = close(got[0], want[1]) and close(got[1], want[0])
        assert same or swapped, turns
    assert not close(want[0], want[1])  # the two views differ


def test_mean_over_views_averages_each_image_over_its_own_views():
    per_view = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])  # 2 views x 2
    np.testing.assert_allclose(mean_over_views(per_view, 2), [[0.5, 0.5], [0.0, 1.0]])


@pytest.mark.parametrize(("value", "views"), [(True, 8), (False, 1), (None, 1), (4, 4), (1, 1)])
def test_config_upgrade_reads_old_tta_values(tmp_path, value, views):
    raw = {"architecture": "skinnet", "input_size": 96, "tta": value, "temperature": 1.2}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    config = read_model_config(tmp_path)
    assert config.tta == views and config.schema == SCHEMA and config.temperature == 1.2


def test_config_upgrade_fills_what_old_layouts_lacked(tmp_path):
    old = {"architecture": "skinnet", "input_size": 96, "tta": True, "classes": ["a"]}
    old |= {"malignant_threshold": 0.2, "ood_threshold": 3.0, "class_prior": [1.0]}
    (tmp_path / "config.json").write_text(json.dumps(old | {"unknown_key": 1}))
    config = read_model_config(tmp_path)
    assert config.ood_layers == ["features"] and config.cam_layer is None
    assert config.decision_rule.startswith("balanced")  # a class prior meant the balanced rule
    (tmp_path / "config.json").write_text(json.dumps(old | {"class_prior": None}))
    assert read_model_config(tmp_path).decision_rule.startswith("argmax")


def test_ood_file_round_trip_and_old_layout(tmp_path):
    stats = [(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)), (np.ones(2), np.eye(2))]
    write_stats(tmp_path / "ood.npz", stats)
    back = read_stats(tmp_path / "ood.npz")
    assert len(back) == 2 and (back[1][0] == 1).all() and back[0][1].shape == (3, 3)
    np.savez(tmp_path / "old.npz", mean=np.zeros(4), precision=np.eye(4))
    old = read_stats(tmp_path / "old.npz")
    assert len(old) == 1 and old[0][1].shape == (4, 4)


def test_the_exported_networks_views_are_the_apps_views():
    from skin_model.runtime.serving import _Dihedral

    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    eight = dihedral_views(x)
    for v in range(8):
        got = np.asarray(_Dihedral(v)(x))
        np.testing.assert_array_equal(got, eight[2 * v : 2 * v + 2], err_msg=str(v))


def test_dihedral_views_from_a_later_view_are_the_rest_of_the_table():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    assert (dihedral_views(x, 4, first=1) == dihedral_views(x, 4)[2:]).all()


def test_near_threshold_is_a_band_in_log_odds():
    from skin_model.runtime.inference import near_threshold

    risk = np.array([0.1, 0.12, 0.18, 0.5, 0.05])
    near = near_threshold(risk, np.full(5, 0.1), band=np.log(2.0))  # odds within 2x
    assert near.tolist() == [True, True, True, False, False]


def test_a_second_look_averages_more_views_only_near_the_threshold(trained_bundle):
    from dataclasses import replace

    from skin_model import CLASSES
    from skin_model.runtime.inference import log_odds, predict_images
    from tests.conftest import lesion_image

    cfg = replace(trained_bundle.config, tta=1, second_look_views=1, second_look_band=0.0)
    images = [lesion_image(dx, i) for i, dx in enumerate(CLASSES * 2)]

    def run(**changes):
        bundle = replace(trained_bundle, config=replace(cfg, **changes))
        return predict_images(bundle, images)

    one, four = run(), run(tta=4)
    gap = np.abs(log_odds([p.malignant_probability for p in one]) - log_odds(one[0].threshold))
    band = float(np.median(gap))
    near = gap < band
    assert 0 < near.sum() < len(images)
    looked = run(second_look_views=4, second_look_band=band)
    for p, plain, all_four, is_near in zip(looked, one, four, near, strict=True):
        want = all_four if is_near else plain
        assert p.views == (4 if is_near else 1)
        np.testing.assert_allclose(p.probabilities, want.probabilities, atol=1e-5)
        assert p.suspicious == want.suspicious
    # a lesion's images pooled: the result says the most views any of them took
    looks = replace(cfg, second_look_views=4, second_look_band=band)
    bundle = replace(trained_bundle, config=looks)
    pair = [int(np.flatnonzero(near)[0]), int(np.flatnonzero(~near)[0])]
    pooled = predict_images(bundle, [images[i] for i in pair], groups=[0, 0])
    assert [p.views for p in pooled] == [4]


def test_an_input_of_its_own_aspect_has_the_four_views_that_keep_its_shape():
    x = np.arange(2 * 3 * 4 * 1).reshape(2, 3, 4, 1)
    four = dihedral_views(x, 4)
    assert four.shape == (8, 3, 4, 1)
    assert (four[2:4] == np.rot90(x, 2, axes=(1, 2))).all()  # the half turn second
    assert (four[4:6] == x[:, :, ::-1]).all() and (four[6:] == x[:, ::-1]).all()
    with pytest.raises(ValueError, match="4 views"):
        dihedral_views(x, 8)
