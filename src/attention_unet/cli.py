"""The ``attention-unet`` command. This module imports no torch, so ``--help`` is instant; each
subcommand imports what it needs after parsing. ``main(argv) -> int`` is what tests call."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError
from .settings import user_settings


def _train_parser(sub: Any) -> None:
    from .training.config import add_flags

    p = sub.add_parser(
        "train",
        help="train a model",
        description="Train an Attention U-Net. Defaults reproduce the reference report; flags override --config.",
    )
    p.add_argument("--config", help="YAML file of options (keys as the long flags, with underscores)")
    add_flags(p)  # one flag per TrainConfig field


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="'auto' (each image to the shipped model of its kind; predict's default), a shipped model's name "
        "(attention-unet models; default elsewhere: 'nuclei'), a model file, model folder or training run folder",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")


def _inference_args(p: argparse.ArgumentParser, microns: bool = False) -> None:
    p.add_argument(
        "--tile",
        type=int,
        default=512,
        help="tile size of sliding-window inference (up to an eighth longer where that saves pixels)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help="tiles per batch (default: 1 on a CPU, where 4 is no faster and holds 2x the memory; else 4)",
    )
    _setting_flags(p)
    p.add_argument(
        "--diameter",
        type=str if microns else float,
        metavar="SIZE" if microns else "PX",
        help="the nuclei's typical diameter: rescale them to the size the model learnt; "
        + ("in pixels (12) or in µm (6um) when the pixel size is known" if microns else "in pixels"),
    )
    p.add_argument(
        "--smoothing",
        type=float,
        metavar="SIGMA",
        help="smooth every image by a Gaussian of SIGMA pixels before the network (0: none); default: "
        "the model's own rule (the shipped model smooths sharp stained tissue, docs/experiments)",
    )


def _setting_flags(p: argparse.ArgumentParser) -> None:
    """A flag for each setting users override per run, from its field (settings.user_settings); the
    default None keeps the model's own."""
    kinds = {"bool": {"action": argparse.BooleanOptionalAction}, "int": {"type": int}, "float": {"type": float}}
    for f in user_settings():  # a type not listed (scale: a number or 'auto') is read as text
        p.add_argument("--" + f.name.replace("_", "-"), **kinds.get(str(f.type), {}), **f.metadata)


def _limit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="refuse image planes of more pixels (default 100 million; README: Safety and limits)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attention-unet", description="Attention U-Net for 2D biomedical image segmentation."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_train_parser, _finetune_parser, _evaluate_parser, _predict_parser, _export_parser, _other_parsers):
        add(sub)
    for name in ("train", "finetune", "evaluate", "predict", "export"):
        _limit_args(sub.choices[name])
    return parser


def _finetune_parser(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on a few annotated images of your own",
        description="Fine-tune the shipped model (or --model) on your images: a few minutes on a CPU. "
        "Every image trains; each one's bottom strip validates. Layouts: images/ + masks/, or Cellpose's <name> + <name>_masks.",
    )
    p.add_argument("data", nargs="+", help="dataset folders or .zips of your annotated images")
    p.add_argument(
        "--model",
        default="pretrained",
        help="the model to start from: 'pretrained' (the shipped one), a model file, model folder or run folder",
    )
    p.add_argument("--out", help="run folder (default: runs/<time>); the new model is OUT/model")
    p.add_argument("--minutes", dest="max_minutes", type=float, help="time budget (default 4.5)")
    p.add_argument("--epochs", type=int, help="epochs of 256 crops (default 10)")
    p.add_argument("--lr", type=float, help="learning rate (default 2e-4)")
    p.add_argument("--freeze-encoder", action="store_const", const=True, help="train only the decoder")
    p.add_argument("--seed", type=int)


def _evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="score a model on a dataset split")
    _model_args(p)
    p.add_argument(
        "--data", nargs="+", help="dataset folders or .zips, each scored on its own (default: the embedded sample)"
    )
    p.add_argument("--split", choices=("test", "valid", "train", "all"), default="test")
    p.add_argument("--split-file", help="split.json (default: the run's, else the reference split)")
    p.add_argument("--protocol", choices=("resize256", "native"), default="resize256")
    p.add_argument("--out", help="folder for score.csv, summary.json and strips (default: evaluation/)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-strips", dest="strips", action="store_false", help="skip the image | mask | prediction strips")
    p.add_argument(
        "--zoom", type=float, default=1.0, help="resize images and labels by this factor first (nuclei of other sizes)"
    )
    _inference_args(p)


