"""The exported model answers as the app: SavedModel (as TF Serving loads it), LiteRT and
ONNX Runtime give the app's probabilities, risk, decision and "not dermoscopic" score."""

import numpy as np
import pytest

from skin_model.cli import main
from skin_model.imaging import resize_for_model
from skin_model.inference import predict_images
from skin_model.serving import RUNNERS, ExportError, check_images
from tests.conftest import lesion_image


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported")
    paths = {"saved_model": out / "sm", "litert": out / "m.tflite", "onnx": out / "m.onnx"}
    for fmt, path in paths.items():
        assert main(["export", str(trained_dir), "--format", fmt, "--out", str(path)]) == 0
    return paths


@pytest.mark.parametrize("fmt", ["saved_model", "litert", "onnx"])
def test_runtime_answers_as_the_app(exported, trained_bundle, fmt):
    size = trained_bundle.input_size
    images = [
        resize_for_model(lesion_image(dx, i), size)
        for i, dx in enumerate(["mel", "nv", "bcc", "bkl"])
    ]
    app = predict_images(trained_bundle, images)
    out = RUNNERS[fmt](exported[fmt], np.stack(images))
    np.testing.assert_allclose(out["probabilities"], [p.probabilities for p in app], atol=1e-4)
    np.testing.assert_allclose(
        out["malignant_risk"], [p.malignant_probability for p in app], atol=1e-4
    )
    assert out["suggested_class"].tolist() == [p.decision for p in app]
    np.testing.assert_allclose(
        out["not_dermoscopic_score"], [p.ood_score for p in app], rtol=1e-3, atol=1e-4
    )


def test_the_saved_model_resizes_any_image_itself(exported, trained_bundle):
    out = RUNNERS["saved_model"](exported["saved_model"], lesion_image("mel", 3)[None])
    assert out["probabilities"].shape == (1, 7)
    np.testing.assert_allclose(out["probabilities"].sum(), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "bad", [np.zeros((32, 32, 3)), np.zeros((1, 32, 32)), np.zeros((1, 0, 4, 3))]
)
def test_a_bad_input_shape_gets_a_clear_error(bad):
    with pytest.raises(ExportError, match=r"expected a batch of RGB images shaped \(N, H, W, 3\)"):
        check_images(bad)


def test_litert_refuses_another_size_clearly(exported):
    with pytest.raises(ExportError, match="takes images of"):
        RUNNERS["litert"](exported["litert"], np.zeros((1, 40, 40, 3), np.float32))


def test_an_unknown_format_is_a_usage_error(trained_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(trained_dir), "--format", "pickle", "--out", str(tmp_path / "x")])
