"""``--model auto``: each image goes to the shipped model of its kind. A model's card says which
kinds of image it is for (``route``: kinds of :func:`attention_unet.io.data.modality`); an image of
a kind no card claims, or one that cannot be classified, goes to the default model."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..io import data
from .pipeline import Predictor

AUTO = "auto"


@dataclass
class ModelChoice:
    """Predictors by model name, loaded on first use, and the rule that picks one per image."""

    load: Callable[[str], Predictor]
    routes: dict[str, str]  # image kind -> model name
    default: str
    loaded: dict[str, Predictor] = field(default_factory=dict)
    # images of a batch are predicted side by side (commands.jobs): a model is loaded once
    _loading: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return AUTO

    @property
    def settings(self) -> Any:
        """The default model's settings (what options are checked against before any image)."""
        return self.for_default().settings

    def for_diameter(self, diameter: float) -> Predictor:
        """The default model at this diameter (what a bad diameter is checked against before any image)."""
        return self.for_default().for_diameter(diameter)

    def for_default(self) -> Predictor:
        return self.named(self.default)

    def named(self, name: str) -> Predictor:
        """The predictor of the model ``name``, loaded on first use."""
        with self._loading:
            if name not in self.loaded:
                self.loaded[name] = self.load(name)
            return self.loaded[name]

    def name_for(self, image: np.ndarray) -> str:
        """The model for an image of this kind (the default for a kind no model claims)."""
        try:
            kind = data.modality(image)
        except (ValueError, TypeError) as exc:  # an array modality cannot read: stated, never a crash
            print(f"note: image kind unknown ({exc}); using model {self.default}", file=sys.stderr)
            return self.default
        return self.routes.get(kind, self.default)

    def for_image(self, image: np.ndarray) -> Predictor:
        return self.named(self.name_for(image))
