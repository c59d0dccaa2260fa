"""Image files: finding the inputs of a command, reading their pages, and the pictures the
commands write (8-bit views, nucleus outlines, attention heat maps)."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, unreadable
from . import data, limits


def find_inputs(inputs: list[str]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to its input root) for files, folders (recursive, following symbolic
    links but never round a loop) and globs; each file once, however often it is reached."""
    seen: set[Path] = set()

    def once(found: Iterator[tuple[Path, Path]]) -> Iterator[tuple[Path, Path]]:
        for file, rel in found:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                yield file, rel

    for item in inputs:
        if not item.strip():  # Path("") is the current folder: an unset shell variable would read all of it
            raise InputError("an input is an empty path ('')")
        path = Path(item)
        if is_zarr(path):
            yield from once(iter([(path, Path(path.name))]))
        elif path.is_dir():
            yield from once(_walk(path))
        elif path.is_file():
            yield from once(iter([(path, Path(path.name))]))
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not matches:  # as a path that does not exist: a typo must not pass for an empty batch
                raise InputError(f"{item}: no file matches")
            # the root is the part of the pattern before its first wildcard component
            parts = Path(item).parts
            fixed = next((k for k, part in enumerate(parts) if glob.has_magic(part)), len(parts))
            base = Path(*parts[:fixed]) if fixed else Path()
            yield from once((f, _inside(f.relative_to(base), f)) for f in matches)
        elif path.exists():  # a FIFO, a socket or a device (a link to /dev/zero): reading it may never end
            raise InputError(f"{item}: not a regular file or folder (a pipe, socket or device); give an image file")
        else:
            raise InputError(f"{item}: no such file or folder")


def _inside(rel: Path, file: Path) -> Path:
    """An input's path relative to its root, as the outputs mirror it; a glob that climbs out of
    its root (``data/*/../../shared/img.png``) gives the file's name alone, so no output lands
    outside --out.

    >>> _inside(Path("x/../../shared/img.png"), Path("data/x/../../shared/img.png")), _inside(Path("a/b.png"), Path("b.png"))
    (PosixPath('img.png'), PosixPath('a/b.png'))
    """
    normal = Path(os.path.normpath(rel))
    return Path(file.name) if normal.is_absolute() or ".." in normal.parts else normal


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr array or group (an image, not a folder of images)."""
    return path.is_dir() and (
        path.name.endswith(".zarr") or any((path / f).exists() for f in ("zarr.json", ".zgroup", ".zarray"))
    )


def _walk(root: Path) -> Iterator[tuple[Path, Path]]:
    """Image files (and zarr images) under ``root`` in sorted order; a folder already visited (a
    link loop) is skipped."""
    visited: set[Path] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        for name in [d for d in dirs if is_zarr(Path(folder) / d)]:
            dirs.remove(name)
            yield Path(folder) / name, (Path(folder) / name).relative_to(root)
        for name in sorted(files):
            file = Path(folder) / name
            if file.suffix.lower() in data.IMAGE_SUFFIXES and file.is_file():
                yield file, file.relative_to(root)


STACK_AXES = "TZIQRHEVLPAB"  # tifffile's names for axes other than Y, X, C (channel) and S (sample)
KNOWN_AXES = "YXCS" + STACK_AXES


@dataclass
class Plane:
    """One 2-D plane of an image file: all its channels, and where it lies in the file's stack."""

    channels: np.ndarray  # Y x X x C, as stored (C = 1 for grey)
    position: dict[str, int]  # index along each stack axis, e.g. {"Z": 3}; empty for a 2-D image


