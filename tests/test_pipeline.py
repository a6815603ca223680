"""One path from pixels to verdict: the CLI and the app give the same result for the same
files and patient details, heatmap included; the decision travels as data."""

import numpy as np

from skin_model.data.metadata import PatientContext
from tests.conftest import jpeg_bytes, lesion_image


def _files(tmp_path):
    paths = []
    for i, dx in enumerate(("mel", "nv", "bcc")):
        path = tmp_path / f"case{i}.jpg"
        path.write_bytes(jpeg_bytes(lesion_image(dx, 10 + i)))
        paths.append(path)
    return paths


def test_the_cli_and_the_app_give_identical_results_and_heatmaps(shipped_bundle, tmp_path):
    from skin_model.runtime.advice import tier_key
    from skin_model.runtime.explain import bundle_cam_method
    from skin_model.runtime.pipeline import explained_class
    from skin_model.runtime.predict import predict_files
    from skin_model.runtime.service import CaseStore, csv_text, results

    bundle = shipped_bundle
    files = _files(tmp_path)
    details = PatientContext(age=63, sex="male", site="back")
    contexts = {files[0].stem: details}
    cams = tmp_path / "cams"
    cams.mkdir()
    cli = predict_files(bundle, files, cams, prevalence=0.05, contexts=contexts)

    store = CaseStore()
    keys = store.add([(f.name, f.read_bytes()) for f in files])
    store.set_context(store.lesion_of[keys[0]], details)
    outcomes = results(bundle, store, 0.05)
    import csv
    import io

    app = list(csv.DictReader(io.StringIO(csv_text(outcomes, 0.05, bundle.config.describe()))))
    assert len(app) == len(cli) == 3
    for c, a in zip(cli, app, strict=True):
        # the file's path vs its name, the page's case label, the minute the CSV was made
        differ = {k for k in c if k not in ("file", "case", "created") and str(c[k]) != a[k]}
        assert not differ, {k: (c[k], a[k]) for k in differ}
    for f, outcome in zip(files, outcomes, strict=True):
        p, v = outcome.prediction, outcome.verdict
        assert v.refer == p.suspicious and v.risk == p.malignant_probability
        assert v.tier == tier_key(p.base_risk, p.base_threshold)
        upload = outcome.lesion.good[0]
        method = bundle_cam_method(bundle)  # the page's default choice
        shown = store.heatmap(bundle, upload, explained_class(p), method, outcome.lesion.context)
        np.testing.assert_allclose(np.load(cams / f"{f.stem}.npy"), shown, atol=1e-6)


def test_the_summary_reads_the_verdict_fields_not_its_wording(shipped_bundle):
    from dataclasses import replace

    from skin_model.runtime.service import CaseStore, results, summary_row

    store = CaseStore()
    store.add([("a.jpg", jpeg_bytes(lesion_image("mel", 3)))])
    (outcome,) = results(shipped_bundle, store, None)
    # another wording, the same decision: the summary does not change
    reworded = replace(outcome, verdict=replace(outcome.verdict, title="Wording: changed"))
    assert summary_row(reworded)["risk tier"] == summary_row(outcome)["risk tier"]
    assert summary_row(reworded)["referral"] == (
        "REFER" if outcome.verdict.refer else "below threshold"
    )


def test_a_network_blind_to_colour_loses_nothing_to_a_cast_and_one_that_reads_it_does():
    from skin_model.evaluate.robustness import network_robustness

    codes = ("mel", "nv", "bcc", "bkl", "akiec", "df", "vasc")
    images = [lesion_image(dx, 60 + i) for i, dx in enumerate(codes * 3)]
    labels = np.array([i % 7 for i in range(len(images))])

    def by_order(batch):  # ignores the pixels: the "right" answer in image order
        return np.eye(7)[labels] * 0.9 + 0.1 / 7

    def by_red(batch):  # the red share of the image decides the class
        red = batch[..., 0].mean(axis=(1, 2)) / (batch.mean(axis=(1, 2, 3)) * 3 + 1e-6)
        return np.eye(7)[np.clip((red * 21).astype(int) - 4, 0, 6)] + 0.01

    blind = network_robustness(by_order, images, labels, 32)
    assert all(c["referrals_changed"] == 0 for c in blind["changes"].values())
    assert all(c["balanced_accuracy_cost"] == 0 for c in blind["changes"].values())
    reading = network_robustness(by_red, images, labels, 32)["changes"]
    assert reading["warm cast +10%"]["diagnoses_changed"] > 0


def test_changed_copies_are_scored_beside_the_plain_images(trained_bundle):
    from skin_model.data.imaging import decode_image
    from skin_model.evaluate.robustness import (
        CHANGES,
        robustness,
        round_field,
        round_mask,
        transparent_corners,
    )

    codes = ("mel", "nv", "bcc", "bkl", "akiec", "df", "vasc")
    images = [lesion_image(dx, 30 + i) for i, dx in enumerate(codes * 2)]
    labels = np.array([i % 7 for i in range(len(images))])
    result = robustness(trained_bundle, images, labels)
    assert set(result["changes"]) == set(CHANGES) and result["n_images"] == 14
    for c in result["changes"].values():
        assert 0.0 <= c["referrals_changed"] <= 1.0 and np.isfinite(c["auc_cost"])
    # transparency is composited as the decoder does it: black, like a round field of view
    png = decode_image(transparent_corners(images[0]))
    inside = round_mask(*images[0].shape[:2])
    np.testing.assert_array_equal(png, np.where(inside[..., None], images[0], 0))
    assert decode_image(round_field(images[0]))[~inside].mean() < 5  # black, up to JPEG ringing


def test_files_read_ahead_in_chunks_keep_their_order_and_their_errors(
    shipped_bundle, tmp_path, monkeypatch
):
    """The CLI reads the next chunk while the network works on this one: rows stay in the
    files' order, a bad file in a later chunk gets its own error, the rest their results."""
    from skin_model.runtime import predict

    good = _files(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    files = [good[0], empty, good[1], tmp_path / "gone.jpg", good[2]]
    one_by_one = [predict.predict_files(shipped_bundle, [f])[0] for f in files]
    monkeypatch.setattr(predict, "CHUNK", 2)
    seen = []
    rows = predict.predict_files(shipped_bundle, files, progress=lambda d, t: seen.append(d))
    assert [r["file"] for r in rows] == [str(f) for f in files] and seen == [2, 4, 5]
    assert rows[1]["error"] and rows[3]["error"] == "file not found"
    for row, alone in zip(rows, one_by_one, strict=True):
        assert {k: v for k, v in row.items() if k != "created"} == {
            k: v for k, v in alone.items() if k != "created"
        }
