"""AppTest for every page: renders, classifies uploads, isolates bad files, missing artifacts."""

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

import skin_model.service
from skin_model import REPO_ROOT
from tests.bad_inputs import bad_inputs
from tests.conftest import jpeg_bytes, lesion_image

APP = str(REPO_ROOT / "streamlit_app.py")
PAGES = ["pages/classify.py", "pages/metrics.py", "pages/training.py", "pages/about.py"]


def _app(monkeypatch, model_dir) -> AppTest:
    monkeypatch.setenv("SKIN_MODEL_DIR", str(model_dir))
    return AppTest.from_file(APP, default_timeout=180)


def _errors(at):
    return [e.value for e in at.error]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_with_shipped_model(monkeypatch, shipped_model_dir, page):
    at = _app(monkeypatch, shipped_model_dir)
    at.switch_page(page).run()
    assert not at.exception
    assert not _errors(at)
    assert at.title


def test_classify_uploads_show_diagnosis_gradcam_and_downloads(monkeypatch, trained_dir):
    at = _app(monkeypatch, trained_dir).run()
    files = [
        (f"case{i}.jpg", jpeg_bytes(lesion_image(dx, i)), "image/jpeg")
        for i, dx in enumerate(("mel", "nv"))
    ]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    assert len(at.get("image")) == 4  # original + overlay per case
    assert any("Malignant risk" in m.label for m in at.metric)
    assert any("Suggested diagnosis" in m.value for m in at.markdown)
    labels = [b.label for b in at.get("download_button")]
    assert labels.count("Download report (PNG)") == 2 and "Download results (CSV)" in labels
    assert len(at.dataframe[0].value) == 2
    assert any("not a medical device" in w.value.lower() for w in at.warning)


def test_each_bad_upload_gets_its_own_error_and_good_ones_results(monkeypatch, trained_dir):
    at = _app(monkeypatch, trained_dir).run()
    files = [("good.jpg", jpeg_bytes(lesion_image("bkl", 3)), "image/jpeg")]
    files += [(name, data, "image/jpeg") for name, data, _ in bad_inputs()]
    at.file_uploader[0].set_value(files).run()
    assert not at.exception
    errors = _errors(at)
    for name, _, fragment in bad_inputs():
        assert any(e.startswith(f"{name}:") and fragment.lower() in e.lower() for e in errors), name
    assert len(at.get("image")) == 2  # the good image still classified
    assert len(at.dataframe[0].value) == 1 + len(bad_inputs())


def test_opacity_and_class_change_do_not_rerun_classifier(monkeypatch, trained_dir):
    calls = []
    original = skin_model.service.predict_images

    def counting(bundle, images, *args, **kwargs):
        calls.append(len(images))
        return original(bundle, images, *args, **kwargs)

    monkeypatch.setattr(skin_model.service, "predict_images", counting)
    at = _app(monkeypatch, trained_dir).run()
    at.file_uploader[0].set_value(
        [("a.jpg", jpeg_bytes(lesion_image("mel", 4)), "image/jpeg")]
    ).run()
    assert calls == [1]
    at.slider[0].set_value(0.8).run()
    at.selectbox(key=_key(at, "cls_")).set_value("vasc").run()
    at.radio[0].set_value("Grad-CAM++").run()
    assert not at.exception and calls == [1]
    assert at.get("image")[1].proto.imgs[0].caption == "Grad-CAM++: Vascular lesion (vasc)"


def _key(at, prefix: str) -> str:
    """The key of the one widget whose key starts with ``prefix``."""
    widgets = [*at.selectbox, *at.number_input, *at.radio, *at.slider]
    keys = [w.key for w in widgets if w.key and w.key.startswith(prefix)]
    assert len(keys) == 1, keys
    return keys[0]


