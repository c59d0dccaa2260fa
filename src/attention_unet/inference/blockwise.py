"""Block-wise prediction of images larger than memory (whole slides, mosaics), as dask tasks.

The image is read lazily by windows (tifffile's zarr store for TIFF, OME-TIFF, BigTIFF and
pyramids; zarr and OME-Zarr directly) and processed in three passes over square blocks, each a
list of independent tasks that dask runs on local threads or on a dask.distributed cluster:

1. probabilities: each block plus ``context`` pixels around it (what the network sees beyond the
   block's edge) is predicted, and the block's own part written to a float16 zarr array;
2. instances: each block plus ``halo`` pixels is read back from that array and split into nuclei by
   the same watershed as a whole image (:func:`instances.instances`, which works per connected
   component). Every block that sees a whole component therefore cuts it into the same nuclei, so
   a nucleus gets one identity everywhere: the global index of its first pixel in raster order.
   Each block writes its own pixels, and measures the nuclei whose first pixel it holds;
3. relabelling: the identities become 1..n (sorted), block by block.

Nothing image-sized is held in memory: a worker holds one window (about (block + 2 halo)² pixels).
A component larger than the halo cannot be seen whole by one block and may be cut at a block
edge; such components are counted and reported. Each finished block leaves a marker, so an
interrupted run continues with the blocks not yet done; the results are renamed into place only
when every block is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, unreadable
from ..io import data
from ..io.images import is_zarr
from ..io.limits import machine_memory
from .pipeline import Predictor, mosaic_plan
from .plan import Plan
from .tiles import SharedTiles, Tiling

# peak memory of local block-wise prediction, measured with the defaults (int8 ONNX, two views) on a
# 4096 x 4096 image (docs/experiments/2026-12-06-blockwise-memory.md): 777 MiB with 2048-pixel blocks,
# 1,159 with 4096, 1,033 with two workers; about 40 bytes per pixel of each worker's window
BLOCKWISE_BASE_BYTES = 0.55e9
BLOCKWISE_BYTES_PER_PIXEL = 40


@dataclass(frozen=True)
class BlockSettings:
    """How a large image is cut and where its blocks run."""

    block: int = 2048  # edge of a block (a multiple of ``chunk``)
    context: int = 96  # pixels of image the network sees around a block (its receptive field's reach)
    halo: int = 256  # pixels of probability around a block for its instances: more than the largest clump
    chunk: int = 512  # edge of the output zarr chunks (the block's, for smaller blocks)
    above: int = 30_000_000  # predict goes block-wise for planes of more pixels (or when asked)
    workers: int = 1  # local threads running blocks at once (each holds one window)
    scheduler: str = ""  # a dask.distributed scheduler address; "" runs on local threads

    @property
    def chunk_edge(self) -> int:
        return min(self.chunk, self.block)

    def check(self) -> None:
        if not (isinstance(self.block, int) and 64 <= self.block <= 65536 and self.block % self.chunk_edge == 0):
            raise InputError(
                f"--block-size must be a multiple of the chunk size {self.chunk} (or smaller), from 64 pixels, not {self.block}"
            )
        if not (isinstance(self.halo, int) and self.halo >= 0):
            raise InputError(f"--halo must be a whole number of pixels, 0 or more, not {self.halo}")
        # both margins are read around a block: it must be at least as wide (the context is no option)
        least = max(self.context, self.halo)
        if self.block < least:
            raise InputError(
                f"--block-size {self.block} is narrower than the margins read around each block (--halo "
                f"{self.halo}, the network's context {self.context}): give at least {least}, or a smaller --halo"
            )
        if not (isinstance(self.workers, int) and 1 <= self.workers <= 256):
            raise InputError(f"--workers must be a whole number from 1 to 256, not {self.workers}")

    @property
    def window(self) -> int:
        """The pixels a worker holds at most: a block and its margins."""
        return (self.block + 2 * max(self.context, self.halo)) ** 2

    def memory(self, height: int, width: int) -> float:
        """Bytes a local run on a height x width image is estimated to hold at its peak: the process
        and model, and a window (a block and its margins, within the image) per worker at work."""
        edge = math.isqrt(self.window)
        blocks = -(-height // self.block) * -(-width // self.block)
        window = min(edge, height) * min(edge, width)
        return BLOCKWISE_BASE_BYTES + min(self.workers, blocks) * window * BLOCKWISE_BYTES_PER_PIXEL

    def check_memory(self, height: int, width: int, name: str) -> None:
        """One line before any block runs when the estimate exceeds 90% of this machine's memory."""
        total = machine_memory()
        need = self.memory(height, width)
        if total is not None and not self.scheduler and need > 0.9 * total:
            raise InputError(
                f"{name}: blocks of {self.block} px on {self.workers} worker(s) need about {need / 2**30:.1f} GiB "
                f"and this machine has {total / 2**30:.1f} GiB: give a smaller block size or fewer workers"
            )


