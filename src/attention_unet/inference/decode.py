"""Probabilities to instances: the model's instance settings applied to :mod:`.tiles`' output,
and the confidence of the instances found (what the scale policy compares)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ..instances import instances, mean_probability
from ..settings import InferenceSettings

OUTPUTS = ("mask", "contour", "distance")  # what a model's output channels can hold, in this order


@dataclass(frozen=True)
class Decoder:
    """Instance labels from C x H x W probabilities, by ``settings`` (contours, distances,
    contour_threshold, h, min_area, min_confidence); ``outputs`` names the channels."""

    settings: InferenceSettings = field(default_factory=InferenceSettings)
    outputs: tuple[str, ...] = OUTPUTS
    # where given: the instances decoded so far, by (id of the probabilities, threshold), each
    # forgotten when its probabilities are (a candidate scale's confidence, then its labels)
    decoded: dict[tuple[int, float], np.ndarray] | None = field(default=None, compare=False, repr=False)

    def labels(self, probs: np.ndarray, threshold: float = 0.5, *, keep_weak: bool = False) -> np.ndarray:
        """Instance labels, using the contour and distance outputs where the model has them and the
        settings ask for them; ``keep_weak`` keeps the instances min_confidence would drop."""
        key = (id(probs), threshold)
        labels = self.decoded.get(key) if self.decoded is not None else None
        if labels is None:
            labels = self._instances(probs, threshold)
            if self.decoded is not None:
                self.decoded[key] = labels
                weakref.finalize(probs, self.decoded.pop, key, None)
        return labels if keep_weak or self.settings.min_confidence <= 0 else self._without_weak(probs[0], labels)

    def _instances(self, probs: np.ndarray, threshold: float) -> np.ndarray:
        s = self.settings
        return instances(
            probs[0],
            contour=self._output(probs, "contour", s.contours),
            threshold=threshold,
            min_area=s.min_area,
            h=s.h,
            contour_threshold=s.contour_threshold,
            distance=self._output(probs, "distance", s.distances),
        )

    def confidence(self, probs: np.ndarray) -> float:
        """The mean over the instances (none dropped for weakness) of each one's mean foreground
        probability; 0 when there are none."""
        return mean_probability(probs[0], self.labels(probs, keep_weak=True))

    def _without_weak(self, prob: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The labels without the instances whose mean foreground probability is below
        min_confidence (weak detections: on H&E most are tissue texture, not nuclei), the rest
        numbered 1..n in their order."""
        count = int(labels.max())
        means = np.asarray(ndimage.mean(prob, labels, np.arange(1, count + 1)))
        numbering = np.zeros(count + 1, labels.dtype)  # old label -> new (0: dropped)
        kept = np.flatnonzero(means >= self.settings.min_confidence) + 1
        numbering[kept] = np.arange(1, kept.size + 1)
        return numbering[labels]

    def _output(self, probs: np.ndarray, name: str, wanted: bool) -> np.ndarray | None:
        return probs[self.outputs.index(name)] if wanted and name in self.outputs[: len(probs)] else None
