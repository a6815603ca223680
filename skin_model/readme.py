"""Generated README sections: every figure in the README comes from a file evaluation,
the benchmark or the load test wrote (``python -m skin_model.readme`` rewrites them).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from skin_model import DEFAULT_MODEL_DIR, REPO_ROOT
from skin_model.artifacts import CV_FILE, find_cv_dirs, read_json, read_metrics
from skin_model.card import cv_summary_text, reproduce_command
from skin_model.tables import (
    context_frame,
    cv_frame,
    ensemble_frame,
    headline_frame,
    load_frame,
    markdown,
    per_class_frame,
    targets_frame,
)

README = REPO_ROOT / "README.md"
BENCH_FILE = REPO_ROOT / "docs" / "bench.json"
LOAD_FILE = REPO_ROOT / "docs" / "load_test.json"
ENSEMBLE_FILE = REPO_ROOT / "docs" / "ensemble.json"


def metrics_section(model_dir: Path = DEFAULT_MODEL_DIR) -> str:
    """Headline and per-class tables from the shipped model's metrics.json."""
    m = read_metrics(model_dir)
    tr = m["training"]
    lines = [
        f"Test split: {m['n_images']} images of lesions never seen in training or validation. "
        f"Trained on {tr['device']} in {tr['train_seconds'] / 60:.0f} min "
        f"({tr['epochs_run']} epochs; weights of epoch {tr['best_epoch']} kept). "
        "Reproduce it with:",
        "",
        "```bash",
        reproduce_command(tr["settings"]),
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
            if m.get("with_metadata")
            else []
        ),
        "Against the quality targets (intervals: "
        f"{m.get('intervals_method', 'not computed for this model')}):",
        "",
        markdown(targets_frame(m)),
        "",
        markdown(per_class_frame(m)),
    ]
    return "\n".join(lines)


def cv_section(root: Path = DEFAULT_MODEL_DIR.parent) -> str:
    """The cross-validation tables of every ``models/*/cv.json``."""
    dirs = find_cv_dirs(root)
    if not dirs:
        return "_No cross-validation recorded yet: run `python train.py --cv 5 --out DIR`._"
    lines = []
    for cv_dir in dirs:
        cv = read_json(cv_dir / CV_FILE)
        lines += [f"`{cv_dir.relative_to(REPO_ROOT)}`: {cv_summary_text(cv)}", ""]
        lines += [markdown(cv_frame(cv)), ""]
    return "\n".join(lines).rstrip()


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
    return markdown(load_frame(json.loads(path.read_text())))


def ensemble_section(path: Path = ENSEMBLE_FILE) -> str:
    """Members' and ensemble figures from ``python -m skin_model ensemble --out``."""
    if not path.is_file():
        return (
            "_No ensemble recorded yet: run `python -m skin_model ensemble DIR DIR "
            "--out docs/ensemble.json`._"
        )
    return markdown(ensemble_frame(json.loads(path.read_text())))


SECTIONS = {
    "metrics": metrics_section,
    "cv": cv_section,
    "ensemble": ensemble_section,
    "bench": bench_section,
    "load": load_section,
}


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
