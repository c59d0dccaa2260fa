"""Model files: safetensors weights with the network's config in their metadata (and a
``config.json`` beside them for people), the checks a file passes before it is loaded, and the
shipped model's place in the package."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..io.limits import check_model_file
from .config import ModelConfig

if TYPE_CHECKING:  # torch is imported where a network is built, not to read a model's metadata
    import torch

    from .network import AttentionUNet

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_model(model: AttentionUNet, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` (config and metadata inside) and a readable ``config.json``."""
    from safetensors.torch import save_file

    from .. import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    info = {"model": asdict(model.config), "version": __version__, **(metadata or {})}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = directory / WEIGHTS_NAME
    save_file(state, str(path), metadata={"attention_unet": json.dumps(info)})
    (directory / CONFIG_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return path


# files a user may take for a model, and what they are: predict runs ONNX files (export.py), and the
# rest need the safetensors weights (a checkpoint or TorchScript file is never unpickled or run)
NOT_WEIGHTS = {
    ".onnx": f"an ONNX export; this needs the {WEIGHTS_NAME} it was exported from",
    ".pt": f"a TorchScript export (for other programs); give the {WEIGHTS_NAME} it was exported from",
    ".ckpt": "a training checkpoint (for --resume); give the run folder, whose model/ holds the best one's weights",
}


def _resolve_weights(path: Path) -> Path:
    """Accept a weights file, a model folder, or a training run folder (its ``model/``)."""
    from . import zoo

    if zoo.is_name(path):  # a shipped model's name (attention-unet models)
        path = zoo.resolve(path)
    if path.suffix.lower() in NOT_WEIGHTS:
        raise FileNotFoundError(f"{path}: {NOT_WEIGHTS[path.suffix.lower()]}")
    for candidate in (path, path / WEIGHTS_NAME, path / "model" / WEIGHTS_NAME):
        if candidate.is_file():
            return candidate
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    raise FileNotFoundError(f"{path}: no {WEIGHTS_NAME} found (give a model file, model folder or run folder)")


def read_model_info(path: str | Path) -> dict[str, Any]:
    """The metadata stored in a model file: model config, version, training config, metrics."""
    from safetensors import safe_open

    weights = _resolve_weights(Path(path))
    check_model_file(weights)
    try:
        with safe_open(str(weights), framework="numpy") as f:  # the header only: no torch import
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for any damage
        raise InputError(f"{weights}: not a readable safetensors model file ({type(exc).__name__}: {exc})") from None
    if "attention_unet" not in meta:
        raise InputError(f"{weights}: not an attention-unet model (no config in its metadata)")
    return parse_info(meta["attention_unet"], weights)


def parse_info(text: str, source: str | Path) -> dict[str, Any]:
    """A model file's stored metadata (JSON) as a mapping whose network config is valid: the one
    check of the metadata of safetensors and ONNX files alike."""
    try:
        info = json.loads(text)
        if not isinstance(info, dict):
            raise TypeError("not a mapping")
        ModelConfig.from_dict(info["model"])
    except (ValueError, TypeError, KeyError, InputError) as exc:
        raise InputError(f"{source}: the model's metadata is malformed ({type(exc).__name__}: {exc})") from None
    return info


def check_weights(weights: Path, config: ModelConfig) -> None:
    """The network ``config`` describes must have exactly the tensors in the file's header: built
    on the meta device (no memory), compared by name and shape before anything is loaded."""
    import torch
    from safetensors import safe_open

    from ..io.limits import MAX_PARAMETERS
    from .network import AttentionUNet

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AttentionUNet(config).state_dict().items()}
    with safe_open(str(weights), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open is no dict
    size = sum(math.prod(shape) for shape in expected.values())
    if size > MAX_PARAMETERS:
        raise InputError(
            f"{weights}: its metadata describes a network of {size:,} weights, more than {MAX_PARAMETERS:,}"
        )
    if expected != stored:
        differ = sorted(set(expected) ^ set(stored)) or [k for k in expected if expected[k] != stored[k]]
        name = differ[0]
        raise InputError(
            f"{weights}: its metadata ({config.width=}, {config.depth=}) does not match its weights "
            f"(e.g. {name}: {expected.get(name, 'absent')} expected, {stored.get(name, 'absent')} stored)"
        )


def pretrained_path() -> Path:
    """Where the shipped pretrained model lives inside the package."""
    return Path(__file__).parents[1] / "weights" / WEIGHTS_NAME


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> AttentionUNet:
    """Rebuild a saved model in eval mode; with no path, the shipped pretrained nuclei model."""
    from safetensors.torch import load_file

    from .network import AttentionUNet

    if path is None:
        path = pretrained_path()
        if not path.is_file():
            raise FileNotFoundError("no pretrained model is shipped with this version; pass a model path")
    weights = _resolve_weights(Path(path))
    info = read_model_info(weights)
    config = ModelConfig.from_dict(info["model"])
    check_weights(weights, config)
    model = AttentionUNet(config)
    model.load_state_dict(load_file(str(weights)))
    model.info = info  # type: ignore[attr-defined]
    return model.to(device).eval()
