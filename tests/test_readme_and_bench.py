"""README figures come from files; benchmark helpers; service and report helpers."""

import io

import keras
import numpy as np
import pytest
from keras import layers

from skin_model.evaluate.bench import count_flops, format_table, percentiles
from skin_model.reports import readme
from tests.fakes import prediction as _pred


def test_readme_generated_sections_are_current():
    text = readme.README.read_text(encoding="utf-8")
    assert readme.render(text) == text, "run `python -m skin_model.reports.readme`"
    assert "<!-- metrics:start -->\n<!-- metrics:end -->" not in text


def test_readme_prose_names_files_instead_of_typing_figures():
    assert readme.typed_figures(readme.README.read_text(encoding="utf-8")) == []
    typed = "It read 0.776 against 0.781, 5.1% of referrals, 2.28x; `--robust 0.350` is a setting."
    generated = "<!-- bench:start -->\nCLI 47.5 img/s\n<!-- bench:end -->"
    assert readme.typed_figures(f"{typed}\n{generated}\n```\n0.123\n```") == [
        typed.replace("`--robust 0.350`", "")
    ]
    assert readme.typed_figures("Targets: at most 0.03 and 5% of referrals.") == []


def test_the_candidates_table_starts_with_the_shipped_model_as_it_is():
    import json

    from skin_model import DEFAULT_MODEL_DIR
    from skin_model.evaluate.candidates import TEST_FIGURES
    from skin_model.evaluate.metrics import headline_values
    from skin_model.model.artifacts import read_json

    assert readme.CANDIDATES_FILE.is_file(), "run `python -m skin_model candidates ...`"
    first = json.loads(readme.CANDIDATES_FILE.read_text())["rows"][0]
    assert first["model"] == DEFAULT_MODEL_DIR.name
    assert first["changes"] == "(the shipped recipe)"
    shipped = headline_values(read_json(DEFAULT_MODEL_DIR / "metrics.json"))
    assert first["test"] == {k: round(shipped[k], 4) for k in TEST_FIGURES}


def test_the_frozen_fold_table_reads_each_run_s_fold_files(tmp_path):
    import json

    import pandas as pd

    fold = tmp_path / "run-a" / "fold0"
    fold.mkdir(parents=True)
    (fold / "fold.json").write_text(json.dumps({"train_seconds": 1830, "epochs_run": 3}))
    pd.DataFrame({"epoch": [0, 1, 2], "accuracy": [0.5, 0.6, 0.714]}).to_csv(
        fold / "history.csv", index=False
    )
    table = readme.frozen_fold_section(tmp_path, ("run-a", "run-missing"))
    assert table.splitlines()[2:] == ["| `run-a` | 30 | 3 | 0.71 |"]  # the last epoch's
    assert "No fold-0 runs" in readme.frozen_fold_section(tmp_path, ("run-missing",))


def test_shipped_recipe_is_matched_on_backbone_size_and_epochs():
    shipped = {"architecture": "efficientnet_lite0", "input_size": 192, "epochs": 6, "seed": 1}
    assert readme.is_shipped_recipe({**shipped, "seed": 2}, shipped)
    assert not readme.is_shipped_recipe({**shipped, "input_size": 160}, shipped)
    assert readme.is_shipped_recipe({**shipped, "input_height": 0}, shipped)  # square, recorded
    assert not readme.is_shipped_recipe({**shipped, "input_height": 144}, shipped)


