"""A model directory's ``metrics.json`` as a typed object, read in one place.

Evaluation writes the file as a plain dict (:func:`skin_model.train.finalise.finalise_model`,
``python -m skin_model evaluate --out``); every reader (the pages, the card, the README,
the tables, the verdicts' tiers, the benchmark) takes a :class:`Metrics` made by
:func:`read_metrics` or :meth:`Metrics.from_dict`. Earlier layouts (no tiers, no
``training_share``, ``ece_before_temperature``, the detector's single AUROC) are upgraded
here, so no reader branches on a file's age.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skin_model.model.artifacts import METRICS_FILE, ArtifactError

REQUIRED = ("n_images", "balanced_accuracy", "per_class", "malignant", "calibration")
"""Keys without which a file was not written by evaluation."""


def _opt(x: Any) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class Roc:
    """A ROC curve as stored (false- and true-positive rates, descending thresholds)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...] = ()

    @classmethod
    def from_dict(cls, d: dict | None) -> Roc | None:
        """The curve of a ``{"fpr", "tpr", "thresholds"}`` dict (None when absent)."""
        if not d or not d.get("fpr"):
            return None
        return cls(tuple(d["fpr"]), tuple(d["tpr"]), tuple(d.get("thresholds") or ()))

    def as_dict(self) -> dict:
        """The stored layout (for :func:`skin_model.evaluate.metrics.operating_point_from_roc`)."""
        return {"fpr": list(self.fpr), "tpr": list(self.tpr), "thresholds": list(self.thresholds)}


@dataclass(frozen=True)
class ClassFigures:
    """One class's one-vs-rest figures on the evaluated images."""

    sensitivity: float
    specificity: float
    auc: float | None
    precision: float | None = None
    f1: float | None = None
    support: int = 0
    roc: Roc | None = None

    @classmethod
    def from_dict(cls, d: dict) -> ClassFigures:
        """From one entry of ``per_class``."""
        return cls(
            sensitivity=float(d["sensitivity"]),
            specificity=float(d["specificity"]),
            auc=_opt(d.get("auc")),
            precision=_opt(d.get("precision")),
            f1=_opt(d.get("f1")),
            support=int(d.get("support", 0)),
            roc=Roc.from_dict(d.get("roc")),
        )


@dataclass(frozen=True)
class OperatingPoint:
    """The malignant referral threshold and what it did (training-prevalence scale)."""

    threshold: float
    sensitivity: float | None
    specificity: float | None
    ppv: float | None = None
    npv: float | None = None
    referral_rate: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> OperatingPoint:
        """From ``malignant.operating_point``."""
        return cls(
            threshold=float(d["threshold"]),
            sensitivity=_opt(d.get("sensitivity")),
            specificity=_opt(d.get("specificity")),
            ppv=_opt(d.get("ppv")),
            npv=_opt(d.get("npv")),
            referral_rate=_opt(d.get("referral_rate")),
        )

    def as_dict(self) -> dict:
        """Sensitivity and specificity as :func:`skin_model.runtime.clinic.per_thousand` reads."""
        return {
            "threshold": self.threshold,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
        }


@dataclass(frozen=True)
class RiskTier:
    """One risk tier: its training-scale risk range and the test rates inside it."""

    key: str
    lower: float
    upper: float
    rate_malignant: float
    rate_benign: float
    n: int = 0
    n_malignant: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> RiskTier:
        """From one entry of ``malignant.tiers``."""
        return cls(
            key=str(d["key"]),
            lower=float(d["lower"]),
            upper=float(d["upper"]),
            rate_malignant=float(d["rate_malignant"]),
            rate_benign=float(d["rate_benign"]),
            n=int(d.get("n", 0)),
            n_malignant=int(d.get("n_malignant", 0)),
        )


@dataclass(frozen=True)
class RiskCalibration:
    """How well the malignant risk matches the observed share (bins of mean risk)."""

    ece: float
    mean_risk: float | None = None
    observed_share: float | None = None
    bins: tuple[dict, ...] = ()

    @classmethod
    def from_dict(cls, d: dict | None) -> RiskCalibration | None:
        """From ``malignant.calibration`` (None when absent)."""
        if not d:
            return None
        return cls(
            float(d["ece"]),
            _opt(d.get("mean_risk")),
            _opt(d.get("observed_share")),
            tuple(d.get("bins") or ()),
        )


