"""How training draws a view of a cached image: one record that the ``tf.data`` pipeline
(:func:`skin_model.data.dataset.make_dataset`) and its NumPy twin
(:class:`skin_model.data.batches.ArrayBatches`) both read, built from a run's settings in
one place (:meth:`skin_model.model.settings.TrainConfig.augmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

EXPOSURE = 0.15
"""Half-width of the capture changes' exposure gain unless a run sets its own
(``--exposure``): one factor on every channel, a file saved darker or brighter as a whole."""


@dataclass(frozen=True)
class Augmentation:
    """The training-only changes of a view (evaluation batches ignore them).

    Attributes:
        out_size: Model input side or ``(height, width)`` when images are cached larger
            (None: keep their size).
        min_scale: Smallest random crop side as a share of the cached side.
        white_balance: Random per-channel gain half-width.
        robust: Probability of each capture change.
        jpeg_as_file: Re-compress as a saved file before the crop, instead of at the input.
        exposure: Half-width of the capture changes' exposure gain (one factor on every
            channel, drawn with probability ``robust``).
        rotation: Largest angle in degrees of a turn by any angle (with the quarter turns,
            every orientation; corners filled by reflection); 0 = none.
        resaved_share: Probability a view starts from the image's re-saved copy.
        hide: Probabilities of hiding all / each patient-context field.
    """

    out_size: int | tuple[int, int] | None = None
    min_scale: float = 0.75
    white_balance: float = 0.0
    robust: float = 0.0
    jpeg_as_file: bool = False
    exposure: float = EXPOSURE
    rotation: float = 0.0
    resaved_share: float = 0.0
    hide: tuple[float, float] = (0.5, 0.2)

    @property
    def image_args(self) -> tuple:
        """The image changes in the order ``augment`` and ``augment_array`` take them."""
        return (
            self.out_size,
            self.min_scale,
            self.white_balance,
            self.robust,
            self.jpeg_as_file,
            self.exposure,
            self.rotation,
        )

    def clean(self) -> Augmentation:
        """The same views without what another capture or file would change (the white
        balance, the capture changes, the re-saved copy): crops, turns, colour jitter and
        the hidden context fields are drawn as before (their random streams are apart), so
        view ``i`` of a stream and of its clean twin show the same crop.
        """
        return replace(self, white_balance=0.0, robust=0.0, resaved_share=0.0)
