"""Generated README sections: every figure in the README comes from a file evaluation,
the benchmark or the load test wrote (``python -m skin_model.reports.readme`` rewrites them).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from skin_model import DEFAULT_MODEL_DIR, REPO_ROOT
from skin_model.evaluate.robustness import CHANGED_COPY_TARGETS, cost_text
from skin_model.model.artifacts import CV_FILE, find_cv_dirs, read_json
from skin_model.model.metrics_file import read_metrics
from skin_model.model.settings import read_run_record
from skin_model.reports.card import cv_summary_text, reproduce_commands, training_sentence
from skin_model.reports.tables import (
    candidates_frame,
    context_frame,
    cv_frame,
    ensemble_frame,
    headline_frame,
    levers_frame,
    load_frame,
    markdown,
    pairs_frame,
    per_class_frame,
    robustness_frame,
    robustness_summary_frame,
    screens_frame,
    targets_frame,
)

README = REPO_ROOT / "README.md"
BENCH_FILE = REPO_ROOT / "docs" / "bench.json"
LOAD_FILE = REPO_ROOT / "docs" / "load_test.json"
SESSIONS_FILE = REPO_ROOT / "docs" / "load_sessions.json"
ROBUSTNESS_GLOB = REPO_ROOT / "docs" / "robustness_*.json"
ENSEMBLE_FILE = REPO_ROOT / "docs" / "ensemble.json"
CV_ENSEMBLE_FILE = REPO_ROOT / "docs" / "cv_ensemble.json"
CANDIDATES_FILE = REPO_ROOT / "docs" / "candidates.json"
EARLIER_CANDIDATES_GLOB = REPO_ROOT / "docs" / "candidates_until_*.json"
FROZEN_FILE = REPO_ROOT / "docs" / "bench_frozen.json"
AUGMENT_FILE = REPO_ROOT / "docs" / "bench_augment.json"
GPU_RUNS_DIR = REPO_ROOT / "docs" / "gpu_h200"
SCREENS_GLOB = REPO_ROOT / "docs" / "screen_*_valcalib.json"


def metrics_section(model_dir: Path = DEFAULT_MODEL_DIR) -> str:
    """Headline and per-class tables from the shipped model's metrics.json."""
    m = read_metrics(model_dir)
    tr = m.training
    lines = [
        f"Test split: {m.n_images} images of lesions never seen in training or validation. "
        + training_sentence(m)
        + " Reproduce it with:",
        "",
        "```bash",
        *reproduce_commands(tr["settings"]),
        "```",
        "",
        markdown(headline_frame(m)),
        "",
        *(
            [
                "With and without the patient context, on the same test images:",
                "",
                markdown(context_frame(m)),
                "",
            ]
            if m.with_metadata
            else []
        ),
        "Against the quality targets (`QUALITY_TARGETS` in `skin_model/evaluate/metrics.py`, "
        "the latest model-quality issue's goals; `python -m skin_model targets` judges a "
        "model's recorded figures against them again; intervals: "
        f"{m.intervals_method or 'not computed for this model'}):",
        "",
        markdown(targets_frame(m)),
        "",
        markdown(per_class_frame(m)),
    ]
    return "\n".join(lines)


def is_shipped_recipe(settings: dict, shipped: dict) -> bool:
    """Whether a cross-validation run's settings are the shipped model's backbone, input
    size and epochs (the rest of the recipe is in its summary line).
    """
    keys = ("architecture", "input_size", "input_height", "epochs")
    return all(settings.get(k, 0) == shipped.get(k, 0) for k in keys)  # 0: not recorded


