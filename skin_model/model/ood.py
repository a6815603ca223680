"""The "not dermoscopic" detector, in one place: its features, fitting, scoring, file and
evaluation.

It reads the channel means and standard deviations of a few early layers (colour,
texture, vignetting tell a photograph of a cat or a page from dermoscopy far better than
the last pooled features, which map everything onto lesion classes). Per layer group it
fits the mean and a Ledoit-Wolf shrunk precision on the training images; an image's
**score** is its largest Mahalanobis distance relative to its group's limit, and it is
flagged above a threshold on that score. Limits and threshold are quantiles of the
calibration part, so about ``1 - quantile`` of HAM10000 images are flagged. How well it
separates dermoscopy from other images is measured by
:func:`skin_model.evaluate.evaluation.detector_separation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Stats = list[tuple[np.ndarray, np.ndarray]]
"""(mean, precision) of each feature group."""


def fit_ood(train_features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf shrunk precision matrix of the training features."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(train_features.astype(np.float64))
    return lw.location_.astype(np.float32), lw.precision_.astype(np.float32)


def mahalanobis(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Mahalanobis distance of each feature row from the training distribution."""
    d = features - mean
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))


def fit_ood_groups(groups: list[np.ndarray]) -> Stats:
    """Mean and shrunk precision of each feature group of the training images."""
    return [fit_ood(g) for g in groups]


def ood_scores(groups: list[np.ndarray], stats: Stats) -> np.ndarray:
    """(G, N) Mahalanobis distance of each image in each feature group."""
    return np.stack([mahalanobis(g, m, p) for g, (m, p) in zip(groups, stats, strict=True)])


def ood_score(distances: np.ndarray, limits: Sequence[float]) -> np.ndarray:
    """(N,) largest distance relative to its group's limit: 1 = at a group's limit."""
    return (np.asarray(distances) / np.asarray(limits, dtype=float)[:, None]).max(axis=0)


def fit_ood_limits(distances: np.ndarray, quantile: float) -> tuple[list[float], float]:
    """Per-group limits and the threshold on :func:`ood_score`, both at ``quantile`` of
    held-out HAM10000 images (the calibration part).

    Returns:
        ``(group limits, score threshold)``.
    """
    limits = [float(np.quantile(d, quantile)) for d in distances]
    return limits, float(np.quantile(ood_score(distances, limits), quantile))


def ood_report(d_in: np.ndarray, d_out: np.ndarray, limit: float) -> dict:
    """How the score threshold separates HAM10000 images from non-dermoscopic ones.

    Args:
        d_in: Scores of held-out HAM10000 images.
        d_out: Scores of non-dermoscopic images.
        limit: Scores above it are flagged.

    Returns:
        AUROC, the shares flagged of each set, and the counts.
    """
    from sklearn.metrics import roc_auc_score

    d_in, d_out = np.asarray(d_in, dtype=float), np.asarray(d_out, dtype=float)
    y = np.r_[np.zeros(len(d_in)), np.ones(len(d_out))]
    return {
        "threshold": float(limit),
        "auroc": float(roc_auc_score(y, np.r_[d_in, d_out])),
        "ham10000_flagged": float(np.mean(d_in > limit)),
        "non_dermoscopic_flagged": float(np.mean(d_out > limit)),
        "n_ham10000": len(d_in),
        "n_non_dermoscopic": len(d_out),
    }


def feature_tensors(model, layers: Sequence[str]) -> list:
    """The detector's feature tensors: channel mean and std of each 4-D layer output, the
    output itself for a pooled (2-D) layer.
    """
    import keras

    outs = []
    for name in layers:
        t = model.get_layer(name).output
        if len(t.shape) == 4:
            outs += [keras.ops.mean(t, axis=(1, 2)), keras.ops.std(t, axis=(1, 2))]
        else:
            outs.append(t)
    return outs


def read_stats(path: Path) -> Stats:
    """The (mean, precision) per feature group in ``ood.npz`` (one group named
    ``mean``/``precision`` in files written before feature groups existed).
    """
    with np.load(path) as data:
        if "mean" in data:
            return [(data["mean"], data["precision"])]
        n = len([k for k in data.files if k.startswith("mean_")])
        return [(data[f"mean_{i}"], data[f"precision_{i}"]) for i in range(n)]


