"""The exported model answers as the app: SavedModel (as TF Serving loads it), LiteRT and
ONNX Runtime give the app's probabilities, risk, decision and "not dermoscopic" score."""

import numpy as np
import pytest

from skin_model.cli import main
from skin_model.data.imaging import resize_for_model
from skin_model.runtime.inference import predict_images
from skin_model.runtime.serving import RUNNERS, ExportError, check_images
from tests.conftest import lesion_image


def assert_same_answers(out: dict, predictions: list, atol: float) -> None:
    """An exported runtime's outputs match the package's predictions: probabilities and
    risk within ``atol``, the same suggested class."""
    np.testing.assert_allclose(
        out["probabilities"], [p.probabilities for p in predictions], atol=atol
    )
    np.testing.assert_allclose(
        out["malignant_risk"], [p.malignant_probability for p in predictions], atol=atol
    )
    assert out["suggested_class"].tolist() == [p.decision for p in predictions]


def export_all(model_dir, out) -> dict:
    """The model exported in every format by the CLI: ``{format: path}``."""
    paths = {"saved_model": out / "sm", "litert": out / "m.tflite", "onnx": out / "m.onnx"}
    for fmt, path in paths.items():
        assert main(["export", str(model_dir), "--format", fmt, "--out", str(path)]) == 0
    return paths


def _second_look_images(size: int) -> list:
    """Two synthetic lesions of every class at the model's input size."""
    from skin_model import CLASSES

    return [resize_for_model(lesion_image(dx, i), size) for i, dx in enumerate(CLASSES * 2)]


@pytest.fixture(scope="module")
def looked(trained_dir, trained_bundle, tmp_path_factory):
    """The smoke model with a second look whose band takes half of
    :func:`_second_look_images` (the median distance of their risks from the threshold)
    and a melanoma decision weight that turns their other suggestions to melanoma, and its
    loaded bundle: every export test runs on it, so one export covers every path."""
    from dataclasses import replace

    from skin_model.runtime.inference import load_bundle, log_odds, network_outputs
    from tests.conftest import with_config

    plain = replace(trained_bundle.config, tta=1, second_look_views=1, second_look_band=0.0)
    images = _second_look_images(plain.input_size)
    one = predict_images(replace(trained_bundle, config=plain), images)
    gap = np.abs(log_odds([p.malignant_probability for p in one]) - log_odds(one[0].threshold))
    batch = np.stack(images).astype(np.float32)
    raw = np.concatenate([network_outputs(trained_bundle, batch, v)[0] for v in (1, 4)])
    # twice the largest ratio at one view or four: every suggestion turns to melanoma with a
    # wide margin (the smoke network's outputs are alike for every image, so a weight
    # between them would leave float32 and float64 arithmetic to break near-ties apart)
    mel = 2.0 * float((np.delete(raw, 4, axis=1).max(axis=1) / raw[:, 4]).max())
    weights = [1.0] * 4 + [mel] + [1.0] * 2
    run = with_config(
        trained_dir,
        tmp_path_factory.mktemp("looked") / "run",
        tta=1,
        second_look_views=4,
        second_look_band=float(np.median(gap)),
        decision_weights=weights,
    )
    return run, load_bundle(run)


@pytest.fixture(scope="module")
def exported(looked, tmp_path_factory):
    return export_all(looked[0], tmp_path_factory.mktemp("exported"))


@pytest.mark.parametrize("fmt", ["saved_model", "litert", "onnx"])
def test_runtime_answers_as_the_app(exported, looked, fmt):
    bundle = looked[1]
    size = bundle.input_size
    images = [
        resize_for_model(lesion_image(dx, i), size)
        for i, dx in enumerate(["mel", "nv", "bcc", "bkl"])
    ]
    app = predict_images(bundle, images)
    out = RUNNERS[fmt](exported[fmt], np.stack(images))
    assert_same_answers(out, app, atol=1e-4)
    np.testing.assert_allclose(
        out["not_dermoscopic_score"], [p.ood_score for p in app], rtol=1e-3, atol=1e-4
    )


