"""What to run at which scale and smoothing: a :class:`Plan` per image, from the model's settings.

The scale policy measures the nuclei on a half-size probe (and on coarser ones, where large
nuclei are whole) and brings them towards the size the model learnt (a ramp in log size,
:func:`factor_for_diameter`); where its rules are unsure (large textured nuclei, or the fragments
rule undecided) it predicts candidate factors and keeps the one whose instances are surer. Of a
model's settings it reads two, ``scale`` and ``target_diameter``: the procedure's own numbers are
:class:`ScalePolicy`'s, the same for every model. The stain policy smooths stained tissue sharper
than what the model learnt from. Both read :class:`~attention_unet.settings.InferenceSettings`; the
network is reached through a callable, so this module runs nothing itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..instances import instances, mean_probability
from ..io import data
from ..settings import MAX_SCALE, InferenceSettings
from .tiles import rescaled

# (image at the network's scale, Gaussian sigma of its tiles, test-time views on) -> its probabilities
Network = Callable[[np.ndarray, float, bool], tuple[np.ndarray, list[np.ndarray]]]
Predicted = tuple[np.ndarray, list[np.ndarray]]
Probed = tuple[np.ndarray, float, float]  # a probe's instances, the image area one pixel covers, their mean probability


@dataclass(frozen=True)
class Plan:
    """How one image is run: resized by ``factor``; its typical nucleus ``diameter`` (image pixels)
    where auto scale measured it; its tiles smoothed by ``smoothing`` (None: the stain policy decides)."""

    factor: float = 1.0
    diameter: float | None = None
    smoothing: float | None = None


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


def sizes_of(labels: np.ndarray, pixel_area: float = 1.0) -> dict[str, float]:
    """:func:`size_statistics` of an instance image's nuclei (``pixel_area``: see :func:`large_solidity`)."""
    areas = np.bincount(labels.ravel())[1:]
    return size_statistics(areas[areas > 0] * pixel_area)


def large_solidity(labels: np.ndarray, diameter: float, pixel_area: float = 1.0) -> float:
    """The area-weighted solidity (area / convex area) of the instances at least ``diameter`` / 1.5
    across, ``pixel_area`` being what one label pixel covers: single nuclei are convex, clumps of
    nuclei merged into one piece are not. Only those instances are traced."""
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
    grows linearly in log size, so the factor never jumps (large nuclei scored best brought part
    of the way, small ones all the way: docs/experiments).

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


@dataclass(frozen=True)
class StainPolicy:
    """The Gaussian sigma of an image's tiles: sharp stained tissue smoothed (stain_smoothing,
    stain_sharpness), everything else not."""

    settings: InferenceSettings = field(default_factory=InferenceSettings)
    norm: str = "fixed"

    def sigma(self, image: np.ndarray, value_range: tuple[float, float], diameter: float | None = None) -> float:
        """For an image as the network sees it (rescaled): ``stain_smoothing`` times its nuclei's
        ``diameter`` (at the network's scale; unknown: as learnt) over ``target_diameter``, at
        most 1, where it is stained tissue (:func:`data.modality`) sharper than ``stain_sharpness``
        (:func:`data.sharpness`); else 0. Measured on the central 1024 x 1024 pixels at most."""
        s = self.settings
        if s.stain_smoothing <= 0:
            return 0.0
        sample = data.central(image)
        if data.modality(sample) != "stained" or data.sharpness(sample, self.norm, value_range) <= s.stain_sharpness:
            return 0.0
        return s.stain_smoothing * min(1.0, (diameter or s.target_diameter) / s.target_diameter)


@dataclass(frozen=True)
class FragmentsRule:
    """When the small pieces a probe found are fragments of large textured nuclei: it found at
    least ``count``, the piece the median foreground pixel lies in is ``ratio`` times the median
    one or more (0: never), and the large pieces are convex (area-weighted solidity at least
    ``solidity``; clumps of nuclei are not)."""

    ratio: float = 2.0
    count: int = 30
    solidity: float = 0.85

    def typical(self, labels: np.ndarray, pixel_area: float) -> tuple[float | None, float | None]:
        """(the typical nucleus's diameter, or None when none was found; the large pieces' where the
        rule is undecided, else None): the median nucleus, or the large pieces where the rule holds.
        Undecided: the ratio test passes and the count or solidity test does not (few large
        nuclei, or dense tissue)."""
        sizes = sizes_of(labels, pixel_area)
        if not sizes["count"]:
            return None, None
        median, weighted = sizes["median"], sizes["weighted"]
        if self.ratio <= 0 or weighted < self.ratio * median:
            return median, None
        # solidity last: it traces the large pieces, so only on the images the other tests pick
        if sizes["count"] >= self.count and large_solidity(labels, weighted, pixel_area) >= self.solidity:
            return weighted, None
        return median, weighted


