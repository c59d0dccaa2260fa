"""How a model turns images into nuclei: the inference settings, with their defaults in this one
place. A shipped or fine-tuned model carries its own (tuned on valid, tools/tune_instances.py) in
its metadata under ``inference``; ``predict``, ``evaluate`` and :class:`Segmenter` start from them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import InputError

# how a model's input is mapped to 0..1 (data.normalisation_range), recorded with its training options
NORMALISATIONS = ("fixed", "percentile", "polarity", "stain")

# The views test-time augmentation averages, as (quarter turns, then mirrored left-right); each
# set a group, so that every orientation's counterpart is in it. 2 views: the image and its mirror
# across the anti-diagonal (on valid, MODEL.md, they gave more than the image and its vertical mirror).
TTA_VIEWS: dict[int, tuple[tuple[int, bool], ...]] = {
    2: ((0, False), (1, True)),
    4: ((0, False), (0, True), (2, False), (2, True)),
    8: tuple((turns, mirrored) for turns in range(4) for mirrored in (False, True)),
}


def check_tta_views(views: object, what: str) -> None:
    if views not in TTA_VIEWS:
        raise InputError(f"{what} must be one of {', '.join(map(str, TTA_VIEWS))}, not {views!r}")


def check_min_confidence(value: float, what: str) -> None:
    if not 0 <= value < 1:
        raise InputError(f"{what} must be at least 0 and below 1, not {value}")


def check_threshold(value: float, what: str) -> None:
    """A foreground probability threshold: 0 would make every pixel a nucleus, 1 none."""
    if not 0 < value < 1:
        raise InputError(f"{what} must lie between 0 and 1, not {value}")


MAX_SMOOTHING = 8.0  # more blurs a 16-px nucleus away


def check_smoothing(value: float, what: str) -> None:
    if not 0 <= value <= MAX_SMOOTHING:
        raise InputError(f"{what} must be a Gaussian sigma from 0 to {MAX_SMOOTHING:g} pixels, not {value}")


@dataclass(frozen=True)
class InferenceSettings:
    """Scale, test-time augmentation and the instance step's parameters.

    >>> InferenceSettings.from_metadata({"scale": "auto", "h": 2}).h
    2.0
    >>> InferenceSettings.from_metadata(InferenceSettings(tta=True).to_metadata()) == InferenceSettings(tta=True)
    True
    """

    tta: bool = False  # average over flipped and turned views of the image
    tta_views: int = 8  # how many: 2 (as is, mirrored diagonally), 4 (mirrored either way) or 8 (all)
    scale: float | str = 1.0  # a factor, or "auto": bring the median nucleus to target_diameter
    target_diameter: float = 16.0  # the nucleus size (px) the model learnt best
    contours: bool = True  # a contour output shapes the instance watershed
    distances: bool = False  # a distance output is the watershed's relief (h then in its 0..1 units)
    contour_threshold: float = 0.5  # contour probability from which a pixel counts as a border
    h: float = 1.0  # watershed seed depth (h-maxima)
    min_area: int = 8  # smaller instances are dropped (pixels)
    # instances whose mean foreground probability is below this are dropped (0: off); MODEL.md
    min_confidence: float = 0.0
    # stained tissue (colour, bright background) sharper than the stained images the model learnt
    # from most is smoothed before the network (a Gaussian of this sigma, px; 0: off), where
    # sharper means a median |Laplacian| of the normalised image above stain_sharpness (MODEL.md)
    stain_smoothing: float = 0.0
    stain_sharpness: float = 0.025
    # auto scale's typical nucleus is the probe's median one, unless it found at least
    # fragments_count nuclei, the one the median foreground pixel lies in is fragments_ratio times
    # larger or more (0: off) and the large ones are convex (solidity >= fragments_solidity): then
    # the small ones are fragments of large textured nuclei. See Predictor.auto_scale.
    fragments_ratio: float = 0.0
    fragments_count: int = 30
    fragments_solidity: float = 0.85
    # auto scale also predicts at half its factor when the typical nucleus is still shrink_above
    # times target_diameter or more at the network's scale (0: off), and keeps that prediction when
    # its instances' mean probability is higher by more than shrink_margin (Predictor.choose_factor)
    shrink_above: float = 0.0
    shrink_margin: float = 0.01
    # where the fragments rule is undecided (the ratio test passes, the count or solidity test
    # does not: few large nuclei, or dense tissue) and the image would not be shrunk, auto scale
    # also predicts at the factor the large pieces ask for and keeps the prediction whose
    # instances are surer (Predictor.choose_factor)
    fragments_by_confidence: bool = False

    @classmethod
    def from_metadata(cls, values: dict[str, Any]) -> InferenceSettings:
        """The settings a model's metadata records (missing keys take the defaults)."""
        types = {
            "tta": bool,
            "tta_views": int,
            "contours": bool,
            "distances": bool,
            "target_diameter": float,
            "contour_threshold": float,
            "h": float,
            "min_area": int,
            "min_confidence": float,
            "stain_smoothing": float,
            "stain_sharpness": float,
            "fragments_ratio": float,
            "fragments_count": int,
            "fragments_solidity": float,
            "shrink_above": float,
            "shrink_margin": float,
            "fragments_by_confidence": bool,
        }
        known = {f.name for f in fields(cls)}
        try:
            given = {k: (types[k](v) if k in types else v) for k, v in values.items() if k in known}
        except (TypeError, ValueError) as exc:
            raise InputError(f"the model's inference settings are malformed ({exc})") from None
        scale = given.get("scale", 1.0)
        if scale != "auto":
            try:
                given["scale"] = float(scale)
            except (TypeError, ValueError):
                raise InputError(f"the model's inference scale must be 'auto' or a number, not {scale!r}") from None
        check_tta_views(given.get("tta_views", cls.tta_views), "the model's tta_views")
        check_min_confidence(given.get("min_confidence", cls.min_confidence), "the model's min_confidence")
        check_smoothing(given.get("stain_smoothing", cls.stain_smoothing), "the model's stain_smoothing")
        return cls(**given)

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)
