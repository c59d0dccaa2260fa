"""Deprecated: the sliding-window engine moved into :mod:`attention_unet.inference` (tiles,
plan, decode, pipeline, engine). The old names still work for one release, with a warning."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = {
    "Runner": "tiles",
    "tile_starts": "tiles",
    "gaussian_weights": "tiles",
    "rescaled": "tiles",
    "diameter_of_area": "plan",
    "size_statistics": "plan",
    "sizes_of": "plan",
    "large_solidity": "plan",
    "factor_for_diameter": "plan",
    "torch_runner": "engine",
    "Predictor": "pipeline",
}


def _legacy_predictor(run: Any, norm: str = "fixed", tile: int = 512, batch_size: int = 4, *a: Any, **kw: Any) -> Any:
    """The old ``Predictor(run, norm, tile, batch_size, tta, tta_views, scale=None (auto), ...)``."""
    from .inference.pipeline import make_predictor

    kw.update(zip(("tta", "tta_views"), a))
    if "scale" in kw and kw["scale"] is None:
        kw["scale"] = "auto"
    return make_predictor(run, norm, tile=tile, batch_size=batch_size, **kw)


def __getattr__(name: str) -> Any:
    if name not in _MOVED:
        raise AttributeError(f"module 'attention_unet.tiling' has no attribute {name!r}")
    home = f"attention_unet.inference.{_MOVED[name]}"
    warnings.warn(f"attention_unet.tiling.{name} is deprecated: use {home}", DeprecationWarning, stacklevel=2)
    if name == "Predictor":
        return _legacy_predictor
    return getattr(importlib.import_module(home), name)
