"""Choose the inference settings of a model on the *valid* split (never on test): fixed scales
against automatic scale normalisation at several target nucleus diameters, with and without flip
TTA, under both protocols. Prints mean per-image F1 / Jaccard for each setting.

    python tools/tune_inference.py MODEL DATA [--scales 1 2] [--diameters 12 16 20 24] [--tta]
"""

import argparse
import json

import numpy as np

from attention_unet import metrics
from attention_unet.inference.engine import torch_runner
from attention_unet.inference.pipeline import make_predictor
from attention_unet.io import data
from attention_unet.model import load_model
from attention_unet.model.export import fold_batchnorm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0])
    parser.add_argument("--diameters", type=float, nargs="*", default=[12, 16, 20, 24])
    parser.add_argument("--protocols", nargs="+", default=["resize256", "native"])
    parser.add_argument("--tta", action="store_true")
    args = parser.parse_args()
    model = load_model(args.model)
    norm = model.info["train"]["norm"]
    run = torch_runner(fold_batchnorm(model))
    records = data.load_records(args.data)
    valid = data.select(records, data.default_split([r.id for r in records]), "valid")
    settings = [(f"scale {s:g}", {"scale": s}) for s in args.scales] + [
        (f"auto D={d:g}", {"scale": None, "target_diameter": d}) for d in args.diameters
    ]
    results = {}
    for protocol in args.protocols:
        items = []
        for r in valid:
            image, labels = data.protocol_view(r, protocol)
            items.append((image, labels > 0, data.modality(r.image)))
        for name, kwargs in settings:
            for tta in [False, True] if args.tta else [False]:
                predictor = make_predictor(run, norm, tta=tta, **kwargs)
                rows = []
                for image, mask, kind in items:
                    rows.append({**metrics.pixel_scores(predictor.probability(image) > 0.5, mask), "kind": kind})
                key = f"{protocol} {name}{' tta' if tta else ''}"
                results[key] = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in ("f1", "jaccard")}
                for kind in ("fluorescence", "stained", "brightfield"):
                    results[key][kind] = round(float(np.mean([r["f1"] for r in rows if r["kind"] == kind])), 4)
                print(key, results[key], flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
