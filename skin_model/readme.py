"""Generated README sections: every figure in the README comes from a file evaluation,
the benchmark or the load test wrote (``python -m skin_model.readme`` rewrites them).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from skin_model import CLASSES, DEFAULT_MODEL_DIR, REPO_ROOT, display_name
from skin_model.artifacts import read_metrics

README = REPO_ROOT / "README.md"
BENCH_FILE = REPO_ROOT / "docs" / "bench.json"
LOAD_FILE = REPO_ROOT / "docs" / "load_test.json"


def _f(x) -> str:
    """Three decimals or n/a."""
    return "n/a" if x is None else f"{x:.3f}"


def metrics_section(model_dir: Path = DEFAULT_MODEL_DIR) -> str:
    """Headline and per-class tables from the shipped model's metrics.json."""
    m = read_metrics(model_dir)
    op = m["malignant"]["operating_point"]
    tr = m["training"]
    lines = [
        f"Test split: {m['n_images']} images of lesions never seen in training or validation. "
        f"Trained on {tr['device']} in {tr['train_seconds'] / 60:.0f} min "
        f"({tr['epochs_run']} epochs, best epoch {tr['best_epoch']}).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| balanced accuracy (mean per-class recall) | {_f(m['balanced_accuracy'])} |",
        f"| accuracy | {_f(m['accuracy'])} |",
        f"| macro one-vs-rest ROC AUC | {_f(m['macro_auc'])} |",
        f"| malignant-vs-benign ROC AUC | {_f(m['malignant']['auc'])} |",
        f"| malignant sensitivity / specificity at threshold {op['threshold']:.3f} | "
        f"{_f(op['sensitivity'])} / {_f(op['specificity'])} |",
        f"| expected calibration error after / before temperature scaling | "
        f"{_f(m['calibration']['ece'])} / {_f(m['calibration'].get('ece_before_temperature'))} |",
    ]
    if m.get("cam_localisation"):
        c = m["cam_localisation"]
        lines.append(
            f"| Grad-CAM energy in lesion box ÷ box area share (mean / median) | "
            f"{c['mean_ratio']:.2f} / {c['median_ratio']:.2f} |"
        )
    if m.get("ood"):
        o = m["ood"]
        lines.append(
            f"| 'not dermoscopic' flag: AUROC; flagged synthetic / HAM10000 test | "
            f"{o['auroc']:.3f}; {o['non_dermoscopic_flagged']:.0%} / "
            f"{o['ham10000_flagged']:.1%} |"
        )
    lines += [
        "",
        "| class | sensitivity | specificity | AUC | test images |",
        "|---|---|---|---|---|",
    ]
    for c in CLASSES:
        p = m["per_class"][c]
        lines.append(
            f"| {display_name(c)} | {_f(p['sensitivity'])} | {_f(p['specificity'])} "
            f"| {_f(p['auc'])} | {p['support']} |"
        )
    return "\n".join(lines)


def bench_section(path: Path = BENCH_FILE) -> str:
    """The benchmark table from a full ``bench`` run."""
    from skin_model.bench import format_table

    if not path.is_file():
        return (
            "_No benchmark recorded yet: run `python -m skin_model bench --out docs/bench.json`._"
        )
    return "```\n" + format_table(json.loads(path.read_text())) + "\n```"


def load_section(path: Path = LOAD_FILE) -> str:
    """The load-test table from ``scripts/load_test.py``."""
    if not path.is_file():
        return "_No load test recorded yet: run `scripts/load_test.py --out docs/load_test.json`._"
    rows = json.loads(path.read_text())
    lines = [
        "| sessions | latency p50 (s) | p95 (s) | correct vs CLI | cross-session leaks "
        "| server alive | server peak RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['sessions']} | {r['p50_s']} | {r['p95_s']} | {r['correct']}/{r['sessions']} "
        f"| {r['cross_session_leaks']} | {r['server_alive']} | {r['server_peak_mb']} MB |"
        for r in rows
    ]
    return "\n".join(lines)


SECTIONS = {"metrics": metrics_section, "bench": bench_section, "load": load_section}


def render(text: str) -> str:
    """README text with every generated section replaced by its current content."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(lambda m, make=make: m.group(1) + make() + "\n" + m.group(2), text)
    return text


if __name__ == "__main__":
    new = render(README.read_text(encoding="utf-8"))
    if "--check" in sys.argv:
        sys.exit(0 if new == README.read_text(encoding="utf-8") else 1)
    README.write_text(new, encoding="utf-8")
