"""Pack the train and valid parts of several datasets for a lent GPU machine (`device` tool), where
../shared does not travel and the working tree may hold 64 MiB.

    python tools/devdata.py --data ../shared/data/dsb2018/stage1_train.zip ../shared/data/bbbc039 \
        ../shared/data/tnbc --eight-bit bbbc039 --out .devdata

The parts are each dataset's default split (``data.default_split``, which is the split v4 trained and
every shipped model was selected on), or those of ``--split`` (a several-dataset split.json, a run's).

Each dataset of the split file becomes ``OUT/<name>/images/<id>.png`` + ``masks/<id>.png`` (the
flat layout; 16-bit label PNGs; grey PNGs where the three channels are equal), holding only the ids
of its train and valid parts: the test parts never leave this machine. ``OUT/split.json`` gives the
same parts keyed by the new folders (test empty). Every record is read back and compared with the
original, so the GPU machine trains on exactly these pixels and labels, except in the datasets named
by ``--eight-bit``: their 16-bit images are stored at 8 bits (each image's own min..max), which the
polarity normalisation (percentiles) barely sees and which halves BBBC039 (45 -> 20 MB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from attention_unet.io import data


def default_splits(sources: list[str]) -> dict[str, dict[str, list[str]]]:
    """Each dataset's default split, keyed as a run's split.json keys them."""
    return {source: data.default_split([r.id for r in data.load_records(source)]) for source in sources}


def pack(
    splits: dict[str, dict[str, list[str]]], out: Path, eight_bit: tuple[str, ...] = ()
) -> dict[str, dict[str, list[str]]]:
    packed: dict[str, dict[str, list[str]]] = {}
    for source, parts in splits.items():
        name = Path(source).name.split(".")[0]
        folder = out / name
        keep = set(parts["train"]) | set(parts["valid"])
        records = {r.id: r for r in data.load_records(source) if r.id in keep}
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for record in records.values():
            image = record.image
            if name in eight_bit:
                low, high = int(image.min()), int(image.max())
                image = np.round((image - float(low)) * 255 / max(high - low, 1)).astype(np.uint8)
            if (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all():
                image = image[..., 0]
            if record.labels.max() > np.iinfo(np.uint16).max:
                raise SystemExit(f"{source}:{record.id}: more nuclei than a 16-bit label PNG holds")
            iio.imwrite(folder / "images" / f"{record.id}.png", image)
            iio.imwrite(folder / "masks" / f"{record.id}.png", record.labels.astype(np.uint16))
        for back in data.iter_records(folder):
            original = records[back.id]
            same = name in eight_bit or np.array_equal(back.image, original.image)
            same = same and np.array_equal(back.labels > 0, original.labels > 0)
            same = same and len(np.unique(back.labels)) == len(np.unique(original.labels))
            if not same:
                raise SystemExit(f"{source}:{back.id}: the packed copy differs from the original")
        packed[str(folder)] = {"train": parts["train"], "valid": parts["valid"], "test": []}
        print(f"{source}: {len(records)} images -> {folder}")
    (out / "split.json").write_text(json.dumps(packed, indent=1) + "\n")
    return packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="*", default=[], help="datasets to pack with their default splits")
    parser.add_argument("--split", type=Path, help="a several-dataset split.json (a run's) instead")
    parser.add_argument("--out", type=Path, default=Path(".devdata"))
    parser.add_argument("--eight-bit", nargs="*", default=[], help="datasets (folder names) to store at 8 bits")
    parser.add_argument(
        "--write-split",
        type=Path,
        help="only write the default splits of --data, keyed as a run's split.json, to this file "
        "(e.g. for tools/int8_calibration.py); pack nothing",
    )
    args = parser.parse_args()
    if bool(args.data) == bool(args.split):
        parser.error("give --data or --split")
    splits = json.loads(args.split.read_text()) if args.split else default_splits(args.data)
    if args.write_split:
        args.write_split.write_text(json.dumps(splits, indent=1) + "\n")
        return
    pack(splits, args.out, tuple(args.eight_bit))


if __name__ == "__main__":
    main()