def cv_section(root: Path = DEFAULT_MODEL_DIR.parent, model_dir: Path = DEFAULT_MODEL_DIR) -> str:
    """The full tables of every cross-validation run over more than one fold, the shipped
    model's recipe first.
    """
    runs = [(d, read_json(d / CV_FILE)) for d in find_cv_dirs(root)]
    runs = [(d, cv) for d, cv in runs if cv["folds_done"] > 1]
    if not runs:
        return "_No cross-validation recorded yet: run `python train.py --cv 5 --out DIR`._"
    shipped = read_run_record(model_dir).settings()
    runs = sorted(
        ((is_shipped_recipe(cv["settings"], shipped), d, cv) for d, cv in runs),
        key=lambda run: not run[0],
    )
    lines = []
    for ours, cv_dir, cv in runs:
        which = "Shipped recipe" if ours else "Earlier recipe"
        lines += [f"{which}, `{cv_dir.relative_to(REPO_ROOT)}`: {cv_summary_text(cv)}", ""]
        lines += [markdown(cv_frame(cv)), ""]
    return "\n".join(lines).rstrip()


def levers_section(root: Path = DEFAULT_MODEL_DIR.parent) -> str:
    """Every recipe lever on the same held-out fold 0 (one row per cross-validation run)."""
    runs = [(d.name, read_json(d / CV_FILE)) for d in find_cv_dirs(root)]
    if not runs:
        return "_No cross-validation recorded yet._"
    return markdown(levers_frame(runs))


def quality_section(path: Path | None = None) -> str:
    """The image-quality gate's limits and how often it fires (``skin_model/data/quality.json``)."""
    from skin_model.data.quality import LIMITS_FILE, MIN_SIDE, read_limits

    q = read_limits(path or LIMITS_FILE)
    lines = [
        f"Chosen by `python -m skin_model quality` on the {q['n_images']} images of the "
        f"{q['images']} ({q['method']}). Images under {MIN_SIDE} px on a side are also "
        "called too small.",
        "",
        "| check | limit | share flagged |",
        "|---|---|---|",
    ]
    lim = q["limits"]
    names = {
        "blurred": f"sharpness (variance of the Laplacian) below {lim['sharpness_min']:g}",
        "too_dark": f"central brightness below {lim['brightness_min']:g} of 255",
        "too_bright": f"central brightness above {lim['brightness_max']:g}, or over "
        f"{lim['clipped_max']:.0%} of central pixels white",
        "cut_off": f"edge asymmetry of the dark lesion region above {lim['edge_asymmetry_max']:g}",
    }
    for key, share in q["flagged"].items():
        what = names.get(key, "any of the checks")
        label = f"synthetic {key.replace('_', ' ')} copies" if key in names else "HAM10000 images"
        lines.append(f"| {label}: {what} | | {share:.1%} |")
    return "\n".join(lines)


def cv_ensemble_section(path: Path = CV_ENSEMBLE_FILE) -> str:
    """Fold models averaged vs the single model (``ensemble --cv``)."""
    if not path.is_file():
        return (
            "_No fold ensemble recorded yet: run `python -m skin_model ensemble MODEL --cv "
            "CV_DIR --out docs/cv_ensemble.json`._"
        )
    return markdown(ensemble_frame(json.loads(path.read_text())))


def bench_section(path: Path = BENCH_FILE) -> str:
    """The benchmark table from a full ``bench`` run."""
    from skin_model.evaluate.bench import format_table

    if not path.is_file():
        return (
            "_No benchmark recorded yet: run `python -m skin_model bench --out docs/bench.json`._"
        )
    return "```\n" + format_table(json.loads(path.read_text())) + "\n```"


def load_section(path: Path = LOAD_FILE) -> str:
    """The load-test table from ``scripts/load_test.py``."""
    if not path.is_file():
        return "_No load test recorded yet: run `scripts/load_test.py --out docs/load_test.json`._"
    return markdown(load_frame(json.loads(path.read_text())))


