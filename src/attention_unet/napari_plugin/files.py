"""The plugin's files: the embedded sample as sample data, the reader of ``<name>_labels.tif``, and
the measurements table as CSV."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.data import SAMPLE_DIR


def plain(value: Any) -> Any:
    return round(float(value), 3) if isinstance(value, (float, np.floating)) else int(value)


def write_csv(path: Path, table: dict[str, np.ndarray]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(table)
        writer.writerows(zip(*table.values()))


def sample_data() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """Two of the embedded DSB-2018 sample images (fluorescence and stained tissue)."""
    import imageio.v3 as iio

    images = sorted((SAMPLE_DIR / "images").glob("*.png"))
    return [
        (
            iio.imread(path)[..., :3] if iio.imread(path).ndim == 3 else iio.imread(path),
            {"name": path.stem[:12]},
            "image",
        )
        for path in images[:2]
    ]


def get_labels_reader(path: str | list[str]) -> Any:
    """A reader for ``<name>_labels.tif`` (what predict writes), None for anything else, including a
    file of that name that holds no labels (not a TIFF, or not integers: napari then tries its other
    readers instead of failing in this one). Read on the pixel grid (no scale), as napari's own
    TIFF reader opens the image beside it."""
    if isinstance(path, list) or not str(path).endswith("_labels.tif"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            integers = np.issubdtype(tif.series[0].dtype, np.integer)
            shape = tif.series[0].shape
    except Exception:  # noqa: BLE001 - tifffile raises many types for what is no TIFF
        return None
    if not integers:
        return None

    def read(path: str) -> list[tuple[np.ndarray, dict[str, Any], str]]:
        import math

        import tifffile

        from ..io.limits import max_pixels

        if math.prod(shape) > max_pixels():  # before decoding: a small file may declare gigabytes
            raise InputError(
                f"{path}: {math.prod(shape):,} label pixels ({' x '.join(map(str, shape))}) is above the limit of "
                f"{max_pixels():,} (ATTENTION_UNET_MAX_PIXELS)"
            )
        return [(tifffile.imread(path), {"name": Path(path).stem}, "labels")]

    return read
