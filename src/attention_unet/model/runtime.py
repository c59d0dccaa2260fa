"""ONNX files as predict reads and runs them: their metadata and checks, and an ONNX Runtime session
as a predict runner. No torch here (and ``onnx`` only to check a file that is not shipped), so
that predict's default engine starts without either."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from ..io.limits import check_model_file
from .config import ModelConfig
from .files import parse_info

if TYPE_CHECKING:
    from ..inference.tiles import Runner

ONNX_DOMAINS = {"", "ai.onnx"}  # the standard operators, the only ones our exports use


def onnx_info(path: str | Path) -> dict:
    """The attention-unet metadata stored in an exported ONNX file, after the file itself is checked:
    a regular file of a model's size, its weights inside it, standard operators only."""
    import onnx

    check_model_file(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's decode errors have many types
        raise InputError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "attention_unet" not in props:
        raise InputError(f"{path}: not an ONNX model exported by attention-unet (no metadata)")
    info = parse_info(props["attention_unet"], path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise InputError(f"{path}: its weights are in external data files; attention-unet exports keep them inside")
    custom = sorted({node.domain for node in proto.graph.node} - ONNX_DOMAINS)
    if custom:
        raise InputError(f"{path}: uses operators outside the ONNX standard ({', '.join(custom)})")
    return info


def edge_padded(batch: np.ndarray, multiple: int) -> np.ndarray:
    """An N x C x H x W batch as the traced graph can take it. The graph reflect-pads to a multiple
    of 2**depth, which fails where the padding reaches the side (an image 8 px high at depth 4);
    there the eager model replicates the edge instead (AttentionUNet._run), so that is done here,
    before the graph."""
    height, width = batch.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h >= height or pad_w >= width:
        return np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return batch


def onnx_session(path: str | Path) -> Any:
    """An ONNX Runtime session on the CPU, or one line naming the file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # threads that wait sleep instead of spinning: predict runs images (and blocks) side by side,
    # and a spinning pool would take the cores the other image's post-processing needs
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own error types for any graph it cannot run
        reason = str(exc).splitlines()[0][:200]
        raise InputError(f"{path}: ONNX Runtime cannot run it ({reason})") from None


def session_runner(session: Any, info: dict) -> Runner:
    """A session as a predict runner, for the network its metadata ``info`` describes."""
    multiple = 2 ** ModelConfig.from_dict(info["model"]).depth

    def run(batch: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        height, width = batch.shape[-2:]
        logits = session.run(None, {"image": edge_padded(batch, multiple).astype(np.float32, copy=False)})[0]
        logits = logits[..., :height, :width]
        return 1.0 / (1.0 + np.exp(-logits)), []

    return run


def onnx_runner(path: str | Path, info: dict | None = None) -> Runner:
    """An exported .onnx file as a predict runner; ``info``: its metadata, if already read (else
    read and checked here, before a session is built)."""
    return session_runner(onnx_session(path), info or onnx_info(path))


def shipped_onnx(path: Path) -> tuple[Runner, dict]:
    """A shipped ONNX file (the package's own: no checks, no ``onnx`` import) as a runner, and its
    metadata, read from the session."""
    session = onnx_session(path)
    info = parse_info(session.get_modelmeta().custom_metadata_map.get("attention_unet", ""), path)
    return session_runner(session, info), info
