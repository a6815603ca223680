"""``python -m skin_model predict/evaluate`` end to end: CSV, exit codes, bad files, CAMs."""

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skin_model import CLASSES, REPO_ROOT
from skin_model.cli import main
from skin_model.inference import CSV_COLUMNS
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
    for r in rows:
        probs = np.array([float(r[c]) for c in CLASSES])
        assert probs.sum() == pytest.approx(1, abs=1e-4)
        assert r["prediction"] == CLASSES[int(probs.argmax())]
        assert float(r["malignant_probability"]) == pytest.approx(
            float(r["akiec"]) + float(r["bcc"]) + float(r["mel"]), abs=1e-4
        )
        assert r["error"] == ""


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
    assert rows[0]["error"] == "" and rows[0]["prediction"] in CLASSES
    for row, (_, _, fragment) in zip(rows[1:], bad_inputs(), strict=False):
        assert fragment.lower() in row["error"].lower() and row["prediction"] == ""
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
