"""Inference-ready models: BatchNorm folded into convolutions, ONNX and TorchScript export, and an
ONNX Runtime runner for ``predict --engine onnx``."""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .errors import InputError
from .model import AttentionUNet, load_model, pretrained_path


def fold_batchnorm(model: AttentionUNet) -> AttentionUNet:
    """A copy in eval mode with every Conv2d -> BatchNorm2d pair fused into one convolution
    (the same function with fewer operations and memory passes)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name, conv), (bn_name, bn) in zip(children, children[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(module, name, fuse_conv_bn_eval(conv, bn))
                    setattr(module, bn_name, nn.Identity())
    return fused


def export_onnx(model: AttentionUNet, path: str | Path, opset: int = 17) -> Path:
    """ONNX graph of the folded model (dynamic batch, height and width; outputs logits), with the
    model's metadata (config, training options) in the graph's ``attention_unet`` property."""
    import json

    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, model.config.in_channels, 64, 64)
    torch.onnx.export(
        fold_batchnorm(model),
        (example,),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
        opset_version=opset,
        dynamo=False,
    )
    graph = onnx.load(str(path))
    info = getattr(model, "info", {"model": dataclasses.asdict(model.config)})
    onnx.helper.set_model_props(graph, {"attention_unet": json.dumps(info)})
    onnx.save(graph, str(path))
    return path


def onnx_info(path: str | Path) -> dict:
    """The attention-unet metadata stored in an exported ONNX file."""
    import json

    import onnx

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if "attention_unet" not in props:
        raise InputError(f"{path}: not an ONNX model exported by attention-unet (no metadata)")
    return json.loads(props["attention_unet"])


def quantize_onnx(source: str | Path, target: str | Path) -> Path:
    """Dynamically quantised (int8 weights) copy of an ONNX model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


def onnx_runner(path: str | Path) -> Callable[[np.ndarray], tuple[np.ndarray, list[np.ndarray]]]:
    """An ONNX Runtime session on an exported .onnx file, as a predict runner."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        logits = session.run(None, {"image": batch.astype(np.float32, copy=False)})[0]
        return 1.0 / (1.0 + np.exp(-logits)), []

    return run


def export_command(args) -> int:
    if not (args.onnx or args.torchscript):
        raise InputError("give --onnx PATH and/or --torchscript PATH")
    model = load_model(args.model or pretrained_path())
    if args.onnx:
        path = export_onnx(model, args.onnx)
        print(f"wrote {path}", file=sys.stderr)
        if args.int8:
            q = quantize_onnx(path, Path(args.onnx).with_suffix(".int8.onnx"))
            print(f"wrote {q}", file=sys.stderr)
    if args.torchscript:
        scripted = torch.jit.trace(fold_batchnorm(model), torch.randn(1, model.config.in_channels, 64, 64))
        scripted.save(args.torchscript)
        print(f"wrote {args.torchscript}", file=sys.stderr)
    return 0
