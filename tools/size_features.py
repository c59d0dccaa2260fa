"""What a learnt size estimate could read, per image and zoom, with the truth to learn: at each
probe factor, the network's style (the global mean of each encoder level and of the bridge, as
Cellpose 3's size model reads its style vector) and what auto scale's probes measure (the
instances' count per learnt-nucleus area, median, quartile and pixel-weighted diameters at the
probe's scale, mean instance probability, foreground share); and the labels' median diameter.

    python tools/size_features.py --out runs/size/features/tnbc-train.npz --part train --random 6 \
        [--seed 1] [--split-file S] [--zooms ...] ../shared/data/tnbc

Each image is zoomed (``--zooms``, and ``--random N`` zooms drawn log-uniformly from 0.25-8) after
cutting the central part that becomes at most 1024 x 1024 pixels; a probe reads at most 512 x 512
pixels at its scale (the central window). The truth is the whole image's median diameter times the
zoom. Each image is read by the model ``predict`` picks for it (``--model auto``): its default
engine for the probes, torch for the style. Fitted and scored by tools/size_learnt.py.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from size_table import part_records  # this folder's: the same split parts

from attention_unet.commands.evaluate import zoomed
from attention_unet.inference.engine import load_predictor
from attention_unet.inference.pipeline import Predictor
from attention_unet.inference.plan import size_statistics, sizes_of
from attention_unet.inference.tiles import rescaled
from attention_unet.instances import instances, mean_probability
from attention_unet.io import data
from attention_unet.model import load_model, zoo

PROBES = (2.0, 1.0, 0.5, 0.25, 0.125)
STATS = ("density", "median", "q25", "q75", "weighted", "sure", "foreground")
COLUMNS = ("dataset", "id", "zoom", "model", "modality", "true")  # per row; "true": the median diameter
SIDE = 1024  # the zoomed image's central part
PROBE_SIDE = 512  # what a probe reads at its scale


def style(model: torch.nn.Module, batch: np.ndarray) -> np.ndarray:
    """The global mean of each encoder level's and the bridge's features (1 x C x H x W input)."""
    x = torch.from_numpy(batch)
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % 2**model.config.depth, (-width) % 2**model.config.depth
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    means = []
    with torch.inference_mode():
        for encoder in model.encoders:
            x = encoder(x)
            means.append(x.mean((2, 3))[0])
            x = F.max_pool2d(x, 2)
        means.append(model.bridge(x).mean((2, 3))[0])
    return torch.cat(means).numpy()


def probe_stats(predictor: Predictor, small: np.ndarray, value_range: tuple[float, float], probe: float) -> list[float]:
    """:data:`STATS` of what the network finds on a probe image (diameters in pixels of the probe)."""
    probs, _ = predictor.network(value_range)(small, 0.0, False)
    s = predictor.settings
    labels = instances(probs[0], threshold=0.5, min_area=max(1, round(s.min_area * probe**2)), h=s.h)
    sizes = sizes_of(labels)
    target = s.target_diameter
    density = sizes["count"] * target**2 / labels.size
    return [density, sizes["median"], sizes["q25"], sizes["q75"], sizes["weighted"]] + [
        mean_probability(probs[0], labels),
        float((probs[0] > 0.5).mean()),
    ]


def features(predictor: Predictor, model: torch.nn.Module, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(probes x style, probes x :data:`STATS`) of a zoomed image; NaN where a probe is under 32 pixels."""
    if (channel := data.signal_channel(image)) is not None:
        image = np.repeat(image[..., channel : channel + 1], 3, axis=2)  # as Predictor.probabilities
    value_range = data.normalisation_range(image, predictor.norm)
    width = sum(model.config.width * 2**i for i in range(model.config.depth + 1))
    styles = np.full((len(PROBES), width), np.nan, np.float32)
    stats = np.full((len(PROBES), len(STATS)), np.nan, np.float32)
    for i, probe in enumerate(PROBES):
        side = min(SIDE, round(PROBE_SIDE / probe))
        y, x = (max(0, (s - side) // 2) for s in image.shape[:2])
        small = rescaled(image[y : y + side, x : x + side], probe)
        if min(small.shape[:2]) < 32:
            continue
        batch = data.normalise(small, predictor.norm, value_range).transpose(2, 0, 1)[None].copy()
        styles[i] = style(model, batch)
        stats[i] = probe_stats(predictor, small, value_range, probe)
    return styles, stats


def zooms_of(args: argparse.Namespace, rng: np.random.Generator) -> list[float]:
    drawn = np.exp(rng.uniform(math.log(0.25), math.log(8), args.random))
    return [*(args.zooms or []), *(float(z) for z in drawn)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split-file")
    parser.add_argument("--part", default="valid")
    parser.add_argument("--zooms", type=float, nargs="*")
    parser.add_argument("--random", type=int, default=0, help="this many zooms drawn per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    rng, base, models = np.random.default_rng(args.seed), load_predictor("auto", engine="auto"), {}
    rows, styles, stats, start = [], [], [], time.perf_counter()
    records = part_records(args.data, args)
    for n, record in enumerate(records):
        image, labels = data.protocol_view(record, "native")
        areas = np.bincount(labels.ravel())[1:]
        if not (areas > 0).any():
            continue
        true = size_statistics(areas[areas > 0])["median"]
        for zoom in zooms_of(args, rng):
            side = math.ceil(SIDE / zoom) + 2
            y, x = (max(0, (s - side) // 2) for s in labels.shape)
            part, _ = zoomed(image[y : y + side, x : x + side], labels[y : y + side, x : x + side], zoom)
            part = data.central(part, SIDE)
            chosen = base.for_image(part)
            if chosen.name not in models:
                models[chosen.name] = load_model(zoo.resolve(chosen.name)).eval()
            found = features(chosen, models[chosen.name], part)
            styles.append(found[0])
            stats.append(found[1])
            rows.append((Path(args.data).stem, record.id, zoom, chosen.name, data.modality(part), true * zoom))
        print(f"{n + 1}/{len(records)} {time.perf_counter() - start:.0f} s", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    columns = {name: np.array(column) for name, column in zip(COLUMNS, zip(*rows))}
    np.savez(args.out, styles=np.stack(styles), stats=np.stack(stats), **columns)


if __name__ == "__main__":
    main()
