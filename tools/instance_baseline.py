"""DSB-2018 score of the shipped model's instances on the reference test split (resize256), against
plain connected components of the same mask and of the ground-truth mask (and, for a contour
model, against the distance-transform watershed that ignores the contours).

    python tools/instance_baseline.py ../shared/data/dsb2018/stage1_train.zip
"""

import sys

import numpy as np
from scipy import ndimage

from attention_unet import metrics
from attention_unet.commands.predict import load_predictor
from attention_unet.instances import instances
from attention_unet.io import data


def main(archive: str) -> None:
    records = data.load_records(archive)
    test = data.select(records, data.reference_split([r.id for r in records]), "test")
    predictor = load_predictor(None)
    scores: dict[str, list[float]] = {
        "model's instances": [],
        "distance watershed": [],
        "connected components": [],
        "ground-truth mask as components": [],
    }
    for r in test:
        image, labels = data.protocol_view(r, "resize256")
        probs = predictor.probabilities(image)[0]
        scores["model's instances"].append(metrics.dsb_score(labels, predictor.labels(probs)))
        scores["distance watershed"].append(metrics.dsb_score(labels, instances(probs[0])))
        scores["connected components"].append(metrics.dsb_score(labels, ndimage.label(probs[0] > 0.5)[0]))
        scores["ground-truth mask as components"].append(metrics.dsb_score(labels, ndimage.label(labels > 0)[0]))
    print("resize256 test DSB score: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items()))


if __name__ == "__main__":
    main(sys.argv[1])