@dataclass
class ImageFile:
    """An image file as microscopy software sees it: axes, channels, pixel size, planes.

    TIFF and OME-TIFF are read through tifffile's first series, one plane at a time (pages are
    read when their plane is, so a 200-plane stack never sits in memory whole); other formats are
    one plane. Channels are the C axis (stains) or the S axis (colour samples, ``rgb``).
    """

    path: Path
    axes: str  # the series' axes, e.g. "ZCYX", "YXS", "YX"
    shape: tuple[int, ...]
    channel_names: list[str]
    pixel_size: float | None  # µm per pixel, from OME or ImageJ metadata or a centimetre resolution
    rgb: bool  # the channels are the colours of one image (S axis), not stains
    # a PNG, JPEG or BMP as decoded when it was opened (its shape is only known so): not decoded twice
    decoded: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def stack_axes(self) -> str:
        return "".join(a for a in self.axes if a in STACK_AXES)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(n for a, n in zip(self.axes, self.shape) if a in STACK_AXES)

    @property
    def shape_yx(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def n_channels(self) -> int:
        return int(np.prod([n for a, n in zip(self.axes, self.shape) if a in "CS"], dtype=int))

    def channel_index(self, channel: str | int | None) -> int | None:
        """The channel that ``channel`` names (an index or an OME channel name); None picks none."""
        if channel is None or channel == "":
            return None
        text = str(channel)
        if text.lstrip("-").isdecimal() and text.isascii():  # "²" is a digit to str.isdigit, not to int()
            index = int(text)
        else:
            lowered = [n.lower() for n in self.channel_names]
            if text.lower() not in lowered:
                known = ", ".join(self.channel_names) or "none"
                raise InputError(f"{self.path}: --channel {text}: no channel of that name (channel names: {known})")
            index = lowered.index(text.lower())
        if not 0 <= index < self.n_channels:
            raise InputError(
                f"{self.path}: --channel {index}: the file has {self.n_channels} channel(s), numbered from 0"
            )
        return index

    def planes(self) -> Iterator[Plane]:
        """Each plane in file order (the last stack axis fastest)."""
        if self.path.suffix.lower() not in (".tif", ".tiff"):
            image = self.decoded if self.decoded is not None else data.decode_image(self.path)
            yield Plane(_channels_last(image[..., :3] if image.ndim == 3 else image, "YXS" if self.rgb else "YX"), {})
            return
        import tifffile

        with _reading(self.path), tifffile.TiffFile(self.path) as tif:
            series = tif.series[0]
            page_axes = _page_axes(series, self.axes)
            lead = self.axes[: len(self.axes) - len(page_axes)]
            lead_shape = self.shape[: len(lead)]
            channel_pages = lead_shape[lead.index("C")] if "C" in lead else 1
            outer = [(a, n) for a, n in zip(lead, lead_shape) if a != "C"]
            inner = [(i, a, n) for i, (a, n) in enumerate(zip(page_axes, self.shape[len(lead) :])) if a in STACK_AXES]
            rest = "".join(a for a in page_axes if a not in STACK_AXES)
            for flat in range(int(np.prod([n for _, n in outer], dtype=int))):
                position = {a: int(v) for (a, _), v in zip(outer, np.unravel_index(flat, [n for _, n in outer]))}
                keys = [
                    int(np.ravel_multi_index([c if a == "C" else position[a] for a in lead], lead_shape)) if lead else 0
                    for c in range(channel_pages)
                ]
                pages = [tif.asarray(key=key, series=0) for key in keys]
                for sub in np.ndindex(*[n for _, _, n in inner]):  # stack axes inside a page (after --axes)
                    index = [slice(None)] * len(page_axes)
                    for (i, _, _), v in zip(inner, sub):
                        index[i] = v
                    channels = np.concatenate([_channels_last(page[tuple(index)], rest) for page in pages], axis=2)
                    yield Plane(channels, {**position, **{a: int(v) for (_, a, _), v in zip(inner, sub)}})


def _page_axes(series: object, axes: str) -> str:
    """The axes each page holds: the trailing axes of the series with the page's own size."""
    ndim = len(series.keyframe.shape)  # type: ignore[attr-defined]
    return axes[len(axes) - ndim :]


def _channels_last(array: np.ndarray, axes: str) -> np.ndarray:
    """Y x X x C from a page with axes among Y, X, C, S."""
    order = [axes.index(a) for a in "YX"] + [i for i, a in enumerate(axes) if a not in "YX"]
    array = np.transpose(array, order)
    return array.reshape(array.shape[0], array.shape[1], -1)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turns any error while reading ``path`` into one line naming it."""
    try:
        yield
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types; the user needs the file name
        raise unreadable(path, exc) from None


@contextmanager
def _whole(path: Path) -> Iterator[None]:
    """One line for a TIFF whose pages end early (a truncated copy): tifffile only logs it, and
    reads the pages before the damage as the whole file (a 5-plane stack as one plane)."""
    import logging

    damage: list[str] = []

    class Damage(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "invalid page offset" in message or "corrupted" in message:
                damage.append(message.split("> ", 1)[-1])

    logger, handler = logging.getLogger("tifffile"), Damage(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    if damage:
        raise InputError(f"{path}: the file is damaged or truncated ({damage[0]}); its planes cannot all be read")


def _check_planes(path: Path, tif: object, found: ImageFile) -> None:
    """An ImageJ TIFF declares how many planes it holds: fewer in its series is a truncated file."""
    declared = (tif.imagej_metadata or {}).get("images", 0) if tif.is_imagej else 0  # type: ignore[attr-defined]
    planes = int(np.prod(found.stack_shape)) * (found.shape[found.axes.index("C")] if "C" in found.axes else 1)
    if isinstance(declared, int) and declared > planes:
        raise InputError(f"{path}: the file declares {declared} planes but holds {planes}: truncated?")


def open_image(
    path: str | Path, *, axes: str | None = None, pixel_size: float | None = None, limit: bool = True
) -> ImageFile:
    """An :class:`ImageFile` for ``path``; ``axes`` overrides the axes the file declares (e.g.
    "CYX" for a two-page TIFF that names none), ``pixel_size`` (µm) the size it declares. ``limit``
    refuses planes above the pixel limit (block-wise prediction reads them by windows instead)."""
    path = Path(path)
    check_pixel_size(pixel_size)
    if path.suffix.lower() not in (".tif", ".tiff"):
        image = data.decode_image(path)
        file_axes = "YX" if image.ndim == 2 else "YXS"
        shape = image.shape if image.ndim == 2 else (*image.shape[:2], min(3, image.shape[2]))  # alpha is no channel
        image.setflags(write=False)  # each pass over the planes sees the file's pixels
        found = ImageFile(path, file_axes, shape, [], None, image.ndim == 3, image)
    else:
        import tifffile

        with _reading(path), _whole(path), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            names = _ome_channel_names(tif) if tif.is_ome else []
            found = ImageFile(path, series.axes, tuple(series.shape), names, _pixel_size(tif), "S" in series.axes)
            _check_planes(path, tif, found)
    if axes is not None:
        axes = axes.upper()
        if (
            len(axes) != len(found.shape)
            or set(axes) - set(KNOWN_AXES)
            or axes.count("Y") != 1
            or axes.count("X") != 1
            or len(set(axes)) != len(axes)
        ):
            raise InputError(
                f"{path}: --axes {axes} does not describe its {len(found.shape)} axes of shape {found.shape} "
                f"(one letter each from {KNOWN_AXES}, Y and X once; the file says {found.axes})"
            )
        if [i for i, a in enumerate(axes) if a in "YX"] != [i for i, a in enumerate(found.axes) if a in "YX"]:
            raise InputError(f"{path}: --axes {axes} must keep Y and X where the file has them ({found.axes})")
        found.axes, found.rgb = axes, "S" in axes
    if limit:
        limits.check_pixels(*found.shape_yx, str(path))
        limits.check_values(*found.shape_yx, found.n_channels, str(path))
    if set(found.axes) - set(KNOWN_AXES):
        raise InputError(f"{path}: unknown axes {found.axes}; give --axes (letters from {KNOWN_AXES})")
    if pixel_size is not None:
        found.pixel_size = pixel_size
    return found


def _ome_channel_names(tif: object) -> list[str]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(tif.ome_metadata)  # type: ignore[attr-defined]
    except ET.ParseError:
        return []
    return [c.get("Name", "") for c in root.iter() if c.tag.endswith("}Channel")]


PIXEL_SIZES = (1e-4, 1e4)  # µm: 0.1 nm to 1 cm covers every microscope; outside, a size is an error


def check_pixel_size(pixel_size: float | None, what: str = "--pixel-size") -> None:
    """One line for a pixel size no microscope has (0, negative, NaN, 1e154, ...)."""
    low, high = PIXEL_SIZES
    if pixel_size is not None and not low <= pixel_size <= high:
        raise InputError(f"{what} must be a number of µm from {low:g} to {high:g}, not {pixel_size}")


def _pixel_size(tif: object) -> float | None:
    """The file's pixel size (:func:`_declared_pixel_size`) when it is one a microscope can have."""
    size = _declared_pixel_size(tif)
    return size if size is not None and PIXEL_SIZES[0] <= size <= PIXEL_SIZES[1] else None


def _declared_pixel_size(tif: object) -> float | None:
    """µm per pixel from OME (PhysicalSizeX), ImageJ (unit micron + XResolution) or a centimetre
    XResolution; None when the file says nothing trustworthy (72 dpi defaults are not sizes)."""
    import xml.etree.ElementTree as ET

    if tif.is_ome:  # type: ignore[attr-defined]
        try:
            for element in ET.fromstring(tif.ome_metadata).iter():  # type: ignore[attr-defined]
                if element.tag.endswith("}Pixels") and element.get("PhysicalSizeX"):
                    factor = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}.get(element.get("PhysicalSizeXUnit", "µm"))
                    return float(element.get("PhysicalSizeX")) * factor if factor else None
        except (ET.ParseError, ValueError):
            return None
    page = tif.pages[0]  # type: ignore[attr-defined]
    resolution = page.tags.get("XResolution")
    if resolution is None or not resolution.value[0]:
        return None
    per_unit = resolution.value[0] / max(1, resolution.value[1])
    unit = (tif.imagej_metadata or {}).get("unit", "") if tif.is_imagej else ""  # type: ignore[attr-defined]
    if unit in ("micron", "um", "µm", "\\u00B5m"):
        return 1.0 / per_unit
    unit_tag = page.tags.get("ResolutionUnit")
    if unit_tag is not None and int(unit_tag.value) == 3:  # centimetre
        return 1e4 / per_unit
    return None


