"""Seconds per training step with every layer trained against the top alone on cached
outputs of frozen early stages (``train.py --freeze-stages N``), in one run.

    python scripts/bench_frozen.py [--size 192] [--stages 2 3] [--steps 6] [--out FILE]

Prints one row per setting (and the cost of caching one view of an image) and writes them
as JSON with ``--out``. Random images and labels; the figures are ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def step_seconds(model, x, y, steps: int) -> float:
    """Median seconds of one ``train_on_batch`` after two warm-up steps."""
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--architecture", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    from skin_model.model.settings import TrainConfig
    from skin_model.train.frozen import split_at
    from skin_model.train.training import compile_model

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch, args.size, args.size, 3)).astype(np.float32)
    y = np.eye(7, dtype=np.float32)[rng.integers(0, 7, args.batch)]
    prior = np.full(7, 1 / 7)
    cfg = TrainConfig(
        architecture=args.architecture, input_size=args.size, weights=None, metadata=False
    )
    rows = [
        {
            "setting": "every layer",
            "step_s": step_seconds(compile_model(cfg, prior, 10), x, y, args.steps),
        }
    ]
    from skin_model.model.architectures import spec_for

    for n in args.stages:
        model = compile_model(cfg, prior, 10)
        bottom, top = split_at(model, spec_for(args.architecture).stage_ends[n])
        top.compile(optimizer=model.optimizer.__class__(), loss=model.loss)
        features = bottom.predict_on_batch(x)  # warm-up (traces the function)
        t = time.perf_counter()
        features = bottom.predict_on_batch(x).astype(np.float16)
        cache_s = (time.perf_counter() - t) / args.batch
        rows.append(
            {
                "setting": f"top on cached outputs, {n} stages frozen",
                "step_s": step_seconds(top, features.astype(np.float32), y, args.steps),
                "cache_s_per_view": cache_s,
                "cache_kb_per_view": features[0].nbytes / 1024,
            }
        )
    base = rows[0]["step_s"]
    for r in rows:
        r["speedup"] = round(base / r["step_s"], 2)
        extra = (
            f", caching {1000 * r['cache_s_per_view']:.1f} ms and {r['cache_kb_per_view']:.0f} KB"
            " per image view"
            if "cache_s_per_view" in r
            else ""
        )
        print(f"{r['setting']:<42} {r['step_s']:.2f} s/step  x{r['speedup']}{extra}")
    if args.out:
        meta = {"architecture": args.architecture, "size": args.size, "batch": args.batch}
        args.out.write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
