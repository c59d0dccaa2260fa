"""How a model turns images into nuclei: the inference settings, with their defaults in this one
place. A shipped or fine-tuned model carries its own (tuned on valid, tools/tune_instances.py) in
its metadata under ``inference``; ``predict``, ``evaluate`` and :class:`Segmenter` start from them.
Auto scale's procedure is not a setting: its numbers are :class:`~attention_unet.inference.plan.ScalePolicy`'s,
the same for every model (older model files that list some of them load as before, those keys unread)."""

from __future__ import annotations

import math
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any

from .errors import InputError

# how a model's input is mapped to 0..1 (data.normalisation_range), recorded with its training options
NORMALISATIONS = ("fixed", "percentile", "polarity", "stain")

# The views test-time augmentation averages, as (quarter turns, then mirrored left-right); each
# set a group, so that every orientation's counterpart is in it. 2 views: the image and its mirror
# across the anti-diagonal (on valid, docs/experiments, they gave more than the image and its vertical mirror).
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


def _user(default: Any, help: str, **flag: Any) -> Any:
    """A setting users override per run: its default, and its help (and argparse options) as metadata."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class InferenceSettings:
    """Scale, test-time augmentation and the instance step's parameters.

    >>> InferenceSettings.from_metadata({"scale": "auto", "h": 2}).h
    2.0
    >>> InferenceSettings.from_metadata(InferenceSettings(tta=True).to_metadata()) == InferenceSettings(tta=True)
    True
    """

    # the settings a user overrides per run (the command line's flags, Segmenter.segment's keywords)
    # are declared with _user: their help text, from which cli.py builds their flags
    tta: bool = _user(False, "average over flipped and turned views; default: the model's own setting")
    tta_views: int = _user(
        8,
        "how many views test-time augmentation averages: 2 (as is, mirrored diagonally), 4 (mirrored) or 8 "
        "(all flips and turns); default: the model's own setting",
        choices=sorted(TTA_VIEWS),
    )
    scale: float | str = _user(
        1.0,
        "rescale images before inference: 'auto' (to the nucleus size the model learnt) or a factor; "
        "default: the model's own recommendation, else 1",
    )
    target_diameter: float = 16.0  # the nucleus size (px) the model learnt best
    contours: bool = True  # a contour output shapes the instance watershed
    distances: bool = False  # a distance output is the watershed's relief (h then in its 0..1 units)
    contour_threshold: float = 0.5  # contour probability from which a pixel counts as a border
    h: float = 1.0  # watershed seed depth (h-maxima)
    min_area: int = 8  # smaller instances are dropped (pixels)
    min_confidence: float = _user(
        0.0,
        "drop instances whose mean foreground probability is below P (0: keep every one); "
        "default: the model's own setting (its card: attention-unet models)",
        metavar="P",
    )
    # stained tissue (colour, bright background) sharper than the stained images the model learnt
    # from most is smoothed before the network (a Gaussian of this sigma, px; 0: off), where
    # sharper means a median |Laplacian| of the normalised image above stain_sharpness (docs/experiments)
    stain_smoothing: float = 0.0
    stain_sharpness: float = 0.025

    def __post_init__(self) -> None:
        check_tta_views(self.tta_views, "tta_views")

    @property
    def views(self) -> tuple[tuple[int, bool], ...] | None:
        """The views the network averages (quarter turns, mirrored); None: the image as it is."""
        return TTA_VIEWS[self.tta_views] if self.tta else None

    @classmethod
    def from_metadata(cls, values: Any) -> InferenceSettings:
        """The settings a model's metadata records (missing keys take the defaults), each checked
        for its type (from the field) and range (:data:`RANGES`): a damaged or hostile model file is
        one line, never a hang, a crash or a silently different setting (``tta: "false"``)."""
        if not isinstance(values, dict):
            raise InputError(f"the model's inference settings must be a mapping, not {type(values).__name__}")
        kinds = {f.name: f.type for f in fields(cls)}
        given = {k: _checked(k, v, kinds[k]) for k, v in values.items() if k in kinds}
        return cls(**given)

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self, **changes: Any) -> InferenceSettings:
        """These settings with some replaced (None keeps one), each checked as a model's metadata is;
        an error starts with the parameter's name (``min_confidence must be ...``)."""
        given = {k: v for k, v in changes.items() if v is not None}
        kinds = {f.name: f.type for f in fields(self)}
        unknown = set(given) - set(kinds)
        if unknown:
            raise TypeError(f"unknown inference settings: {', '.join(sorted(unknown))}")
        return replace(self, **{k: _checked(k, v, kinds[k], k) for k, v in given.items()}) if given else self


# each number's range in a model's metadata (inclusive); contour_threshold and min_confidence have their own checks
RANGES: dict[str, tuple[float, float]] = {
    "target_diameter": (1.0, 1000.0),
    "h": (0.0, 1000.0),
    "min_area": (0, 10_000_000),
    "stain_sharpness": (0.0, 10.0),
}
MAX_SCALE = 8.0  # a larger factor multiplies the work by its square for no nucleus size the model serves


def _scale_number(value: Any, what: str) -> Any:
    """A scale given as text ("0.5", from a command line) as its number; 'auto' is handled before."""
    if not isinstance(value, str):
        return value
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"{what} must be 'auto' or a positive number, not '{value}'", "scale") from None
    if not 0 < number <= MAX_SCALE:
        raise InputError(f"{what} must be 'auto' or a number above 0 and at most {MAX_SCALE:g}, not '{value}'", "scale")
    return number


def _checked(name: str, value: Any, kind: str, what: str = "") -> Any:
    """One value, of its field's type and in its range, or one line naming it (``what``: how; by
    default as a model's metadata setting)."""
    what = what or f"the model's inference setting {name}"
    if name == "scale":
        if value == "auto":
            return value
        kind, value = "float", _scale_number(value, what)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InputError(f"{what} must be true or false, not {value!r}", name)
        return value
    if kind == "int" and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)  # 16.0 from a JSON writer that keeps every number as a float
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and not isinstance(value, int)):
        raise InputError(f"{what} must be {'a whole number' if kind == 'int' else 'a number'}, not {value!r}", name)
    low, high = (1e-3, MAX_SCALE) if name == "scale" else RANGES.get(name, (-math.inf, math.inf))
    if not (low <= value <= high):  # also refuses NaN and infinity
        raise InputError(f"{what} must lie between {low:g} and {high:g}, not {str(value)[:24]}", name)
    checks = {"tta_views": check_tta_views, "min_confidence": check_min_confidence, "stain_smoothing": check_smoothing}
    checks.get(name, lambda v, w: None)(value, what)
    if name == "contour_threshold":
        check_threshold(value, what)
    return float(value) if kind == "float" else value


def user_settings() -> tuple[Field[Any], ...]:
    """The settings users override per run (the command line's flags, Segmenter.segment's keywords)."""
    return tuple(f for f in fields(InferenceSettings) if "help" in f.metadata)
