"""The image-quality gate: blur, exposure, size and a lesion cut off at the border, each
with a "retake" message. It runs before the model and never hides its result: a warning
stands beside the verdict.

Every measure is taken at one working size (longest side :data:`WORK_SIDE`), so uploads of
any resolution are judged alike. The limits are chosen on HAM10000 images and their
synthetic blurred, darkened, brightened and shifted copies by
``python -m skin_model quality`` (:meth:`QualityGate.fit`), which writes them with the
measurements to ``skin_model/data/quality.json``; :func:`check` applies them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

WORK_SIDE = 256
"""Longest side (pixels) at which every measure is taken."""
MIN_SIDE = 100
"""Images with a shorter side (pixels, as uploaded) are too small to judge fine structure;
HAM10000's smallest images are 150 pixels high."""
LIMITS_FILE = Path(__file__).with_name("quality.json")
"""Where the chosen limits and their measurements are kept (written by ``quality``)."""

MESSAGES = {
    "blurred": "The image looks blurred. Retake it: hold the dermatoscope still, in contact "
    "with the skin, and let it focus.",
    "too_dark": "The image is too dark. Retake it with the dermatoscope's light on and the "
    "lens against the skin.",
    "too_bright": "The image is overexposed (washed out). Retake it with less light or a "
    "lower exposure.",
    "too_small": f"The image is small (under {MIN_SIDE} pixels on a side), so fine "
    "structures are lost. Upload the original file or retake it at full resolution.",
    "cut_off": "The lesion seems to run off the edge of the image. Retake it with the whole "
    "lesion and a rim of normal skin in view.",
}
"""What each problem means for the user, and what to do."""
LABELS = {
    "blurred": "blurred",
    "too_dark": "too dark",
    "too_bright": "overexposed",
    "too_small": "too small",
    "cut_off": "lesion off the edge",
}
"""A short name of each problem (tables, CSV)."""


@dataclass(frozen=True)
class Measures:
    """What the gate measures on one image (at the working size).

    Attributes:
        sharpness: Variance of the Laplacian of the grey image.
        brightness: Mean luminance (0-255) of the central 60% of the image.
        clipped: Share of central pixels near white (all channels > 250).
        edge_asymmetry: :func:`edge_asymmetry` (a lesion running off one edge).
        min_side: Shorter side of the image as uploaded.
    """

    sharpness: float
    brightness: float
    clipped: float
    edge_asymmetry: float
    min_side: int


