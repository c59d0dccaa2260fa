"""Every training option, once: :class:`TrainConfig`'s fields carry their default, type, help and
choices, and the ``train`` command's flags are generated from them (:func:`add_flags`). No torch
here, so ``attention-unet --help`` stays instant."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..settings import NORMALISATIONS

LOSSES = ("bce", "dice", "bce+dice", "bce+image-dice")
SCHEDULERS = ("plateau", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
AUGMENTS = ("none", "geometric", "full", "robust")
PRESET_NAMES = ("seed", "medium", "small")
# Keys an --init-from model decides unless given: its network and the normalisation it learnt with.
INIT_KEYS = ("preset", "gate", "attention", "width", "depth", "contour", "distance", "norm")
# `attention-unet finetune`: the options for a handful of one's own images (a few minutes on 2 CPU
# cores, docs/experiments); validation on a strip of each image, as there is no image to spare.
FINETUNE: dict[str, Any] = {
    "init_from": "pretrained",
    "input": "crop:128",
    "scale": (0.5, 2.0),
    "augment": "robust",
    "loss": "bce+dice",
    "lr": 2e-4,
    "scheduler": "cosine",
    "epochs": 10,
    "samples_per_epoch": 256,
    "monitor": "val_f1",
    "early_stopping": 10,
    "max_minutes": 4.5,
    "valid_strip": 128,
}


def opt(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, **cli: Any) -> Any:
    """A field with its command-line help (and argparse keywords: choices, metavar, type, flag)."""
    return field(default=default, default_factory=factory, metadata={"help": help, **cli})


@dataclass
class TrainConfig:
    """Every training option; defaults reproduce the reference report."""

    data: list[str] = opt(factory=list, help="dataset folders or .zips, each with its own split (default: the sample)")
    init_from: str = opt(
        "",
        "start from these weights: 'pretrained' (the shipped model), a shipped model's name, a model file, "
        "model folder or run folder; its network and normalisation unless given",
        metavar="MODEL",
    )
    freeze_encoder: bool = opt(False, "train only the decoder (with --init-from)")
    preset: str = opt("seed", choices=PRESET_NAMES)
    gate: str | None = opt(None, "override the preset's gate kind", choices=("channel", "scalar"))
    attention: bool = opt(True, "plain U-Net of the same widths", flag="--no-attention")
    width: int | None = opt(None, "override the preset's width", type=int)
    depth: int | None = opt(None, "override the preset's depth", type=int)
    epochs: int = opt(100)
    batch_size: int = opt(8)
    lr: float = opt(1e-4)
    optimizer: str = opt("adam", "report: Adam; adamw (weight decay 1e-4) or sgd (momentum 0.9)", choices=OPTIMIZERS)
    loss: str = opt("bce", choices=LOSSES)
    input: str = opt("resize256", "resize256 (report) or crop:N (native-resolution crops, scale-jittered)")
    scale: tuple[float, float] = opt((0.25, 2.0), "crop-mode scale range (log-uniform)", metavar=("MIN", "MAX"))
    augment: str = opt("none", "robust: full + H&E stain jitter and noise", choices=AUGMENTS)
    pseudo_stain: float = opt(0.0, "render this share of fluorescence crops as H&E", metavar="P")
    stain_grain: float = opt(
        0.0, "blur or sharpen this share of stained crops, as scanners of other sharpness would", metavar="P"
    )
    stain_jitter: float = opt(
        0.1,
        "H&E stain jitter of --augment robust: each stain scaled by 1 +- SIGMA, shifted by +- SIGMA",
        metavar="SIGMA",
    )
    balance: bool = opt(False, "oversample rare (dataset, modality) groups: shares ~ the square root of their sizes")
    samples_per_epoch: int = opt(0, "crop mode: crops per epoch (0: one per training image)")
    norm: str = opt(
        "fixed",
        "fixed (report: /255); polarity: nuclei made bright; stain: polarity, H&E always turned",
        choices=NORMALISATIONS,
    )
    contour: bool = opt(False, "also predict nucleus contours (separates touching nuclei)")
    distance: bool = opt(False, "also predict each nucleus's normalised distance to its rim (seeds for instances)")
    scheduler: str = opt("plateau", "report: ReduceLROnPlateau(0.1, 5, 1e-7); or cosine to lr/100", choices=SCHEDULERS)
    monitor: str = opt("val_loss", "checkpoint and early-stopping metric", choices=("val_loss", "val_f1"))
    early_stopping: int = opt(20, "patience in epochs")
    max_minutes: float = opt(0.0, "wall-clock budget (0: none)")
    seed: int = opt(42)
    out: str = opt("", "run folder (default: runs/<time>)")
    resume: str = opt("", "resume from a checkpoint (default: OUT/checkpoints/last.ckpt)", nargs="?", const="last")
    split_file: str = opt("", "reuse a split.json")
    valid_strip: int = opt(0, "validate on each image's bottom ROWS rows, train on the rest", metavar="ROWS")
    workers: int = opt(0, "data-loader worker processes")
    channels_last: bool = opt(True, "keep the NCHW memory layout (slower on CPU)", flag="--no-channels-last")
    accelerator: str = opt("auto", choices=("cpu", "gpu", "mps", "auto"))
    devices: str = opt("auto", "number of devices or 'auto'")
    num_nodes: int = opt(1)
    strategy: str = opt("auto", "auto, ddp, ddp_spawn, ...")
    sync_bn: bool = opt(False, "SyncBatchNorm across processes")
    precision: str = opt("32-true", "32-true, bf16-mixed, 16-mixed")
    limit_batches: float = opt(1.0, argparse.SUPPRESS)  # fraction or count of batches per epoch (tests)
    force: bool = opt(False, "train even above the memory estimate (README: Safety and limits)")

    def model_config(self) -> Any:
        """The network's ModelConfig: the preset with its overrides, or the --init-from model's."""
        from ..model import PRESETS, ModelConfig

        if self.init_from:
            return self._init_model_config()
        if self.preset not in PRESETS:
            raise InputError(f"unknown preset '{self.preset}' (choose from {', '.join(PRESETS)})")
        base = asdict(PRESETS[self.preset])
        for key in ("gate", "width", "depth"):
            if getattr(self, key) is not None:
                base[key] = getattr(self, key)
        base["attention"] = self.attention
        base["out_channels"] = 1 + self.contour + self.distance
        return ModelConfig(**base)

    def _init_model_config(self) -> Any:
        """The --init-from model's network; an explicit option that contradicts it is an error."""
        from ..model import ModelConfig, read_model_info

        config = ModelConfig.from_dict(read_model_info(init_path(self.init_from))["model"])
        wanted = {
            "gate": self.gate,
            "width": self.width,
            "depth": self.depth,
            "attention": self.attention,
            "out_channels": 1 + self.contour + self.distance,
        }
        for key, value in wanted.items():
            if value is not None and value != getattr(config, key):
                flag = "--contour/--distance" if key == "out_channels" else f"--{key}"
                raise InputError(
                    f"{flag} gives {key} {value}, but the --init-from model {self.init_from} has {getattr(config, key)}"
                )
        return config

    def crop_size(self) -> int | None:
        if self.input == "resize256":
            return None
        if self.input.startswith("crop:") and self.input[5:].isdigit() and int(self.input[5:]) >= 16:
            return int(self.input[5:])
        raise InputError(f"--input must be 'resize256' or 'crop:N' with N >= 16, not '{self.input}'")

    def validate(self) -> None:
        check(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown option(s) {', '.join(unknown)}")
        values = dict(values)
        if "scale" in values:
            values["scale"] = tuple(values["scale"])
        if isinstance(values.get("data"), str):
            values["data"] = [values["data"]] if values["data"] else []
        if values.get("init_from"):
            values = {**init_defaults(values["init_from"]), **values}
        return cls(**values)


RANGES = {  # option: (least, most); also refuses NaN
    "epochs": (1, 100_000),
    "batch_size": (1, 4096),
    "lr": (1e-12, 10.0),
    "max_minutes": (0, 1e7),
    "samples_per_epoch": (0, 10_000_000),
    "pseudo_stain": (0.0, 1.0),
    "stain_grain": (0.0, 1.0),
    "stain_jitter": (0.0, 0.5),
    "early_stopping": (1, 100_000),
    "workers": (0, 256),
    "num_nodes": (1, 100_000),
    "limit_batches": (1e-9, 1e9),
}


def check(cfg: TrainConfig) -> None:
    """One line for the first option out of its type, range or choices."""
    check_types(cfg)
    for name, (low, high) in RANGES.items():
        value = getattr(cfg, name)
        if not (low <= value <= high):
            raise InputError(f"--{name.replace('_', '-')} must lie between {low:g} and {high:g}, not {value}")
    for value in cfg.scale:
        if not (1e-3 <= value <= 64.0):
            raise InputError(f"--scale must lie between 0.001 and 64, not {value}")
    if cfg.scale[0] > cfg.scale[1]:
        raise InputError(f"--scale MIN MAX needs MIN <= MAX, not {cfg.scale[0]:g} {cfg.scale[1]:g}")
    cfg.crop_size()
    if cfg.valid_strip and cfg.valid_strip < 16:
        raise InputError(
            f"--valid-strip must be 0 (the dataset's valid split) or at least 16 rows, not {cfg.valid_strip}"
        )
    cfg.model_config()
    for f in fields(cfg):
        allowed = f.metadata.get("choices")
        value = getattr(cfg, f.name)
        if allowed and value is not None and value not in allowed and f.name not in ("preset",):
            raise InputError(f"--{f.name.replace('_', '-')} must be one of {', '.join(allowed)}, not '{value}'")


def _kind(f: Field, default: Any, value: Any) -> tuple[bool, str]:
    """Whether ``value`` has the type of ``f``'s default, and that type in words."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        return isinstance(value, bool), "true or false"
    if isinstance(default, int) or (default is None and f.metadata.get("type") is int):
        return number and isinstance(value, int), "a whole number"
    if isinstance(default, float):
        return number, "a number"
    if isinstance(default, (str, type(None))):
        return isinstance(value, str), "text"
    if isinstance(default, tuple):
        return len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value), (
            "two numbers"
        )
    return isinstance(value, list) and all(isinstance(v, str) for v in value), "a list of paths"


def check_types(cfg: TrainConfig) -> None:
    """Each option of the type its default has (a YAML ``epochs: ten`` is one line, not a crash)."""
    for f in fields(cfg):
        value, default = getattr(cfg, f.name), f.default if f.default_factory is MISSING else f.default_factory()
        if default is None and value is None:
            continue
        ok, kind = _kind(f, default, value)
        if not ok:
            raise InputError(f"option {f.name}: {value!r} is not {kind}")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The train command's flags, one per TrainConfig field, from its type, default and metadata.
    Defaults are None, so that only the flags given override the YAML file and TrainConfig's defaults."""
    for f in fields(TrainConfig):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta.pop("help") or None, **meta}
        default = f.default if f.default_factory is MISSING else f.default_factory()
        if isinstance(default, bool):
            kwargs |= {"action": "store_const", "const": not default}
        elif isinstance(default, list):
            kwargs |= {"nargs": "+"}
        elif isinstance(default, tuple):
            kwargs |= {"nargs": len(default), "type": type(default[0])}
        elif "nargs" not in kwargs and default is not None and not isinstance(default, str):
            kwargs.setdefault("type", type(default))
        parser.add_argument(flag, **kwargs)


