"""Peak memory and time of block-wise prediction against image size (the whole-slide issue's
targets: peak RSS under 1.5 GB at 20,000 x 20,000 and the same within 20% at 10,000 x 10,000;
time per megapixel within 15% across sizes).

    python benchmarks/blockwise.py --sizes 5000 10000 20000 [--engine torch|onnx] [--tta-views 2 | --defaults] [--shapes] [--out benchmarks/blockwise.json]

Each image is a tiled BigTIFF of real nuclei (the sample's 256 x 256 fluorescence images side by
side, written tile by tile, so this script never holds it whole either), predicted by
`attention-unet predict --blockwise always --no-tta --scale 1` (or `--tta --tta-views N` with
``--tta-views``; the model's own settings with ``--defaults``) in a child process whose own peak RSS (ru_maxrss) is reported. Time includes
start-up, model loading and writing the zarr outputs.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

TILE = 512


def sample_tiles() -> list[np.ndarray]:
    import imageio.v3 as iio

    from attention_unet.io import data

    tiles = []
    for path in sorted((Path(data.SAMPLE_DIR) / "images").glob("*.png")):
        image = data.to_rgb(iio.imread(path))
        if image.shape[:2] == (256, 256) and (image[..., 0] == image[..., 2]).all() and np.median(image) < 60:
            tiles.append(image[..., 0])
    return tiles


def write_mosaic(path: Path, size: int) -> None:
    """A size x size tiled BigTIFF of the sample's nuclei, written 512 x 512 tile by tile."""
    import tifffile

    tiles = sample_tiles()
    per_row = -(-size // 256)

    def pieces() -> Iterator[np.ndarray]:
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                out = np.zeros((TILE, TILE), np.uint8)
                for dy in range(0, TILE, 256):
                    for dx in range(0, TILE, 256):
                        i, j = (y + dy) // 256, (x + dx) // 256
                        out[dy : dy + 256, dx : dx + 256] = tiles[(i * per_row + j) % len(tiles)]
                yield out

    tifffile.imwrite(path, pieces(), shape=(size, size), dtype=np.uint8, tile=(TILE, TILE), bigtiff=True)


def child(args: list[str]) -> None:
    """Run the command in this process and print its own peak RSS (what the parent reports)."""
    from attention_unet.cli import main

    code = main(args)
    print(json.dumps({"code": code, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--engine", default="auto", help="auto: predict's default engine")
    parser.add_argument("--tmp", default=None, help="folder for the images and outputs (default: the system's)")
    parser.add_argument("--out", default="benchmarks/blockwise.json")
    parser.add_argument("--shapes", action="store_true", help="also write --rois and --geojson")
    parser.add_argument("--tta-views", type=int, choices=[2, 4, 8], help="average this many views (default: one)")
    parser.add_argument("--defaults", action="store_true", help="the model's own settings (two views, auto scale)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for size in args.sizes:
            image = Path(tmp) / f"mosaic{size}.tif"
            write_mosaic(image, size)
            command = [str(image), "--out", str(Path(tmp) / f"out{size}"), "--blockwise", "always"]
            views = ["--tta", "--tta-views", str(args.tta_views)] if args.tta_views else ["--no-tta"]
            command += [] if args.defaults else [*views, "--scale", "1"]
            command += ["--engine", args.engine] + ["--rois", "--geojson"] * args.shapes
            start = time.perf_counter()
            done = subprocess.run(
                [sys.executable, __file__, "--child", "predict", *command], capture_output=True, text=True, check=True
            )
            seconds = time.perf_counter() - start
            report = json.loads(done.stdout.strip().splitlines()[-1])
            with open(Path(tmp) / f"out{size}" / "summary.csv", newline="") as f:
                summary = next(csv.DictReader(f))
            row = {
                "size": size,
                "engine": args.engine,
                "rois_geojson": args.shapes,
                "views": "the model's" if args.defaults else args.tta_views or 1,
                "seconds": round(seconds, 1),
                "megapixels_per_second": round(size * size / 1e6 / seconds, 3),
                "seconds_per_megapixel": round(seconds / (size * size / 1e6), 3),
                "peak_rss_mib": round(report["peak_rss_mib"]),
                "nucleus_count": int(summary["nucleus_count"]),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
            image.unlink()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
