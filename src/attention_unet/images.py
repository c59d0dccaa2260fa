"""Image files: finding the inputs of a command, reading their pages, and the pictures the
commands write (8-bit views, nucleus outlines, attention heat maps)."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import data
from .errors import InputError


def find_inputs(inputs: list[str]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input root) for files, folders (recursive) and globs."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() in data.IMAGE_SUFFIXES:
                    yield f, f.relative_to(path)
        elif path.is_file():
            yield path, Path(path.name)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            base = Path(item.split("*")[0].split("?")[0].split("[")[0])
            base = base if base.is_dir() else base.parent
            for f in matches:
                yield f, f.relative_to(base)
        else:
            raise InputError(f"{item}: no such file or folder")


def read_pages(path: Path) -> list[np.ndarray]:
    """Pages of an image file as H x W x 3 arrays (multi-page TIFF: every page)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                pages = [p.asarray() for p in tif.pages]
        except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types; the user needs the file name
            raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    else:
        pages = [data.decode_image(path)]
    return [data.to_rgb(p, str(path)) for p in pages]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit RGB for display (percentile-stretched)."""
    return (data.normalise(image, "percentile") * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nucleus outlines (yellow) over the 8-bit image."""
    from skimage.segmentation import find_boundaries

    out = to_uint8(image).copy()
    out[find_boundaries(labels, mode="inner")] = (255, 255, 0)
    return out


def heat_map(image: np.ndarray, coeff: np.ndarray) -> np.ndarray:
    """Attention coefficients (0..1) as a black-red-yellow map blended 50/50 over the grey image."""
    grey = to_uint8(image).mean(axis=2, keepdims=True)
    a = np.clip(coeff, 0, 1)[..., None]
    colour = np.concatenate([np.minimum(1, 2 * a), np.clip(2 * a - 1, 0, 1), np.zeros_like(a)], axis=2) * 255
    return (0.5 * grey + 0.5 * colour).astype(np.uint8)