# ------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class LazySource:
    """Where a lazily read 2-D image lives: a TIFF's first series (level 0) or a zarr array, its
    axes, and the channel that holds the nuclei (None: all of them, as colour): on the C axis, or
    on the S axis (the colours) of an image that has none."""

    path: str
    axes: str  # of the stored array, e.g. "YX", "YXS", "CYX", "TCZYX"
    shape: tuple[int, ...]
    channel: int | None = None
    component: str = ""  # the array inside a zarr group ("0" for OME-Zarr's full resolution)
    pixel_size: float | None = None  # µm per pixel, from OME-Zarr's scale (TIFF: images.open_image)

    @property
    def shape_yx(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def channel_axis(self) -> str:
        """The axis ``channel`` indexes ("" when the image has neither C nor S)."""
        return "C" if "C" in self.axes else "S" if "S" in self.axes else ""

    def open(self) -> Any:
        """The zarr array (opened afresh in each worker: stores are not shared across processes)."""
        import zarr

        if is_zarr(Path(self.path)):
            array = zarr.open(self.path, mode="r")
            return array[self.component] if self.component else array
        import tifffile

        return zarr.open(tifffile.imread(self.path, aszarr=True, series=0, level=0), mode="r")

    def read(self, array: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window's pixels as H x W x 3 (the channel repeated, or the colours)."""
        index: list[Any] = []
        for axis, size in zip(self.axes, self.shape):
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif axis == self.channel_axis and self.channel is not None:
                index.append(self.channel)
            elif axis in "CS":
                index.append(slice(None))
            else:
                index.append(0)  # a singleton T or Z (checked in open_lazy)
        window = np.asarray(array[tuple(index)])
        kept = [
            a
            for a in self.axes
            if a in "YX" or (a in "CS" and not (a == self.channel_axis and self.channel is not None))
        ]
        order = [kept.index(a) for a in "YX"] + [i for i, a in enumerate(kept) if a not in "YX"]
        window = np.transpose(window, order)
        return data.to_rgb(window.reshape(window.shape[0], window.shape[1], -1)[..., :3], self.path)


def open_lazy(path: str | Path, *, channel: int | None = None, axes: str | None = None) -> LazySource:
    """A :class:`LazySource` for a TIFF or zarr image (``axes`` overriding the stored ones); one
    line naming the file when it cannot be read block-wise (stacks: T or Z above 1; several
    channels and no ``channel``)."""
    path, given = Path(path), axes
    try:
        if is_zarr(path):
            axes, shape, component, pixel_size = _zarr_layout(path)
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape, component, pixel_size = series.axes, tuple(series.shape), "", None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr, tifffile and codecs raise many types
        raise unreadable(path, exc) from None
    axes = (given or axes).upper()
    if len(axes) != len(shape):
        raise InputError(f"{path}: axes {axes} do not describe its shape {shape}")
    for axis, size in zip(axes, shape):
        if axis not in "YXCS" and size > 1:
            raise InputError(f"{path}: a stack ({axes} {shape}); block-wise prediction takes one 2-D plane")
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: no Y and X axes in {axes}")
    if not all(shape):
        raise InputError(f"{path}: an empty image ({axes} {shape}): nothing to segment")
    channels = int(np.prod([n for a, n in zip(axes, shape) if a == "C"], dtype=int))
    if channel is None and channels > 1:
        raise InputError(f"{path}: {channels} channels: give --channel (the one that holds the nuclei)")
    source = LazySource(str(path), axes, tuple(int(n) for n in shape), None, component, pixel_size)
    if channel is None:
        return source
    axis = source.channel_axis  # the stains, else the colours (as a whole image's)
    count = shape[axes.index(axis)] if axis else 1
    if not 0 <= channel < count:
        raise InputError(f"{path}: --channel {channel}: the image has {count} channel(s), numbered from 0")
    return dataclasses.replace(source, channel=channel) if axis else source


def _zarr_layout(path: Path) -> tuple[str, tuple[int, ...], str, float | None]:
    """(axes, shape, array path, µm per pixel) of a zarr array or an OME-Zarr image (its full resolution)."""
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return _guess_axes(node.shape), tuple(node.shape), "", None
    attributes = dict(node.attrs)
    multiscales = attributes.get("ome", attributes).get("multiscales")
    if not multiscales:
        raise InputError(f"{path}: a zarr group without OME-Zarr multiscales metadata; give the array inside it")
    component = multiscales[0]["datasets"][0]["path"]
    array = node[component]
    names = [a["name"] if isinstance(a, dict) else a for a in multiscales[0].get("axes", [])]
    axes = "".join(n[0].upper() for n in names) if len(names) == array.ndim else _guess_axes(array.shape)
    return axes, tuple(array.shape), component, _ome_pixel_size(multiscales[0])


def zarr_plane(path: Path) -> tuple[int, int, int]:
    """(height, width, bytes a pixel) of a zarr image's full-resolution plane, read from its metadata."""
    import zarr

    try:
        axes, shape, component, _ = _zarr_layout(path)
        dtype = zarr.open_array(str(path / component) if component else str(path), mode="r").dtype
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - zarr raises many types for damaged metadata
        raise unreadable(path, exc) from None
    sizes = dict(zip(axes, shape))
    channels = math.prod(n for a, n in zip(axes, shape) if a in "CS")
    return int(sizes.get("Y", shape[-2])), int(sizes.get("X", shape[-1])), dtype.itemsize * max(1, channels)


def _ome_pixel_size(multiscale: dict[str, Any]) -> float | None:
    """µm per pixel along X from an OME-Zarr multiscale's first scale, when its unit says µm."""
    try:
        axes = multiscale["axes"]
        x = [a["name"] for a in axes].index("x")
        scale = next(t["scale"] for t in multiscale["datasets"][0]["coordinateTransformations"] if t["type"] == "scale")
        factor = {"micrometer": 1.0, "nanometer": 1e-3, "millimeter": 1e3}.get(axes[x].get("unit", ""))
        return float(scale[x]) * factor if factor else None
    except (KeyError, ValueError, TypeError, IndexError, StopIteration):
        return None


def _guess_axes(shape: Sequence[int]) -> str:
    """YX, YXS (a last axis of 3 or 4) or CYX for a zarr array without axis names."""
    if len(shape) == 2:
        return "YX"
    if len(shape) == 3:
        return "YXS" if shape[2] in (3, 4) else "CYX"
    return "TCZYX"[-len(shape) :] if len(shape) <= 5 else "Q" * (len(shape) - 2) + "YX"


# ------------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for one image, picklable: the source, the work folder, the
    settings and the predictor's recipe (``load_predictor``'s keywords; each worker loads the
    model once, :func:`worker_predictor`)."""

    source: LazySource
    work: str
    settings: BlockSettings
    loader: Callable[..., Predictor]  # inference.engine.load_predictor (passed in: picklable by reference)
    predictor: dict[str, Any]  # its keywords
    factor: float  # the plan's resize factor, decided on the mosaic
    value_range: tuple[float, float]
    threshold: float = 0.5
    pixel_size: float | None = None  # µm per pixel, for the table's µm columns
    shapes: bool = False  # trace each owned nucleus's outline too (for --rois / --geojson)
    smoothing: float = 0.0  # the Gaussian sigma every block's tiles take (decided on the mosaic)

    @property
    def grid(self) -> list[tuple[int, int]]:
        height, width = self.source.shape_yx
        return [(y, x) for y in range(0, height, self.settings.block) for x in range(0, width, self.settings.block)]

    def core(self, y: int, x: int) -> tuple[int, int, int, int]:
        height, width = self.source.shape_yx
        return y, min(y + self.settings.block, height), x, min(x + self.settings.block, width)

    def window(self, y: int, x: int, margin: int) -> tuple[int, int, int, int]:
        height, width = self.source.shape_yx
        y0, y1, x0, x1 = self.core(y, x)
        return max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin), min(width, x1 + margin)

    def marker(self, phase: str, y: int, x: int) -> Path:
        return Path(self.work) / "done" / f"{phase}-{y}-{x}"


_PREDICTORS: dict[str, Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()


def worker_predictor(job: Job) -> Predictor:
    """The job's predictor, loaded once per process (threads share it)."""
    key = json.dumps(job.predictor, sort_keys=True, default=str)
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            _PREDICTORS[key] = job.loader(**job.predictor)
    return _PREDICTORS[key]


@contextlib.contextmanager
def predictor_shared(recipe: dict[str, Any], predictor: Predictor) -> Any:
    """Hand a predictor already loaded here to the local workers (no second load) while the block
    closes; then let it go (a long-lived process must not keep every model it ran)."""
    key = json.dumps(recipe, sort_keys=True, default=str)
    with _PREDICTORS_LOCK:
        _PREDICTORS[key] = predictor
    try:
        yield
    finally:
        with _PREDICTORS_LOCK:
            _PREDICTORS.pop(key, None)


# ---------------------------------------------------------------------------------- the passes


def _done(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def probability_block(job: Job, y: int, x: int) -> None:
    """Pass 1: the block's foreground (and contour) probabilities into ``prob.zarr``."""
    import zarr

    if job.marker("prob", y, x).exists():
        return
    predictor = worker_predictor(job)
    y0, y1, x0, x1 = job.core(y, x)
    if abs(job.factor - 1.0) < 1e-3:
        # the whole image's tiles that touch the block: its pixels come out as a whole-image pass's
        ys, xs, th, tw = block_tiles(job, predictor.tiling, y, x)
        wy0, wy1, wx0, wx1 = ys[0], ys[-1] + th, xs[0], xs[-1] + tw
        image = job.source.read(job.source.open(), wy0, wy1, wx0, wx1)
        origins = [(t - wy0, u - wx0) for t in ys for u in xs]
        shared = (_SHARED[job.work], (wy0, wx0)) if job.work in _SHARED else None
        probs = predictor.window_probabilities(
            image, value_range=job.value_range, origins=origins, tile_shape=(th, tw), sigma=job.smoothing, shared=shared
        )
    else:
        # rescaled: the block and ``context`` pixels around it, resized, predicted and resized back
        margin = math.ceil(job.settings.context / min(job.factor, 1.0))
        wy0, wy1, wx0, wx1 = job.window(y, x, margin)
        image = job.source.read(job.source.open(), wy0, wy1, wx0, wx1)
        probs, _ = predictor.probabilities(
            image, value_range=job.value_range, plan=Plan(job.factor, None, job.smoothing)
        )
    out = zarr.open_array(Path(job.work) / "prob.zarr" / "0", mode="r+")
    out[: len(probs), y0:y1, x0:x1] = as_float16(probs[:, y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0])
    _done(job.marker("prob", y, x))


def as_float16(values: np.ndarray, rows: int = 256) -> np.ndarray:
    """``values.astype(np.float16)`` of a C x H x W array, bit for bit, without NumPy's slow path
    for the values that become float16 subnormals (below 2**-14 in magnitude: most of a probability
    map's background, which NumPy converts some 25x slower than the rest): those are rounded to
    their multiple of 2**-24 directly (ties to even, as the conversion rounds). ``rows`` at a time,
    so that the temporaries stay small beside a block."""
    out = np.empty(values.shape, np.float16)
    for c in range(values.shape[0]):
        for r in range(0, values.shape[1], rows):
            part, into = values[c, r : r + rows], out[c, r : r + rows]
            tiny = (part > -(2.0**-14)) & (part < 2.0**-14)  # NaN: neither
            np.copyto(into, part, casting="same_kind", where=~tiny)
            small = part[tiny]
            magnitude = np.rint(np.abs(small) * np.float32(2**24)).astype(np.uint16)  # 1024: 2**-14
            into.view(np.uint16)[tiny] = magnitude | (np.signbit(small).astype(np.uint16) << 15)
    return out


def block_tiles(job: Job, tiling: Tiling, y: int, x: int) -> tuple[list[int], list[int], int, int]:
    """(rows, columns, tile height, tile width) of the whole image's tiles that touch a block."""
    y0, y1, x0, x1 = job.core(y, x)
    ys, xs, th, tw = tiling.grid(*job.source.shape_yx)
    return [t for t in ys if t < y1 and t + th > y0], [t for t in xs if t < x1 and t + tw > x0], th, tw


# the tiles that straddle a block edge, run once and shared by the blocks of a local run (by work folder)
_SHARED: dict[str, SharedTiles] = {}


@contextlib.contextmanager
def tiles_shared(job: Job, local: bool) -> Iterator[None]:
    """While pass 1 runs on local threads at scale 1: each tile that several blocks still to be
    done need is run once (:class:`.tiles.SharedTiles`); elsewhere every block runs its own."""
    if not local or abs(job.factor - 1.0) >= 1e-3:
        yield
        return
    tiling, uses = worker_predictor(job).tiling, {}
    for y, x in job.grid:
        if not job.marker("prob", y, x).exists():
            ys, xs, _, _ = block_tiles(job, tiling, y, x)
            for key in ((t, u) for t in ys for u in xs):
                uses[key] = uses.get(key, 0) + 1
    _SHARED[job.work] = SharedTiles(uses)
    try:
        yield
    finally:
        _SHARED.pop(job.work, None)


def instance_block(job: Job, y: int, x: int) -> dict[str, Any]:
    """Pass 2: the block's nuclei, by their global identity, into ``ids.zarr``; returns the
    identities in the block and the measurements of the nuclei it owns (saved, for resumption)."""
    import zarr

    from ..io.measure import outlines

    saved = Path(job.work) / "tables" / f"{y}-{x}.npz"
    if saved.exists():
        with np.load(saved, allow_pickle=False) as z:
            if not job.shapes or "shapes/ids" in z.files:  # else a run without outlines saved it: redo
                return {k: z[k] for k in z.files if not k.startswith("shapes/")}
    predictor = worker_predictor(job)
    height, width = job.source.shape_yx
    wy0, wy1, wx0, wx1 = job.window(y, x, job.settings.halo)
    probs = np.asarray(zarr.open_array(Path(job.work) / "prob.zarr" / "0", mode="r")[:, wy0:wy1, wx0:wx1], np.float32)
    labels = predictor.labels(probs, job.threshold)
    del probs
    n = int(labels.max())
    # a nucleus's identity: the global raster index of its first pixel (the window's raster order
    # is the image's within the window), + 1
    values, first = np.unique(labels.ravel(), return_index=True)
    identity = np.zeros(n + 1, np.uint64)
    fy, fx = np.divmod(first, wx1 - wx0)
    identity[values] = ((fy + wy0).astype(np.uint64) * width + (fx + wx0).astype(np.uint64)) + 1
    identity[0] = 0
    y0, y1, x0, x1 = job.core(y, x)
    core = labels[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    zarr.open_array(Path(job.work) / "ids.zarr", mode="r+")[y0:y1, x0:x1] = identity[core]
    # owned: first pixel inside the core; cut: a component touching the window's inner edge
    owned = np.zeros(n + 1, bool)
    gy, gx = fy + wy0, fx + wx0
    owned[values] = (gy >= y0) & (gy < y1) & (gx >= x0) & (gx < x1)
    owned[0] = False
    inner = [labels[0] if wy0 > 0 else None, labels[-1] if wy1 < height else None]
    inner += [labels[:, 0] if wx0 > 0 else None, labels[:, -1] if wx1 < width else None]
    cut = np.zeros(n + 1, bool)
    for edge in inner:
        if edge is not None:
            cut[edge] = True
    cut[0] = False
    table = owned_table(job, np.where(owned[labels], labels, 0), (wy0, wy1, wx0, wx1))
    table["label"] = identity[table["label"]]
    result = {f"table/{k}": v for k, v in table.items()}
    if job.shapes:  # outlines of the owned nuclei, in image coordinates, flattened (npz holds no lists)
        shapes = outlines(np.where(owned[labels], labels, 0))
        result["shapes/ids"] = identity[np.array(list(shapes), np.int64)]
        result["shapes/lengths"] = np.array([len(p) for p in shapes.values()], np.int64)
        points = [p + (wx0, wy0) for p in shapes.values()]
        result["shapes/points"] = np.concatenate(points).astype(np.float32) if points else np.zeros((0, 2), np.float32)
    result["ids"] = np.unique(identity[core])[1:] if core.size else np.zeros(0, np.uint64)
    result["cut"] = np.array(int((cut & (np.bincount(core.ravel(), minlength=n + 1) > 0)).sum()))
    saved.parent.mkdir(parents=True, exist_ok=True)
    temporary = saved.with_name(f".partial-{saved.name}")
    with open(temporary, "wb") as f:
        np.savez(f, **result)
    temporary.replace(saved)
    return {k: v for k, v in result.items() if not k.startswith("shapes/")}  # read back by block_shapes


def owned_table(job: Job, owned: np.ndarray, window: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """The measurements of a window's owned nuclei (their labels, the rest 0) in the whole image's
    coordinates, with ``touches_border`` of the whole image."""
    from ..io.measure import measurements

    height, width = job.source.shape_yx
    wy0, wy1, wx0, wx1 = window
    image = job.source.read(job.source.open(), wy0, wy1, wx0, wx1)
    table = measurements(owned, image[..., :1] if _grey(image) else image, pixel_size=job.pixel_size)
    for key, offset in (("centroid_y", wy0), ("bbox_y0", wy0), ("bbox_y1", wy0)):
        table[key] = table[key] + offset
    for key, offset in (("centroid_x", wx0), ("bbox_x0", wx0), ("bbox_x1", wx0)):
        table[key] = table[key] + offset
    if job.pixel_size:
        for key in ("centroid_y", "centroid_x"):
            table[f"{key}_um"] = table[key] * job.pixel_size
    table["touches_border"] = (
        (table["bbox_y0"] == 0) | (table["bbox_x0"] == 0) | (table["bbox_y1"] == height) | (table["bbox_x1"] == width)
    )
    return table


def _grey(image: np.ndarray) -> bool:
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all())


def relabel_block(job: Job, y: int, x: int, kept: np.ndarray) -> None:
    """Pass 3: identities -> 1..n (their rank among the kept ones; dropped nuclei -> 0) into ``labels``."""
    import zarr

    if job.marker("labels", y, x).exists():
        return
    y0, y1, x0, x1 = job.core(y, x)
    ids = np.asarray(zarr.open_array(Path(job.work) / "ids.zarr", mode="r")[y0:y1, x0:x1])
    rank = np.searchsorted(kept, ids)
    # a 0 after the last kept identity: ranks past the end (and an image without nuclei) find none
    found = (np.append(kept, 0).astype(kept.dtype)[rank] == ids) & (ids > 0)
    out = zarr.open_array(Path(job.work) / "labels.zarr" / "0", mode="r+")
    out[y0:y1, x0:x1] = np.where(found, rank + 1, 0).astype(out.dtype)
    _done(job.marker("labels", y, x))


# ----------------------------------------------------------------------------------- running


def run_tasks(
    function: Callable[..., Any], job: Job, extra: tuple = (), *, desc: str = "blocks", client: Any = None
) -> list[Any]:
    """``function(job, y, x, *extra)`` for every block, as dask tasks, with a progress bar."""
    import dask
    from tqdm import tqdm

    # named in raster order, which dask's local scheduler follows: a tile that straddles a block
    # edge is kept only until the next row of blocks (inference.tiles.SharedTiles)
    name = f"{function.__name__}-{uuid.uuid4().hex}"  # unique: a cluster keeps results by key
    tasks = [
        dask.delayed(function, pure=False)(job, y, x, *extra, dask_key_name=f"{name}-{y:09d}-{x:09d}")
        for y, x in job.grid
    ]
    with tqdm(total=len(tasks), desc=desc, unit="block", file=sys.stderr) as bar:
        if client is not None:
            from distributed import as_completed

            futures = client.compute(tasks)
            for _ in as_completed(futures):
                bar.update(1)
            return client.gather(futures)
        from dask.callbacks import Callback

        class Progress(Callback):
            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                bar.update(1)

        with Progress():
            return list(dask.compute(*tasks, scheduler="threads", num_workers=job.settings.workers))


CONNECT_TIMEOUT = "5s"


@contextlib.contextmanager
def dask_client(settings: BlockSettings) -> Any:
    """A dask.distributed client for ``settings.scheduler`` (None when blocks run locally)."""
    if not settings.scheduler:
        yield None
        return
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--dask-scheduler needs dask.distributed: pip install 'attention-unet[cluster]'") from None
    scheme = settings.scheduler.split("://", 1)[0] if "://" in settings.scheduler else "tcp"
    if scheme not in ("tcp", "tls"):
        raise InputError(f"--dask-scheduler {settings.scheduler}: {scheme}:// is not supported; give a tcp:// address")
    try:  # a scheduler that is there answers at once; a refused port is retried until the timeout
        client = Client(settings.scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError, TypeError) as exc:  # TypeError: tls:// without dask's TLS settings
        raise InputError(f"--dask-scheduler {settings.scheduler}: cannot connect ({exc})") from None
    try:
        yield client
    finally:
        client.close()


def sample_mosaic(source: LazySource, size: int = 512, grid: int = 4) -> np.ndarray:
    """Up to grid x grid evenly spaced windows of the image side by side: what the automatic scale
    is measured on (a whole-image pass at half size is out of reach)."""
    array = source.open()
    height, width = source.shape_yx
    h, w = min(size, height), min(size, width)
    ys = sorted({round(i * (height - h) / max(grid - 1, 1)) for i in range(grid)})
    xs = sorted({round(i * (width - w) / max(grid - 1, 1)) for i in range(grid)})
    return np.concatenate(
        [np.concatenate([source.read(array, y, y + h, x, x + w) for x in xs], axis=1) for y in ys], axis=0
    )


def strided_sample(job_source: LazySource, block: int) -> np.ndarray:
    """The image's pixels at :func:`data.sample_step`'s stride, gathered block by block: exactly
    the pixels the whole image's normalisation range is computed from."""
    height, width = job_source.shape_yx
    step = data.sample_step(height, width)
    array = job_source.open()
    rows = []
    for y in range(0, height, block):
        row = []
        for x in range(0, width, block):
            window = job_source.read(array, y, min(y + block, height), x, min(x + block, width))
            row.append(window[(-y) % step :: step, (-x) % step :: step])
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def content_key(path: Path) -> dict[str, int]:
    """What tells a changed input from the one an interrupted run began: a file's size and
    modification time; a folder's (zarr) file count, total size and latest modification time."""
    if path.is_file():
        stat = path.stat()
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    files = [p.stat() for p in path.rglob("*") if p.is_file()]
    return {
        "files": len(files),
        "size": sum(s.st_size for s in files),
        "mtime_ns": max((s.st_mtime_ns for s in files), default=0),
    }


def model_fingerprint(model: str | None) -> str:
    """The sha256 of the model file a recipe names (a shipped name, a path, None: the default)."""
    import hashlib

    from ..model import _resolve_weights, pretrained_path, zoo

    path = zoo.resolve(model) or pretrained_path()
    weights = path if path.suffix == ".onnx" else _resolve_weights(path)
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def prepare(
    source: LazySource,
    *,
    work: Path,
    predictor: Predictor,
    loader: Callable[..., Predictor],
    recipe: dict[str, Any],
    settings: BlockSettings,
    threshold: float = 0.5,
    pixel_size: float | None = None,
    shapes: bool = False,
) -> Job:
    """The job for ``source`` in the work folder ``work``: an unfinished job there for the same
    image and settings is continued, any other is started afresh."""
    settings.check()
    settings.check_memory(*source.shape_yx, Path(source.path).name)
    mosaic = sample_mosaic(source)
    if source.channel is None and (channel := data.signal_channel(mosaic)) is not None:
        # fluorescence in one colour: read as that channel's grey, as a whole image is predicted
        source = dataclasses.replace(source, channel=channel)
        mosaic = sample_mosaic(source)
    # a block whose edge is a multiple of the stride, so each block's first sampled pixel is its first
    step = data.sample_step(*source.shape_yx)
    value_range = data.range_of_sample(strided_sample(source, step * max(1, 1024 // step)), predictor.norm)
    # decided on the mosaic, as auto scale is
    plan = mosaic_plan(predictor, mosaic, value_range)
    job = Job(
        source,
        str(work),
        settings,
        loader,
        recipe,
        float(plan.factor),
        tuple(map(float, value_range)),
        threshold,
        pixel_size,
        shapes,
        float(plan.smoothing or 0.0),
    )
    stamp = job_stamp(job)
    if (work / "job.json").is_file() and (work / "job.json").read_text() == stamp:
        return job  # an interrupted run of the same job: continue
    if (work / "job.json").is_file():
        print(
            f"note: {source.path}: the input, model or options changed since the interrupted run; starting afresh",
            file=sys.stderr,
        )
    shutil.rmtree(work, ignore_errors=True)
    create_work(work, source.shape_yx, settings.chunk_edge, len(predictor.outputs), pixel_size)
    (work / "job.json").write_text(stamp)
    return job


def job_stamp(job: Job) -> str:
    """What an interrupted job must share with a new one to be continued: the source and its
    content's size and time, the model's sha256, the recipe, plan, normalisation and block options."""
    settings = dataclasses.asdict(job.settings)
    return json.dumps(
        {
            "source": dataclasses.asdict(job.source),
            "recipe": job.predictor,
            "factor": job.factor,
            "range": job.value_range,
        }
        | {"input": content_key(Path(job.source.path)), "model_sha256": model_fingerprint(job.predictor.get("model"))}
        | {"smoothing": job.smoothing}
        | {k: v for k, v in settings.items() if k in ("block", "context", "halo", "chunk")}
        | {"threshold": job.threshold, "pixel_size": job.pixel_size},
        sort_keys=True,
        default=str,
    )


def create_work(work: Path, shape_yx: tuple[int, int], chunk: int, channels: int, pixel_size: float | None) -> None:
    """A fresh work folder: the probabilities, the nuclei's identities and the labels, as zarr arrays."""
    import zarr

    work.mkdir(parents=True)
    height, width = shape_yx
    probs = zarr.open_group(work / "prob.zarr", mode="w", attributes=ome_attributes(pixel_size, "cyx"))
    probs.create_array("0", shape=(channels, height, width), chunks=(channels, chunk, chunk), dtype="float16")
    zarr.create_array(work / "ids.zarr", shape=(height, width), chunks=(chunk, chunk), dtype="uint64", fill_value=0)
    labels = zarr.open_group(work / "labels.zarr", mode="w", attributes=ome_attributes(pixel_size))
    labels.create_array("0", shape=(height, width), chunks=(chunk, chunk), dtype="uint32", fill_value=0)


def ome_attributes(pixel_size: float | None, axes: str = "yx") -> dict[str, Any]:
    """OME-Zarr 0.5 metadata of a one-level image (``pixel_size`` in µm, else pixels)."""
    unit = {"unit": "micrometer"} if pixel_size else {}
    scale = [1.0] * (len(axes) - 2) + [pixel_size or 1.0] * 2
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [
                {
                    "axes": [
                        {"name": a, "type": "channel" if a == "c" else "space", **({} if a == "c" else unit)}
                        for a in axes
                    ],
                    "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}],
                }
            ],
        }
    }


def segment(
    job: Job, *, min_size: int = 0, exclude_edges: bool = False, client: Any = None
) -> tuple[dict[str, np.ndarray], int, np.ndarray]:
    """Run the three passes of ``job`` (skipping blocks already done); the measurements of the
    kept nuclei (labels 1..n as in ``labels.zarr``), the number of components cut by a halo, and
    the identities of the kept nuclei (for :func:`block_shapes`)."""
    with tiles_shared(job, local=client is None):
        run_tasks(probability_block, job, desc="probabilities", client=client)
    results = run_tasks(instance_block, job, desc="instances", client=client)
    parts = [{k.removeprefix("table/"): v for k, v in r.items() if k.startswith("table/")} for r in results]
    table = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
    order = np.argsort(table["label"], kind="stable")
    table = {k: v[order] for k, v in table.items()}
    drop = table["area"] < min_size if min_size else np.zeros(len(order), bool)
    if exclude_edges:
        drop |= table["touches_border"].astype(bool)
    kept = table["label"][~drop]
    table = {k: v[~drop] for k, v in table.items()}
    run_tasks(relabel_block, job, (kept,), desc="labels", client=client)
    table["label"] = np.arange(1, len(kept) + 1)
    return table, int(sum(int(r["cut"]) for r in results)), kept


def block_shapes(job: Job, kept: np.ndarray) -> Iterator[dict[int, np.ndarray]]:
    """Block by block (one block's in memory at a time), the outlines that :func:`instance_block`
    traced (``job.shapes``; :func:`measure.outlines`' form), by final label: the rank among
    ``kept`` (:func:`segment`'s), + 1; dropped nuclei's are left out."""
    for y, x in job.grid:
        with np.load(Path(job.work) / "tables" / f"{y}-{x}.npz", allow_pickle=False) as z:
            ids, lengths, points = z["shapes/ids"], z["shapes/lengths"], z["shapes/points"]
        rank = np.searchsorted(kept, ids)
        found = (rank < len(kept)) & (kept[np.minimum(rank, len(kept) - 1)] == ids)
        pieces = np.split(points.astype(np.float64), np.cumsum(lengths)[:-1]) if len(ids) else []
        yield {int(label): p for label, p, keep in zip(rank + 1, pieces, found) if keep}
