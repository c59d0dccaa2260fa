"""A network's shape: :class:`ModelConfig` (saved with every model), its limits and the named
presets. No torch here, so that reading a model's metadata and running its ONNX graph never
import it."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from ..errors import InputError

MAX_WIDTH = 256  # 4x the report's: beyond it a network outgrows a CPU machine's memory in training
MAX_DEPTH = 6  # 64x downsampling; each further level doubles the widest layer's channels again


@dataclass(frozen=True)
class ModelConfig:
    """Constructor arguments of :class:`AttentionUNet`; saved with every model."""

    in_channels: int = 3  # RGB; grey images are repeated to three channels by the data module
    out_channels: int = 1  # one logit per pixel: nucleus vs background
    width: int = 64  # channels of the first encoder block; each level doubles it (report: 64)
    depth: int = 3  # number of 2x2 poolings (report: 3, bridge 512 at width 64)
    gate: str = "channel"  # "channel": one coefficient per skip channel (report); "scalar": Oktay's psi
    attention: bool = True  # False gives a plain U-Net of the same widths, for comparisons

    def __post_init__(self) -> None:
        if self.gate not in ("channel", "scalar"):
            raise InputError(f"gate must be 'channel' or 'scalar', not {self.gate!r}")
        for name, value, top in (
            ("width", self.width, MAX_WIDTH),
            ("depth", self.depth, MAX_DEPTH),
            ("in_channels", self.in_channels, 16),
            ("out_channels", self.out_channels, 16),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise InputError(f"{name} must be a whole number from 1 to {top}, not {value!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict, ignoring keys this version does not know (forward compatibility)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


PRESETS: dict[str, ModelConfig] = {
    "seed": ModelConfig(width=64, depth=3),  # the reference report's network
    "medium": ModelConfig(width=32, depth=3),  # a CPU compromise
    "small": ModelConfig(width=16, depth=3),  # trains in minutes on two CPU cores
}