def _work(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey and RGB float copies at the working size."""
    pil = Image.fromarray(image)
    scale = WORK_SIDE / max(pil.size)
    if scale < 1:
        pil = pil.resize(
            (max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    return np.asarray(pil.convert("L"), dtype=np.float32), np.asarray(pil, dtype=np.float32)


def _centre(a: np.ndarray, share: float = 0.6) -> np.ndarray:
    h, w = a.shape[:2]
    dh, dw = int(h * (1 - share) / 2), int(w * (1 - share) / 2)
    return a[dh : h - dh or None, dw : w - dw or None]


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold of grey values in [0, 255]."""
    hist, edges = np.histogram(values, bins=64, range=(0, 256))
    p = hist / max(hist.sum(), 1)
    omega, mu = np.cumsum(p), np.cumsum(p * (edges[:-1] + 2))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(edges[int(np.argmax(between))] + 4)


def edge_asymmetry(grey: np.ndarray) -> float:
    """How much more of one image edge than of the opposite edge the lesion covers (0-1).

    Lesion pixels are those darker than Otsu's threshold, ignoring near-black ones (a
    dermatoscope's dark vignette is not lesion). A centred lesion, small or filling the
    view, covers opposite edges alike; a lesion running off one edge does not.
    """
    dark = (grey < _otsu(grey[grey > 25])) & (grey > 25)
    k = max(2, round(0.04 * min(grey.shape)))
    top, bottom, left, right = (
        dark[:k].mean(),
        dark[-k:].mean(),
        dark[:, :k].mean(),
        dark[:, -k:].mean(),
    )
    return float(max(abs(top - bottom), abs(left - right)))


def measure(image: np.ndarray) -> Measures:
    """The gate's measures of one decoded RGB uint8 image."""
    from scipy import ndimage

    grey, rgb = _work(image)
    centre, centre_rgb = _centre(grey), _centre(rgb)
    return Measures(
        sharpness=float(ndimage.laplace(grey).var()),
        brightness=float(centre.mean()),
        clipped=float((centre_rgb > 250).all(axis=-1).mean()),
        edge_asymmetry=edge_asymmetry(grey),
        min_side=int(min(image.shape[:2])),
    )


@dataclass
class QualityGate:
    """The gate's limits, scikit-learn style: made with its false-alarm rates, :meth:`fit`
    chooses the limits on good images and returns ``self``.

    Parameters:
        false_alarm: Share of good images each exposure and blur limit may flag.
        edge_false_alarm: Share of good images the cut-off limit may flag (many HAM10000
            lesions sit off-centre or fill the view, so it separates less well).

    Fitted by :meth:`fit` (or read back by :meth:`from_config`):
        limits_: ``sharpness_min``, ``brightness_min``, ``brightness_max``,
            ``clipped_max`` and ``edge_asymmetry_max``.
        flagged_: Share of the good images flagged, and of each kind of synthetic bad
            copy caught by its own check.
        n_images_: Images the limits were chosen on.
    """

    false_alarm: float = 0.005
    edge_false_alarm: float = 0.02
    limits_: dict = field(default_factory=dict, init=False)
    flagged_: dict = field(default_factory=dict, init=False)
    n_images_: int = field(default=0, init=False)

    def fit(self, images: list[np.ndarray]) -> QualityGate:
        """Choose the limits on decoded good images that nothing else was tuned on, and
        measure how many synthetic bad copies each catches.

        Returns:
            ``self``.
        """
        good = [measure(im) for im in images]
        q = self.false_alarm
        lim = {
            "sharpness_min": float(np.quantile([m.sharpness for m in good], q)),
            "brightness_min": float(np.quantile([m.brightness for m in good], q)),
            "brightness_max": float(np.quantile([m.brightness for m in good], 1 - q)),
            "clipped_max": float(max(0.02, np.quantile([m.clipped for m in good], 1 - q))),
            "edge_asymmetry_max": float(
                np.quantile([m.edge_asymmetry for m in good], 1 - self.edge_false_alarm)
            ),
        }
        self.limits_ = {k: round(v, 4) for k, v in lim.items()}
        flagged = {"original (any problem)": float(np.mean([bool(self.problems(m)) for m in good]))}
        for kind in DEGRADATIONS:
            caught = [kind in self.problems(measure(degrade(im, kind))) for im in images]
            flagged[kind] = float(np.mean(caught))
        self.flagged_ = {k: round(v, 4) for k, v in flagged.items()}
        self.n_images_ = len(images)
        return self

    def problems(self, m: Measures) -> list[str]:
        """Keys of :data:`MESSAGES` for what is wrong with measured image (empty: nothing)."""
        lim = self.limits_
        found = []
        if m.min_side < MIN_SIDE:
            found.append("too_small")
        if m.sharpness < lim["sharpness_min"]:
            found.append("blurred")
        if m.brightness < lim["brightness_min"]:
            found.append("too_dark")
        if m.brightness > lim["brightness_max"] or m.clipped > lim["clipped_max"]:
            found.append("too_bright")
        if m.edge_asymmetry > lim["edge_asymmetry_max"]:
            found.append("cut_off")
        return found

    def check(self, image: np.ndarray) -> list[str]:
        """What is wrong with one decoded image: keys of :data:`MESSAGES` (empty: nothing)."""
        return self.problems(measure(image))

    def to_config(self) -> dict:
        """The ``quality.json`` layout: limits, rates and what they were measured on."""
        return {
            "limits": dict(self.limits_),
            "false_alarm": self.false_alarm,
            "edge_false_alarm": self.edge_false_alarm,
            "n_images": self.n_images_,
            "flagged": dict(self.flagged_),
            "method": METHOD,
        }

    @classmethod
    def from_config(cls, config: dict) -> QualityGate:
        """The fitted gate of a :meth:`to_config` dict."""
        gate = cls(
            false_alarm=float(config.get("false_alarm", 0.005)),
            edge_false_alarm=float(config.get("edge_false_alarm", 0.02)),
        )
        gate.limits_ = dict(config["limits"])
        gate.flagged_ = dict(config.get("flagged") or {})
        gate.n_images_ = int(config.get("n_images", 0))
        return gate


METHOD = (
    "limits at the false-alarm quantile of each measure on HAM10000 images of the calibration "
    "part; 'flagged' is the share of those images (and of their synthetic copies, by their "
    "own check) that the gate flags"
)
"""How the shipped limits were chosen, in words (kept in ``quality.json``)."""


def read_limits(path: Path = LIMITS_FILE) -> dict:
    """A ``quality.json`` as written (the one reader of that file)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


@functools.cache
def shipped_gate() -> QualityGate:
    """The gate with the limits ``python -m skin_model quality`` chose (:data:`LIMITS_FILE`)."""
    return QualityGate.from_config(read_limits())


def check(image: np.ndarray) -> list[str]:
    """What the shipped gate finds wrong with one decoded image (keys of :data:`MESSAGES`)."""
    return shipped_gate().check(image)


def degrade(image: np.ndarray, kind: str) -> np.ndarray:
    """A synthetic bad copy of a good image, as the limits are tested on.

    Args:
        image: RGB uint8.
        kind: ``blurred`` (Gaussian, sigma 2.5 px at the working size), ``too_dark`` (x0.3),
            ``too_bright`` (x2.2, clipped) or ``cut_off`` (the window of half the image's
            height and width whose right edge runs through the centre, where HAM10000's
            lesions are, enlarged back to the image size).

    Returns:
        RGB uint8 of the same shape.
    """
    from scipy import ndimage

    x = image.astype(np.float32)
    if kind == "blurred":
        sigma = 2.5 * max(image.shape[:2]) / WORK_SIDE
        x = ndimage.gaussian_filter(x, (sigma, sigma, 0))
    elif kind == "too_dark":
        x = x * 0.3
    elif kind == "too_bright":
        x = x * 2.2
    elif kind == "cut_off":
        h, w = image.shape[:2]
        window = image[h // 4 : h // 4 + h // 2, : w // 2]
        return np.asarray(Image.fromarray(window).resize((w, h), Image.Resampling.BILINEAR))
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


DEGRADATIONS = ("blurred", "too_dark", "too_bright", "cut_off")
