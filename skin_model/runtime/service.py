"""Cases end to end, for the app: a session store that owns the decoded uploads, how they
are grouped into lesions, the details typed for each lesion, and the prediction and
heatmap caches, with explicit pruning; plus the summary rows, the CSV and the report.

All in memory: nothing here writes or logs an image or a patient's details.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from skin_model import display_name
from skin_model.data.metadata import PatientContext
from skin_model.runtime.advice import Verdict, pct
from skin_model.runtime.explain import overlay
from skin_model.runtime.inference import ModelBundle, Prediction
from skin_model.runtime.pipeline import (
    CaseInput,
    Upload,
    case_heatmap,
    decode_upload,
    judge,
    network_predictions,
)
from skin_model.runtime.report import ReportRecord, render_pdf
from skin_model.runtime.results import result_row, rows_to_csv_text

APP_CHUNK = 4
"""Images per model call in the app: a few uploads at a time, so peak memory matters more
than batch speed (16, the CLI's, used about 17 MB more for 10 uploads)."""


def digest(data: bytes) -> str:
    """SHA-256 hex digest of a file's bytes (the identity of an upload)."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class CaseRecord:
    """What the clinician typed for one case (plain text: shown and written as typed)."""

    reference: str = ""
    notes: str = ""


@dataclass
class Lesion:
    """A case: one lesion with one or more images, one set of patient details and its
    own record (reference and notes); ``number`` is its place on the page (1, 2, ...).
    """

    key: str
    uploads: list[Upload]
    context: PatientContext | None
    record: CaseRecord = CaseRecord()
    number: int = 1

    @property
    def label(self) -> str:
        """The case as people name it: ``"Case 2"``."""
        return f"Case {self.number}"

    @property
    def names(self) -> list[str]:
        """The file names of its images."""
        return [u.name for u in self.uploads]

    @property
    def good(self) -> list[Upload]:
        """Its images that could be decoded."""
        return [u for u in self.uploads if u.image is not None]

    def as_input(self) -> CaseInput:
        """The case as the pipeline takes it."""
        return CaseInput(tuple(self.uploads), self.context)


@dataclass
class Result:
    """A lesion's result at the page's prevalence, with its plain-language verdict."""

    lesion: Lesion
    prediction: Prediction | None
    verdict: Verdict | None

    @property
    def error(self) -> str:
        """Why nothing could be classified (every image failed), else ``""``."""
        if self.prediction is not None:
            return ""
        return "; ".join(f"{u.name}: {u.error}" for u in self.lesion.uploads)


@dataclass
class CaseStore:
    """Everything the Classify page keeps for one browser session.

    Uploads are decoded once and kept until removed (so leaving the page and coming back
    keeps them); predictions are cached per lesion and patient details at the training
    prevalence, heatmaps per image, class, method and details. Removing an upload or
    regrouping prunes exactly the cache entries that depended on it.
    """

    uploads: dict[str, Upload] = field(default_factory=dict)
    lesion_of: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, PatientContext] = field(default_factory=dict)
    records: dict[str, CaseRecord] = field(default_factory=dict)
    _predictions: dict = field(default_factory=dict)
    _heatmaps: dict = field(default_factory=dict)

    def add(self, files: Sequence[tuple[str, bytes]]) -> list[str]:
        """Decode new files (the same file under the same name is not decoded again).

        Returns:
            The key of each file, in order.
        """
        keys = []
        for name, data in files:
            base = digest(data)
            key, n = base, 1
            while key in self.uploads and self.uploads[key].name != name:
                n += 1
                key = f"{base}-{n}"
            if key not in self.uploads:
                self.uploads[key] = decode_upload(key, name, data)
                self.lesion_of[key] = key
            keys.append(key)
        return keys

    def remove(self, key: str) -> None:
        """Forget an upload and everything cached for it."""
        self.uploads.pop(key, None)
        lesion = self.lesion_of.pop(key, None)
        self._prune(key, lesion)
        if lesion is not None and lesion not in self.lesion_of.values():
            self.contexts.pop(lesion, None)
            self.records.pop(lesion, None)

    def clear(self) -> None:
        """Start the next patient: drop every upload, detail, note and cache."""
        self.uploads.clear()
        self.lesion_of.clear()
        self.contexts.clear()
        self._predictions.clear()
        self._heatmaps.clear()
        self.records.clear()

    def group(self, keys: Sequence[str]) -> None:
        """Mark uploads as images of one lesion (it keeps the first one's details)."""
        keys = [k for k in keys if k in self.uploads]
        if len(keys) < 2:
            return
        target = self.lesion_of[keys[0]]
        for k in keys:
            self._prune(None, self.lesion_of[k])
            self.lesion_of[k] = target

    def split(self, lesion: str) -> None:
        """Make each image of a lesion its own case again."""
        self._prune(None, lesion)
        for k, v in list(self.lesion_of.items()):
            if v == lesion:
                self.lesion_of[k] = k
                if k != lesion and lesion in self.contexts:
                    self.contexts[k] = self.contexts[lesion]
                if k != lesion and lesion in self.records:
                    self.records[k] = self.records[lesion]

    def set_context(self, lesion: str, context: PatientContext | None) -> None:
        """Record the patient details typed for a lesion."""
        if context is None:
            self.contexts.pop(lesion, None)
        else:
            self.contexts[lesion] = context

    def set_record(self, lesion: str, reference: str | None = None, notes: str | None = None):
        """Record a case's reference and/or notes (None leaves a field as it is)."""
        old = self.records.get(lesion, CaseRecord())
        self.records[lesion] = CaseRecord(
            old.reference if reference is None else reference,
            old.notes if notes is None else notes,
        )

    def lesions(self) -> list[Lesion]:
        """The cases in upload order, each with its images, details and record."""
        order: dict[str, list[Upload]] = {}
        for key, upload in self.uploads.items():
            order.setdefault(self.lesion_of[key], []).append(upload)
        return [
            Lesion(k, ups, self.contexts.get(k), self.records.get(k, CaseRecord()), i + 1)
            for i, (k, ups) in enumerate(order.items())
        ]

    def _prune(self, upload: str | None, lesion: str | None) -> None:
        self._predictions = {
            k: v for k, v in self._predictions.items() if lesion is None or k[0] != lesion
        }
        if upload is not None:
            self._heatmaps = {k: v for k, v in self._heatmaps.items() if k[0] != upload}

    def predictions(self, bundle: ModelBundle, lesions: Sequence[Lesion]) -> dict[str, Prediction]:
        """Each lesion's prediction at the training prevalence; uncached ones in one batch
        (a lesion of several images: the mean of their network outputs).
        """
        todo = [les for les in lesions if les.good and self._key(les) not in self._predictions]
        if todo:
            preds = network_predictions(bundle, [les.as_input() for les in todo], APP_CHUNK)
            for les, pred in zip(todo, preds, strict=True):
                self._predictions[self._key(les)] = pred
        return {les.key: self._predictions[self._key(les)] for les in lesions if les.good}

    @staticmethod
    def _key(lesion: Lesion) -> tuple:
        return (lesion.key, tuple(u.key for u in lesion.good), lesion.context)

    def heatmap(
        self,
        bundle: ModelBundle,
        upload: Upload,
        class_code: str,
        method: str,
        context: PatientContext | None,
        views: int | None = None,
    ) -> np.ndarray:
        """The cached heatmap of ``class_code`` for one image (computed once), over the
        ``views`` the result took.
        """
        key = (upload.key, class_code, method, context, views)
        if key not in self._heatmaps:
            self._heatmaps[key] = case_heatmap(
                bundle, upload.image, context, class_code, method, views
            )
        return self._heatmaps[key]


def results(
    bundle: ModelBundle,
    store: CaseStore,
    prevalence: float | None,
) -> list[Result]:
    """Every lesion's result at ``prevalence`` (None: the training data's share)."""
    lesions = store.lesions()
    preds = store.predictions(bundle, lesions)
    out = []
    for les in lesions:
        judged = judge(
            bundle, preds.get(les.key), prevalence, [q for u in les.good for q in u.quality]
        )
        out.append(Result(les, judged.prediction, judged.verdict))
    return out


def summary_row(result: Result) -> dict:
    """One row of the summary table (plain text cells)."""
    les = result.lesion
    if result.prediction is None:
        return {
            "case": les.label,
            "image(s)": ", ".join(les.names),
            "referral": "no result",
            "risk tier": "",
            "malignant risk": "",
            "threshold": "",
            "most likely": "",
            "warnings": result.error,
        }
    p, v = result.prediction, result.verdict
    return {
        "case": les.label,
        "image(s)": ", ".join(les.names),
        "referral": "REFER" if v.refer else "below threshold",
        "risk tier": v.tier_name,
        "malignant risk": pct(p.malignant_probability),
        "threshold": pct(p.threshold),
        "most likely": display_name(p.most_probable_class),
        "warnings": v.labels,
    }


def csv_text(
    outcomes: Sequence[Result],
    prevalence: float | None,
    model: str = "",
    now: dt.datetime | None = None,
) -> str:
    """The results CSV (the CLI's columns): one row per image with its case's label,
    record and result, the date and time and the model version.
    """
    created = (now or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    rows = []
    for r in outcomes:
        les = r.lesion
        record = {
            "case": les.label,
            "created": created,
            "model": model,
            "reference": les.record.reference,
            "notes": les.record.notes,
        }
        for u in les.uploads:
            if u.image is None:
                rows.append(result_row(u.name, None, u.error, record=record))
            else:
                rows.append(
                    result_row(u.name, r.prediction, "", u.quality, prevalence, r.verdict, record)
                )
    return rows_to_csv_text(rows)


def top_table(prediction: Prediction, k: int = 7) -> list[tuple[str, float]]:
    """The ``k`` most probable classes as ``[("Melanoma (mel)", 0.61), ...]``."""
    return [(display_name(c), p) for c, p in prediction.top_k(k)]


def overlay_image(image: np.ndarray, cam: np.ndarray, alpha: float) -> np.ndarray:
    """An image with a heatmap blended in (opacity ``alpha``, faint where attention is low)."""
    return overlay(image, cam, alpha)


def case_report(
    bundle: ModelBundle,
    store: CaseStore,
    result: Result,
    cam: np.ndarray | None,
    overlay_title: str,
    alpha: float,
    now: dt.datetime | None = None,
) -> bytes:
    """The PDF report of one lesion's result."""
    p, v = result.prediction, result.verdict
    first = result.lesion.good[0]
    lines = [v.action, v.risk_line]
    if v.details:
        lines.append(v.details)
    if v.evidence:
        lines.append(v.evidence)
    if v.threshold_reason:
        lines.append(v.threshold_reason)
    if v.second_look:
        lines.append(v.second_look)
    from skin_model.runtime.advice import headline

    lines += [line for line in headline(p) if line]
    ctx = result.lesion.context
    if ctx is not None and ctx.given and not bundle.uses_context:
        lines.append(f"Patient details recorded (not used by this model): {ctx.describe()}")
    record = ReportRecord(
        created=(now or dt.datetime.now()).strftime("%Y-%m-%d %H:%M"),
        case_reference=result.lesion.record.reference,
        notes=result.lesion.record.notes,
        files=[f"{result.lesion.label}: {n}" for n in result.lesion.names],
        model=bundle.config.describe(),
        title=v.title,
        refer=v.refer,
        lines=lines,
        warnings=[message for _, message in v.warnings],
        probabilities=p.probabilities,
        images=[u.image for u in result.lesion.good],
        overlay=None if cam is None else overlay(first.image, cam, alpha),
        overlay_title=overlay_title,
        context=p.context_used,
    )
    return render_pdf(record)