def test_count_flops_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    x = layers.SeparableConv2D(6, 3, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(7)(x)
    model = keras.Model(inputs, outputs)
    conv = 2 * 8 * 8 * 9 * 3 * 4
    sep = 2 * 8 * 8 * (9 * 4 + 4 * 6)
    assert count_flops(model) == conv + sep + 2 * 6 * 7


def test_percentiles():
    p = percentiles([0.001 * i for i in range(1, 101)])
    assert p["p50_ms"] == pytest.approx(50.5) and p["n"] == 100


def test_targets_are_judged_against_the_figures():
    from skin_model.evaluate.bench import against

    assert against("upload_p50_ms", 40.0) == "(target < 300: met)"
    assert against("upload_p50_ms", 340.0) == "(target < 300: MISSED)"
    assert against("cli_images_per_s", 30) == "(target >= 40: MISSED)"
    assert against("app_rss_mb", None) == "(target < 1200: not measured)"


def test_bench_shows_test_figures_for_the_shipped_model_only(tmp_path):
    """A speed check of a candidate does not print its test split before the choice."""
    import shutil

    from skin_model import DEFAULT_MODEL_DIR
    from skin_model.evaluate.bench import quality_figures

    shipped = quality_figures(DEFAULT_MODEL_DIR)
    assert 0 < shipped["balanced_accuracy"] < 1
    candidate = tmp_path / "candidate"
    candidate.mkdir()
    for name in ("metrics.json", "config.json"):
        shutil.copy(DEFAULT_MODEL_DIR / name, candidate / name)
    assert set(quality_figures(candidate)) == {"not_shown"}


def test_recorded_benchmark_formats_and_judges_its_targets():
    import json

    assert readme.BENCH_FILE.is_file(), "run `python -m skin_model bench --out docs/bench.json`"
    r = json.loads(readme.BENCH_FILE.read_text())
    text = format_table(r)
    p50 = r["upload_latency"]["total"]["p50_ms"]
    assert f"{p50} / " in text
    assert ("target < 300: met" in text) == (p50 < 300)
    rss = r["app"]["rss_mb"]  # the memory goal is the app's, and the row says so
    assert ("images) (app target < 1200: met)" in text) == (rss < 1200)
    assert "shipped / seed resnet50" in text
    turns = r["cli_vs_resnet50"]["rounds"]
    assert len(turns) >= 3
    assert all(t["ratio"] == pytest.approx(t["cli"] / t["resnet50"], rel=0.01) for t in turns)
    speedup = float(np.median([t["ratio"] for t in turns]))
    assert f"x{round(speedup, 2)} (target >= 2: {'met' if speedup >= 2 else 'MISSED'})" in text
    assert "runtime: onnx" in text and "full bench only" not in text  # the exports' speed
    quick = format_table({**r, "runtimes": None})  # CI's quick run does not export
    assert "runtime: onnx" not in quick and "measured by the full bench only" in quick


def test_cli_row_judges_the_rounds_in_turns_and_names_the_first_pass():
    """The CLI's rate over the rounds is judged, and its floor is the median of the rounds'
    ratios to ResNet-50 measured in turns; the first pass (new batch shapes traced) is shown
    beside it."""
    import json

    from skin_model.evaluate.bench import cli_speedup

    r = json.loads(readme.BENCH_FILE.read_text())
    r["cli_first_pass_images_per_s"], r["cli_images_per_s"] = 12.3, 45.6
    r["cli_vs_resnet50"] = {
        "rounds": [{"cli": 45.6, "resnet50": 20.0, "ratio": x} for x in (2.28, 1.9, 2.1)],
        "median_ratio": 2.1,
    }
    text = format_table(r)
    assert "45.6 img/s (target >= 40: met)" in text and "first pass 12.3 img/s" in text
    assert "x2.1 (target >= 2: met) (median of rounds measured in turns: x2.28, x1.90" in text
    del r["cli_vs_resnet50"]  # a run recorded before the turns: one figure over the other
    assert cli_speedup(r) == round(45.6 / r["side_by_side"]["resnet50"]["images_per_s"], 2)


def test_csv_cells_are_formula_safe_and_numbers_plain():
    from skin_model.runtime.results import number, result_row

    row = result_row("=HYPERLINK(x).jpg", _pred(0.00003), quality=["blurred"], prevalence=0.05)
    assert row["file"] == "'=HYPERLINK(x).jpg"
    assert row["mel"] == "0.0000" and "e" not in row["malignant_risk"]
    assert row["quality_warnings"] == "blurred" and row["refer"] == "no"
    assert number(2.7e-05, 6) == "0.000027"
    assert result_row("@x", None, "+boom")["error"] == "'+boom"


def test_pdf_report_keeps_user_text_plain_and_readable():
    from pypdf import PdfReader

    from skin_model.runtime.report import ReportRecord, render_pdf

    img = np.zeros((60, 80, 3), dtype=np.uint8)
    record = ReportRecord(
        created="2026-12-01 10:00",
        case_reference="$ref$ **x**",
        notes="seen with $\\alpha$",
        files=["a$b$.jpg"],
        model="m",
        title="High risk: refer",
        refer=True,
        lines=["Refer urgently."],
        warnings=["The image looks blurred."],
        probabilities=np.full(7, 1 / 7),
        images=[img],
        overlay=img,
        overlay_title="Grad-CAM: Melanoma (mel)",
    )
    pdf = render_pdf(record)
    assert pdf.startswith(b"%PDF")
    text = " ".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages)
    for part in ("High risk: refer", "2026-12-01", "$ref$ **x**", "a$b$.jpg", "looks blurred"):
        assert part in text


