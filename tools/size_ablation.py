"""What each rule of auto scale is worth: every image of a split part at each zoom (as
tools/size_f1.py zooms them), sized by the shipped policy and by the policy with one rule switched
off; the image is predicted only where a variant sizes it otherwise, and each factor once (the
probes and predictions are shared between the variants). Prints, per dataset and zoom, how many
images each variant changes and the change of mean pixel F1 and DSB score over all images
(unchanged images count as 0); writes a row per image.

    python tools/size_ablation.py --out runs/size/ablation.json [--model auto] [--zooms ...] \
        [--split-file S] [--limit N] ../shared/data/tnbc ...

Without --model, each image gets the model `predict` picks for it (`--model auto`), int8 where it has one.

Variants: ``no-fragments`` (FragmentsRule ratio 0), ``no-second-look`` (shrink_above 0),
``no-fine`` (no fine probes), ``no-coarse`` (no coarse probes).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from size_f1 import scores_of  # this folder's: scored as size_f1 scores
from size_table import part_records, study_parser, zoomed_record  # this folder's: the same images and zooms

from attention_unet.inference.engine import load_predictor
from attention_unet.inference.pipeline import Predictor
from attention_unet.inference.plan import FragmentsRule, ScalePolicy, choose
from attention_unet.io import data

VARIANTS: dict[str, Callable[[ScalePolicy], ScalePolicy]] = {
    "no-fragments": lambda p: replace(p, fragments=FragmentsRule(ratio=0)),
    "no-second-look": lambda p: replace(p, shrink_above=0),
    "no-fine": lambda p: replace(p, fine_probes=()),
    "no-coarse": lambda p: replace(p, coarse_probes=()),
}


def remembered(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` computed once per argument (an array argument known by its shape and mean)."""
    seen: dict[tuple, Any] = {}

    def call(*args: Any) -> Any:
        key = tuple((a.shape, float(a.mean())) if isinstance(a, np.ndarray) else a for a in args)
        if key not in seen:
            seen[key] = function(*args)
        return seen[key]

    return call


def compared(predictor: Predictor, image: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """The sizing and plan of each policy, and the scores of each plan that differs from the shipped one's."""
    if (channel := data.signal_channel(image)) is not None:
        image = np.repeat(image[..., channel : channel + 1], 3, axis=2)  # as Predictor.probabilities
    value_range = data.normalisation_range(image, predictor.norm)
    network = remembered(predictor.network(value_range))
    at = remembered(lambda f, d: predictor.predicted_at(image, value_range, f, d, predictor.smoothing))
    policies = {"shipped": predictor.policy} | {n: v(predictor.policy) for n, v in VARIANTS.items()}
    cap = predictor.policy.cap(*image.shape[:2])
    sizings = {}
    for name, policy in policies.items():
        factor, diameter, large = policy.sizing(image, network)
        sizings[name] = (min(factor, cap), diameter, large, policy.tries_smaller(min(factor, cap), diameter))
    row: dict[str, Any] = {
        "sizing": {n: [round(v, 3) if isinstance(v, float) else v for v in s] for n, s in sizings.items()}
    }
    if all(s == sizings["shipped"] for s in sizings.values()):
        return row
    scores: dict[tuple, dict[str, float]] = {}
    plans = {}
    for name, policy in policies.items():
        plan, predicted = choose(policy, sizings[name][:3], at, predictor.decoder.confidence)
        plans[name] = (plan.factor, plan.diameter)
        if plans[name] not in scores:
            scores[plans[name]] = scores_of(predicted[0], predictor.labels(predicted[0]), labels)
    shipped = scores[plans["shipped"]]
    row |= shipped
    for name in VARIANTS:
        if plans[name] != plans["shipped"]:
            own = scores[plans[name]]
            row[name] = {
                "factor": plans[name][0],
                "d_f1": own["f1"] - shipped["f1"],
                "d_dsb": own["dsb"] - shipped["dsb"],
            }
    return row


def main() -> None:
    args = study_parser(__doc__).parse_args()
    base = load_predictor(args.model or "auto", engine="auto")  # as predict: the model auto picks, int8
    rows = []
    for path in args.data:
        for record in part_records(path, args):
            for zoom in args.zooms:
                image, labels, used = zoomed_record(record, zoom, args.crop)
                if not labels.any():
                    continue
                chosen = base.for_image(image)
                head = {"dataset": Path(path).stem, "id": record.id, "zoom": zoom, "used": round(used, 3)}
                rows.append(head | {"model": chosen.name} | compared(chosen, image, labels))
            print(record.id[:12], flush=True)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(rows, indent=1))
    groups = defaultdict(list)
    for row in rows:
        groups[row["dataset"], row["zoom"]].append(row)
    for (dataset, zoom), group in sorted(groups.items()):
        cells = []
        for name in VARIANTS:
            changed = [r[name] for r in group if name in r]
            f1, dsb = (sum(c[k] for c in changed) / len(group) for k in ("d_f1", "d_dsb"))
            cells.append(f"{name} {len(changed)} changed, F1 {f1:+.4f}, DSB {dsb:+.4f}")
        print(f"{dataset} zoom {zoom:g} ({len(group)} images): " + "; ".join(cells))


if __name__ == "__main__":
    main()
