"""Auto scale against the per-image oracle, with the whole pipeline: each image of a split part at
each zoom (images and labels resized, at most MAX_PIXELS), predicted with the model's own scale
setting ('auto') and at the scale its labels' true median diameter asks for ('oracle',
``Predictor.for_diameter``), scored as ``evaluate`` scores (pixel F1, DSB score). Prints the
mean per dataset and zoom and writes a row per image.

    python tools/size_f1.py --out runs/size/f1.csv --zooms 0.25 0.5 1 2 4 8 [--model nuclei] \
        [--limit 24] [--split-file S] [--crop SIDE] ../shared/data/dsb2018/stage1_train.zip ...

``--model auto``: each image with the model ``predict``'s default picks for it (its name in the
``model`` column), auto and oracle alike; the default engine (int8 where a model has it). No
``--model``: the default model, the default engine; another name: that model on torch.

``--crop 1024 --zooms 2.5`` on DSB-2018's large-nucleus group (tools/splits/dsb2018_large_nuclei.json)
gives images of few nuclei 64-226 px across, where auto scale's half-size probe fails most.
"""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from size_table import part_records, study_parser, zoomed_record  # this folder's: the same images and zooms

from attention_unet import metrics
from attention_unet.inference.engine import load_predictor
from attention_unet.inference.plan import size_statistics


def scores_of(probs: np.ndarray, found: np.ndarray, labels: np.ndarray) -> dict:
    """Pixel F1 of the foreground probability against the labels, and the DSB score of the instances ``found``."""
    pixel = metrics.pixel_scores(probs[0] > 0.5, labels > 0)
    return {"f1": pixel["f1"], "dsb": metrics.object_scores(labels, found)["dsb_score"]}


def scored(predictor, image: np.ndarray, labels: np.ndarray) -> dict:
    start = time.perf_counter()
    probs = predictor.probabilities(image)[0]
    pred = predictor.labels(probs)
    seconds = time.perf_counter() - start
    return scores_of(probs, pred, labels) | {"s": round(seconds, 2)}


def main() -> None:
    parser = study_parser(__doc__)
    parser.add_argument("--no-oracle", action="store_true")
    args = parser.parse_args()
    # the default engine for the default model and for auto's choice (int8 where a model has it)
    base = load_predictor(args.model, engine="torch" if args.model not in (None, "auto") else "auto")
    rows, means = [], defaultdict(list)
    for path in args.data:
        for record in part_records(path, args):
            for zoom in args.zooms:
                image, labels, used = zoomed_record(record, zoom, args.crop)
                areas = np.bincount(labels.ravel())[1:]
                if not (areas > 0).any():
                    continue
                row = {"dataset": Path(path).stem, "id": record.id, "zoom": zoom, "used": round(used, 3)}
                chosen = base.for_image(image)  # --model auto: the model auto picks for this image
                row |= {"model": chosen.name, **{f"auto_{k}": v for k, v in scored(chosen, image, labels).items()}}
                if not args.no_oracle:
                    true = size_statistics(areas[areas > 0])["median"]
                    oracle = chosen.for_diameter(max(true, chosen.settings.target_diameter / 8))
                    row |= {f"oracle_{k}": v for k, v in scored(oracle, image, labels).items()}
                rows.append(row)
                means[row["dataset"], zoom].append(row)
            print(record.id[:12], flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
                writer.writeheader()
                writer.writerows(rows)
    for (dataset, zoom), group in sorted(means.items()):
        cells = [f"{k} {np.mean([r[k] for r in group]):.3f}" for k in group[0] if k.endswith(("_f1", "_dsb"))]
        print(f"{dataset} zoom {zoom:g} ({len(group)} images): " + ", ".join(cells))


if __name__ == "__main__":
    main()
