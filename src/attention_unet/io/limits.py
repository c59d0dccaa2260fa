"""What an input may cost, decided before anything large is allocated: pixels per image plane
(read from the file's header, never by decoding), the inflated size of a zip entry, and the
network a model file describes (checked against its weights' shapes in the safetensors header).

The pixel limit is ``ATTENTION_UNET_MAX_PIXELS`` (or the ``--max-pixels`` flag): by default
100 million pixels (10,000 x 10,000), far above a microscope's field of view, and below what 2 CPU
cores and a few GB hold through prediction (8000 x 8000 peaks at 3.1 GB, BENCHMARKS.md).
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

from ..errors import InputError

DEFAULT_MAX_PIXELS = 100_000_000
MAX_ZIP_ENTRY = 1 << 30  # an image or mask entry inflating to more than 1 GiB is refused unread
MAX_ZIP_RATIO = 200  # ... and one that inflates more than 200-fold beyond 10 MB (a zip bomb)
# block-wise prediction holds one block at a time, so its limit is the time and disk a run takes:
# 100 G pixels is a 316,000-pixel square, 2.5 days at the 0.5 MP/s of BENCHMARKS.md
BLOCKWISE_MAX_PIXELS = 100_000_000_000
MAX_PARAMETERS = 200_000_000  # a model file may describe at most this many weights (0.8 GB in fp32)


def machine_memory() -> int | None:
    """Bytes of memory this machine has; None where that cannot be read (not POSIX)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_model_file(path: str | Path) -> None:
    """A model file must be a regular file (not a pipe or a device, even through a link) no larger
    than the biggest network allowed in fp32, checked before a byte of it is read."""
    try:
        info = os.stat(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot open the model file ({exc.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe, socket or device); give a model file")
    if info.st_size > MAX_PARAMETERS * 4 + (1 << 24):
        raise InputError(f"{path}: {info.st_size:,} bytes, more than a model of {MAX_PARAMETERS:,} weights")


def max_pixels() -> int:
    """The pixel limit per image plane (``ATTENTION_UNET_MAX_PIXELS``, else the default)."""
    value = os.environ.get("ATTENTION_UNET_MAX_PIXELS", "")
    try:
        limit = int(float(value)) if value else DEFAULT_MAX_PIXELS
    except (ValueError, OverflowError):
        limit = 0
    if limit < 1:
        raise InputError(f"ATTENTION_UNET_MAX_PIXELS must be a number of pixels, not '{value}'")
    return limit


def check_pixels(height: int, width: int, name: str, *, limit: int | None = None) -> None:
    """One line naming ``name`` when a plane of height x width is over ``limit`` (default: the
    whole-image limit, :func:`max_pixels`)."""
    whole = limit is None
    limit = max_pixels() if limit is None else limit
    if height * width > limit:
        raise InputError(
            f"{name}: {width} x {height} pixels is above the limit of {limit:,} per image"
            + (
                " (raise it with --max-pixels or ATTENTION_UNET_MAX_PIXELS if the machine has the memory)"
                if whole
                else ""
            )
        )


VALUES_PER_PIXEL = 3  # a plane may hold the pixel limit in colour (RGB); more channels count against it


def check_values(height: int, width: int, channels: int, name: str) -> None:
    """One line naming ``name`` when a plane's values (pixels x channels, all of which are read
    and measured) are over :data:`VALUES_PER_PIXEL` times the pixel limit: a 3.7 MB OME-TIFF of 3000
    channels of 1000 x 1000 asked for 2.2 GB."""
    limit = VALUES_PER_PIXEL * max_pixels()
    if height * width * channels > limit:
        raise InputError(
            f"{name}: {width} x {height} pixels x {channels} channels is above the limit of {limit:,} values per "
            "plane (raise it with --max-pixels or ATTENTION_UNET_MAX_PIXELS if the machine has the memory)"
        )


def check_compression(path: Path, height: int, width: int, bytes_per_pixel: int) -> None:
    """One line when a plane above the whole-image limit sits in a file far smaller than its pixels
    (more than ``MAX_ZIP_RATIO`` times; a zarr folder: all its files): a decompression bomb, or a zarr
    whose chunks were never written, would otherwise keep a block-wise run busy for hours on blocks
    of nothing. Real slides compress 3-20x; `--blockwise always` skips this."""
    limit = max_pixels()
    stored = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
    ratio = height * width * bytes_per_pixel / max(stored, 1)
    if height * width > limit and ratio > MAX_ZIP_RATIO:
        raise InputError(
            f"{path}: {width} x {height} pixels is above the limit of {limit:,} per image, in a file {ratio:,.0f} times "
            "smaller than its pixels (a decompression bomb?); --blockwise always predicts it block by block"
        )


def check_image_header(source: bytes | str | Path, name: str) -> None:
    """The plane size from the file's header (TIFF: its first series; others: Pillow's lazy open),
    checked before the pixels are decoded. A header that cannot be read is left to the decoder,
    whose error names the file."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    if name.lower().endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(stream) as tif:
                series = tif.series[0]
                shape = dict(zip(series.axes, series.shape))
                height, width = shape.get("Y", 1), shape.get("X", 1)
        except Exception:  # noqa: BLE001 - not a readable TIFF: the decoder says so with the name
            return
    else:
        from PIL import Image

        try:
            with Image.open(stream) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - a format Pillow does not know, or not an image: the decoder says
            return
    check_pixels(height, width, name)


def read_zip_entry(archive: zipfile.ZipFile, entry: str, archive_name: str | Path) -> bytes:
    """An entry's bytes, after checking its declared inflated size and ratio (zip bombs)."""
    info = archive.getinfo(entry)
    ratio = info.file_size / max(1, info.compress_size)
    if info.file_size > MAX_ZIP_ENTRY or (info.file_size > 10 << 20 and ratio > MAX_ZIP_RATIO):
        raise InputError(
            f"{archive_name}:{entry}: inflates to {info.file_size:,} bytes ({ratio:.0f}x its stored size); refused as a zip bomb"
        )
    with archive.open(info) as f:
        payload = f.read(MAX_ZIP_ENTRY + 1)  # a header that lies about the size cannot get past this either
    if len(payload) > MAX_ZIP_ENTRY:
        raise InputError(f"{archive_name}:{entry}: inflates beyond {MAX_ZIP_ENTRY:,} bytes; refused as a zip bomb")
    return payload
