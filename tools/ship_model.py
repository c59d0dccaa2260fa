"""Copy a run's exported model into the package as the shipped pretrained model, adding the
inference settings chosen on the valid split (tools/tune_inference.py) to its metadata.

    python tools/ship_model.py runs/nuclei-v2 --scale 1 --h 0.5 --min-area 16 --no-contours
"""

import argparse

from attention_unet.model import load_model, pretrained_path, save_model
from attention_unet.settings import InferenceSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--scale", default="1.0", help="'auto' or a factor")
    parser.add_argument("--target-diameter", type=float, default=16.0)
    parser.add_argument("--contour-threshold", type=float, default=0.5, help="tools/tune_instances.py")
    parser.add_argument("--min-area", type=int, default=8, help="smallest instance in pixels")
    parser.add_argument(
        "--no-contours", dest="contours", action="store_false", help="instances ignore the contour output"
    )
    parser.add_argument(
        "--distances", action="store_true", help="instances use the distance output (--h then in its 0..1 units)"
    )
    parser.add_argument("--h", type=float, default=1.0, help="watershed seed depth, tools/tune_instances.py")
    parser.add_argument("--out", help="write here instead of into the package (a candidate to tune or compare)")
    args = parser.parse_args()
    model = load_model(args.run)
    info = {k: v for k, v in model.info.items() if k not in ("model", "version")}
    scale = args.scale if args.scale == "auto" else float(args.scale)
    settings = InferenceSettings(
        tta=args.tta,
        scale=scale,
        target_diameter=args.target_diameter,
        contour_threshold=args.contour_threshold,
        contours=args.contours,
        distances=args.distances,
        h=args.h,
        min_area=args.min_area,
    )
    info["inference"] = settings.to_metadata()
    print(save_model(model, args.out or pretrained_path().parent, info))


if __name__ == "__main__":
    main()
