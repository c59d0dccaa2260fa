"""Sliding-window inference: probability maps of whole images from a network that sees tiles.

Tiles are evenly spaced with the last one flush to the image edge and blended with a Gaussian
weight map that has no zeros (as in nnU-Net); the normalisation range is computed once per image
so all tiles share it. Memory grows with tile and batch size, plus two float32 accumulators of the
image's size, not with the network's activations on the whole image. The network is reached
through a :data:`Runner` (torch here, ONNX Runtime in :mod:`export`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from . import allocator, data
from .instances import instances
from .settings import TTA_VIEWS, InferenceSettings, check_tta_views

Runner = Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]


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


def diameter_of_area(area: float) -> float:
    """The diameter of a disc of this area."""
    return 2 * math.sqrt(area / math.pi)


def size_statistics(areas: np.ndarray) -> dict[str, float]:
    """Sizes of a set of nuclei from their areas (pixels): how many, the median diameter, the
    quartiles' diameters, and the diameter of the nucleus that the median foreground *pixel* lies in
    ('weighted': fragments of a large nucleus outnumber it, but it holds most of the pixels)."""
    areas = np.sort(np.asarray(areas, np.float64))
    if not len(areas):
        return {"count": 0, "median": 0.0, "q25": 0.0, "q75": 0.0, "weighted": 0.0}
    weighted = areas[np.searchsorted(np.cumsum(areas), areas.sum() / 2)]
    q25, median, q75 = np.percentile(areas, [25, 50, 75])
    return {
        "count": len(areas),
        "median": diameter_of_area(median),
        "q25": diameter_of_area(q25),
        "q75": diameter_of_area(q75),
        "weighted": diameter_of_area(weighted),
    }


def large_solidity(labels: np.ndarray, diameter: float, pixel_area: float = 1.0) -> float:
    """The area-weighted solidity (area / convex area) of the instances at least ``diameter`` / 1.5
    across, ``pixel_area`` being what one label pixel covers: single nuclei are convex, clumps of
    nuclei merged into one piece are not. Only those instances are traced (few, on the images where
    auto scale asks)."""
    from skimage.measure import regionprops

    areas = np.bincount(labels.ravel()) * pixel_area
    large = np.flatnonzero(areas >= math.pi / 4 * (diameter / 1.5) ** 2)
    props = regionprops(np.where(np.isin(labels, large[large > 0]), labels, 0))
    return float(np.average([p.solidity for p in props], weights=[p.area for p in props])) if props else 0.0


def factor_for_diameter(
    diameter: float,
    target: float,
    dead_band: tuple[float, float] = (0.5, 2.0),
    full: tuple[float, float] = (1 / 3, 6.0),
) -> float:
    """Auto scale's factor for nuclei of this diameter: 1 within ``dead_band`` times ``target``;
    ``target / diameter`` (clipped to 0.125..4) beyond ``full`` times it; in between the correction
    grows linearly in log size, so the factor never jumps: a probe that reads a diameter a little
    differently (another engine, int8) changes it a little. On valid (MODEL.md) large nuclei scored
    best brought part of the way (to about 24 px, not 16), small ones brought all the way: hence
    the longer ramp above the band than below it.

    >>> factor_for_diameter(20, 16), factor_for_diameter(120, 16), factor_for_diameter(2, 16)
    (1.0, 0.13333333333333333, 4.0)
    >>> round(factor_for_diameter(32.5, 16), 3), round(factor_for_diameter(64, 16), 3)
    (0.975, 0.323)
    >>> round(factor_for_diameter(7.5, 16), 3), round(factor_for_diameter(5, 16), 3)
    (1.191, 3.2)
    """
    off = math.log(diameter / target)
    edge, end = (
        (math.log(dead_band[1]), math.log(full[1])) if off > 0 else (-math.log(dead_band[0]), -math.log(full[0]))
    )
    if abs(off) <= edge:
        return 1.0
    correction = abs(off) if abs(off) >= end else end * (abs(off) - edge) / (end - edge)
    return float(np.clip(math.exp(-math.copysign(correction, off)), 0.125, 4.0))


def sizes_of(labels: np.ndarray, pixel_area: float = 1.0) -> dict[str, float]:
    """:func:`size_statistics` of an instance image's nuclei (``pixel_area``: see :func:`large_solidity`)."""
    areas = np.bincount(labels.ravel())[1:]
    return size_statistics(areas[areas > 0] * pixel_area)


