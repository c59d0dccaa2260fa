"""A Cellpose-style size model, tried against auto scale's probe: ridge regression of the log median
nucleus diameter on the network's globally pooled features (every encoder level and the bridge) of
the half-size probe input, fitted on the train part, scored on valid and leaving each dataset out.

The rows are size_probe.py's (zoom 1 and one seeded random zoom per image, the same seed), so the
probe's own estimates (size_probe.py's CSV, ``--probes``) are scored on the very same rows. A
decision is right when the factor auto scale would choose from the estimate lies within 1.5x of the
factor the labels' median nucleus asks for (target 16 px, left alone within 0.5-2x).

    python tools/size_regression.py --split-file runs/nuclei-v4/split.json --cache runs/size \\
        --probes runs/size/train.csv runs/size/valid.csv DSB BBBC039 TNBC
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
import torch
from size_probe import zoomed_record
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from attention_unet import data
from attention_unet.model import load_model
from attention_unet.settings import InferenceSettings
from attention_unet.tiling import Predictor, factor_for_diameter, size_statistics


def pooled_features(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Mean activation of every channel of every encoder level and the bridge, on the image at the
    probe's size (half), normalised as the predictor does."""
    pooled: list[np.ndarray] = []
    hooks = [
        block.register_forward_hook(lambda _m, _i, out: pooled.append(out.mean(dim=(2, 3))[0].numpy()))
        for block in [*model.encoders, model.bridge]
    ]
    value_range = data.normalisation_range(image, "polarity")
    height, width = image.shape[:2]
    small = data.resize(image, (max(8, round(height * Predictor.probe)), max(8, round(width * Predictor.probe))))
    x = data.normalise(small, "polarity", value_range).transpose(2, 0, 1)[None]
    with torch.inference_mode():
        model(torch.from_numpy(np.ascontiguousarray(x)))
    for hook in hooks:
        hook.remove()
    return np.concatenate(pooled)


def rows_of(model: torch.nn.Module, paths: list[str], split_file: str, part: str, cache: Path) -> tuple:
    """(features, [(dataset, id, zoom, true median diameter)]) for a split part, cached as npz."""
    stored = cache / f"pooled-{part}.npz"
    if stored.exists():
        saved = np.load(stored, allow_pickle=False)
        return saved["x"], [(d, i, float(z), float(m)) for d, i, z, m in saved["meta"]]
    rng = np.random.default_rng(0)  # size_probe.py's seed and draws: the same rows
    features, meta = [], []
    for path in paths:
        records = data.select(data.load_records(path), data.load_split(split_file, path), part)
        for n, record in enumerate(records):
            random_zoom = float(np.exp(rng.uniform(math.log(0.3), math.log(4.0))))
            for zoom in (1.0, random_zoom):
                image, labels, zoom = zoomed_record(record, zoom)
                areas = np.bincount(labels.ravel())[1:]
                if not areas.any():
                    continue
                features.append(pooled_features(model, image))
                meta.append((Path(path).stem, record.id, zoom, size_statistics(areas[areas > 0])["median"]))
            print(f"{part} {Path(path).stem} {n + 1}/{len(records)}", flush=True)
    x = np.array(features)
    np.savez(stored, x=x, meta=np.array([tuple(map(str, row)) for row in meta]))
    return x, meta


def factor(diameter: np.ndarray) -> np.ndarray:
    target = InferenceSettings.target_diameter
    return np.array(
        [factor_for_diameter(max(d, 1e-3), target, Predictor.auto_range, Predictor.auto_full) for d in diameter]
    )


def score(estimate: np.ndarray, truth: np.ndarray) -> str:
    right = np.abs(np.log(factor(estimate) / factor(truth))) <= math.log(1.5)
    large = truth > 32
    return f"{right.sum()}/{len(right)} right, nuclei > 32 px {right[large].sum()}/{large.sum()}"


def fit(x: np.ndarray, diameters: np.ndarray) -> Pipeline:
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13)))
    return model.fit(np.log(x + 1e-3), np.log(diameters))


def predict(model: Pipeline, x: np.ndarray) -> np.ndarray:
    return np.exp(model.predict(np.log(x + 1e-3)))


def probe_medians(csv_path: str, meta: list[tuple]) -> np.ndarray:
    """The probe's median diameter (size_probe.py's CSV) on each row; rows matched by nearest zoom."""
    found: dict[tuple[str, str], list[dict[str, str]]] = {}
    with open(csv_path) as f:
        for row in csv.DictReader(f):
            found.setdefault((row["dataset"], row["id"]), []).append(row)
    return np.array(
        [
            float(min(found[(d, i)], key=lambda row: abs(float(row["zoom"]) - zoom))["p0.5_median"] or "nan")
            for d, i, zoom, _ in meta
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+")
    parser.add_argument("--split-file", required=True)
    parser.add_argument("--model", default=None, help="default: the shipped model")
    parser.add_argument("--cache", required=True, help="folder for the pooled features (pooled-PART.npz)")
    parser.add_argument("--probes", nargs=2, metavar=("TRAIN_CSV", "VALID_CSV"), help="size_probe.py's rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = load_model(args.model)
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    parts = {part: rows_of(network, args.data, args.split_file, part, Path(args.cache)) for part in ("train", "valid")}
    (x_train, meta_train), (x_valid, meta_valid) = parts["train"], parts["valid"]
    d_train, d_valid = (np.array([row[3] for row in meta]) for meta in (meta_train, meta_valid))
    sets_train, sets_valid = (np.array([row[0] for row in meta]) for meta in (meta_train, meta_valid))
    regression = fit(x_train, d_train)
    estimates = {"regression": predict(regression, x_valid)}
    if args.probes:
        estimates["probe median"] = probe_medians(args.probes[1], meta_valid)
    for name, estimate in estimates.items():
        for dataset in dict.fromkeys(sets_valid):
            rows = (sets_valid == dataset) & np.isfinite(estimate)
            print(f"valid, {name}, {dataset}: {score(estimate[rows], d_valid[rows])}")
    # leaving a dataset out: fitted on the other datasets' train rows, scored on its train and valid rows
    x_all, d_all = np.vstack([x_train, x_valid]), np.concatenate([d_train, d_valid])
    sets_all = np.concatenate([sets_train, sets_valid])
    if args.probes:
        medians = np.concatenate([probe_medians(args.probes[0], meta_train), probe_medians(args.probes[1], meta_valid)])
    for dataset in dict.fromkeys(sets_train):
        left_out = fit(x_train[sets_train != dataset], d_train[sets_train != dataset])
        rows = sets_all == dataset
        print(f"{dataset} left out, regression: {score(predict(left_out, x_all[rows]), d_all[rows])}")
        if args.probes:
            rows &= np.isfinite(medians)
            print(f"{dataset} left out, probe median: {score(medians[rows], d_all[rows])}")


if __name__ == "__main__":
    main()
