"""Copy a run's exported model into the package as the shipped pretrained model, adding the
inference settings chosen on the valid split (tools/tune_inference.py) to its metadata.

    python tools/ship_model.py runs/nuclei-v2 --scale 1 --h 0.5 --min-area 16 --no-contours
"""

import argparse
from pathlib import Path

from attention_unet.model import load_model, pretrained_path, save_model
from attention_unet.settings import TTA_VIEWS, InferenceSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--tta-views", type=int, default=InferenceSettings.tta_views, choices=sorted(TTA_VIEWS))
    parser.add_argument("--scale", default="1.0", help="'auto' or a factor")
    parser.add_argument("--target-diameter", type=float, default=16.0)
    parser.add_argument("--contour-threshold", type=float, default=0.5, help="tools/tune_instances.py")
    parser.add_argument("--min-area", type=int, default=8, help="smallest instance in pixels")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=InferenceSettings.min_confidence,
        help="weakest instance kept (mean probability; 0: all)",
    )
    parser.add_argument(
        "--stain-smoothing",
        type=float,
        default=InferenceSettings.stain_smoothing,
        help="Gaussian sigma for sharp stained tissue (0: off)",
    )
    parser.add_argument("--stain-sharpness", type=float, default=InferenceSettings.stain_sharpness)
    parser.add_argument(
        "--no-contours", dest="contours", action="store_false", help="instances ignore the contour output"
    )
    parser.add_argument(
        "--distances", action="store_true", help="instances use the distance output (--h then in its 0..1 units)"
    )
    parser.add_argument("--h", type=float, default=1.0, help="watershed seed depth, tools/tune_instances.py")
    parser.add_argument("--out", help="write here instead of into the package (a candidate to tune or compare)")
    parser.add_argument(
        "--int8-calibrate", nargs="+", metavar="INPUT", help="also write model.int8.onnx calibrated on these images"
    )
    args = parser.parse_args()
    model = load_model(args.run)
    info = {k: v for k, v in model.info.items() if k not in ("model", "version")}
    scale = args.scale if args.scale == "auto" else float(args.scale)
    settings = InferenceSettings(
        tta=args.tta,
        tta_views=args.tta_views,
        scale=scale,
        target_diameter=args.target_diameter,
        contour_threshold=args.contour_threshold,
        contours=args.contours,
        distances=args.distances,
        h=args.h,
        min_area=args.min_area,
        min_confidence=args.min_confidence,
        stain_smoothing=args.stain_smoothing,
        stain_sharpness=args.stain_sharpness,
    )
    info["inference"] = settings.to_metadata()
    saved = save_model(model, args.out or pretrained_path().parent, info)
    print(saved)
    if args.int8_calibrate:
        write_int8(Path(saved), args.int8_calibrate)


def write_int8(weights: Path, calibrate: list[str]) -> None:
    """``model.int8.onnx`` beside ``weights``: the int8 ONNX that ``predict --engine auto`` runs on a
    CPU, calibrated on ``calibrate`` (tools/int8_calibration.py: every modality), with the weights'
    sha256 in its metadata so that a stale one is never used."""
    import hashlib
    import json
    import tempfile

    import onnx

    from attention_unet.io.images import calibration_images
    from attention_unet.model.export import calibration_tiles, export_onnx, quantize_onnx
    from attention_unet.model.runtime import onnx_info

    network = load_model(weights)
    images = calibration_images(calibrate)
    norm = network.info.get("train", {}).get("norm", "fixed")
    tiles = calibration_tiles(images, norm, multiple=2**network.config.depth)
    target = weights.with_suffix(".int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        quantize_onnx(export_onnx(network, Path(tmp) / "model.onnx"), target, tiles)
    info = {**onnx_info(target), "quantised_from": hashlib.sha256(weights.read_bytes()).hexdigest()}
    info["int8_calibration"] = f"{len(tiles)} images: tools/int8_calibration.py"
    graph = onnx.load(str(target))
    onnx.helper.set_model_props(graph, {"attention_unet": json.dumps(info)})
    onnx.save(graph, str(target))
    print(target)


if __name__ == "__main__":
    main()