def write_stats(path: Path, stats: Stats) -> None:
    """Write the (mean, precision) per feature group."""
    arrays = {}
    for i, (mean, precision) in enumerate(stats):
        arrays[f"mean_{i}"], arrays[f"precision_{i}"] = mean, precision
    np.savez(path, **arrays)


@dataclass
class Detector:
    """The "not dermoscopic" detector, scikit-learn style: made with its settings,
    :meth:`fit` learns the statistics and limits and returns ``self``.

    Parameters:
        layers: Layers whose statistics it reads.
        quantile: Share of calibration images the threshold keeps unflagged.

    Fitted by :meth:`fit` (or read back by :meth:`from_config`):
        stats_: (mean, precision) per feature group (stored in ``ood.npz``).
        group_limits_: Distance limit per group.
        threshold_: Score above which an image is flagged.
    """

    layers: list[str]
    quantile: float = 0.99
    stats_: Stats = field(default_factory=list, init=False, repr=False)
    group_limits_: list[float] = field(default_factory=list, init=False)
    threshold_: float = field(default=float("inf"), init=False)

    def fit(self, train_groups: list[np.ndarray], calib_groups: list[np.ndarray]) -> Detector:
        """Fit the statistics on training features and the limits on calibration ones
        (limits and threshold rounded to 4 decimals, as ``config.json`` stores them).

        Returns:
            ``self``.
        """
        self.stats_ = fit_ood_groups(train_groups)
        limits, threshold = fit_ood_limits(ood_scores(calib_groups, self.stats_), self.quantile)
        self.group_limits_ = [round(v, 4) for v in limits]
        self.threshold_ = round(threshold, 4)
        return self

    def score(self, groups: list[np.ndarray]) -> np.ndarray:
        """(N,) score of each image (1 = at a group's limit; flagged above ``threshold_``)."""
        return ood_score(ood_scores(groups, self.stats_), self.group_limits_)

    def flagged(self, scores: np.ndarray) -> np.ndarray:
        """(N,) True where a score is above the threshold."""
        return np.asarray(scores) > self.threshold_

    def to_config(self) -> dict:
        """The detector's ``config.json`` keys (its statistics go to :meth:`save`)."""
        return {
            "ood_layers": list(self.layers),
            "ood_group_limits": list(self.group_limits_),
            "ood_threshold": self.threshold_,
        }

    def save(self, path: Path) -> None:
        """Write the fitted statistics (``ood.npz``)."""
        write_stats(path, self.stats_)

    @classmethod
    def from_config(cls, config, path: Path) -> Detector:
        """The fitted detector of a model directory: the config's keys and ``ood.npz``."""
        detector = cls(list(config.ood_layers))
        detector.stats_ = read_stats(path)
        detector.group_limits_ = list(config.ood_group_limits or [1.0] * len(detector.stats_))
        detector.threshold_ = float(config.ood_threshold)
        return detector


def synthetic_non_dermoscopic(n: int, size: int = 160, seed: int = 0) -> list[np.ndarray]:
    """Images that are plainly not dermoscopy: flat colours, documents, noise, stripes.

    Args:
        n: Number of images.
        size: Side of each square image.
        seed: Random seed.

    Returns:
        ``n`` RGB uint8 arrays.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        kind = i % 5
        if kind == 0:  # flat colour
            im = np.full((size, size, 3), rng.integers(0, 256, 3), dtype=np.uint8)
        elif kind == 1:  # a text document: dark lines on white
            im = np.full((size, size, 3), 245, dtype=np.uint8)
            for row in range(8, size - 8, 12):
                length = int(rng.integers(size // 3, size - 16))
                im[row : row + 3, 8 : 8 + length] = rng.integers(0, 60)
        elif kind == 2:  # noise
            im = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        elif kind == 3:  # stripes
            period = int(rng.integers(4, 24))
            stripe = (np.arange(size) // period % 2).astype(np.uint8) * 255
            im = np.repeat(np.repeat(stripe[None, :, None], size, 0), 3, 2)
        else:  # gradient
            ramp = np.linspace(0, 255, size, dtype=np.float32)
            im = np.stack(
                [
                    ramp[None, :].repeat(size, 0),
                    ramp[:, None].repeat(size, 1),
                    np.full((size, size), rng.integers(0, 256)),
                ],
                -1,
            ).astype(np.uint8)
        out.append(im)
    return out
