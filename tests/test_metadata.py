"""Patient-context encoding: missing, unknown and out-of-range values, the CSV reader."""

import json

import numpy as np
import pandas as pd
import pytest

from skin_model.data.metadata import (
    DIM,
    MISSING,
    SITES,
    MetadataError,
    PatientContext,
    encode,
    encode_frame,
    parse_context,
    read_metadata_csv,
    segment_ids,
)


def test_encoding_by_hand():
    v = encode(PatientContext(63, "male", "back"))
    assert v.shape == (DIM,) and v.dtype == np.float32
    assert v[0] == pytest.approx(0.63) and v[1] == 0  # age, not missing
    assert v[2:5].tolist() == [0, 1, 0]  # female, male, sex missing
    site = v[5:]
    assert site[SITES.index("back")] == 1 and site.sum() == 1 and site[-1] == 0


def test_missing_fields_use_their_indicators():
    assert MISSING[1] == 1 and MISSING[4] == 1 and MISSING[-1] == 1 and MISSING.sum() == 3
    assert (encode(PatientContext()) == MISSING).all()
    v = encode(PatientContext(age=40))
    assert v[0] == pytest.approx(0.4) and v[4] == 1 and v[-1] == 1


@pytest.mark.parametrize("raw", [None, "", " ", "unknown", "Unknown", float("nan"), "not given"])
def test_blank_and_unknown_mean_not_given(raw):
    assert parse_context(raw, raw, raw) == PatientContext()


def test_parse_normalises_case_and_numbers():
    c = parse_context(" 45 ", "FEMALE", "Lower Extremity")
    assert c == PatientContext(45.0, "female", "lower extremity")
    assert c.describe() == "age 45, female, lower extremity" and c.given == ["age", "sex", "site"]


@pytest.mark.parametrize(
    ("age", "sex", "site", "fragment"),
    [
        ("abc", None, None, "not a number"),
        (-3, None, None, "outside"),
        (130, None, None, "outside"),
        (None, "other", None, "sex"),
        (None, None, "elbow", "localization"),
    ],
)
def test_invalid_values_are_clear_errors(age, sex, site, fragment):
    with pytest.raises(MetadataError, match=fragment):
        parse_context(age, sex, site)


def test_encode_frame_tolerates_missing_columns_and_bad_values():
    df = pd.DataFrame({"age": [50, "x"], "sex": ["male", "unknown"]})
    out = encode_frame(df)
    assert out.shape == (2, DIM)
    assert out[0, 3] == 1 and out[0, -1] == 1  # male; site column absent -> missing
    assert (out[1] == MISSING).all()  # malformed age -> whole row not given


def test_segments_cover_the_vector():
    seg = segment_ids()
    assert len(seg) == DIM and seg.tolist() == sorted(seg.tolist()) and set(seg) == {0, 1, 2}


def test_read_metadata_csv(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("Image,age,localization\na.jpg,30,face\nb,,\nc,200,face\na,40,back\n")
    rows = read_metadata_csv(p)
    assert isinstance(rows["a"], MetadataError)  # two rows for one image
    assert rows["b"] == PatientContext()
    assert "outside" in str(rows["c"])
    (tmp_path / "bad.csv").write_text("name\nx\n")
    with pytest.raises(MetadataError, match="image"):
        read_metadata_csv(tmp_path / "bad.csv")


def _contexts(n: int = 140):
    from skin_model.data.metadata import SITES, encode_frame

    rng = np.random.default_rng(0)
    y = np.arange(n) % 7
    frame = pd.DataFrame(
        {
            "age": np.where(y == 4, 70, 30) + rng.integers(0, 10, n),
            "sex": rng.choice(["male", "female"], n),
            "localization": [SITES[i % len(SITES)] for i in y],
        }
    )
    return encode_frame(frame), y


def test_context_model_is_sklearns_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    from skin_model.data.metadata import ContextModel

    vectors, y = _contexts()
    model = ContextModel().fit(vectors, y)
    stored = json.loads(json.dumps(model.to_config()))  # stored in config.json
    clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(vectors, y)
    np.testing.assert_allclose(model.predict_proba(vectors), clf.predict_proba(vectors), atol=1e-4)
    back = ContextModel.from_config({**stored, "power": 1.0})  # fusion settings ride along
    np.testing.assert_array_equal(back.predict_proba(vectors), model.predict_proba(vectors))


def test_has_context_is_false_only_for_the_missing_vector():
    from skin_model.data.metadata import MISSING, has_context

    given = encode(parse_context(40, None, None))
    assert has_context(np.stack([MISSING, given])).tolist() == [False, True]
