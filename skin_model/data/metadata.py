"""Patient context: age, sex and body site, encoded for the model's second input.

Every field is optional. The encoding is a fixed-length float vector:
``[age / 100, age missing, female, male, sex missing, one-hot site ..., site missing]``.
``unknown``, blank and ``None`` all mean "not given". Nothing here stores or logs values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SEXES: tuple[str, ...] = ("female", "male")
SITES: tuple[str, ...] = (
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
)
"""HAM10000 ``localization`` values (``unknown`` means not given)."""
MISSING_WORDS = ("", "unknown", "not given", "nan", "none")
AGE_RANGE = (0.0, 120.0)
SEGMENTS: tuple[tuple[str, int], ...] = (("age", 2), ("sex", 3), ("site", len(SITES) + 1))
"""Each field's slice of the vector, in order (used to hide fields in training)."""
DIM = sum(n for _, n in SEGMENTS)


class MetadataError(ValueError):
    """A value that is not a valid age, sex or body site, with the reason."""


@dataclass(frozen=True)
class PatientContext:
    """Optional age (years), sex and body site of one case."""

    age: float | None = None
    sex: str | None = None
    site: str | None = None

    @property
    def given(self) -> list[str]:
        """Names of the fields that were given (for summaries and reports)."""
        return [n for n in ("age", "sex", "site") if getattr(self, n) is not None]

    def describe(self) -> str:
        """Short text such as ``"age 63, male, back"`` or ``"none given"``."""
        parts = []
        if self.age is not None:
            parts.append(f"age {self.age:g}")
        if self.sex is not None:
            parts.append(self.sex)
        if self.site is not None:
            parts.append(self.site)
        return ", ".join(parts) if parts else "none given"


def _word(value) -> str | None:
    """A lower-case stripped string, or None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip().lower()
    return None if text in MISSING_WORDS else text


def parse_context(age=None, sex=None, site=None) -> PatientContext:
    """Validate raw values (numbers, strings, blanks) into a :class:`PatientContext`.

    Args:
        age: Years (number or numeric text), or blank/None.
        sex: ``female``/``male`` (any case), or blank/``unknown``/None.
        site: A HAM10000 ``localization`` value, or blank/``unknown``/None.

    Returns:
        The context with missing fields as None.

    Raises:
        MetadataError: On a malformed or out-of-range age, or an unknown sex or site.
    """
    a = _word(age)
    age_value = None
    if a is not None:
        try:
            age_value = float(a)
        except ValueError as exc:
            raise MetadataError(f"age {age!r} is not a number") from exc
        if not AGE_RANGE[0] <= age_value <= AGE_RANGE[1] or math.isnan(age_value):
            raise MetadataError(f"age {age!r} is outside {AGE_RANGE[0]:g}-{AGE_RANGE[1]:g}")
    s = _word(sex)
    if s is not None and s not in SEXES:
        raise MetadataError(f"sex {sex!r} is not one of {', '.join(SEXES)} or blank")
    b = _word(site)
    if b is not None and b not in SITES:
        raise MetadataError(f"body site {site!r} is not a HAM10000 localization value")
    return PatientContext(age_value, s, b)


def encode(context: PatientContext | None) -> np.ndarray:
    """The model's metadata vector (float32, length :data:`DIM`) of one context."""
    c = context or PatientContext()
    v = np.zeros(DIM, dtype=np.float32)
    if c.age is None:
        v[1] = 1.0
    else:
        v[0] = c.age / 100.0
    v[2 + (SEXES.index(c.sex) if c.sex is not None else 2)] = 1.0
    v[5 + (SITES.index(c.site) if c.site is not None else len(SITES))] = 1.0
    return v


MISSING = encode(None)
"""The vector of a case with no patient context (image-only prediction)."""


def frame_contexts(df: pd.DataFrame) -> list[PatientContext]:
    """Patient context of each row of a HAM10000 metadata table (``age``, ``sex``,
    ``localization``; absent columns and invalid values count as not given).
    """
    cols = [c if c in df.columns else None for c in ("age", "sex", "localization")]
    out = []
    for row in df.itertuples(index=False):
        values = [getattr(row, c) if c else None for c in cols]
        try:
            out.append(parse_context(*values))
        except MetadataError:
            out.append(PatientContext())
    return out


def encode_frame(df: pd.DataFrame) -> np.ndarray:
    """Vectors for the rows of a HAM10000 metadata table (``age``, ``sex``,
    ``localization``; absent columns and invalid values count as not given).

    Returns:
        (N, DIM) float32.
    """
    contexts = frame_contexts(df)
    if not contexts:
        return np.zeros((0, DIM), dtype=np.float32)
    return np.stack([encode(c) for c in contexts])


