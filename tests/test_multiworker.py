"""Training on several processes, as on several hosts, proved on this one: two real
worker processes on 127.0.0.1 (free ports) through ``TF_CONFIG`` (TensorFlow) and through
the JAX coordinator variables, compared with a one-process run of the same global batch;
a worker that dies stops the run with a message in bounded time; contradictory settings
are refused before any image is read. The commands are the README's (``tests.worker_run``
runs ``train.py`` on a tiny network)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from skin_model import REPO_ROOT
from skin_model.model.settings import read_run_record

SITE = Path(os.environ.get("SKIN_JAX_SITE", REPO_ROOT / ".jax-site"))
LIMIT_S = 300
"""Each process is killed after this many seconds (the tests stop themselves)."""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _env(backend: str, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("JAX_")}
    env.update(KERAS_BACKEND=backend, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    if backend == "jax":
        from tests.conftest import skip_or_fail

        if not (SITE / "jax").is_dir():
            skip_or_fail(f"jax not found in {SITE} (scripts/test.sh installs it)")
        env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(REPO_ROOT)])
    env.update(extra)
    return env


def _start(env: dict, data: Path, out: Path, *options: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.worker_run", str(data), str(out), *options]
    return subprocess.Popen(
        cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, float]]:
    """Wait for every process (killed at LIMIT_S); (exit code, stderr, seconds) each."""
    start, done = time.monotonic(), []
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, LIMIT_S - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        done.append((p.returncode, err, time.monotonic() - start))
    return done


def tf_config(ports: list[int], index: int) -> str:
    """The TF_CONFIG of worker ``index`` of a cluster on 127.0.0.1 (the README's form)."""
    workers = [f"127.0.0.1:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def _tf_workers(data, out, *options, die: int | None = None):
    ports = _free_ports(2)
    procs = []
    for i in range(2):
        extra = {"TF_CONFIG": tf_config(ports, i)}
        if die is not None and i == 1:
            extra["SKIN_TEST_DIE_AFTER_EPOCH"] = str(die)
        procs.append(_start(_env("tensorflow", **extra), data, out, *options))
    return _finish(procs)


def _jax_processes(data, out, *options, die: int | None = None):
    (port,) = _free_ports(1)
    procs = []
    for i in range(2):
        extra = {
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(i),
        }
        if die is not None and i == 1:
            extra["SKIN_TEST_DIE_AFTER_EPOCH"] = str(die)
        procs.append(_start(_env("jax", **extra), data, out, *options))
    return _finish(procs)


def _one_process(backend, data, out, *options):
    ((code, err, _),) = _finish([_start(_env(backend), data, out, *options)])
    assert code == 0, err[-3000:]


def _weights(path: Path) -> list[np.ndarray]:
    from skin_model.train.training import read_weight_list

    if path.suffix == ".npz":
        return read_weight_list(path)
    import keras

    return keras.models.load_model(path).get_weights()


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-3, atol=2e-5)


@pytest.mark.slow
def test_two_tensorflow_workers_train_as_one_process_and_only_the_chief_writes(tiny_data, tmp_path):
    _one_process("tensorflow", tiny_data, tmp_path / "one" / "m", "--fit-only")
    out = tmp_path / "two" / "m"
    results = _tf_workers(tiny_data, out)
    for code, err, _ in results:
        assert code == 0, err[-3000:]
    from skin_model.model.artifacts import check_model_files

    check_model_files(out)  # complete: every file the app needs, integrity checked
    for name in ("metrics.json", "MODEL_CARD.md", "config.json", "model.keras"):
        assert (out / name).is_file(), name
    assert not list(out.parent.glob(".m.worker-*")), "the worker's own directory is left"
    rows = (out.parent / "attempts.csv").read_text().strip().splitlines()
    assert len(rows) == 2, "the chief alone appends the attempts row"
    plan = read_run_record(out).distribution
    assert plan["strategy"] == "MultiWorkerMirroredStrategy" and plan["hosts"] == 2
    assert plan["global_batch"] == 16 and plan["per_replica_batch"] == 8
    one = _weights(tmp_path / "one" / "m" / "fitted_weights.npz")
    _assert_same(one, _weights(out / "model.keras"))


@pytest.mark.slow
def test_two_jax_processes_train_as_one_process(tiny_data, tmp_path):
    _one_process("jax", tiny_data, tmp_path / "one" / "m", "--fit-only")
    out = tmp_path / "two" / "m"
    for code, err, _ in _jax_processes(tiny_data, out, "--fit-only"):
        assert code == 0, err[-3000:]
    plan = read_run_record(out).distribution
    assert plan["strategy"] == "keras.distribution.DataParallel" and plan["hosts"] == 2
    assert not list(out.parent.glob(".m.worker-*"))
    one = _weights(tmp_path / "one" / "m" / "fitted_weights.npz")
    _assert_same(one, _weights(out / "fitted_weights.npz"))


@pytest.mark.slow
def test_a_tensorflow_worker_that_dies_stops_the_run_and_it_resumes(tiny_data, tmp_path):
    out = tmp_path / "m"
    (chief, err, seconds), (worker, _, _) = _tf_workers(
        tiny_data, out, "--epochs", "3", "--fit-only", die=1
    )
    assert worker == 17  # the crash the test asked for
    assert chief == 3, err[-3000:]
    assert "another process of this run stopped" in err and "--resume" in err
    assert seconds < LIMIT_S
    state = json.loads((out / "train_state.json").read_text())
    assert state["epochs_done"] == 1
    # every process started again with --resume continues from epoch 1
    for code, err, _ in _tf_workers(tiny_data, out, "--resume", str(out), "--fit-only"):
        assert code == 0, err[-3000:]
    assert json.loads((out / "train_state.json").read_text())["epochs_done"] == 3


@pytest.mark.slow
def test_a_jax_process_that_dies_stops_the_run_in_bounded_time(tiny_data, tmp_path):
    from skin_model.train.distribute import PEER_TIMEOUT_S

    (chief, err, seconds), (worker, _, _) = _jax_processes(
        tiny_data, tmp_path / "m", "--epochs", "3", "--fit-only", die=1
    )
    assert worker == 17
    assert chief != 0
    assert "heartbeat timeout" in err or "another task died" in err, err[-3000:]
    assert seconds < 3 * PEER_TIMEOUT_S + 60


BAD = [
    ({"TF_CONFIG": "{not json"}, "tensorflow", "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": '{"cluster": {}, "task": {}}'}, "tensorflow", "names no workers"),
    (
        {
            "TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", '
            '"index": 2}}'
        },
        "tensorflow",
        "task.index 2 is not one of the 2 worker addresses",
    ),
    (
        {
            "TF_CONFIG": '{"cluster": {"worker": ["a:1"], "ps": ["c:3"]}, "task": {"type": '
            '"worker", "index": 0}}'
        },
        "tensorflow",
        "names ps tasks",
    ),
    (
        {"TF_CONFIG": '{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker"}}'},
        "tensorflow",
        "names one address twice",
    ),
    ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "jax", "TensorFlow backend only"),
    ({"JAX_COORDINATOR_ADDRESS": "a:1"}, "jax", "JAX_NUM_PROCESSES, JAX_PROCESS_ID not"),
    (
        {"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
        "jax",
        "JAX_PROCESS_ID 2 is not in 0..1",
    ),
    (
        {"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
        "tensorflow",
        "KERAS_BACKEND=jax only",
    ),
    (
        {
            "TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}',
            "JAX_COORDINATOR_ADDRESS": "a:1",
        },
        "tensorflow",
        "both set",
    ),
]


@pytest.mark.parametrize(("env", "backend", "reason"), BAD)
def test_contradictory_cluster_settings_are_refused_in_one_line(env, backend, reason):
    from skin_model.train.distribute import DistributionError, read_cluster

    with pytest.raises(DistributionError, match=reason.replace(".", r"\.")) as info:
        read_cluster(backend, env)
    assert "\n" not in str(info.value)


def test_the_cluster_says_who_is_chief():
    from skin_model.train.distribute import Cluster, read_cluster, work_dir

    conf = {"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:2"]}}
    chief = read_cluster(
        "tensorflow", {"TF_CONFIG": json.dumps({**conf, "task": {"type": "chief"}})}
    )
    worker = read_cluster(
        "tensorflow", {"TF_CONFIG": json.dumps({**conf, "task": {"type": "worker", "index": 1}})}
    )
    assert (chief.processes, chief.index, chief.is_chief) == (3, 0, True)
    assert (worker.index, worker.is_chief) == (2, False)
    jax = read_cluster(
        "jax", {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    )
    assert jax == Cluster("JAX", 4, 3)
    assert read_cluster("tensorflow", {}) == Cluster()
    assert work_dir(Path("models/x"), chief) == Path("models/x")
    assert work_dir(Path("models/x"), worker) == Path("models/.x.worker-2")


def test_train_py_refuses_contradictory_settings_before_reading_images(
    tmp_path, monkeypatch, capsys
):
    import train

    monkeypatch.setenv("TF_CONFIG", "{broken")
    args = ["--data-dir", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "m")]
    assert train.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: TF_CONFIG is not valid JSON") and err.count("\n") == 1
    workers = '{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}'
    monkeypatch.setenv("TF_CONFIG", workers)
    assert train.main([*args, "--cv", "3"]) == 2
    assert "--cv runs on one process" in capsys.readouterr().err
