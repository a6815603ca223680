"""Real photographs that are not dermoscopy, for testing the "not dermoscopic" flag.

They come inside packages (no download): scikit-image's sample images (astronaut, cat,
coffee cup, rocket, motorcycle, printed page, text, coins, retina, microscopy, ...),
matplotlib's (Grace Hopper's portrait, a product photo), scikit-learn's (a temple, a
flower) and the 100 face photographs of scikit-image's LFW subset. Each photograph is
used whole and as four quadrant crops, so close-ups (skin of a face, a cat's fur, a
page's text) are tested too. scikit-image is a test/training tool, not an app need.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "camera.png",
    "moon.png",
    "page.png",
    "text.png",
    "coins.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "cell.png",
    "clock_motion.png",
    "microaneurysms.png",
)
MATPLOTLIB_PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")


def _rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def quadrants(image: np.ndarray) -> list[np.ndarray]:
    """The four quadrant crops of an image."""
    h, w = image.shape[:2]
    return [image[r : r + h // 2, c : c + w // 2] for r in (0, h // 2) for c in (0, w // 2)]


def photo_files() -> list[tuple[str, Path]]:
    """``(label, path)`` of the packaged photographs that are present."""
    import matplotlib

    found = []
    skimage_dir = resources.files("skimage") / "data"
    found += [(f"skimage/{n}", Path(str(skimage_dir / n))) for n in SKIMAGE_PHOTOS]
    mpl_dir = Path(matplotlib.get_data_path()) / "sample_data"
    found += [(f"matplotlib/{n}", mpl_dir / n) for n in MATPLOTLIB_PHOTOS]
    sk_dir = resources.files("sklearn") / "datasets" / "images"
    found += [(f"sklearn/{n}", Path(str(sk_dir / n))) for n in SKLEARN_PHOTOS]
    return [(label, p) for label, p in found if p.is_file()]


def lfw_faces(n: int = 100) -> list[np.ndarray]:
    """The face photographs of scikit-image's LFW subset (25x25 grey), as RGB."""
    path = Path(str(resources.files("skimage") / "data" / "lfw_subset.npy"))
    if not path.is_file():
        return []
    faces = np.load(path)[:n]
    return [np.repeat((f * 255).clip(0, 255).astype(np.uint8)[..., None], 3, 2) for f in faces]


def reference_photos() -> list[tuple[str, np.ndarray]]:
    """Every packaged non-dermoscopic photograph, whole and as quadrant crops.

    Returns:
        ``(label, RGB uint8 image)`` pairs.

    Raises:
        ModuleNotFoundError: If scikit-image is not installed (``requirements-dev.txt``).
    """
    out = []
    for label, path in photo_files():
        image = _rgb(path)
        out.append((label, image))
        out += [(f"{label}#crop{i}", crop) for i, crop in enumerate(quadrants(image))]
    out += [(f"skimage/lfw_subset face {i}", f) for i, f in enumerate(lfw_faces())]
    return out