def test_pdf_blocks_never_overlap_however_long_the_notes():
    from skin_model.runtime.report import ReportRecord, report_figure

    img = np.zeros((60, 80, 3), dtype=np.uint8)
    record = ReportRecord(
        created="2026-12-01 10:00",
        case_reference="R-1",
        notes="long notes " * 60,
        files=[f"image-{i}.jpg" for i in range(6)],
        model="m",
        title="Raised risk: refer",
        refer=True,
        lines=["Refer for a dermatology opinion.", "Tier average: about 12 of 100 " * 6],
        warnings=["The image looks blurred.", "The image is too dark."],
        probabilities=np.full(7, 1 / 7),
        images=[img, img],
        overlay=img,
        overlay_title="Grad-CAM: Melanoma (mel)",
    )
    fig = report_figure(record)
    renderer = fig.canvas.get_renderer()
    texts = [t for t in fig.texts if t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in texts]
    for ax in fig.axes:  # images, colour scale and chart, with their titles and labels
        outer = ax.get_tightbbox(renderer)
        for text, box in zip(texts, boxes, strict=True):
            assert not box.overlaps(outer), text.get_text()[:40]
    for i, a in enumerate(boxes):  # the page's own lines do not run into each other
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)
    page = fig.bbox
    assert all(page.contains(b.x0, b.y0) and page.contains(b.x1, b.y1) for b in boxes)


def test_an_earlier_candidates_table_follows_the_current_one_under_its_reference(tmp_path):
    import json

    def table(first: str, **extra) -> dict:
        figures = {"balanced_accuracy": 0.7, "malignant_auc": 0.9, "mel_auc": 0.9}
        figures |= {"mel_sensitivity": 0.6, "macro_auc": 0.95}
        row = {"model": first, "changes": "(the shipped recipe)", "chosen_on": figures}
        row |= {"against_first": None, "test": dict(figures), "train_minutes": 1}
        return {"parts": ["val", "calib"], "n_images": 10, "rows": [row], **extra}

    current, before = tmp_path / "candidates.json", tmp_path / "candidates_until_abc1234.json"
    oldest = tmp_path / "candidates_until_0aa0000.json"
    current.write_text(json.dumps(table("default")))
    before.write_text(json.dumps(table("old-pair", **_until("abc1234", "2026-12-06"))))
    oldest.write_text(json.dumps(table("older-pair", **_until("0aa0000", "2026-11-20"))))
    text = readme.candidates_section(current, [oldest, before])
    assert text.index("| default |") < text.index("shipped until commit abc1234")
    assert text.index("shipped until commit abc1234") < text.index("| old-pair |")
    assert text.index("| old-pair |") < text.index("| older-pair |")
    assert "`docs/candidates_until_abc1234.json`" in text
    assert "shipped until" not in readme.candidates_section(current, [])


