"""Nucleus-size features of the automatic-scale probes, beside the labels' true sizes.

For each image of a split part (at zoom 1 and at one seeded random zoom, log-uniform 0.3-4x, at
most 4.2 M pixels), the shipped model's probes (the image at half and at quarter size) give the
size statistics of their instances; the labels give the truth. These rows are what auto scale's
fragments rule (InferenceSettings.fragments_ratio / fragments_count) was read from, on training
images only; `tools/size_check.py` then scores it on valid with the whole pipeline.

    python tools/size_probe.py --split-file runs/nuclei-v4/split.json --part train --out runs/size/train.csv \
        ../shared/data/dsb2018/stage1_train.zip ../shared/data/bbbc039 ../shared/data/tnbc
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np

from attention_unet import data
from attention_unet.evaluate import zoomed
from attention_unet.predict import load_predictor
from attention_unet.tiling import size_statistics, sizes_of

MAX_PIXELS = 4_200_000


def zoomed_record(record: data.Record, zoom: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The record's image and labels resized by ``zoom``, capped at MAX_PIXELS, and the zoom used."""
    image, labels = data.protocol_view(record, "native")
    zoom = min(zoom, math.sqrt(MAX_PIXELS / (image.shape[0] * image.shape[1])))
    return *zoomed(image, labels, zoom), zoom


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--split-file", required=True)
    parser.add_argument("--part", default="train")
    parser.add_argument("--out", required=True)
    parser.add_argument("--zooms", type=float, nargs="*", default=None, help="fixed zooms instead of 1 + random")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    predictor = load_predictor(None, engine="auto")
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in args.data:
        records = data.select(data.load_records(path), data.load_split(args.split_file, path), args.part)
        for n, record in enumerate(records):
            random_zoom = float(np.exp(rng.uniform(math.log(0.3), math.log(4.0))))
            for zoom in args.zooms or [1.0, random_zoom]:
                im, lab, zoom = zoomed_record(record, zoom)
                areas = np.bincount(lab.ravel())[1:]
                areas = areas[areas > 0]
                if not len(areas):
                    continue
                row = {"dataset": Path(path).stem, "id": record.id, "zoom": round(zoom, 4)}
                row.update({"modality": data.modality(record.image), "height": im.shape[0], "width": im.shape[1]})
                row.update({f"true_{k}": v for k, v in size_statistics(areas).items()})
                value_range = data.normalisation_range(im, predictor.norm)
                for probe in (0.5, 0.25):
                    stats = sizes_of(*predictor.probe_labels(im, value_range, probe))
                    row.update({f"p{probe:g}_{k}": v for k, v in stats.items()})
                rows.append(row)
            print(f"{Path(path).stem} {n + 1}/{len(records)}", flush=True)
            with open(out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