@dataclass(frozen=True)
class Malignant:
    """Malignant-vs-benign figures: AUC, the operating point, the risk's calibration and
    tiers, and the malignant share of the training data (where risks are on scale).
    """

    auc: float | None
    operating_point: OperatingPoint
    prevalence: float | None = None
    roc: Roc | None = None
    calibration: RiskCalibration | None = None
    training_share: float | None = None
    tiers: tuple[RiskTier, ...] = ()

    @classmethod
    def from_dict(cls, d: dict) -> Malignant:
        """From the ``malignant`` block."""
        return cls(
            auc=_opt(d.get("auc")),
            operating_point=OperatingPoint.from_dict(d["operating_point"]),
            prevalence=_opt(d.get("prevalence")),
            roc=Roc.from_dict(d.get("roc")),
            calibration=RiskCalibration.from_dict(d.get("calibration")),
            training_share=_opt(d.get("training_share")),
            tiers=tuple(RiskTier.from_dict(t) for t in d.get("tiers") or ()),
        )


@dataclass(frozen=True)
class Calibration:
    """Top-label calibration of the probabilities shown (and of the raw outputs)."""

    ece: float
    bins: tuple[dict, ...] = ()
    ece_raw_outputs: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        """From the ``calibration`` block (``ece_before_temperature`` in early files)."""
        raw = d.get("ece_raw_outputs", d.get("ece_before_temperature"))
        return cls(float(d["ece"]), tuple(d.get("bins") or ()), _opt(raw))


