"""README figures come from files; benchmark helpers; service and report helpers."""

import keras
import numpy as np
import pytest
from keras import layers

from skin_model import readme
from skin_model.bench import count_flops, format_table, percentiles
from skin_model.inference import Prediction
from skin_model.report import render_report
from skin_model.service import BENIGN, NOT_DERMOSCOPIC, SUSPICIOUS, flag


def test_readme_generated_sections_are_current():
    text = readme.README.read_text(encoding="utf-8")
    assert readme.render(text) == text, "run `python -m skin_model.readme`"
    assert "<!-- metrics:start -->\n<!-- metrics:end -->" not in text


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

    assert against("upload_p50_ms", 40.0) == "(target < 100: met)"
    assert against("upload_p50_ms", 140.0) == "(target < 100: MISSED)"
    assert against("cli_images_per_s", 150) == "(target >= 200: MISSED)"
    assert against("app_rss_mb", None) == "(target < 1024: not measured)"


def test_recorded_benchmark_formats_and_judges_its_targets():
    import json

    assert readme.BENCH_FILE.is_file(), "run `python -m skin_model bench --out docs/bench.json`"
    r = json.loads(readme.BENCH_FILE.read_text())
    text = format_table(r)
    p50 = r["upload_latency"]["total"]["p50_ms"]
    assert f"{p50} / " in text
    assert ("target < 100: met" in text) == (p50 < 100)
    assert "shipped / seed resnet50" in text


def _pred(p_mal_class: float, looks=True):
    p = np.full(7, (1 - p_mal_class) / 6)
    p[4] = p_mal_class
    return Prediction(
        probabilities=p,
        malignant_probability=float(p[[0, 1, 4]].sum()),
        suspicious=p[[0, 1, 4]].sum() >= 0.5,
        unsure=False,
        ood_score=1.0,
        looks_dermoscopic=looks,
        decision=int(np.argmax(p)),
        threshold=0.5,
    )


def test_flags():
    assert flag(_pred(0.9)) == SUSPICIOUS
    assert flag(_pred(0.05)) == BENIGN
    assert flag(_pred(0.9, looks=False)) == NOT_DERMOSCOPIC


def test_report_is_a_png_and_names_what_it_shows():
    img = np.zeros((60, 80, 3), dtype=np.uint8)
    png = render_report(
        "x.jpg", img, img, _pred(0.9), 0.3, SUSPICIOUS, "test", "Grad-CAM++ for Melanoma (mel)"
    )
    assert png.startswith(b"\x89PNG")


def test_report_text_states_flag_context_and_prevalence():
    from skin_model.metadata import PatientContext
    from skin_model.report import report_text

    pred = _pred(0.9, looks=False)
    text = report_text(pred, 0.3, NOT_DERMOSCOPIC, "m")
    assert "Looks like a dermoscopic image: NO" in text
    assert "HAM10000's class frequencies" in text and "none given" in text
    pred.context, pred.prevalence = PatientContext(50, "male", None), 0.05
    text = report_text(pred, 0.3, SUSPICIOUS, "m")
    assert "age 50, male" in text and "prevalence of 5.0%" in text
