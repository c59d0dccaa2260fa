"""Sliding-window inference: probability maps of whole images from a network that sees tiles.

Tiles are evenly spaced with the last one flush to the image edge and blended with a Gaussian
weight map that has no zeros (as in nnU-Net); the normalisation range is given, computed once per
image, so all tiles share it. Memory grows with tile and batch size, plus two float32 accumulators
of the image's size, not with the network's activations on the whole image. The network is reached
through a :data:`Runner` (torch in :mod:`.engine`, ONNX Runtime in :mod:`attention_unet.export`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..errors import InputError
from ..io import data

Runner = Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]
View = tuple[int, bool]  # quarter turns, then mirrored left-right


def tile_starts(length: int, tile: int, overlap: float = 0.25) -> list[int]:
    """Evenly spaced tile origins covering 0..length, the last flush with the end.

    >>> tile_starts(1000, 512)
    [0, 244, 488]
    >>> tile_starts(300, 512)
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
    """How an image is cut into the network's tiles: their edge, overlap and how many per call."""

    tile: int = 512
    batch_size: int = 4
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if not (isinstance(self.tile, int) and 32 <= self.tile <= 8192):
            raise InputError(f"tile must be a whole number of pixels from 32 to 8192, not {self.tile}", "tile")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 1024):
            raise InputError(f"batch_size must be a whole number from 1 to 1024, not {self.batch_size}", "batch_size")

    def grid(self, height: int, width: int) -> tuple[list[int], list[int], int, int]:
        """(tile rows, tile columns, tile height, tile width) of an image of this size."""
        th, tw = min(self.tile, height), min(self.tile, width)
        return tile_starts(height, th, self.overlap), tile_starts(width, tw, self.overlap), th, tw


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
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(C x H x W probabilities, the gates' H x W maps when the runner returns them) of an H x W x 3
    image: tiles normalised by ``value_range``, smoothed by ``sigma`` (each tile on its own,
    reflected at its edges, so a block's tiles are the whole image's), averaged over ``views``
    (None: the image as it is) and blended. ``origins`` and ``tile_shape`` give the tiles (a
    window of a larger image, at that image's grid); default: ``tiling``'s grid of this image."""
    from scipy import ndimage

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
    for start in range(0, len(origins), tiling.batch_size):
        chunk = origins[start : start + tiling.batch_size]
        batch = np.stack([data.normalise(image[y : y + th, x : x + tw], norm, value_range) for y, x in chunk])
        if sigma > 0:
            batch = ndimage.gaussian_filter(batch, (0, sigma, sigma, 0))
        probs, maps = run_views(run, batch.transpose(0, 3, 1, 2).copy(), views)
        if total is None:
            total = np.zeros((probs.shape[1], height, width), np.float32)
        if maps and not gates:
            gates = [np.zeros((height, width), np.float32) for _ in maps]
        for k, (y, x) in enumerate(chunk):
            total[:, y : y + th, x : x + tw] += probs[k] * weights
            norm_sum[y : y + th, x : x + tw] += weights
            for acc, m in zip(gates, maps):
                acc[y : y + th, x : x + tw] += m[k] * weights
    assert total is not None
    total /= norm_sum  # in place: no second image-sized copy
    for g in gates:
        g /= norm_sum
    return total, gates


def run_views(run: Runner, batch: np.ndarray, views: Sequence[View] | None) -> tuple[np.ndarray, list[np.ndarray]]:
    """Probabilities (and gate maps) of an N x C x H x W batch averaged over ``views``
    (settings.TTA_VIEWS), each mapped back onto the batch; None runs the batch as it is."""
    if views is None:
        return run(batch)
    probs, maps = None, None
    for k, flip in views:
        view = np.rot90(batch, k, axes=(2, 3))
        view = view[..., ::-1] if flip else view
        # a copy, not np.ascontiguousarray: along a side of 1 pixel numpy calls the flipped
        # view contiguous and keeps its negative stride, which torch refuses
        p, m = run(view.copy())
        p, m = _undo_view(p, k, flip), [_undo_view(a, k, flip) for a in m]
        probs = p if probs is None else probs + p
        maps = m if maps is None else [s + a for s, a in zip(maps, m)]
    assert probs is not None
    return probs / len(views), [m / len(views) for m in maps or []]


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
