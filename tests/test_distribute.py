"""Data-parallel training on two virtual CPU devices, on both backends: the first epochs'
losses and the fitted weights match a one-device run, the plan is recorded, and the
finalised directory loads in the app."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skin_model import REPO_ROOT
from skin_model.model.settings import read_run_record

pytestmark = pytest.mark.slow
SITE = Path(os.environ.get("SKIN_JAX_SITE", REPO_ROOT / ".jax-site"))


def _run(backend: str, data: Path, out: Path, devices: str, *extra: str) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO_ROOT)}
    if backend == "jax":
        from tests.conftest import skip_or_fail

        if not (SITE / "jax").is_dir():
            skip_or_fail(f"jax not found in {SITE} (scripts/test.sh installs it)")
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(REPO_ROOT)])
        env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    cmd = [sys.executable, "-m", "tests.distributed_run", str(data), str(out), devices, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_two_devices_train_as_one(backend, tiny_data, tmp_path):
    one = _run(backend, tiny_data, tmp_path / "one", "1")
    two = _run(backend, tiny_data, tmp_path / "two", "2")
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-4, atol=1e-5)
    for a, b in zip(one["weights"], two["weights"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    plan = read_run_record(tmp_path / "two").distribution
    assert plan["devices"] == 2 and plan["global_batch"] == 16 and plan["per_replica_batch"] == 8
    expected = "MirroredStrategy" if backend == "tensorflow" else "keras.distribution.DataParallel"
    assert plan["strategy"] == expected and plan["mixed_precision"] is False


def test_a_two_device_run_finalises_into_a_directory_the_app_loads(tiny_data, tmp_path):
    from skin_model.runtime.inference import load_bundle, predict_images
    from tests.conftest import lesion_image

    _run("tensorflow", tiny_data, tmp_path / "two", "2", "--finalise")
    bundle = load_bundle(tmp_path / "two")
    pred = predict_images(bundle, [lesion_image("mel", 1)])[0]
    assert abs(pred.probabilities.sum() - 1) < 1e-5


def test_more_devices_than_the_machine_has_is_a_clear_error(tiny_data, tmp_path, capsys):
    import train

    args = ["--data-dir", str(tiny_data), "--out", str(tmp_path / "m"), "--devices", "64"]
    assert train.main([*args, "--architecture", "skinnet", "--metadata", "false"]) == 2
    assert "--devices 64: this machine has" in capsys.readouterr().err
