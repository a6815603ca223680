"""``python -m skin_model bench``: speed, memory and quality in one run, with the seed's
architectures side by side as ratios. Prints a table and writes ``bench.json``.
Nothing here asserts a time: the figures are for people comparing changes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from skin_model import DEFAULT_MODEL_DIR, REPO_ROOT

TARGETS = {
    "upload_p50_ms": ("<", 300),
    "cli_images_per_s": (">=", 40),
    "cold_start_s": ("<", 10),
    "first_render_s": ("<", 10),
    "app_rss_mb": ("<", 1200),
    "resnet50_speedup": (">=", 2),
}
"""Speed and memory goals: each is printed beside its figure with whether it is met."""


def against(key: str, value, whose: str = "") -> str:
    """``"(target < 100: met)"`` for one :data:`TARGETS` entry and a measured value;
    ``whose`` names the figure the goal is for where a row shows several.
    """
    op, goal = TARGETS[key]
    name = f"{whose} target" if whose else "target"
    if not isinstance(value, (int, float)):
        return f"({name} {op} {goal}: not measured)"
    ok = value < goal if op == "<" else value >= goal
    return f"({name} {op} {goal}: {'met' if ok else 'MISSED'})"


def percentiles(samples_s: list[float]) -> dict:
    """p50/p95 in milliseconds of a list of seconds."""
    a = np.array(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "n": len(a),
    }


def count_flops(model) -> int:
    """Floating-point operations (2 x multiply-adds) of one forward pass, from layer shapes.

    Counts Conv2D, SeparableConv2D, DepthwiseConv2D and Dense; pooling, normalisation and
    activations are ignored (a few percent at most).
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        try:
            out = layer.output.shape
            inp = layer.input.shape
        except (AttributeError, ValueError):
            continue
        if isinstance(layer, layers.SeparableConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * (kh * kw * inp[-1] + inp[-1] * out[-1])
        elif isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * inp[-1]
        elif isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            total += 2 * out[1] * out[2] * kh * kw * inp[-1] * out[-1]
        elif isinstance(layer, layers.Dense):
            total += 2 * inp[-1] * out[-1]
    return int(total)


def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    """This CPU's float32 matrix-multiply rate (GFLOP/s) through TensorFlow."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(reps):
        tf.matmul(a, b).numpy()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def sample_images(data_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """``n`` image files' bytes from the data folder (synthetic JPEGs if it is absent)."""
    folder = Path(data_dir) / "images"
    files = sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []
    if files:
        return [(f.name, f.read_bytes()) for f in files]
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append((f"synthetic{i}.jpg", buf.getvalue()))
    return out


def upload_latency(bundle, uploads, tta: int, second_look: bool = True) -> dict:
    """One upload at a time: decode, resize+predict, heatmap; parts and total (at ``tta``
    views, with the model's second look near the threshold unless ``second_look`` is off).
    """
    from skin_model.data.imaging import decode_image
    from skin_model.runtime.explain import explain
    from skin_model.runtime.inference import predict_images

    saved = (bundle.config.tta, bundle.config.second_look_views)
    bundle.config.tta = tta
    if not second_look:
        bundle.config.second_look_views = 1
    parts = {"decode": [], "predict": [], "gradcam": [], "total": []}
    try:
        for _, data in uploads:
            t0 = time.perf_counter()
            image = decode_image(data)
            t1 = time.perf_counter()
            pred = predict_images(bundle, [image])[0]
            t2 = time.perf_counter()
            explain(bundle, image, pred.decision, views=pred.views)
            t3 = time.perf_counter()
            for k, v in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
                parts[k].append(v)
    finally:
        bundle.config.tta, bundle.config.second_look_views = saved
    return {k: percentiles(v) for k, v in parts.items()}


def naive_latency(bundle, uploads) -> dict:
    """The unoptimised path, for before/after: ``model.predict`` per image and a new
    tf-keras-vis explainer of the model's heatmap method (model clone) per call.
    """
    from skin_model.data.imaging import decode_image, resize_for_model
    from skin_model.runtime.explain import (
        bundle_cam_layer,
        bundle_cam_method,
        heatmap,
        make_explainer,
    )
    from skin_model.runtime.inference import batch_inputs

    predict_t, cam_t = [], []
    for _, data in uploads:
        image = decode_image(data)
        x = batch_inputs(bundle.model, resize_for_model(image, bundle.input_shape)[None])
        t0 = time.perf_counter()
        probs = bundle.model.predict(x, verbose=0)
        t1 = time.perf_counter()
        heatmap(
            make_explainer(bundle.model, bundle_cam_method(bundle)),
            bundle.model,
            image,
            int(probs.argmax()),
            bundle.input_shape,
            layer=bundle_cam_layer(bundle),
        )
        cam_t.append(time.perf_counter() - t1)
        predict_t.append(t1 - t0)
    return {"predict": percentiles(predict_t), "gradcam": percentiles(cam_t)}


def second_look_share(r: dict) -> str:
    """The CLI row's note of how many images took a second look ("" where none did)."""
    share = r.get("cli_second_look_share")
    return f" ({share:.0%} of the images near the threshold took a second look)" if share else ""


def cli_throughput(bundle, uploads, tmp: Path, resnet, rounds: int = 5) -> dict:
    """The CLI path (read, decode, batch predict, CSV rows) against the seed ResNet-50's
    network pass, measured in turns so both see the same machine load.

    A first pass over the files also traces each batch shape it meets for the first time
    (what a short batch pays once). Then ``rounds`` times: one CLI pass over the same files,
    then ResNet-50's steady pass (:func:`batch_throughput`, batch 32, 224 px). The judged
    floor (:func:`cli_speedup`) is the median of the per-round ratios: on a shared machine
    the load drifts within a run, so two figures measured minutes apart do not compare.

    Args:
        bundle: The loaded model.
        uploads: ``(name, bytes)`` pairs.
        tmp: A folder the files are written to (the CLI reads files).
        resnet: The seed ResNet-50 (random weights; speed does not depend on them).
        rounds: CLI and ResNet-50 turns.

    Returns:
        ``cli_first_pass_images_per_s``, ``cli_images_per_s`` (the rounds' median),
        ``cli_second_look_share`` and ``cli_vs_resnet50`` (``rounds``: each round's CLI and
        ResNet-50 images/s and ratio; ``median_ratio``).
    """
    from skin_model.runtime.predict import predict_files

    tmp.mkdir(parents=True, exist_ok=True)
    files = []
    for name, data in uploads:
        (tmp / name).write_bytes(data)
        files.append(tmp / name)
    predict_files(bundle, files[:8])

    def cli_pass() -> tuple[float, list[dict]]:
        start = time.perf_counter()
        rows = predict_files(bundle, files)
        return len(files) / (time.perf_counter() - start), rows

    first, rows = cli_pass()
    turns = []
    for _ in range(rounds):
        cli = cli_pass()[0]
        seed = batch_throughput(resnet, 224, 32, 2)
        turns.append({"cli": round(cli, 1), "resnet50": round(seed, 1), "ratio": cli / seed})
    looked = [int(row["views"]) > int(bundle.config.tta) for row in rows if row["views"] != ""]
    return {
        "cli_first_pass_images_per_s": round(first, 1),
        "cli_images_per_s": round(float(np.median([t["cli"] for t in turns])), 1),
        "cli_second_look_share": round(float(np.mean(looked)), 3) if looked else 0.0,
        "cli_vs_resnet50": {
            "rounds": [{**t, "ratio": round(t["ratio"], 3)} for t in turns],
            "median_ratio": round(float(np.median([t["ratio"] for t in turns])), 2),
        },
    }


def first_pass(r: dict) -> str:
    """The CLI's first pass over the files (new batch shapes traced), where recorded."""
    rate = r.get("cli_first_pass_images_per_s")
    return f"; first pass {rate} img/s" if rate else ""


def batch_throughput(model, size: int, batch: int, reps: int) -> float:
    """Images per second of one compiled forward pass over a preloaded batch."""
    import tensorflow as tf

    from skin_model.runtime.inference import batch_inputs

    fn = tf.function(lambda x: model(x, training=False))
    x = batch_inputs(model, np.random.uniform(0, 255, (batch, size, size, 3)))
    fn(x)
    start = time.perf_counter()
    for _ in range(reps):
        fn(x).numpy()
    return batch * reps / (time.perf_counter() - start)


def single_latency(model, size: int, reps: int) -> float:
    """Median milliseconds of a compiled single-image forward pass."""
    import tensorflow as tf

    from skin_model.runtime.inference import batch_inputs

    fn = tf.function(lambda x: model(x, training=False))
    x = batch_inputs(model, np.random.uniform(0, 255, (1, size, size, 3)))
    fn(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def train_throughput(model, steps: int, batch: int = 32) -> float:
    """Training images per second of a fresh copy of ``model`` over a few steps (after one
    warm-up step).
    """
    import keras

    from skin_model.runtime.inference import batch_inputs

    model = keras.Model.from_config(model.get_config())
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    hw = tuple(model.inputs[0].shape[1:3])
    x = batch_inputs(model, np.random.uniform(0, 255, (batch, *hw, 3)))
    y = keras.utils.to_categorical(np.arange(batch) % 7, 7)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch * steps / (time.perf_counter() - start)


def _child(name: str, *args: str, timeout: int = 600) -> dict:
    """Run one :mod:`skin_model.evaluate.bench_children` measurement in a fresh process."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    start = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "skin_model.evaluate.bench_children", name, *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["parent_start"] = start
    return out


def cli_and_app_figures(bundle, model_dir: Path, uploads, resnet, quick: bool) -> dict:
    """The CLI's throughput against ResNet-50 (:func:`cli_throughput`), then the peak memory
    of the CLI and of the app (child processes) and the app's first visit, over ``uploads``.
    """
    import tempfile

    r: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        r.update(cli_throughput(bundle, uploads, Path(tmp), resnet))
        folder = Path(tmp) / "cli"
        folder.mkdir()
        for name, data in uploads:
            (folder / name).write_bytes(data)
        cli = _child("cli_rss", str(model_dir), str(folder))
        r["cli_peak_rss_mb"] = round(cli.get("rss_mb", float("nan")), 1)
        app = _child(
            "app_rss",
            str(model_dir),
            str(folder),
            str(REPO_ROOT / "streamlit_app.py"),
            str(10 if quick else 50),
        )
        r["app"] = {
            k: round(v, 2)
            for k, v in app.items()
            if k in ("first_render_s", "first_result_s", "images", "rss_mb", "rssanon", "rssfile")
        } or app
    return r


def run_bench(model_dir: Path, data_dir: Path, quick: bool = False, out: Path | None = None):
    """Run every measurement, print the table and write ``bench.json``.

    Args:
        model_dir: The model to measure (default: the shipped one).
        data_dir: HAM10000-layout folder the sample images come from.
        quick: Fewer images and repetitions (CI).
        out: Where to write the JSON (None: do not write).

    Returns:
        The results dict.
    """
    import keras

    from skin_model.model.architectures import build_model
    from skin_model.model.artifacts import MODEL_FILE
    from skin_model.runtime.inference import load_bundle

    n_lat, n_cli, reps = (20, 128, 3) if quick else (60, 512, 10)
    uploads = sample_images(data_dir, max(n_lat, n_cli))
    bundle = load_bundle(model_dir)
    size = bundle.input_size
    r: dict = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "processor": _cpu_name(),
            "python": platform.python_version(),
        },
        "quick": quick,
    }
    from skin_model.runtime.explain import explain
    from skin_model.runtime.inference import predict_images

    predict_images(bundle, [np.zeros((150, 200, 3), np.uint8)])
    explain(bundle, np.zeros((150, 200, 3), np.uint8), 0)
    shipped_views = bundle.config.tta
    r["upload_latency"] = upload_latency(bundle, uploads[:n_lat], tta=shipped_views)
    r["upload_latency_no_tta"] = (
        upload_latency(bundle, uploads[:n_lat], tta=1, second_look=False)
        if max(shipped_views, bundle.config.second_look_views) > 1
        else r["upload_latency"]  # the shipped path already uses one view
    )
    r["naive_upload_latency"] = naive_latency(bundle, uploads[: max(5, n_lat // 4)])
    seeds = {name: build_model(name, 224) for name in ("custom_cnn", "resnet50")}
    r.update(cli_and_app_figures(bundle, model_dir, uploads[:n_cli], seeds["resnet50"], quick))
    cold = _child("cold_start", str(model_dir))
    r["cold_start_s"] = round(cold["done"] - cold["parent_start"], 2) if "done" in cold else cold
    saved = keras.models.load_model(Path(model_dir) / MODEL_FILE, compile=False)  # unfolded
    r["model"] = {
        "file_mb": round((Path(model_dir) / MODEL_FILE).stat().st_size / 1e6, 2),
        "parameters": int(saved.count_params()),
        "mflops_per_image": round(count_flops(bundle.model) / 1e6, 1),
        "input_size": size,
        "tta_views": shipped_views,
    }
    batch = 64
    r["predict_batch_images_per_s"] = round(batch_throughput(bundle.model, size, batch, reps), 1)
    gflops = matmul_gflops(1024 if quick else 2048)
    used = r["model"]["mflops_per_image"] * r["predict_batch_images_per_s"] / 1000
    r["headroom"] = {
        "matmul_gflops": round(gflops, 1),
        "inference_gflops": round(used, 2),
        "share_of_matmul_peak": round(used / gflops, 3),
    }
    r["train_images_per_s"] = round(train_throughput(saved, 2 if quick else 8), 1)
    # the exports' answers are tested (tests/test_serving.py); their speed is no target, and
    # exporting three formats would take CI's quick run about two minutes
    r["runtimes"] = None if quick else runtimes(model_dir, size, 256)
    r["side_by_side"] = side_by_side(bundle.model, size, quick, seeds, saved.count_params())
    r["quality"] = quality_figures(model_dir)
    print(format_table(r))
    if out:
        Path(out).write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
    return r


def runtimes(model_dir: Path, size: int, n: int) -> dict:
    """Images/s and peak memory of the exported SavedModel, LiteRT and ONNX files beside the
    in-process model, each in a fresh process (same images, batches of 16).
    """
    import tempfile

    from skin_model.runtime.serving import export

    out = {"in-process (predict_images)": _child("in_process", str(model_dir), str(size), str(n))}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("saved_model", "sm"), ("litert", "m.tflite"), ("onnx", "m.onnx")):
            try:
                path = export(Path(model_dir), fmt, Path(tmp) / name)
                out[fmt] = _child("runtime", fmt, str(path), str(size), str(n))
            except Exception as exc:  # a missing converter is reported, not fatal
                out[fmt] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
    return {
        k: {m: round(v, 1) for m, v in d.items() if m != "parent_start"} if "error" not in d else d
        for k, d in out.items()
    }


def side_by_side(model, size: int, quick: bool, seeds: dict, params: int) -> dict:
    """The shipped model as it runs against the seed's custom CNN and ResNet-50 at 224x224
    (``seeds``: name -> network, random weights; speed does not depend on them), as
    shipped / seed ratios; ``params``: the shipped network's as saved (before folding).
    """
    reps = 2 if quick else 5
    shipped = {
        "params": int(params),
        "mflops": count_flops(model) / 1e6,
        "images_per_s": batch_throughput(model, size, 32, reps),
        "single_ms": single_latency(model, size, 5 * reps),
    }
    out = {"shipped": {k: round(v, 2) for k, v in shipped.items()}}
    for name, seed in seeds.items():
        s = {
            "params": int(seed.count_params()),
            "mflops": count_flops(seed) / 1e6,
            "images_per_s": batch_throughput(seed, 224, 32, reps),
            "single_ms": single_latency(seed, 224, 2 * reps),
        }
        out[name] = {k: round(v, 2) for k, v in s.items()}
        out[f"ratio_vs_{name}"] = {
            "params": round(shipped["params"] / s["params"], 4),
            "mflops": round(shipped["mflops"] / s["mflops"], 4),
            "throughput": round(shipped["images_per_s"] / s["images_per_s"], 2),
            "single_latency": round(shipped["single_ms"] / s["single_ms"], 3),
        }
    return out


def _cpu_name() -> str:
    """The CPU model name from /proc/cpuinfo, where available."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


CANDIDATE_QUALITY = (
    "not shown for a model other than the shipped one: a candidate's test split is read once, "
    "after the choice (python -m skin_model evaluate)"
)


def quality_figures(model_dir: Path) -> dict:
    """The shipped model's headline test figures from its ``metrics.json`` (bench context);
    for any other directory (a candidate being screened for speed) a note instead, so a
    speed check does not read its test split before the choice.
    """
    from skin_model.model.artifacts import ArtifactError
    from skin_model.model.metrics_file import read_metrics

    if Path(model_dir).resolve() != DEFAULT_MODEL_DIR.resolve():
        return {"not_shown": CANDIDATE_QUALITY}
    try:
        m = read_metrics(model_dir)
    except ArtifactError as exc:
        return {"error": str(exc)}
    return {
        "balanced_accuracy": m.balanced_accuracy,
        "malignant_auc": m.malignant.auc,
        "macro_auc": m.macro_auc,
        "malignant_sensitivity": m.malignant.operating_point.sensitivity,
        "malignant_specificity": m.malignant.operating_point.specificity,
        "ece": m.calibration.ece,
    }


def first_visit_row(app: dict) -> tuple[str, str]:
    """The app's first visit: the page usable (uploader ready; the model loads meanwhile in
    the background) against its target, then the first upload's result; or a first render as
    older runs recorded it (model load included).
    """
    if "first_result_s" not in app:
        return "app first render (AppTest, model load incl.)", f"{app.get('first_render_s')} s"
    return (
        "app first visit: page usable / first result",
        f"{app['first_render_s']} s "
        + against("first_render_s", app["first_render_s"])
        + f" / {app['first_result_s']} s",
    )


def cli_speedup(r: dict) -> float:
    """The CLI's images/s (read, decode, every test-time view, CSV rows) over the seed
    ResNet-50's one network pass at 224 px: the speed floor a user gets. The median of
    the per-round ratios measured in turns (:func:`cli_throughput`); a run recorded before
    those turns: its one CLI figure over the side-by-side ResNet-50 figure.
    """
    if "cli_vs_resnet50" in r:
        return r["cli_vs_resnet50"]["median_ratio"]
    return round(r["cli_images_per_s"] / r["side_by_side"]["resnet50"]["images_per_s"], 2)


def seed_rows(r: dict) -> list[tuple[str, str]]:
    """The shipped network against the seeds' (one pass each), then the CLI against
    ResNet-50 (the judged floor).
    """
    rows = []
    for seed in ("custom_cnn", "resnet50"):
        ratio = r["side_by_side"][f"ratio_vs_{seed}"]
        rows.append(
            (
                f"shipped / seed {seed} @224 (one network pass)",
                f"params x{ratio['params']}, FLOPs x{ratio['mflops']}, "
                f"throughput x{ratio['throughput']}, latency x{ratio['single_latency']}",
            )
        )
    speedup = cli_speedup(r)
    text = f"throughput x{speedup} " + against("resnet50_speedup", speedup)
    turns = r.get("cli_vs_resnet50", {}).get("rounds")
    if turns:
        text += (
            " (median of rounds measured in turns: "
            + ", ".join(f"x{t['ratio']:.2f}" for t in turns)
            + ")"
        )
    return [*rows, ("CLI (its views) / seed ResNet-50 @224", text)]


def format_table(r: dict) -> str:
    """The results as a plain-text table (also pasted into the README)."""
    up, tta, naive = r["upload_latency"], r["upload_latency_no_tta"], r["naive_upload_latency"]
    q = r.get("quality", {})
    rows = [
        ("machine", f"{r['machine']['processor']}, {r['machine']['cpu_count']} cores"),
        (
            f"upload p50 / p95 (decode+predict x{r['model'].get('tta_views', 1)} views+heatmap)"
            + (" with second look" if r.get("cli_second_look_share") else ""),
            f"{up['total']['p50_ms']} / {up['total']['p95_ms']} ms "
            + against("upload_p50_ms", up["total"]["p50_ms"]),
        ),
        (
            "  decode / predict / heatmap p50",
            f"{up['decode']['p50_ms']} / {up['predict']['p50_ms']} / {up['gradcam']['p50_ms']} ms",
        ),
        (
            "upload p50 / p95 at one view, no second look",
            f"{tta['total']['p50_ms']} / {tta['total']['p95_ms']} ms",
        ),
        (
            "before optimisation: predict / heatmap p50",
            f"{naive['predict']['p50_ms']} / {naive['gradcam']['p50_ms']} ms "
            "(model.predict per image, new explainer per call)",
        ),
        (
            "CLI batch throughput",
            f"{r['cli_images_per_s']} img/s "
            + against("cli_images_per_s", r["cli_images_per_s"])
            + second_look_share(r)
            + first_pass(r),
        ),
        ("predict on a preloaded batch of 64", f"{r['predict_batch_images_per_s']} img/s"),
        (
            "cold start to first prediction",
            f"{r['cold_start_s']} s " + against("cold_start_s", r["cold_start_s"]),
        ),
        first_visit_row(r["app"]),
        (
            "peak RSS: CLI / app after classifying",
            f"{r['cli_peak_rss_mb']} MB / {r['app'].get('rss_mb')} MB "
            f"({r['app'].get('images')} images) "
            + against("app_rss_mb", r["app"].get("rss_mb"), whose="app"),
        ),
        (
            "  app memory: anonymous / shared-library pages",
            f"{r['app'].get('rssanon')} MB / {r['app'].get('rssfile')} MB",
        ),
        ("training throughput", f"{r['train_images_per_s']} img/s"),
        (
            "model",
            f"{r['model']['file_mb']} MB, {r['model']['parameters']:,} params, "
            f"{r['model']['mflops_per_image']} MFLOPs/img at {r['model']['input_size']}px",
        ),
        (
            "headroom",
            f"inference uses {r['headroom']['inference_gflops']} of "
            f"{r['headroom']['matmul_gflops']} GFLOP/s matmul peak "
            f"({r['headroom']['share_of_matmul_peak']:.1%})",
        ),
    ]
    rows.extend(seed_rows(r))
    if r.get("runtimes") is None:
        rows.append(("runtimes: SavedModel, LiteRT, ONNX", "measured by the full bench only"))
    for name, fig in (r.get("runtimes") or {}).items():
        text = (
            f"{fig['images_per_s']} img/s, peak RSS {fig['rss_mb']} MB"
            if "images_per_s" in fig
            else str(fig.get("error", fig))
        )
        rows.append((f"runtime: {name}", text))
    if "not_shown" in q:
        rows.append(("quality (test split)", q["not_shown"]))
    elif "balanced_accuracy" in q:
        rows.append(
            (
                "quality (test split)",
                f"bal. acc {q['balanced_accuracy']:.3f}, malignant AUC "
                f"{q['malignant_auc']:.3f}, sens/spec {q['malignant_sensitivity']:.3f}/"
                f"{q['malignant_specificity']:.3f}, ECE {q['ece']:.3f}",
            )
        )
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
