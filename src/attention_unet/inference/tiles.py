"""Sliding-window inference: probability maps of whole images from a network that sees tiles.

Tiles are evenly spaced with the last one flush to the image edge and blended with a Gaussian
weight map that has no zeros (as in nnU-Net); the normalisation range is given, computed once per
image, so all tiles share it. Memory grows with tile and batch size, plus two float32 accumulators
of the image's size, not with the network's activations on the whole image. The network is reached
through a :data:`Runner` (torch in :mod:`.engine`, ONNX Runtime in :mod:`attention_unet.export`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..io import data

Runner = Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]
View = tuple[int, bool]  # quarter turns, then mirrored left-right


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spaced tile origins covering 0..length, the last flush with the end, neighbours
    sharing at least ``overlap`` of a tile.

    >>> tile_starts(1000, 512, 0.125)
    [0, 244, 488]
    >>> tile_starts(4000, 512, 0.125)
    [0, 436, 872, 1308, 1744, 2180, 2616, 3052, 3488]
    >>> tile_starts(300, 512, 0.125)
    [0]
    """
    if length <= tile:
        return [0]
    n = math.ceil((length - tile) / (tile * (1 - overlap))) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


@lru_cache(maxsize=8)
def gaussian_weights(height: int, width: int) -> np.ndarray:
    """Tile weights: a Gaussian with sigma = size / 8, floored at 1e-3 of its peak (never zero)."""
    y = np.exp(-0.5 * ((np.arange(height) - (height - 1) / 2) / (height / 8)) ** 2)
    x = np.exp(-0.5 * ((np.arange(width) - (width - 1) / 2) / (width / 8)) ** 2)
    return np.maximum(np.outer(y, x), 1e-3).astype(np.float32)


@dataclass(frozen=True)
class Tiling:
    """How an image is cut into the network's tiles: their edge (up to an overlap's worth longer
    where that saves pixels: :meth:`side`), overlap and how many per call."""

    tile: int = 512
    batch_size: int = 4
    # neighbours share at least 64 of 512 px: a 4000-px side takes 9 tiles instead of 11 at 0.25,
    # with the same accuracy where the grid changes (BENCHMARKS.md; Cellpose's default is 0.1)
    overlap: float = 0.125

    def __post_init__(self) -> None:
        if not (isinstance(self.tile, int) and 32 <= self.tile <= 8192):
            raise InputError(f"tile must be a whole number of pixels from 32 to 8192, not {self.tile}", "tile")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 1024):
            raise InputError(f"batch_size must be a whole number from 1 to 1024, not {self.batch_size}", "batch_size")

    def grid(self, height: int, width: int) -> tuple[list[int], list[int], int, int]:
        """(tile rows, tile columns, tile height, tile width) of an image of this size."""
        (ys, th), (xs, tw) = self.side(height), self.side(width)
        return ys, xs, th, tw

    def side(self, length: int) -> tuple[list[int], int]:
        """(tile origins, tile length) along a side: ``tile`` pixels, or up to an overlap's worth
        more where that covers the side with fewer pixels (a tile's cost is its pixels): 520 px in
        one tile instead of two of 512 that share 504, 1024 px in two of 576 instead of three of
        512; a side that short, in one tile of its length.

        >>> Tiling().side(520), Tiling().side(1024), Tiling().side(300)
        (([0], 520), ([0, 448], 576), ([0], 300))
        >>> Tiling().side(4000)  # 9 of 512 or 8 of 576, 4608 px either way: the plain tiles
        ([0, 436, 872, 1308, 1744, 2180, 2616, 3052, 3488], 512)
        """
        longest = self.tile + round(self.tile * self.overlap)
        if length <= longest:
            return [0], length
        plain, longer = tile_starts(length, self.tile, self.overlap), tile_starts(length, longest, self.overlap)
        return (longer, longest) if len(longer) * longest < len(plain) * self.tile else (plain, self.tile)


class SharedTiles:
    """Tile outputs that several windows of one image need (block-wise prediction's tiles that
    straddle a block edge): the first window to run such a tile keeps its output here, and the
    others take it instead of running the network again. ``uses`` counts the windows that need
    each tile, by its origin in the whole image; a tile is let go when the last one took it. At
    most ``limit`` bytes are kept (past it, a window runs its tile again: the same pixels)."""

    def __init__(self, uses: dict[tuple[int, int], int], limit: float = 512e6) -> None:
        self._left = {key: n for key, n in uses.items() if n > 1}
        self._kept: dict[tuple[int, int], tuple[np.ndarray, list[np.ndarray]]] = {}
        self._lock = threading.Lock()
        self.limit, self.held = limit, 0

    def take(self, key: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray]] | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._release(key)
            return found

    def keep(self, key: tuple[int, int], output: tuple[np.ndarray, list[np.ndarray]]) -> None:
        size = _nbytes(output)
        with self._lock:
            if key in self._left and key not in self._kept and self.held + size <= self.limit:
                self._kept[key] = output
                self.held += size
                self._release(key)

    def _release(self, key: tuple[int, int]) -> None:
        self._left[key] -= 1
        if self._left[key] <= 0 and key in self._kept:
            self.held -= _nbytes(self._kept.pop(key))


def _nbytes(output: tuple[np.ndarray, list[np.ndarray]]) -> int:
    """The memory a tile's output holds: its probabilities and gate maps."""
    return output[0].nbytes + sum(m.nbytes for m in output[1])


