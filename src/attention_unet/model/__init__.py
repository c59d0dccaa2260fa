"""The network (:mod:`.network`), its files (:mod:`.files`), export to ONNX and TorchScript
(:mod:`.export`) and the shipped models (:mod:`.zoo`)."""

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
from .network import MAX_DEPTH, MAX_WIDTH, PRESETS, AttentionUNet, ModelConfig, count_parameters, upsample_conv

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
