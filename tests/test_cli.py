"""``python -m skin_model predict/evaluate`` end to end: CSV, exit codes, bad files, CAMs."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skin_model import CLASSES, REPO_ROOT, display_name
from skin_model.cli import main
from skin_model.runtime.results import CSV_COLUMNS
from tests.bad_inputs import bad_inputs
from tests.conftest import jpeg_bytes, lesion_image


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture()
def image_folder(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, dx in enumerate(("mel", "nv", "bcc")):
        (folder / ("sub" if i == 2 else "") / f"case{i}.jpg").write_bytes(
            jpeg_bytes(lesion_image(dx, i))
        )
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    return folder


def test_predict_folder_csv(trained_dir, image_folder, capsys):
    assert main(["predict", "--model", str(trained_dir), str(image_folder)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in rows] == ["case0.jpg", "case1.jpg", "case2.jpg"]
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    config = json.loads((trained_dir / "config.json").read_text())
    prior, temperature = np.array(config["class_prior"]), config["temperature"]
    threshold = config["malignant_threshold"]
    for r in rows:
        probs = np.array([float(r[c]) for c in CLASSES])
        assert probs.sum() == pytest.approx(1, abs=1e-4)
        # the suggested diagnosis is the argmax of the network's own output, recovered from
        # the shown probabilities by undoing the temperature and the prior re-weighting
        raw_logits = temperature * np.log(np.clip(probs, 1e-12, 1)) - np.log(prior)
        assert r["suggested_diagnosis"] == display_name(CLASSES[int(raw_logits.argmax())])
        assert r["most_likely"] == display_name(CLASSES[int(probs.argmax())])
        assert float(r["malignant_risk"]) == pytest.approx(
            float(r["akiec"]) + float(r["bcc"]) + float(r["mel"]), abs=2e-4
        )
        risk = float(r["malignant_risk"])
        if abs(risk - threshold) > 1e-4:  # (4 decimals in the file)
            assert r["refer"] == ("yes" if risk >= threshold else "no")
        assert float(r["referral_threshold"]) == pytest.approx(threshold, abs=1e-4)
        assert float(r["prevalence"]) == pytest.approx(config["malignant_share"], abs=1e-4)
        assert r["risk_tier"] in ("Low risk", "Raised risk", "High risk")
        assert r["looks_dermoscopic"] in ("yes", "no") and r["model_unsure"] in ("yes", "no")
        assert float(r["not_dermoscopic_score"]) > 0
        assert r["patient_context"] == "none given"
        assert r["error"] == ""
        assert not any("e-" in r[c] for c in CLASSES)  # plain decimals
    header = list(CSV_COLUMNS)
    assert header.index("looks_dermoscopic") == header.index("vasc") + 1


def test_bad_files_among_good_ones_keep_order_and_exit_1(trained_dir, tmp_path, capsys):
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(lesion_image("nv", 9)))
    paths = [good]
    for name, data, _ in bad_inputs():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    paths.append(tmp_path / "absent.jpg")
    out = tmp_path / "results.csv"
    code = main(["predict", "--model", str(trained_dir), "--out", str(out), *map(str, paths)])
    assert code == 1
    rows = _rows(out.read_text())
    assert [r["file"] for r in rows] == [str(p) for p in paths]
    assert rows[0]["error"] == "" and rows[0]["refer"] in ("yes", "no")
    for row, (_, _, fragment) in zip(rows[1:], bad_inputs(), strict=False):
        assert fragment.lower() in row["error"].lower() and row["refer"] == ""
    assert rows[-1]["error"] == "file not found"
    assert "could not be classified" in capsys.readouterr().err


def test_cam_dir_outputs(trained_dir, image_folder, tmp_path):
    cams = tmp_path / "cams"
    assert (
        main(
            [
                "predict",
                "--quiet",
                "--model",
                str(trained_dir),
                "--out",
                str(tmp_path / "r.csv"),
                "--cam-dir",
                str(cams),
                str(image_folder),
            ]
        )
        == 0
    )
    for i in range(3):
        cam = np.load(cams / f"case{i}.npy")
        assert cam.shape == (150, 200) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() <= 1
        assert Image.open(cams / f"case{i}.png").size == (200, 150)


def test_usage_errors_exit_2(trained_dir, tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none"), str(tmp_path)]) == 2
    (tmp_path / "x.jpg").write_bytes(jpeg_bytes(lesion_image("nv", 1)))
    assert main(["predict", "--model", str(tmp_path / "none"), str(tmp_path / "x.jpg")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict"])
    assert exc.value.code == 2


def test_evaluate_on_tiny_folder(trained_dir, tiny_data, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(trained_dir),
                "--data-dir",
                str(tiny_data),
                "--split",
                "test",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "balanced accuracy" in printed and out.is_file()
    assert main(["evaluate", "--model", str(trained_dir), "--data-dir", str(tmp_path)]) == 2


def test_module_entry_point_runs(trained_dir, image_folder):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skin_model",
            "predict",
            "--model",
            str(trained_dir),
            str(image_folder / "case0.jpg"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == ",".join(CSV_COLUMNS)


def _predict(model, *args) -> int:
    """``predict --quiet --model MODEL ARGS...``; the exit code."""
    return main(["predict", "--quiet", "--model", str(model), *map(str, args)])


def test_metadata_rows_are_matched_by_name_and_bad_rows_get_errors(
    trained_dir, image_folder, tmp_path
):
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "image,age,sex,localization\n"
        "case0,63,male,back\n"  # all three fields
        "case1.jpg,,female,unknown\n"  # name with extension, blanks and unknown allowed
        "case2,abc,male,back\n"  # malformed age
    )
    out = tmp_path / "r.csv"
    assert _predict(trained_dir, "--metadata", meta, "--out", out, image_folder) == 1
    rows = {Path(r["file"]).stem: r for r in _rows(out.read_text())}
    assert rows["case0"]["patient_context"] == "age 63, male, back"
    assert rows["case1"]["patient_context"] == "female"
    assert "age 'abc' is not a number" in rows["case2"]["error"]
    assert rows["case2"]["refer"] == ""


def test_metadata_changes_the_prediction_and_unknown_site_is_an_error(
    trained_dir, image_folder, tmp_path
):
    image = image_folder / "case0.jpg"
    plain, fused, meta = tmp_path / "plain.csv", tmp_path / "fused.csv", tmp_path / "m.csv"
    assert _predict(trained_dir, "--out", plain, image) == 0
    meta.write_text("image,age,sex,localization\ncase0,85,female,face\n")
    assert _predict(trained_dir, "--metadata", meta, "--out", fused, image) == 0
    a, b = _rows(plain.read_text())[0], _rows(fused.read_text())[0]
    assert [a[c] for c in CLASSES] != [b[c] for c in CLASSES]
    meta.write_text("image,localization\ncase0,elbow\n")
    assert _predict(trained_dir, "--metadata", meta, "--out", fused, image) == 1
    assert "not a HAM10000 localization" in _rows(fused.read_text())[0]["error"]


def test_metadata_file_without_image_column_is_a_usage_error(
    trained_dir, image_folder, tmp_path, capsys
):
    meta = tmp_path / "meta.csv"
    meta.write_text("file,age\ncase0,50\n")
    assert _predict(trained_dir, "--metadata", meta, image_folder) == 2
    assert "no 'image' column" in capsys.readouterr().err


def test_prevalence_option_reweights_the_risk(trained_dir, image_folder, capsys):
    from skin_model.model.calibration import adjust_prevalence

    share = json.loads((trained_dir / "config.json").read_text())["malignant_share"]
    assert _predict(trained_dir, image_folder) == 0
    base = _rows(capsys.readouterr().out)
    assert _predict(trained_dir, "--prevalence", "0.05", image_folder) == 0
    low = _rows(capsys.readouterr().out)
    for a, b in zip(base, low, strict=True):
        expected = adjust_prevalence(float(a["malignant_risk"]), share, 0.05)
        assert float(b["malignant_risk"]) == pytest.approx(expected, abs=2e-4)
        assert a["suggested_diagnosis"] == b["suggested_diagnosis"]  # the decision stays
        assert a["refer"] == b["refer"]  # so does the referral flag: its threshold moves
        assert float(b["prevalence"]) == 0.05
    with pytest.raises(SystemExit):
        main(["predict", "--prevalence", "1.5", str(image_folder)])
