"""One image through inference: plan (:mod:`.plan`), tiles (:mod:`.tiles`), decode (:mod:`.decode`).
Whole images and block-wise prediction take the same :class:`~.plan.Plan`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np

from .. import allocator
from ..io import data
from ..settings import InferenceSettings, check_smoothing
from .decode import OUTPUTS, Decoder
from .plan import Network, Plan, Predicted, ScalePolicy, StainPolicy, choose
from .tiles import Runner, SharedTiles, Tiling, rescaled, sliding_window


@dataclass(frozen=True)
class Predictor:
    """A model's runner with its normalisation (``norm``), inference ``settings`` and ``tiling``;
    ``outputs`` names its channels; ``smoothing`` (a Gaussian sigma) replaces the stain policy."""

    run: Runner
    norm: str = "fixed"
    settings: InferenceSettings = field(default_factory=InferenceSettings)
    tiling: Tiling = field(default_factory=Tiling)
    outputs: tuple[str, ...] = OUTPUTS
    smoothing: float | None = None
    scale_policy: ScalePolicy | None = None  # its ranges (None: the defaults); its settings are always ``settings``
    name: str = ""  # the model's name in the zoo, else its path (summary.csv's model column)
    decoded: dict | None = field(default=None, compare=False, repr=False)  # Decoder.decoded, in :func:`segment_image`

    def __post_init__(self) -> None:
        if self.smoothing is not None:
            check_smoothing(self.smoothing, "smoothing")

    @property
    def decoder(self) -> Decoder:
        return Decoder(self.settings, self.outputs, self.decoded)

    @property
    def policy(self) -> ScalePolicy:
        if self.scale_policy is None:
            return ScalePolicy(self.settings)
        return replace(self.scale_policy, settings=self.settings)  # its own ranges, the current settings

    @property
    def stain(self) -> StainPolicy:
        return StainPolicy(self.settings, self.norm)

    def for_image(self, image: np.ndarray) -> Predictor:
        """The predictor for this image: this one (:class:`.choice.ModelChoice` picks among several)."""
        return self

    def with_settings(self, **changes: Any) -> Predictor:
        """The same model with some inference settings changed (``scale``, ``tta``, ...; None keeps one)."""
        settings = self.settings.changed(**changes)
        return replace(self, settings=settings) if settings != self.settings else self

    def for_diameter(self, diameter: float) -> Predictor:
        """The same model at the scale that brings nuclei of ``diameter`` pixels to the size it learnt."""
        return self.with_settings(scale=self.policy.scale_for(diameter))

    def probability(self, image: np.ndarray) -> np.ndarray:
        """H x W float32 foreground probability of an H x W x 3 image."""
        return self.probabilities(image)[0][0]

    def probabilities(
        self, image: np.ndarray, *, value_range: tuple[float, float] | None = None, plan: Plan | None = None
    ) -> Predicted:
        """(C x H x W float32 probabilities: foreground, then contours for a contour model; the
        gates' maps when the runner returns them), by ``plan`` or the one the policies choose.
        ``value_range`` is the normalisation range (default: the image's own; a block of a larger
        image takes the whole image's). A fluorescence image in one colour is predicted as the grey
        image of that colour's channel (:func:`data.signal_channel`)."""
        return self.planned(image, value_range=value_range, plan=plan)[1]

    def planned(
        self, image: np.ndarray, *, value_range: tuple[float, float] | None = None, plan: Plan | None = None
    ) -> tuple[Plan, Predicted]:
        """The plan the image was predicted by (its factor within ``max_pixels``; the nucleus
        diameter where auto scale measured one) and :meth:`probabilities`."""
        if value_range is None and (channel := data.signal_channel(image)) is not None:
            image = np.repeat(image[..., channel : channel + 1], 3, axis=2)  # the grey the network learnt
        value_range = value_range or data.normalisation_range(image, self.norm)
        with allocator.kept():  # the tiles' activations reuse one another's memory
            cap = self.policy.cap(*image.shape[:2])
            if plan is not None:
                plan = replace(plan, factor=min(plan.factor, cap))
                return plan, self.predicted_at(image, value_range, plan.factor, plan.diameter, plan.smoothing)
            factor, diameter, large = self.policy.sizing(image, self.network(value_range))
            return self.choose(image, value_range, (min(factor, cap), diameter, large))

    def labels(self, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Instance labels from :meth:`probabilities`' output (:class:`.decode.Decoder`)."""
        return self.decoder.labels(probs, threshold)

    def window_probabilities(
        self,
        window: np.ndarray,
        *,
        value_range: tuple[float, float],
        origins: list[tuple[int, int]],
        tile_shape: tuple[int, int],
        sigma: float = 0.0,
        shared: tuple[SharedTiles, tuple[int, int]] | None = None,
    ) -> np.ndarray:
        """C x h x w probabilities of a window of a larger image at scale 1 from the whole image's
        tiles at ``origins`` (relative to the window): bit for bit the whole image's pixels.
        ``shared``: tiles other windows run, and the window's origin (:class:`.tiles.SharedTiles`)."""
        with allocator.kept():
            grid = {"origins": origins, "tile_shape": tile_shape, "shared": shared}
            return self._tiles(window, value_range, sigma, **grid)[0]

    def predicted_at(
        self,
        image: np.ndarray,
        value_range: tuple[float, float],
        factor: float,
        diameter: float | None,
        smoothing: float | None = None,
    ) -> Predicted:
        """:meth:`probabilities` of the image predicted at ``factor``, at the image's size."""
        height, width = image.shape[:2]
        scaled = rescaled(image, factor)
        sigma = smoothing if smoothing is not None else self.sigma(scaled, value_range, diameter, factor)
        prob, gates = self._tiles(scaled, value_range, sigma)
        if scaled is image:
            return prob, gates
        return np.stack([data.resize(c, (height, width)) for c in prob]), [
            data.resize(g, (height, width)) for g in gates
        ]

    def choose(
        self, image: np.ndarray, value_range: tuple[float, float], sizing: tuple[float, float | None, float | None]
    ) -> tuple[Plan, Predicted]:
        """:func:`.plan.choose` for this image: the surest of the policy's candidates from ``sizing``."""

        def predict_at(factor: float, diameter: float | None) -> Predicted:
            return self.predicted_at(image, value_range, factor, diameter, self.smoothing)

        return choose(self.policy, sizing, predict_at, self.decoder.confidence)

    def sigma(
        self, scaled: np.ndarray, value_range: tuple[float, float], diameter: float | None, factor: float
    ) -> float:
        """The Gaussian sigma of the tiles of ``scaled`` (the image at ``factor``): ``smoothing``
        where given, else the stain policy's for nuclei of ``diameter`` image pixels."""
        if self.smoothing is not None:
            return self.smoothing
        at_network = diameter * factor if diameter is not None else None
        return self.stain.sigma(scaled, value_range, at_network)

    def network(self, value_range: tuple[float, float]) -> Network:
        """The network as the policies call it: (image, sigma, views on) -> probabilities."""

        def network(image: np.ndarray, sigma: float, views: bool) -> Predicted:
            return self._tiles(image, value_range, sigma, views=views)

        return network

    def _tiles(
        self, image: np.ndarray, value_range: tuple[float, float], sigma: float, *, views: bool = True, **grid: Any
    ) -> Predicted:
        chosen = self.settings.views if views else None
        grid |= {"tiling": self.tiling, "norm": self.norm, "value_range": value_range, "views": chosen}
        return sliding_window(image, self.run, sigma=sigma, **grid)


def mosaic_plan(predictor: Predictor, image: np.ndarray, value_range: tuple[float, float]) -> Plan:
    """The plan an image (a block-wise prediction's mosaic) gets, with its smoothing decided;
    predicting candidates only where the policy has more than one."""
    factor, diameter, large = predictor.policy.sizing(image, predictor.network(value_range))
    if predictor.policy.tries_smaller(factor, diameter) or large is not None:
        chosen = predictor.choose(image, value_range, (factor, diameter, large))[0]
        factor, diameter = chosen.factor, chosen.diameter
    return Plan(factor, diameter, predictor.sigma(rescaled(image, factor), value_range, diameter, factor))


def make_predictor(run: Runner, norm: str = "fixed", **knobs: Any) -> Predictor:
    """A :class:`Predictor` from keywords of :class:`~attention_unet.settings.InferenceSettings`,
    :class:`~.tiles.Tiling`, :class:`~.plan.ScalePolicy` and :class:`Predictor` itself, each routed
    to its home by name (tests, tools and benchmarks build stand-in predictors this way)."""
    homes = {cls: {f.name for f in fields(cls)} - {"settings"} for cls in (InferenceSettings, Tiling, ScalePolicy)}
    parts = {cls: {k: v for k, v in knobs.items() if k in names} for cls, names in homes.items()}
    own = {k: v for k, v in knobs.items() if not any(k in names for names in homes.values())}
    settings = InferenceSettings(**parts[InferenceSettings])
    policy = ScalePolicy(settings, **parts[ScalePolicy]) if parts[ScalePolicy] else None
    return Predictor(run, norm, settings, Tiling(**parts[Tiling]), scale_policy=policy, **own)


class Segmented(NamedTuple):
    """An image segmented (:func:`segment_image`): its probabilities, the gates' maps, its instance
    labels, and the plan it was predicted by (the scale, and the nucleus diameter auto scale measured)."""

    probs: np.ndarray
    gates: list[np.ndarray]
    labels: np.ndarray
    plan: Plan


def segment_image(predictor: Predictor, image: np.ndarray, threshold: float = 0.5) -> Segmented:
    """An image segmented by a predictor (what predict, evaluate and Segmenter take): the labels of
    the scale auto scale kept are those it decoded to compare its candidates, not decoded again."""
    decoded: dict = {}
    remembering = replace(predictor, decoded=decoded)
    plan, (probs, gates) = remembering.planned(image)
    labels = remembering.labels(probs, threshold)
    decoded.clear()  # not held while the caller writes its outputs
    return Segmented(probs, gates, labels, plan)
