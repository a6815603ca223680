"""The app's session store, fast (no network: predictions are counted stand-ins): uploads
decoded once, cases numbered in upload order, records kept per case and across grouping,
caches pruned exactly, "New patient" forgets everything."""

import numpy as np
import pytest

from skin_model.data.metadata import PatientContext
from skin_model.runtime import service
from skin_model.runtime.service import CaseRecord, CaseStore
from tests.conftest import jpeg_bytes, lesion_image
from tests.fakes import prediction


@pytest.fixture
def calls(monkeypatch) -> list[int]:
    """Each network call's number of cases (the stand-in returns one prediction per case)."""
    seen: list[int] = []

    def fake(bundle, cases, chunk=16):
        seen.append(len(cases))
        return [prediction(0.1 * (1 + len(c.good))) for c in cases]

    monkeypatch.setattr(service, "network_predictions", fake)
    return seen


def _files(n: int) -> list[tuple[str, bytes]]:
    return [(f"img{i}.jpg", jpeg_bytes(lesion_image("mel", i))) for i in range(n)]


def test_uploads_are_decoded_once_and_numbered_in_order():
    store = CaseStore()
    keys = store.add(_files(3))
    assert store.add(_files(3)) == keys  # the same files again: nothing new
    assert [les.label for les in store.lesions()] == ["Case 1", "Case 2", "Case 3"]
    store.remove(keys[0])
    assert [les.label for les in store.lesions()] == ["Case 1", "Case 2"]
    assert store.lesions()[0].names == ["img1.jpg"]


def test_the_same_bytes_under_another_name_is_another_upload():
    store = CaseStore()
    (name, data) = _files(1)[0]
    a, b = store.add([(name, data), ("copy.jpg", data)])
    assert a != b and len(store.lesions()) == 2


def test_a_bad_file_is_kept_with_its_error_beside_good_ones():
    store = CaseStore()
    store.add([("report.jpg", b"%PDF-1.4 not an image"), *_files(1)])
    bad, good = store.lesions()
    assert bad.good == [] and bad.uploads[0].error and bad.uploads[0].image is None
    assert len(good.good) == 1 and good.label == "Case 2"


def test_records_follow_their_case_through_grouping_and_splitting():
    store = CaseStore()
    a, b = store.add(_files(2))
    store.set_record(a, reference="MRN 1", notes="left shoulder")
    store.set_record(a, notes="left shoulder, raised")  # reference kept
    assert store.lesions()[0].record == CaseRecord("MRN 1", "left shoulder, raised")
    store.group([a, b])
    (case,) = store.lesions()
    assert case.record.reference == "MRN 1" and case.names == ["img0.jpg", "img1.jpg"]
    store.split(case.key)
    assert [les.record.reference for les in store.lesions()] == ["MRN 1", "MRN 1"]
    store.remove(a)
    store.remove(b)
    assert store.records == {} and store.contexts == {}


def test_predictions_are_cached_and_pruned_exactly(calls):
    store = CaseStore()
    a, b, c = store.add(_files(3))
    store.predictions(None, store.lesions())
    store.predictions(None, store.lesions())
    assert calls == [3]  # the second look used the cache
    store.set_context(b, PatientContext(age=70))
    store.predictions(None, store.lesions())
    assert calls == [3, 1]  # only the case whose details changed
    store.group([a, c])
    preds = store.predictions(None, store.lesions())
    assert calls == [3, 1, 1] and set(preds) == {a, b}
    assert preds[a].malignant_probability == pytest.approx(0.3)  # both images, one case


def test_new_patient_forgets_everything(calls):
    store = CaseStore()
    (a,) = store.add(_files(1))
    store.set_record(a, notes="x")
    store.set_context(a, PatientContext(age=50))
    store.predictions(None, store.lesions())
    store.clear()
    assert store.lesions() == [] and store.records == {} and store.contexts == {}
    assert store._predictions == {} and store._heatmaps == {}
    store.add(_files(1))
    store.predictions(None, store.lesions())
    assert calls == [1, 1]  # nothing served from the last patient's cache


def test_heatmaps_are_computed_once_per_image_class_and_details(monkeypatch):
    made = []

    def fake(bundle, image, context, class_code, method, views=None):
        made.append(class_code)
        return np.zeros((4, 4))

    monkeypatch.setattr(service, "case_heatmap", fake)
    store = CaseStore()
    (a,) = store.add(_files(1))
    upload = store.uploads[a]
    for code in ("mel", "mel", "nv"):
        store.heatmap(None, upload, code, "gradcam", None)
    assert made == ["mel", "nv"]
    store.remove(a)
    assert store._heatmaps == {}
