"""Test-time augmentation views and the OOD feature-group file, without a trained model."""

import numpy as np
import pytest

from skin_model.inference import dihedral_views, read_ood, tta_views, write_ood


def test_dihedral_views_rotations_first():
    x = np.arange(2 * 3 * 3 * 1).reshape(2, 3, 3, 1)
    four = dihedral_views(x, 4)
    assert four.shape == (8, 3, 3, 1)
    assert (four[:2] == x).all()  # view 0 is the identity, view-major
    assert (four[2:4] == np.rot90(x, 1, axes=(1, 2))).all()
    eight = dihedral_views(x)
    assert eight.shape == (16, 3, 3, 1) and (eight[8:10] == x[:, :, ::-1]).all()


@pytest.mark.parametrize(("value", "views"), [(True, 8), (False, 1), (None, 1), (4, 4), (1, 1)])
def test_tta_views_reads_old_and_new_configs(value, views):
    assert tta_views(value) == views


def test_ood_file_round_trip_and_old_layout(tmp_path):
    stats = [(np.zeros(3, np.float32), np.eye(3, dtype=np.float32)), (np.ones(2), np.eye(2))]
    write_ood(tmp_path / "ood.npz", stats)
    back = read_ood(tmp_path / "ood.npz")
    assert len(back) == 2 and (back[1][0] == 1).all() and back[0][1].shape == (3, 3)
    np.savez(tmp_path / "old.npz", mean=np.zeros(4), precision=np.eye(4))
    old = read_ood(tmp_path / "old.npz")
    assert len(old) == 1 and old[0][1].shape == (4, 4)
