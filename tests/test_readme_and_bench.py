"""README figures come from files; benchmark helpers; service and report helpers."""

import io

import keras
import numpy as np
import pytest
from keras import layers

from skin_model import readme
from skin_model.advice import headline, pct, share_at, verdict
from skin_model.bench import count_flops, format_table, percentiles
from skin_model.inference import Prediction


def test_readme_generated_sections_are_current():
    text = readme.README.read_text(encoding="utf-8")
    assert readme.render(text) == text, "run `python -m skin_model.readme`"
    assert "<!-- metrics:start -->\n<!-- metrics:end -->" not in text


def test_shipped_recipe_is_matched_on_backbone_size_and_epochs():
    shipped = {"architecture": "efficientnet_lite0", "input_size": 192, "epochs": 6, "seed": 1}
    assert readme.is_shipped_recipe({**shipped, "seed": 2}, shipped)
    assert not readme.is_shipped_recipe({**shipped, "input_size": 160}, shipped)


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
    from skin_model.bench import against

    assert against("upload_p50_ms", 40.0) == "(target < 300: met)"
    assert against("upload_p50_ms", 340.0) == "(target < 300: MISSED)"
    assert against("cli_images_per_s", 30) == "(target >= 40: MISSED)"
    assert against("app_rss_mb", None) == "(target < 1200: not measured)"


def test_recorded_benchmark_formats_and_judges_its_targets():
    import json

    assert readme.BENCH_FILE.is_file(), "run `python -m skin_model bench --out docs/bench.json`"
    r = json.loads(readme.BENCH_FILE.read_text())
    text = format_table(r)
    p50 = r["upload_latency"]["total"]["p50_ms"]
    assert f"{p50} / " in text
    assert ("target < 300: met" in text) == (p50 < 300)
    assert "shipped / seed resnet50" in text


def _pred(p_mal_class: float, looks=True, threshold=0.3):
    p = np.zeros(7)
    p[4], p[5] = p_mal_class, 1 - p_mal_class
    risk = float(p[[0, 1, 4]].sum())
    return Prediction(
        probabilities=p,
        malignant_probability=risk,
        suspicious=risk >= threshold,
        unsure=False,
        ood_score=1.0,
        looks_dermoscopic=looks,
        decision=int(np.argmax(p)),
        threshold=threshold,
    )


TIERS = [
    {"key": "low", "rate_malignant": 0.05, "rate_benign": 0.65},
    {"key": "raised", "rate_malignant": 0.35, "rate_benign": 0.3},
    {"key": "high", "rate_malignant": 0.6, "rate_benign": 0.05},
]


def test_a_warning_never_hides_the_referral_verdict():
    v = verdict(_pred(0.9, looks=False), 0.93, 0.3, TIERS, 0.05, 0.3, ["blurred"])
    assert v.refer and v.tier == "high" and v.title == "High risk: refer"
    assert [label for label, _ in v.warnings] == ["not dermoscopic", "blurred"]
    assert "Refer urgently" in v.action and "90%" in v.risk_line
    low = verdict(_pred(0.02), 0.05, 0.3, TIERS, 0.05, 0.3)
    assert not low.refer and low.tier == "low" and "does not rule out melanoma" in low.action


def test_tier_evidence_is_bayes_at_the_clinic_prevalence():
    # high tier at 5% prevalence: 0.05 * 0.6 / (0.05 * 0.6 + 0.95 * 0.05) = 0.387
    assert share_at(TIERS[2], 0.05) == pytest.approx(0.03 / (0.03 + 0.0475))
    v = verdict(_pred(0.9), 0.93, 0.3, TIERS, 0.05)
    assert "about 39 of 100 lesions in the high-risk tier" in v.evidence and "5.0%" in v.evidence
    assert v.evidence.startswith("Tier average") and "this case's own risk is" in v.evidence
    assert "fewer than 1 in 100" in verdict(_pred(0.02), 0.05, 0.3, TIERS, 0.001).evidence


def test_a_case_threshold_that_differs_says_why():
    v = verdict(_pred(0.2, threshold=0.05), 0.2, 0.05, TIERS, 0.05, image_only_threshold=0.09)
    assert "patient details were given" in v.threshold_reason
    assert verdict(_pred(0.2), 0.2, 0.3, TIERS, 0.05, 0.3).threshold_reason == ""


@pytest.mark.parametrize(
    ("x", "text"),
    [(0.00002, "< 0.1%"), (0.004, "0.4%"), (0.042, "4.2%"), (0.234, "23%"), (0.999, "> 99%")],
)
def test_risks_have_sensible_precision(x, text):
    assert pct(x) == text


def test_headline_is_the_chart_first_bar_and_names_the_balanced_choice():
    first, other = headline(_pred(0.6))  # mel 0.6, nv 0.4; the balanced rule agrees
    assert first.startswith("Most likely: Melanoma (mel), 60%") and other == ""
    probs = np.array([0.01, 0.01, 0.02, 0.0, 0.24, 0.71, 0.01])
    q = Prediction(probs, 0.26, False, False, 1.0, True, decision=4, threshold=0.3)
    first, other = headline(q)
    assert "Melanocytic nevus" in first and other.startswith("Do not miss: Melanoma (mel), 24%")
    assert q.top_k(1)[0][0] == "nv"  # the chart's first bar is the headline class


def test_csv_cells_are_formula_safe_and_numbers_plain():
    from skin_model.results import number, result_row

    row = result_row("=HYPERLINK(x).jpg", _pred(0.00003), quality=["blurred"], prevalence=0.05)
    assert row["file"] == "'=HYPERLINK(x).jpg"
    assert row["mel"] == "0.0000" and "e" not in row["malignant_risk"]
    assert row["quality_warnings"] == "blurred" and row["refer"] == "no"
    assert number(2.7e-05, 6) == "0.000027"
    assert result_row("@x", None, "+boom")["error"] == "'+boom"


def test_pdf_report_keeps_user_text_plain_and_readable():
    from pypdf import PdfReader

    from skin_model.report import ReportRecord, render_pdf

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
