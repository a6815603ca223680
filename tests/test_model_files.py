"""A missing, truncated, wrong or LFS-pointer model file gives a clear message."""

import shutil

import pytest

from skin_model.model.artifacts import ModelLoadError
from skin_model.runtime.inference import load_bundle


@pytest.fixture()
def model_copy(trained_dir, tmp_path):
    dest = tmp_path / "m"
    shutil.copytree(trained_dir, dest)
    return dest


def test_missing_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_missing_model_file(model_copy):
    (model_copy / "model.keras").unlink()
    with pytest.raises(ModelLoadError, match="No model file"):
        load_bundle(model_copy)


def test_lfs_pointer(model_copy):
    (model_copy / "model.keras").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"
    )
    with pytest.raises(ModelLoadError, match="git lfs pull"):
        load_bundle(model_copy)


def test_truncated_model_fails_sha_check(model_copy):
    path = model_copy / "model.keras"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="damaged"):
        load_bundle(model_copy)


def test_truncated_model_without_check_still_clear(model_copy):
    path = model_copy / "model.keras"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_bundle(model_copy, verify=False)


def test_missing_integrity_file(model_copy):
    (model_copy / "integrity.json").unlink()
    with pytest.raises(ModelLoadError, match=r"integrity\.json is missing"):
        load_bundle(model_copy)


def test_edited_config_fails_the_integrity_check(model_copy):
    path = model_copy / "config.json"
    path.write_text(path.read_text().replace('"temperature"', '"temperature" ', 1))
    with pytest.raises(ModelLoadError, match=r"config\.json is damaged"):
        load_bundle(model_copy)
