"""A model directory's ``config.json`` as a typed object, read in one place.

:func:`read_model_config` upgrades every earlier layout (``tta: true``, no
``cam_layer``, no ``ood_layers``, no class prior...) to the current :data:`SCHEMA`, so no
other module branches on a file's age. The post-hoc layer
(:class:`~skin_model.model.posthoc.PostHoc`) and the "not dermoscopic" detector
(:class:`~skin_model.model.ood.Detector`) own their keys; this class only carries them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from skin_model import CLASSES
from skin_model.model.artifacts import CONFIG_FILE, ModelLoadError, read_json, write_json
from skin_model.model.calibration import ARGMAX_RULE, DECISION_RULE

SCHEMA = 2
"""Layout version: 1 = every file written before the schema number existed."""


@dataclass
class ModelConfig:
    """Everything a model directory records about its model besides the weights.

    Attributes:
        architecture: The :mod:`skin_model.model.architectures` name.
        input_size: Side of the square model input, or its width when ``input_height``
            is set.
        input_height: Height of an input of the images' own aspect (0: square).
        classes: Output classes, in order.
        tta: Test-time augmentation views (1 = none, 4 = rotations, 8 = with flips).
        second_look_views: Views an image near its referral threshold is averaged over
            (:func:`skin_model.runtime.inference.second_look`; <= ``tta``: none).
        second_look_band: How near, in log-odds of the risk against the threshold.
        cam_layer: Layer the default heatmap reads (None: the architecture's default).
        cam_method: The heatmap method shown by default (chosen at finalisation with its
            layer; models finalised before the choice existed use Grad-CAM).
        cam_layers: The layer chosen for each method scored at finalisation (empty:
            ``cam_layer`` for ``cam_method``, the architecture's default for the others).
        metadata_input: Whether the network has the patient-context input.
        class_prior, malignant_share, decision_rule, decision_weights, temperature,
            malignant_threshold, malignant_threshold_metadata, context_fusion,
            target_sensitivity: the post-hoc layer's keys
            (:class:`skin_model.model.posthoc.PostHoc`).
        ood_layers, ood_group_limits, ood_threshold: the detector's keys.
        weights_provenance: Where the initial weights came from (None: random/own file).
        trained_on: Date of the finalisation.
        training: The :class:`~skin_model.model.settings.TrainConfig` of the run, as a dict.
        version: Package version that wrote the file.
        schema: :data:`SCHEMA`.
    """

    architecture: str
    input_size: int
    input_height: int = 0
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    tta: int = 1
    second_look_views: int = 1
    second_look_band: float = 0.0
    cam_layer: str | None = None
    cam_method: str = "Grad-CAM"
    cam_layers: dict[str, str] = field(default_factory=dict)
    metadata_input: bool = False
    class_prior: list[float] | None = None
    malignant_share: float | None = None
    decision_rule: str = ARGMAX_RULE
    decision_weights: list[float] | None = None
    temperature: float = 1.0
    malignant_threshold: float = 0.5
    malignant_threshold_metadata: float | None = None
    context_fusion: dict | None = None
    target_sensitivity: float = 0.90
    ood_layers: list[str] = field(default_factory=lambda: ["features"])
    ood_group_limits: list[float] | None = None
    ood_threshold: float | None = None
    weights_provenance: dict | None = None
    trained_on: str = ""
    training: dict = field(default_factory=dict)
    version: str = ""
    schema: int = SCHEMA

    @property
    def input_shape(self) -> tuple[int, int]:
        """The model input's ``(height, width)``."""
        return int(self.input_height or self.input_size), int(self.input_size)

    def to_dict(self) -> dict:
        """The JSON-ready dict written to ``config.json``."""
        return asdict(self)

    @property
    def looks_again(self) -> bool:
        """Whether an image near its referral threshold gets a second look (more views
        than ``tta``, within a band).
        """
        return self.second_look_views > self.tta and self.second_look_band > 0

    def describe(self) -> str:
        """A short model version line (reports, the app)."""
        height, width = self.input_shape
        size = f"{width}" if height == width else f"{height}x{width}"
        return f"{self.architecture} {size}px, trained {self.trained_on}"


def upgrade(raw: dict) -> dict:
    """An earlier ``config.json`` layout in the current one.

    Schema 1 differences: ``tta`` was a bool (True = 8 views); ``decision_rule`` was
    implied by ``class_prior`` (the balanced rule) or absent (argmax); ``ood_layers`` was
    implied (``features``); ``cam_layer`` may be missing (the architecture's default).
    """
    out = dict(raw)
    tta = out.get("tta", 1)
    out["tta"] = (8 if tta else 1) if isinstance(tta, bool) or tta is None else int(tta)
    if "decision_rule" not in out and out.get("class_prior"):
        out["decision_rule"] = DECISION_RULE
    if out.get("ood_threshold") is None:
        out.pop("ood_threshold", None)
    out["schema"] = SCHEMA
    known = {f.name for f in fields(ModelConfig)}
    return {k: v for k, v in out.items() if k in known}


def read_model_config(model_dir: Path) -> ModelConfig:
    """The :class:`ModelConfig` of a model directory, upgraded to :data:`SCHEMA`.

    Raises:
        ModelLoadError: If ``config.json`` is missing, not JSON or lacks required keys.
    """
    path = Path(model_dir) / CONFIG_FILE
    try:
        raw = read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}") from exc
    try:
        return ModelConfig(**upgrade(raw))
    except TypeError as exc:
        raise ModelLoadError(f"{path} is not a model config ({exc}).") from exc


def write_model_config(model_dir: Path, config: ModelConfig) -> None:
    """Write ``config.json``."""
    write_json(Path(model_dir) / CONFIG_FILE, config.to_dict())