def _predict_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="segment images")
    p.add_argument("inputs", nargs="+", help="files, folders (recursive) or globs")
    p.add_argument("--out", required=True, help="output folder (mirrors the inputs' relative paths)")
    _model_args(p)
    p.set_defaults(model="auto")  # each image to the shipped model of its kind (attention-unet models)
    _inference_args(p, microns=True)
    p.add_argument(
        "--channel",
        help="the channel that holds the nuclei: a number from 0, or a channel name from OME metadata; "
        "the other channels are measured",
    )
    p.add_argument(
        "--axes", help="the file's axes when it names them wrongly or not at all, e.g. CYX or ZYX (letters from TZCYXS)"
    )
    p.add_argument("--pixel-size", type=float, metavar="UM", help="µm per pixel (default: from OME or ImageJ metadata)")
    p.add_argument("--min-size", type=int, default=0, metavar="PX", help="drop nuclei of fewer pixels")
    p.add_argument("--exclude-edges", action="store_true", help="drop nuclei that touch the image border")
    p.add_argument("--rois", action="store_true", help="write <name>_rois.zip, an ImageJ/Fiji ROI set")
    p.add_argument(
        "--geojson", action="store_true", help="write <name>_nuclei.geojson, nucleus polygons QuPath imports"
    )
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave out inputs an earlier run into --out finished (continue a stopped run)",
    )
    p.add_argument("--save-prob", action="store_true", help="also write <name>_prob.tif (float32)")
    p.add_argument("--attention", action="store_true", help="write each gate's coefficient map as a heat-map PNG")
    p.add_argument(
        "--engine",
        choices=("auto", "torch", "onnx"),
        default="auto",
        help="auto: the shipped model's int8 ONNX on a CPU (BENCHMARKS.md), torch otherwise",
    )
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="images predicted at once, side by side (default 2; an image above a block-wise window runs alone)",
    )
    _block_args(p)


def _block_args(p: argparse.ArgumentParser) -> None:
    blocks = p.add_argument_group("large images (block-wise; README: Whole slides)")
    blocks.add_argument(
        "--blockwise",
        choices=("auto", "always", "never"),
        default="auto",
        help="predict by blocks in bounded memory: auto = zarr inputs and TIFF planes above 30 million pixels",
    )
    blocks.add_argument("--block-size", type=int, metavar="PX", help="block edge (default 2048)")
    blocks.add_argument(
        "--halo",
        type=int,
        metavar="PX",
        help="margin each block's nuclei are resolved in: wider than the largest clump of nuclei (default 256)",
    )
    blocks.add_argument("--workers", type=int, help="blocks at once on this machine (default 1)")
    blocks.add_argument(
        "--dask-scheduler", metavar="ADDRESS", help="run blocks on a dask.distributed cluster (tcp://host:8786)"
    )


def _export_parser(sub: Any) -> None:
    p = sub.add_parser("export", help="export a model to ONNX, TorchScript or a bioimage.io package")
    _model_args(p)
    p.add_argument("--onnx", help="output .onnx path")
    p.add_argument("--torchscript", help="output .pt path")
    p.add_argument(
        "--bioimageio",
        metavar="ZIP",
        help="output bioimage.io package (.zip) for deepImageJ, QuPath and ilastik (needs the [bioimageio] extra)",
    )
    p.add_argument("--int8", action="store_true", help="also write a statically quantised int8 ONNX (<name>.int8.onnx)")
    p.add_argument(
        "--calibrate", nargs="+", metavar="INPUT", help="images for int8 calibration (default: the embedded sample)"
    )


def _other_parsers(sub: Any) -> None:
    sub.add_parser("models", help="list the shipped models: name, modality, size, licence, training data")
    p = sub.add_parser("demo", help="train the small preset on the embedded sample, evaluate, show strips")
    p.add_argument("--out", help="a new folder (default: runs/demo-<time>, so a second demo keeps the first)")
    p.add_argument("--minutes", type=float, default=3.0, help="training budget")


def _train(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig
    from .training.fit import fit

    given = {
        k: v for k, v in vars(args).items() if v is not None and k not in ("command", "config", "debug", "max_pixels")
    }
    values = _read_yaml(args.config) if args.config else {}
    saved = Path(args.out or "") / "config.yaml"
    if args.resume and args.out and saved.is_file():
        from .training.config import resumed_options

        values = resumed_options(_read_yaml(str(saved)), {**values, **given}, saved)
    values.update(given)
    run_dir = fit(TrainConfig.from_dict(values, args.config or "options"))
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank == 0:
        print(f"run folder: {run_dir}  (model: {run_dir / 'model'})")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .training.config import FINETUNE, TrainConfig
    from .training.fit import fit

    given = {
        k: v for k, v in vars(args).items() if v is not None and k not in ("command", "debug", "model", "max_pixels")
    }
    run_dir = fit(TrainConfig.from_dict({**FINETUNE, "init_from": args.model, **given}, "finetune options"))
    print(f"run folder: {run_dir}  (model: {run_dir / 'model'}; use it with predict --model {run_dir})")
    return 0


# the inference settings (InferenceSettings' names) that predict and evaluate take as flags, and
# the other options that open a model (load_predictor's keywords)
SETTING_FLAGS = tuple(f.name for f in user_settings())
MODEL_OPTIONS = ("device", "tile", "batch_size", "smoothing")


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in SETTING_FLAGS + MODEL_OPTIONS}


