"""Opening a model into something that predicts: a model file, folder or run folder (or the
shipped model) becomes a :data:`~.tiles.Runner` on torch or ONNX Runtime, with the model's
normalisation, outputs and inference settings, as a :class:`~.pipeline.Predictor`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..model import zoo
from ..settings import InferenceSettings, check_smoothing
from .choice import AUTO, ModelChoice
from .decode import OUTPUTS
from .pipeline import Predictor
from .tiles import Runner, Tiling

ENGINES = ("auto", "torch", "onnx")


def torch_runner(model: Any, device: str = "cpu", attention: bool = False) -> Runner:
    """Wrap a model as a function: float32 NCHW batch -> (probabilities N x C x H x W, gate maps N x H x W)."""
    import torch
    import torch.nn.functional as F

    model = model.to(device).eval()

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(device).contiguous(memory_format=torch.channels_last)
            if not attention:
                return torch.sigmoid(model(x)).float().cpu().numpy(), []
            logits, maps = model.forward_with_attention(x)
            size = x.shape[-2:]
            maps = [
                F.interpolate(m.mean(1, keepdim=True), size=size, mode="bilinear")[:, 0].cpu().numpy() for m in maps
            ]
            return torch.sigmoid(logits).float().cpu().numpy(), maps

    return run


def check_device(device: str) -> None:
    """One line when ``device`` does not exist here (e.g. cuda on a CPU-only torch)."""
    if device == "cpu":
        return  # always there; checked without importing torch (the ONNX engine runs without it)
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InputError(f"device {device}: not a device name (cpu, cuda, cuda:1, mps)", "device") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}.get(
        kind, False
    )
    if not available:
        raise InputError(
            f"device {device}: not available on this machine (torch {torch.__version__} sees no {kind})", "device"
        )


def shipped_int8(weights: Path | None = None) -> tuple[Runner, dict] | None:
    """A shipped model's int8 ONNX (tools/ship_model.py writes it beside the weights; default: the
    default model's) as a runner and its metadata, when it was quantised from the weights shipped
    now (their sha256 in its metadata)."""
    import hashlib
    import importlib.util

    from ..model import pretrained_path
    from ..model.runtime import shipped_onnx

    weights = weights or pretrained_path()
    path = weights.with_suffix(".int8.onnx")
    if not path.is_file() or importlib.util.find_spec("onnxruntime") is None:
        return None
    runner, info = shipped_onnx(path)
    if info.get("quantised_from", "") != hashlib.sha256(weights.read_bytes()).hexdigest():
        print(f"warning: {path} was quantised from other weights than the shipped ones; running torch", file=sys.stderr)
        return None
    return runner, info


def open_runner(model: str | Path | None, device: str, engine: str, attention: bool) -> tuple[Runner, dict]:
    """(runner, the model's metadata) for a model path or shipped model's name (None: the default
    model) on an engine; ``auto`` runs a shipped model's int8 ONNX on a CPU."""
    from ..model import load_model, pretrained_path

    shipped = model is None or zoo.is_name(model)
    path = zoo.resolve(model) or pretrained_path()
    if engine not in ENGINES:
        raise InputError(f"engine must be one of {', '.join(ENGINES)}, not {engine}", "engine")
    if engine == "auto":
        int8 = shipped_int8(path) if shipped and device == "cpu" and not attention else None
        if int8 is not None:
            return int8
        engine = "torch"
    if path.suffix == ".zip":  # a bioimage.io package of ours: its ONNX weights, whichever engine
        from ..model.bioimageio import package_onnx
        from ..model.runtime import onnx_info, onnx_runner

        if attention:
            raise InputError("attention needs a model file, not a bioimage.io package (ONNX returns logits only)")
        with package_onnx(path) as onnx:
            info = onnx_info(onnx)
            return onnx_runner(onnx, info), info
    if path.suffix == ".onnx" or engine == "onnx":
        from ..model.export import export_onnx
        from ..model.runtime import onnx_info, onnx_runner

        if attention:
            raise InputError("attention needs engine 'torch' (the ONNX graph returns logits only)", "attention")
        if path.suffix != ".onnx":  # exported for this session only: the file goes once it is loaded
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                exported = export_onnx(load_model(path), Path(tmp) / "model.onnx")
                info = onnx_info(exported)
                return onnx_runner(exported, info), info
        info = onnx_info(path)  # first: a file that is no model is one line, before a session is built
        return onnx_runner(path, info), info
    from ..model.export import fold_batchnorm

    network = load_model(path, device)
    return torch_runner(network if attention else fold_batchnorm(network), device, attention), network.info


def load_predictor(
    model: str | Path | None = None,
    *,
    device: str = "cpu",
    tile: int = 512,
    batch_size: int | None = None,
    engine: str = "torch",
    attention: bool = False,
    diameter: float | None = None,
    smoothing: float | None = None,
    **settings: Any,
) -> Predictor:
    """A Predictor for a model file, folder, run folder or shipped model's name (None: the default
    shipped model; "auto": a :class:`.choice.ModelChoice` of the shipped models by image). An .onnx model
    runs on ONNX Runtime; any other on torch (BatchNorm folded) unless ``engine="onnx"`` asks for
    an export first; ``engine="auto"`` (predict's default) runs the shipped model's int8 ONNX on a
    CPU when there is one for these weights, else torch. Normalisation, outputs and inference
    settings come from the model's metadata; ``settings`` (InferenceSettings' names: ``scale``,
    ``tta``, ``min_confidence``, ...; None keeps the model's) replace them; ``diameter`` (the
    nuclei's size in pixels, as Cellpose's) sets the scale that brings them to the size the model
    learnt; ``smoothing`` smooths every image by this Gaussian sigma instead of the stain policy."""
    if str(model) == AUTO:

        def load(name: str) -> Predictor:
            return load_predictor(name, device=device, tile=tile, batch_size=batch_size, engine=engine, **keywords)

        keywords = {"attention": attention, "diameter": diameter, "smoothing": smoothing, **settings}
        default = load(zoo.DEFAULT)  # a bad option is one line now, not at the first image
        return ModelChoice(load, zoo.routes(), zoo.DEFAULT, {zoo.DEFAULT: default})  # type: ignore[return-value]
    check_device(device)
    InferenceSettings().changed(**settings)  # a bad setting is one line before the model is opened
    if smoothing is not None:
        check_smoothing(smoothing, "smoothing")
    # on a CPU, 4 tiles of 512 per batch are no faster than 1 and hold twice the memory (BENCHMARKS.md)
    tiling = Tiling(tile, batch_size if batch_size is not None else 1 if device == "cpu" else 4)
    run, info = open_runner(model, device, engine, attention)
    own, train = InferenceSettings.from_metadata(info.get("inference", {})), info.get("train", {})
    outputs = OUTPUTS[:1] + ("contour",) * bool(train.get("contour")) + ("distance",) * bool(train.get("distance"))
    name = str(model) if model is not None else zoo.DEFAULT
    predictor = Predictor(
        run, train.get("norm", "fixed"), own.changed(**settings), tiling, outputs, smoothing, name=name
    )
    return predictor.for_diameter(diameter) if diameter is not None else predictor
