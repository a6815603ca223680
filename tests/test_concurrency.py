"""Concurrent sessions share one model: results must equal the sequential ones."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from skin_model.runtime.explain import explain
from skin_model.runtime.inference import predict_images
from tests.conftest import lesion_image


def test_parallel_predictions_and_cams_match_sequential(trained_dir):
    from skin_model.runtime.inference import load_bundle

    bundle = load_bundle(trained_dir)
    images = [lesion_image(dx, i) for i, dx in enumerate(["mel", "nv", "bcc", "df"] * 3)]
    expected = [p.probabilities for p in predict_images(bundle, images)]
    expected_cams = [explain(bundle, im, 0) for im in images[:4]]

    def work(i):
        return predict_images(bundle, [images[i]])[0].probabilities, (
            explain(bundle, images[i], 0) if i < 4 else None
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(work, range(len(images))))
    for i, (probs, cam) in enumerate(results):
        assert np.allclose(probs, expected[i], atol=1e-5)
        if cam is not None:
            assert np.allclose(cam, expected_cams[i], atol=1e-5)


def test_smaller_chunks_give_the_same_predictions(trained_dir):
    from skin_model.runtime.inference import load_bundle

    bundle = load_bundle(trained_dir)
    images = [lesion_image(dx, seed) for seed, dx in enumerate(["mel", "nv", "bkl"] * 3)]
    big = predict_images(bundle, images, chunk=16)
    small = predict_images(bundle, images, chunk=4)
    for a, b in zip(big, small, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        assert a.decision == b.decision and a.ood_score == pytest.approx(b.ood_score)