def segment_ids() -> np.ndarray:
    """(DIM,) index of the field (0 age, 1 sex, 2 site) each vector entry belongs to."""
    return np.concatenate([np.full(n, i) for i, (_, n) in enumerate(SEGMENTS)])


def site_label(site: str) -> str:
    """Readable name of a body site (``"lower extremity"`` -> ``"Lower extremity"``)."""
    return site[:1].upper() + site[1:]


def read_metadata_csv(path) -> dict[str, PatientContext | MetadataError]:
    """Patient context per image from a CSV with an ``image`` column (file name without
    extension) and any of ``age``, ``sex``, ``localization``.

    Args:
        path: The CSV file.

    Returns:
        ``{image name: context}``, or the row's :class:`MetadataError` for an invalid row.

    Raises:
        MetadataError: If the file cannot be read or has no ``image`` column.
    """
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MetadataError(f"cannot read metadata file {path}: {exc}") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "image" not in df.columns:
        raise MetadataError(f"metadata file {path} has no 'image' column")
    out: dict[str, PatientContext | MetadataError] = {}
    for row in df.itertuples(index=False):
        name = str(row.image).strip()
        name = name.rsplit(".", 1)[0] if name.lower().endswith((".jpg", ".jpeg", ".png")) else name
        values = [getattr(row, c) if c in df.columns else None for c in ("age", "sex")]
        values.append(row.localization if "localization" in df.columns else None)
        if name in out:
            out[name] = MetadataError(f"metadata: more than one row for image {name!r}")
            continue
        try:
            out[name] = parse_context(*values)
        except MetadataError as exc:
            out[name] = MetadataError(f"metadata: {exc}")
    return out


@dataclass
class ContextModel:
    """What age, sex and site alone say about the diagnosis: a class-balanced logistic
    regression on the encoded context, scikit-learn style (:meth:`fit` returns ``self``).

    Fitted by :meth:`fit` (or read back by :meth:`from_config`):
        coef_: (K', DIM) weights of the classes seen in training.
        intercept_: (K',) their intercepts.
        classes_: The class indices those rows stand for.
    """

    coef_: np.ndarray = field(default_factory=lambda: np.zeros((0, DIM)), init=False)
    intercept_: np.ndarray = field(default_factory=lambda: np.zeros(0), init=False)
    classes_: list[int] = field(default_factory=list, init=False)

    def fit(self, vectors: np.ndarray, y_idx: np.ndarray) -> ContextModel:
        """Fit on (N, DIM) encoded contexts and their (N,) class indices (weights rounded
        to 6 decimals, as ``config.json`` stores them).

        Returns:
            ``self``.
        """
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(class_weight="balanced", max_iter=2000).fit(vectors, y_idx)
        self.coef_ = np.round(clf.coef_, 6)
        self.intercept_ = np.round(clf.intercept_, 6)
        self.classes_ = [int(c) for c in clf.classes_]
        return self

    def predict_proba(self, vectors: np.ndarray, n_classes: int = 7) -> np.ndarray:
        """Class probabilities (balanced prior).

        Returns:
            (N, n_classes); classes absent from its training data get 0.
        """
        logits = np.asarray(vectors, dtype=np.float64) @ np.asarray(self.coef_).T
        logits += np.asarray(self.intercept_)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        out = np.zeros((len(probs), n_classes))
        out[:, self.classes_] = probs / probs.sum(axis=1, keepdims=True)
        return out

    def to_config(self) -> dict:
        """JSON-ready ``{"coef", "intercept", "classes"}`` (stored in ``context_fusion``)."""
        return {
            "coef": np.asarray(self.coef_).tolist(),
            "intercept": np.asarray(self.intercept_).tolist(),
            "classes": list(self.classes_),
        }

    @classmethod
    def from_config(cls, config: dict) -> ContextModel:
        """The fitted model of a :meth:`to_config` dict (extra keys are ignored)."""
        model = cls()
        model.coef_ = np.asarray(config["coef"], dtype=np.float64)
        model.intercept_ = np.asarray(config["intercept"], dtype=np.float64)
        model.classes_ = [int(c) for c in config["classes"]]
        return model


def has_context(vectors: np.ndarray) -> np.ndarray:
    """(N,) True where a vector gives any field (differs from :data:`MISSING`)."""
    return np.any(np.asarray(vectors) != MISSING, axis=1)
