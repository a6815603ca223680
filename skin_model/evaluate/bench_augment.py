"""Speed of the NumPy training augmentation (the data path of Keras on JAX, e.g. on a GPU
machine, where it bounded the epoch) with the shipped model's training settings at each
input side: milliseconds per image of :func:`augment_array`, of its saturation/hue step
against matplotlib's HSV round trip (a ratio in one run), and images per second of
:class:`ArrayBatches` with its worker threads.

``python -m skin_model.evaluate.bench_augment [--sizes 192,224] [--n 64] [--out FILE]``
prints one JSON object (and writes it to ``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from skin_model import DEFAULT_MODEL_DIR
from skin_model.data.batches import ArrayBatches, augment_array, scale_saturation_shift_hue
from skin_model.data.dataset import one_hot
from skin_model.model.settings import TrainConfig, read_run_record


def _ms_per_call(fn, n: int) -> float:
    """Median milliseconds of ``n`` calls of ``fn()`` (after one warm-up call)."""
    fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1000, 2)


def hsv_round_trip(x: np.ndarray, saturation: float, hue: float) -> np.ndarray:
    """The saturation/hue step as matplotlib's HSV round trip (the reference)."""
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    hsv[..., 0] = (hsv[..., 0] + hue) % 1.0
    return hsv_to_rgb(hsv)


def shipped_recipe(size: int) -> TrainConfig:
    """The shipped model's training settings (crop, white balance, capture changes) at
    input side ``size``.
    """
    return dataclasses.replace(read_run_record(DEFAULT_MODEL_DIR).config, input_size=size)


def cached_images(cfg: TrainConfig, n: int, seed: int = 0) -> np.ndarray:
    """``n`` random uint8 images at the size training caches them for ``cfg``."""
    return np.random.default_rng(seed).integers(0, 256, (n, *cfg.cache_size(), 3), dtype=np.uint8)


def size_figures(cfg: TrainConfig, n: int) -> dict:
    """Per-image milliseconds at the recipe's input side."""
    rng = np.random.default_rng(0)
    cached = cached_images(cfg, 1)[0]
    x = rng.random((*cfg.input_shape(), 3)).astype(np.float32)
    matplotlib_ms = _ms_per_call(lambda: hsv_round_trip(x, 1.2, 0.03), n)
    shortcut_ms = _ms_per_call(lambda: scale_saturation_shift_hue(x, 1.2, 0.03), n)
    changes = cfg.augmentation().image_args
    return {
        "augment_array_ms": _ms_per_call(lambda: augment_array(cached, rng, *changes), n),
        "saturation_hue_ms": shortcut_ms,
        "saturation_hue_matplotlib_ms": matplotlib_ms,
        "saturation_hue_speedup": round(matplotlib_ms / shortcut_ms, 2),
    }


def batches_per_second(cfg: TrainConfig, batches: int = 8) -> float:
    """Training images per second of :class:`ArrayBatches` drawn by as many threads as it
    asks Keras for (``workers``: one per CPU core).
    """
    n = cfg.batch_size * batches
    data = ArrayBatches(
        cached_images(cfg, n, seed=1),
        one_hot(["nv"] * n),
        cfg.batch_size,
        True,
        augmentation=cfg.augmentation(),
    )
    start = time.perf_counter()
    with ThreadPoolExecutor(data.workers) as pool:  # as Keras draws a PyDataset's batches
        count = sum(len(y) for _, y in pool.map(data.__getitem__, range(len(data))))
    return round(count / (time.perf_counter() - start), 1)


def main(argv: list[str] | None = None) -> int:
    """Print (and optionally write) the figures."""
    p = argparse.ArgumentParser(prog="python -m skin_model.evaluate.bench_augment")
    p.add_argument("--sizes", default="192,224")
    p.add_argument("--n", type=int, default=64, help="timed calls per figure")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    result = {"cpu_count": os.cpu_count()}
    for size in (int(s) for s in args.sizes.split(",")):
        cfg = shipped_recipe(size)
        result[str(size)] = {
            **size_figures(cfg, args.n),
            "array_batches_images_per_s": batches_per_second(cfg),
        }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