@dataclass(frozen=True)
class ScalePolicy:
    """The factor an image is predicted at: ``settings.scale`` when it is a number; under "auto",
    measured on a ``probe``-size pass (and on coarser ones, where large nuclei are whole) and
    brought towards ``target_diameter`` (1 within ``auto_range`` times it, all the way from
    ``auto_full`` times on), with a second look at ``shrink`` times the factor or at the large
    pieces' size where the settings ask for one."""

    settings: InferenceSettings = field(default_factory=InferenceSettings)
    auto_range: tuple[float, float] = (0.5, 2.0)
    auto_full: tuple[float, float] = (1 / 3, 6.0)
    probe: float = 0.5  # a quarter of a full pass; large textured nuclei are whole at half size
    # a pyramid of probes, the half-size one and coarser ones (1/16 and 1/64 of a pass more), where
    # nuclei too large for the half-size probe are whole: its size replaces the rules' when it is
    # ``larger`` times theirs or more (:meth:`pyramid_diameter`)
    coarse_probes: tuple[float, ...] = (0.25, 0.125)
    band: tuple[float, float] = (0.5, 2.0)  # a probe is trusted where its nuclei are this near the learnt size
    share: float = 0.1  # ... and found this share of the most nuclei such a probe found (not vanishing)
    larger: float = 1.25
    min_probe_side: int = 64  # a smaller probe image says nothing about size
    # nuclei too small for the half-size probe (it sees clumps) are measured on finer probes of up
    # to ``fine_max_pixels``: ``smaller`` times the rules' size or less, theirs is taken (:meth:`fine_diameter`)
    fine_probes: tuple[float, ...] = (2.0,)
    fine_below: float = 0.375
    fine_max_pixels: int = 1_100_000
    smaller: float = 1 / 1.25
    fragments: FragmentsRule = field(default_factory=FragmentsRule)  # the half-size probe's typical nucleus
    # the second look at ``shrink`` times the factor, where the typical nucleus is still
    # shrink_above times the learnt size or more at the chosen factor (0: never), kept when its
    # instances' mean probability is higher by more than shrink_margin (:func:`choose`)
    shrink: float = 0.5
    shrink_above: float = 1.5
    shrink_margin: float = 0.01
    max_pixels: int = 64_000_000  # a rescaled image never exceeds this many pixels

    @property
    def auto(self) -> bool:
        return self.settings.scale == "auto"

    def factor_of(self, diameter: float | None) -> float:
        """Auto scale's factor for nuclei of this diameter (None, none found: 1)."""
        if diameter is None:
            return 1.0
        return factor_for_diameter(diameter, self.settings.target_diameter, self.auto_range, self.auto_full)

    def scale_for(self, diameter: float) -> float:
        """The factor that brings nuclei of ``diameter`` pixels to the size the model learnt."""
        target = self.settings.target_diameter
        if not target / MAX_SCALE <= diameter < float("inf"):  # also refuses NaN
            raise InputError(
                f"diameter must be at least {target / MAX_SCALE:g} pixels (at most {MAX_SCALE:g}x enlargement), not {diameter:g}",
                "diameter",
            )
        return target / diameter

    def sizing(self, image: np.ndarray, network: Network) -> tuple[float, float | None, float | None]:
        """(the factor, the typical nucleus's diameter where measured, the large pieces' diameter
        that :func:`choose` also tries where the fragments rule is undecided)."""
        if not self.auto:
            return float(self.settings.scale), None, None
        probe, half = self.first_probed(image, network)
        diameter, large = self.fragments.typical(half[0], half[1])
        whole = self.pyramid_diameter(image, network, half, probe)
        if whole is not None and (diameter is None or whole >= self.larger * diameter):
            diameter, large = whole, None  # the half-size probe's pieces were parts of larger nuclei
        fine = self.fine_diameter(image, network, half, diameter, probe)
        if fine is not None and diameter is not None and fine <= self.smaller * diameter:
            diameter, large = fine, None  # the half-size probe's nuclei were clumps of smaller ones
        return self.factor_of(diameter), diameter, large

    def first_probed(self, image: np.ndarray, network: Network) -> tuple[float, Probed]:
        """(size, :meth:`probed`) of the probe the rules measure on: the half-size one, or where that
        is under ``min_probe_side`` pixels (a 64 x 80 image's 32 x 40 probe may see clumps of its tiny
        nuclei) the surer of it and a probe of that side (at most the image's own size)."""
        half = self.probed(image, network, self.probe)
        larger = min(1.0, self.min_probe_side / min(image.shape[:2]))
        if larger <= self.probe:
            return self.probe, half
        other = self.probed(image, network, larger)
        return (larger, other) if other[2] > half[2] else (self.probe, half)

    def probed(self, image: np.ndarray, network: Network, probe: float) -> Probed:
        """The instances of the image at ``probe`` size (the mask's watershed; one view: a sizing
        pass, not the answer), the image area one of their pixels covers, and their mean probability."""
        small = rescaled(image, probe)
        probs, _ = network(small, 0.0, False)
        smallest = max(1, round(self.settings.min_area * probe**2))
        labels = instances(probs[0], threshold=0.5, min_area=smallest, h=self.settings.h)
        return labels, (image.shape[1] / small.shape[1]) ** 2, mean_probability(probs[0], labels)

    def pyramid_diameter(self, image: np.ndarray, network: Network, half: Probed, first: float) -> float | None:
        """The median diameter that the surest trusted probe of the pyramid (the first probe,
        ``half`` at size ``first``, and the coarse probes; each at least ``min_probe_side`` pixels) finds: trusted
        where its median nucleus is within ``band`` times the learnt size at its scale and it found
        at least ``share`` of the most nuclei such a probe found (a probe of pieces far from that
        size sets no bar), the surest having the highest mean instance probability; None where no
        probe is trusted."""
        found = {}
        for probe in (first, *self.coarse_probes):
            if min(round(side * probe) for side in image.shape[:2]) < self.min_probe_side:
                continue
            labels, pixel_area, sure = half if probe == first else self.probed(image, network, probe)
            sizes = sizes_of(labels, pixel_area)
            if sizes["count"]:
                found[probe] = (sizes["count"], sizes["median"], sure)
        target = self.settings.target_diameter
        inside = {p: f for p, f in found.items() if self.band[0] <= f[1] * p / target <= self.band[1]}
        most = max((count for count, _, _ in inside.values()), default=0)
        ranked = [(sure, median) for count, median, sure in inside.values() if count >= max(3, self.share * most)]
        return max(ranked)[1] if ranked else None

    def fine_diameter(
        self, image: np.ndarray, network: Network, half: Probed, diameter: float | None, first: float
    ) -> float | None:
        """The median diameter that the surest trusted fine probe finds (trusted: its median within
        ``band`` times the learnt size at its scale, 3 nuclei or more), where the size so far
        (``diameter``) is the first probe's (``half``, at size ``first``) median, below ``fine_below``
        times the learnt size at its scale (not pieces taken for fragments, nor a coarse probe's); else None."""
        target = self.settings.target_diameter
        sizes = sizes_of(half[0], half[1])
        if not sizes["count"] or diameter != sizes["median"] or diameter * first >= self.fine_below * target:
            return None
        ranked = []
        for probe in self.fine_probes:
            if image.shape[0] * image.shape[1] * probe**2 > self.fine_max_pixels:
                continue
            labels, pixel_area, sure = self.probed(image, network, probe)
            found = sizes_of(labels, pixel_area)
            if found["count"] >= 3 and self.band[0] <= found["median"] * probe / target <= self.band[1]:
                ranked.append((sure, found["median"]))
        return max(ranked)[1] if ranked else None

    def tries_smaller(self, factor: float, diameter: float | None) -> bool:
        """Whether auto scale also predicts at ``shrink`` times ``factor``: its typical nucleus is
        still shrink_above times target_diameter or more there (0: never)."""
        return (
            self.auto
            and self.shrink_above > 0
            and diameter is not None
            and diameter * factor >= self.shrink_above * self.settings.target_diameter
        )

    def cap(self, height: int, width: int) -> float:
        """The largest factor that keeps the image under ``max_pixels``."""
        return math.sqrt(self.max_pixels / (height * width))