def sliding_window(
    image: np.ndarray,
    run: Runner,
    *,
    tiling: Tiling,
    norm: str,
    value_range: tuple[float, float],
    views: Sequence[View] | None = None,
    sigma: float = 0.0,
    origins: list[tuple[int, int]] | None = None,
    tile_shape: tuple[int, int] | None = None,
    shared: tuple[SharedTiles, tuple[int, int]] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(C x H x W probabilities, the gates' H x W maps when the runner returns them) of an H x W x 3
    image: tiles normalised by ``value_range``, smoothed by ``sigma`` (each tile on its own,
    reflected at its edges, so a block's tiles are the whole image's), averaged over ``views``
    (None: the image as it is) and blended. ``origins`` and ``tile_shape`` give the tiles (a
    window of a larger image, at that image's grid); default: ``tiling``'s grid of this image.
    ``shared``: the store of tiles other windows run, and this window's origin in the image."""
    height, width = image.shape[:2]
    if origins is None or tile_shape is None:
        ys, xs, th, tw = tiling.grid(height, width)
        origins = [(y, x) for y in ys for x in xs]
    else:
        th, tw = tile_shape
    weights = gaussian_weights(th, tw)
    total: np.ndarray | None = None
    norm_sum = np.zeros((height, width), np.float32)
    gates: list[np.ndarray] = []

    def tile(y: int, x: int) -> np.ndarray:
        return data.normalise(image[y : y + th, x : x + tw], norm, value_range)

    for start in range(0, len(origins), tiling.batch_size):
        chunk = origins[start : start + tiling.batch_size]
        for (y, x), (probs, maps) in zip(chunk, _tile_outputs(chunk, tile, run, views, sigma, shared)):
            if total is None:
                total = np.zeros((probs.shape[0], height, width), np.float32)
            if maps and not gates:
                gates = [np.zeros((height, width), np.float32) for _ in maps]
            total[:, y : y + th, x : x + tw] += probs * weights
            norm_sum[y : y + th, x : x + tw] += weights
            for acc, m in zip(gates, maps):
                acc[y : y + th, x : x + tw] += m * weights
    assert total is not None
    total /= norm_sum  # in place: no second image-sized copy
    for g in gates:
        g /= norm_sum
    return total, gates


def _tile_outputs(
    chunk: list[tuple[int, int]],
    tile: Callable[[int, int], np.ndarray],
    run: Runner,
    views: Sequence[View] | None,
    sigma: float,
    shared: tuple[SharedTiles, tuple[int, int]] | None,
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Each tile's (probabilities, gate maps): taken from ``shared`` where another window ran it,
    else run (those of the chunk in one batch) and kept there for the windows still to come."""
    from scipy import ndimage

    store, (oy, ox) = shared if shared is not None else (None, (0, 0))
    outputs = {k: store.take((y + oy, x + ox)) for k, (y, x) in enumerate(chunk)} if store else {}
    missing = [k for k in range(len(chunk)) if outputs.get(k) is None]
    if missing:
        batch = np.stack([tile(*chunk[k]) for k in missing])
        if sigma > 0:
            batch = ndimage.gaussian_filter(batch, (0, sigma, sigma, 0))
        probs, maps = run_views(run, batch.transpose(0, 3, 1, 2).copy(), views)
        for i, k in enumerate(missing):
            outputs[k] = (probs[i], [m[i] for m in maps])
            if store is not None:
                y, x = chunk[k]
                store.keep((y + oy, x + ox), outputs[k])
    return [outputs[k] for k in range(len(chunk))]


def run_views(run: Runner, batch: np.ndarray, views: Sequence[View] | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Probabilities (and gate maps) of an N x C x H x W batch averaged over ``views``
    (settings.TTA_VIEWS), each mapped back onto the batch; None runs the batch as it is. A runner
    with a ``side_by_side`` method (ONNX Runtime's) runs the views at once; the sum is in the
    views' order either way."""
    if views is None:
        return run(batch)
    turned = [_view(batch, k, flip) for k, flip in views]
    side_by_side = getattr(run, "side_by_side", None)
    outputs = side_by_side(turned) if side_by_side is not None else [run(view) for view in turned]
    probs, maps = None, None
    for (k, flip), (p, m) in zip(views, outputs):
        p, m = _undo_view(p, k, flip), [_undo_view(a, k, flip) for a in m]
        probs = p if probs is None else probs + p
        maps = m if maps is None else [s + a for s, a in zip(maps, m)]
    assert probs is not None
    return probs / len(views), [m / len(views) for m in maps or []]


def _view(batch: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """A batch turned by k quarter turns and maybe mirrored, as a copy (not np.ascontiguousarray:
    along a side of 1 pixel numpy calls a flipped view contiguous and keeps its negative stride,
    which torch refuses)."""
    view = np.rot90(batch, k, axes=(2, 3))
    return (view[..., ::-1] if flip else view).copy()


def _undo_view(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Map an output of a turned (k quarter turns) and maybe mirrored view back onto the image."""
    return np.rot90(a[..., ::-1] if flip else a, -k, axes=(a.ndim - 2, a.ndim - 1))


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by ``factor`` (at least 8 pixels a side), as the network sees it; the image
    itself within 0.1% of factor 1."""
    if abs(factor - 1.0) < 1e-3:
        return image
    height, width = image.shape[:2]
    return data.resize(image, (max(8, round(height * factor)), max(8, round(width * factor))))
