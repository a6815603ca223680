"""The settings of one training run (``TrainConfig``): every field is a ``train.py``
option and is recorded in ``config.json``, ``run_config.json`` and the model card. The
defaults are the shipped model's recipe, chosen by lesion-grouped cross-validation.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from skin_model.data.augmentation import EXPOSURE, Augmentation
from skin_model.model.artifacts import (
    CHECKPOINT_FILE,
    FITTED_WEIGHTS_FILE,
    MODEL_FILE,
    RUN_CONFIG_FILE,
)

LOSSES = ("logit_adjusted", "crossentropy")

FOLD_FIELD = "{fold}"
"""In ``--teachers`` of a cross-validation run: the fold being trained."""


VIEW_CHOICES = (0, 1, 2, 4, 8)
"""``--views``: 0 chooses on validation; else the first n of the image's turns and flips
(:data:`skin_model.runtime.inference.VIEWS`: 2 is the image and its half turn)."""


def comma_paths(text: str | None) -> list[str]:
    """The paths of a ``A,B`` option value (``--teachers``, ``--members``), blanks dropped."""
    return [p.strip() for p in (text or "").split(",") if p.strip()]


@dataclass
class TrainConfig:
    """Settings of one training run (all recorded in ``config.json``)."""

    architecture: str = "efficientnet_lite0"
    input_size: int = 192
    input_height: int = 0  # 0: a square input of side input_size; else its own aspect's height
    width: float = 1.0
    epochs: int = 6
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    backbone_lr_scale: float = 1.0
    head_warmup_epochs: int = 0
    label_smoothing: float = 0.0
    loss: str = "logit_adjusted"
    class_weight_power: float = 0.0
    crop_min_scale: float = 0.75
    white_balance: float = 0.0
    colour_constancy: float = 0.0
    colour_constancy_brightness: float = 0.0  # the layer's fixed level (0 = each image's own)
    robust: float = 0.0
    jpeg_as_file: bool = False  # the robust JPEG as a saved file's (before the crop)
    exposure: float = EXPOSURE  # half-width of the capture changes' exposure gain
    rotation: float = 0.0  # largest angle (degrees) of a training view's turn by any angle
    resaved_files: float = 0.0  # share of training views from the file saved again on its grid
    freeze_stages: int = 0
    cached_views: int = 0
    teachers: str = ""
    distill_weight: float = 0.5
    clean_teacher: bool = False  # teachers see each cached view without the capture changes
    mixup: float = 0.0  # Beta(a, a) mixing of cached views (frozen runs); 0 = off
    cutmix: float = 0.0  # Beta(a, a) share of a cached view's box from a partner; 0 = off
    stochastic_depth: float = 0.0  # EfficientNet-Lite: block i of n skips with this * i / n
    members: str = ""  # finalised model directories averaged into one network, no fitting
    bn_momentum: float = 0.9
    restore_best: bool = False
    ema_half_life: float = 0.0
    metadata: bool = True
    metadata_hide_all: float = 0.5
    metadata_hide_field: float = 0.2
    context_fusion_power: float = 0.0
    context_fusion_feed_network: bool = True
    patience: int = 25
    seed: int = 42
    split_seed: int = -1  # the lesion split's and the folds' seed; -1 = --seed
    val_frac: float = 0.15
    test_frac: float = 0.15
    calib_share: float = 0.5
    target_sensitivity: float = 0.90
    melanoma_weight: float = 1.0  # a missed melanoma counts this many times in the suggestion
    views: int = 0  # 0: chosen on validation; 1, 2 (and the half turn), 4 or 8 views
    tta_min_gain: float = 0.01
    second_look: int = 0  # views for an image near its threshold (0: none; 2, 4 or 8)
    second_look_band: float = 0.5  # how near: log-odds of the risk against the threshold
    ood_quantile: float = 0.99
    limit: int | None = None
    weights: str | None = "default"
    name: str = ""
    verbose: int = 2

    def validate(self) -> TrainConfig:
        """Check the settings before any image is decoded.

        Returns:
            ``self``.

        Raises:
            ConfigError: With a one-line reason.
        """
        from skin_model.model.architectures import spec_for

        try:
            spec = spec_for(self.architecture)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        checks = [
            (
                self.metadata and not spec.takes_context,
                f"--architecture {self.architecture} cannot take the patient context; "
                "add --metadata false",
            ),
            (self.loss not in LOSSES, f"unknown loss {self.loss!r}; choose from {LOSSES}"),
            (self.input_size < 32, "--input-size must be at least 32"),
            (
                self.input_height != 0 and not 32 <= self.input_height <= self.input_size,
                "--input-height must be 0 (square) or from 32 to --input-size (a landscape input)",
            ),
            (
                self.input_shape()[0] != self.input_size and 8 in (self.views, self.second_look),
                "an input of its own aspect (--input-height) has 4 views that keep its shape; "
                "--views and --second-look take 1, 2 or 4",
            ),
            (self.epochs < 1 or self.batch_size < 1, "--epochs and --batch-size must be >= 1"),
            (not 0 < self.crop_min_scale <= 1, "--crop-min-scale must be in (0, 1]"),
            (not 0 <= self.white_balance < 0.5, "--white-balance must be in [0, 0.5)"),
            (not 0 <= self.robust <= 1, "--robust must be in [0, 1]"),
            (not 0 <= self.exposure < 1, "--exposure must be in [0, 1)"),
            (not 0 <= self.rotation <= 45, "--rotation must be in [0, 45] degrees"),
            (not 0 <= self.resaved_files <= 1, "--resaved-files must be in [0, 1]"),
            (self.colour_constancy < 0, "--colour-constancy must be >= 0 (0 = off)"),
            (
                not 0 <= self.colour_constancy_brightness <= 1
                or (self.colour_constancy_brightness > 0 and self.colour_constancy == 0),
                "--colour-constancy-brightness must be in [0, 1] and needs --colour-constancy",
            ),
            (self.context_fusion_power < 0, "--context-fusion-power must be >= 0"),
            (not 0 < self.val_frac + self.test_frac < 1, "--val-frac + --test-frac must be < 1"),
            (self.cached_views < 0, "--cached-views must be >= 0 (0 = one per epoch)"),
            (self.mixup < 0, "--mixup must be >= 0 (0 = off)"),
            (self.cutmix < 0, "--cutmix must be >= 0 (0 = off)"),
            (not 0 <= self.stochastic_depth < 1, "--stochastic-depth must be in [0, 1)"),
            (
                self.stochastic_depth > 0 and not self.architecture.startswith("efficientnet_lite"),
                "--stochastic-depth is for the EfficientNet-Lite networks",
            ),
            (self.mixup > 0 and self.cutmix > 0, "--mixup and --cutmix: choose one"),
            (not self.melanoma_weight > 0, "--melanoma-weight must be > 0 (1 = balanced)"),
            (
                self.clean_teacher and not (self.teachers and self.freeze_stages),
                "--clean-teacher needs --teachers and --freeze-stages: the teachers' outputs "
                "are kept with the cached views",
            ),
            (
                self.mixup > 0 and self.freeze_stages == 0,
                "--mixup needs --freeze-stages: it mixes the cached views",
            ),
            (
                self.cutmix > 0 and self.freeze_stages == 0,
                "--cutmix needs --freeze-stages: it cuts the cached views",
            ),
            (
                self.views not in VIEW_CHOICES,
                "--views must be 0 (choose on validation), 1, 2, 4 or 8",
            ),
            (
                self.second_look not in (0, 2, 4, 8) or self.second_look_band <= 0,
                "--second-look must be 0 (none), 2, 4 or 8 and --second-look-band > 0",
            ),
            *self._freeze_checks(spec),
            *self._teacher_checks(),
            *self._member_checks(),
        ]
        for failed, reason in checks:
            if failed:
                raise ConfigError(reason)
        self._validate_weights(spec)
        return self

    def _freeze_checks(self, spec) -> list[tuple[bool, str]]:
        """Checks of ``--freeze-stages`` (training the top on cached outputs)."""
        if self.freeze_stages == 0:
            return []
        return [
            (self.freeze_stages < 0, "--freeze-stages must be >= 0 (0 = train every layer)"),
            (
                self.freeze_stages >= len(spec.stage_ends),
                f"--architecture {self.architecture} has {max(len(spec.stage_ends) - 1, 0)} "
                "stages that can be frozen",
            ),
        ]

    def _teacher_checks(self) -> list[tuple[bool, str]]:
        """Checks of ``--teachers`` (distillation from the cached views)."""
        if not self.teachers:
            return []
        missing = [t for t in self.teacher_paths() if FOLD_FIELD not in t and not Path(t).exists()]
        return [
            (
                self.freeze_stages == 0,
                "--teachers needs --freeze-stages: the teachers' outputs are kept with the "
                "cached views",
            ),
            (not 0 < self.distill_weight <= 1, "--distill-weight must be in (0, 1]"),
            (bool(missing), f"--teachers: no model at {', '.join(missing)}"),
        ]

    def _member_checks(self) -> list[tuple[bool, str]]:
        """Checks of ``--members`` (trained networks averaged instead of a fit)."""
        if not self.members:
            return []
        paths = self.member_paths()
        missing = [m for m in paths if not (Path(m) / MODEL_FILE).is_file()]
        return [
            (len(paths) < 2, "--members needs two or more model directories"),
            (bool(missing), f"--members: no model directory at {', '.join(missing)}"),
        ]

    def member_paths(self) -> list[str]:
        """The finalised model directories ``--members A,B`` averages."""
        return comma_paths(self.members)

    def augmentation(self) -> Augmentation:
        """How this run's training draws a view of a cached image."""
        return Augmentation(
            out_size=self.input_shape(),
            min_scale=self.crop_min_scale,
            white_balance=self.white_balance,
            robust=self.robust,
            jpeg_as_file=self.jpeg_as_file,
            exposure=self.exposure,
            rotation=self.rotation,
            resaved_share=self.resaved_files,
            hide=(self.metadata_hide_all, self.metadata_hide_field),
        )

    def input_shape(self) -> tuple[int, int]:
        """The model input's ``(height, width)``: square, or the images' own aspect with
        ``--input-height`` (``--input-size`` is then its width).
        """
        return self.input_height or self.input_size, self.input_size

    def cache_size(self) -> tuple[int, int]:
        """``(height, width)`` at which training images are cached: the smallest random crop
        is the input.
        """
        height, width = self.input_shape()
        return math.ceil(height / self.crop_min_scale), math.ceil(width / self.crop_min_scale)

    def lesion_seed(self) -> int:
        """Seed of the lesion split, the subsample and the folds: ``--split-seed``, else
        ``--seed`` (so another ``--seed`` on ``--split-seed 42`` retrains on the same lesions).
        """
        return self.seed if self.split_seed < 0 else self.split_seed

    def teacher_paths(self) -> list[str]:
        """The teachers' model directories or ``.keras`` files (``--teachers A,B``)."""
        return comma_paths(self.teachers)

    def for_fold(self, k: int) -> TrainConfig:
        """The settings of cross-validation fold ``k``: ``{fold}`` in ``--teachers`` becomes
        ``k``, so each fold learns from teachers that never saw its held-out lesions (the
        same fold of another cross-validation run, e.g.
        ``models/cv-a/fold{fold}/fold_model.keras``).
        """
        if FOLD_FIELD not in self.teachers:
            return self
        from dataclasses import replace

        return replace(self, teachers=self.teachers.replace(FOLD_FIELD, str(k))).validate()

    def _validate_weights(self, spec) -> None:
        """A weights setting the architecture can use."""
        w = self.weights
        if w in (None, "", "none", "default"):
            return
        if not spec.takes_weights:
            raise ConfigError(f"--architecture {self.architecture} takes no --weights")
        if w in spec.weight_sources or (w == "imagenet" and spec.keras_imagenet):
            return
        if not Path(w).is_file():
            known = ", ".join([*spec.weight_sources, "none", "default", "a file"])
            raise ConfigError(f"--weights {w}: not a file nor a source ({known})")