@dataclass(frozen=True)
class Scores:
    """One evaluation's figures: the whole test split, or the same with patient details.

    Attributes:
        n_images: Images evaluated.
        balanced_accuracy, accuracy, macro_auc: Of the suggested diagnosis.
        per_class: Class code → its figures.
        confusion_labels, confusion_counts: The confusion matrix (rows: true class).
        calibration: Top-label calibration.
        malignant: Malignant-vs-benign figures.
        intervals: Figure key → 95% lesion-bootstrap interval.
        intervals_method: How the intervals were made, in words.
        fusion: How the patient context was combined (with-details figures only).
    """

    n_images: int
    balanced_accuracy: float
    accuracy: float | None
    macro_auc: float | None
    per_class: dict[str, ClassFigures]
    confusion_labels: tuple[str, ...]
    confusion_counts: tuple[tuple[int, ...], ...]
    calibration: Calibration
    malignant: Malignant
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    intervals_method: str = ""
    fusion: str = ""

    @staticmethod
    def _fields(d: dict) -> dict:
        cm = d.get("confusion_matrix") or {}
        return {
            "n_images": int(d["n_images"]),
            "balanced_accuracy": float(d["balanced_accuracy"]),
            "accuracy": _opt(d.get("accuracy")),
            "macro_auc": _opt(d.get("macro_auc")),
            "per_class": {k: ClassFigures.from_dict(v) for k, v in d["per_class"].items()},
            "confusion_labels": tuple(cm.get("labels") or ()),
            "confusion_counts": tuple(tuple(int(x) for x in r) for r in cm.get("counts") or ()),
            "calibration": Calibration.from_dict(d["calibration"]),
            "malignant": Malignant.from_dict(d["malignant"]),
            "intervals": {
                k: (float(v[0]), float(v[1])) for k, v in (d.get("intervals") or {}).items()
            },
            "intervals_method": str(d.get("intervals_method") or ""),
            "fusion": str(d.get("fusion") or ""),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scores:
        """From an evaluation's dict (the file's top level or its ``with_metadata``)."""
        return cls(**cls._fields(d))

    def interval(self, key: str) -> tuple[float, float] | None:
        """The stored 95% interval of a figure, if any."""
        return self.intervals.get(key)


@dataclass(frozen=True)
class Metrics(Scores):
    """The whole ``metrics.json``: the test figures (:class:`Scores`) and what evaluation
    recorded beside them. Blocks whose layout belongs to one writer (the detector's
    figures, the robustness and Grad-CAM checks, the calibration fit) stay dicts; only
    their owner's table reads inside them.

    Attributes:
        evaluated_on: Which data, in words.
        with_metadata: The same figures with the patient details (None: image only).
        validation: Figures measured on the validation part (choices made there).
        model: Architecture, size, digest and weights' provenance.
        training: Epochs, best epoch, seconds, device and settings.
        split: Part → class → image count.
        ood, robustness, cam_localisation, cam_layer_choice, lesion_grouping,
            calibration_fit, metadata_only_baseline: Their writers' blocks ({} if absent).
        targets: The quality targets with the achieved values, as evaluation wrote them.
        raw: The file as read.
    """

    evaluated_on: str = "evaluation"
    with_metadata: Scores | None = None
    validation: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    ood: dict = field(default_factory=dict)
    robustness: dict = field(default_factory=dict)
    cam_localisation: dict = field(default_factory=dict)
    cam_layer_choice: dict = field(default_factory=dict)
    lesion_grouping: dict = field(default_factory=dict)
    calibration_fit: dict = field(default_factory=dict)
    metadata_only_baseline: dict = field(default_factory=dict)
    targets: tuple[dict, ...] = ()
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict) -> Metrics:
        """From a dict as evaluation writes it (any earlier layout).

        Raises:
            ArtifactError: If a key every evaluation writes is missing.
        """
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ArtifactError(
                f"metrics lack {', '.join(missing)}; they were not written by evaluation."
            )
        ood = dict(d.get("ood") or {})
        if "auroc" in ood and "synthetic" not in ood:  # before real photographs were tested
            ood = {"synthetic": {"auroc": ood["auroc"]}}
        wm = d.get("with_metadata")
        return cls(
            **cls._fields(d),
            evaluated_on=str(d.get("evaluated_on") or "evaluation"),
            with_metadata=Scores.from_dict(wm) if wm else None,
            validation=dict(d.get("validation") or {}),
            model=dict(d.get("model") or {}),
            training=dict(d.get("training") or {}),
            split=dict(d.get("split") or {}),
            ood=ood,
            robustness=dict(d.get("robustness") or {}),
            cam_localisation=dict(d.get("cam_localisation") or {}),
            cam_layer_choice=dict(d.get("cam_layer_choice") or {}),
            lesion_grouping=dict(d.get("lesion_grouping") or {}),
            calibration_fit=dict(d.get("calibration_fit") or {}),
            metadata_only_baseline=dict(d.get("metadata_only_baseline") or {}),
            targets=tuple(d.get("targets") or ()),
            raw=d,
        )

    @property
    def best_epoch(self) -> int | None:
        """The epoch whose weights the run kept (None: not recorded)."""
        best = self.training.get("best_epoch")
        return None if best is None else int(best)

    @property
    def members(self) -> list[str]:
        """The model directories an averaged network was made of (``train.py --members``;
        it has no epochs of its own), else ``[]``.
        """
        return [str(m) for m in self.training.get("members") or []]

    @property
    def shared_layers(self) -> list[int]:
        """How many layers each later member of an averaged network takes from the first
        (computed once; ``[]``: not averaged, or averaged before layers were shared).
        """
        return [int(n) for n in self.training.get("shared_layers") or []]


def read_metrics(model_dir: Path) -> Metrics:
    """A model directory's ``metrics.json``, typed.

    Raises:
        ArtifactError: If the file is missing, not valid JSON or lacks the keys every
            evaluation writes.
    """
    path = Path(model_dir) / METRICS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(
            f"No metrics file at {path}; run `python train.py` or "
            "`python -m skin_model evaluate --out`."
        ) from exc
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is damaged ({exc}); restore it with git.") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path} is not a metrics file; restore it with git.")
    try:
        return Metrics.from_dict(raw)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path} has an unexpected layout ({exc!r}); restore it.") from exc
