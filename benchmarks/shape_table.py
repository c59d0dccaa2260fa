"""The per-nucleus shape columns: ``measure.shape_table`` against skimage's regionprops_table
(what the table used before), on label images that ``predict`` wrote; the median of ``--repeats``
timings of each over all the images, and how many values differ once written to 6 significant
digits (as the CSV writes them).

    attention-unet predict src/attention_unet/sample/images --out O
    python benchmarks/shape_table.py O/*_labels.tif [--repeats 3]
"""

import argparse
import statistics
import time

import numpy as np
import tifffile
from skimage.measure import regionprops_table

from attention_unet.io.measure import polygon_solidity, shape_table

NAMES = {
    "label": "label",
    "centroid_y": "centroid-0",
    "centroid_x": "centroid-1",
    "bbox_y0": "bbox-0",
    "bbox_x0": "bbox-1",
    "bbox_y1": "bbox-2",
    "bbox_x1": "bbox-3",
    "area": "area",
    "perimeter": "perimeter",
    "equivalent_diameter": "equivalent_diameter_area",
    "major_axis": "axis_major_length",
    "minor_axis": "axis_minor_length",
    "eccentricity": "eccentricity",
    "orientation": "orientation",
    "solidity": "polygon_solidity",
}


def regionprops_columns(labels: np.ndarray) -> dict[str, np.ndarray]:
    props = list(dict.fromkeys(v.split("-")[0] for v in NAMES.values() if v != "polygon_solidity"))
    return regionprops_table(labels, properties=props, extra_properties=(polygon_solidity,))


def timed(function, images: list[np.ndarray], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for labels in images:
            function(labels)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("labels", nargs="+", help="label images (TIFF; a stack's first plane)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images = [np.asarray(tifffile.imread(p)) for p in args.labels]
    images = [(im if im.ndim == 2 else im.reshape(-1, *im.shape[-2:])[0]).astype(np.int32) for im in images]
    differ = 0
    for labels in images:
        ours, theirs = shape_table(labels), regionprops_columns(labels)
        differ += sum(f"{a:.6g}" != f"{b:.6g}" for k, v in NAMES.items() for a, b in zip(ours[k], theirs[v]))
    nuclei = sum(len(np.unique(im)) - 1 for im in images)
    print(f"{len(images)} images, {nuclei} nuclei; values differing at 6 digits: {differ}")
    print(f"regionprops_table {timed(regionprops_columns, images, args.repeats):.2f} s")
    print(f"shape_table {timed(shape_table, images, args.repeats):.2f} s")


if __name__ == "__main__":
    main()
