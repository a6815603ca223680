"""The one image decoder every entry point uses (CLI, app, training, evaluation).

Images arrive as bytes (an upload, a file read into memory) and leave as an upright
8-bit RGB ``numpy`` array, or raise :class:`ImageError` with a message a clinician can
act on. Nothing is written to disk.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

MAX_FILE_BYTES = 20 * 1024 * 1024
"""Largest accepted file (20 MiB), for the app and the CLI alike. The app's server takes
uploads up to 100 MB (``.streamlit/config.toml``) so that a larger file reaches this check
and gets its message beside the other cases' results."""

MAX_PIXELS = 50_000_000
"""Largest accepted pixel count before decoding; Pillow's own warning is at ~89 MP."""

MIN_SIDE = 32
"""Smallest accepted image side in pixels."""

MAX_SIDE = 1024
"""Larger images are downscaled so their longest side is at most this."""

ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An input that cannot be classified, with a message meant for the user."""


def _sniff(data: bytes) -> str:
    """Return a short name for the file type the leading bytes announce."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"%PDF"):
        return "pdf"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    head = data[:512]
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "unknown"


_TYPE_MESSAGES = {
    "pdf": "This is a PDF document, not an image. Export the dermoscopic image as JPEG or PNG.",
    "gif": "GIF images (often animated) are not supported. Export a single frame as JPEG or PNG.",
    "tiff": "TIFF images are not supported. Export the image as JPEG or PNG.",
    "webp": "WebP images are not supported. Export the image as JPEG or PNG.",
    "bmp": "BMP images are not supported. Export the image as JPEG or PNG.",
    "text": "This is a text file, not an image. Upload a JPEG or PNG dermoscopic image.",
    "unknown": "This file is not a JPEG or PNG image (its contents are not a known image "
    "format). It may be damaged or mislabelled; export the image again as JPEG or PNG.",
}


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any Pillow mode to 8-bit RGB: transparency flattened onto black (as a
    dermatoscope's dark field of view looks), 16-bit rescaled, CMYK converted.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decode JPEG or PNG bytes into an upright RGB uint8 array of shape (H, W, 3).

    Args:
        data: The raw file contents.
        max_side: Images whose longest side exceeds this are downscaled to it.

    Returns:
        The decoded image, EXIF orientation applied.

    Raises:
        ImageError: With a message saying what is wrong and what to do.
    """
    if not data:
        raise ImageError("The file is empty (0 bytes). Upload the image again.")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(
            f"The file is {len(data) / 2**20:.1f} MB; the limit is "
            f"{MAX_FILE_BYTES / 2**20:.0f} MB. Export the image as a JPEG (a dermoscopic "
            "JPEG is usually under 5 MB) and upload that."
        )
    kind = _sniff(data)
    if kind not in ("jpeg", "png"):
        raise ImageError(_TYPE_MESSAGES[kind])
    try:
        with warnings.catch_warnings():
            # Pillow only warns up to ~179 MP; our own, lower cap below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} MP), "
                    f"over the {MAX_PIXELS / 1e6:.0f} MP limit; it may be a decompression "
                    "bomb. Export it at a lower resolution."
                )
            if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
                raise ImageError(
                    "This is an animated or multi-frame image. Export a single frame as "
                    "JPEG or PNG."
                )
            if min(width, height) < MIN_SIDE:
                raise ImageError(
                    f"The image is only {width}x{height} pixels, too small to classify; at least "
                    f"{MIN_SIDE} pixels per side are needed."
                )
            if img.format == "JPEG" and max(width, height) > 2 * max_side:
                img.draft("RGB", (max_side, max_side))
            img.load()
            img = ImageOps.exif_transpose(img)
            if max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)) / 1e6:.0f} MP" if found else "an enormous number of pixels"
        raise ImageError(
            f"The image declares {size}, over the {MAX_PIXELS / 1e6:.0f} MP pixel limit; it may "
            "be a decompression bomb and was not opened. Export it at a lower resolution."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        name = "JPEG" if kind == "jpeg" else "PNG"
        raise ImageError(
            f"The {name} file is truncated or corrupt and cannot be decoded ({exc}). "
            "Copy or export the image again."
        ) from exc


Size = int | tuple[int, int]
"""A model input's size: a side (square) or ``(height, width)``."""


def input_hw(size: Size) -> tuple[int, int]:
    """``(height, width)`` of a model input given as a side or as ``(height, width)``."""
    if np.ndim(size) == 0:
        return int(size), int(size)
    height, width = size
    return int(height), int(width)


def resize_for_model(image: np.ndarray, size: Size) -> np.ndarray:
    """Resize an RGB uint8 image to the model input (the model rescales itself), the
    input landscape (:func:`to_landscape`): a portrait image is turned a quarter turn
    clockwise, so a file saved a quarter turn counter-clockwise of its landscape original
    gives the original's input.

    Args:
        image: RGB uint8 array of shape (H, W, 3).
        size: The model input's side (square) or ``(height, width)`` (its own aspect).

    Returns:
        Array of shape (height, width, 3), dtype uint8.
    """
    height, width = input_hw(size)
    if height != width and is_portrait(image.shape):
        # turned before the resize, so the input keeps the landscape image's aspect
        image, turned = np.ascontiguousarray(np.rot90(image, -1)), True
    else:
        turned = False
    pil = Image.fromarray(image)
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
    resized = np.asarray(pil, dtype=np.uint8)
    return resized if turned else to_landscape(resized, image.shape[:2])


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """A uint8 image saved as a JPEG of ``quality`` and decoded again."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"))


def is_portrait(shape: tuple[int, ...]) -> bool:
    """True for an image taller than wide: its model input is turned (:func:`to_landscape`)."""
    return int(shape[0]) > int(shape[1])


def to_landscape(square: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A model input of an image of ``shape`` (H, W), turned a quarter turn clockwise when
    the image is portrait: every training image is landscape (HAM10000's 200x150), so a
    portrait file is one turned a quarter turn from how its dermatoscope saved it.
    """
    return np.ascontiguousarray(np.rot90(square, -1)) if is_portrait(shape) else square


def from_landscape(square: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo :func:`to_landscape` on a (h, w) map of the model input (a heatmap), so it lies
    on the image of ``shape`` as the user sees it.
    """
    return np.ascontiguousarray(np.rot90(square, 1)) if is_portrait(shape) else square


WHITE_BALANCE_SHIFT = 0.05
"""Half-width of the per-channel gains of the robustness check (a few percent)."""


def shift_white_balance(image: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """An RGB uint8 image with each channel multiplied by its gain (clipped, rounded)."""
    out = image.astype(np.float32) * np.asarray(gains, dtype=np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def shift_white_balance_batch(
    images: np.ndarray, strength: float = WHITE_BALANCE_SHIFT, seed: int = 0
) -> np.ndarray:
    """Copies of (N, H, W, 3) uint8 images under another white balance: per image, gains
    drawn uniformly from ``[1 - strength, 1 + strength]`` per channel (reproducible).
    """
    rng = np.random.default_rng(seed)
    gains = rng.uniform(1.0 - strength, 1.0 + strength, (len(images), 3))
    return np.stack([shift_white_balance(im, g) for im, g in zip(images, gains, strict=True)])


def dermoscope_vignette(image: np.ndarray, radius: float = 0.5) -> np.ndarray:
    """The image seen through a round field of view: black outside a centred circle.

    Args:
        image: RGB uint8 (H, W, 3).
        radius: Circle radius as a share of the image diagonal (0.5: touching the corners,
            about 0.36: the short sides).

    Returns:
        RGB uint8 of the same shape.
    """
    h, w = image.shape[:2]
    yy, xx = np.ogrid[:h, :w]
    r = radius * float(np.hypot(h, w))
    inside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r
    return np.where(inside[..., None], image, 0).astype(np.uint8)
