"""Inference-ready models: BatchNorm folded into convolutions, ONNX and TorchScript export, and an
ONNX Runtime runner for ``predict --engine onnx``."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

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
    """ONNX graph of the folded model with dynamic batch, height and width; outputs logits."""
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
    return path


def quantize_onnx(source: str | Path, target: str | Path) -> Path:
    """Dynamically quantised (int8 weights) copy of an ONNX model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return Path(target)


def onnx_runner(path: str | Path):
    """ONNX Runtime session as a predict runner. Accepts an .onnx file, or a model whose ONNX
    export is made on the fly (kept in memory)."""
    import onnxruntime as ort

    path = Path(path)
    if path.suffix == ".onnx":
        source: str | bytes = str(path)
    else:
        import io

        buffer = io.BytesIO()
        export_onnx(load_model(path), buffer)  # type: ignore[arg-type]
        source = buffer.getvalue()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        logits = session.run(None, {"image": batch.astype(np.float32)})[0]
        return 1.0 / (1.0 + np.exp(-logits[:, 0])), []

    return run


def export_command(args) -> int:
    from .errors import InputError

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