def calibration_images(inputs: list[str]) -> list[np.ndarray]:
    """Every plane of the image files that ``inputs`` (files, folders, globs) name, as H x W x 3
    arrays, for int8 calibration. A file that cannot be read is left out with a warning, as in any
    batch; none at all is an error naming the inputs."""
    import sys

    images: list[np.ndarray] = []
    for path, _ in find_inputs(inputs):
        try:
            images += [data.to_rgb(plane.channels, str(path)) for plane in open_image(path).planes()]
        except InputError as exc:
            print(f"warning: {exc}; not calibrating on it", file=sys.stderr)
    if not images:
        raise InputError(f"{' '.join(inputs)}: no image to calibrate the int8 model on")
    return images


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit RGB for display (percentile-stretched)."""
    return (data.normalise(image, "percentile") * 255).astype(np.uint8)


def write_png(path: str | Path, picture: np.ndarray) -> None:
    """An 8-bit grey or RGB picture as a PNG file, by OpenCV's encoder at compression level 1: the
    same pixels as Pillow's default, several times faster, in somewhat larger files (BENCHMARKS.md)."""
    import cv2

    colour = picture[..., ::-1] if picture.ndim == 3 else picture  # OpenCV's order is BGR
    done, encoded = cv2.imencode(".png", np.ascontiguousarray(colour), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not done:
        raise OSError(f"{path}: the picture could not be encoded as PNG")
    Path(path).write_bytes(encoded.tobytes())


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