def torch_runner(model: torch.nn.Module, device: str = "cpu", attention: bool = False) -> Runner:  # noqa: F821
    """Wrap a model as a function: float32 NCHW batch -> (probabilities N x C x H x W, gate maps N x H x W)."""
    import torch
    import torch.nn.functional as F

    model = model.to(device).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            if not attention:
                return torch.sigmoid(model(x)).float().cpu().numpy(), []
            logits, maps = model.forward_with_attention(x)
            size = x.shape[-2:]
            maps = [
                F.interpolate(m.mean(1, keepdim=True), size=size, mode="bilinear")[:, 0].cpu().numpy() for m in maps
            ]
            return torch.sigmoid(logits).float().cpu().numpy(), maps

    return run


def rescaled(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resized by ``factor`` (at least 8 pixels a side), as the network sees it; the image
    itself within 0.1% of factor 1."""
    if abs(factor - 1.0) < 1e-3:
        return image
    height, width = image.shape[:2]
    return data.resize(image, (max(8, round(height * factor)), max(8, round(width * factor))))


@dataclass
class Predictor:
    """Probability maps of whole images by sliding-window inference, with optional flip TTA and
    scale normalisation.

    ``scale`` resizes the image by a fixed factor before inference (the probability is mapped
    back); ``scale=None`` chooses it per image (:meth:`auto_scale`): a pass at half size measures
    the median nucleus diameter, and the image is predicted at the scale that brings it towards
    ``target_diameter`` pixels (the size the model learnt best) when it is more than
    ``auto_range`` times too large (or too small), all the way from ``auto_full`` times on
    (:func:`factor_for_diameter`).
    """

    run: Runner
    norm: str = "fixed"
    tile: int = 512
    batch_size: int = 4
    tta: bool = InferenceSettings.tta
    tta_views: int = InferenceSettings.tta_views  # settings.TTA_VIEWS
    overlap: float = 0.25
    scale: float | None = 1.0  # None: auto (InferenceSettings.scale 'auto')
    target_diameter: float = InferenceSettings.target_diameter
    # auto scale leaves diameters of these multiples of target_diameter alone
    auto_range: tuple[float, float] = (0.5, 2.0)
    # ... and brings them all the way to it beyond these multiples (a ramp between: factor_for_diameter)
    auto_full: tuple[float, float] = (1 / 3, 6.0)
    probe: float = 0.5  # auto scale measures nuclei on the image at this size (a quarter of the work)
    max_pixels: int = 64_000_000  # a rescaled image never exceeds this many pixels
    outputs: tuple[str, ...] = ("mask", "contour", "distance")  # what each output channel holds, in order
    contours: bool = (
        InferenceSettings.contours
    )  # a contour output shapes the instance watershed (see :func:`instances`)
    distances: bool = InferenceSettings.distances
    contour_threshold: float = InferenceSettings.contour_threshold
    h: float = InferenceSettings.h
    min_area: int = InferenceSettings.min_area  # smaller components are dropped from the instances
    min_confidence: float = InferenceSettings.min_confidence  # weaker instances are dropped
    stain_smoothing: float = InferenceSettings.stain_smoothing  # see smoothing_of
    stain_sharpness: float = InferenceSettings.stain_sharpness
    smoothing: float | None = None  # the Gaussian sigma for every image (None: smoothing_of each)
    fragments_ratio: float = InferenceSettings.fragments_ratio  # see auto_scale
    fragments_count: int = InferenceSettings.fragments_count
    fragments_solidity: float = InferenceSettings.fragments_solidity
    shrink_above: float = InferenceSettings.shrink_above  # see choose_factor
    shrink_margin: float = InferenceSettings.shrink_margin
    shrink: float = 0.5  # choose_factor's second pass, relative to auto scale's factor
    fragments_by_confidence: bool = InferenceSettings.fragments_by_confidence  # see choose_factor

    def __post_init__(self) -> None:
        check_tta_views(self.tta_views, "tta_views")  # every way in: load_predictor, Segmenter, replace()

    def probability(self, image: np.ndarray) -> np.ndarray:
        """H x W float32 foreground probability of an H x W x 3 image."""
        return self.probabilities(image)[0][0]

    def probabilities(
        self, image: np.ndarray, *, value_range: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """(C x H x W float32 probabilities: foreground, then contours for a contour model; the
        gates' H x W attention maps when the runner returns them). ``value_range`` is the
        normalisation range (default: the image's own); a block of a larger image takes the whole
        image's, so that blocks agree. A fluorescence image in one colour is predicted as the grey
        image of that colour's channel (:func:`data.signal_channel`)."""
        if value_range is None and (channel := data.signal_channel(image)) is not None:
            image = np.repeat(image[..., channel : channel + 1], 3, axis=2)  # the grey the network learnt
        with allocator.kept():  # the tiles' activations reuse one another's memory
            return self._probabilities(image, value_range or data.normalisation_range(image, self.norm))

    def tile_grid(self, height: int, width: int) -> tuple[list[int], list[int], int, int]:
        """(tile rows, tile columns, tile height, tile width) of an image of this size at scale 1."""
        th, tw = min(self.tile, height), min(self.tile, width)
        return tile_starts(height, th, self.overlap), tile_starts(width, tw, self.overlap), th, tw

    def window_probabilities(
        self,
        window: np.ndarray,
        *,
        value_range: tuple[float, float],
        origins: list[tuple[int, int]],
        tile_shape: tuple[int, int],
    ) -> np.ndarray:
        """C x h x w probabilities of a window of a larger image at scale 1, from the tiles of the
        whole image's grid (:meth:`tile_grid`) at ``origins`` (relative to the window): where the
        window holds every tile that covers a pixel, the pixel's value is the whole image's, bit
        for bit (the same tiles, weights and order of summation)."""
        with allocator.kept():
            return self._tiled(window, value_range, origins, tile_shape, sigma=self.smoothing or 0.0)[0]

    def _probabilities(
        self, image: np.ndarray, value_range: tuple[float, float]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        factor, diameter, large = self.sizing(image, value_range)
        height, width = image.shape[:2]
        cap = math.sqrt(self.max_pixels / (height * width))
        return self.choose_factor(image, value_range, min(factor, cap), diameter, large)[2]

    def choose_factor(
        self,
        image: np.ndarray,
        value_range: tuple[float, float],
        factor: float,
        diameter: float | None,
        large: float | None = None,
    ) -> tuple[float, float | None, tuple[np.ndarray, list[np.ndarray]]]:
        """(the factor the image is predicted at, the nucleus diameter it stands for, its
        :meth:`probabilities` there), from auto scale's ``factor``, ``diameter`` and ``large``
        (:meth:`sizing`). Where :meth:`tries_smaller`, the image is also predicted at ``shrink``
        times the factor, and that prediction is kept when its instances are more confident
        (:meth:`confidence`) by more than ``shrink_margin``: large textured nuclei that the ramp
        leaves at 24-32 px come out as weak fragments, and whole and confident at half that size;
        nuclei the network reads well lose confidence there. Where the probe's large pieces gave
        ``large`` (the fragments rule undecided: :meth:`probe_diameters`), the image is also
        predicted for nuclei of that size (with its own half-size look) when the image would
        otherwise not be shrunk, and the surer of the two is kept: few large textured nuclei,
        whose fragments the median read as nuclei of their own and so left them unshrunk or even
        enlarged them, are surer shrunk; small nuclei beside large ones lose confidence shrunk.
        Where the image is shrunk already, shrinking it further for the large pieces lost on train
        and valid (MODEL.md)."""
        chosen = self._surer_of_sizes(image, value_range, factor, diameter)
        if large is None or chosen[0] < 1 or abs(self.factor_of(large) - factor) < 1e-3:
            return chosen[:3]
        other = self._surer_of_sizes(image, value_range, self.factor_of(large), large)
        sure = [c[3] if c[3] is not None else self.confidence(c[2][0]) for c in (chosen, other)]
        return other[:3] if sure[1] > sure[0] else chosen[:3]

    def chosen_size(
        self,
        image: np.ndarray,
        value_range: tuple[float, float],
        factor: float,
        diameter: float | None,
        large: float | None = None,
    ) -> tuple[float, float | None]:
        """:meth:`choose_factor`'s factor and diameter, without predicting where it has nothing to
        choose (most images): the factor decided on a sample (block-wise prediction's mosaic)."""
        if self.tries_smaller(factor, diameter) or large is not None:
            factor, diameter, _ = self.choose_factor(image, value_range, factor, diameter, large)
        return factor, diameter

    def _surer_of_sizes(
        self, image: np.ndarray, value_range: tuple[float, float], factor: float, diameter: float | None
    ) -> tuple[float, float | None, tuple[np.ndarray, list[np.ndarray]], float | None]:
        """(factor, diameter, probabilities, their :meth:`confidence` when it was needed, else
        None) of the image predicted at ``factor`` or, where :meth:`tries_smaller`, at ``shrink``
        times it when that is surer by more than ``shrink_margin``."""
        result = self.predicted_at(image, value_range, factor, diameter)
        if not self.tries_smaller(factor, diameter):
            return factor, diameter, result, None
        smaller = factor * self.shrink
        other = self.predicted_at(image, value_range, smaller, diameter)
        sure, other_sure = self.confidence(result[0]), self.confidence(other[0])
        if other_sure > sure + self.shrink_margin:
            return smaller, diameter, other, other_sure
        return factor, diameter, result, sure

    def tries_smaller(self, factor: float, diameter: float | None) -> bool:
        """Whether :meth:`choose_factor` also predicts at a smaller factor: under auto scale, when
        its typical nucleus is still ``shrink_above`` times ``target_diameter`` or more at
        ``factor`` (0: never)."""
        return (
            self.scale is None
            and self.shrink_above > 0
            and diameter is not None
            and diameter * factor >= self.shrink_above * self.target_diameter
        )

    def confidence(self, probs: np.ndarray) -> float:
        """The mean over the instances of :meth:`labels` (none dropped for weakness) of each one's
        mean foreground probability; 0 when there are none."""
        from scipy import ndimage

        labels = replace(self, min_confidence=0.0).labels(probs)
        count = int(labels.max())
        if not count:
            return 0.0
        return float(np.mean(ndimage.mean(probs[0], labels, np.arange(1, count + 1))))

    def predicted_at(
        self, image: np.ndarray, value_range: tuple[float, float], factor: float, diameter: float | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """:meth:`probabilities` of the image predicted at ``factor``, at the image's size."""
        height, width = image.shape[:2]
        scaled, sigma = self.network_view(image, value_range, factor, diameter)
        if scaled is image:
            return self._tiled(image, value_range, sigma=sigma)
        prob, gates = self._tiled(scaled, value_range, sigma=sigma)
        return np.stack([data.resize(c, (height, width)) for c in prob]), [
            data.resize(g, (height, width)) for g in gates
        ]

    def labels(self, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Instance labels from :meth:`probabilities`' output, using the model's contour and
        distance outputs when it has them and ``contours`` / ``distances`` are on."""

        def output(name: str, wanted: bool) -> np.ndarray | None:
            return probs[self.outputs.index(name)] if wanted and name in self.outputs[: len(probs)] else None

        return instances(
            probs[0],
            contour=output("contour", self.contours),
            threshold=threshold,
            min_area=self.min_area,
            min_confidence=self.min_confidence,
            h=self.h,
            contour_threshold=self.contour_threshold,
            distance=output("distance", self.distances),
        )

    def network_view(
        self, image: np.ndarray, value_range: tuple[float, float], factor: float, diameter: float | None
    ) -> tuple[np.ndarray, float]:
        """(the image at ``factor``, the sigma its tiles are smoothed by: ``smoothing`` when given,
        else :meth:`smoothing_of` it, its nuclei ``diameter`` image pixels across before the resize)."""
        scaled = rescaled(image, factor)
        if self.smoothing is not None:
            return scaled, self.smoothing
        return scaled, self.smoothing_of(scaled, value_range, diameter * factor if diameter is not None else None)

    def smoothing_of(self, image: np.ndarray, value_range: tuple[float, float], diameter: float | None = None) -> float:
        """The Gaussian sigma (px) the tiles of an image, as the network sees it (rescaled), are
        smoothed by: for stained tissue (:func:`data.modality`) whose :func:`data.sharpness`
        exceeds ``stain_sharpness``, ``stain_smoothing`` times the nuclei's ``diameter`` (at the
        network's scale; unknown: as learnt) over ``target_diameter``, at most 1; else 0. The
        network learnt H&E mostly from the DSB archive's smooth stained images; sharp 40x H&E
        crops (TNBC) come out more complete and better split once smoothed, while smoothing costs
        every other kind of image here, and small nuclei on H&E too (MODEL.md). Measured on the
        central 1024 x 1024 pixels at most, at the network's scale: enlarging smooths already."""
        if self.stain_smoothing <= 0:
            return 0.0
        sample = data.central(image)
        if data.modality(sample) != "stained" or data.sharpness(sample, self.norm, value_range) <= self.stain_sharpness:
            return 0.0
        return self.stain_smoothing * min(1.0, (diameter or self.target_diameter) / self.target_diameter)

    def sizing(self, image: np.ndarray, value_range: tuple[float, float]) -> tuple[float, float | None, float | None]:
        """(the factor the image is predicted at, the typical nucleus's diameter in the image's
        pixels when :meth:`auto_scale` measured it, else None, and the large pieces' diameter
        that :meth:`choose_factor` also tries, else None: :meth:`probe_diameters`)."""
        if self.scale is not None:
            return self.scale, None, None
        diameter, large = self.probe_diameters(*self.probe_labels(image, value_range, self.probe))
        return self.factor_of(diameter), diameter, large

    def auto_scale(self, image: np.ndarray, value_range: tuple[float, float]) -> float:
        """The factor that brings the typical nucleus towards ``target_diameter``
        (:func:`factor_for_diameter`: 1.0 within ``auto_range`` times the target, a ramp up to
        ``auto_full`` times, the whole way beyond), or 1.0 when nothing was found.

        Measured on the image at ``probe`` size, not at full size: large textured nuclei that a
        full-size pass cuts into small bright fragments (which would ask for enlarging) are whole
        there, and the pass costs a quarter of a full one. The typical nucleus is the probe's
        median one, unless the probe found at least ``fragments_count`` nuclei, the nucleus that
        the median foreground pixel lies in is ``fragments_ratio`` times larger or more (when that
        is set) and the large ones are convex (solidity at least ``fragments_solidity``): many
        small pieces beside large convex nuclei that hold most of the foreground are fragments of
        those (textured tissue), not nuclei of their own; large pieces that are not convex are
        clumps of small nuclei that the half-size pass merged."""
        return self.factor_of(self.probe_diameter(*self.probe_labels(image, value_range, self.probe)))

    def probe_diameter(self, labels: np.ndarray, pixel_area: float) -> float | None:
        """The typical nucleus's diameter (image pixels) that :meth:`auto_scale` reads off the
        probe's instances, or None when there are none."""
        return self.probe_diameters(labels, pixel_area)[0]

    def probe_diameters(self, labels: np.ndarray, pixel_area: float) -> tuple[float | None, float | None]:
        """(:meth:`probe_diameter`, and the diameter of the piece the median foreground pixel lies
        in where the fragments rule is undecided, else None): its ratio test passes but its count
        or solidity test does not, and ``fragments_by_confidence`` is on."""
        sizes = sizes_of(labels, pixel_area)
        if not sizes["count"]:
            return None, None
        median, weighted = sizes["median"], sizes["weighted"]
        if self.fragments_ratio <= 0 or weighted < self.fragments_ratio * median:
            return median, None
        # solidity last: it traces the large pieces, so only on the images the other tests pick
        if (
            sizes["count"] >= self.fragments_count
            and large_solidity(labels, weighted, pixel_area) >= self.fragments_solidity
        ):
            return weighted, None
        return median, weighted if self.fragments_by_confidence else None

    def factor_of(self, diameter: float | None) -> float:
        """Auto scale's factor for nuclei of this diameter (None, none found: 1)."""
        if diameter is None:
            return 1.0
        return factor_for_diameter(diameter, self.target_diameter, self.auto_range, self.auto_full)

    def probe_labels(
        self, image: np.ndarray, value_range: tuple[float, float], probe: float
    ) -> tuple[np.ndarray, float]:
        """The instances found on the image resized by ``probe`` (the mask's watershed), and the
        area in the image's pixels that one of their pixels covers. One view even when tta is on:
        the fragments rule's thresholds were read off single-view probes, and the probe is a sizing
        pass, not the answer."""
        small = rescaled(image, probe)
        probs, _ = replace(self, tta=False)._tiled(small, value_range)
        smallest = max(1, round(self.min_area * probe**2))
        return instances(probs[0], threshold=0.5, min_area=smallest, h=self.h), (image.shape[1] / small.shape[1]) ** 2

    def _tiled(
        self,
        image: np.ndarray,
        value_range: tuple[float, float],
        origins: list[tuple[int, int]] | None = None,
        tile_shape: tuple[int, int] | None = None,
        *,
        sigma: float = 0.0,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        from scipy import ndimage

        height, width = image.shape[:2]
        if origins is None or tile_shape is None:
            ys, xs, th, tw = self.tile_grid(height, width)
            origins = [(y, x) for y in ys for x in xs]
        else:
            th, tw = tile_shape
        weights = gaussian_weights(th, tw)
        total: np.ndarray | None = None
        norm = np.zeros((height, width), np.float32)
        gates: list[np.ndarray] = []
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            batch = np.stack([data.normalise(image[y : y + th, x : x + tw], self.norm, value_range) for y, x in chunk])
            if sigma > 0:  # each tile on its own (reflected at its edges): a block's tiles are the whole image's
                batch = ndimage.gaussian_filter(batch, (0, sigma, sigma, 0))
            probs, maps = self._views(batch.transpose(0, 3, 1, 2).copy())
            if total is None:
                total = np.zeros((probs.shape[1], height, width), np.float32)
            if maps and not gates:
                gates = [np.zeros((height, width), np.float32) for _ in maps]
            for k, (y, x) in enumerate(chunk):
                total[:, y : y + th, x : x + tw] += probs[k] * weights
                norm[y : y + th, x : x + tw] += weights
                for acc, m in zip(gates, maps):
                    acc[y : y + th, x : x + tw] += m[k] * weights
        assert total is not None
        total /= norm  # in place: no second image-sized copy
        for g in gates:
            g /= norm
        return total, gates

    def _views(self, batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities (and gate maps) averaged over the ``tta_views`` flips/rotations
        (settings.TTA_VIEWS) when tta is on."""
        if not self.tta:
            return self.run(batch)
        probs, maps = None, None
        views = TTA_VIEWS[self.tta_views]
        for k, flip in views:
            view = np.rot90(batch, k, axes=(2, 3))
            view = view[..., ::-1] if flip else view
            # a copy, not np.ascontiguousarray: along a side of 1 pixel numpy calls the flipped
            # view contiguous and keeps its negative stride, which torch refuses
            p, m = self.run(view.copy())
            p, m = _undo_view(p, k, flip), [_undo_view(a, k, flip) for a in m]
            probs = p if probs is None else probs + p
            maps = m if maps is None else [s + a for s, a in zip(maps, m)]
        return probs / len(views), [m / len(views) for m in maps or []]


def _undo_view(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Map an output of a turned (k quarter turns) and maybe mirrored view back onto the image."""
    return np.rot90(a[..., ::-1] if flip else a, -k, axes=(a.ndim - 2, a.ndim - 1))
