"""Write a dataset's images with their stain amounts changed (skimage's rgb2hed / hed2rgb), as flat
datasets (``OUT/<name>-<variant>/images`` + ``masks``) that ``attention-unet evaluate --split all``
scores: how much a model depends on the haematoxylin and eosin amounts of H&E tissue, and whether a
test-time stain normalisation would help it (docs/experiments, "Stain amounts at test time").

    python tools/stain_variants.py ../shared/data/tnbc --part all --variants rgb h hx130 hn --out runs/stain
    python tools/stain_variants.py ../shared/data/dsb2018/stage1_train.zip --part valid --modality stained ...

Variants: ``rgb`` the image as stored; ``h`` the haematoxylin amount alone as a grey image (1st-99.8th
percentile, nuclei bright as in fluorescence); ``hs`` the same smoothed by a Gaussian of 1 px; ``hxF``
haematoxylin times F/100; ``hn`` haematoxylin scaled so that its 99th percentile is the median of the
reference images' (``--reference``: TNBC's and DSB-2018's stained train images); ``hen`` both stains so;
``red``, ``green``, ``blue`` a grey (fluorescence) image in that colour alone, as microscope software
exports a DAPI channel (``data.signal_channel``).
Parts are each dataset's default split (the one every shipped model was selected on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile
from scipy import ndimage
from skimage.color import hed2rgb, rgb2hed

from attention_unet.io import data

REFERENCE = ("../shared/data/tnbc", "../shared/data/dsb2018/stage1_train.zip")
COLOURS = ("red", "green", "blue")


def records(source: str, part: str, modality: str | None = None) -> list[data.Record]:
    found = data.load_records(source)
    found = data.select(found, data.default_split([r.id for r in found]), part)
    return [r for r in found if modality is None or data.modality(r.image) == modality]


def hed_of(image: np.ndarray) -> np.ndarray:
    return rgb2hed(np.clip(image[..., :3].astype(np.float32) / 255, 1e-6, 1.0))


def reference_p99(sources: tuple[str, ...]) -> np.ndarray:
    """Median over the sources' stained train images of each stain's 99th percentile."""
    images = [r.image for s in sources for r in records(s, "train", "stained")]
    return np.median([np.percentile(hed_of(i).reshape(-1, 3), 99, axis=0) for i in images], axis=0)


def variant(image: np.ndarray, name: str, reference: np.ndarray | None) -> np.ndarray:
    if name == "rgb":
        return image[..., :3]
    if name in COLOURS:
        coloured = np.zeros_like(image[..., :3])
        coloured[..., COLOURS.index(name)] = image[..., 0]
        return coloured
    if name in ("h", "hs"):
        amount = rgb2hed(image[..., :3])[..., 0]  # skimage's own (float64) conversion
        amount = ndimage.gaussian_filter(amount, 1.0) if name == "hs" else amount
        low, high = np.percentile(amount, (1, 99.8))
        grey = np.clip((amount - low) / (high - low + 1e-9), 0, 1)
        return np.repeat((grey * 255).astype(np.uint8)[..., None], 3, axis=2)
    hed = hed_of(image)
    if name.startswith("hx"):
        hed[..., 0] *= float(name[2:]) / 100
    elif name in ("hn", "hen"):
        assert reference is not None
        stains = 1 if name == "hn" else 2
        p99 = np.percentile(hed.reshape(-1, 3)[:, :stains], 99, axis=0)
        hed[..., :stains] *= reference[:stains] / np.maximum(p99, 1e-6)
    else:
        raise SystemExit(f"unknown variant {name}")
    return np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data")
    parser.add_argument("--part", default="all", choices=("train", "valid", "test", "all"))
    parser.add_argument("--modality", choices=("fluorescence", "brightfield", "stained"))
    parser.add_argument("--variants", nargs="+", default=["rgb", "hx130"])
    parser.add_argument("--reference", nargs="*", default=list(REFERENCE), help="datasets for hn / hen")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    chosen = records(args.data, args.part, args.modality)
    reference = reference_p99(tuple(args.reference)) if {"hn", "hen"} & set(args.variants) else None
    if reference is not None:
        print("reference 99th percentiles (H, E, D):", np.round(reference, 4))
    name = Path(args.data).name.split(".")[0]
    for v in args.variants:
        folder = args.out / f"{name}-{v}"
        for sub in ("images", "masks"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for r in chosen:
            image = variant(r.image, v, reference)
            if image.dtype == np.uint8:
                iio.imwrite(folder / "images" / f"{r.id}.png", image)
            else:  # 16-bit colour (BBBC039's in one colour): Pillow writes no such PNG
                tifffile.imwrite(folder / "images" / f"{r.id}.tif", image, photometric="rgb")
            iio.imwrite(folder / "masks" / f"{r.id}.png", r.labels.astype(np.uint16))
        print(f"{folder}: {len(chosen)} images")


if __name__ == "__main__":
    main()