# what --resume may change from the run's saved options: how long and where it runs, not what it learns
RESUME_MAY_CHANGE = (
    "epochs",
    "max_minutes",
    "early_stopping",
    "workers",
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "resume",
    "out",
    "limit_batches",
    "force",
)


def resumed_options(saved: dict[str, Any], given: dict[str, Any], source: Path) -> dict[str, Any]:
    """A run's own options (its config.yaml) for --resume, with the given ones on top where they
    are safe; one that would change what the run learns is an error naming it."""
    for key, value in given.items():
        if key not in RESUME_MAY_CHANGE and key in saved:
            old = tuple(saved[key]) if isinstance(saved[key], list) and key == "scale" else saved[key]
            new = tuple(value) if isinstance(value, list) and key == "scale" else value
            if old != new:
                flag = "--" + key.replace("_", "-")
                raise InputError(
                    f"--resume continues {source.parent} as it was configured ({source}): {flag} {value} differs from its {old}"
                )
    return {**saved, **given}


def init_path(init_from: str) -> Path:
    """The weights that --init-from names: "pretrained" is the shipped model."""
    from ..model import _resolve_weights, pretrained_path

    return pretrained_path() if init_from == "pretrained" else _resolve_weights(Path(init_from))


def init_defaults(init_from: str) -> dict[str, Any]:
    """The options an --init-from model sets unless given: its network and normalisation."""
    from ..model import read_model_info

    try:
        info = read_model_info(init_path(init_from))
    except (FileNotFoundError, ValueError) as exc:
        raise InputError(str(exc)) from None  # it names the file
    train = info.get("train", {})
    return {key: train[key] for key in INIT_KEYS if key in train}


def init_record(init_from: str) -> dict[str, Any]:
    """What a fine-tuned model records about its start: the name, version and weights checksum."""
    import hashlib

    from ..model import read_model_info

    path = init_path(init_from)
    return {
        "from": init_from,
        "version": read_model_info(path).get("version"),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