def sessions_section(path: Path = SESSIONS_FILE) -> str:
    """First visit and memory over sequential sessions (``load_test.py --sequential``)."""
    if not path.is_file():
        return (
            "_No sequential sessions recorded yet: run `scripts/load_test.py --sessions "
            "--sequential 50 --sequential-out docs/load_sessions.json`._"
        )
    s = json.loads(path.read_text())
    return (
        f"{s['sessions']} sessions one after another (each uploads an image, waits for its "
        f"result and closes its tab). First visit: the Classify page was usable (uploader "
        f"ready) {s['first_visit_s']} s after the server started (the model loads meanwhile, "
        f"in the background); upload to result p50 {s['latency_p50_s']} s. Server memory "
        f"after the 5th session {s['rss_after_5th_mb']} MB, after the last "
        f"{s['rss_after_last_mb']} MB ({s['growth_after_5th_mb']:+} MB; at most "
        f"{s['max_growth_after_5th_mb']:+} MB in between: Streamlit keeps a closed tab's "
        f"session for a reconnect for about two minutes, then frees it with its cases). "
        f"{s['correct']}/{s['sessions']} showed the CLI's result; "
        f"{s['cross_session_leaks']} cross-session leaks."
    )


def robustness_section(paths: list[Path] | None = None) -> str:
    """Changed copies of held-out images per model and split (``docs/robustness_*.json``)."""
    paths = sorted(ROBUSTNESS_GLOB.parent.glob(ROBUSTNESS_GLOB.name)) if paths is None else paths
    if not paths:
        return (
            "_No changed copies scored yet: run `python -m skin_model robustness MODEL --split "
            "val --out docs/robustness_NAME_val.json`._"
        )
    results = [(p.name, json.loads(p.read_text())) for p in paths]
    goals = ", ".join(
        f"{label} at most {cost_text(key, goal)}" for key, label, goal in CHANGED_COPY_TARGETS
    )
    return "\n\n".join(
        [
            f"The largest cost of any changed copy, per file (targets: {goals}):",
            markdown(robustness_summary_frame(results)),
            "Every changed copy:",
            markdown(robustness_frame([r for _, r in results])),
        ]
    )


def ensemble_section(path: Path = ENSEMBLE_FILE) -> str:
    """Members' and ensemble figures from ``python -m skin_model ensemble --out``."""
    if not path.is_file():
        return (
            "_No ensemble recorded yet: run `python -m skin_model ensemble DIR DIR "
            "--out docs/ensemble.json`._"
        )
    return markdown(ensemble_frame(json.loads(path.read_text())))


def candidates_section(path: Path = CANDIDATES_FILE, earlier: list[Path] | None = None) -> str:
    """The shipped model and the candidates for its place (``python -m skin_model
    candidates --out docs/candidates.json``), then each earlier table, kept as it was
    judged against a model shipped before (``docs/candidates_until_<commit>.json``, its
    ``shipped_until`` commit and ``shipped_until_date``), the latest first.
    """
    if not path.is_file():
        return (
            "_No candidates scored yet: run `python -m skin_model candidates models/default "
            "DIR... --out docs/candidates.json`._"
        )
    if earlier is None:
        earlier = list(EARLIER_CANDIDATES_GLOB.parent.glob(EARLIER_CANDIDATES_GLOB.name))
    tables = [(p, json.loads(p.read_text())) for p in earlier]
    tables.sort(key=lambda pt: pt[1]["shipped_until_date"], reverse=True)
    text = _candidates_text(json.loads(path.read_text()))
    for p, result in tables:
        text += (
            f"\n\nEarlier candidates, each judged against the model shipped until commit "
            f"{result['shipped_until']} (its first row; `docs/{p.name}`).\n\n"
            + _candidates_text(result)
        )
    return text


def _candidates_text(result: dict) -> str:
    """One candidates table and its pair table, as markdown."""
    names = {"val": "validation", "calib": "calibration"}
    parts = " and ".join(names.get(p, p) for p in result["parts"])
    head = f"{result['n_images']} images of the {parts} parts, pooled"
    head += " (image only, each model's own test-time views)."
    text = head + "\n\n" + markdown(candidates_frame(result))
    if result.get("pairs"):
        text += (
            "\n\nTwo networks averaged (the mean of their balanced-prior outputs, decided by"
            " the same balanced rule), on the same images; a pair has no test figures until"
            " it is chosen and built.\n\n" + markdown(pairs_frame(result))
        )
    return text


