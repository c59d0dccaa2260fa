"""Pick the embedded sample from the DSB-2018 archive: images of the reference split's *test* part
only (so the shipped model never trained on them), stratified by modality, written in the flat
layout (grey images as 1-channel PNG, instance labels as 16-bit PNG).

    python tools/make_sample.py ../shared/data/dsb2018/stage1_train.zip src/attention_unet/sample
"""

import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from attention_unet.io import data

QUOTA = {"fluorescence": 28, "stained": 9, "brightfield": 3}


def main(archive: str, out: str) -> None:
    records = data.load_records(archive)
    test = data.select(records, data.reference_split([r.id for r in records]), "test")
    picked = []
    for kind, quota in QUOTA.items():
        group = sorted((r for r in test if data.modality(r.image) == kind), key=lambda r: r.id)
        step = max(1, len(group) // quota)
        picked += group[::step][:quota]
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for r in picked:
        grey = np.all(r.image == r.image[:, :, :1], axis=2).all()
        iio.imwrite(root / "images" / f"{r.id}.png", r.image[:, :, 0] if grey else r.image)
        iio.imwrite(root / "masks" / f"{r.id}.png", r.labels.astype(np.uint16))
    print(f"{len(picked)} images:", data.count_by(data.modality(r.image) for r in picked))


if __name__ == "__main__":
    main(*sys.argv[1:3])