PredictAt = Callable[[float, float | None], Predicted]  # (factor, diameter) -> probabilities at image size


def choose(
    policy: ScalePolicy,
    sizing: tuple[float, float | None, float | None],
    predict_at: PredictAt,
    confidence: Callable[[np.ndarray], float],
) -> tuple[Plan, Predicted]:
    """The plan among the policy's candidates whose instances are surest, and its prediction.
    From ``sizing`` (factor, diameter, large pieces): where :meth:`ScalePolicy.tries_smaller`, the
    image at ``shrink`` times the factor is kept when surer by more than shrink_margin (large
    textured nuclei come out whole and confident at half the size); where ``large`` is given and
    the image would not be shrunk, the image predicted for nuclei of that size competes too.
    Shrinking an image already shrunk further for the large pieces lost on train and valid."""
    factor, diameter, large = sizing
    chosen = _surer_of_sizes(policy, factor, diameter, predict_at, confidence)
    if large is None or chosen[0].factor < 1 or abs(policy.factor_of(large) - factor) < 1e-3:
        return chosen[0], chosen[1]
    other = _surer_of_sizes(policy, policy.factor_of(large), large, predict_at, confidence)
    sure = [c[2] if c[2] is not None else confidence(c[1][0]) for c in (chosen, other)]
    best = other if sure[1] > sure[0] else chosen
    return best[0], best[1]


def _surer_of_sizes(
    policy: ScalePolicy,
    factor: float,
    diameter: float | None,
    predict_at: PredictAt,
    confidence: Callable[[np.ndarray], float],
) -> tuple[Plan, Predicted, float | None]:
    """(plan, prediction, its confidence where it was needed) at ``factor`` or, where
    :meth:`ScalePolicy.tries_smaller`, at ``shrink`` times it when that is surer by more than
    shrink_margin."""
    result = predict_at(factor, diameter)
    if not policy.tries_smaller(factor, diameter):
        return Plan(factor, diameter), result, None
    smaller = factor * policy.shrink
    other = predict_at(smaller, diameter)
    sure, other_sure = confidence(result[0]), confidence(other[0])
    if other_sure > sure + policy.shrink_margin:
        return Plan(smaller, diameter), other, other_sure
    return Plan(factor, diameter), result, sure