class ConfigError(ValueError):
    """Training settings that cannot work together, with the reason in one line."""


def config_dict(cfg: TrainConfig) -> dict:
    """The training settings as a JSON-ready dict."""
    return asdict(cfg)


def changed_settings(settings: dict) -> dict:
    """The recipe settings of ``settings`` (a :func:`config_dict`, or one read back) that
    differ from :class:`TrainConfig`'s defaults, in field order (``verbose`` is no recipe).
    """
    defaults = TrainConfig()
    return {
        f.name: settings[f.name]
        for f in fields(TrainConfig)
        if f.name in settings
        and f.name != "verbose"
        and settings[f.name] != getattr(defaults, f.name)
    }


@dataclass(frozen=True)
class RunRecord:
    """What a run recorded in ``run_config.json``: its settings and, for training runs, how
    it was spread over devices (:class:`skin_model.train.distribute.Plan`).
    """

    config: TrainConfig
    distribution: dict | None = None

    def settings(self) -> dict:
        """The record as a JSON-ready dict (the file's layout)."""
        extra = {"distribution": self.distribution} if self.distribution else {}
        return {**config_dict(self.config), **extra}


def read_run_record(run_dir: Path) -> RunRecord:
    """A run's ``run_config.json``; the one place that reads it.

    Upgrading older files happens here: settings added since the run was recorded take
    their defaults (which is what that run used), names no longer known are dropped.

    Raises:
        FileNotFoundError: If ``run_dir`` has no ``run_config.json``.
    """
    recorded = json.loads((Path(run_dir) / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in recorded.items() if k in known})
    return RunRecord(config, recorded.get("distribution"))


def read_run_config(out_dir: Path) -> TrainConfig:
    """The settings an interrupted run in ``out_dir`` started with.

    Raises:
        FileNotFoundError: If ``out_dir`` holds no run to resume.
    """
    path = Path(out_dir) / RUN_CONFIG_FILE
    weights = [Path(out_dir) / f for f in (CHECKPOINT_FILE, FITTED_WEIGHTS_FILE)]
    if not path.is_file() or not any(w.is_file() for w in weights):
        raise FileNotFoundError(
            f"{out_dir} holds no interrupted run (no {path.name}/checkpoint/fitted weights)"
        )
    return read_run_record(out_dir).config