def _screen(pair_ba: float, pair_auc: float) -> dict:
    """A partner screen's file: A+B shipped, C (B's command with mixup off) in B's place."""

    def scored(ba: float, auc: float) -> dict:
        return {
            "balanced_accuracy": ba,
            "malignant_auc": auc,
            "mel_auc": 0.9,
            "mel_sensitivity": 0.7,
        }

    settings = {"epochs": 12, "mixup": 0.2, "teachers": "models/t1,models/t2"}
    member = {"dir": "models/b", "settings": settings, "train_minutes": 20.4}
    candidate = member | {"settings": settings | {"mixup": 0.0, "cutmix": 1.0}}
    record = {"rule": "docs/screen_rule_x.txt", "first": "A", "replaced": "B", "candidate": "C"}
    record |= {"recipe_of": "B", "decided_at_views": 4}
    record |= {"bar": {"balanced_accuracy_gain": 0.015, "malignant_auc_loss": 0.005}}
    record["members"] = {"A": member | {"dir": "models/a"}, "B": member, "C": candidate}
    result = {f"C@{v}": scored(0.70 + v / 100, 0.92) for v in (4, 1, 2)}
    pairs = {"AB@4": scored(0.768, 0.934), "AC@4": scored(pair_ba, pair_auc)}
    return result | pairs | {"screen": record}


@pytest.mark.parametrize(
    ("pair_ba", "pair_auc", "passes"),
    [(0.784, 0.930, "yes"), (0.782, 0.934, "no"), (0.790, 0.928, "no")],
)
def test_the_screens_table_reads_the_change_and_judges_the_bar(tmp_path, pair_ba, pair_auc, passes):
    import json

    path = tmp_path / "screen_x_valcalib.json"
    path.write_text(json.dumps(_screen(pair_ba, pair_auc)))
    unrecorded = tmp_path / "screen_old_valcalib.json"
    unrecorded.write_text(json.dumps({"AB@4": {}}))
    text = readme.screens_section([unrecorded, path])
    row = next(line for line in text.splitlines() if "screen_rule_x" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "--cutmix 1 (was not set), --mixup 0 (was 0.2)"
    assert cells[2:5] == ["b", "0.710 / 0.720 / 0.740", f"{pair_ba:.3f}"]
    assert cells[-2:] == ["20", passes]
    assert "at least 0.015 balanced accuracy" in text
    assert readme.screens_section([unrecorded]).startswith("_No partner screen")


def _until(commit: str, date: str) -> dict:
    return {"shipped_until": commit, "shipped_until_date": date}


def _changed(ba_cost: float, auc_cost: float, flips: float) -> dict:
    return {
        "balanced_accuracy": 0.7 - ba_cost,
        "malignant_auc": 0.9 - auc_cost,
        "balanced_accuracy_cost": ba_cost,
        "auc_cost": auc_cost,
        "referrals_changed": flips,
    }


def test_the_robustness_summary_names_each_largest_cost_and_judges_the_targets():
    from skin_model.reports.tables import robustness_summary_frame

    plain = {"balanced_accuracy": 0.7, "malignant_auc": 0.9}
    steady = {
        "model": "models/default",
        "split": "test",
        "n_images": 10,
        "plain": plain,
        "changes": {"warm": _changed(0.03, 0.001, 0.02), "jpeg": _changed(0.01, 0.02, 0.05)},
    }
    fragile = {**steady, "model": "runs/x", "changes": {"turn": _changed(0.0, 0.0, 0.051)}}
    frame = robustness_summary_frame([("a.json", steady), ("b.json", fragile)])
    first, second = frame.to_dict("records")
    assert first["largest balanced accuracy lost"] == "0.030 (warm)"
    assert first["largest malignant AUC lost"] == "0.020 (jpeg)"
    assert first["largest referrals changed"] == "5.0% (jpeg)"
    assert first["within targets"] == "yes"  # each at its ceiling
    assert second["within targets"] == "**no**"  # 5.1% of referrals
    assert first["model"] == "default (test, 10 images)" and second["file"] == "`b.json`"
