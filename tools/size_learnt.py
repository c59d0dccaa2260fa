"""Learnt size estimates against auto scale's rules, without predicting: regressions of the log
median nucleus diameter fitted on the train parts' features (tools/size_features.py), scored on
the valid parts' by how far the factor they lead to is from the oracle's (|log2| of the ratio of
``factor_for_diameter`` of the estimate and of the true median; 0.5 is a factor of sqrt 2 off),
fitted on every source ("all") and with the scored source left out ("out": the honest measure for
sources never seen). Auto scale's own sizing is read from tools/size_ablation.py's output for the
same images and zooms (its rows zoomed as asked, not capped).

    python tools/size_learnt.py runs/size/features [--shipped runs/size/ablation-*.json]

Estimates: ``style-ridge`` and ``style-trees`` (each probe's style predicts the size at its scale,
one regression for every probe; the image's estimate is the median of the probes');
``probes-trees`` (gradient-boosted trees on every probe's measurements at once);
``probes-equivariant`` (trees on one probe's measurements predict the size at its scale, one
regression for every probe; the median of the probes').
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from size_features import PROBES  # this folder's: the probes the features were read at

from attention_unet.inference.plan import factor_for_diameter

TARGET = 16.0  # both shipped models' target_diameter
Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def load(folder: Path, part: str) -> dict[str, np.ndarray]:
    """Every dataset's features of one part, concatenated."""
    files = [np.load(f) for f in sorted(folder.glob(f"*-{part}.npz"))]
    return {k: np.concatenate([f[k] for f in files]) for k in files[0].files}


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1e-3) -> Callable[[np.ndarray], np.ndarray]:
    """scikit-learn's ridge regression on standardised columns, its penalty ``lam`` per row."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=lam * len(x))).fit(x, y).predict


def trees(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=0).fit(x, y).predict


def style_estimate(fit: Fit) -> Callable[[dict, dict], np.ndarray]:
    """Each probe's log style predicts log(diameter x probe); the median over an image's probes."""

    def estimate(train: dict, valid: dict) -> np.ndarray:
        xs, ys = [], []
        for i, probe in enumerate(PROBES):
            ok = ~np.isnan(train["styles"][:, i, 0])
            xs.append(np.log(train["styles"][ok, i] + 1e-3))
            ys.append(np.log(train["true"][ok] * probe))
        predict = fit(np.concatenate(xs), np.concatenate(ys))
        out = np.zeros(len(valid["true"]))
        for k, styles in enumerate(valid["styles"]):
            read = [i for i in range(len(PROBES)) if not np.isnan(styles[i, 0])]
            logs = predict(np.log(styles[read] + 1e-3)) - np.log([PROBES[i] for i in read])
            out[k] = math.exp(float(np.median(logs)))
        return out

    return estimate


def probe_columns(stats: np.ndarray) -> np.ndarray:
    """Every probe's :func:`probe_measures` in one row."""
    return np.concatenate([probe_measures(stats[:, i]) for i in range(len(PROBES))], axis=1)


def probes_estimate(train: dict, valid: dict) -> np.ndarray:
    predict = trees(probe_columns(train["stats"]), np.log2(train["true"] / TARGET))
    return TARGET * 2 ** predict(probe_columns(valid["stats"]))


def probe_measures(stats: np.ndarray) -> np.ndarray:
    """One probe's measurements (rows x :data:`size_features.STATS`): sizes as log2 of their ratio
    to the learnt size at the probe's scale (NaN where it found nothing), density as a log, the rest
    as they are."""
    sizes = np.log2(np.where(stats[:, 1:5] > 0, stats[:, 1:5], np.nan) / TARGET)
    return np.concatenate([sizes, np.log2(stats[:, :1] + 1e-3), stats[:, 5:7]], axis=1)


def probes_equivariant(train: dict, valid: dict) -> np.ndarray:
    """Each probe's measurements predict the size at its scale, one regression (trees) for every
    probe; the image's estimate is the median of its probes'."""
    xs, ys = [], []
    for i, probe in enumerate(PROBES):
        ok = ~np.isnan(train["stats"][:, i, 0])
        xs.append(probe_measures(train["stats"][ok, i]))
        ys.append(np.log2(train["true"][ok] * probe / TARGET))
    predict = trees(np.concatenate(xs), np.concatenate(ys))
    at_image = np.full((len(valid["true"]), len(PROBES)), np.nan)
    for i, probe in enumerate(PROBES):
        ok = ~np.isnan(valid["stats"][:, i, 0])
        if ok.any():
            at_image[ok, i] = predict(probe_measures(valid["stats"][ok, i])) - math.log2(probe)
    return TARGET * 2 ** np.nanmedian(at_image, axis=1)


ESTIMATES = {
    "style-ridge": style_estimate(ridge),
    "style-trees": style_estimate(trees),
    "probes-trees": probes_estimate,
    "probes-equivariant": probes_equivariant,
}


def factor_error(estimate: np.ndarray, true: np.ndarray) -> np.ndarray:
    """|log2| of the ratio of auto scale's factor for the estimate to its factor for the truth."""
    return np.abs(
        np.log2([factor_for_diameter(a, TARGET) / factor_for_diameter(b, TARGET) for a, b in zip(estimate, true)])
    )


def subset(table: dict, keep: np.ndarray) -> dict:
    return {k: v[keep] for k, v in table.items()}


def shipped_sizing(paths: list[str]) -> dict[tuple[str, str, float], float]:
    """(dataset, id, zoom) -> the diameter auto scale measured (tools/size_ablation.py rows zoomed as asked)."""
    found = {}
    for path in paths:
        for row in json.loads(Path(path).read_text()):
            if abs(row["used"] - row["zoom"]) < 1e-3:
                found[row["dataset"], row["id"], float(row["zoom"])] = row["sizing"]["shipped"][1] or TARGET
    return found


def line(name: str, errors: np.ndarray, datasets: np.ndarray) -> str:
    cells = [f"{name:22s}"]  # each dataset: mean error (share over 0.5) [rows]
    for dataset in sorted(set(datasets)):
        e = errors[datasets == dataset]
        cells.append(f"{dataset} {e.mean():.2f} ({(e > 0.5).mean():.0%}) [{len(e)}]")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", type=Path)
    parser.add_argument("--shipped", nargs="*", default=[])
    args = parser.parse_args()
    train, valid = load(args.features, "train"), load(args.features, "valid")
    keys = list(zip(valid["dataset"], valid["id"], valid["zoom"].astype(float)))
    rules = shipped_sizing(args.shipped)
    if rules:
        keep = np.array([k in rules for k in keys])
        valid, keys = subset(valid, keep), [k for k, kept in zip(keys, keep) if kept]
        print(
            line("rules (shipped)", factor_error(np.array([rules[k] for k in keys]), valid["true"]), valid["dataset"])
        )
    print(f"{len(train['true'])} train rows, {len(valid['true'])} valid rows; mean factor error (share > 0.5)")
    for name, estimate in ESTIMATES.items():
        print(line(f"{name} all", factor_error(estimate(train, valid), valid["true"]), valid["dataset"]), flush=True)
        out = np.zeros(len(valid["true"]))
        for dataset in sorted(set(valid["dataset"])):
            scored = valid["dataset"] == dataset
            out[scored] = estimate(subset(train, train["dataset"] != dataset), subset(valid, scored))
        print(line(f"{name} out", factor_error(out, valid["true"]), valid["dataset"]), flush=True)


if __name__ == "__main__":
    main()