def screens_section(paths: list[Path] | None = None) -> str:
    """Every partner screen (``scripts/screen_mixed_pair.py``'s files that record their
    screen), by file name, with the images they were scored on and the bar they judge.
    """
    if paths is None:
        paths = sorted(SCREENS_GLOB.parent.glob(SCREENS_GLOB.name))
    results = [r for r in (json.loads(p.read_text()) for p in paths) if "screen" in r]
    if not results:
        return "_No partner screen recorded yet: run `scripts/screen_mixed_pair.py`._"
    bars = {json.dumps(r["screen"]["bar"], sort_keys=True) for r in results}
    bar = results[0]["screen"]["bar"]
    judged = (
        f"passes if its pair gains at least {bar['balanced_accuracy_gain']:g} balanced "
        f"accuracy over the shipped pair and loses at most {bar['malignant_auc_loss']:g} "
        "malignant AUC"
        if len(bars) == 1
        else "is judged by the bar its own file records"
    )
    return (
        "Validation and calibration parts pooled (image only, mean of the two networks' "
        "logits, the shipped decision weights; the test split is not read). A candidate "
        f"{judged}.\n\n" + markdown(screens_frame(results))
    )


def frozen_section(path: Path = FROZEN_FILE) -> str:
    """Seconds per training step, every layer against the top on cached outputs
    (``scripts/bench_frozen.py --out docs/bench_frozen.json``).
    """
    if not path.is_file():
        return (
            "_No frozen-stage timing recorded yet: run `python scripts/bench_frozen.py --out "
            "docs/bench_frozen.json`._"
        )
    b = json.loads(path.read_text())
    lines = [
        f"| {b['architecture']} @{b['size']} px, batch {b['batch']} | s per step | speed-up "
        "| caching, ms per image view | cache, KB per image view |",
        "|---|---|---|---|---|",
    ]
    for r in b["rows"]:
        cache = (
            f"{1000 * r['cache_s_per_view']:.1f} | {r['cache_kb_per_view']:.0f}"
            if "cache_s_per_view" in r
            else " | "
        )
        lines.append(f"| {r['setting']} | {r['step_s']:.2f} | x{r['speedup']} | {cache} |")
    return "\n".join(lines)


FROZEN_FOLD_RUNS = ("cv-efficientnet_lite0-192-e6", "cv-efficientnet_lite0-192-e6-frozen3")
"""The every-layer and the frozen-top run of one recipe on fold 0, compared in the README."""


def frozen_fold_section(root: Path = REPO_ROOT / "models", names=FROZEN_FOLD_RUNS) -> str:
    """Fold 0 of each run in ``names``: minutes and the last epoch's training accuracy (its
    ``fold0/fold.json`` and ``fold0/history.csv``; the held-out figures are the lever table's).
    """
    import pandas as pd

    lines = [
        "| fold-0 run | minutes (caching and held-out scoring included) | epochs | "
        "training accuracy, last epoch |",
        "|---|---|---|---|",
    ]
    for name in names:
        fold = Path(root) / name / "fold0"
        if not (fold / "history.csv").is_file():
            continue
        info, last = read_json(fold / "fold.json"), pd.read_csv(fold / "history.csv").iloc[-1]
        lines.append(
            f"| `{name}` | {info['train_seconds'] / 60:.0f} | {info['epochs_run']} | "
            f"{last['accuracy']:.2f} |"
        )
    return "\n".join(lines) if len(lines) > 2 else "_No fold-0 runs of that pair kept._"


