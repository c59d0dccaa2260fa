"""Inference-ready models: BatchNorm folded into convolutions, ONNX and TorchScript export, and int8
quantisation of the ONNX graph (predict reads and runs ONNX files with :mod:`.runtime`)."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from .files import load_model, pretrained_path
from .network import AttentionUNet
from .runtime import edge_padded, onnx_info


def fold_batchnorm(model: AttentionUNet) -> AttentionUNet:
    """A copy in eval mode with every Conv2d -> BatchNorm2d pair fused into one convolution
    (the same function with fewer operations and memory passes)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (name, conv), (bn_name, bn) in itertools.pairwise(children):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    setattr(module, name, fuse_conv_bn_eval(conv, bn))
                    setattr(module, bn_name, nn.Identity())
    return fused


@contextlib.contextmanager
def quiet_trace() -> Iterator[None]:
    """Tracing without torch's TracerWarnings about the padding in AttentionUNet._run: the traced
    graph always pads, by reflection, as that code says it will, and :func:`edge_padded` gives it
    the inputs that reflection cannot pad. The warnings told a user nothing they could act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to, renamed onto ``path`` only when the block ends
    without error: a run killed mid-write leaves the previous model whole."""
    temporary = path.with_name(f".partial-{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_onnx(model: AttentionUNet, path: str | Path, opset: int = 17) -> Path:
    """ONNX graph of the folded model (dynamic batch, height and width; outputs logits), with the
    model's metadata (config, training options) in the graph's ``attention_unet`` property."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        _write_onnx(model, temporary, opset)
    return path


def _write_onnx(model: AttentionUNet, path: Path, opset: int) -> None:
    import onnx

    example = torch.randn(1, model.config.in_channels, 64, 64)
    with quiet_trace():
        torch.onnx.export(
            fold_batchnorm(model),
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "logits": {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=opset,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    info = getattr(model, "info", {"model": dataclasses.asdict(model.config)})
    onnx.helper.set_model_props(graph, {"attention_unet": json.dumps(info)})
    onnx.save(graph, str(path))


def calibration_tiles(
    images: list[np.ndarray], norm: str, *, multiple: int = 1, size: int = 256, limit: int = 32
) -> list[np.ndarray]:
    """1 x 3 x h x w float32 tiles for int8 calibration: the centre (up to size x size, at native
    resolution, as predict sees it) of up to ``limit`` images, normalised as the model expects,
    padded for a graph of depth log2(``multiple``) as predict's runner pads them (:func:`edge_padded`;
    a 1 x 1 image had failed)."""
    from ..io import data

    tiles = []
    for image in images[:limit]:
        h, w = image.shape[:2]
        y, x = max(0, (h - size) // 2), max(0, (w - size) // 2)
        crop = data.normalise(image[y : y + size, x : x + size], norm, data.normalisation_range(image, norm))
        tiles.append(np.ascontiguousarray(edge_padded(crop.transpose(2, 0, 1)[None], multiple)))
    return tiles


QUANTISED_OPS = ("Conv", "Concat", "Mul", "Relu")  # which operators quantize_onnx runs in int8


def quantize_onnx(source: str | Path, target: str | Path, tiles: list[np.ndarray]) -> Path:
    """Statically quantised int8 copy of an exported ONNX model (QDQ, per-channel int8 weights,
    uint8 activations with ranges calibrated on ``tiles``), keeping the model's metadata. ONNX
    Runtime then runs the convolutions as integer kernels, 2-3x faster than fp32 on AVX2.

    Convolutions, concatenations and the gates' products are quantised (so the skip and upsampled
    paths meet as uint8 instead of through a dequantise-concatenate-quantise round trip: 12-15%
    faster on the shipped model, F1 unchanged on valid), and so are the ReLUs: each is dropped into
    its convolution's uint8 output range (zero point 0), instead of running in fp32 between a
    dequantise and a quantise (BENCHMARKS.md, "Quantised ReLUs"); but not the first convolution (the
    normalised image in) nor the head (the logits out): quantising those two cost the shipped model
    0.074 F1 on TNBC's valid slide (0.716 fp32 -> 0.642), keeping them in fp32 0.001 (0.715), for a
    few percent of the FLOPs (BENCHMARKS.md)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not tiles:
        raise InputError("int8 export needs at least one calibration image")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.tiles = iter(tiles)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tile = next(self.tiles, None)
            return None if tile is None else {"image": tile}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = str(Path(tmp) / "prepared.onnx")  # constant-folded, so biases are initialisers
        quant_pre_process(str(source), prepared, skip_symbolic_shape=True)
        convolutions = [n.name for n in onnx.load(prepared).graph.node if n.op_type == "Conv"]
        quantized = str(Path(tmp) / "quantized.onnx")
        quantize_static(
            prepared,
            quantized,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_exclude=[convolutions[0], convolutions[-1]],
        )
        graph = onnx.load(quantized)
    onnx.helper.set_model_props(graph, {"attention_unet": json.dumps(onnx_info(source))})
    with replacing(Path(target)) as temporary:
        onnx.save(graph, str(temporary))
    return Path(target)


