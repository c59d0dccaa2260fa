"""What limits the DSB-2018 score: the model's pixels or its splitting of touching nuclei? On the
*valid* split, scores the shipped instances against two oracles that each fix one half:

- ground-truth mask, our splitting: the true foreground cut by the model's instance step;
- our mask, true splitting: the predicted foreground, each pixel given to the nearest true nucleus;

next to plain connected components of the true mask. Also prints, for the second oracle, the
share of matched nuclei at each IoU threshold (0.5 .. 0.95), which shows where the score is lost.

    python tools/instance_oracle.py ../shared/data/dsb2018/stage1_train.zip [--protocol native] [--model M]
"""

import argparse

import numpy as np
from scipy import ndimage

from attention_unet import metrics
from attention_unet.commands.predict import load_predictor
from attention_unet.io import data


def true_split(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Predicted foreground pixels labelled with the nearest true nucleus."""
    _, index = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    return np.where(pred, labels[index[0], index[1]], 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("--protocol", default="resize256", choices=("resize256", "native"))
    parser.add_argument("--model")
    args = parser.parse_args()
    records = data.load_records(args.data)
    valid = data.select(records, data.default_split([r.id for r in records]), "valid")
    predictor = load_predictor(args.model)
    scores: dict[str, list[float]] = {
        "model's instances": [],
        "true mask, our splitting": [],
        "our mask, true splitting": [],
        "true mask as components": [],
    }
    matched = []
    for r in valid:
        image, labels = data.protocol_view(r, args.protocol)
        probs = predictor.probabilities(image)[0]
        oracle = true_split(probs[0] > 0.5, labels)
        truth = np.zeros_like(probs)
        truth[0] = labels > 0  # the true mask in the model's place; other channels empty
        scores["model's instances"].append(metrics.dsb_score(labels, predictor.labels(probs)))
        scores["true mask, our splitting"].append(metrics.dsb_score(labels, predictor.labels(truth[:1])))
        scores["our mask, true splitting"].append(metrics.dsb_score(labels, oracle))
        scores["true mask as components"].append(metrics.dsb_score(labels, ndimage.label(labels > 0)[0]))
        iou = metrics.iou_matrix(labels, oracle)
        counts = [metrics.object_counts(labels, oracle, t, iou) for t in metrics.IOU_THRESHOLDS]
        matched.append([tp / max(1, tp + fp + fn) for tp, fp, fn in counts])
    print(f"valid, {args.protocol}, DSB score: " + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in scores.items()))
    print(
        "our mask, true splitting, TP/(TP+FP+FN) at IoU "
        + ", ".join(f"{t:.2f}: {m:.3f}" for t, m in zip(metrics.IOU_THRESHOLDS, np.mean(matched, 0)))
    )


if __name__ == "__main__":
    main()