def test_patient_context_updates_prediction_without_redecoding(monkeypatch, trained_dir):
    calls, decodes = [], []
    original, decode = skin_model.service.predict_images, skin_model.service.decode_image

    def counting(bundle, images, prevalence=None, contexts=None, **kwargs):
        calls.append([c.describe() if c else "none given" for c in contexts])
        return original(bundle, images, prevalence, contexts, **kwargs)

    def counting_decode(data):
        decodes.append(1)
        return decode(data)

    monkeypatch.setattr(skin_model.service, "predict_images", counting)
    monkeypatch.setattr(skin_model.service, "decode_image", counting_decode)
    at = _app(monkeypatch, trained_dir).run()
    at.file_uploader[0].set_value(
        [("a.jpg", jpeg_bytes(lesion_image("mel", 4)), "image/jpeg")]
    ).run()
    assert calls == [["none given"]] and len(decodes) == 1
    at.number_input(key=_key(at, "age_")).set_value(71).run()
    at.selectbox(key=_key(at, "sex_")).set_value("female").run()
    at.selectbox(key=_key(at, "site_")).set_value("face").run()
    assert not at.exception
    assert calls[-1] == ["age 71, female, face"] and len(decodes) == 1
    summary = at.dataframe[0].value
    assert summary["patient context used"].iloc[0] == "age 71, female, face"
    assert any("age 71, female, face" in c.value for c in at.caption)


def test_prevalence_reweights_the_shown_risk(monkeypatch, trained_dir):
    at = _app(monkeypatch, trained_dir).run()
    at.file_uploader[0].set_value(
        [("a.jpg", jpeg_bytes(lesion_image("mel", 4)), "image/jpeg")]
    ).run()
    before = at.dataframe[0].value["malignant risk"].iloc[0]
    at.number_input(key="prevalence_pct").set_value(2.0).run()
    assert not at.exception
    after = at.dataframe[0].value["malignant risk"].iloc[0]
    from skin_model.calibration import adjust_prevalence

    share = json.loads((trained_dir / "config.json").read_text())["malignant_share"]
    assert after == pytest.approx(adjust_prevalence(before, share, 0.02), abs=1e-6)
    assert any("prevalence of 2.0%" in c.value for c in at.caption)


def test_missing_model_shows_message(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "no_model").run()
    assert not at.exception
    assert any("could not be loaded" in e for e in _errors(at))


def test_lfs_pointer_model_shows_message(monkeypatch, trained_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(trained_dir, broken)
    (broken / "model.keras").write_text("version https://git-lfs.github.com/spec/v1\n")
    at = _app(monkeypatch, broken).run()
    assert not at.exception and any("git lfs pull" in e for e in _errors(at))


@pytest.mark.parametrize("content", [None, "{not json", '{"accuracy": 1}'])
def test_missing_or_damaged_metrics_show_message(monkeypatch, trained_dir, tmp_path, content):
    broken = tmp_path / "m"
    shutil.copytree(trained_dir, broken)
    if content is None:
        (broken / "metrics.json").unlink()
    else:
        (broken / "metrics.json").write_text(content)
    at = _app(monkeypatch, broken)
    at.switch_page("pages/metrics.py").run()
    assert not at.exception and _errors(at)


def test_about_without_card_shows_message(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path)
    at.switch_page("pages/about.py").run()
    assert not at.exception and any("cannot be read" in e for e in _errors(at))


def test_metrics_page_shows_targets_from_metrics_file(monkeypatch, shipped_model_dir):
    at = _app(monkeypatch, shipped_model_dir)
    at.switch_page("pages/metrics.py").run()
    m = json.loads((shipped_model_dir / "metrics.json").read_text())
    table = next(df.value for df in at.dataframe if "target" in df.value.columns)
    first = table.iloc[0]
    assert first["achieved"] == pytest.approx(m["balanced_accuracy"])
    assert first["met"] == ("yes" if m["balanced_accuracy"] >= m["targets"][0]["goal"] else "no")
    assert len(table) == len(m["targets"])