@pytest.mark.parametrize("fmt", ["saved_model", "litert", "onnx"])
@pytest.mark.parametrize("shape", [(150, 200), (450, 600), (800, 1000)])
def test_raw_pixels_of_any_size_give_the_clis_answer(exported, looked, fmt, shape):
    from skin_model.data.imaging import decode_image
    from tests.conftest import jpeg_bytes

    # an original as the CLI reads it from its file, and the same pixels fed raw
    originals = [decode_image(jpeg_bytes(lesion_image(dx, 7, shape))) for dx in ("mel", "nv")]
    cli = predict_images(looked[1], originals)
    assert_same_answers(RUNNERS[fmt](exported[fmt], np.stack(originals)), cli, atol=1e-3)


def test_the_in_graph_resize_is_the_apps_resize():
    from skin_model.runtime.serving import PillowResize

    rng = np.random.default_rng(0)
    for shape in [(150, 200), (450, 600), (1024, 768), (60, 100), (192, 192), (577, 1023)]:
        image = (rng.random((*shape, 3)) * 255).astype(np.uint8)
        want = resize_for_model(image, 192).astype(np.float32)
        got = PillowResize(192)(image[None].astype(np.float32)).numpy()[0]
        np.testing.assert_array_equal(got, want, err_msg=str(shape))  # Pillow's levels exactly


@pytest.mark.parametrize(
    "bad", [np.zeros((32, 32, 3)), np.zeros((1, 32, 32)), np.zeros((1, 0, 4, 3))]
)
def test_a_bad_input_shape_gets_a_clear_error(bad):
    with pytest.raises(ExportError, match=r"expected a batch of RGB images shaped \(N, H, W, 3\)"):
        check_images(bad)


def test_an_unknown_format_is_a_usage_error(trained_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", str(trained_dir), "--format", "pickle", "--out", str(tmp_path / "x")])


@pytest.fixture(scope="module")
def exported_shipped(shipped_model_dir, tmp_path_factory):
    return export_all(shipped_model_dir, tmp_path_factory.mktemp("shipped"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["saved_model", "litert", "onnx"])
def test_the_shipped_model_exported_gives_the_clis_answer(
    exported_shipped, shipped_bundle, shipped_model_dir, real_data_dir, fmt
):
    """Real test-split originals (600x450 as the dermatoscope saved them, 200x150 as the
    shared data has them) fed raw to the shipped model's exports."""
    import pandas as pd
    from PIL import Image

    from skin_model.data.imaging import decode_image

    split = pd.read_csv(shipped_model_dir / "split.csv")
    ids = split.loc[split["split"] == "test", "image_id"].head(3)
    small = [decode_image((real_data_dir / "images" / f"{i}.jpg").read_bytes()) for i in ids]
    large = [
        np.asarray(Image.fromarray(im).resize((600, 450), Image.Resampling.BICUBIC)) for im in small
    ]
    for originals in (small, large):
        cli = predict_images(shipped_bundle, originals)
        assert_same_answers(
            RUNNERS[fmt](exported_shipped[fmt], np.stack(originals)), cli, atol=1e-3
        )


@pytest.mark.parametrize("fmt", ["saved_model", "litert", "onnx"])
def test_the_export_takes_the_apps_second_look(exported, looked, fmt):
    """The exported network averages the 4 turns of the images the app looks at again, and
    only those."""
    bundle = looked[1]
    images = _second_look_images(bundle.input_size)
    app = predict_images(bundle, images)
    assert {p.views for p in app} == {1, 4}
    assert_same_answers(RUNNERS[fmt](exported[fmt], np.stack(images)), app, atol=1e-4)


def test_the_weighted_decision_is_tested_by_the_exports(looked):
    """The decision weights of :func:`looked` change suggestions, so the exported answers
    above check the weights are applied inside the graph."""
    import copy
    from dataclasses import replace

    bundle = looked[1]
    assert bundle.posthoc.decision_weights[4] > 1
    images = _second_look_images(bundle.input_size)
    weighted = [p.decision for p in predict_images(bundle, images)]
    unweighted = copy.copy(bundle.posthoc)  # fitted temperature and thresholds kept
    unweighted.decision_weights = None
    plain = [p.decision for p in predict_images(replace(bundle, posthoc=unweighted), images)]
    changed = [w != p for w, p in zip(weighted, plain, strict=True)]
    assert any(changed) and set(weighted) == {4}  # every one towards melanoma