def _evaluate(args: argparse.Namespace) -> int:
    from .commands.evaluate import evaluate_datasets

    keys = ("out", "split", "protocol", "split_file", "strips", "diameter", "zoom")
    given = {k: getattr(args, k) for k in keys} | _model_options(args)
    return evaluate_datasets(args.model, args.data, json_lines=args.json, **given)


def _export(args: argparse.Namespace) -> int:
    from .model.export import export

    if args.onnx or args.torchscript or args.bioimageio is None:  # the last: export's own "give ..." line
        export(args.model, onnx=args.onnx, torchscript=args.torchscript, int8=args.int8, calibrate=args.calibrate)
    if args.bioimageio is not None:
        from .model.bioimageio import export_package

        print(f"wrote {export_package(args.model, args.bioimageio)}", file=sys.stderr)
    return 0


def _models(args: argparse.Namespace) -> int:
    from .model.zoo import table

    print(table())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .commands.evaluate import demo

    return demo(args.out, args.minutes)


def _run(args: argparse.Namespace) -> int:
    commands = {"train": _train, "finetune": _finetune, "evaluate": _evaluate, "predict": _predict}
    commands |= {"export": _export, "models": _models, "demo": _demo}
    return commands[args.command](args)


def _read_yaml(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not text (UnicodeDecodeError)
        raise InputError(f"{path}: cannot read YAML config ({type(exc).__name__}: {exc})") from None
    if not isinstance(values, dict):
        raise InputError(f"{path}: a config file must be a mapping of option: value")
    return values


def _predict(args: argparse.Namespace) -> int:
    from .commands.predict import PredictOptions, load_predictor, predict_files
    from .inference.blockwise import BlockSettings
    from .io.measure import MeasureSettings

    if args.min_size < 0:
        raise InputError(f"--min-size must be 0 or more pixels, not {args.min_size}")
    recipe = {"model": args.model, "engine": args.engine, "attention": args.attention, **_model_options(args)}
    predictor = load_predictor(**recipe)
    given = {"block": args.block_size, "halo": args.halo, "workers": args.workers, "scheduler": args.dask_scheduler}
    blocks = BlockSettings(**{k: v for k, v in given.items() if v is not None})
    options = PredictOptions(
        threshold=args.threshold,
        channel=args.channel,
        axes=args.axes,
        pixel_size=args.pixel_size,
        diameter=args.diameter,
        measure=MeasureSettings(min_size=args.min_size, exclude_edges=args.exclude_edges),
        rois=args.rois,
        geojson=args.geojson,
        save_prob=args.save_prob,
        attention=args.attention,
        skip_existing=args.skip_existing,
        blockwise=args.blockwise,
        blocks=blocks,
        **({"jobs": args.jobs} if args.jobs is not None else {}),
    )
    return predict_files(args.inputs, out=args.out, predictor=predictor, options=options, recipe=recipe)


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's parameter name (``min_confidence``) -> its flag (``--min-confidence``), in
    every subcommand."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags.update(flags_of(sub))
        elif action.option_strings:
            flags.setdefault(action.dest, action.option_strings[-1])
    return flags


def as_flags(message: str, flags: dict[str, str], parameter: str | None = None) -> str:
    """A library error that starts with a parameter's name, as the command line says it.

    >>> as_flags("tile must be a whole number", {"tile": "--tile"})
    '--tile must be a whole number'
    >>> as_flags("x.png: cannot read image", {"tile": "--tile"})
    'x.png: cannot read image'
    """
    name = parameter or message.split(" ", 1)[0].rstrip(":")
    flag = flags.get(name)
    return flag + message[len(name) :] if flag and message.startswith(name) else message


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input, 1 when some files failed)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "max_pixels", None) is not None:
            if args.max_pixels < 1:
                raise InputError(f"--max-pixels must be a positive number of pixels, not {args.max_pixels}")
            os.environ["ATTENTION_UNET_MAX_PIXELS"] = str(args.max_pixels)  # read by limits, in workers too
        from .io.limits import max_pixels

        max_pixels()  # a bad ATTENTION_UNET_MAX_PIXELS is one line now, not a warning for every file
        return _run(args)
    except (InputError, FileNotFoundError) as exc:
        if args.debug:
            raise
        message = as_flags(str(exc), flags_of(parser), getattr(exc, "parameter", None))
        print(f"attention-unet: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(
            "attention-unet: error: out of memory: give a smaller --block-size, fewer --workers, a smaller "
            "--batch-size or --tile, or a smaller image",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("attention-unet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
