"""The network (:mod:`.network`), its config (:mod:`.config`), its files (:mod:`.files`), export to
ONNX and TorchScript (:mod:`.export`), ONNX files read and run (:mod:`.runtime`) and the shipped
models (:mod:`.zoo`). The network's names are imported on first use, so that reading a model's
metadata or running its ONNX graph (predict's default engine) never imports torch."""

from __future__ import annotations

import importlib
from typing import Any

from .config import MAX_DEPTH, MAX_WIDTH, PRESETS, ModelConfig
from .files import (
    CONFIG_NAME,
    NOT_WEIGHTS,
    WEIGHTS_NAME,
    _resolve_weights,
    check_weights,
    load_model,
    pretrained_path,
    read_model_info,
    save_model,
)

_NETWORK = ("AttentionUNet", "count_parameters", "upsample_conv")

__all__ = [
    "CONFIG_NAME",
    "MAX_DEPTH",
    "MAX_WIDTH",
    "NOT_WEIGHTS",
    "PRESETS",
    "WEIGHTS_NAME",
    "AttentionUNet",
    "ModelConfig",
    "_resolve_weights",
    "check_weights",
    "count_parameters",
    "load_model",
    "pretrained_path",
    "read_model_info",
    "save_model",
    "upsample_conv",
]


def __getattr__(name: str) -> Any:
    if name in _NETWORK:
        return getattr(importlib.import_module(f"{__name__}.network"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
