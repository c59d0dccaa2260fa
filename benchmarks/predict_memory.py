"""Peak memory and time of `attention-unet predict --no-tta` on one large synthetic image (target:
under 4 GB at 8000 x 8000), measured in a child process by its peak RSS (ru_maxrss). TTA multiplies
the time by 8 and leaves the memory as it is (the views are taken per batch of tiles).

    python benchmarks/predict_memory.py [--size 8000] [--out benchmarks/predict_memory.json]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=8000)
    parser.add_argument("--out", default="benchmarks/predict_memory.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        # dark background with bright blobs every 40 px, blurred as a microscope's optics blur them
        # (the shipped model ignores flat, sharp-edged disks): a fluorescence-like load for the watershed too
        from scipy import ndimage

        yy, xx = np.mgrid[: args.size, : args.size].astype(np.float32) % 40
        disks = ndimage.gaussian_filter((((yy - 20) ** 2 + (xx - 20) ** 2) < 100).astype(np.float32), 2)
        del yy, xx
        image = (20 + 180 * disks + rng.normal(0, 5, (args.size, args.size))).clip(0, 255).astype(np.uint8)
        del disks
        path = Path(tmp) / "big.png"
        iio.imwrite(path, image)
        del image
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "attention_unet", "predict", str(path), "--out", str(Path(tmp) / "out"), "--no-tta"],
            check=True,
        )
        seconds = time.perf_counter() - start
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        count = (Path(tmp) / "out" / "summary.csv").read_text().splitlines()[1].split(",")[3]
    result = {
        "size": args.size,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(peak_mib),
        "nucleus_count": int(count),
    }
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
