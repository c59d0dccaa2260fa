"""What a size estimate can read, beside the truth: each image of a split part at each zoom, its
labels' true median diameter, and what the network finds at each probe factor (the image resized
by it; one view, the mask's watershed): how many instances, their median and pixel-weighted
diameters (image pixels), and their confidence (mean instance probability). With ``--plan``, also
the factor the model's own policy chooses (``pipeline.mosaic_plan``). Size rules are then compared on
this table without running the network again (tools/size_rules.py).

    python tools/size_table.py --out runs/size/table.csv --zooms 0.25 0.5 1 2 4 8 \
        [--model nuclei] [--limit 24] ../shared/data/dsb2018/stage1_train.zip ../shared/data/bbbc039

Images are capped at MAX_PIXELS after zooming (the zoom actually used is in the table); probes
whose image would exceed it are skipped.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np

from attention_unet.commands.evaluate import zoomed
from attention_unet.inference.engine import load_predictor
from attention_unet.inference.pipeline import Predictor, mosaic_plan
from attention_unet.inference.plan import size_statistics, sizes_of
from attention_unet.inference.tiles import rescaled
from attention_unet.instances import instances, mean_probability
from attention_unet.io import data

MAX_PIXELS = 4_200_000
PROBES = (4.0, 2.0, 1.0, 0.5, 0.25, 0.125)


def zoomed_record(record: data.Record, zoom: float, crop: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """The record's image and labels resized by ``zoom``, and the zoom used: capped at MAX_PIXELS,
    or, with ``crop``, the central crop * crop pixels of the zoomed image (few large nuclei)."""
    image, labels = data.protocol_view(record, "native")
    if not crop:
        zoom = min(zoom, math.sqrt(MAX_PIXELS / (image.shape[0] * image.shape[1])))
    image, labels = zoomed(image, labels, zoom)
    if crop:
        y, x = (max(0, (side - crop) // 2) for side in labels.shape)
        image, labels = image[y : y + crop, x : x + crop], labels[y : y + crop, x : x + crop]
    return image, labels, zoom


def probe_row(predictor: Predictor, image: np.ndarray, value_range: tuple[float, float], probe: float) -> dict:
    """What the network finds on the image resized by ``probe``."""
    small = rescaled(image, probe)
    if small.shape[0] * small.shape[1] > MAX_PIXELS or min(small.shape[:2]) < 16:
        return {}
    probs, _ = predictor.network(value_range)(small, 0.0, False)
    s = predictor.settings
    labels = instances(probs[0], threshold=0.5, min_area=max(1, round(s.min_area * min(1.0, probe) ** 2)), h=s.h)
    stats = sizes_of(labels, (image.shape[1] / small.shape[1]) ** 2)
    confidence = mean_probability(probs[0], labels)
    return {"count": stats["count"], "median": stats["median"], "weighted": stats["weighted"], "conf": confidence}


def image_row(predictor: Predictor, record: data.Record, zoom: float, plan: bool) -> dict | None:
    image, labels, used = zoomed_record(record, zoom)
    areas = np.bincount(labels.ravel())[1:]
    if not (areas > 0).any():
        return None
    true = size_statistics(areas[areas > 0])
    row = {"id": record.id, "zoom": round(used, 4), "kind": data.modality(image), "pixels": image.size // 3}
    row |= {"true_count": true["count"], "true_median": true["median"]}
    value_range = data.normalisation_range(image, predictor.norm)
    for probe in PROBES:
        row |= {f"p{probe:g}_{k}": v for k, v in probe_row(predictor, image, value_range, probe).items()}
    if plan:
        start = time.perf_counter()
        row |= {"rule_factor": mosaic_plan(predictor, image, value_range).factor}
        row |= {"rule_seconds": round(time.perf_counter() - start, 2)}
    return row


def study_parser(doc: str) -> argparse.ArgumentParser:
    """The options the size study's tools share: datasets, split part, output, model, zooms."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--split-file")
    parser.add_argument("--part", default="valid")
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4, 8])
    parser.add_argument("--limit", type=int, default=0, help="the first N images of each part (0: all)")
    parser.add_argument("--crop", type=int, default=0, help="the central crop of this side after zooming (0: none)")
    return parser


def part_records(path: str, args: argparse.Namespace) -> list[data.Record]:
    """The split part's records of one dataset (the split file's, else the dataset's own), the first ``--limit``."""
    records = data.load_records(path)
    ids = [r.id for r in records]
    split = data.load_split(args.split_file, path) if args.split_file else data.default_split(ids)
    return data.select(records, split, args.part)[: args.limit or None]


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--plan", action="store_true", help="also the model's own choice (it may predict)")
    args = parser.parse_args()
    predictor = load_predictor(args.model, engine="torch" if args.model else "auto", scale="auto")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for path in args.data:
        records = part_records(path, args)
        for n, record in enumerate(records):
            found = [image_row(predictor, record, zoom, args.plan) for zoom in args.zooms]
            rows += [{"dataset": Path(path).stem} | r for r in found if r is not None]
            print(f"{Path(path).stem} {n + 1}/{len(records)}", flush=True)
            with open(out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
                writer.writeheader()
                writer.writerows(rows)


if __name__ == "__main__":
    main()