TORCHSCRIPT_INFO = "attention_unet.json"  # the model's metadata, an extra file of the TorchScript archive


def exported_here(path: Path, kind: str) -> bool:
    """Whether ``path`` is a model that attention-unet exported (so export may replace it): an
    ONNX file with its metadata, or a TorchScript archive with its extra file (read from the zip's
    listing, nothing loaded)."""
    import zipfile

    if kind == "onnx":
        try:
            onnx_info(path)
        except InputError:
            return False
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(f"/extra/{TORCHSCRIPT_INFO}") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def export(
    model: str | None = None,
    *,
    onnx: str | None = None,
    torchscript: str | None = None,
    int8: bool = False,
    calibrate: list[str] | None = None,
) -> int:
    """Write the model (None: the shipped one) as ONNX (and an int8 ONNX calibrated on the images
    in ``calibrate``, default the embedded sample) and/or TorchScript."""
    if not (onnx or torchscript):
        raise InputError("give --onnx PATH, --torchscript PATH and/or --bioimageio ZIP")
    network = load_model(model or pretrained_path())
    targets = [(Path(onnx), "onnx")] if onnx else []
    targets += [(Path(onnx).with_suffix(".int8.onnx"), "onnx")] if onnx and int8 else []
    targets += [(Path(torchscript), "torchscript")] if torchscript else []
    for target, kind in targets:  # all checked before any is written
        if target.is_dir():
            raise InputError(f"{target}: is a folder; give the file to write")
        if target.exists() and not exported_here(target, kind):
            raise InputError(
                f"{target}: exists and is no model attention-unet exported; not replacing it (choose another path)"
            )
    if int8 and onnx:  # read before anything is written: no calibration image, no files
        from ..io import data
        from ..io.images import calibration_images

        images = calibration_images(calibrate or [str(data.SAMPLE_DIR / "images")])
    for target, _ in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    if onnx:
        path = export_onnx(network, onnx)
        print(f"wrote {path}", file=sys.stderr)
        if int8:
            norm = network.info.get("train", {}).get("norm", "fixed")
            tiles = calibration_tiles(images, norm, multiple=2**network.config.depth)
            q = quantize_onnx(path, Path(onnx).with_suffix(".int8.onnx"), tiles)
            print(f"wrote {q} (calibrated on {len(tiles)} image(s))", file=sys.stderr)
    if torchscript:
        export_torchscript(network, Path(torchscript))
        print(f"wrote {torchscript}", file=sys.stderr)
    return 0


def export_torchscript(network: AttentionUNet, path: Path) -> Path:
    """A traced TorchScript archive of the folded model (outputs logits), the model's metadata an
    extra file in it; written beside ``path`` and renamed onto it when whole."""
    with quiet_trace():
        scripted = torch.jit.trace(fold_batchnorm(network), torch.randn(1, network.config.in_channels, 64, 64))
    with replacing(path) as temporary:
        scripted.save(str(temporary), _extra_files={TORCHSCRIPT_INFO: json.dumps(network.info)})
    return path


def __getattr__(name: str) -> Any:
    """``onnx_runner`` moved to :mod:`.runtime` (no torch there); the old name works for one release."""
    if name == "onnx_runner":
        from . import runtime

        warnings.warn(
            "attention_unet.model.export.onnx_runner is deprecated: use attention_unet.model.runtime.onnx_runner",
            DeprecationWarning,
            stacklevel=2,
        )
        return runtime.onnx_runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