def augment_section(path: Path = AUGMENT_FILE) -> str:
    """Milliseconds per image of the NumPy augmentation and batches per second with its
    threads (``python -m skin_model.evaluate.bench_augment --out docs/bench_augment.json``).
    """
    if not path.is_file():
        return (
            "_No augmentation timing recorded yet: run `python -m skin_model.evaluate."
            "bench_augment --out docs/bench_augment.json`._"
        )
    b = json.loads(path.read_text())
    lines = [
        "| input side | augment_array, ms per image | saturation and hue: HSV round trip "
        f"-> shortcut, ms | speed-up | ArrayBatches, images/s ({b['cpu_count']} threads) |",
        "|---|---|---|---|---|",
    ]
    for size, r in ((k, v) for k, v in b.items() if k != "cpu_count"):
        lines.append(
            f"| {size} px | {r['augment_array_ms']:.1f} | {r['saturation_hue_matplotlib_ms']:.1f}"
            f" -> {r['saturation_hue_ms']:.1f} | x{r['saturation_hue_speedup']} "
            f"| {r['array_batches_images_per_s']:.0f} |"
        )
    return "\n".join(lines)


def gpu_runs_section(root: Path = GPU_RUNS_DIR) -> str:
    """Per-epoch figures of the runs fitted on a GPU machine (their ``history.csv``,
    ``run_config.json`` and ``train_state.json``, copied into ``docs/gpu_h200/``).
    """
    import pandas as pd

    runs = sorted(d for d in root.glob("*") if (d / "history.csv").is_file())
    if not runs:
        return "_No run fitted on a GPU machine recorded yet._"
    lines = [
        "| run | planned epochs | epoch | s per step | training BA | validation BA | "
        "learning rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in runs:
        cfg = read_json(d / "run_config.json")
        name = f"{cfg['architecture']} @{cfg['input_size']} px, {cfg['distribution']['backend']}"
        for _, row in pd.read_csv(d / "history.csv").iterrows():
            lines.append(
                f"| {name} | {cfg['epochs']} | {int(row['epoch']) + 1} | "
                f"{row['step_seconds']:.2f} | {row['balanced_accuracy']:.3f} | "
                f"{row['val_balanced_accuracy']:.3f} | {row['learning_rate']:.2g} |"
            )
        state = read_json(d / "train_state.json")
        lines.append(
            f"| {name}: stopped | {cfg['epochs']} | {state['epochs_done']} done | "
            f"{state['seconds'] / 60:.1f} min of fitting on {state['device']} | | | |"
        )
    return "\n".join(lines)


SECTIONS = {
    "metrics": metrics_section,
    "levers": levers_section,
    "cv": cv_section,
    "cv_ensemble": cv_ensemble_section,
    "quality": quality_section,
    "ensemble": ensemble_section,
    "candidates": candidates_section,
    "robustness": robustness_section,
    "bench": bench_section,
    "load": load_section,
    "sessions": sessions_section,
    "frozen": frozen_section,
    "frozen_fold": frozen_fold_section,
    "augment": augment_section,
    "gpu_runs": gpu_runs_section,
    "screens": screens_section,
}


def render(text: str) -> str:
    """README text with every generated section replaced by its current content."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


# A measured-looking figure: three decimals, a percentage or a speed-up with decimals, a rate.
_FIGURE = re.compile(
    r"(?<![\w.])\d+\.\d{3}\b|\b\d+\.\d+ ?%|\bx\d+\.\d+|\b\d+\.\d+x\b|\b\d+(?:\.\d+)? img/s"
)


def typed_figures(text: str) -> list[str]:
    """Measured-looking figures typed into README prose, outside generated sections.

    Generated sections, code blocks and inline code (settings, rule bounds) are left out;
    what remains should name the file or table a figure comes from instead of the figure.

    Args:
        text: The README's text.

    Returns:
        Each offending prose line (inline code removed), stripped.
    """
    prose = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", "", text, flags=re.S)
    prose = re.sub(r"```.*?```", "", prose, flags=re.S)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return [line.strip() for line in prose.splitlines() if _FIGURE.search(line)]


if __name__ == "__main__":
    new = render(README.read_text(encoding="utf-8"))
    if "--check" in sys.argv:
        sys.exit(0 if new == README.read_text(encoding="utf-8") else 1)
    README.write_text(new, encoding="utf-8")
