"""What the per-nucleus table and the Fiji/QuPath exports add to predict's time (target: at most
15%), on the embedded sample with the shipped model: what predict did before them (segmentation:
network, tiling, instances; then the mask PNG, labels TIFF and overlay PNG) against measurements +
CSV + outlines + ROI set + GeoJSON, each the median of ``--repeats`` runs over the whole sample.

    python benchmarks/measure_overhead.py [--repeats 3]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import roifile
import tifffile

from attention_unet.commands.predict import load_predictor
from attention_unet.io.data import SAMPLE_DIR, load_records
from attention_unet.io.images import overlay
from attention_unet.io.measure import geojson_features, measurements, outlines, rois, write_geojson, write_table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    predictor = load_predictor()
    images = [r.image for r in load_records(SAMPLE_DIR)]
    segment_s, export_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            start = time.perf_counter()
            labels = []
            for k, image in enumerate(images):
                probs = predictor.probabilities(image)[0]
                labels.append(predictor.labels(probs))
                iio.imwrite(Path(tmp) / f"{k}_mask.png", ((probs[0] > 0.5) * 255).astype(np.uint8))
                tifffile.imwrite(Path(tmp) / f"{k}_labels.tif", labels[-1].astype(np.uint16), compression="zlib")
                iio.imwrite(Path(tmp) / f"{k}_overlay.png", overlay(image, labels[-1]))
            segment_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            for k, (image, label) in enumerate(zip(images, labels)):
                table = measurements(label, image)
                shapes = outlines(label)
                write_table(Path(tmp) / f"{k}.csv", [({}, table)])
                roifile.roiwrite(Path(tmp) / f"{k}.zip", rois(shapes), mode="w") if shapes else None
                write_geojson(Path(tmp) / f"{k}.geojson", geojson_features(shapes, table))
            export_s.append(time.perf_counter() - start)
    seg, exp = statistics.median(segment_s), statistics.median(export_s)
    print(
        f"{len(images)} images: segmentation {seg:.2f} s, measurements + CSV + ROIs + GeoJSON {exp:.2f} s (+{100 * exp / seg:.1f}%)"
    )


if __name__ == "__main__":
    main()
