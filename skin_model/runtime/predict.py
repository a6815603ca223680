"""Classifying image files in batches into result rows (the ``predict`` command's work,
also measured by the benchmark and the load test).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CHUNK = 64
"""Images decoded and classified per batch."""


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given, and the JPEG/PNG files inside folders (recursively, sorted).

    Args:
        paths: Files or folders.

    Returns:
        The files in order; a path that does not exist is kept so its row can say so.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(
                    f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                )
            )
        else:
            out.append(p)
    return out


def read_upload(path: Path):
    """Read and decode one file through the pipeline's decoder and quality gate (an
    :class:`~skin_model.runtime.pipeline.Upload` with the reason when it cannot be read).
    """
    from skin_model.runtime.pipeline import Upload, decode_upload

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Upload(str(path), str(path), error="file not found")
    except IsADirectoryError:
        return Upload(str(path), str(path), error="is a folder with no JPEG/PNG images")
    except OSError as exc:
        return Upload(str(path), str(path), error=f"cannot read file: {exc.strerror or exc}")
    return decode_upload(str(path), str(path), data)


def unique_stem(path: Path, used: set[str]) -> str:
    """The file's stem, with ``_2``, ``_3``... appended if another input had it."""
    stem, n = path.stem, 1
    while (stem if n == 1 else f"{stem}_{n}") in used:
        n += 1
    name = stem if n == 1 else f"{stem}_{n}"
    used.add(name)
    return name


def save_cam(bundle, image: np.ndarray, prediction, cam_dir: Path, stem: str) -> None:
    """Write ``<stem>.npy`` (heatmap, float32 [0, 1], image size) and ``<stem>.png`` (overlay)
    of the class the app explains by default, with the details the result used.
    """
    from PIL import Image

    from skin_model.runtime.explain import overlay
    from skin_model.runtime.pipeline import case_heatmap, explained_class

    cam = case_heatmap(
        bundle, image, prediction.context, explained_class(prediction), views=prediction.views
    )
    np.save(cam_dir / f"{stem}.npy", cam.astype(np.float32))
    Image.fromarray(overlay(image, cam)).save(cam_dir / f"{stem}.png")


def predict_files(
    bundle,
    files: Sequence[Path],
    cam_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    prevalence: float | None = None,
    contexts: dict | None = None,
) -> list[dict]:
    """Classify files in batches; one result row per file, in order.

    Args:
        bundle: Loaded model.
        files: Image files.
        cam_dir: If given, write Grad-CAM heatmaps and overlays there.
        progress: Called with (done, total) after each batch.
        prevalence: Malignant share to re-weight the probabilities to (None: training's).
        contexts: ``{file stem: PatientContext or MetadataError}`` from ``--metadata``; a
            file without a row is classified from the image alone, one with an invalid
            row gets that row's error.

    Returns:
        Rows with :data:`skin_model.runtime.results.CSV_COLUMNS`.
    """
    import datetime as dt

    record = {
        "created": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "model": bundle.config.describe(),
    }
    rows: list[dict] = []
    used: set[str] = set()

    # the next chunk is read and decoded while the network works on this one
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(read_cases, files[:CHUNK], contexts)
        for start in range(0, len(files), CHUNK):
            chunk, cases = files[start : start + CHUNK], pending.result()
            pending = reader.submit(read_cases, files[start + CHUNK : start + 2 * CHUNK], contexts)
            rows.extend(_chunk_rows(bundle, chunk, cases, prevalence, cam_dir, used, record))
            if progress:
                progress(min(start + CHUNK, len(files)), len(files))
    return rows


def read_cases(files: Sequence[Path], contexts: dict | None) -> list:
    """One case per file, decoded and through the quality gate, with its ``--metadata``
    context (a file whose row is invalid: a case whose upload carries that row's error).
    """
    from skin_model.runtime.pipeline import CaseInput, Upload

    found = [(contexts or {}).get(f.stem) for f in files]
    return [
        CaseInput((Upload(str(f), str(f), error=str(ctx)),))
        if isinstance(ctx, Exception)
        else CaseInput((read_upload(f),), ctx)
        for f, ctx in zip(files, found, strict=True)
    ]


def _chunk_rows(
    bundle,
    chunk: Sequence[Path],
    cases: list,
    prevalence: float | None,
    cam_dir: Path | None,
    used: set[str],
    record: dict,
) -> list[dict]:
    """One chunk's result rows (and heatmaps with ``cam_dir``), in the files' order."""
    from skin_model.runtime.pipeline import assess
    from skin_model.runtime.results import result_row

    shown_at = prevalence if prevalence is not None else bundle.malignant_share
    rows = []
    uploads = [case.uploads[0] for case in cases]
    for f, u, case in zip(chunk, uploads, assess(bundle, cases, prevalence), strict=True):
        if u.image is None:
            rows.append(result_row(str(f), None, u.error, record=record))
            continue
        rows.append(
            result_row(
                str(f),
                case.prediction,
                quality=case.quality,
                prevalence=shown_at,
                verdict=case.verdict,
                record=record,
            )
        )
        if cam_dir is not None:
            save_cam(bundle, u.image, case.prediction, cam_dir, unique_stem(f, used))
    return rows
