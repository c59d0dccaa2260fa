"""Choose the instance-separation settings of a model on the *valid* split (never on test): the
seed depth h of the watershed, the smallest object kept, the weakest (mean probability) kept, and, for a model with those outputs, the
contour threshold and the watershed on the distance output, against the watershed on the mask
alone and plain connected components. Probabilities are computed once
(with the model's own TTA settings and its scale, or --scale); prints the mean per-image DSB-2018
score of each, and pathology's F1d and AJI beside it.

    python tools/tune_instances.py MODEL DATA [--protocol resize256] [--hs 0.5 1 2] [--min-areas 8]
        [--min-confidences 0 0.8 0.85] [--split-file SPLIT --part valid] [--zoom 0.4]
        [--thresholds 0.1 0.2 0.3 0.5]   (no thresholds: skip the contour variants)
        [--distance-hs 0.05 0.1 0.2]     (h on the distance output, 0..1)
"""

import argparse
import itertools
import json
import sys
from typing import Any

import numpy as np
from scipy import ndimage

from attention_unet import metrics
from attention_unet.commands.evaluate import zoomed
from attention_unet.inference.decode import Decoder
from attention_unet.inference.engine import load_predictor
from attention_unet.io import data
from attention_unet.settings import InferenceSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--protocol", choices=("resize256", "native"), default="resize256")
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--hs", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--distance-hs", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    parser.add_argument("--min-areas", type=int, nargs="+", default=[8])
    parser.add_argument("--min-confidences", type=float, nargs="+", default=[0.0])
    parser.add_argument("--split-file", help="default: the data's own default split")
    parser.add_argument("--part", default="valid", help="valid, train or all; never test")
    parser.add_argument("--zoom", type=float, default=1.0, help="images and labels resized first (evaluate's)")
    parser.add_argument("--scale", help="'auto' or a factor (default: the model's)")
    args = parser.parse_args()
    predictor = load_predictor(args.model, scale=args.scale)
    records = data.load_records(args.data)
    if args.part == "test":
        parser.error("settings are chosen on valid (or train, or every image of an unseen source), never on test")
    split = (
        data.load_split(args.split_file, args.data) if args.split_file else data.default_split([r.id for r in records])
    )
    items = []
    for r in data.select(records, split, args.part):
        image, labels = zoomed(*data.protocol_view(r, args.protocol), args.zoom)
        items.append((labels, predictor.probabilities(image)[0]))
    methods = {
        "connected components": lambda p: ndimage.label(p[0] > 0.5)[0],
    }
    outputs = predictor.outputs[: len(items[0][1])]

    def decoder(**settings: Any) -> Decoder:
        # each method's instance settings, decoded as predict decodes (contours and distances only where named)
        return Decoder(InferenceSettings(**({"contours": False} | settings)), outputs)

    for h, a, m in itertools.product(args.hs, args.min_areas, args.min_confidences):
        name = f"watershed h={h:g} min_area={a} min_confidence={m:g}"
        methods[name] = decoder(h=h, min_area=a, min_confidence=m).labels
    if "contour" in outputs:
        for t, h, a, m in itertools.product(args.thresholds, args.hs, args.min_areas, args.min_confidences):
            name = f"contour watershed t={t:g} h={h:g} min_area={a} min_confidence={m:g}"
            methods[name] = decoder(contours=True, h=h, min_area=a, contour_threshold=t, min_confidence=m).labels
    if "distance" in outputs:
        for h, a, m in itertools.product(args.distance_hs, args.min_areas, args.min_confidences):
            name = f"distance watershed h={h:g} min_area={a} min_confidence={m:g}"
            methods[name] = decoder(distances=True, h=h, min_area=a, min_confidence=m).labels
    results = {}
    for name, method in methods.items():
        scores = [metrics.object_scores(labels, method(probs)) for labels, probs in items]
        results[name] = {k: round(float(np.mean([s[k] for s in scores])), 4) for k in ("dsb_score", "f1d", "aji", "pq")}
        print(f"{args.protocol} {args.part} {name}: {results[name]}", file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
