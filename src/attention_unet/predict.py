"""The ``predict`` command and the loading of a model for inference (:func:`load_predictor`).

The sliding-window engine is :mod:`tiling`, the instance step :mod:`instances`, image files
:mod:`images`.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import find_inputs, heat_map, overlay, read_pages
from .tiling import Predictor, torch_runner


@dataclass
class Summary:
    rows: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def summarise(name: str, labels: np.ndarray) -> dict:
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return {
        "file": name,
        "height": labels.shape[0],
        "width": labels.shape[1],
        "nucleus_count": len(areas),
        "foreground_fraction": round(float((labels > 0).mean()), 6),
        "mean_area_px": round(float(areas.mean()), 2) if len(areas) else 0.0,
        "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
    }


def scale_for_diameter(target_diameter: float, diameter: float) -> float:
    """The factor that brings nuclei of ``diameter`` pixels to the size the model learnt."""
    if not diameter > 0:
        raise InputError(f"--diameter must be a positive number of pixels, not {diameter}")
    return target_diameter / diameter


def load_predictor(
    model: str | Path | None = None,
    *,
    device: str = "cpu",
    tile: int = 512,
    batch_size: int = 4,
    tta: bool | None = None,
    scale: str | float | None = None,
    diameter: float | None = None,
    engine: str = "torch",
    attention: bool = False,
) -> Predictor:
    """A Predictor for a model file, folder or run folder (None: the shipped model). An .onnx model
    runs on ONNX Runtime; any other on torch (BatchNorm folded) unless ``engine="onnx"`` asks for
    an export first. Normalisation and the defaults of ``tta`` and ``scale`` come from the model's
    own metadata; ``scale`` is a factor or "auto"; ``diameter`` (the nuclei's size in pixels, as
    Cellpose's) sets the factor that brings them to the size the model learnt, instead."""
    from .model import load_model, pretrained_path

    path = Path(model) if model else pretrained_path()
    if path.suffix == ".onnx" or engine == "onnx":
        from .export import export_onnx, onnx_info, onnx_runner

        if attention:
            raise InputError("--attention needs --engine torch (the ONNX graph returns logits only)")
        if path.suffix != ".onnx":
            import tempfile

            path = export_onnx(load_model(path), Path(tempfile.mkdtemp()) / "model.onnx")
        run, info = onnx_runner(path), onnx_info(path)
    else:
        from .export import fold_batchnorm

        network = load_model(path, device)
        run, info = torch_runner(network if attention else fold_batchnorm(network), device, attention), network.info
    inference, train = info.get("inference", {}), info.get("train", {})
    target_diameter = float(inference.get("target_diameter", 16.0))
    if diameter is not None:
        scale = scale_for_diameter(target_diameter, diameter)
    scale = scale if scale is not None else inference.get("scale", 1.0)
    if str(scale) == "auto":
        scale = None
    else:
        try:
            scale = float(scale)
        except ValueError:
            raise InputError(f"--scale must be 'auto' or a positive number, not '{scale}'") from None
        if scale <= 0:
            raise InputError(f"--scale must be 'auto' or a positive number, not '{scale}'")
    outputs = ("mask",) + ("contour",) * bool(train.get("contour")) + ("distance",) * bool(train.get("distance"))
    return Predictor(
        run,
        train.get("norm", "fixed"),
        tile,
        batch_size,
        bool(inference.get("tta", False)) if tta is None else tta,
        scale=scale,
        target_diameter=target_diameter,
        outputs=outputs,
        contours=bool(inference.get("contours", True)),
        distances=bool(inference.get("distances", False)),
        contour_threshold=float(inference.get("contour_threshold", 0.5)),
        h=float(inference.get("h", 1.0)),
        min_area=int(inference.get("min_area", 8)),
    )


def predict_command(args) -> int:
    import imageio.v3 as iio
    import tifffile
    from tqdm import tqdm

    predictor = load_predictor(
        args.model,
        device=args.device,
        tile=args.tile,
        batch_size=args.batch_size,
        tta=args.tta,
        scale=args.scale,
        diameter=args.diameter,
        engine=args.engine,
        attention=args.attention,
    )
    out = Path(args.out)
    files = list(find_inputs(args.inputs))
    if not files:
        raise InputError(f"no images found in {' '.join(args.inputs)}")
    summary = Summary()
    for path, rel in tqdm(files, desc="predict", unit="file", file=sys.stderr):
        try:
            pages = read_pages(path)
        except InputError as exc:
            print(f"warning: {exc}", file=sys.stderr)
            summary.failed.append(str(path))
            continue
        for page_index, image in enumerate(pages):
            stem = rel.with_suffix("").as_posix() + (f"_p{page_index}" if len(pages) > 1 else "")
            target = out / stem
            target.parent.mkdir(parents=True, exist_ok=True)
            probs, gates = predictor.probabilities(image)
            prob = probs[0]
            labels = predictor.labels(probs, args.threshold)
            iio.imwrite(f"{target}_mask.png", ((prob > args.threshold) * 255).astype(np.uint8))
            tifffile.imwrite(
                f"{target}_labels.tif",
                labels.astype(np.uint16 if labels.max() < 2**16 else np.uint32),
                compression="zlib",
            )
            iio.imwrite(f"{target}_overlay.png", overlay(image, labels))
            if args.save_prob:
                tifffile.imwrite(f"{target}_prob.tif", prob.astype(np.float32), compression="zlib")
            for k, gate in enumerate(gates, start=1):
                iio.imwrite(f"{target}_attention{k}.png", heat_map(image, gate))
            summary.rows.append(summarise(stem, labels))
    if summary.rows:
        with open(out / "summary.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(summary.rows[0]))
            writer.writeheader()
            writer.writerows(summary.rows)
    print(f"{len(summary.rows)} image(s) segmented, outputs in {out}", file=sys.stderr)
    if summary.failed:
        print(f"{len(summary.failed)} file(s) failed: " + ", ".join(summary.failed), file=sys.stderr)
        return 1
    return 0
