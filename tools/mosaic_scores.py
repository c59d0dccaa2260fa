"""Accuracy where the sliding window's tile grid matters: the valid images of a dataset tiled into
mosaics (k x k images of the same shape and kind, their labels numbered apart), each segmented as
``predict`` segments it (``--model auto``, the default engine) and scored as ``evaluate`` scores an
image (its ``score_records``, native protocol); per mosaic and the mean. Run it with two versions of the package (``PYTHONPATH``) to
compare a change of tiling on images large enough to take several tiles.

    python tools/mosaic_scores.py ../shared/data/bbbc039 --k 3
    python tools/mosaic_scores.py ../shared/data/monuseg --split-file runs/he/split.json --k 2
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from attention_unet.commands.evaluate import score_records
from attention_unet.inference.engine import load_predictor
from attention_unet.io import data

COLUMNS = ("f1", "dsb_score", "f1d", "aji", "pq")


def mosaics(path: str, split_file: str | None, k: int) -> list[data.Record]:
    """A record of each mosaic of k x k valid images of one shape and kind (k images
    in a row where fewer than k x k share one); leftovers are left out."""
    records = data.load_records(path)
    split = data.load_split(split_file, path) if split_file else data.default_split([r.id for r in records])
    groups = collections.defaultdict(list)
    for r in data.select(records, split, "valid"):
        image, labels = data.protocol_view(r, "native")
        groups[(image.shape, data.modality(image))].append((image, labels.astype(np.int32)))
    found = []
    for (_, kind), items in sorted(groups.items(), key=lambda g: str(g[0])):
        rows, per = (k, k * k) if len(items) >= k * k else (1, k)
        for start in range(0, len(items) - per + 1, per):
            chunk, offset, image_rows, label_rows = items[start : start + per], 0, [], []
            for row in range(rows):
                part = chunk[row * (per // rows) : (row + 1) * (per // rows)]
                labels = []
                for _, lab in part:
                    labels.append(np.where(lab > 0, lab + offset, 0))
                    offset += int(lab.max())
                image_rows.append(np.concatenate([im for im, _ in part], axis=1))
                label_rows.append(np.concatenate(labels, axis=1))
            found.append(data.Record(f"{kind}-{start}", np.concatenate(image_rows), np.concatenate(label_rows)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--split-file", help="default: the data's own default split")
    parser.add_argument("--k", type=int, default=3, help="images per side of a mosaic")
    args = parser.parse_args()
    rows = score_records(
        load_predictor("auto", engine="auto"), mosaics(args.data, args.split_file, args.k), "native", None
    )
    for row in rows:
        size = f"{row['height']}x{row['width']}"
        print(row["modality"], size, row["model"], " / ".join(f"{row[c]:.4f}" for c in COLUMNS))
    print(
        f"mean of {len(rows)} mosaics ({' / '.join(COLUMNS)}):",
        " / ".join(f"{np.mean([r[c] for r in rows]):.4f}" for c in COLUMNS),
    )


if __name__ == "__main__":
    main()
