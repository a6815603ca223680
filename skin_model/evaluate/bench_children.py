"""Measurements that need a fresh process (cold start, peak memory), run by
:mod:`skin_model.evaluate.bench` as ``python -m skin_model.evaluate.bench_children NAME ARGS...``.

Each prints one JSON line last.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``; unlike ``ru_maxrss`` it is not
    inherited across ``exec`` from the parent).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_breakdown_mb() -> dict:
    """Current resident memory split into anonymous (heap, tensors) and file-backed (shared
    libraries, reclaimable and shared between processes) parts, in MB.
    """
    out = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("RssAnon:", "RssFile:")):
                out[line.split(":")[0].lower()] = round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return out


def cold_start(model: str) -> dict:
    """Import, load the model and classify one image; when it finished and peak memory."""
    from skin_model.runtime.inference import load_bundle, predict_images

    bundle = load_bundle(Path(model))
    predict_images(bundle, [np.full((150, 200, 3), 120, np.uint8)])
    return {"done": time.time(), "rss_mb": peak_rss_mb()}


def cli_rss(model: str, folder: str) -> dict:
    """Peak memory of ``python -m skin_model predict`` over a folder, run as users run it
    (a child process; its ``ru_maxrss``, which starts from this small process's own).
    """
    import resource
    import subprocess

    cmd = [sys.executable, "-m", "skin_model", "predict", "--quiet", "--model", model, folder]
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False).returncode
    return {"rc": rc, "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def app_rss(model: str, folder: str, app: str, n: str) -> dict:
    """A first visit (the page, then one upload's result, timed from the start) and the
    app's memory after classifying ``n`` uploads.
    """
    os.environ["SKIN_MODEL_DIR"] = model
    from streamlit.testing.v1 import AppTest

    t0 = time.perf_counter()
    at = AppTest.from_file(app, default_timeout=600).run()
    first = time.perf_counter() - t0
    files = sorted(Path(folder).glob("*.jpg"))[: int(n)]
    as_upload = [(f.name, f.read_bytes(), "image/jpeg") for f in files]
    at.file_uploader[0].set_value(as_upload[:1]).run()
    first_result = time.perf_counter() - t0
    at.file_uploader[0].set_value(as_upload[1:]).run()
    if at.exception:
        raise RuntimeError(str(at.exception[0].value))
    return {
        "first_render_s": first,
        "first_result_s": first_result,
        "images": len(files),
        "rss_mb": peak_rss_mb(),
        **rss_breakdown_mb(),
    }


def runtime(fmt: str, path: str, size: str, n: str) -> dict:
    """Images per second and peak memory of one exported runtime on ``n`` images."""
    from skin_model.runtime.serving import RUNNERS

    run = RUNNERS[fmt]
    images = np.random.default_rng(0).uniform(0, 255, (int(n), int(size), int(size), 3))
    images = images.astype(np.float32)
    run(Path(path), images[:4])  # load and warm up
    t0 = time.perf_counter()
    for start in range(0, len(images), 16):
        run(Path(path), images[start : start + 16])
    seconds = time.perf_counter() - t0
    return {"images_per_s": len(images) / seconds, "rss_mb": peak_rss_mb()}


def in_process(model: str, size: str, n: str) -> dict:
    """The same measurement for the in-process model (``predict_images``)."""
    from skin_model.runtime.inference import load_bundle, predict_images

    bundle = load_bundle(Path(model))
    images = np.random.default_rng(0).uniform(0, 255, (int(n), int(size), int(size), 3))
    images = list(images.astype(np.uint8))
    predict_images(bundle, images[:4])
    t0 = time.perf_counter()
    for start in range(0, len(images), 16):
        predict_images(bundle, images[start : start + 16])
    return {"images_per_s": len(images) / (time.perf_counter() - t0), "rss_mb": peak_rss_mb()}


CHILDREN = {
    "cold_start": cold_start,
    "cli_rss": cli_rss,
    "app_rss": app_rss,
    "runtime": runtime,
    "in_process": in_process,
}


def main(argv: list[str]) -> int:
    """Run the named measurement and print its JSON."""
    print(json.dumps(CHILDREN[argv[0]](*argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
